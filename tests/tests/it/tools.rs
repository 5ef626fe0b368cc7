//! The tools work end to end: the load generator and its soak against the
//! real server, and the terminal heart's still picture.

use std::time::Duration;
use tests::{PATIENCE, ServerProcess, workspace_binary};

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

/// Every thread of process `pid`: its name and its `Cpus_allowed_list`.
fn threads(pid: u32) -> Vec<(String, String)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the server's threads")
        .filter_map(|task| {
            let path = task.ok()?.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            let status = std::fs::read_to_string(path.join("status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("Cpus_allowed_list:"));
            let cpus = line.and_then(|l| l.split_whitespace().nth(1)).unwrap_or_default();
            Some((comm.trim().to_owned(), cpus.to_owned()))
        })
        .collect()
}

/// The `Cpus_allowed_list` of every worker thread of process `pid`.
fn worker_cpus(pid: u32) -> Vec<String> {
    threads(pid).into_iter().filter(|(name, _)| name == "tokio-rt-worker").map(|t| t.1).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_allocates_with_jemalloc_and_purges_in_the_background() {
    // The soak's flat RSS rests on the allocator (BENCHMARKS.md, "Soak"):
    // jemalloc's purging thread is one of the running server's threads.
    let data = tempfile::tempdir().unwrap();
    let server =
        ServerProcess::start(&["--data-dir", data.path().to_str().unwrap()]).await.unwrap();
    let names = tests::wait_until(PATIENCE, "jemalloc's purging thread", || async {
        let names: Vec<String> = threads(server.pid()).into_iter().map(|t| t.0).collect();
        anyhow::ensure!(
            names.iter().any(|name| name.starts_with("jemalloc_bg_thd")),
            "no jemalloc thread among {names:?}"
        );
        Ok(names)
    })
    .await
    .unwrap();
    assert!(names.iter().any(|name| name.starts_with("tokio")), "{names:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pinned_workers_each_run_on_a_cpu_of_their_own() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The runtime has a worker per CPU; each takes its own the first time
    // it goes idle, which an idle server's workers do at once.
    let server = ServerProcess::start(&["--data-dir", dir, "--pin-workers"]).await.unwrap();
    tests::wait_until(PATIENCE, "a CPU for every worker", || async {
        let mut pinned: Vec<String> = worker_cpus(server.pid())
            .into_iter()
            .filter(|list| !list.contains([',', '-']))
            .collect();
        pinned.sort();
        pinned.dedup();
        anyhow::ensure!(pinned.len() == cpus, "pinned to {pinned:?} of {cpus} CPUs");
        Ok(())
    })
    .await
    .unwrap();
    // The main thread and, without the flag, every worker keep every CPU.
    let every = |list: &String| cpus == 1 || list.contains(['-', ',']);
    let main: Vec<String> = threads(server.pid())
        .into_iter()
        .filter(|(name, _)| name == "heartsync")
        .map(|t| t.1)
        .collect();
    assert!(main.iter().all(every), "{main:?}");
    let unpinned = ServerProcess::start(&["--data-dir", dir]).await.unwrap();
    let lists = worker_cpus(unpinned.pid());
    assert!(!lists.is_empty());
    assert!(lists.iter().all(every), "{lists:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_soak_of_the_real_server_passes() {
    let data = tempfile::tempdir().unwrap();
    // Every heart comes from 127.0.0.1 and may start a love ledger in each
    // of the rooms it visits: more than the per-address default allows.
    let mut server = ServerProcess::start(&[
        "--data-dir",
        data.path().to_str().unwrap(),
        "--love-ledgers-per-ip",
        "100000",
    ])
    .await
    .unwrap();
    // The server's log goes to a file, which the soak scans for panics.
    let log_path = data.path().join("server.log");
    let mut log = std::fs::File::create(&log_path).unwrap();
    let (_, no_logs) = tokio::sync::mpsc::unbounded_channel();
    let mut logs = std::mem::replace(&mut server.logs, no_logs);
    tokio::spawn(async move {
        use std::io::Write;
        while let Some(line) = logs.recv().await {
            let _ = writeln!(log, "{line}");
        }
    });
    // A minute of the mix, small: 60 hearts over 3 rooms staying 20 s on
    // average, tapping every 2 s; 2 slow readers; a flooder. A fresh
    // server's heap settles during its first minutes under churn, so RSS
    // growth is judged over the second half only (the hour's soak leaves
    // out its first 10 minutes the same way).
    // Its live lines go to a file, to show if it does not end in time.
    let stderr_path = data.path().join("soak.err");
    let soak = tokio::process::Command::new(workspace_binary("bench", "heartsync-bench"))
        .args(["--url", &format!("ws://{}", server.addr), "--soak", "60s"])
        .args(["--soak-warm-up", "30s"])
        .args(["--soak-hearts", "60", "--soak-rooms", "3", "--soak-stay", "20s"])
        .args(["--soak-taps-per-s", "0.5", "--soak-slow-readers", "2"])
        .args(["--server-log", log_path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // It takes a little over a minute; its teardown is bounded (clients
    // leave within 60 s, descriptors come back within 30 s), so it always
    // reaches a verdict within 170 s.
    let output = tokio::time::timeout(Duration::from_secs(170), soak.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("the soak did not end in 170 s:\n{stderr}")
        })
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let report: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no JSON at the end:\n{stdout}\n{stderr}"));
    let verdict = &report["verdict"];
    assert_eq!(verdict["failures"], serde_json::json!([]), "{stdout}\n{stderr}");
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("soak PASS"), "{stdout}");
    assert_eq!(verdict["log_scanned"], true);
    // The mix really ran: hearts came back, taps were acked, a flood was
    // closed, and every sample period was sampled.
    let counters = &report["counters"];
    assert!(counters["joins"].as_u64().unwrap() > 60, "no heart came back: {counters}");
    assert!(counters["acks"].as_u64().unwrap() > 0, "{counters}");
    assert!(counters["floods_closed"].as_u64().unwrap() >= 1, "{counters}");
    assert!(counters["ticks"].as_u64().unwrap() > 60 * 4 * 30, "{counters}");
    assert_eq!(report["samples"].as_array().unwrap().len(), 10, "{report}");
    let love: u64 =
        report["rooms"].as_array().unwrap().iter().map(|r| r["after"].as_u64().unwrap()).sum();
    assert!(love > 0, "{report}");
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
