//! `GET /api/openapi.json`: the read API's OpenAPI 3.1 document, generated
//! by `utoipa` from the handlers' `#[utoipa::path]` and the types' derives,
//! so it cannot drift from the code.

use super::{history, rooms, sse};
use crate::auth::ErrorBody;
use axum::Json;
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document's source: every operation and schema of the read API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "heartsync read API",
        description = "Watch heartsync rooms without joining them: the public rooms, one room's consensus, its consensus as Server-Sent Events, and its coherence over the last hour. Private rooms (`private-…`) need their join token as `Authorization: Bearer`."
    ),
    paths(rooms::list, rooms::one, sse::events, history::endpoint, document),
    components(schemas(
        rooms::RoomPage,
        rooms::RoomSummary,
        rooms::ConsensusMessage,
        history::History,
        history::Bucket,
        ErrorBody
    )),
    modifiers(&JoinToken),
    tags((name = "rooms", description = "Rooms and their consensus"))
)]
pub struct ApiDoc;

/// Declares the `join_token` bearer scheme the private-room operations use.
struct JoinToken;

impl Modify for JoinToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "join_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A private room's join token (HS256 JWT)"))
                    .build(),
            ),
        );
    }
}

/// The document, built once.
pub fn spec() -> &'static utoipa::openapi::OpenApi {
    static SPEC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    SPEC.get_or_init(ApiDoc::openapi)
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn document() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(spec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_route_is_in_the_document() {
        let spec = spec();
        assert_eq!(serde_json::to_value(spec).expect("json")["openapi"], "3.1.0");
        let paths: Vec<&str> = spec.paths.paths.keys().map(String::as_str).collect();
        for path in [
            "/api/rooms",
            "/api/rooms/{room}",
            "/api/rooms/{room}/events",
            "/api/rooms/{room}/history",
            "/api/openapi.json",
        ] {
            assert!(paths.contains(&path), "{path} missing from {paths:?}");
        }
    }
}
