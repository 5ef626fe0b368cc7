//! The operator files under `deploy/`: the alert rules pass their promtool
//! unit tests, the dashboard and scrape config are valid and only query
//! metrics the server exports, `/metrics` passes `promtool check metrics`,
//! and a real Prometheus scrapes a real server.
//!
//! promtool and prometheus come from Debian's `prometheus` package, which
//! `cargo xtask test` installs; these tests fail (not skip) without them.

use anyhow::{Context, bail, ensure};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tests::metrics::Metrics;
use tests::{TestServer, http, wait_until};
use tokio::io::AsyncWriteExt;

/// The metric names heartsync exports (histograms by their base name), the
/// only ones the deploy files may query besides Prometheus's own `up`.
const METRICS: &[&str] = &[
    "heartsync_connections_open",
    "heartsync_connections_opened_total",
    "heartsync_connections_closed_total",
    "heartsync_upgrades_refused_total",
    "heartsync_messages_received_total",
    "heartsync_messages_sent_total",
    "heartsync_errors_sent_total",
    "heartsync_rate_limited_total",
    "heartsync_pings_sent_total",
    "heartsync_pongs_missed_total",
    "heartsync_tick_duration_seconds",
    "heartsync_broadcast_lag_seconds",
    "heartsync_rooms_active",
    "heartsync_hearts",
    "heartsync_voters",
    "heartsync_room_coherence",
    "heartsync_love_taps_total",
    "heartsync_love_ack_seconds",
    "heartsync_build_info",
    "heartsync_redis_up",
    "heartsync_cluster_partials_published_total",
    "heartsync_cluster_partials_received_total",
    "heartsync_cluster_partials_dropped_total",
    "heartsync_cluster_partials_late_total",
    "heartsync_cluster_publish_failures_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_max_fds",
];

/// What `/metrics` must show once a client has joined: what the alerts and
/// the dashboard's headline panels stand on.
const MUST_EXPORT: &[&str] = &[
    "heartsync_connections_open",
    "heartsync_connections_opened_total",
    "heartsync_messages_sent_total",
    "heartsync_rooms_active",
    "heartsync_build_info",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
];

/// How long any one promtool run may take.
const PROMTOOL_PATIENCE: Duration = Duration::from_secs(60);

/// A file under `deploy/` in the workspace.
fn deploy(path: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy")).join(path)
}

/// The message for a missing promtool/prometheus: install, don't skip.
fn missing_tool(tool: &str) -> String {
    format!(
        "`{tool}` was not found on PATH. `cargo xtask test` installs it (Debian package \
         `prometheus`; or `apt-get install -y prometheus`); the deploy tests do not skip without it"
    )
}

/// Runs `promtool args…` (feeding `stdin` if given) within
/// [`PROMTOOL_PATIENCE`]: whether it succeeded, and everything it printed.
async fn promtool(args: &[&str], stdin: Option<&[u8]>) -> anyhow::Result<(bool, String)> {
    let mut command = tokio::process::Command::new("promtool");
    command
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{}", missing_tool("promtool"))
        }
        Err(e) => return Err(e).context("spawn promtool"),
    };
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("promtool's stdin")?;
        pipe.write_all(input).await.context("write promtool's stdin")?;
        drop(pipe);
    }
    let output = tokio::time::timeout(PROMTOOL_PATIENCE, child.wait_with_output())
        .await
        .with_context(|| format!("promtool {args:?} did not finish in {PROMTOOL_PATIENCE:?}"))?
        .context("wait for promtool")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), text))
}

/// Runs promtool and fails the test with its output unless it succeeds.
async fn promtool_ok(args: &[&str], stdin: Option<&[u8]>) -> String {
    let (ok, output) =
        promtool(args, stdin).await.unwrap_or_else(|e| panic!("promtool {args:?}: {e:#}"));
    assert!(ok, "`promtool {}` failed:\n{output}", args.join(" "));
    output
}

/// A path as promtool's argument.
fn arg(path: &Path) -> &str {
    path.to_str().expect("deploy paths are UTF-8")
}

#[tokio::test(flavor = "multi_thread")]
async fn alert_rules_pass_their_unit_tests() {
    let rules = deploy("prometheus/alerts.yml");
    let rule_tests = deploy("prometheus/alerts_test.yml");
    let checked = promtool_ok(&["check", "rules", arg(&rules)], None).await;
    assert!(
        checked.contains("SUCCESS: 6 rules found"),
        "expected the 6 heartsync alerts:\n{checked}"
    );
    let tested = promtool_ok(&["test", "rules", arg(&rule_tests)], None).await;
    println!("{tested}");

    // promtool does not require a test per rule: check that every alert has
    // at least one case where it fires and one where it must stay quiet.
    let rules_text = std::fs::read_to_string(&rules).expect("read alerts.yml");
    let tests_text = std::fs::read_to_string(&rule_tests).expect("read alerts_test.yml");
    let alerts: Vec<&str> = rules_text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    assert_eq!(
        alerts,
        [
            "HeartsyncConnectionsDropped",
            "HeartsyncBroadcastLagHigh",
            "HeartsyncHeartbeatFailures",
            "HeartsyncMemoryGrowing",
            "HeartsyncInstanceDown",
            "HeartsyncRedisDown"
        ],
        "the alerts in alerts.yml changed; update this test and deploy/README.md"
    );
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    let mut current = None;
    for line in tests_text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim());
        } else if let Some(expected) = line.strip_prefix("exp_alerts:") {
            let name = current.take().expect("exp_alerts after an alertname");
            if expected.trim() == "[]" {
                quiet.insert(name);
            } else {
                fires.insert(name);
            }
        }
    }
    for alert in alerts {
        assert!(fires.contains(alert), "alerts_test.yml has no case where {alert} fires");
        assert!(quiet.contains(alert), "alerts_test.yml has no case where {alert} stays quiet");
    }
}

/// The dashboard's PromQL with its template variables filled in as an
/// operator's default selection would.
fn concrete(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m").replace("$job", "heartsync").replace("$instance", ".*")
}

/// Every (panel title, expression) in the dashboard.
fn dashboard_queries() -> anyhow::Result<Vec<(String, String)>> {
    let path = deploy("grafana/heartsync-dashboard.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path:?}"))?;
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{path:?} is not valid JSON"))?;
    ensure!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion missing or too old"
    );
    ensure!(
        dashboard["templating"]["list"]
            .as_array()
            .is_some_and(|vars| vars.iter().any(|v| v["type"] == "datasource")),
        "the dashboard needs a datasource variable so it imports into any Grafana"
    );
    let panels = dashboard["panels"].as_array().context("no panels")?;
    ensure!(!panels.is_empty(), "no panels");
    let mut ids = BTreeSet::new();
    let mut queries = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().context("a panel without a title")?;
        ensure!(
            ids.insert(panel["id"].as_u64().context("a panel without an id")?),
            "duplicate panel id in {title:?}"
        );
        let targets = panel["targets"]
            .as_array()
            .filter(|targets| !targets.is_empty())
            .with_context(|| format!("panel {title:?} has no targets"))?;
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .filter(|expr| !expr.trim().is_empty())
                .with_context(|| format!("panel {title:?} has a target without an expr"))?;
            ensure!(
                METRICS.iter().any(|metric| expr.contains(metric)),
                "panel {title:?} queries none of heartsync's metrics: {expr}"
            );
            queries.push((title.to_owned(), expr.to_owned()));
        }
    }
    Ok(queries)
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_and_scrape_config_are_valid() {
    let queries = dashboard_queries().unwrap_or_else(|e| panic!("the dashboard: {e:#}"));

    // Every expression must parse: promtool checks them as recording rules.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in queries.iter().enumerate() {
        rules.push_str(&format!(
            "      # {title}\n      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::Value::String(concrete(expr))
        ));
    }
    let rules_path = dir.path().join("dashboard-queries.yml");
    std::fs::write(&rules_path, &rules).expect("write the dashboard queries");
    let (ok, output) =
        promtool(&["check", "rules", arg(&rules_path)], None).await.expect("run promtool");
    assert!(ok, "a dashboard query does not parse:\n{output}\nqueries:\n{rules}");

    let config =
        promtool_ok(&["check", "config", arg(&deploy("prometheus/prometheus.yml"))], None).await;
    assert!(
        config.contains("1 rule files found"),
        "prometheus.yml should load alerts.yml:\n{config}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_output_passes_promtool_check_metrics() {
    let server = TestServer::start().await;
    let (client, _, _) = server.join("/ws/x").await;

    let metrics = Metrics::scrape(server.addr).await.expect("GET /metrics");
    let exported = metrics.families();
    let missing: Vec<_> = MUST_EXPORT.iter().filter(|name| !exported.contains(**name)).collect();
    assert!(
        missing.is_empty(),
        "/metrics lacks {missing:?} with a client connected:\n{}",
        metrics.text
    );
    let (ok, output) =
        promtool(&["check", "metrics"], Some(metrics.text.as_bytes())).await.expect("run promtool");
    assert!(
        ok,
        "`promtool check metrics` rejects /metrics:\n{output}\n--- /metrics ---\n{}",
        metrics.text
    );

    client.close().await;
    server.shutdown().await.expect("shutdown");
}

/// A Prometheus server as a child process, killed on drop, its output in a
/// file for failure messages.
struct Prometheus {
    addr: SocketAddr,
    log: PathBuf,
    _child: tokio::process::Child,
}

impl Prometheus {
    /// Starts prometheus with `config` (YAML text), its data and log in `dir`.
    async fn start(dir: &Path, config: &str) -> anyhow::Result<Self> {
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let addr = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?
        };
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let child = match tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("{}", missing_tool("prometheus"))
            }
            Err(e) => return Err(e).context("spawn prometheus"),
        };
        Ok(Self { addr, log, _child: child })
    }

    /// Everything prometheus printed so far.
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// `GET /api/v1/<endpoint>`; the `data` of a successful answer.
    async fn api(&self, endpoint_and_query: &str) -> anyhow::Result<serde_json::Value> {
        let url = format!("http://{}/api/v1/{endpoint_and_query}", self.addr);
        let response = http::get(&url).await?;
        let json: serde_json::Value = serde_json::from_slice(&response.body)
            .with_context(|| format!("HTTP {}: {}", response.status, response.text()))?;
        if json["status"] != "success" {
            bail!("HTTP {}: {json}", response.status);
        }
        Ok(json["data"].clone())
    }

    /// An instant query's result vector.
    async fn query(&self, promql: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let data = self
            .api(&format!("query?query={}", percent_encode(promql)))
            .await
            .with_context(|| format!("query {promql}"))?;
        ensure!(data["resultType"] == "vector", "query {promql}: not a vector: {data}");
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

/// Percent-encodes a query string value.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The number in an instant-vector sample (`"value": [time, "number"]`).
fn sample_value(sample: &serde_json::Value) -> anyhow::Result<f64> {
    sample["value"][1]
        .as_str()
        .with_context(|| format!("no value in {sample}"))?
        .parse()
        .with_context(|| format!("a bad value in {sample}"))
}

async fn scrape_and_query(prometheus: &Prometheus) -> anyhow::Result<()> {
    // The target comes up.
    wait_until(Duration::from_secs(30), "up{job=\"heartsync\"} == 1", || async {
        let result = prometheus.query("up{job=\"heartsync\"}").await?;
        let sample = result.first().context("no sample yet")?;
        let up = sample_value(sample)?;
        ensure!(up == 1.0, "up is {up}");
        Ok(())
    })
    .await?;

    // The server's own metrics arrive; our client is connected throughout.
    let open = prometheus.query("heartsync_connections_open{job=\"heartsync\"}").await?;
    let sample = open.first().context("no heartsync_connections_open sample")?;
    let open = sample_value(sample)?;
    ensure!(open >= 1.0, "heartsync_connections_open = {open} with a client connected");

    // The real Prometheus loaded the alerts and evaluates them cleanly.
    wait_until(Duration::from_secs(15), "all 6 alert rules evaluated without error", || async {
        let data = prometheus.api("rules").await?;
        let rules: Vec<&serde_json::Value> = data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().into_iter().flatten())
            .collect();
        if let Some(broken) = rules.iter().find(|rule| rule["health"] == "err") {
            bail!("a rule fails to evaluate: {broken}");
        }
        ensure!(
            rules.len() == 6 && rules.iter().all(|rule| rule["health"] == "ok"),
            "not yet all evaluated: {data}"
        );
        Ok(())
    })
    .await?;

    // Every dashboard query runs against real data without error.
    for (title, expr) in dashboard_queries()? {
        prometheus
            .query(&concrete(&expr))
            .await
            .with_context(|| format!("dashboard panel {title:?}"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn real_prometheus_scrapes_the_server() {
    let server = TestServer::start().await;
    let (client, _, _) = server.join("/ws/x").await;

    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n  - job_name: heartsync\n    static_configs:\n      - targets: [\"{addr}\"]\n",
        rules = serde_json::Value::String(deploy("prometheus/alerts.yml").display().to_string()),
        addr = server.addr,
    );
    let prometheus = Prometheus::start(dir.path(), &config).await.expect("start prometheus");

    let outcome = tokio::time::timeout(Duration::from_secs(60), scrape_and_query(&prometheus))
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the whole check took over 60 s")));
    if let Err(e) = outcome {
        panic!(
            "{e:#}\n--- prometheus config ---\n{config}\n--- prometheus output ---\n{}",
            prometheus.output()
        );
    }

    drop(prometheus);
    client.close().await;
    server.shutdown().await.expect("shutdown");
}
