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

/// Programs the tests need, and the Debian package each comes in. Adding a
/// service for the tests is one line here.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("chromium", "chromium"),
    ("chromedriver", "chromium-driver"),
    ("redis-server", "redis-server"),
    ("nginx", "nginx"),
    ("promtool", "prometheus"),
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

    // trunk insists on a wasm-bindgen CLI of exactly the library's version.
    let lock = root.join("Cargo.lock");
    let lock_text =
        fs::read_to_string(&lock).with_context(|| format!("could not read {}", lock.display()))?;
    let wanted = locked_version(&lock_text, "wasm-bindgen")
        .with_context(|| format!("{}: no single `wasm-bindgen` package", lock.display()))?;
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

/// Installs the Debian packages of [`TEST_PACKAGES`] whose programs are not
/// on `PATH`.
pub fn test_tools() -> Result<()> {
    let missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .filter(|(program, package)| match find_program(program) {
            Some(path) => {
                println!("ok: {program} ({}, from {package})", path.display());
                false
            }
            None => true,
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let wanted = missing.join(" ");
    println!("installing Debian packages: {wanted}");
    if find_program("apt-get").is_none() {
        bail!("apt-get not found: install these packages (Debian names) yourself: {wanted}");
    }
    run(apt_get()?.arg("update"))?;
    run(apt_get()?.args(["install", "-y"]).args(&missing))?;
    for (program, package) in TEST_PACKAGES {
        if find_program(program).is_none() {
            bail!("installed {package}, but `{program}` is still not on PATH");
        }
    }
    Ok(())
}

/// An `apt-get` command with the rights to install: directly as root, else
/// through `sudo -n` (never a password prompt: CI has no stdin).
fn apt_get() -> Result<Command> {
    let root = probe(Command::new("id").arg("-u")).is_some_and(|uid| uid == "0");
    let mut command = if root {
        Command::new("apt-get")
    } else if find_program("sudo").is_some() {
        let mut command = Command::new("sudo");
        command.args(["-n", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
        command
    } else {
        bail!(
            "installing Debian packages needs root or sudo; run `cargo xtask install --test` as root"
        );
    };
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

/// The version of the one package called `name` in a `Cargo.lock`, or `None`
/// when there is none or more than one.
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let mut versions = Vec::new();
    let mut in_package = false;
    for line in lock.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = false;
        }
        if line == format!("name = \"{name}\"") {
            in_package = true;
        } else if in_package && let Some(version) = line.strip_prefix("version = ") {
            versions.push(version.trim_matches('"').to_string());
            in_package = false;
        }
    }
    match versions.as_slice() {
        [version] => Some(version.clone()),
        _ => None,
    }
}

/// Where npm's binaryen is installed, outside the clone so it survives
/// between runs and checkouts.
fn binaryen_dir() -> Result<PathBuf> {
    let home = env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/heartsync-tools/binaryen"))
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

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"
[[package]]
name = "wasm-bindgen"
version = "0.2.130"
source = "registry+https://github.com/rust-lang/crates.io-index"
dependencies = [
 "wasm-bindgen-macro",
]

[[package]]
name = "wasm-bindgen-macro"
version = "0.2.130"

[[package]]
name = "serde"
version = "1.0.228"
"#;

    #[test]
    fn locked_version_reads_the_named_package_only() {
        assert_eq!(locked_version(LOCK, "wasm-bindgen").as_deref(), Some("0.2.130"));
        assert_eq!(locked_version(LOCK, "serde").as_deref(), Some("1.0.228"));
        assert_eq!(locked_version(LOCK, "trunk"), None);
    }

    #[test]
    fn locked_version_refuses_two_versions() {
        let two = format!("{LOCK}\n[[package]]\nname = \"serde\"\nversion = \"0.9.0\"\n");
        assert_eq!(locked_version(&two, "serde"), None);
    }

    #[test]
    fn finds_programs_on_path() {
        assert!(find_program("sh").is_some());
        assert!(find_program("surely-not-a-program-here").is_none());
    }
}
