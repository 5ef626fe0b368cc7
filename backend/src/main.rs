//! The `heartsync` binary: parse flags, set up logging, bind, serve until
//! SIGTERM or Ctrl-C. Everything else lives in the library.
//!
//! `heartsync healthcheck [--url URL]` instead asks a running server's
//! `/livez` and exits 0 or 1 (the container's health check; see
//! `healthcheck.rs`), and `heartsync token --room private-… [--ttl 24h]
//! [--sub ID]` mints a join token for a private room and prints it with a
//! share link (`backend::auth::TokenCommand`). Subcommands are looked for
//! before the server's flags are parsed, so every server flag works exactly
//! as without them.

mod healthcheck;

use anyhow::Context;
use backend::{Config, LogFormat};
use clap::Parser;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// jemalloc, not glibc's allocator: under the churn of hearts joining and
/// leaving, glibc's arenas spread their live blocks over ever more pages and
/// the RSS crept up by 2.3 % an hour with a flat live heap; jemalloc's size
/// classes and its background purging held it flat (BENCHMARKS.md, "Soak").
/// Only this binary: the library, its tests and the fuzz targets keep the
/// system allocator.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<ExitCode> {
    if std::env::args_os().nth(1).is_some_and(|command| command == "healthcheck") {
        return Ok(healthcheck::main(std::env::args_os().skip(1)));
    }
    if std::env::args_os().nth(1).is_some_and(|command| command == "token") {
        return token().map(|()| ExitCode::SUCCESS);
    }
    serve().map(|()| ExitCode::SUCCESS)
}

/// `heartsync token …`: prints a join token and its share link.
fn token() -> anyhow::Result<()> {
    let args = std::env::args_os().skip(2);
    let command = backend::auth::TokenCommand::parse_from(
        std::iter::once(std::ffi::OsString::from("heartsync token")).chain(args),
    );
    print!("{}", command.run(backend::clock::now_ms())?);
    Ok(())
}

/// The server: its runtime (workers pinned to CPUs with `--pin-workers`),
/// then [`serve_with`] on it.
fn serve() -> anyhow::Result<()> {
    let config = Config::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    let mut unpinnable = false;
    if config.pin_workers {
        match backend::affinity::Pinner::allowed() {
            Some(pinner) => {
                let pinner = std::sync::Arc::new(pinner);
                runtime.on_thread_park(move || pinner.pin_this_thread_once());
            }
            None => unpinnable = true,
        }
    }
    runtime.build().context("cannot start the runtime")?.block_on(serve_with(config, unpinnable))
}

async fn serve_with(config: Config, unpinnable: bool) -> anyhow::Result<()> {
    init_logging(&config)?;
    if unpinnable {
        tracing::warn!(
            "--pin-workers: cannot read the CPUs this process may use; workers not pinned"
        );
    }
    raise_fd_limit();
    // jemalloc's own threads return freed pages to the system after its
    // decay time (10 s), whether or not the server is allocating then.
    #[cfg(not(target_env = "msvc"))]
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(%error, "cannot start the allocator's background purge");
    }

    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data dir {}", config.data_dir.display()))?;
    if !config.static_dir.join("index.html").is_file() {
        tracing::warn!(
            static_dir = %config.static_dir.display(),
            "no index.html in the static dir: the page will not load (build it with `cargo xtask build`)"
        );
    }
    let listener =
        listen(config.addr).with_context(|| format!("cannot listen on {}", config.addr))?;
    tracing::info!(addr = %listener.local_addr()?, "heartsync listening");
    backend::run(listener, config, shutdown_signal()).await
}

/// How many connections may wait to be accepted. The default of the
/// standard library (128) drops SYNs during a reconnect storm, which clients
/// see as a second's delay (the SYN retransmit); the kernel caps this at
/// `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.log_filter)
        .with_context(|| format!("bad log filter {:?}", config.log_filter))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// Raises the soft file-descriptor limit to the hard one: every WebSocket
/// holds a descriptor, and the usual soft limit (1024) is far below what one
/// server can carry.
fn raise_fd_limit() {
    // Without a crate for it we would need `unsafe` libc calls; `ulimit` in
    // the shell that starts us is the other way. `rlimit` does it safely.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "file descriptor limit"),
        Err(error) => tracing::warn!(%error, "could not raise the file descriptor limit"),
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
