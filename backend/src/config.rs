//! Every knob of the server: a flag, an environment variable, and a default.
//!
//! Durations are humantime (`250ms`, `25s`). `Config::default()` is what the
//! binary runs with when given no flags, so tests start from the same values
//! operators get.

use clap::Parser;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The server's configuration.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "heartsync",
    version,
    about = "The heartsync server: rooms of hearts beating as one"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "HEARTSYNC_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Folder for durable data (love totals); created if missing.
    #[arg(long, env = "HEARTSYNC_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Folder of the built page (trunk's `dist/`).
    #[arg(long, env = "HEARTSYNC_STATIC_DIR", default_value = "dist")]
    pub static_dir: PathBuf,

    /// How often each room broadcasts its consensus.
    #[arg(long, env = "HEARTSYNC_TICK", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub tick: Duration,

    /// How often clients are asked to report their phase.
    #[arg(long, env = "HEARTSYNC_REPORT_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub report_interval: Duration,

    /// A report older than this no longer counts as a vote.
    #[arg(long, env = "HEARTSYNC_VOTE_TTL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub vote_ttl: Duration,

    /// How often the server pings each connection.
    #[arg(long, env = "HEARTSYNC_PING_INTERVAL", default_value = "25s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,

    /// A connection whose pong has not come this long after a ping is closed.
    #[arg(long, env = "HEARTSYNC_PONG_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub pong_timeout: Duration,

    /// A WebSocket that sends no data message (no report, no love, no
    /// clock sample) for this long is closed with 1000 "idle timeout",
    /// even if it answers pings: a client that only holds a slot is let go.
    /// The page and `heartsync-term` report every second, and a hidden tab's
    /// throttled timers still once a minute. `0s` turns it off.
    #[arg(long, env = "HEARTSYNC_IDLE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Pin each of the runtime's worker threads to a CPU of its own (round
    /// robin over the CPUs the process may use). Off, the kernel may stack
    /// both workers of a two-core machine on one core for a tick's whole
    /// fan-out while the other runs something else, doubling that tick's
    /// delay (BENCHMARKS.md, "Workers pinned to their cores"). Turn it on
    /// where the server has its cores to itself; leave it off where they
    /// are shared with busier neighbours, which a pinned worker cannot
    /// escape.
    #[arg(long, env = "HEARTSYNC_PIN_WORKERS")]
    pub pin_workers: bool,

    /// How often to hand the memory glibc's allocator holds free back to
    /// the system (`malloc_trim`; see `memory.rs`). The server's own
    /// allocations go through jemalloc, which purges on its own; glibc's
    /// heap holds what C libraries (SQLite) allocate. `0s` turns it off.
    #[arg(long, env = "HEARTSYNC_TRIM_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub trim_interval: Duration,

    /// A connection (WebSocket or HTTP) whose socket stays unwritable this
    /// long is closed: a client that stops reading cannot hold a descriptor
    /// and kernel buffers for ever.
    #[arg(long, env = "HEARTSYNC_WRITE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,

    /// Largest incoming message, in bytes; a larger one closes the connection with 1009.
    #[arg(long, env = "HEARTSYNC_MAX_MESSAGE_BYTES", default_value_t = 4096)]
    pub max_message_bytes: usize,

    /// Most open WebSocket connections; over it, upgrades get 503.
    #[arg(long, env = "HEARTSYNC_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Most new WebSocket connections per second (also the burst); over it, 503.
    #[arg(long, env = "HEARTSYNC_MAX_ACCEPT_RATE", default_value_t = 1000)]
    pub max_accept_rate: u32,

    /// Most open WebSocket connections from one client address (an IPv6
    /// client is its /64); over it, upgrades get 429. People behind one NAT
    /// share an address: raise it for an event where a crowd shares one.
    #[arg(long, env = "HEARTSYNC_MAX_CONNECTIONS_PER_IP", default_value_t = 200)]
    pub max_connections_per_ip: usize,

    /// A proxy (an address or a CIDR network, repeatable) whose
    /// `X-Forwarded-For` names the client; from any other peer the header
    /// is ignored, since anyone can send it.
    #[arg(long = "trusted-proxy", env = "HEARTSYNC_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_network)]
    pub trusted_proxies: Vec<IpNet>,

    /// Most open HTTP connections (page, assets, health checks, upgrades not
    /// yet upgraded); over it, a new connection gets a bare 503 and is closed.
    /// WebSockets count under `--max-connections` instead.
    #[arg(long, env = "HEARTSYNC_MAX_HTTP_CONNECTIONS", default_value_t = 1024)]
    pub max_http_connections: usize,

    /// Messages per second each connection may send (token bucket refill).
    #[arg(long, env = "HEARTSYNC_MESSAGE_RATE", default_value_t = 20)]
    pub message_rate: u32,

    /// Messages a connection may send in one burst (token bucket size).
    #[arg(long, env = "HEARTSYNC_MESSAGE_BURST", default_value_t = 40)]
    pub message_burst: u32,

    /// A connection rate-limited without a second's pause for this long is closed with 1008.
    #[arg(long, env = "HEARTSYNC_FLOOD_CLOSE_AFTER", default_value = "5s", value_parser = humantime::parse_duration)]
    pub flood_close_after: Duration,

    /// Protocol violations within `violation_window` that close a connection with 1008.
    #[arg(long, env = "HEARTSYNC_MAX_VIOLATIONS", default_value_t = 50)]
    pub max_violations: u32,

    /// The window over which protocol violations are counted.
    #[arg(long, env = "HEARTSYNC_VIOLATION_WINDOW", default_value = "10s", value_parser = humantime::parse_duration)]
    pub violation_window: Duration,

    /// An extra browser origin allowed to open WebSockets (repeatable), e.g.
    /// `https://heartsync.example`. The server's own origin is always allowed.
    #[arg(long = "allowed-origin", env = "HEARTSYNC_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// The site's real origin as browsers see it (repeatable), e.g.
    /// `https://heartsync.example`. When given, a browser's `Origin` must be
    /// one of these (or an `--allowed-origin`), and the `Host` header, which
    /// a DNS-rebinding page controls, is no longer trusted.
    #[arg(long = "public-origin", env = "HEARTSYNC_PUBLIC_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub public_origins: Vec<String>,

    /// On shutdown, WebSocket closes are spread over this long.
    #[arg(long, env = "HEARTSYNC_DRAIN", default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain: Duration,

    /// A client must finish sending its HTTP request headers within this long.
    #[arg(long, env = "HEARTSYNC_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// Log filter, `RUST_LOG` syntax (e.g. `info,backend=debug`).
    #[arg(long = "log", env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,

    /// Log format: `pretty` for people, `json` for log pipelines.
    #[arg(long, env = "HEARTSYNC_LOG_FORMAT", default_value = "pretty")]
    pub log_format: LogFormat,

    /// Redis shared by several instances, e.g. `redis://127.0.0.1:6379/0`.
    /// Without it the server runs alone with love in SQLite in `--data-dir`;
    /// with it, rooms span every instance on the same Redis and love lives
    /// in Redis (which must run `appendonly yes` + `appendfsync always`).
    #[arg(long, env = "HEARTSYNC_REDIS_URL")]
    pub redis_url: Option<String>,

    /// This instance's name among the instances sharing Redis (in `/readyz`,
    /// logs and metrics). Default: hostname, pid and a random suffix.
    #[arg(long, env = "HEARTSYNC_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Start even when Redis is not configured to fsync every write
    /// (`appendonly yes` + `appendfsync always`): an acknowledged love tap
    /// may then be lost if Redis crashes.
    #[arg(long, env = "HEARTSYNC_REDIS_UNSAFE_LOVE")]
    pub redis_unsafe_love: bool,

    /// Love taps one connection may add a second, on average: a tap over
    /// the budget is refused (`rate_limited`) and counts nothing. People
    /// tap a few times a second at most.
    #[arg(long, env = "HEARTSYNC_LOVE_RATE", default_value_t = 20)]
    pub love_rate: u32,

    /// Love taps one connection may add at once (the budget's burst), so a
    /// pile of taps made offline goes in at once.
    #[arg(long, env = "HEARTSYNC_LOVE_BURST", default_value_t = 100)]
    pub love_burst: u32,

    /// New love ledgers (a client id's first love in a room) one client
    /// address (an IPv6 client is its /64) may start per
    /// `--love-ledger-window`; over it a client's first love is refused
    /// (`rate_limited`) and counts nothing. Like `--max-connections-per-ip`,
    /// raise it for a crowd behind one NAT.
    #[arg(long, env = "HEARTSYNC_LOVE_LEDGERS_PER_IP", default_value_t = 200)]
    pub love_ledgers_per_ip: u32,

    /// The window `--love-ledgers-per-ip` counts in.
    #[arg(long, env = "HEARTSYNC_LOVE_LEDGER_WINDOW", default_value = "10m", value_parser = humantime::parse_duration)]
    pub love_ledger_window: Duration,

    /// A client's love ledger in a room (its last count) is kept this long
    /// after its last love message; then it is folded into the room's
    /// total (which already holds its taps) and deleted, and a later count
    /// in it is answered `love_folded`. At least one second.
    #[arg(long, env = "HEARTSYNC_LOVE_RETENTION", default_value = "7days", value_parser = parse_retention)]
    pub love_retention: Duration,

    /// Make rooms named `private-…` private: they admit only holders of a
    /// join token signed with `--token-secret`. Off, such rooms are refused.
    #[arg(long, env = "HEARTSYNC_PRIVATE_ROOMS")]
    pub private_rooms: bool,

    /// The secret join tokens are signed with (at least 32 bytes); needed
    /// with `--private-rooms`. Never logged.
    #[arg(long, env = "HEARTSYNC_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<crate::auth::TokenSecret>,

    /// A browser origin allowed to read `/api/*` cross-origin (CORS;
    /// repeatable, `*` for any). None by default.
    #[arg(long = "api-cors-origin", env = "HEARTSYNC_API_CORS_ORIGINS", value_delimiter = ',')]
    pub api_cors_origins: Vec<String>,

    /// An SSE stream with nothing to send this long gets a comment, so
    /// proxies keep it open.
    #[arg(long, env = "HEARTSYNC_SSE_KEEP_ALIVE", default_value = "15s", value_parser = humantime::parse_duration)]
    pub sse_keep_alive: Duration,

    /// How many rooms' coherence history is kept in memory (an hour each);
    /// past it, the room idle longest is forgotten.
    #[arg(long, env = "HEARTSYNC_HISTORY_ROOMS", default_value_t = 1000)]
    pub history_rooms: usize,
}

/// A configuration the server cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Private rooms need a secret to check tokens with.
    #[error("--private-rooms needs --token-secret (or HEARTSYNC_TOKEN_SECRET)")]
    NoTokenSecret,
}

impl Config {
    /// Checks what clap cannot: combinations of flags.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.private_rooms && self.token_secret.is_none() {
            return Err(ConfigError::NoTokenSecret);
        }
        Ok(())
    }
}

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// A trusted proxy: a CIDR network (`10.0.0.0/8`) or one address.
fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is neither an IP address nor a CIDR network"))
}

/// An origin as a browser serializes it: `scheme://host[:port]`, lower
/// case, no path.
fn parse_origin(text: &str) -> Result<String, String> {
    let origin = text.trim().trim_end_matches('/').to_ascii_lowercase();
    let bad = || format!("{text:?} is not an origin like https://heartsync.example");
    let (scheme, host) = origin.split_once("://").ok_or_else(bad)?;
    let plain_host = !host.is_empty() && !host.contains(['/', '?', '#', '@', ' ']);
    if matches!(scheme, "http" | "https") && plain_host { Ok(origin) } else { Err(bad()) }
}

impl Default for Config {
    /// What the binary runs with when given no flags (the `HEARTSYNC_*`
    /// environment variables still apply, as they do to the binary).
    fn default() -> Self {
        Config::parse_from(["heartsync"])
    }
}

/// A retention: a humantime duration of at least a second (a shorter one
/// would fold a ledger while its client is still tapping).
fn parse_retention(text: &str) -> Result<Duration, String> {
    let retention = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if retention < Duration::from_secs(1) {
        return Err(format!("a love retention must be at least 1s, got {text}"));
    }
    Ok(retention)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hostile_input_limits_have_defaults_and_flags() {
        let defaults = Config::default();
        assert_eq!(defaults.max_connections_per_ip, 200);
        assert_eq!(defaults.max_http_connections, 1024);
        assert!(defaults.trusted_proxies.is_empty() && defaults.public_origins.is_empty());
        let config = Config::try_parse_from([
            "heartsync",
            "--max-connections-per-ip",
            "5",
            "--max-http-connections",
            "64",
            "--trusted-proxy",
            "10.0.0.0/8,127.0.0.1",
            "--public-origin",
            "https://Heartsync.example/",
            "--public-origin",
            "http://localhost:8080",
        ])
        .expect("valid flags");
        assert_eq!(config.max_connections_per_ip, 5);
        assert_eq!(config.max_http_connections, 64);
        assert_eq!(config.trusted_proxies.len(), 2);
        assert_eq!(config.public_origins, ["https://heartsync.example", "http://localhost:8080"]);
        let bad = Config::try_parse_from(["heartsync", "--trusted-proxy", "nginx"]);
        assert!(bad.is_err());
    }

    #[test]
    fn the_idle_timeout_defaults_to_five_minutes_and_zero_turns_it_off() {
        assert_eq!(Config::default().idle_timeout, Duration::from_secs(300));
        let off = Config::try_parse_from(["heartsync", "--idle-timeout", "0s"]).expect("valid");
        assert_eq!(crate::socket::KeepaliveSettings::of(&off).idle_timeout, None);
        let short = Config::try_parse_from(["heartsync", "--idle-timeout", "90s"]).expect("valid");
        let settings = crate::socket::KeepaliveSettings::of(&short);
        assert_eq!(settings.idle_timeout, Some(Duration::from_secs(90)));
    }

    #[test]
    fn the_allocator_is_trimmed_every_minute_and_zero_turns_it_off() {
        assert_eq!(Config::default().trim_interval, Duration::from_secs(60));
        let off = Config::try_parse_from(["heartsync", "--trim-interval", "0s"]).expect("flags");
        assert!(crate::memory::spawn_trimmer(off.trim_interval).is_none());
    }

    #[test]
    fn the_love_bounds_have_defaults_and_flags() {
        let defaults = Config::default();
        assert_eq!((defaults.love_rate, defaults.love_burst), (20, 100));
        assert_eq!(defaults.love_ledgers_per_ip, 200);
        assert_eq!(defaults.love_ledger_window, Duration::from_secs(600));
        assert_eq!(defaults.love_retention, Duration::from_secs(7 * 24 * 3600));
        let config = Config::try_parse_from([
            "heartsync",
            "--love-rate",
            "5",
            "--love-burst",
            "10",
            "--love-ledgers-per-ip",
            "3",
            "--love-ledger-window",
            "1h",
            "--love-retention",
            "2s",
        ])
        .expect("valid flags");
        assert_eq!((config.love_rate, config.love_burst, config.love_ledgers_per_ip), (5, 10, 3));
        assert_eq!(config.love_ledger_window, Duration::from_secs(3600));
        assert_eq!(config.love_retention, Duration::from_secs(2));
        let error = Config::try_parse_from(["heartsync", "--love-retention", "10ms"])
            .expect_err("too short")
            .to_string();
        assert!(error.contains("at least 1s"), "{error}");
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        assert_eq!(parse_network("127.0.0.1"), Ok("127.0.0.1/32".parse().expect("a network")));
        assert_eq!(parse_network(" 10.0.0.0/8"), Ok("10.0.0.0/8".parse().expect("a network")));
        assert_eq!(parse_network("::1"), Ok("::1/128".parse().expect("a network")));
        assert!(parse_network("nginx").is_err());
    }

    #[test]
    fn public_origins_are_normalized_and_checked() {
        let check = |text: &str, expected: Option<&str>| {
            assert_eq!(parse_origin(text).ok().as_deref(), expected, "{text}");
        };
        check("https://Heartsync.example/", Some("https://heartsync.example"));
        check("http://127.0.0.1:8080", Some("http://127.0.0.1:8080"));
        check("heartsync.example", None);
        check("ftp://heartsync.example", None);
        check("https://heartsync.example/room", None);
        check("https://", None);
    }
}
