//! heartsync's chores as one Rust program (the `xtask` pattern):
//! `cargo xtask <command>` installs the tools, builds the page and the
//! server, runs them, tests them, and does everything CI does.
//!
//! Every external program runs with its output going straight to the
//! terminal, so its own messages (and `cargo test`'s summary lines, which CI
//! reads) are seen as they are. Each step prints its name and how long it
//! took, and a failing step stops everything with a message naming it.
//!
//! # Layout
//! - `main.rs`: the commands and the workspace they act on.
//! - `install.rs`: finding and installing the tools (Rust targets, trunk,
//!   wasm-bindgen, wasm-opt, and the Debian packages the tests need).
//! - `dist.rs`: what `build` adds to trunk's dist/: the PNG icons and the
//!   Brotli and gzip copies the server sends as they are.
//! - `process.rs`: running programs and timing steps.
//! - `cluster.rs`: `cluster`, deploy/'s topology as local processes.
//! - `fuzz.rs`: `fuzz`, the cargo-fuzz targets of `fuzz/`, each for a
//!   bounded time.
//! - `deploy.rs`: the deploy linters (hadolint, kubernetes-validate,
//!   `nginx -t`, promtool) and the checks of docker-compose.yml.

mod cluster;
mod deploy;
mod dist;
mod fuzz;
mod install;
mod process;

use std::{
    env,
    ffi::OsString,
    path::PathBuf,
    process::{Command, ExitCode},
};

use anyhow::{Context, Result, bail};

use process::{Steps, run};

const USAGE: &str = "\
usage: cargo xtask <command> [args...]

commands:
  install [--test]  install the build and check tools that are missing (with
                    --test, also the browser and services the tests need)
  build             install build tools, build dist/ with trunk and the
                    release server binary
  dist              install build tools and build dist/ only (the page,
                    its icons and its compressed copies)
  run [-- args...]  build, then serve dist/ on http://127.0.0.1:8080
                    (args go to the heartsync binary)
  test [args...]    install build and test tools, build dist/, run
                    schemathesis against the read API, then
                    `cargo test --workspace [args...]`
  contract          build the server and run only schemathesis against
                    its read API
  ci                fmt check, clippy (host and wasm32), cargo deny and
                    cargo machete, the deploy linters, then all of `test`
  cluster [--instances N] [--port P] [--check] [--debug]
                    build, then run redis, N heartsync instances (3), nginx
                    on http://127.0.0.1:P (8080) and Prometheus, with the
                    config files of deploy/, until Ctrl-C; --check checks
                    the running cluster and stops it (exit 0 or 1)
  deploy-check      lint Dockerfile and deploy/ as `ci` does
  fuzz [--minutes N] [--seconds N] [target...]
                    build the fuzz targets of fuzz/ with cargo-fuzz and run
                    each (or those named) for N (1 minute; `ci`: 30 s)";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nxtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result<()> {
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        bail!("no command given");
    };
    let workspace = Workspace::find()?;
    let mut steps = Steps::default();
    match command.as_str() {
        "install" => match rest {
            [] => {
                install_build_tools(&workspace, &mut steps)?;
                install_check_tools(&workspace, &mut steps)
            }
            [flag] if flag == "--test" => {
                install_build_tools(&workspace, &mut steps)?;
                install_check_tools(&workspace, &mut steps)?;
                install_test_tools(&mut steps)
            }
            _ => bail!("`install` takes only `--test`, not {rest:?}"),
        },
        "build" => build(&workspace, &mut steps),
        "dist" => {
            install_build_tools(&workspace, &mut steps)?;
            build_dist(&workspace, &mut steps)
        }
        "run" => serve(&workspace, &mut steps, strip_separator(rest)),
        "test" => test(&workspace, &mut steps, rest),
        "contract" => {
            steps.run("cargo build -p backend", || {
                run(workspace.cargo().args(["build", "--package", "backend", "--bins"]))
            })?;
            api_contract(&workspace, &mut steps)
        }
        "cluster" => run_cluster(&workspace, &mut steps, rest),
        "deploy-check" => {
            if !rest.is_empty() {
                bail!("`deploy-check` takes no arguments, not {rest:?}");
            }
            install_test_tools(&mut steps)?;
            deploy::check(&workspace.root, &mut steps)
        }
        "fuzz" => fuzz::command(&workspace, &mut steps, rest),
        "ci" => {
            if !rest.is_empty() {
                bail!("`ci` takes no arguments, not {rest:?}");
            }
            ci(&workspace, &mut steps)
        }
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => {
            println!("{USAGE}");
            bail!("unknown command `{other}`");
        }
    }
}

/// The workspace the commands act on, and the paths derived from it.
struct Workspace {
    /// The workspace root: where `Cargo.toml`, `index.html` and `dist/` are.
    root: PathBuf,
    /// `PATH` with the project's own tool folders first (npm's binaryen,
    /// cargo's bin), so a freshly installed tool is found without a new shell.
    tool_path: OsString,
}

impl Workspace {
    fn find() -> Result<Self> {
        // Cargo sets this when it runs us, at compile time and at run time;
        // the compile-time value is a fallback for running the binary by hand.
        let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let root = manifest_dir
            .parent()
            .context("xtask's manifest folder has no parent; is xtask inside the workspace?")?
            .to_path_buf();
        let mut first = vec![install::binaryen_bin_dir()?];
        first.extend(install::cargo_bin_dir());
        let tool_path = env::join_paths(
            first.into_iter().chain(env::split_paths(&env::var_os("PATH").unwrap_or_default())),
        )
        .context("a tool folder contains the path separator")?;
        Ok(Self { root, tool_path })
    }

    /// Where trunk writes the page, and where the tests and `run` serve it from.
    fn dist(&self) -> PathBuf {
        self.root.join("dist")
    }

    /// A `cargo` command run in the workspace root, with the same cargo that
    /// runs xtask.
    fn cargo(&self) -> Command {
        let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        command.current_dir(&self.root).env("PATH", &self.tool_path);
        command
    }

    /// The target folder, as cargo sees it (it honours `CARGO_TARGET_DIR`
    /// and `build.target-dir`).
    fn target_dir(&self) -> Result<PathBuf> {
        let output = self
            .cargo()
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .output()
            .context("could not run `cargo metadata`")?;
        if !output.status.success() {
            bail!("`cargo metadata` failed: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
            .context("`cargo metadata` printed something other than JSON")?;
        metadata["target_directory"]
            .as_str()
            .map(PathBuf::from)
            .context("`cargo metadata` printed no target_directory")
    }
}

/// Drops a leading `--`, so `cargo xtask run -- --flag` passes `--flag`.
fn strip_separator(args: &[String]) -> &[String] {
    match args.split_first() {
        Some((first, rest)) if first == "--" => rest,
        _ => args,
    }
}

fn install_build_tools(workspace: &Workspace, steps: &mut Steps) -> Result<()> {
    steps.run("install Rust target and components", || install::rust_toolchain(&workspace.root))?;
    steps.run("install trunk, wasm-bindgen, wasm-opt", || {
        install::web_tools(&workspace.root, &workspace.tool_path)
    })
}

fn install_check_tools(workspace: &Workspace, steps: &mut Steps) -> Result<()> {
    steps
        .run("install cargo-deny, cargo-machete", || install::check_tools(&workspace.tool_path))?;
    steps.run("install cargo-fuzz", || install::fuzz_tools(&workspace.tool_path))
}

fn install_test_tools(steps: &mut Steps) -> Result<()> {
    steps.run("install browser and services for tests", install::test_tools)?;
    steps.run("install axe-core (npm)", || install::axe_core().map(drop))
}

/// Builds `dist/` (the page, by trunk: the wasm32 release build of the
/// frontend; then its PNG icons and its compressed copies) and nothing
/// else.
fn build_dist(workspace: &Workspace, steps: &mut Steps) -> Result<()> {
    steps.run("trunk build --release", || {
        let dist = workspace.dist();
        // Trunk cannot download tools on this network, so it must use the
        // ones `install` put first on the tool PATH.
        run(Command::new("trunk")
            .current_dir(&workspace.root)
            .env("PATH", &workspace.tool_path)
            .args(["build", "--release", "--offline", "--dist"])
            .arg(&dist))?;
        if !dist.join("index.html").is_file() {
            bail!("trunk finished but {} has no index.html", dist.display());
        }
        Ok(())
    })?;
    steps.run("icons (PNG from icon.svg)", || dist::icons(&workspace.dist()))?;
    steps.run("precompress dist/ (Brotli, gzip)", || dist::precompress(&workspace.dist()))
}

fn build(workspace: &Workspace, steps: &mut Steps) -> Result<()> {
    install_build_tools(workspace, steps)?;
    build_dist(workspace, steps)?;
    steps.run("cargo build --release -p backend", || {
        run(workspace.cargo().args(["build", "--release", "--package", "backend"]))
    })
}

fn serve(workspace: &Workspace, steps: &mut Steps, args: &[String]) -> Result<()> {
    build(workspace, steps)?;
    let binary = workspace.target_dir()?.join("release").join("heartsync");
    if !binary.is_file() {
        bail!("the build finished but {} is missing", binary.display());
    }
    // The server reads these when its flags are not given; a caller's own
    // environment or flags win.
    let mut command = Command::new(&binary);
    command.current_dir(&workspace.root).args(args);
    if env::var_os("HEARTSYNC_STATIC_DIR").is_none() {
        command.env("HEARTSYNC_STATIC_DIR", workspace.dist());
    }
    let addr = flag_value(args, "--addr")
        .or_else(|| env::var("HEARTSYNC_ADDR").ok())
        .unwrap_or_else(|| {
            command.env("HEARTSYNC_ADDR", DEFAULT_ADDR);
            DEFAULT_ADDR.to_string()
        });
    println!("\nheartsync: open http://{addr}/ (Ctrl-C stops it)\n");
    println!("$ {}", binary.display());
    // Become the server, so Ctrl-C and other signals reach it alone and it
    // shuts down gracefully in the foreground.
    let error = std::os::unix::process::CommandExt::exec(&mut command);
    Err(error).with_context(|| format!("could not start {}", binary.display()))
}

/// Where `cargo xtask run` serves unless told otherwise.
const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// The value given to `--name value` or `--name=value` in `args`.
fn flag_value(args: &[String], name: &str) -> Option<String> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == name {
            return args.next().cloned();
        }
        if let Some(value) = arg.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')) {
            return Some(value.to_string());
        }
    }
    None
}

fn test(workspace: &Workspace, steps: &mut Steps, args: &[String]) -> Result<()> {
    install_build_tools(workspace, steps)?;
    install_test_tools(steps)?;
    build_dist(workspace, steps)?;
    // The tests run these as child processes (SIGTERM, kill -9, the load
    // generator); built here, in the profile the tests use, so no test has
    // to build them.
    steps.run("cargo build (binaries the tests run)", || {
        run(workspace.cargo().args([
            "build",
            "--package",
            "backend",
            "--package",
            "bench",
            "--package",
            "term",
            "--bins",
        ]))
    })?;
    api_contract(workspace, steps)?;
    cargo_test(workspace, steps, args)?;
    // The whole topology, only when the whole suite runs (not for
    // `cargo xtask test -p backend` or a test name).
    if args.iter().all(|arg| arg.starts_with("--")) {
        let options = cluster::Options { instances: 2, port: None, check: true, debug: true };
        let binary = workspace.target_dir()?.join("debug").join("heartsync");
        steps.run("cluster check (cargo xtask cluster --check --debug --instances 2)", || {
            cluster::check(&workspace.root, &binary, &workspace.dist(), &options)
        })?;
    }
    Ok(())
}

/// `cargo xtask cluster`: builds what it runs, then runs (or checks) the
/// cluster.
fn run_cluster(workspace: &Workspace, steps: &mut Steps, args: &[String]) -> Result<()> {
    let options = cluster::Options::parse(args)?;
    install_test_tools(steps)?;
    let binary = if options.debug {
        install_build_tools(workspace, steps)?;
        build_dist(workspace, steps)?;
        steps.run("cargo build -p backend", || {
            run(workspace.cargo().args(["build", "--package", "backend"]))
        })?;
        workspace.target_dir()?.join("debug").join("heartsync")
    } else {
        build(workspace, steps)?;
        workspace.target_dir()?.join("release").join("heartsync")
    };
    steps.run("cluster", || cluster::run(&workspace.root, &binary, &workspace.dist(), &options))
}

/// The secret the contract test's server signs join tokens with.
const CONTRACT_SECRET: &str = "xtask-contract-test-secret-0123456789";

/// Runs schemathesis against a live server from its own OpenAPI document:
/// every operation, the default checks, a bounded number of examples.
fn api_contract(workspace: &Workspace, steps: &mut Steps) -> Result<()> {
    let target = workspace.target_dir()?;
    let schemathesis = steps.run("install schemathesis", || install::schemathesis(&target))?;
    steps.run("schemathesis (read API contract)", || {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let data = target.join("contract-data");
        let _ = std::fs::remove_dir_all(&data);
        let server = Command::new(target.join("debug").join("heartsync"))
            .args(["--addr", &addr, "--private-rooms", "--log", "warn"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--static-dir")
            .arg(workspace.dist())
            .env("HEARTSYNC_TOKEN_SECRET", CONTRACT_SECRET)
            .spawn()
            .context("could not start the heartsync binary for the contract test")?;
        let server = KillOnDrop(server);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            if std::time::Instant::now() > deadline {
                bail!("heartsync did not listen on {addr} within 30 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // Hypothesis keeps its database in the working directory: the
        // target dir, not the workspace.
        let result = run(Command::new(&schemathesis)
            .current_dir(&target)
            .args(["run", &format!("http://{addr}/api/openapi.json")])
            .args(["--max-examples", "20", "--request-timeout", "5"]));
        drop(server);
        result.context(
            "the read API broke its own OpenAPI document (see schemathesis's report above)",
        )
    })
}

/// A child process killed when dropped, so a failing step leaves no server.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cargo_test(workspace: &Workspace, steps: &mut Steps, args: &[String]) -> Result<()> {
    let chromedriver = match env::var_os("CHROMEDRIVER") {
        Some(path) => PathBuf::from(path),
        None => install::find_program("chromedriver")
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver")),
    };
    // `--workspace` and `--package` together are an error; a caller that
    // names packages means only those.
    let names_packages = args
        .iter()
        .take_while(|arg| *arg != "--")
        .any(|arg| arg == "-p" || arg.starts_with("--package"));
    let mut command = workspace.cargo();
    command
        .arg("test")
        .args((!names_packages).then_some("--workspace"))
        .args(args)
        .env("HEARTSYNC_DIST", workspace.dist())
        .env("CHROMEDRIVER", &chromedriver)
        .env("AXE_CORE", install::axe_core()?);
    steps.run("cargo test --workspace", || run(&mut command))
}

fn ci(workspace: &Workspace, steps: &mut Steps) -> Result<()> {
    // The checks come before the slow installs so a formatting or lint
    // mistake fails in minutes; they need only the Rust components.
    steps.run("install Rust target and components", || install::rust_toolchain(&workspace.root))?;
    steps.run("cargo fmt --check", || {
        run(workspace.cargo().args(["fmt", "--all", "--", "--check"]))
            .context("formatting differs: run `cargo fmt --all`")
    })?;
    steps.run("cargo clippy (host)", || {
        run(workspace.cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    steps.run("cargo clippy (wasm32 frontend)", || {
        run(workspace.cargo().args([
            "clippy",
            "--package",
            "frontend",
            "--target",
            install::WASM_TARGET,
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    // Supply chain: licences, banned or duplicated heavy crates, sources
    // (deny.toml says which and why; advisories need a network CI lacks),
    // and no unused dependencies.
    install_check_tools(workspace, steps)?;
    steps.run("cargo deny check licenses bans sources", || {
        run(workspace.cargo().args(["deny", "--offline", "check", "licenses", "bans", "sources"]))
    })?;
    steps.run("cargo machete", || {
        // Run directly: as `cargo machete` under `cargo xtask` it sees our
        // CARGO_PKG_NAME, decides it is not a cargo subcommand, and takes
        // "machete" for a folder.
        run(Command::new("cargo-machete")
            .current_dir(&workspace.root)
            .env("PATH", &workspace.tool_path))
            .context("remove the unused dependency, or list it under [package.metadata.cargo-machete] ignored with the reason")
    })?;
    install_test_tools(steps)?;
    deploy::check(&workspace.root, steps)?;
    // Every test binary runs even when one fails, so one CI log shows
    // every failure.
    test(workspace, steps, &["--no-fail-fast".to_string()])?;
    // A short run of every fuzz target: it replays the seeds and every
    // crash kept as a regression, so a fixed crash that comes back fails.
    fuzz::run_targets(workspace, steps, fuzz::TARGETS, fuzz::CI_TIME)?;
    steps.print_summary();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_dir_is_where_cargo_builds() {
        let workspace = Workspace::find().unwrap();
        let target = workspace.target_dir().unwrap();
        assert!(target.is_absolute(), "{}", target.display());
        if let Some(configured) = env::var_os("CARGO_TARGET_DIR").map(PathBuf::from)
            && configured.is_absolute()
        {
            assert_eq!(target, configured);
        }
    }

    #[test]
    fn strips_one_leading_separator() {
        let args = ["--".to_string(), "--port".to_string()];
        assert_eq!(strip_separator(&args), &args[1..]);
        assert_eq!(strip_separator(&args[1..]), &args[1..]);
    }

    #[test]
    fn finds_flag_values_in_both_spellings() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let addr = "0.0.0.0:80";
        assert_eq!(flag_value(&args(&["--addr", addr]), "--addr").as_deref(), Some(addr));
        assert_eq!(
            flag_value(&args(&["-v", "--addr=0.0.0.0:80"]), "--addr").as_deref(),
            Some(addr)
        );
        assert_eq!(flag_value(&args(&["--address", "x"]), "--addr"), None);
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let workspace = Workspace::find().unwrap();
        assert!(workspace.root.join("Cargo.toml").is_file());
        assert!(workspace.root.join("xtask").is_dir());
    }
}
