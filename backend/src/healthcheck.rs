//! `heartsync healthcheck`: asks a running server whether it is alive.
//!
//! A container's health check must run inside the image, and the image has
//! no shell and no curl (deploy/README.md). So the binary checks itself: it
//! GETs `/livez` (or `--url`) and exits 0 when the answer is `200`, 1
//! otherwise, printing why. By default it asks the port the server listens
//! on (`HEARTSYNC_ADDR`, as the server reads it), on loopback when the
//! server listens on every address.
//!
//! This is a module of the binary (`main.rs` runs it before the server's
//! flags are parsed), not of the library: no server code needs it.
//!
//! The request is made with hyper's HTTP/1 client connection, which the
//! server's hyper already brings, rather than by hand: one request, no pool.

use axum::body::Body;
use axum::http::{Request, StatusCode, Uri, header};
use clap::Parser;
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

/// The health check's flags.
#[derive(Parser, Debug)]
#[command(
    name = "heartsync healthcheck",
    bin_name = "heartsync healthcheck",
    about = "GET a running heartsync's /livez: exit 0 when it answers 200, 1 otherwise"
)]
pub struct Healthcheck {
    /// The URL to GET (plain http). Default: `/livez` on the server's
    /// `--addr`, with 127.0.0.1 (or ::1) when that is every address.
    #[arg(long)]
    url: Option<String>,

    /// The server's address, as the server reads it; used only to build the
    /// default URL.
    #[arg(long, env = "HEARTSYNC_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,

    /// Give up (and fail) after this long: a server too slow to answer is not
    /// healthy.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Why a health check failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The URL cannot be asked: not `http://host[:port]/path`.
    #[error("cannot check {url:?}: {reason}")]
    BadUrl { url: String, reason: &'static str },
    /// Nothing accepted the connection (the server is not running).
    #[error("cannot connect to {authority}: {source}")]
    Connect { authority: String, source: std::io::Error },
    /// The connection broke, or the answer was not HTTP.
    #[error("{url}: {source}")]
    Http { url: Uri, source: hyper::Error },
    /// The server answered, but not `200`.
    #[error("{url} answered {status}")]
    Status { url: Uri, status: StatusCode },
    /// No answer in time.
    #[error("{url} did not answer within {timeout:?}")]
    Timeout { url: Uri, timeout: Duration },
}

/// Runs `heartsync healthcheck` with `args` (the first being the
/// subcommand's name) and returns its exit code.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let flags = Healthcheck::parse_from(args);
    let url = match flags.url.clone() {
        Some(url) => url,
        None => default_url(flags.addr),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("heartsync healthcheck: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(check(&url, flags.timeout)) {
        Ok(status) => {
            println!("ok: {url} answered {status}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("unhealthy: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `/livez` on the port the server listens on, asked on loopback when the
/// server listens on every address (`0.0.0.0`, `::`).
pub fn default_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/livez", SocketAddr::new(ip, addr.port()))
}

/// GETs `url` within `timeout`: its status when that is `200`, else why not.
pub async fn check(url: &str, timeout: Duration) -> Result<StatusCode, HealthError> {
    let bad = |reason| HealthError::BadUrl { url: url.to_owned(), reason };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => return Err(bad("only http:// is supported (check the server directly)")),
        None => return Err(bad("no scheme: write http://host:port/path")),
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?.clone();
    // `Uri::host` keeps an IPv6 address's brackets; the resolver wants it bare.
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = authority.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |path| path.as_str()).to_owned();

    let exchange = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|source| HealthError::Connect { authority: authority.to_string(), source })?;
        let http = |source| HealthError::Http { url: uri.clone(), source };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
        // The connection is driven alongside the request; it ends with it.
        let request = Request::get(path)
            .header(header::HOST, authority.as_str())
            .header(header::USER_AGENT, "heartsync-healthcheck")
            .body(Body::empty())
            .map_err(|_| bad("not a valid request path"))?;
        let response = tokio::select! {
            response = sender.send_request(request) => response.map_err(http)?,
            ended = connection => {
                // The connection cannot end before the response unless it broke.
                ended.map_err(http)?;
                return Err(bad("the server closed the connection without answering"));
            }
        };
        match response.status() {
            StatusCode::OK => Ok(StatusCode::OK),
            status => Err(HealthError::Status { url: uri.clone(), status }),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(HealthError::Timeout { url: uri.clone(), timeout }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{Router, routing::get};

    /// A real HTTP server on an ephemeral loopback port: `/livez` answers
    /// 200, `/readyz` 503 (as a draining server does).
    async fn start_server() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let app = Router::new()
            .route("/livez", get(|| async { "ok" }))
            .route("/readyz", get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "draining") }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    const PATIENCE: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_200_is_healthy() {
        let addr = start_server().await;
        let status = check(&format!("http://{addr}/livez"), PATIENCE).await.expect("healthy");
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn any_other_status_is_unhealthy() {
        let addr = start_server().await;
        for (path, want) in [("/readyz", 503), ("/nowhere", 404)] {
            match check(&format!("http://{addr}{path}"), PATIENCE).await {
                Err(HealthError::Status { status, .. }) => assert_eq!(status.as_u16(), want),
                other => panic!("{path}: expected a {want} status error, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_unhealthy() {
        // Bound then dropped: nothing listens there any more.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let result = check(&format!("http://{addr}/livez"), PATIENCE).await;
        assert!(matches!(result, Err(HealthError::Connect { .. })), "{result:?}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        // Accepts, reads nothing, answers nothing, keeps the socket open.
        let held = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.expect("accept");
            std::future::pending::<()>().await;
            drop(socket);
        });
        let result = check(&format!("http://{addr}/livez"), Duration::from_millis(300)).await;
        assert!(matches!(result, Err(HealthError::Timeout { .. })), "{result:?}");
        held.abort();
    }

    #[tokio::test]
    async fn urls_it_cannot_ask_are_refused_before_connecting() {
        for url in ["https://127.0.0.1/livez", "127.0.0.1:8080/livez", "http://", "not a url"] {
            let result = check(url, PATIENCE).await;
            assert!(matches!(result, Err(HealthError::BadUrl { .. })), "{url}: {result:?}");
        }
    }

    #[test]
    fn default_url_asks_loopback_when_the_server_listens_everywhere() {
        let check = |addr: &str, want: &str| {
            assert_eq!(default_url(addr.parse().expect("an address")), want, "{addr}");
        };
        check("0.0.0.0:8080", "http://127.0.0.1:8080/livez");
        check("[::]:9000", "http://[::1]:9000/livez");
        check("127.0.0.1:8080", "http://127.0.0.1:8080/livez");
        check("10.1.2.3:80", "http://10.1.2.3:80/livez");
    }
}
