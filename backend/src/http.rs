//! The HTTP face of the server: the page and its assets, health checks, and
//! the WebSocket upgrade with every check that happens before it (room name,
//! client id, origin, draining, connection caps).

use crate::AppState;
use crate::limits::Refusal;
use crate::metrics::metrics;
use crate::socket::{self, Connection};
use axum::Router;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Deserialize;
use shared::{ClientId, RoomName};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

/// The one error type of the HTTP layer: a status and a message for the
/// person (or program) that made the request.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    message: String,
}

impl HttpError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.message).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

const REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

fn request_span(request: &axum::extract::Request) -> tracing::Span {
    let id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path())
}

/// The router for the whole server.
pub fn router(state: AppState) -> Router {
    let static_dir = state.config.static_dir.clone();
    let index = static_dir.join("index.html");
    // The page itself must be revalidated so a deploy is picked up; trunk
    // gives its assets hashed names, so those may be cached.
    let page = || {
        tower::ServiceBuilder::new()
            .layer(SetResponseHeaderLayer::overriding(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            ))
            .service(ServeFile::new(&index))
    };
    // The page and its assets, gzipped for browsers that ask (the wasm
    // bundle shrinks to less than half).
    let pages = Router::new()
        .route_service("/", page())
        .route_service("/index.html", page())
        .route("/r/{room}", get(room_page))
        .fallback_service(ServeDir::new(&static_dir))
        .layer(CompressionLayer::new());
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/ws", get(ws_main))
        .route("/ws/{room}", get(ws_room))
        .merge(pages)
        .with_state(state)
        // Request ids: taken from `x-request-id` or made, put on a span
        // around every log line of the request, and echoed in the response.
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
}

async fn metrics_text() -> Response {
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], metrics().render()).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        return HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    if let Some(cluster) = &state.cluster
        && !cluster.redis_up()
    {
        let message = format!("Redis is unreachable (instance {})", cluster.id());
        return HttpError::new(StatusCode::SERVICE_UNAVAILABLE, message).into_response();
    }
    let check = tokio::time::timeout(Duration::from_secs(2), state.love.check_writable()).await;
    match check {
        Ok(Ok(())) => match &state.cluster {
            Some(cluster) => format!("ready (instance {})", cluster.id()).into_response(),
            None => "ready".into_response(),
        },
        Ok(Err(error)) => {
            tracing::warn!(%error, "not ready: the love store cannot be written");
            HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "storage is not writable")
                .into_response()
        }
        Err(_) => HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "storage is not answering")
            .into_response(),
    }
}

async fn room_page(
    Path(room): Path<String>,
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Response {
    let index = state.config.static_dir.join("index.html");
    let mut response = match tower::ServiceExt::oneshot(ServeFile::new(index), request).await {
        Ok(response) => response.into_response(),
        Err(infallible) => match infallible {},
    };
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // A room name that can never be joined is a 404, but still the page, which
    // tells the person what a room name may be.
    if RoomName::parse(&room).is_err() && response.status().is_success() {
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    response
}

/// The query a WebSocket upgrade may carry.
#[derive(Debug, Deserialize)]
pub struct WsQuery {
    client_id: Option<String>,
}

async fn ws_main(
    state: State<AppState>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, HttpError> {
    upgrade_to_room(state, RoomName::main(), query, headers, upgrade)
}

async fn ws_room(
    Path(room): Path<String>,
    state: State<AppState>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, HttpError> {
    let room = RoomName::parse(&room)
        .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    upgrade_to_room(state, room, query, headers, upgrade)
}

fn upgrade_to_room(
    State(state): State<AppState>,
    room: RoomName,
    query: WsQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, HttpError> {
    let client_id = match query.client_id {
        Some(id) => ClientId::parse(&id)
            .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, e.to_string()))?,
        None => new_client_id(),
    };
    check_origin(&state, &headers).inspect_err(|_| metrics().upgrade_refused("origin"))?;
    if state.draining.load(Ordering::Relaxed) {
        metrics().upgrade_refused("draining");
        return Err(HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down"));
    }
    let upgrade = upgrade.map_err(|rejection| {
        HttpError::new(
            rejection.status(),
            format!("{}: this endpoint takes WebSocket upgrades", rejection.body_text()),
        )
    })?;
    let slot = state.limits.admit().map_err(|refusal| {
        let (reason, message) = match refusal {
            Refusal::Full => ("full", "the server is at its connection limit; retry later"),
            Refusal::TooFast => ("too_fast", "too many new connections; retry in a second"),
        };
        metrics().upgrade_refused(reason);
        HttpError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    })?;
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let connection = Connection { conn, room, client_id, slot };
    let max = state.config.max_message_bytes;
    let tracker_token = state.tracker.token();
    let response = upgrade
        // Small messages only: a read buffer sized for them instead of
        // tungstenite's 128 KiB, writes sent at once, and a bounded queue.
        .read_buffer_size(max.max(1024))
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |ws| async move {
            socket::serve(ws, state, connection).await;
            drop(tracker_token);
        });
    Ok(response)
}

fn new_client_id() -> ClientId {
    let id: String = rand::rng().sample_iter(Alphanumeric).take(16).map(char::from).collect();
    // Sixteen alphanumerics always satisfy the client-id rules.
    ClientId::parse(&id).unwrap_or_else(|_| unreachable!("generated client ids are valid"))
}

/// Refuses browser connections from origins other than the server's own and
/// the configured ones (Cross-Site WebSocket Hijacking). A request without
/// an `Origin` is not from a browser page, and is allowed.
fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), HttpError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let forbidden =
        || HttpError::new(StatusCode::FORBIDDEN, "this origin may not open WebSockets here");
    let origin = origin.to_str().map_err(|_| forbidden())?;
    if state.config.allowed_origins.iter().any(|allowed| allowed.trim_end_matches('/') == origin) {
        return Ok(());
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let own = origin
        .split_once("://")
        .is_some_and(|(scheme, rest)| matches!(scheme, "http" | "https") && Some(rest) == host);
    if own { Ok(()) } else { Err(forbidden()) }
}
