//! The one HTTP client of the tests: hyper-util's, speaking plain HTTP/1.1,
//! so status lines, headers and chunked bodies are read by a real HTTP
//! implementation rather than by string splitting.
//!
//! Each request gets a fresh client that keeps no idle connection, so no
//! test leaves a keep-alive connection behind that a graceful shutdown would
//! wait for.

use anyhow::Context;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// How long one request may take, answer and body included.
pub const HTTP_PATIENCE: Duration = Duration::from_secs(10);

/// An HTTP response, its body read to the end (and de-chunked, but not
/// decompressed: a gzipped body stays as it came over the wire).
#[derive(Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body as received.
    pub body: Bytes,
}

/// For failure messages: the status, the headers and the start of the body.
impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 400;
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(SHOWN)]).into_owned();
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body_bytes", &self.body.len())
            .field("body_start", &text)
            .finish()
    }
}

impl Response {
    /// The body as text (lossy: it is for assertions and messages).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of header `name`, if present and readable as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// `GET url` within [`HTTP_PATIENCE`].
pub async fn get(url: &str) -> anyhow::Result<Response> {
    get_with(url, &[]).await
}

/// `GET url` with extra request headers, within [`HTTP_PATIENCE`].
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Response> {
    let mut request = http::Request::get(url);
    for (name, value) in headers {
        request = request.header(HeaderName::try_from(*name)?, HeaderValue::try_from(*value)?);
    }
    let request = request.body(Empty::<Bytes>::new()).with_context(|| format!("GET {url}"))?;
    let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http();
    let exchange = async {
        let response = client.request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        anyhow::Ok(Response { status: parts.status.as_u16(), headers: parts.headers, body })
    };
    tokio::time::timeout(HTTP_PATIENCE, exchange)
        .await
        .with_context(|| format!("GET {url} took over {HTTP_PATIENCE:?}"))?
        .with_context(|| format!("GET {url}"))
}

/// The status code of `GET url`.
pub async fn status(url: &str) -> anyhow::Result<u16> {
    Ok(get(url).await?.status)
}
