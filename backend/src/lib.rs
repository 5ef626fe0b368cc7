//! The heartsync server: rooms of hearts that beat as one.
//!
//! Browsers connect over WebSocket to `/ws/{room}` and report their heart's
//! phase; each room's task folds the reports into a consensus (circular mean
//! and coherence) every tick and publishes it; every connection of the room
//! writes the newest consensus to its socket.
//!
//! # Layout
//! - [`config`]: flags, environment variables and defaults.
//! - [`server`]: the accept loop, header timeout and graceful shutdown.
//! - [`http`]: routes: the page, health checks, the upgrade and its checks.
//! - [`socket`]: one connection: its handler (state and a short `select!`),
//!   one function per message type, and the wire with its write deadline.
//! - [`room`]: one room's task; [`rooms`]: the registry of open rooms.
//! - [`fanout`]: each room's shard writers, which put the consensus frame
//!   on every socket of the room, and each socket's outbox.
//! - [`limits`]: connection caps, accept rate, message rate, violations.
//! - [`love`]: love taps, counted once and acknowledged when durable.
//! - [`cluster`]: several instances sharing rooms through Redis.
//! - [`metrics`]: what `/metrics` shows operators.
//! - [`clock`]: the server clock every protocol time is on.
//! - [`api`]: the read API (rooms, Server-Sent Events, history, OpenAPI).
//! - [`auth`]: join tokens for private rooms.
//!
//! `main.rs` only parses flags, sets up logging, binds and calls [`run`].

pub mod affinity;
pub mod api;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod fanout;
pub mod http;
pub mod limits;
pub mod love;
pub mod memory;
pub mod metrics;
pub mod room;
pub mod rooms;
pub mod server;
pub mod socket;

pub use config::{Config, LogFormat};
pub use server::run;

use anyhow::Context;
use clock::Clock;
use cluster::Cluster;
use limits::ConnectionLimits;
use love::LoveStore;
use room::RoomTiming;
use rooms::Rooms;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every handler and connection shares; cloning is cheap.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// The contents of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    /// The configuration the server started with.
    pub config: Config,
    /// Open rooms.
    pub rooms: Rooms,
    /// Connection cap and accept rate.
    pub limits: ConnectionLimits,
    /// Durable love totals.
    pub love: LoveStore,
    /// Cancelled when the server starts shutting down: every connection
    /// closes (spread over `--drain`).
    pub shutdown: CancellationToken,
    /// Set while draining: `/readyz` says 503 and upgrades are refused.
    pub draining: AtomicBool,
    /// Every connection and room task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Every WebSocket's pings and deadlines, swept per shard rather than
    /// timed per connection.
    pub keepalive: socket::Keepalive,
    /// The id of the next connection.
    pub next_conn: AtomicU64,
    /// The link to the other instances, with `--redis-url`.
    pub cluster: Option<Cluster>,
    /// The clock protocol times are read from (the system clock, except in
    /// paused-time tests).
    pub clock: Clock,
    /// Signs and checks join tokens; `None` unless `--private-rooms`.
    pub tokens: Option<auth::Tokens>,
    /// Each room's coherence over the last hour.
    pub history: api::history::SharedHistory,
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// A fresh server state for `config`, keeping love in `love`.
    pub fn new(config: Config, love: LoveStore) -> Self {
        Self::build(config, love, Clock::system(), None)
    }

    /// A fresh server state whose protocol times come from `clock`.
    pub fn with_clock(config: Config, love: LoveStore, clock: Clock) -> Self {
        Self::build(config, love, clock, None)
    }

    /// A fresh server state whose rooms span every instance on `cluster`'s
    /// Redis (or this one alone, with `None`).
    pub fn clustered(config: Config, love: LoveStore, cluster: Option<Cluster>) -> Self {
        Self::build(config, love, Clock::system(), cluster)
    }

    fn build(config: Config, love: LoveStore, clock: Clock, cluster: Option<Cluster>) -> Self {
        let tracker = TaskTracker::new();
        let timing = RoomTiming { tick: config.tick, vote_ttl: config.vote_ttl };
        let history = api::history::store(&config, cluster.as_ref());
        let shutdown = CancellationToken::new();
        AppState(Arc::new(Shared {
            keepalive: socket::Keepalive::new(
                socket::KeepaliveSettings::of(&config),
                shutdown.clone(),
            ),
            rooms: Rooms::new(timing, tracker.clone(), love.clone(), clock, cluster.clone()),
            cluster,
            love,
            limits: ConnectionLimits::new(
                config.max_connections,
                config.max_accept_rate,
                config.max_connections_per_ip,
            ),
            shutdown,
            draining: AtomicBool::new(false),
            tracker,
            next_conn: AtomicU64::new(1),
            clock,
            tokens: config
                .private_rooms
                .then_some(config.token_secret.as_ref())
                .flatten()
                .map(auth::Tokens::new),
            history,
            config,
        }))
    }
}

/// The router serving the page, health checks and WebSockets for `state`.
pub fn app(state: AppState) -> axum::Router {
    http::router(state)
}

/// The love store and, with `--redis-url`, the link to the other
/// instances. Without Redis, love is in SQLite in `--data-dir`; with it,
/// Redis must answer within [`cluster::CONNECT_TIMEOUT`] and make every
/// write durable (or `--redis-unsafe-love`), else the server refuses to
/// start with a message saying why.
pub async fn open_storage(config: &Config) -> anyhow::Result<(LoveStore, Option<Cluster>)> {
    let Some(url) = config.redis_url.clone() else {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create the data dir {}", config.data_dir.display()))?;
        let store = love::sqlite::SqliteLove::open(&config.data_dir).with_context(|| {
            format!("cannot open the love store in {}", config.data_dir.display())
        })?;
        return Ok((start_love(store, config), None));
    };
    let id = config.instance_id.clone().unwrap_or_else(cluster::default_instance_id);
    let cluster = Cluster::connect(&url, id).await?;
    let unsafe_love = config.redis_unsafe_love;
    let store = tokio::task::spawn_blocking(move || {
        love::redis::RedisLove::open(&url, cluster::CONNECT_TIMEOUT, unsafe_love)
    })
    .await
    .context("the Redis love store's check panicked")??;
    Ok((start_love(store, config), Some(cluster)))
}

/// The love store over `backend`, with the quota of new ledgers per address
/// and the fold of idle ones that `config` sets.
fn start_love(backend: impl love::LoveBackend, config: &Config) -> LoveStore {
    let quota =
        love::bounds::LedgerQuota::new(config.love_ledgers_per_ip, config.love_ledger_window);
    let store = LoveStore::with_quota(backend, quota);
    store.fold_idle(config.love_retention, clock::now_ms);
    store
}
