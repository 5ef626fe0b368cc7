//! `GET /api/rooms/{room}/events`: a room's consensus as Server-Sent Events,
//! for dashboards and overlays that watch without joining.
//!
//! A stream is a [`Watcher`] of the room: it reads the room's `watch`
//! channel, so it sees only the newest consensus and never slows the room
//! (a slow reader skips ticks, like a socket). Each event is the room's
//! protocol v1 consensus text, serialized once per tick for every reader;
//! its `id:` is the `seq`.
//!
//! A stream counts against `--max-connections` like a WebSocket, and on
//! shutdown ends at a random point of `--drain` like one. It ends too when
//! the room closes or the token it was opened with expires.

use super::rooms::ConsensusMessage;
use super::{ApiError, Refused};
use crate::AppState;
use crate::auth::ErrorBody;
use crate::http::Handshake;
use crate::limits::{ConnectionSlot, Refusal as LimitRefusal};
use crate::metrics::metrics;
use crate::rooms::Watcher;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use utoipa::IntoParams;

/// How long a client waits before reconnecting (the `retry:` hint).
pub const RETRY: Duration = Duration::from_secs(2);

/// The fastest `?hz=` (faster than the tick is the tick anyway).
pub const MAX_HZ: u32 = 100;

/// The query of the events endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// At most this many events a second (each the newest consensus);
    /// without it, one per tick.
    #[param(minimum = 1, maximum = 100)]
    pub hz: Option<u32>,
    /// The join token of a private room, for `EventSource`, which cannot
    /// set headers (prefer `Authorization: Bearer`).
    pub token: Option<String>,
}

/// The room's consensus, one event per tick.
#[utoipa::path(
    get,
    path = "/api/rooms/{room}/events",
    tag = "rooms",
    params(
        ("room" = String, Path, description = "The room's name", pattern = r"^[A-Za-z0-9_-]{1,64}$"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, description = "The last `id:` seen; the stream resumes at the newest consensus, skipping it if it is that one"),
        EventsQuery,
    ),
    security((), ("join_token" = [])),
    responses(
        (status = 200, description = "`text/event-stream`: `event: consensus`, `id:` the seq, `data:` the protocol v1 consensus JSON; a comment every 15 s when idle", content_type = "text/event-stream", body = ConsensusMessage),
        (status = 400, description = "Not a room name, or hz outside 1-100", body = ErrorBody),
        (status = 401, description = "A private room, and no token", body = ErrorBody),
        (status = 403, description = "A private room, and a bad, expired or other room's token", body = ErrorBody),
        (status = 404, description = "No one is in the room", body = ErrorBody),
        (status = 429, description = "Too many connections from this address", body = ErrorBody),
        (status = 503, description = "Draining, or at the connection limit (`Retry-After`)", body = ErrorBody),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    Path(room): Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
    handshake: Handshake,
) -> Result<Response, Refused> {
    let headers = handshake.headers();
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (room, admitted) = super::enter(&state, &room, headers, query.token.as_deref())
        .inspect_err(|_| metrics().sse_refused("token"))?;
    let min_gap = match query.hz {
        None => Duration::ZERO,
        Some(hz @ 1..=MAX_HZ) => Duration::from_secs(1) / hz,
        Some(_) => return Err(ApiError::bad_request(format!("hz is 1 to {MAX_HZ}")).into()),
    };
    if state.draining.load(Ordering::Relaxed) {
        metrics().sse_refused("draining");
        let message = "the server is shutting down";
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "draining", message).into());
    }
    let watcher = match state.rooms.watch(&room) {
        Some(watcher) => watcher,
        None => {
            metrics().sse_refused("not_found");
            return Err(ApiError::no_room(&room).into());
        }
    };
    let client = handshake.client(&state.config.trusted_proxies);
    let slot = state.limits.admit(client).map_err(|refusal| {
        let (status, reason, message) = match refusal {
            LimitRefusal::Full => (
                StatusCode::SERVICE_UNAVAILABLE,
                "full",
                "the server is at its connection limit; retry later",
            ),
            LimitRefusal::TooFast => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too_fast",
                "too many new connections; retry in a second",
            ),
            LimitRefusal::PerAddress => (
                StatusCode::TOO_MANY_REQUESTS,
                "per_ip",
                "too many connections from your address; close one first",
            ),
        };
        metrics().sse_refused(reason);
        ApiError::new(status, reason, message)
    })?;
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    // The token's expiry as an instant on the server's clock.
    let expires = admitted.map(|a| {
        let left = (a.expires_ms - state.clock.now_ms()).max(0.0);
        state.clock.now() + Duration::from_secs_f64(left / 1000.0)
    });
    let stream = Stream {
        watcher,
        _slot: slot,
        _tracked: state.tracker.token(),
        shutdown: state.shutdown.clone(),
        drain: state.config.drain,
        close_at: None,
        expires,
        min_gap,
        next_allowed: Instant::now(),
        first: true,
        retry_due: true,
        last_seen,
        reason: "client",
    };
    metrics().sse_opened.increment(1);
    metrics().sse_open.increment(1.0);
    let events = futures_util::stream::unfold(stream, |mut stream| async move {
        let event = stream.next_event().await?;
        Some((Ok::<_, Infallible>(event), stream))
    });
    let keep_alive = KeepAlive::new().interval(state.config.sse_keep_alive).text("keep-alive");
    let mut response = Sse::new(events).keep_alive(keep_alive).into_response();
    // nginx buffers responses unless told not to; an event stream must not be.
    response.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// What a stream woke for.
enum Wake {
    /// The server started draining.
    Drain,
    /// The stream ends, for this reason.
    Close(&'static str),
    /// The room has a newer consensus (and the gap has passed).
    Changed,
}

/// One SSE stream's state: what it watches, what it holds, when it ends.
struct Stream {
    /// The room's newest consensus; keeps the room open.
    watcher: Watcher,
    /// Its place under `--max-connections`, for its whole life.
    _slot: ConnectionSlot,
    /// So shutdown waits for the stream to end.
    _tracked: TaskTrackerToken,
    /// Cancelled when the server starts to drain.
    shutdown: CancellationToken,
    /// Over how long draining streams are spread.
    drain: Duration,
    /// When this stream ends for the drain; `None` until draining.
    close_at: Option<Instant>,
    /// When the join token it was opened with expires (private rooms).
    expires: Option<Instant>,
    /// The least time between two events (`?hz=`).
    min_gap: Duration,
    /// When the next event may go.
    next_allowed: Instant,
    /// Whether the first event (the consensus as of now) is still to come.
    first: bool,
    /// Whether the `retry:` hint is still to be sent.
    retry_due: bool,
    /// The `Last-Event-ID` the client reconnected with.
    last_seen: Option<u64>,
    /// Why the stream ended, for the metric when it is dropped.
    reason: &'static str,
}

impl Stream {
    /// The next event, or `None` when the stream ends.
    async fn next_event(&mut self) -> Option<Event> {
        if self.first {
            self.first = false;
            let newest = self.watcher.consensus.borrow_and_update().clone();
            // A client resuming with the newest already seen waits for the
            // next; so does every client of a room not yet a tick old (its
            // seq-0 placeholder counts no one).
            let seq = newest.consensus.seq;
            if seq > 0 && Some(seq) != self.last_seen {
                return Some(self.event(&newest));
            }
        }
        loop {
            match self.wake().await {
                Wake::Drain => {
                    let spread = self.drain.mul_f64(rand::rng().random::<f64>());
                    self.close_at = Some(Instant::now() + spread);
                }
                Wake::Close(reason) => {
                    self.reason = reason;
                    return None;
                }
                Wake::Changed => {
                    let newest = self.watcher.consensus.borrow_and_update().clone();
                    return Some(self.event(&newest));
                }
            }
        }
    }

    /// Waits for whatever happens first.
    async fn wake(&mut self) -> Wake {
        let shutdown = self.shutdown.cancelled();
        let draining = self.close_at.is_none();
        let close_at = self.close_at;
        let expires = self.expires;
        let next_allowed = self.next_allowed;
        let consensus = &mut self.watcher.consensus;
        tokio::select! {
            biased;
            () = shutdown, if draining => Wake::Drain,
            () = sleep_until(close_at.unwrap_or_else(Instant::now)), if close_at.is_some() => {
                Wake::Close("shutdown")
            }
            () = sleep_until(expires.unwrap_or_else(Instant::now)), if expires.is_some() => {
                Wake::Close("token_expired")
            }
            changed = async {
                // Thinning: wait out the gap, then take the newest.
                sleep_until(next_allowed).await;
                consensus.changed().await
            } => match changed {
                Ok(()) => Wake::Changed,
                Err(_) => Wake::Close("room_gone"),
            },
        }
    }

    fn event(&mut self, frame: &crate::room::ConsensusFrame) -> Event {
        self.next_allowed = Instant::now() + self.min_gap;
        metrics().sse_events.increment(1);
        let event = Event::default()
            .event("consensus")
            .id(frame.consensus.seq.to_string())
            .data(frame.text.as_str());
        // The reconnect hint rides on the first event.
        if std::mem::take(&mut self.retry_due) { event.retry(RETRY) } else { event }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        metrics().sse_open.decrement(1.0);
        metrics().sse_closed(self.reason);
        tracing::debug!(room = %self.watcher.name, reason = self.reason, "event stream closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::limits::ConnectionLimits;
    use crate::love::{LoveStore, memory::MemoryLove};
    use crate::room::RoomTiming;
    use crate::rooms::{Membership, Rooms};
    use shared::RoomName;
    use tokio_util::task::TaskTracker;

    const TICK: Duration = Duration::from_millis(250);

    /// A room with one member, and a stream watching it.
    async fn watched(
        min_gap: Duration,
        expires: Option<Duration>,
    ) -> (Stream, Membership, CancellationToken) {
        let timing = RoomTiming { tick: TICK, vote_ttl: Duration::from_secs(5) };
        let love = LoveStore::start(MemoryLove::default());
        let rooms = Rooms::new(timing, TaskTracker::new(), love, Clock::following_tokio(0.0), None);
        let name = RoomName::parse("kitchen").expect("a room name");
        let (member, _) = rooms.join(name.clone(), 1).await.expect("joined");
        let watcher = rooms.watch(&name).expect("someone is in the room");
        let shutdown = CancellationToken::new();
        let stream = Stream {
            watcher,
            _slot: ConnectionLimits::new(10, 10, 10)
                .admit(std::net::Ipv4Addr::LOCALHOST.into())
                .expect("a slot"),
            _tracked: TaskTracker::new().token(),
            shutdown: shutdown.clone(),
            drain: Duration::from_secs(2),
            close_at: None,
            expires: expires.map(|after| Instant::now() + after),
            min_gap,
            next_allowed: Instant::now(),
            first: true,
            retry_due: true,
            last_seen: None,
            reason: "client",
        };
        (stream, member, shutdown)
    }

    fn seq(stream: &Stream) -> u64 {
        stream.watcher.consensus.borrow().consensus.seq
    }

    #[tokio::test(start_paused = true)]
    async fn every_tick_is_an_event_and_the_first_waits_for_a_real_tick() {
        let (mut stream, _member, _) = watched(Duration::ZERO, None).await;
        let start = Instant::now();
        assert!(stream.next_event().await.is_some());
        assert_eq!((seq(&stream), start.elapsed()), (1, TICK), "seq 0 is no tick");
        for expected in 2..6 {
            assert!(stream.next_event().await.is_some());
            assert_eq!(seq(&stream), expected);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn thinning_sends_the_newest_at_most_once_a_gap() {
        // The gap ends between two ticks (3.6 of them).
        let (mut stream, _member, _) = watched(Duration::from_millis(900), None).await;
        assert!(stream.next_event().await.is_some());
        let (first, at) = (seq(&stream), Instant::now());
        assert!(stream.next_event().await.is_some());
        assert_eq!(Instant::now() - at, Duration::from_millis(900), "sent as the gap ends");
        assert_eq!(seq(&stream), first + 3, "the newest; the ticks in between are skipped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_ends_the_stream_within_the_drain() {
        let (mut stream, _member, shutdown) = watched(Duration::ZERO, None).await;
        assert!(stream.next_event().await.is_some());
        shutdown.cancel();
        let start = Instant::now();
        while stream.next_event().await.is_some() {}
        assert!(start.elapsed() <= Duration::from_secs(2), "{:?}", start.elapsed());
        assert_eq!(stream.reason, "shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn the_stream_ends_when_its_token_expires() {
        let (mut stream, _member, _) = watched(Duration::ZERO, Some(Duration::from_secs(3))).await;
        let start = Instant::now();
        while stream.next_event().await.is_some() {}
        assert_eq!((start.elapsed(), stream.reason), (Duration::from_secs(3), "token_expired"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_resume_from_the_newest_waits_for_the_next() {
        let (mut stream, _member, _) = watched(Duration::ZERO, None).await;
        tokio::time::sleep(TICK * 3).await;
        stream.last_seen = Some(seq(&stream));
        let seen = seq(&stream);
        assert!(stream.next_event().await.is_some());
        assert_eq!(seq(&stream), seen + 1);
    }
}
