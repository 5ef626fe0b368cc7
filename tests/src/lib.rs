//! Helpers for heartsync's integration and browser tests: start the real
//! server on a free port, talk protocol v1 to it over real sockets.
//!
//! # Layout
//! - this file: [`TestServer`] (in process) and [`ServerProcess`] (the
//!   binary), the protocol [`Client`], and [`wait_until`], the one way a
//!   test waits for something: polling a condition under a deadline.
//! - [`http`]: the one HTTP client.
//! - [`metrics`]: `/metrics`, scraped and parsed.
//! - [`browser`]: headless Chromium over WebDriver.

pub mod browser;
pub mod cluster;
pub mod http;
pub mod metrics;

use anyhow::{Context, bail};
use backend::Config;
use futures_util::{SinkExt, StreamExt};
use shared::{ClientMessage, Consensus, ErrorCode, ServerMessage, Welcome};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// How long a test waits for any one expected message.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// A server running in this process on `127.0.0.1:0`.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    /// Keeps the data dir alive as long as the server.
    _data: tempfile::TempDir,
}

/// A configuration for tests: defaults, with a fresh temporary data dir.
pub fn test_config(data_dir: &std::path::Path) -> Config {
    Config { data_dir: data_dir.to_owned(), ..Config::default() }
}

impl TestServer {
    /// Starts a server with the default configuration.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server with the configuration `adjust` makes of the defaults.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("an address"), adjust).await
    }

    /// Starts a server on `addr` (a fixed port lets a test restart it where
    /// clients will look for it).
    pub async fn start_on(addr: SocketAddr, adjust: impl FnOnce(&mut Config)) -> Self {
        let data = tempfile::tempdir().expect("temporary data dir");
        let mut config = test_config(data.path());
        adjust(&mut config);
        let listener = TcpListener::bind(addr).await.expect("bind the test server");
        let addr = listener.local_addr().expect("local addr");
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task =
            tokio::spawn(backend::run(listener, config, async move { stopped.cancelled().await }));
        Self { addr, stop, task, _data: data }
    }

    /// `http://addr/path`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `ws://addr/path`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Connects a protocol client to `path` (e.g. `/ws/room`) and reads its
    /// welcome and first consensus.
    pub async fn join(&self, path: &str) -> (Client, Welcome, Consensus) {
        Client::join(&self.ws_url(path)).await.expect("join")
    }

    /// Starts the graceful shutdown and waits for the server to finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}

/// A protocol v1 client over a real WebSocket.
pub struct Client {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// A close frame with this code (1005 for a close frame without one).
    Closed(u16),
    /// The connection ended without a close frame.
    Dropped,
}

/// What came next on a connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A protocol message.
    Message(ServerMessage),
    /// The connection ended.
    Ended(Ended),
}

impl Client {
    /// Opens a WebSocket to `url` (no handshake beyond the upgrade).
    pub async fn connect(url: &str) -> Result<Self, tungstenite::Error> {
        let (socket, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Self { socket })
    }

    /// Connects and reads the welcome and the first consensus, which must
    /// come first and in that order.
    pub async fn join(url: &str) -> anyhow::Result<(Self, Welcome, Consensus)> {
        let mut client = Self::connect(url).await.with_context(|| format!("connect {url}"))?;
        let welcome = match client.next().await? {
            ServerMessage::Welcome(w) => w,
            other => bail!("expected welcome first, got {other:?}"),
        };
        let consensus = match client.next().await? {
            ServerMessage::Consensus(c) => c,
            other => bail!("expected a consensus right after the welcome, got {other:?}"),
        };
        Ok((client, welcome, consensus))
    }

    /// Sends a protocol message.
    pub async fn send(&mut self, message: &ClientMessage) {
        self.send_text(&message.to_json()).await;
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.expect("send text");
    }

    /// Sends a raw frame.
    pub async fn send_raw(&mut self, message: Message) -> Result<(), tungstenite::Error> {
        self.socket.send(message).await
    }

    /// The next protocol message, within [`PATIENCE`].
    pub async fn next(&mut self) -> anyhow::Result<ServerMessage> {
        self.next_within(PATIENCE).await
    }

    /// The next protocol message, within `patience`; an error if the
    /// connection ends first.
    pub async fn next_within(&mut self, patience: Duration) -> anyhow::Result<ServerMessage> {
        match self.next_event(patience).await? {
            Event::Message(message) => Ok(message),
            Event::Ended(ended) => bail!("the connection ended ({ended:?})"),
        }
    }

    /// The next protocol message or the end of the connection, within
    /// `patience`.
    pub async fn next_event(&mut self, patience: Duration) -> anyhow::Result<Event> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .context("timed out waiting for a message")?;
            let ended = match frame {
                Some(Ok(Message::Text(text))) => {
                    return ServerMessage::parse(text.as_str())
                        .map(Event::Message)
                        .with_context(|| format!("unparseable server message {text}"));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Binary(bytes))) => bail!("unexpected binary frame {bytes:?}"),
                Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => {
                    Ended::Closed(code.into())
                }
                Some(Ok(Message::Close(None))) => Ended::Closed(1005),
                None | Some(Err(_)) => Ended::Dropped,
            };
            return Ok(Event::Ended(ended));
        }
    }

    /// The next consensus, skipping other messages.
    pub async fn next_consensus(&mut self) -> anyhow::Result<Consensus> {
        loop {
            if let ServerMessage::Consensus(c) = self.next().await? {
                return Ok(c);
            }
        }
    }

    /// Reads until a consensus satisfies `check`, within `patience`.
    pub async fn consensus_where(
        &mut self,
        patience: Duration,
        check: impl Fn(&Consensus) -> bool,
    ) -> anyhow::Result<Consensus> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let ServerMessage::Consensus(c) = self.next_within(left).await?
                && check(&c)
            {
                return Ok(c);
            }
        }
    }

    /// The next error message, skipping consensus ticks; its code.
    pub async fn next_error(&mut self) -> anyhow::Result<ErrorCode> {
        loop {
            match self.next().await? {
                ServerMessage::Error(e) => return Ok(e.code),
                ServerMessage::Consensus(_) => continue,
                other => bail!("expected an error, got {other:?}"),
            }
        }
    }

    /// Reads until the server ends the connection, within `patience`; how
    /// it ended.
    pub async fn ended(&mut self, patience: Duration) -> anyhow::Result<Ended> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await.context("the connection did not end in time")? {
                Event::Message(_) => continue,
                Event::Ended(ended) => return Ok(ended),
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// The server's clock as the tests read it (ms since the epoch).
pub fn now_ms() -> f64 {
    backend::clock::now_ms()
}

/// The `heartsync` binary: `HEARTSYNC_BIN`, or the one beside this test in
/// the target dir, built first if missing.
pub fn server_binary() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("HEARTSYNC_BIN") {
        return path.into();
    }
    workspace_binary("backend", "heartsync")
}

/// A binary of the workspace, from the target dir this test runs from,
/// built (debug) first if missing.
pub fn workspace_binary(package: &str, name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // <target>/<profile>/deps/it-<hash> -> <target>/<profile>/<name>
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target layout");
    let binary = profile_dir.join(name);
    if !binary.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--package", package, "--bin", name])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building {name} failed");
    }
    binary
}

/// The real `heartsync` binary running as a child process.
pub struct ServerProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    child: tokio::process::Child,
    /// Its log lines (JSON), read in the background.
    pub logs: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl ServerProcess {
    /// Starts the binary with `args` (plus `--addr 127.0.0.1:0` and JSON
    /// logs) and waits until it listens. Fails with the process's output if
    /// it exits first.
    pub async fn start(args: &[&str]) -> anyhow::Result<Self> {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(server_binary())
            .args(["--addr", "127.0.0.1:0", "--log-format", "json", "--log", "info"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("spawn heartsync")?;
        let (tx, mut logs) = tokio::sync::mpsc::unbounded_channel();
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        for reader in [
            Box::pin(stdout) as std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
            Box::pin(stderr),
        ] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(reader).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let _ = tx.send(line);
                }
            });
        }
        drop(tx);
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let line = match tokio::time::timeout_at(deadline, logs.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => bail!("heartsync exited before listening:\n{}", seen.join("\n")),
                Err(_) => bail!("heartsync did not start listening in time:\n{}", seen.join("\n")),
            };
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                && json["fields"]["message"] == "heartsync listening"
            {
                let addr = json["fields"]["addr"].as_str().context("addr field")?.parse()?;
                return Ok(Self { addr, child, logs });
            }
            seen.push(line);
        }
    }

    /// Starts the binary expecting it to fail; returns its exit code and
    /// everything it printed.
    pub async fn start_failing(args: &[&str]) -> anyhow::Result<(Option<i32>, String)> {
        let output = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::new(server_binary())
                .args(["--addr", "127.0.0.1:0"])
                .args(args)
                .output(),
        )
        .await
        .context("heartsync kept running")??;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok((output.status.code(), text))
    }

    /// `ws://addr/path`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// `http://addr/path`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Sends `signal` (e.g. "TERM", "KILL") with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit; its exit code.
    pub async fn wait(&mut self, patience: Duration) -> anyhow::Result<Option<i32>> {
        let status = tokio::time::timeout(patience, self.child.wait())
            .await
            .context("heartsync did not exit in time")??;
        Ok(status.code())
    }
}

/// How often [`wait_until`] tries again.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Polls `attempt` every 50 ms until it succeeds or `patience` runs out: the
/// one way a test waits for something to happen. An error from an attempt
/// means "not yet"; if time runs out, the last one is returned, saying what
/// was awaited (`what`).
pub async fn wait_until<T, F, Fut>(
    patience: Duration,
    what: &str,
    mut attempt: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(error.context(format!("waited {:.1} s for {what}", patience.as_secs_f64())));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
