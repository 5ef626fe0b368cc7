//! `cargo xtask fuzz`: builds the fuzz targets of `fuzz/` with cargo-fuzz
//! and runs each for a bounded time, one after another.
//!
//! cargo-fuzz needs nightly-only compiler flags (sanitizer coverage). No
//! nightly toolchain can be fetched where heartsync is built, so the stable
//! one is told to accept them with `RUSTC_BOOTSTRAP=1`, set for the
//! cargo-fuzz commands only. The fuzz build has a target folder of its own
//! (its flags differ from the workspace's, so sharing one would rebuild
//! both every time), outside the clone.
//!
//! Each target starts from its seed corpus in `fuzz/corpus/<target>/` and
//! the crash inputs kept in `fuzz/regressions/<target>/`, read-only; what
//! the fuzzer finds goes to a scratch folder next to the build, so the
//! repository keeps only the small seeds. A crash stops the run with
//! libFuzzer's report and the input saved under `fuzz/artifacts/`.

use std::{
    env,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{Workspace, install, process::Steps, run};

/// The fuzz targets, in the order they run (the names of `fuzz/Cargo.toml`'s
/// `[[bin]]`s).
pub const TARGETS: &[&str] = &["client_message", "names", "love_ledger", "client_love", "socket"];

/// How long `ci` runs each target: long enough to replay the corpus and the
/// regressions and explore a little, short enough for every push.
pub const CI_TIME: Duration = Duration::from_secs(30);

/// `cargo xtask fuzz [--minutes N] [--seconds N] [target...]`.
pub fn command(workspace: &Workspace, steps: &mut Steps, args: &[String]) -> Result<()> {
    let mut time = Duration::from_secs(60);
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut number = |unit: &str| -> Result<u64> {
            let value = args.next().with_context(|| format!("{arg} needs a number of {unit}"))?;
            value.parse().with_context(|| format!("{arg} takes a whole number, not {value:?}"))
        };
        match arg.as_str() {
            "--minutes" => time = Duration::from_secs(number("minutes")? * 60),
            "--seconds" => time = Duration::from_secs(number("seconds")?),
            name if TARGETS.contains(&name) => targets.push(name),
            other => bail!(
                "`fuzz` takes --minutes N, --seconds N and target names {TARGETS:?}, not {other:?}"
            ),
        }
    }
    if time.is_zero() {
        bail!("`fuzz` needs a time above zero");
    }
    if targets.is_empty() {
        targets.extend(TARGETS);
    }
    run_targets(workspace, steps, &targets, time)
}

/// Installs cargo-fuzz, builds every target and runs `targets` for `time`
/// each; prints each one's executions and coverage at the end.
pub fn run_targets(
    workspace: &Workspace,
    steps: &mut Steps,
    targets: &[&str],
    time: Duration,
) -> Result<()> {
    steps.run("install cargo-fuzz", || install::fuzz_tools(&workspace.tool_path))?;
    let target_dir = target_dir()?;
    steps.run("cargo fuzz build", || {
        run(cargo_fuzz(workspace, &target_dir).args(["build", "--debug-assertions"]))
    })?;
    let mut results = Vec::new();
    for target in targets {
        let name = format!("fuzz {target} for {}s", time.as_secs());
        let last = steps.run(&name, || fuzz_one(workspace, &target_dir, target, time))?;
        results.push((*target, last));
    }
    println!("\n==> fuzzing: the last libFuzzer status of each target");
    for (target, last) in results {
        println!("    {target:<16} {}", last.as_deref().unwrap_or("(no status line)"));
    }
    Ok(())
}

/// Runs one target; returns libFuzzer's last status line (`#runs DONE cov:
/// … ft: … exec/s: …`).
fn fuzz_one(
    workspace: &Workspace,
    target_dir: &Path,
    target: &str,
    time: Duration,
) -> Result<Option<String>> {
    let fuzz = workspace.root.join("fuzz");
    let scratch = target_dir.join("corpus").join(target);
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("could not create {}", scratch.display()))?;
    // The binary `cargo fuzz build` made, run directly: `cargo fuzz run`
    // would check the build twice more first (half a minute under load).
    let binary = target_dir.join(host_triple()?).join("release").join(target);
    if !binary.is_file() {
        bail!("`cargo fuzz build` finished but {} is missing", binary.display());
    }
    let artifacts = fuzz.join("artifacts").join(target);
    std::fs::create_dir_all(&artifacts)
        .with_context(|| format!("could not create {}", artifacts.display()))?;
    let mut command = Command::new(&binary);
    command.current_dir(&fuzz).arg(format!("-artifact_prefix={}/", artifacts.display()));
    // As `cargo fuzz run` sets it: the sanitizer's one-definition-rule check
    // trips on Rust's duplicated symbols across crates.
    if env::var_os("ASAN_OPTIONS").is_none() {
        command.env("ASAN_OPTIONS", "detect_odr_violation=0");
    }
    // `socket` starts the server's love writer, a detached std thread, for
    // every input; libFuzzer's per-input leak check can catch that thread
    // mid-exit (its name, its thread-locals) and call it a leak, which no
    // replay reproduces (seen twice in 10-minute runs, after 28k and 1.7k
    // inputs). Leak checking is off for that target only.
    if target == "socket" {
        command.arg("-detect_leaks=0");
    }
    // New inputs go to the first folder; the others are only read.
    command.arg(&scratch);
    for seeds in [fuzz.join("corpus").join(target), fuzz.join("regressions").join(target)] {
        if seeds.is_dir() {
            command.arg(seeds);
        }
    }
    command.args([
        format!("-max_total_time={}", time.as_secs()),
        // One input taking this long is a hang, reported like a crash.
        "-timeout=20".to_string(),
        "-rss_limit_mb=2048".to_string(),
        "-print_final_stats=1".to_string(),
    ]);
    // libFuzzer reports on stderr; pass it through, keeping the last status.
    command.stderr(Stdio::piped());
    println!("$ {} (fuzz/artifacts/{target}/ for crashes)", binary.display());
    let mut child = command.spawn().context("could not start `cargo fuzz`")?;
    let mut last = None;
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading cargo fuzz's output")?;
            eprintln!("{line}");
            if line.starts_with('#') && line.contains(" cov: ") {
                last = Some(line);
            }
        }
    }
    let status = child.wait().context("waiting for `cargo fuzz`")?;
    if !status.success() {
        bail!(
            "fuzz target {target} failed ({status}); the input is under fuzz/artifacts/{target}/ \
             (replay it with `RUSTC_BOOTSTRAP=1 cargo fuzz run {target} <file>` in fuzz/), and \
             once fixed, keep it in fuzz/regressions/{target}/ with a name saying what it pins"
        );
    }
    Ok(last)
}

/// `cargo fuzz` in `fuzz/`, allowed the unstable flags it needs, building
/// in `target_dir`.
fn cargo_fuzz(workspace: &Workspace, target_dir: &Path) -> Command {
    let mut command = workspace.cargo();
    command
        .arg("fuzz")
        .current_dir(workspace.root.join("fuzz"))
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", target_dir);
    command
}

/// The host's target triple, which cargo-fuzz builds for (and names the
/// folder of the binaries after).
fn host_triple() -> Result<String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc).arg("-vV").output().context("could not run `rustc -vV`")?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_string)
        .context("`rustc -vV` names no host")
}

/// The fuzz build's target folder: `$CARGO_TARGET_DIR/fuzz` when the
/// workspace's is set (as in CI), else `~/.cache/heartsync-fuzz-target`.
fn target_dir() -> Result<PathBuf> {
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR") {
        return Ok(PathBuf::from(dir).join("fuzz"));
    }
    let home = env::var_os("HOME").context("HOME is not set, and neither is CARGO_TARGET_DIR")?;
    Ok(PathBuf::from(home).join(".cache").join("heartsync-fuzz-target"))
}
