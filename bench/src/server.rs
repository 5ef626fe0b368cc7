//! Reading the server's own numbers from its `/metrics`, with a real HTTP
//! client (hyper-util's) and a real Prometheus text parser.

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_parse::{Scrape, Value};
use std::net::SocketAddr;
use std::time::Duration;

/// How long one scrape may take.
const SCRAPE_PATIENCE: Duration = Duration::from_secs(10);

/// The few server metrics a run compares before and after.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// `process_cpu_seconds_total`.
    pub cpu_seconds: f64,
    /// `process_resident_memory_bytes`.
    pub rss_bytes: f64,
    /// `heartsync_messages_sent_total{type="consensus"}`.
    pub consensus_sent: f64,
    /// `heartsync_cluster_partials_published_total`: one per tick per room
    /// with members, with `--redis-url` (else 0).
    pub partials_published: f64,
    /// `heartsync_cluster_partials_late_total`: other instances' partials
    /// that were not there by their tick.
    pub partials_late: f64,
}

/// Scrapes `/metrics` from `server`.
pub async fn scrape(server: SocketAddr) -> anyhow::Result<Sample> {
    let url = format!("http://{server}/metrics");
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let exchange = async {
        let response = client.get(url.parse()?).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("GET {url} answered {status}: {}", String::from_utf8_lossy(&body));
        }
        anyhow::Ok(body)
    };
    let body = tokio::time::timeout(SCRAPE_PATIENCE, exchange)
        .await
        .with_context(|| format!("GET {url} took over {SCRAPE_PATIENCE:?}"))??;
    let text = std::str::from_utf8(&body).with_context(|| format!("{url} is not UTF-8"))?;
    parse(text).with_context(|| format!("reading {url}"))
}

/// Picks the sample's numbers out of Prometheus text.
fn parse(text: &str) -> anyhow::Result<Sample> {
    let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))
        .context("not Prometheus text")?;
    let value = |name: &str, labels: &[(&str, &str)]| {
        scrape.samples.iter().find_map(|sample| {
            let matches = sample.metric == name
                && sample.labels.len() == labels.len()
                && labels.iter().all(|(key, value)| sample.labels.get(key) == Some(*value));
            match sample.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) if matches => Some(v),
                _ => None,
            }
        })
    };
    let required = |name: &str| value(name, &[]).with_context(|| format!("no {name}"));
    Ok(Sample {
        cpu_seconds: required("process_cpu_seconds_total")?,
        rss_bytes: required("process_resident_memory_bytes")?,
        // Exported only once the first consensus has gone out.
        consensus_sent: value("heartsync_messages_sent_total", &[("type", "consensus")])
            .unwrap_or(0.0),
        partials_published: value("heartsync_cluster_partials_published_total", &[]).unwrap_or(0.0),
        partials_late: value("heartsync_cluster_partials_late_total", &[]).unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_numbers_from_prometheus_text() {
        let text = "# TYPE process_cpu_seconds_total counter\n\
                    process_cpu_seconds_total 1.5\n\
                    # TYPE process_resident_memory_bytes gauge\n\
                    process_resident_memory_bytes 2e7\n\
                    # TYPE heartsync_messages_sent_total counter\n\
                    heartsync_messages_sent_total{type=\"welcome\"} 3\n\
                    heartsync_messages_sent_total{type=\"consensus\"} 42\n\
                    heartsync_cluster_partials_published_total 40\n\
                    heartsync_cluster_partials_late_total 2\n";
        let sample = parse(text).expect("parses");
        let expected = Sample {
            cpu_seconds: 1.5,
            rss_bytes: 2e7,
            consensus_sent: 42.0,
            partials_published: 40.0,
            partials_late: 2.0,
        };
        assert_eq!(sample, expected);
    }

    #[test]
    fn consensus_is_zero_before_the_first_and_process_metrics_are_required() {
        let text = "process_cpu_seconds_total 1\nprocess_resident_memory_bytes 2\n";
        let sample = parse(text).expect("parses");
        assert_eq!((sample.consensus_sent, sample.partials_published), (0.0, 0.0));
        let error = parse("process_cpu_seconds_total 1\n").expect_err("no rss");
        assert!(format!("{error:#}").contains("process_resident_memory_bytes"), "{error:#}");
    }
}
