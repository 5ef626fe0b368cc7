//! Several heartsync instances for the multi-instance tests: a real
//! `redis-server` (temporary dir, random port, AOF with `appendfsync
//! always`), the real binary as each instance, and a real `nginx` in front
//! (generated config, random port, round-robin upstreams, WebSocket upgrade
//! headers). Every process can be stopped, killed with `kill -9` and started
//! again. `redis-server` and `nginx` come from Debian's packages, installed
//! by `cargo xtask install --test`.

use crate::ServerProcess;
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long a helper process gets to start listening.
const START_PATIENCE: Duration = Duration::from_secs(15);

/// A free port on 127.0.0.1 (free when asked; the caller binds it next).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Polls until something accepts TCP connections on `addr`.
async fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) -> anyhow::Result<()> {
    crate::wait_until(START_PATIENCE, &format!("{what} to listen on {addr}"), || {
        // A process that has exited will never listen: fail at once.
        let exited = child.try_wait();
        async move {
            if let Some(status) = exited? {
                return Err(anyhow::anyhow!("{what} exited before listening on {addr}: {status}"));
            }
            TcpStream::connect(addr).await?;
            Ok(())
        }
    })
    .await
}

/// Sends `signal` to `child` with `kill(1)`.
fn signal(child: &Child, signal: &str) -> anyhow::Result<()> {
    let pid = child.id().context("the process has already exited")?;
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("run kill")?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed");
    }
    Ok(())
}

/// A real `redis-server` on a random port, its data in a temporary dir.
pub struct RedisServer {
    /// Its port, kept across restarts so instances find it again.
    pub port: u16,
    /// Whether it fsyncs every write (`appendfsync always`).
    durable: bool,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts Redis with `appendonly yes` and `appendfsync always`.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(true).await
    }

    /// Starts Redis; `durable: false` leaves `appendfsync everysec`, which
    /// the love store refuses.
    pub async fn start_with(durable: bool) -> anyhow::Result<Self> {
        let mut redis = Self {
            port: free_port()?,
            durable,
            dir: tempfile::tempdir().context("temporary dir for Redis")?,
            child: None,
        };
        redis.restart().await?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it again (after [`stop`](Self::stop) or [`kill`](Self::kill))
    /// on the same port with the same data dir, and waits until it answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let fsync = if self.durable { "always" } else { "everysec" };
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", "yes", "--appendfsync", fsync, "--save", ""])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawn redis-server (install it with `cargo xtask install --test`)")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        wait_listening(addr, &mut child, "redis-server").await?;
        self.child = Some(child);
        // Listening is not loaded: wait until it answers commands.
        crate::wait_until(START_PATIENCE, "redis-server to answer PING", || async {
            let reply = self.cli(&["PING"]).await?;
            anyhow::ensure!(reply.trim() == "PONG", "it answered {reply:?}");
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Stops it with SIGTERM and waits for it to exit.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.end("TERM").await
    }

    /// Kills it with SIGKILL (`kill -9`) and waits for it to be gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.end("KILL").await
    }

    async fn end(&mut self, how: &str) -> anyhow::Result<()> {
        let mut child = self.child.take().context("redis-server is not running")?;
        signal(&child, how)?;
        tokio::time::timeout(START_PATIENCE, child.wait()).await.context("redis-server exit")??;
        Ok(())
    }

    /// Runs `redis-cli` against it; its output.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .await
            .context("run redis-cli")?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// A real `nginx` on a random port, round-robin over `upstreams`.
pub struct Nginx {
    /// Where it listens.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    child: Child,
}

/// The nginx configuration that fronts `upstreams` on `port`: WebSocket
/// upgrades passed through, the read timeout above the server's ping
/// interval (25 s), and a failed upstream skipped for the next request.
pub fn nginx_config(dir: &Path, port: u16, upstreams: &[SocketAddr]) -> String {
    let servers: String = upstreams
        .iter()
        .map(|addr| format!("        server {addr} max_fails=1 fail_timeout=10s;\n"))
        .collect();
    let dir = dir.display();
    format!(
        "worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    upstream heartsync {{
{servers}    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://heartsync;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_connect_timeout 2s;
            proxy_read_timeout 60s;
            proxy_send_timeout 60s;
        }}
    }}
}}
"
    )
}

impl Nginx {
    /// Starts nginx in front of `upstreams` and waits until it listens.
    pub async fn start(upstreams: &[SocketAddr]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temporary dir for nginx")?;
        let port = free_port()?;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, nginx_config(dir.path(), port, upstreams))?;
        let mut child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            // As root, nginx's workers would run as `nobody`, who cannot use
            // the temporary dir; run them as whoever runs the tests.
            .args(["-g", "daemon off; user root;"])
            .kill_on_drop(true)
            .spawn()
            .context("spawn nginx (install it with `cargo xtask install --test`)")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_listening(addr, &mut child, "nginx").await.with_context(|| {
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        })?;
        Ok(Self { addr, _dir: dir, child })
    }

    /// `ws://nginx/path`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// `http://nginx/path`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // A master killed outright (`kill_on_drop`) leaves its worker
        // behind, still listening: ask it to quit, and give it a moment.
        if signal(&self.child, "QUIT").is_ok() {
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// `nginx` on PATH, or Debian's `/usr/sbin/nginx` (not on a user's PATH).
fn nginx_binary() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/nginx");
    if sbin.is_file() { sbin } else { PathBuf::from("nginx") }
}

/// Instances sharing one Redis, behind one nginx.
pub struct Cluster {
    /// The shared Redis.
    pub redis: RedisServer,
    /// Each instance; `None` once killed.
    pub instances: Vec<Option<ServerProcess>>,
    /// Each instance's address, kept after it is killed.
    pub addrs: Vec<SocketAddr>,
    /// nginx in front of every instance.
    pub nginx: Nginx,
    /// The instances' data dirs (unused with Redis, but each gets its own).
    _data: tempfile::TempDir,
}

impl Cluster {
    /// Starts Redis, `n` instances (ids `instance-0`… with `extra` flags)
    /// and nginx in front of them.
    pub async fn start(n: usize, extra: &[&str]) -> anyhow::Result<Self> {
        let redis = RedisServer::start().await?;
        let data = tempfile::tempdir()?;
        let mut instances = Vec::new();
        let mut addrs = Vec::new();
        for i in 0..n {
            let instance = start_instance(&redis, data.path(), i, extra).await?;
            addrs.push(instance.addr);
            instances.push(Some(instance));
        }
        let nginx = Nginx::start(&addrs).await?;
        Ok(Self { redis, instances, addrs, nginx, _data: data })
    }

    /// Instance `i`, which must be running.
    pub fn instance(&self, i: usize) -> &ServerProcess {
        self.instances[i].as_ref().expect("the instance is running")
    }

    /// Kills instance `i` with `kill -9` and waits for it to be gone.
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let mut instance = self.instances[i].take().context("already gone")?;
        instance.signal("KILL");
        instance.wait(START_PATIENCE).await?;
        Ok(())
    }
}

/// Starts instance `i` on `redis`.
pub async fn start_instance(
    redis: &RedisServer,
    data: &Path,
    i: usize,
    extra: &[&str],
) -> anyhow::Result<ServerProcess> {
    let url = redis.url();
    let id = format!("instance-{i}");
    let dir = data.join(&id);
    let dir = dir.to_str().context("a UTF-8 temp path")?;
    let mut args = vec!["--redis-url", &url, "--instance-id", &id, "--data-dir", dir];
    args.extend_from_slice(extra);
    ServerProcess::start(&args).await
}
