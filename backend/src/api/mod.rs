//! The read API: JSON over HTTP for dashboards, overlays and status pages
//! that watch rooms without joining them, described by an OpenAPI document
//! generated from this code.
//!
//! # Layout
//! - [`rooms`]: `GET /api/rooms` (the public rooms, most hearts first, in
//!   pages) and `GET /api/rooms/{room}` (one room's consensus).
//! - [`sse`]: `GET /api/rooms/{room}/events`, the consensus as Server-Sent
//!   Events.
//! - [`history`]: `GET /api/rooms/{room}/history`, coherence per 10 s over
//!   the last hour, and the sampler that records it.
//! - [`openapi`]: `GET /api/openapi.json`.
//!
//! Every error is JSON ([`ApiError`]), and private rooms need their join
//! token (`Authorization: Bearer`) here as on the socket. A room's state is
//! read from the registry's `watch` channels, so no reader ever slows a room.

pub mod history;
pub mod openapi;
pub mod rooms;
pub mod sse;

use crate::AppState;
use crate::auth::{self, Admitted, ErrorBody, Refusal};
use axum::Json;
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shared::RoomName;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The read API's routes, with CORS as configured.
pub fn router(state: &AppState) -> Router<AppState> {
    let routes = Router::new()
        .route("/api/rooms", get(rooms::list))
        .route("/api/rooms/{room}", get(rooms::one))
        .route("/api/rooms/{room}/events", get(sse::events))
        .route("/api/rooms/{room}/history", get(history::endpoint))
        .route("/api/openapi.json", get(openapi::document));
    match cors(&state.config.api_cors_origins) {
        Some(cors) => routes.layer(cors),
        None => routes,
    }
}

/// Starts what the API runs in the background: the history sampler.
pub fn start(state: &AppState) {
    history::spawn_sampler(state.clone());
}

/// CORS for `origins` (`*` for any); `None` when there are none, so no CORS
/// header is ever sent by default.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
            .collect();
        AllowOrigin::list(list)
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([axum::http::Method::GET])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::HeaderName::from_static("last-event-id"),
            ]),
    )
}

/// The read API's one error type: a status and a JSON [`ErrorBody`].
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

impl ApiError {
    /// An error with `status`, a stable `reason` and a message for people.
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self { status, reason, message: message.into() }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404: no one is in the room.
    pub fn no_room(room: &RoomName) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no one is in room {room}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.message, reason: self.reason.to_owned() };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// What the API refuses with: its own errors, or a token refusal (which
/// counts itself in the token metric).
#[derive(Debug)]
pub enum Refused {
    /// A malformed request, an empty room, a full server.
    Api(ApiError),
    /// A private room and a missing or bad token.
    Token(Refusal),
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        Refused::Api(error)
    }
}

impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Self {
        Refused::Token(refusal)
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Api(error) => error.into_response(),
            Refused::Token(refusal) => refusal.into_response(),
        }
    }
}

/// Parses a room name from the path (400 if it breaks the rules) and checks
/// the request's token for it (401/403 for a private room without a good
/// one). `query_token` is a `?token=` for clients that cannot set headers.
pub fn enter(
    state: &AppState,
    room: &str,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<(RoomName, Option<Admitted>), Refused> {
    let room = RoomName::parse(room).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let token = auth::bearer(headers).or(query_token);
    let admitted = auth::admit(state.tokens.as_ref(), &room, token, state.clock.now_ms())?;
    Ok((room, admitted))
}
