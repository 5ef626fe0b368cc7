//! `cargo xtask cluster`: the deployment topology of `deploy/` as local
//! processes on loopback: redis-server, N heartsync instances, nginx in
//! front of them and Prometheus scraping them, all from Debian's packages
//! and with deploy/'s own config files.
//!
//! The files are used as they are, except where this machine needs another
//! port: nginx's upstream `server` lines and `listen` port are rewritten
//! ([`nginx_site`]), Prometheus gets its own `targets/heartsync.yml` next to
//! unchanged copies of `prometheus.yml` and `alerts.yml`, and redis-server
//! reads `redis.conf` with `--port`, `--bind` and `--dir` given after it.
//!
//! `--check` brings it all up, checks it from the outside (what an operator
//! or a browser would see through nginx, two real pages on different
//! instances beating as one ([`pages`]), what Prometheus sees, and what
//! happens when an instance is killed or drained), tears it down and exits
//! 0 or 1. `cargo xtask test` runs that check.
//!
//! Every process runs in its own process group, so a Ctrl-C at the terminal
//! reaches this program only, which then stops them in order (SIGTERM, and
//! SIGKILL for any still running after a while) and removes its folder.
//!
//! HTTP goes through one blocking client ([`HTTP`], ureq). The WebSocket
//! handshake and the first frames are spoken by hand over `std::net` on
//! purpose: the check looks at what nginx passes through byte for byte (the
//! upgrade's status, close codes), and a raw socket that answers no pings
//! is what it needs.

use std::{
    env, fs,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, LazyLock,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use ureq::http::Response;

use crate::install::find_program;

mod pages;

/// What `cargo xtask cluster` was asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    /// How many heartsync instances run behind nginx.
    pub instances: usize,
    /// nginx's port: the one URL a person opens. `None`: 8080 when serving,
    /// any free port when checking.
    pub port: Option<u16>,
    /// Check the running cluster, then stop it and exit 0 or 1.
    pub check: bool,
    /// Run the debug build of the server (what `cargo xtask test` builds)
    /// instead of the release one.
    pub debug: bool,
}

impl Options {
    /// Reads `[--instances N] [--port P] [--check] [--debug]`.
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Options { instances: 3, port: None, check: false, debug: false };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (arg.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next().cloned())
                    .with_context(|| format!("`{name}` needs a value"))
            };
            match name {
                "--instances" => {
                    let text = value()?;
                    options.instances = text
                        .parse()
                        .ok()
                        .filter(|n| (1..=16).contains(n))
                        .with_context(|| format!("--instances takes 1 to 16, not {text:?}"))?;
                }
                "--port" => {
                    let text = value()?;
                    options.port =
                        Some(text.parse().ok().filter(|port| *port != 0).with_context(|| {
                            format!("--port takes a port number, not {text:?}")
                        })?);
                }
                "--check" => options.check = true,
                "--debug" => options.debug = true,
                other => bail!(
                    "`cluster` takes --instances N, --port P, --check and --debug, not `{other}`"
                ),
            }
        }
        Ok(options)
    }
}

/// The programs the cluster runs, with where each comes from when missing.
const PROGRAMS: &[(&str, &str)] =
    &[("redis-server", "redis-server"), ("nginx", "nginx"), ("prometheus", "prometheus")];

/// nginx's port when serving and none was given.
const DEFAULT_PORT: u16 = 8080;

/// How long a process may take to become ready.
const STARTUP_PATIENCE: Duration = Duration::from_secs(30);

/// How long a process may take to stop after SIGTERM before it is killed.
const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// The `--drain` the instances run with in a check: short, so the rolling
/// restart is quick, and long enough to open connections while it lasts.
const CHECK_DRAIN: Duration = Duration::from_secs(2);

/// The nginx site config with its ports filled in: the `server` lines of
/// `upstream heartsync` become one per address of `instances` (keeping the
/// first line's parameters), and the `listen` line listens on `listen`.
/// Nothing else changes.
pub fn nginx_site(template: &str, listen: SocketAddr, instances: &[SocketAddr]) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut in_upstream = false;
    let mut servers_written = false;
    let mut listens = 0;
    for line in template.lines() {
        let code = line.split('#').next().unwrap_or("").trim();
        if code.starts_with("upstream heartsync") && code.ends_with('{') {
            in_upstream = true;
        } else if in_upstream && code == "}" {
            in_upstream = false;
        } else if in_upstream && code.starts_with("server ") {
            if !servers_written {
                let indent = &line[..line.len() - line.trim_start().len()];
                // `server NAME:PORT params;`: keep the params.
                let params = code
                    .trim_end_matches(';')
                    .split_whitespace()
                    .skip(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                for addr in instances {
                    let params =
                        if params.is_empty() { String::new() } else { format!(" {params}") };
                    out.push_str(&format!("{indent}server {addr}{params};\n"));
                }
                servers_written = true;
            }
            continue;
        } else if code.starts_with("listen ") {
            let indent = &line[..line.len() - line.trim_start().len()];
            out.push_str(&format!("{indent}listen {listen};\n"));
            listens += 1;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    ensure!(servers_written, "no `server` lines in an `upstream heartsync {{` block");
    ensure!(listens == 1, "expected one `listen` line, found {listens}");
    ensure!(!instances.is_empty(), "no instances to put in the upstream");
    Ok(out)
}

/// nginx's main config for a local run: everything in `dir`, in the
/// foreground, and the site config included in the `http` block (as
/// `conf.d/*.conf` is in the packaged and official images).
pub fn nginx_main(dir: &Path, site: &Path) -> String {
    let dir = dir.display();
    // As root, nginx's workers would run as `nobody`, which cannot enter
    // a private temporary folder; run them as the caller instead.
    let user = if is_root() { "user root;\n" } else { "" };
    format!(
        "# Generated by `cargo xtask cluster`: nginx's own settings for a local run.\n\
         {user}daemon off;\n\
         pid {dir}/nginx.pid;\n\
         error_log stderr notice;\n\
         worker_processes 1;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
         \x20   client_body_temp_path {dir}/tmp/body;\n\
         \x20   proxy_temp_path {dir}/tmp/proxy;\n\
         \x20   fastcgi_temp_path {dir}/tmp/fastcgi;\n\
         \x20   uwsgi_temp_path {dir}/tmp/uwsgi;\n\
         \x20   scgi_temp_path {dir}/tmp/scgi;\n\
         \x20   include {site};\n\
         }}\n",
        site = site.display(),
    )
}

/// Prometheus's file service discovery list for `instances`.
pub fn prometheus_targets(instances: &[SocketAddr]) -> String {
    let mut text =
        String::from("# Generated by `cargo xtask cluster`: the local instances.\n- targets:\n");
    for addr in instances {
        text.push_str(&format!("    - \"{addr}\"\n"));
    }
    text
}

fn is_root() -> bool {
    crate::process::probe(Command::new("id").arg("-u")).is_some_and(|uid| uid == "0")
}

/// A free port on 127.0.0.1 (bound, read, released).
fn free_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("no free port on 127.0.0.1")?;
    Ok(listener.local_addr()?)
}

/// One running program of the cluster, its output in a log file.
struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `command` in its own process group with its output appended
    /// to `log` (a restarted instance keeps one log).
    fn spawn(name: &str, command: &mut Command, log: PathBuf) -> Result<Self> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("open {}", log.display()))?;
        let err = out.try_clone()?;
        let child =
            command
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .process_group(0)
                .spawn()
                .with_context(|| format!("could not start {name} ({:?})", command.get_program()))?;
        Ok(Self { name: name.to_string(), child, log })
    }

    /// Sends `signal` (`TERM`, `KILL`) with the system's `kill`.
    fn signal(&self, signal: &str) -> Result<()> {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .context("could not run `kill`")?;
        ensure!(status.success(), "`kill -s {signal}` of {} failed", self.name);
        Ok(())
    }

    /// The exit status, when it has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `patience` for it to exit.
    fn wait(&mut self, patience: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then SIGKILL if it is still running after [`STOP_PATIENCE`].
    fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let _ = self.signal("TERM");
        if self.wait(STOP_PATIENCE).is_none() {
            eprintln!("{} did not stop within {STOP_PATIENCE:?}: killing it", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The last lines it printed, for error messages.
    fn tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(20);
        format!(
            "--- last lines of {} ({}) ---\n{}",
            self.name,
            self.log.display(),
            lines[start..].join("\n")
        )
    }

    /// Fails with its output if it has exited.
    fn ensure_running(&mut self) -> Result<()> {
        match self.exited() {
            Some(status) => bail!("{} exited ({status})\n{}", self.name, self.tail()),
            None => Ok(()),
        }
    }
}

impl Drop for Process {
    /// A process is never left running: not when starting the cluster
    /// fails halfway, nor when a check fails.
    fn drop(&mut self) {
        self.stop();
    }
}

/// One heartsync instance: its address stays when it is restarted.
struct Instance {
    addr: SocketAddr,
    process: Option<Process>,
}

/// The running cluster. Dropping it stops every process and removes its
/// folder.
pub struct Cluster {
    /// Everything the run writes: generated configs, data, logs. Removed
    /// when the cluster is dropped, after every process has stopped.
    dir: Folder,
    heartsync: PathBuf,
    dist: PathBuf,
    drain: Option<Duration>,
    redis: Process,
    redis_addr: SocketAddr,
    instances: Vec<Instance>,
    nginx: Process,
    nginx_addr: SocketAddr,
    prometheus: Process,
    prometheus_addr: SocketAddr,
}

impl Cluster {
    /// Starts everything and waits until each part is ready.
    pub fn start(
        root: &Path,
        heartsync: &Path,
        dist: &Path,
        options: &Options,
        drain: Option<Duration>,
    ) -> Result<Self> {
        for (program, package) in PROGRAMS {
            if find_program(program).is_none() {
                bail!(
                    "`{program}` is not on PATH: `cargo xtask install --test` installs it \
                     (Debian package `{package}`)"
                );
            }
        }
        // Declared before the processes, so on an early return they are
        // dropped (stopped) first and the folder is removed after them.
        let folder = Folder::create(
            env::temp_dir().join(format!("heartsync-cluster-{}", std::process::id())),
        )?;
        let dir = folder.0.clone();
        for sub in ["logs", "redis", "nginx/tmp", "prometheus/targets", "prometheus/data"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("create {}", dir.join(sub).display()))?;
        }
        let log = |name: &str| dir.join("logs").join(format!("{name}.log"));
        let deploy = root.join("deploy");

        // Redis, with deploy/redis/redis.conf and only this machine's
        // port, address and folder added after it.
        let redis_addr = free_addr()?;
        let redis = Process::spawn(
            "redis-server",
            Command::new("redis-server")
                .current_dir(dir.join("redis"))
                .arg(deploy.join("redis/redis.conf"))
                .args(["--port", &redis_addr.port().to_string(), "--bind", "127.0.0.1", "--dir"])
                .arg(dir.join("redis")),
            log("redis"),
        )?;

        let addrs = (0..options.instances).map(|_| free_addr()).collect::<Result<Vec<_>>>()?;
        let nginx_addr = match (options.port, options.check) {
            (Some(port), _) => SocketAddr::from(([127, 0, 0, 1], port)),
            (None, false) => SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            (None, true) => free_addr()?,
        };

        // nginx, with deploy/nginx/heartsync.conf's ports filled in.
        let template = fs::read_to_string(deploy.join("nginx/heartsync.conf"))
            .context("read deploy/nginx/heartsync.conf")?;
        let site = dir.join("nginx/heartsync.conf");
        fs::write(&site, nginx_site(&template, nginx_addr, &addrs)?)?;
        let main = dir.join("nginx/nginx.conf");
        fs::write(&main, nginx_main(&dir.join("nginx"), &site))?;
        let nginx = Process::spawn(
            "nginx",
            Command::new("nginx").arg("-p").arg(dir.join("nginx")).arg("-c").arg(&main),
            log("nginx"),
        )?;

        // Prometheus, with deploy/prometheus/'s files and a targets list.
        for file in ["prometheus.yml", "alerts.yml"] {
            fs::copy(deploy.join("prometheus").join(file), dir.join("prometheus").join(file))
                .with_context(|| format!("copy deploy/prometheus/{file}"))?;
        }
        fs::write(dir.join("prometheus/targets/heartsync.yml"), prometheus_targets(&addrs))?;
        let prometheus_addr = free_addr()?;
        let prometheus = Process::spawn(
            "prometheus",
            Command::new("prometheus")
                .arg(format!("--config.file={}", dir.join("prometheus/prometheus.yml").display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("prometheus/data").display()))
                .arg(format!("--web.listen-address={prometheus_addr}")),
            log("prometheus"),
        )?;

        let mut cluster = Cluster {
            dir: folder,
            heartsync: heartsync.to_path_buf(),
            dist: dist.to_path_buf(),
            drain,
            redis,
            redis_addr,
            instances: addrs.into_iter().map(|addr| Instance { addr, process: None }).collect(),
            nginx,
            nginx_addr,
            prometheus,
            prometheus_addr,
        };
        cluster.wait_for_redis()?;
        for index in 0..cluster.instances.len() {
            cluster.start_instance(index)?;
        }
        for index in 0..cluster.instances.len() {
            cluster.wait_for_instance(index)?;
        }
        cluster.wait_http("nginx", |c| c.nginx_addr, "/nginx-livez", |c| &mut c.nginx)?;
        cluster.wait_http(
            "prometheus",
            |c| c.prometheus_addr,
            "/-/ready",
            |c| &mut c.prometheus,
        )?;
        Ok(cluster)
    }

    /// Starts (or restarts) instance `index` on its address.
    fn start_instance(&mut self, index: usize) -> Result<()> {
        let addr = self.instances[index].addr;
        let name = format!("heartsync-{}", index + 1);
        let data = self.dir.0.join(&name).join("data");
        fs::create_dir_all(&data)?;
        let mut command = Command::new(&self.heartsync);
        command
            .arg("--addr")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(&data)
            .arg("--static-dir")
            .arg(&self.dist)
            .env("HEARTSYNC_INSTANCE_ID", &name);
        if let Some(drain) = self.drain {
            command.arg("--drain").arg(format!("{}ms", drain.as_millis()));
        }
        // The one place the instances learn where Redis is: they share
        // rooms, consensus and love through it. nginx is their only peer, so
        // it is the trusted proxy whose `X-Forwarded-For` names the client
        // (else every client would count as nginx's one address).
        command.arg("--redis-url").arg(format!("redis://{}/0", self.redis_addr));
        command.arg("--trusted-proxy").arg("127.0.0.1");
        let log = self.dir.0.join("logs").join(format!("{name}.log"));
        self.instances[index].process = Some(Process::spawn(&name, &mut command, log)?);
        Ok(())
    }

    fn wait_for_instance(&mut self, index: usize) -> Result<()> {
        let addr = self.instances[index].addr;
        poll(STARTUP_PATIENCE, &format!("heartsync-{} ready on {addr}", index + 1), || {
            if let Some(process) = self.instances[index].process.as_mut() {
                process.ensure_running()?;
            }
            Ok(http_get(addr, "/readyz", &[]).is_ok_and(|r| r.status() == 200).then_some(()))
        })
    }

    fn wait_for_redis(&mut self) -> Result<()> {
        let addr = self.redis_addr;
        poll(STARTUP_PATIENCE, &format!("redis-server answering PING on {addr}"), || {
            self.redis.ensure_running()?;
            Ok(redis_command(addr, &["PING"])
                .is_ok_and(|reply| reply.contains("PONG"))
                .then_some(()))
        })
    }

    fn wait_http(
        &mut self,
        name: &str,
        addr: impl Fn(&Self) -> SocketAddr,
        path: &str,
        process: impl Fn(&mut Self) -> &mut Process,
    ) -> Result<()> {
        let addr = addr(self);
        poll(STARTUP_PATIENCE, &format!("{name} answering {path} on {addr}"), || {
            process(self).ensure_running()?;
            Ok(http_get(addr, path, &[]).is_ok_and(|r| r.status() == 200).then_some(()))
        })
    }

    /// Prints where everything is.
    pub fn print_urls(&self) {
        println!("\nheartsync cluster: {} instances behind nginx\n", self.instances.len());
        println!("  page (nginx)   http://{}/", self.nginx_addr);
        for (index, instance) in self.instances.iter().enumerate() {
            println!("  heartsync-{}    http://{}/  (metrics: /metrics)", index + 1, instance.addr);
        }
        println!(
            "  prometheus     http://{}/  (alerts: /alerts, targets: /targets)",
            self.prometheus_addr
        );
        println!("  redis          redis://{}/0", self.redis_addr);
        println!("  logs           {}", self.dir.0.join("logs").display());
        println!("\nCtrl-C stops everything.\n");
    }

    /// Waits for Ctrl-C or SIGTERM; fails when a process exits by itself.
    pub fn serve_until_signalled(&mut self) -> Result<()> {
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, Arc::clone(&stop))
                .context("cannot listen for Ctrl-C / SIGTERM")?;
        }
        while !stop.load(Ordering::Relaxed) {
            self.ensure_all_running()?;
            thread::sleep(Duration::from_millis(200));
        }
        println!("\nstopping the cluster");
        Ok(())
    }

    fn ensure_all_running(&mut self) -> Result<()> {
        self.redis.ensure_running()?;
        self.nginx.ensure_running()?;
        self.prometheus.ensure_running()?;
        for instance in &mut self.instances {
            if let Some(process) = instance.process.as_mut() {
                process.ensure_running()?;
            }
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The entry first, then the instances (they drain), then the rest.
        self.nginx.stop();
        for instance in &mut self.instances {
            if let Some(process) = instance.process.as_mut() {
                process.signal("TERM").ok();
            }
        }
        for instance in &mut self.instances {
            if let Some(process) = instance.process.as_mut() {
                process.stop();
            }
        }
        self.prometheus.stop();
        self.redis.stop();
        // Then `dir` is dropped: the folder goes.
    }
}

/// A folder of our own, removed when dropped.
struct Folder(PathBuf);

impl Folder {
    /// Creates `path` afresh (a leftover of an earlier run is removed).
    fn create(path: PathBuf) -> Result<Self> {
        if path.exists() {
            fs::remove_dir_all(&path).with_context(|| format!("remove {}", path.display()))?;
        }
        fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(Folder(path))
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_dir_all(&self.0) {
            eprintln!("could not remove {}: {error}", self.0.display());
        }
    }
}

/// `cargo xtask cluster`: serves until Ctrl-C, or checks (`--check`).
pub fn run(root: &Path, heartsync: &Path, dist: &Path, options: &Options) -> Result<()> {
    ensure!(
        dist.join("index.html").is_file(),
        "{} has no index.html: build the page first",
        dist.display()
    );
    if options.check {
        return check(root, heartsync, dist, options);
    }
    let mut cluster = Cluster::start(root, heartsync, dist, options, None)?;
    cluster.print_urls();
    cluster.serve_until_signalled()
}

/// Brings the cluster up, checks it, and tears it down.
pub fn check(root: &Path, heartsync: &Path, dist: &Path, options: &Options) -> Result<()> {
    let started = Instant::now();
    let mut cluster = Cluster::start(root, heartsync, dist, options, Some(CHECK_DRAIN))?;
    println!("cluster up in {:.1}s", started.elapsed().as_secs_f64());
    cluster.print_urls();
    let outcome = checks(&mut cluster, root);
    if let Err(error) = &outcome {
        let mut tails = vec![cluster.nginx.tail(), cluster.prometheus.tail(), cluster.redis.tail()];
        tails
            .extend(cluster.instances.iter().filter_map(|i| i.process.as_ref()).map(Process::tail));
        eprintln!("\ncluster check failed: {error:#}\n\n{}", tails.join("\n\n"));
    }
    drop(cluster);
    outcome?;
    println!("cluster check passed in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Prints one check's name and result as it goes.
fn step(name: &str, check: impl FnOnce() -> Result<()>) -> Result<()> {
    let started = Instant::now();
    let result = check().with_context(|| format!("check `{name}`"));
    let mark = if result.is_ok() { "ok" } else { "FAILED" };
    println!("  {mark:>6}  {name} ({:.1}s)", started.elapsed().as_secs_f64());
    result
}

fn checks(cluster: &mut Cluster, root: &Path) -> Result<()> {
    let nginx = cluster.nginx_addr;
    let own_origin = format!("http://{nginx}");

    step("redis appends every write to its AOF and fsyncs it", || {
        let fsync = redis_command(cluster.redis_addr, &["CONFIG", "GET", "appendfsync"])?;
        ensure!(fsync.contains("always"), "appendfsync is not `always`: {fsync:?}");
        let aof = redis_command(cluster.redis_addr, &["CONFIG", "GET", "appendonly"])?;
        ensure!(aof.contains("yes"), "appendonly is not `yes`: {aof:?}");
        Ok(())
    })?;

    step("`heartsync healthcheck` passes on every instance", || {
        for instance in &cluster.instances {
            let output = Command::new(&cluster.heartsync)
                .arg("healthcheck")
                .arg("--url")
                .arg(format!("http://{}/livez", instance.addr))
                .output()
                .context("run heartsync healthcheck")?;
            ensure!(
                output.status.success(),
                "heartsync healthcheck on {} failed: {}",
                instance.addr,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    })?;

    step("the page comes through nginx uncached, its hashed assets cached for good", || {
        let page = http_get(nginx, "/", &[("X-Request-Id", "cluster-check-page")])?;
        ensure!(page.status() == 200, "GET / through nginx: {}", page.status());
        ensure!(
            header(&page, "cache-control") == Some("no-cache"),
            "the page's Cache-Control is {:?}, not no-cache",
            header(&page, "cache-control")
        );
        ensure!(
            header(&page, "x-request-id") == Some("cluster-check-page"),
            "the request id did not come back through nginx: {:?}",
            header(&page, "x-request-id")
        );
        let asset = hashed_asset(page.body()).context("the page names no hashed script")?;
        let script = http_get(nginx, &asset, &[])?;
        ensure!(script.status() == 200, "GET {asset}: {}", script.status());
        let cache = header(&script, "cache-control").unwrap_or("");
        ensure!(cache.contains("immutable"), "{asset} has Cache-Control {cache:?}");
        let room = http_get(nginx, "/r/cluster", &[])?;
        ensure!(
            room.status() == 200 && header(&room, "cache-control") == Some("no-cache"),
            "GET /r/cluster"
        );
        Ok(())
    })?;

    step("nginx hides /metrics", || {
        let metrics = http_get(nginx, "/metrics", &[])?;
        ensure!(
            metrics.status() == 404,
            "GET /metrics through nginx answered {}",
            metrics.status()
        );
        Ok(())
    })?;

    step("a page's WebSocket connects through nginx; another origin's is refused", || {
        let (_socket, welcome) = ws_open(nginx, "/ws/cluster", Some(&own_origin))?.open()?;
        ensure!(
            welcome.contains("\"type\":\"welcome\""),
            "the first message is not a welcome: {welcome}"
        );
        ensure!(welcome.contains("\"room\":\"cluster\""), "welcomed to another room: {welcome}");
        match ws_open(nginx, "/ws/cluster", Some("http://evil.example"))? {
            Upgrade::Refused(403) => Ok(()),
            Upgrade::Refused(status) => bail!("a foreign origin got {status}, not 403"),
            Upgrade::Open(..) => bail!("a foreign origin's WebSocket was accepted"),
        }
    })?;

    let count = cluster.instances.len();
    if count >= 2 {
        // Before the raw sockets of the steps below, so the instances'
        // connection counts show where the pages are.
        let driver = pages::Driver::start(cluster)?;
        let mut two = None;
        step("two real browsers through nginx land on different instances", || {
            two = Some(driver.land_apart(cluster)?);
            Ok(())
        })?;
        let two = two.context("the pages did not open")?;
        step("the two pages fall into one beat (< 0.02 beat within 10 s)", || two.beat_as_one())?;
        step(
            "SIGTERM drains a page's instance: the page is back on another within its backoff",
            || two.survive_a_drain(cluster),
        )?;
        two.close()?;
    }

    // Before the raw sockets are opened: they answer no pings, so the
    // steps that hold them must end within a ping interval and its pong
    // timeout (25 s + 10 s), however long Prometheus takes.
    let alerts = fs::read_to_string(root.join("deploy/prometheus/alerts.yml"))?
        .lines()
        .filter(|line| line.trim_start().starts_with("- alert:"))
        .count();
    step(
        "Prometheus scrapes every instance (up = 1, on Redis) and loaded the alert rules",
        || {
            let prometheus = cluster.prometheus_addr;
            let query = "/api/v1/query?query=count%28up%7Bjob%3D%22heartsync%22%7D%3D%3D1%29";
            poll(Duration::from_secs(45), &format!("{count} instances up in Prometheus"), || {
                let response = http_get(prometheus, query, &[])?;
                Ok(first_sample_value(response.body()).filter(|up| *up == count as f64).map(|_| ()))
            })?;
            // What HeartsyncRedisDown watches exists, and says connected.
            let query = "/api/v1/query?query=count%28heartsync_redis_up%7Bjob%3D%22heartsync%22%7D%3D%3D1%29";
            poll(
                Duration::from_secs(45),
                &format!("{count} instances on Redis in Prometheus"),
                || {
                    let response = http_get(prometheus, query, &[])?;
                    Ok(first_sample_value(response.body())
                        .filter(|up| *up == count as f64)
                        .map(|_| ()))
                },
            )?;
            poll(Duration::from_secs(45), &format!("{alerts} alert rules evaluated"), || {
                let body = http_get(prometheus, "/api/v1/rules?type=alert", &[])?.into_body();
                ensure!(!body.contains("\"health\":\"err\""), "a rule fails to evaluate: {body}");
                let rules = body.matches("\"type\":\"alerting\"").count();
                let healthy = body.matches("\"health\":\"ok\"").count();
                Ok((rules == alerts && healthy == alerts).then_some(()))
            })
        },
    )?;

    let mut sockets = Vec::new();
    step("nginx spreads WebSockets over every instance", || {
        for _ in 0..2 * count {
            sockets.push(ws_open(nginx, "/ws/spread", Some(&own_origin))?.open()?.0);
        }
        for instance in &cluster.instances {
            let open = connections_open(instance.addr)?;
            ensure!(
                open >= 1.0,
                "{} has {open} connections open: nginx did not send it any",
                instance.addr
            );
        }
        Ok(())
    })?;

    if count < 2 {
        println!("  (one instance: the page, kill and drain checks need two)");
        return Ok(());
    }

    step(
        "kill -9 of an instance: its clients reconnect through nginx at once, counts settle",
        || {
            let victim =
                cluster.instances[0].process.as_mut().context("instance 1 is not running")?;
            victim.signal("KILL")?;
            victim.wait(STOP_PATIENCE).context("the killed instance did not exit")?;
            let (closed, alive) = sort_sockets(&mut sockets, Duration::from_secs(5));
            ensure!(!closed.is_empty(), "no client noticed its instance die");
            ensure!(!alive.is_empty(), "every client was cut off, not only the killed instance's");
            sockets = alive;
            // Each cut-off client reconnects once, with no backoff: nginx must
            // send it to a live instance on the first try.
            for _ in 0..closed.len() + count {
                sockets.push(ws_open(nginx, "/ws/spread", Some(&own_origin))?.open()?.0);
            }
            // The dead instance's hearts leave the count, the moved ones are
            // counted once: every client, on every instance, sees the same.
            counts_settle(&mut sockets)
        },
    )?;

    step("the killed instance restarts and nginx sends it connections again", || {
        cluster.start_instance(0)?;
        cluster.wait_for_instance(0)?;
        // A rolling restart drains the next instance only once nginx sends
        // new clients to this one again (deploy/nginx/heartsync.conf says
        // why it needs no probation).
        let restarted = cluster.instances[0].addr;
        poll(Duration::from_secs(15), "a new connection on the restarted instance", || {
            sockets.push(ws_open(nginx, "/ws/spread", Some(&own_origin))?.open()?.0);
            Ok((connections_open(restarted)? >= 1.0).then_some(()))
        })
    })?;

    step("SIGTERM drains an instance while nginx sends new connections to the others", || {
        let drained = cluster.instances[1].addr;
        let process = cluster.instances[1].process.as_mut().context("instance 2 is not running")?;
        process.signal("TERM")?;
        // For the whole drain, new clients keep arriving: every one gets in.
        let mut joined = 0;
        let mut saw_draining = false;
        let drain_end = Instant::now() + CHECK_DRAIN;
        while Instant::now() < drain_end {
            sockets.push(ws_open(nginx, "/ws/spread", Some(&own_origin))?.open()?.0);
            joined += 1;
            saw_draining |= http_get(drained, "/readyz", &[]).is_ok_and(|r| r.status() == 503);
            thread::sleep(Duration::from_millis(100));
        }
        ensure!(saw_draining, "{drained} never said 503 on /readyz while draining");
        let status = process
            .wait(CHECK_DRAIN + STOP_PATIENCE)
            .context("the instance did not finish draining")?;
        ensure!(status.success(), "the drained instance exited with {status}");
        let (closed, alive) = sort_sockets(&mut sockets, Duration::from_secs(2));
        ensure!(!closed.is_empty(), "no client was closed by the draining instance");
        // Going away (1001), so the page reconnects at once.
        ensure!(
            closed.iter().all(|ending| *ending == Ending::Closed(Some(1001))),
            "the drained clients were not all closed with 1001: {closed:?}"
        );
        sockets = alive;
        for _ in 0..closed.len() {
            sockets.push(ws_open(nginx, "/ws/spread", Some(&own_origin))?.open()?.0);
        }
        counts_settle(&mut sockets)?;
        println!(
            "          ({joined} clients joined during the drain, {} reconnected)",
            closed.len()
        );
        cluster.start_instance(1)?;
        cluster.wait_for_instance(1)?;
        Ok(())
    })?;
    Ok(())
}

/// Splits `sockets` into how those that ended within `patience` ended, and
/// those still open (receiving consensus).
fn sort_sockets(sockets: &mut Vec<Socket>, patience: Duration) -> (Vec<Ending>, Vec<Socket>) {
    let deadline = Instant::now() + patience;
    let mut ended = Vec::new();
    let mut alive = Vec::new();
    for mut socket in sockets.drain(..) {
        let left =
            deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(300));
        match socket.ending_within(left) {
            Some(ending) => ended.push(ending),
            None => alive.push(socket),
        }
    }
    (ended, alive)
}

/// How long the room's count may take to settle after clients moved: the
/// instances drop a silent peer's partial after three ticks (750 ms), and
/// the clients read through what was queued for them meanwhile.
const SETTLE_PATIENCE: Duration = Duration::from_secs(10);

/// Every client of the one room the sockets are in sees as many hearts as
/// there are sockets: the instances agree on the room again.
fn counts_settle(sockets: &mut [Socket]) -> Result<()> {
    let hearts = sockets.len() as u64;
    let deadline = Instant::now() + SETTLE_PATIENCE;
    for (index, socket) in sockets.iter_mut().enumerate() {
        let left =
            deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(500));
        socket.wait_for_hearts(hearts, left).with_context(|| format!("client {index}"))?;
    }
    Ok(())
}

/// Polls `check` every 100 ms until it yields `Some`, for at most
/// `patience`; an error from `check` ends the wait at once.
fn poll<T>(
    patience: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(value) = check()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("no {what} within {patience:?}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// How long one HTTP exchange or WebSocket read may take.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The check's HTTP client, for the cluster and for chromedriver
/// ([`pages`]). Plain HTTP on loopback: no TLS, no proxy from the
/// environment, no compression asked for (the bodies are read as they
/// are). Every request opens its own connection, as the instances are
/// killed and restarted under the check: a pooled one would outlive its
/// instance or keep a draining one busy. A 4xx or 5xx is an answer to
/// check, not an error.
static HTTP: LazyLock<ureq::Agent> = LazyLock::new(|| {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_idle_connections(0)
        .timeout_global(Some(IO_TIMEOUT))
        .build()
        .into()
});

/// GET `path` from `addr` with `headers`: the answer, its body read as text.
fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Response<String>> {
    let mut request = HTTP.get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (head, mut body) =
        request.call().with_context(|| format!("GET {path} from {addr}"))?.into_parts();
    let body = body.read_to_string().with_context(|| format!("read GET {path} from {addr}"))?;
    Ok(Response::from_parts(head, body))
}

/// The value of `response`'s header `name`, if it has one in plain text.
fn header<'r>(response: &'r Response<String>, name: &str) -> Option<&'r str> {
    response.headers().get(name)?.to_str().ok()
}

/// The path of the first hashed script the page loads (`/frontend-<hash>.js`).
fn hashed_asset(page: &str) -> Option<String> {
    page.split(['"', '\''])
        .find(|part| part.starts_with('/') && part.ends_with(".js") && part.contains('-'))
        .map(str::to_string)
}

/// The first sample's value in a Prometheus instant-query answer
/// (`"value":[<time>,"<number>"]`).
fn first_sample_value(json: &str) -> Option<f64> {
    let after = json.split_once("\"value\":[")?.1;
    let number = after.split_once(',')?.1.trim_start().strip_prefix('"')?;
    number.split('"').next()?.parse().ok()
}

/// `heartsync_connections_open` from an instance's `/metrics`.
fn connections_open(addr: SocketAddr) -> Result<f64> {
    let metrics = http_get(addr, "/metrics", &[])?;
    metrics
        .body()
        .lines()
        .find_map(|line| line.strip_prefix("heartsync_connections_open "))
        .and_then(|value| value.trim().parse().ok())
        .with_context(|| format!("{addr}/metrics has no heartsync_connections_open"))
}

/// Sends one command to Redis (RESP) and returns the raw reply.
fn redis_command(addr: SocketAddr, words: &[&str]) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut request = format!("*{}\r\n", words.len());
    for word in words {
        request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reply = vec![0; 4096];
    let read = stream.read(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply[..read]).into_owned())
}

/// The outcome of a WebSocket upgrade request.
enum Upgrade {
    /// `101`, and the first text message (the welcome).
    Open(Socket, String),
    /// Any other status.
    Refused(u16),
}

impl Upgrade {
    fn open(self) -> Result<(Socket, String)> {
        match self {
            Upgrade::Open(socket, welcome) => Ok((socket, welcome)),
            Upgrade::Refused(status) => bail!("the WebSocket upgrade was refused with {status}"),
        }
    }
}

/// A client WebSocket that only listens.
struct Socket {
    reader: BufReader<TcpStream>,
}

impl Socket {
    /// Reads one frame: its opcode and payload (server frames are unmasked).
    fn frame(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        let mut head = [0; 2];
        self.reader.read_exact(&mut head)?;
        let length = match head[1] & 0x7f {
            126 => {
                let mut bytes = [0; 2];
                self.reader.read_exact(&mut bytes)?;
                u64::from(u16::from_be_bytes(bytes))
            }
            127 => {
                let mut bytes = [0; 8];
                self.reader.read_exact(&mut bytes)?;
                u64::from_be_bytes(bytes)
            }
            short => u64::from(short),
        };
        let mut payload = vec![0; usize::try_from(length).unwrap_or(usize::MAX).min(1 << 20)];
        self.reader.read_exact(&mut payload)?;
        Ok((head[0] & 0x0f, payload))
    }

    /// Reads on until a consensus counts `hearts` hearts in the room,
    /// for at most `patience`.
    fn wait_for_hearts(&mut self, hearts: u64, patience: Duration) -> Result<()> {
        let deadline = Instant::now() + patience;
        let mut last = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            ensure!(
                !left.is_zero(),
                "no consensus with {hearts} hearts within {patience:?} (the last said {last:?})"
            );
            self.reader.get_ref().set_read_timeout(Some(left))?;
            let (opcode, payload) = match self.frame() {
                Ok(frame) => frame,
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    bail!(
                        "no consensus with {hearts} hearts within {patience:?} (the last said \
                         {last:?})"
                    )
                }
                Err(error) => bail!("lost while waiting for {hearts} hearts: {error}"),
            };
            ensure!(opcode != 0x8, "the connection was closed while waiting for {hearts} hearts");
            if opcode != 0x1 {
                continue;
            }
            let message: serde_json::Value = serde_json::from_slice(&payload)
                .with_context(|| format!("a text frame that is not JSON: {payload:?}"))?;
            if message["type"] == "consensus" {
                last = message["hearts"].as_u64();
                if last == Some(hearts) {
                    return Ok(());
                }
            }
        }
    }

    /// How the connection ends within `patience`; `None` when it is still
    /// open then.
    fn ending_within(&mut self, patience: Duration) -> Option<Ending> {
        let deadline = Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.reader.get_ref().set_read_timeout(Some(left)).is_err() {
                return None;
            }
            match self.frame() {
                Ok((0x8, payload)) => {
                    let code = payload.get(..2).map(|code| u16::from_be_bytes([code[0], code[1]]));
                    return Some(Ending::Closed(code));
                }
                Ok(_) => continue,
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(_) => return Some(Ending::Lost),
            }
        }
    }
}

/// How a WebSocket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// A close frame, with its code.
    Closed(Option<u16>),
    /// The connection dropped without one (EOF or reset).
    Lost,
}

/// Opens a WebSocket to `path` on `addr` as a browser page of `origin`
/// would, and reads the first message.
fn ws_open(addr: SocketAddr, path: &str, origin: Option<&str>) -> Result<Upgrade> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    if let Some(origin) = origin {
        request.push_str(&format!("Origin: {origin}\r\n"));
    }
    request.push_str("\r\n");
    (&stream).write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .with_context(|| format!("read the upgrade answer to {path}"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status line in {status_line:?}"))?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    if status != 101 {
        return Ok(Upgrade::Refused(status));
    }
    let mut socket = Socket { reader };
    let (opcode, payload) = socket.frame().context("read the first WebSocket message")?;
    ensure!(opcode == 0x1, "the first frame has opcode {opcode}, not text");
    Ok(Upgrade::Open(socket, String::from_utf8_lossy(&payload).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("an address")
    }

    const TEMPLATE: &str = "\
upstream heartsync {
    least_conn;
    server heartsync-1:8080 max_fails=0;
    server heartsync-2:8080 max_fails=0;
    keepalive 16;
}
server {
    listen 8080;
    # listen 9999; is only a comment
    location / { proxy_pass http://heartsync; }
}
";

    #[test]
    fn nginx_site_fills_in_the_upstream_and_the_listen_port_only() {
        let site = nginx_site(
            TEMPLATE,
            addr("127.0.0.1:18080"),
            &[addr("127.0.0.1:1"), addr("127.0.0.1:2"), addr("127.0.0.1:3")],
        )
        .expect("fills in");
        assert_eq!(
            site,
            "\
upstream heartsync {
    least_conn;
    server 127.0.0.1:1 max_fails=0;
    server 127.0.0.1:2 max_fails=0;
    server 127.0.0.1:3 max_fails=0;
    keepalive 16;
}
server {
    listen 127.0.0.1:18080;
    # listen 9999; is only a comment
    location / { proxy_pass http://heartsync; }
}
"
        );
    }

    #[test]
    fn nginx_site_refuses_a_template_it_cannot_fill_in() {
        let instances = [addr("127.0.0.1:1")];
        let listen = addr("127.0.0.1:2");
        let no_upstream = TEMPLATE.replace("upstream heartsync", "upstream other");
        assert!(nginx_site(&no_upstream, listen, &instances).is_err());
        let two_listens = TEMPLATE.replace("# listen 9999;", "listen 9999;");
        assert!(nginx_site(&two_listens, listen, &instances).is_err());
        assert!(nginx_site(TEMPLATE, listen, &[]).is_err());
    }

    #[test]
    fn the_real_nginx_config_can_be_filled_in() {
        let template = fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/nginx/heartsync.conf"
        ))
        .expect("read deploy/nginx/heartsync.conf");
        let site =
            nginx_site(&template, addr("127.0.0.1:9"), &[addr("127.0.0.1:7")]).expect("fills in");
        assert!(site.contains("server 127.0.0.1:7 "));
        assert!(!site.contains("heartsync-1:8080"));
    }

    #[test]
    fn options_parse_and_refuse_nonsense() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            Options::parse(&args(&["--instances", "2", "--check", "--port=9000"])).expect("parses"),
            Options { instances: 2, port: Some(9000), check: true, debug: false }
        );
        assert_eq!(Options::parse(&[]).expect("parses").instances, 3);
        for bad in [&["--instances", "0"][..], &["--instances"], &["--port", "x"], &["--fast"]] {
            assert!(Options::parse(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reads_a_prometheus_sample_value() {
        let json = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.5,"3"]}]}}"#;
        assert_eq!(first_sample_value(json), Some(3.0));
        assert_eq!(first_sample_value(r#"{"data":{"result":[]}}"#), None);
    }

    #[test]
    fn finds_the_hashed_script_in_the_page() {
        let page = r#"<link rel="modulepreload" href="/frontend-4a1b2c3d4e5f6a7b.js" crossorigin=anonymous>"#;
        assert_eq!(hashed_asset(page).as_deref(), Some("/frontend-4a1b2c3d4e5f6a7b.js"));
        assert_eq!(hashed_asset("<p>no script</p>"), None);
    }
}
