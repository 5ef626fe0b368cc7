//! What the instances cost Redis, in Redis's own words: its command counts
//! by name and its CPU time, from `INFO`, read before and after the
//! measured window (the same window as every other figure, so the count
//! cannot take in seconds when the rooms were not open yet, or closed).
//!
//! Through the `redis` crate (the one the server uses), not a hand-written
//! protocol; only `INFO` is sent.

use anyhow::Context;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long one `INFO` may take.
const PATIENCE: Duration = Duration::from_secs(5);

/// Redis's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RedisSample {
    /// `cmdstat_<name>` `calls`, by command name (`publish`, `evalsha`, …).
    pub calls: BTreeMap<String, u64>,
    /// `total_commands_processed`.
    pub commands: u64,
    /// `used_cpu_sys + used_cpu_user`: the server's CPU time, all threads.
    pub cpu_seconds: f64,
}

/// What Redis did in a window, per second.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RedisRates {
    /// Every command.
    pub commands_per_s: f64,
    /// By name, only the commands that ran in the window.
    pub calls_per_s: BTreeMap<String, f64>,
    /// CPU-seconds a second: the share of one core.
    pub cpu_share: f64,
}

impl RedisSample {
    /// Reads `INFO` from the Redis at `url`.
    pub async fn read(url: &str) -> anyhow::Result<Self> {
        let client =
            redis::Client::open(url).with_context(|| format!("bad --redis-info URL {url:?}"))?;
        let exchange = async {
            let mut connection = client.get_multiplexed_async_connection().await?;
            redis::cmd("INFO").arg("all").query_async::<String>(&mut connection).await
        };
        let text = tokio::time::timeout(PATIENCE, exchange)
            .await
            .with_context(|| format!("INFO from {url} took over {PATIENCE:?}"))?
            .with_context(|| format!("INFO from {url}"))?;
        Self::parse(&text).with_context(|| format!("unexpected INFO from {url}"))
    }

    /// The counters in `INFO all`'s text (`key:value` lines; command stats
    /// as `cmdstat_publish:calls=12,usec=…`).
    fn parse(text: &str) -> Option<Self> {
        let mut sample = Self::default();
        let (mut sys, mut user, mut commands) = (None, None, None);
        for line in text.lines() {
            let Some((key, value)) = line.trim_end().split_once(':') else { continue };
            match key {
                "used_cpu_sys" => sys = value.parse::<f64>().ok(),
                "used_cpu_user" => user = value.parse::<f64>().ok(),
                "total_commands_processed" => commands = value.parse::<u64>().ok(),
                _ => {
                    if let Some(name) = key.strip_prefix("cmdstat_") {
                        let calls = value
                            .split(',')
                            .find_map(|field| field.strip_prefix("calls="))
                            .and_then(|calls| calls.parse().ok());
                        if let Some(calls) = calls {
                            sample.calls.insert(name.to_owned(), calls);
                        }
                    }
                }
            }
        }
        sample.cpu_seconds = sys? + user?;
        sample.commands = commands?;
        Some(sample)
    }

    /// What happened between `self` and a later sample `after`, `seconds`
    /// apart.
    pub fn rates(&self, after: &Self, seconds: f64) -> RedisRates {
        let seconds = seconds.max(1e-9);
        let calls_per_s = after
            .calls
            .iter()
            .filter_map(|(name, &calls)| {
                let ran = calls.saturating_sub(self.calls.get(name).copied().unwrap_or(0));
                (ran > 0).then(|| (name.clone(), ran as f64 / seconds))
            })
            .collect();
        RedisRates {
            commands_per_s: after.commands.saturating_sub(self.commands) as f64 / seconds,
            calls_per_s,
            cpu_share: (after.cpu_seconds - self.cpu_seconds).max(0.0) / seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Stats\r\ntotal_connections_received:12\r\n\
        total_commands_processed:1000\r\n\r\n# CPU\r\nused_cpu_sys:1.500000\r\n\
        used_cpu_user:0.500000\r\n\r\n# Commandstats\r\n\
        cmdstat_publish:calls=900,usec=1800,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=3,usec=300,usec_per_call=100.00,rejected_calls=0,failed_calls=0\r\n";

    #[test]
    fn info_gives_command_counts_and_cpu() {
        let sample = RedisSample::parse(INFO).expect("parses");
        assert_eq!(sample.commands, 1000);
        assert_eq!(sample.cpu_seconds, 2.0);
        assert_eq!(sample.calls.get("publish"), Some(&900));
        assert_eq!(sample.calls.get("info"), Some(&3));
        assert_eq!(RedisSample::parse("# Stats\r\ntotal_commands_processed:1\r\n"), None);
    }

    #[test]
    fn rates_are_per_second_and_only_for_commands_that_ran() {
        let before = RedisSample::parse(INFO).expect("parses");
        let mut after = before.clone();
        after.commands += 250;
        after.cpu_seconds += 0.05;
        after.calls.insert("publish".into(), 900 + 240);
        after.calls.insert("evalsha".into(), 10);
        let rates = before.rates(&after, 20.0);
        assert_eq!(rates.commands_per_s, 12.5);
        assert_eq!(rates.calls_per_s.get("publish"), Some(&12.0));
        assert_eq!(rates.calls_per_s.get("evalsha"), Some(&0.5));
        assert!(!rates.calls_per_s.contains_key("info"));
        assert!((rates.cpu_share - 0.0025).abs() < 1e-12);
    }

    /// A real `redis-server` on a free loopback port, stopped on drop.
    struct Server(std::process::Child, u16);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn start_redis() -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--loglevel", "warning"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (install it with `cargo xtask install --test`)");
        Server(child, port)
    }

    #[tokio::test]
    async fn a_real_redis_counts_the_publishes_of_the_window() {
        let server = start_redis();
        let url = format!("redis://127.0.0.1:{}/0", server.1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let before = loop {
            match RedisSample::read(&url).await {
                Ok(sample) => break sample,
                Err(error) if tokio::time::Instant::now() > deadline => {
                    panic!("redis-server did not answer INFO: {error:#}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let client = redis::Client::open(url.as_str()).expect("url");
        let mut connection = client.get_multiplexed_async_connection().await.expect("connects");
        for n in 0..7 {
            redis::cmd("PUBLISH")
                .arg("heartsync:room:r")
                .arg(n)
                .query_async::<u64>(&mut connection)
                .await
                .expect("publishes");
        }
        let after = RedisSample::read(&url).await.expect("INFO");
        let rates = before.rates(&after, 1.0);
        assert_eq!(rates.calls_per_s.get("publish"), Some(&7.0), "{rates:?}");
        // The 7 publishes and the first INFO, at least.
        assert!(rates.commands_per_s >= 8.0, "{rates:?}");
        assert!(after.cpu_seconds >= before.cpu_seconds);
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_a_clear_error() {
        // Port 1 on loopback: nothing listens there.
        let error = RedisSample::read("redis://127.0.0.1:1/0").await.expect_err("nothing there");
        assert!(format!("{error:#}").contains("INFO from redis://127.0.0.1:1/0"), "{error:#}");
    }
}
