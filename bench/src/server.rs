//! Reading the server's own numbers from its `/metrics`.

use anyhow::Context;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The few server metrics a run compares before and after.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// `process_cpu_seconds_total`.
    pub cpu_seconds: f64,
    /// `process_resident_memory_bytes`.
    pub rss_bytes: f64,
    /// `heartsync_messages_sent_total{type="consensus"}`.
    pub consensus_sent: f64,
}

/// Scrapes `/metrics` from `server`.
pub async fn scrape(server: SocketAddr) -> anyhow::Result<Sample> {
    let mut stream = tokio::net::TcpStream::connect(server).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await??;
    let text = String::from_utf8_lossy(&response);
    let value = |name: &str| -> anyhow::Result<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .with_context(|| format!("{name} missing from /metrics"))
    };
    Ok(Sample {
        cpu_seconds: value("process_cpu_seconds_total")?,
        rss_bytes: value("process_resident_memory_bytes")?,
        consensus_sent: value(r#"heartsync_messages_sent_total{type="consensus"}"#).unwrap_or(0.0),
    })
}

/// Scrapes every server and adds their numbers up (several instances are
/// one service: CPU, memory and deliveries of all of them together).
pub async fn scrape_all(servers: &[SocketAddr]) -> anyhow::Result<Sample> {
    let mut total = Sample { cpu_seconds: 0.0, rss_bytes: 0.0, consensus_sent: 0.0 };
    for &server in servers {
        let one = scrape(server).await?;
        total.cpu_seconds += one.cpu_seconds;
        total.rss_bytes += one.rss_bytes;
        total.consensus_sent += one.consensus_sent;
    }
    Ok(total)
}
