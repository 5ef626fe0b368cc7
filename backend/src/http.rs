//! The HTTP face of the server: the page and its assets, health checks, and
//! the WebSocket upgrade with every check that happens before it (room name,
//! client id, handshake headers, origin, draining, connection caps).
//!
//! A client's mistake is never an ERROR in the log: a name the filesystem
//! refuses is a 404, and refusals (503, 429) are counted in `/metrics` and
//! summed up by the server now and then, never logged one by one.

use crate::limits::{Refusal, RefusalKind};
use crate::metrics::metrics;
use crate::server::WriteDeadline;
use crate::socket::{self, Connection};
use crate::{AppState, auth};
use axum::Router;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ipnet::IpNet;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Deserialize;
use shared::{ClientId, RoomName};
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tower_http::classify::ServerErrorsFailureClass;
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
        if matches!(self.status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS) {
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
    // The page itself must be revalidated so a deploy is picked up.
    let page = || {
        tower::ServiceBuilder::new()
            .layer(SetResponseHeaderLayer::overriding(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            ))
            .service(page_file(&index))
    };
    // The page and its assets, compressed at build time (`cargo xtask
    // build` writes a `.br` and a `.gz` beside each): a request costs a file
    // read, never a compression.
    let assets = ServeDir::new(&static_dir).precompressed_br().precompressed_gzip();
    let pages = Router::new()
        .route_service("/", page())
        .route_service("/index.html", page())
        .route("/r/{room}", get(room_page))
        .fallback(move |request| serve_asset(assets.clone(), request));
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/ws", get(ws_main))
        .route("/ws/{room}", get(ws_room))
        .merge(crate::api::router(&state))
        .merge(pages)
        .with_state(state)
        // Request ids: taken from `x-request-id` or made, put on a span
        // around every log line of the request, and echoed in the response.
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(request_span).on_failure(log_failure))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
}

/// Logs a failed request once. A 503 is not logged: every one is a refusal
/// (a cap, the accept rate, draining), counted in `/metrics` and summed up
/// by the server; logging each would flood the log during exactly the storm
/// the limits absorb.
fn log_failure(failure: ServerErrorsFailureClass, latency: Duration, _span: &tracing::Span) {
    match failure {
        ServerErrorsFailureClass::StatusCode(StatusCode::SERVICE_UNAVAILABLE) => {}
        ServerErrorsFailureClass::StatusCode(status) => {
            tracing::error!(%status, ?latency, "request failed");
        }
        ServerErrorsFailureClass::Error(error) => {
            tracing::error!(%error, ?latency, "request failed");
        }
    }
}

/// `index.html`, served as its build-time `.br` or `.gz` to browsers that
/// take one.
fn page_file(index: &std::path::Path) -> ServeFile {
    ServeFile::new(index).precompressed_br().precompressed_gzip()
}

/// How long a browser may keep an asset whose name carries its content's
/// hash: for good, since new content gets a new name.
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");

/// Whether the asset at `path` has trunk's content hash in its name
/// (`frontend-0123456789abcdef_bg.wasm`), so it never changes under that
/// name. The same rule as nginx's in `deploy/nginx/heartsync.conf`.
fn is_hashed(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let stem = name.split_once('.').map_or(name, |(stem, _)| stem);
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    stem.rsplit_once('-').is_some_and(|(base, hash)| {
        !base.is_empty() && hash.len() >= 8 && hash.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// A file of the static dir. A name the filesystem refuses (too long, a
/// file used as a folder, a loop) is a 404 like a missing one: the client
/// asked for something that is not there. Only a real fault (an unreadable
/// disk) is a 500, logged by [`log_failure`]. Hashed assets may be cached
/// for good; everything else (the manifest, the icons) is revalidated.
async fn serve_asset(mut assets: ServeDir, request: axum::extract::Request) -> Response {
    let hashed = is_hashed(request.uri().path());
    match assets.try_call(request).await {
        Ok(response) => {
            let mut response = response.into_response();
            if response.status().is_success() {
                let cache = if hashed { IMMUTABLE } else { HeaderValue::from_static("no-cache") };
                response.headers_mut().insert(header::CACHE_CONTROL, cache);
            }
            response
        }
        Err(error) if is_not_there(&error) => StatusCode::NOT_FOUND.into_response(),
        Err(error) => {
            tracing::warn!(%error, "cannot read a static file");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Whether `error` means the asked-for file does not exist as named.
fn is_not_there(error: &io::Error) -> bool {
    /// `ELOOP` on Linux: too many symbolic links (`FilesystemLoop` is not
    /// stable yet).
    const TOO_MANY_LINKS: i32 = 40;
    use io::ErrorKind::*;
    matches!(
        error.kind(),
        NotFound | PermissionDenied | NotADirectory | IsADirectory | InvalidFilename | InvalidInput
    ) || error.raw_os_error() == Some(TOO_MANY_LINKS)
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
        Err(_) => {
            // 503s are not logged per request (see `log_failure`); this one
            // is a fault of ours, not a refusal, so it says so itself.
            tracing::warn!("not ready: the love store did not answer within 2 s");
            HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "storage is not answering")
                .into_response()
        }
    }
}

async fn room_page(
    Path(room): Path<String>,
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Response {
    let index = state.config.static_dir.join("index.html");
    let mut response = match tower::ServiceExt::oneshot(page_file(&index), request).await {
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
    /// A private room's join token (browsers cannot set headers on a
    /// WebSocket). Never logged: spans record the path only.
    token: Option<String>,
}

/// What the upgrade handlers need of the request beyond its path and
/// query: the headers, the peer's address and the connection's write
/// deadline (both put there by the accept loop; a router served some other
/// way has neither).
pub struct Handshake {
    headers: HeaderMap,
    peer: Option<SocketAddr>,
    deadline: Option<WriteDeadline>,
}

impl Handshake {
    /// The client's address as the connection caps count it (see
    /// [`client_address`]); the unspecified address without a peer.
    pub(crate) fn client(&self, trusted: &[IpNet]) -> IpAddr {
        let peer = self.peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| peer.ip());
        client_address(peer, &self.headers, trusted)
    }

    /// The request's headers.
    pub(crate) fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Handshake {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Handshake {
            headers: parts.headers.clone(),
            peer: parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0),
            deadline: parts.extensions.get::<WriteDeadline>().cloned(),
        })
    }
}

async fn ws_main(
    state: State<AppState>,
    Query(query): Query<WsQuery>,
    handshake: Handshake,
    raw: socket::RawUpgrade,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, HttpError> {
    upgrade_to_room(state, RoomName::main(), query, handshake, (raw, upgrade))
}

async fn ws_room(
    Path(room): Path<String>,
    state: State<AppState>,
    Query(query): Query<WsQuery>,
    handshake: Handshake,
    raw: socket::RawUpgrade,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, HttpError> {
    let room = RoomName::parse(&room)
        .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    upgrade_to_room(state, room, query, handshake, (raw, upgrade))
}

fn upgrade_to_room(
    State(state): State<AppState>,
    room: RoomName,
    query: WsQuery,
    handshake: Handshake,
    (raw, upgrade): (socket::RawUpgrade, Result<WebSocketUpgrade, WebSocketUpgradeRejection>),
) -> Result<Response, HttpError> {
    let Handshake { headers, peer, deadline } = handshake;
    let client_id = match query.client_id {
        Some(id) => Some(
            ClientId::parse(&id)
                .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, e.to_string()))?,
        ),
        None => None,
    };
    // Private rooms: the token is checked before anything else is decided.
    let admitted = match auth::admit(
        state.tokens.as_ref(),
        &room,
        query.token.as_deref(),
        state.clock.now_ms(),
    ) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            metrics().upgrade_refused("token");
            return Ok(refusal.into_response());
        }
    };
    let client_id = match (client_id, admitted.as_ref().and_then(|a| a.sub.clone())) {
        (Some(id), Some(sub)) if id != sub => {
            metrics().upgrade_refused("token");
            return Ok(auth::Refusal::WrongClient.into_response());
        }
        (_, Some(sub)) => sub,
        (Some(id), None) => id,
        (None, None) => new_client_id(),
    };
    // When the token expires, the socket is closed.
    let expires = admitted.map(|a| {
        let left = (a.expires_ms - state.clock.now_ms()).max(0.0);
        state.clock.now() + Duration::from_secs_f64(left / 1000.0)
    });
    let refusals = &state.limits.refusals;
    check_handshake_headers(&headers)
        .inspect_err(|_| refusals.record(RefusalKind::BadHandshake))?;
    check_origin(&state.config, &headers).inspect_err(|_| refusals.record(RefusalKind::Origin))?;
    if state.draining.load(Ordering::Relaxed) {
        refusals.record(RefusalKind::Draining);
        return Err(HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down"));
    }
    let upgrade = upgrade.map_err(|rejection| {
        HttpError::new(
            rejection.status(),
            format!("{}: this endpoint takes WebSocket upgrades", rejection.body_text()),
        )
    })?;
    // Without a peer address (a router served by something other than
    // `run`), every client counts as one.
    let peer = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| peer.ip());
    let client = client_address(peer, &headers, &state.config.trusted_proxies);
    let slot = state.limits.admit(client).map_err(|refusal| {
        refusals.record(refusal.into());
        let (status, message) = match refusal {
            Refusal::Full => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is at its connection limit; retry later",
            ),
            Refusal::TooFast => {
                (StatusCode::SERVICE_UNAVAILABLE, "too many new connections; retry in a second")
            }
            Refusal::PerAddress => (
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections from your address; close one first",
            ),
        };
        HttpError::new(status, message)
    })?;
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let connection = Connection { conn, room, client_id, slot, expires };
    // axum's upgrade has checked the request; the server answers it itself
    // and keeps the socket, for the room's fan-out (socket/upgrade.rs).
    drop(upgrade);
    Ok(socket::accept(raw, state.clone(), connection, deadline, state.tracker.token()))
}

fn new_client_id() -> ClientId {
    let id: String = rand::rng().sample_iter(Alphanumeric).take(16).map(char::from).collect();
    // Sixteen alphanumerics always satisfy the client-id rules.
    ClientId::parse(&id).unwrap_or_else(|_| unreachable!("generated client ids are valid"))
}

/// The client's address: the peer's, unless the peer is a trusted proxy;
/// then the `X-Forwarded-For` entry nearest to us that is not itself a
/// trusted proxy. Entries are read from the right because a proxy appends
/// the address it saw, while everything to its left came from the client
/// and may be forged.
fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&ip));
    if !is_trusted(peer) {
        return peer;
    }
    const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    let mut hops: Vec<&str> = Vec::new();
    for value in headers.get_all(FORWARDED_FOR) {
        match value.to_str() {
            Ok(text) => hops.extend(text.split(',')),
            // Unreadable: nothing to its left can be believed.
            Err(_) => hops.clear(),
        }
    }
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(ip) => client = ip,
            Ok(ip) => return ip,
            // Not an address: trust stops at the last hop we could read.
            Err(_) => return client,
        }
    }
    client
}

/// Refuses a handshake whose headers could be read two ways (a doubled
/// `Host`, `Origin` or `Sec-WebSocket-Key`: a proxy and this server might
/// each take a different one) or whose key is not what RFC 6455 says: the
/// base64 of 16 bytes.
fn check_handshake_headers(headers: &HeaderMap) -> Result<(), HttpError> {
    let bad = |message: &str| HttpError::new(StatusCode::BAD_REQUEST, message);
    for name in [header::HOST, header::ORIGIN, header::SEC_WEBSOCKET_KEY] {
        if headers.get_all(&name).iter().count() > 1 {
            return Err(bad(&format!("more than one {name} header")));
        }
    }
    match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if !is_websocket_key(key.as_bytes()) => {
            Err(bad("Sec-WebSocket-Key must be 16 bytes in base64"))
        }
        _ => Ok(()),
    }
}

/// Whether `key` is 16 bytes in base64: 22 base64 digits and `==`. Checked
/// by hand because no base64 decoder is needed for anything else.
fn is_websocket_key(key: &[u8]) -> bool {
    let digit = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    key.len() == 24 && key[..22].iter().all(digit) && &key[22..] == b"=="
}

/// Refuses browser connections from origins other than the site's own and
/// the configured ones (Cross-Site WebSocket Hijacking). A request without
/// an `Origin` is not from a browser page, and is allowed.
///
/// The site's own origin is `--public-origin` when given. Without it, it
/// is taken from the `Host` header, which a DNS-rebinding page controls
/// (its name resolves to this server, so Host and Origin agree): fine on a
/// developer's machine, and why production sets `--public-origin`.
fn check_origin(config: &crate::Config, headers: &HeaderMap) -> Result<(), HttpError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let forbidden =
        || HttpError::new(StatusCode::FORBIDDEN, "this origin may not open WebSockets here");
    let origin = origin.to_str().map_err(|_| forbidden())?;
    let listed = |list: &[String]| {
        list.iter().any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
    };
    if listed(&config.allowed_origins) || listed(&config.public_origins) {
        return Ok(());
    }
    if !config.public_origins.is_empty() {
        return Err(forbidden());
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let own = origin
        .split_once("://")
        .is_some_and(|(scheme, rest)| matches!(scheme, "http" | "https") && Some(rest) == host);
    if own { Ok(()) } else { Err(forbidden()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("a header value"));
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn the_client_address_comes_from_x_forwarded_for_only_through_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("a network")];
        let check = |peer: &str, forwarded: &[&str], expected: &str| {
            let pairs: Vec<_> = forwarded.iter().map(|v| ("x-forwarded-for", *v)).collect();
            let found = client_address(ip(peer), &headers(&pairs), &trusted);
            assert_eq!(found, ip(expected), "peer {peer}, X-Forwarded-For {forwarded:?}");
        };
        // Untrusted peers are themselves, whatever they claim.
        check("192.0.2.1", &["198.51.100.7"], "192.0.2.1");
        // A trusted proxy: the rightmost entry it did not add itself.
        check("10.0.0.1", &["198.51.100.7"], "198.51.100.7");
        check("10.0.0.1", &["203.0.113.9, 198.51.100.7"], "198.51.100.7");
        check("10.0.0.1", &["203.0.113.9", "198.51.100.7"], "198.51.100.7");
        // Two trusted proxies in a row are skipped.
        check("10.0.0.1", &["198.51.100.7, 10.0.0.2"], "198.51.100.7");
        // No header, or nothing readable: the last trusted hop.
        check("10.0.0.1", &[], "10.0.0.1");
        check("10.0.0.1", &["198.51.100.7, garbage, 10.0.0.2"], "10.0.0.2");
        check("10.0.0.1", &["2001:db8::7"], "2001:db8::7");
    }

    #[test]
    fn websocket_keys_are_16_bytes_of_base64() {
        assert!(is_websocket_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(is_websocket_key(b"AAAAAAAAAAAAAAAAAAAA+/=="));
        for bad in [
            "",
            "short",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZQ=",
            "dGhlIHNhbXBsZSBub25j====",
            "dGhlIHNhbXBsZSBub25jZQ==AAAA",
            "dGhlIHNhbXBsZSBub25jZ!==",
        ] {
            assert!(!is_websocket_key(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn doubled_handshake_headers_are_refused() {
        let key = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        assert!(
            check_handshake_headers(&headers(&[("host", "a"), ("origin", "http://a"), key]))
                .is_ok()
        );
        for doubled in ["host", "origin", "sec-websocket-key"] {
            let map = headers(&[("host", "a"), ("origin", "http://a"), key, (doubled, key.1)]);
            assert!(check_handshake_headers(&map).is_err(), "{doubled}");
        }
    }

    #[test]
    fn a_public_origin_replaces_the_host_header() {
        let mut config = crate::Config::default();
        let rebound =
            headers(&[("host", "evil.example:8080"), ("origin", "http://evil.example:8080")]);
        // Without it, the Host decides (the developer's default).
        assert!(check_origin(&config, &rebound).is_ok());
        config.public_origins = vec!["https://heartsync.example".into()];
        assert!(check_origin(&config, &rebound).is_err());
        let real = headers(&[("host", "backend:8080"), ("origin", "https://heartsync.example")]);
        assert!(check_origin(&config, &real).is_ok());
        assert!(check_origin(&config, &headers(&[("host", "x")])).is_ok());
    }

    #[test]
    fn only_names_with_trunks_hash_are_immutable() {
        for hashed in [
            "/frontend-0123456789abcdef.js",
            "/frontend-0123456789abcdef_bg.wasm",
            "/a-deadbeef.css",
        ] {
            assert!(is_hashed(hashed), "{hashed}");
        }
        for plain in [
            "/manifest.webmanifest",
            "/icon-192.png",
            "/heart.svg",
            "/-0123456789.js",
            "/a-xyz.js",
            "/",
        ] {
            assert!(!is_hashed(plain), "{plain}");
        }
    }

    #[test]
    fn names_the_filesystem_refuses_are_not_there() {
        let os = io::Error::from_raw_os_error;
        // ENAMETOOLONG, ENOTDIR, ELOOP, ENOENT.
        for errno in [36, 20, 40, 2] {
            assert!(is_not_there(&os(errno)), "errno {errno}");
        }
        // EIO is a real fault.
        assert!(!is_not_there(&os(5)));
    }
}
