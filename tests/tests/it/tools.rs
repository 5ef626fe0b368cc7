//! The tools work end to end: the load generator against the real server,
//! and the terminal heart's still picture.

use std::time::Duration;
use tests::{ServerProcess, workspace_binary};

#[tokio::test(flavor = "multi_thread")]
async fn heartsync_bench_measures_a_real_server() {
    let data = tempfile::tempdir().unwrap();
    let server =
        ServerProcess::start(&["--data-dir", data.path().to_str().unwrap()]).await.unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(workspace_binary("bench", "heartsync-bench"))
            .args(["--url", &format!("ws://{}", server.addr)])
            .args(["--clients", "30", "--rooms", "3", "--duration", "2s", "--settle", "500ms"])
            .args(["--taps-per-s", "2", "--json"])
            .output(),
    )
    .await
    .expect("heartsync-bench ended by itself")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let last = stdout.lines().last().expect("output");
    let report: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    assert_eq!(report["clients_connected"], 30, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    // How many ticks a client misses, and how many it gets a second, depend
    // on how busy this machine is; what holds on any machine is that ticks
    // and acks arrive, and no more of them than the server sends: 30
    // clients at 4 ticks a second, each tapping twice a second.
    assert!(report["ticks_missed"].is_u64(), "{report}");
    let rate = report["msgs_received_per_s"].as_f64().unwrap();
    assert!(rate > 0.0 && rate <= 2.0 * 120.0, "{report}");
    let taps = report["taps_acked_per_s"].as_f64().unwrap();
    assert!(taps > 0.0 && taps <= 2.0 * 60.0, "{report}");
    assert!(report["tick_delay_p99_ms"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["deliveries_per_server_cpu_s"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["server_rss_bytes"].as_f64().unwrap() > 1e6, "{report}");
    for key in ["connect_p50_ms", "connect_p95_ms", "connect_p99_ms", "tick_delay_p50_ms"] {
        assert!(report[key].is_number(), "{key} missing: {report}");
    }
}

#[test]
fn heartsync_term_prints_a_still_heart_without_a_server() {
    let output = std::process::Command::new(workspace_binary("term", "heartsync-term"))
        .arg("--static")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let rows: Vec<&str> = text.lines().filter(|line| line.contains('█')).collect();
    assert!(rows.len() >= 8, "{text}");
    // Wider in the middle than at the tip: a heart, not a box.
    let width = |row: &str| row.chars().filter(|c| *c == '█').count();
    assert!(width(rows[rows.len() / 3]) > 3 * width(rows[rows.len() - 1]), "{text}");
}
