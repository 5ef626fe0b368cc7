//! One client's conversation with its room, without the socket: what to send
//! when a connection opens, what each server message changes, what is due
//! and when, when a connection counts as lost and how long to wait before
//! the next, and what the client shows. The page and the terminal are thin
//! shells that feed socket events, taps and the time in, send what comes
//! out, and sleep until [`Session::next_wake`]. Pure, so the protocol side
//! of every client is tested natively.
//!
//! All times are the client's local monotonic clock in milliseconds.

use super::heart::Heart;
use super::link::{self, Attempt, Link, Stuck};
use super::love::Love;
use super::sync::{Clock, SAMPLE_MS};
use crate::backoff::Backoff;
use crate::{ClientMessage, ProtocolError, ServerMessage};

/// How often to report before the welcome says otherwise, in milliseconds.
pub const DEFAULT_REPORT_MS: u64 = 1_000;

/// Bounds on the welcome's `report_ms`, so a confused server can neither
/// make a client flood it nor let it fall silent: a client reporting more
/// rarely than the server's default vote lifetime (5 s) would drop out of
/// its room's vote.
pub const REPORT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=5_000;

/// What the room's last consensus on this connection said.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RoomNumbers {
    /// Open connections in the room.
    pub hearts: u32,
    /// How in step the room is, in `[0, 1]`.
    pub coherence: f64,
    /// The room's beats per minute.
    pub bpm: f64,
}

/// What a client shows about its room and its connection.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomView {
    /// Where the connection stands.
    pub link: Link,
    /// The room's numbers from the newest consensus on the current
    /// connection; `None` while there is none, so stale numbers are not
    /// shown as live.
    pub room: Option<RoomNumbers>,
    /// The room's love total as the server last told it (kept across
    /// reconnects: it is durable on the server).
    pub love_total: Option<u64>,
    /// The love total to show: the server's plus this client's taps it
    /// cannot include yet, so a tap counts up at once even when offline.
    pub love_shown: u64,
    /// This client's taps the server has not acknowledged yet.
    pub love_pending: u64,
}

/// What a server message asks of the client, beyond the state it changed.
#[derive(Debug, Default, PartialEq)]
pub struct Reaction {
    /// Messages to send back, in order.
    pub send: Vec<ClientMessage>,
    /// The server acknowledged love, or started a new ledger for it: a
    /// client that persists its love saves [`Love::taps`], [`Love::acked`]
    /// and [`Love::epoch`] now.
    pub acked_changed: bool,
    /// The server refused something; the client logs or shows it.
    pub error: Option<ProtocolError>,
}

/// What coming back into view asks of the client.
#[derive(Debug, PartialEq)]
pub enum Visible {
    /// It was waiting to reconnect: connect now.
    Reconnect,
    /// It is connected, but its clock may have stood still while the tab
    /// slept: send this request, the first of a new burst of clock samples.
    Resync(ClientMessage),
    /// Nothing to do.
    Nothing,
}

/// Everything a client knows about its room and its own heart.
#[derive(Debug, Clone)]
pub struct Session {
    /// The client's heart, pulled toward the room's beat.
    heart: Heart,
    /// The offset to the server's clock; kept across reconnects, since the
    /// server's clock did not change (a new sync refines it).
    clock: Clock,
    /// This client's love taps in this room.
    love: Love,
    /// Where the connection stands, for the status line.
    link: Link,
    /// How long to wait before the next attempt.
    backoff: Backoff,
    /// The current connection's timing; `None` while waiting to retry.
    attempt: Option<Attempt>,
    /// Whether the current connection has been welcomed.
    welcomed: bool,
    /// How often to report, from the welcome.
    report_ms: u64,
    /// When the next phase report is due (once welcomed and synced).
    next_report: f64,
    /// When the next gentle clock sample is due (while the socket is open
    /// and no burst is under way).
    next_sample: f64,
    /// What the newest consensus on this connection said.
    room: Option<RoomNumbers>,
    /// Taps to burst out of the heart that the client has not drawn yet:
    /// this client's own, and other people's.
    bursts: (u64, u64),
}

impl Session {
    /// A client with its new `heart` and the love state it remembers.
    pub fn new(heart: Heart, love: Love) -> Self {
        Self {
            heart,
            clock: Clock::default(),
            love,
            link: Link::Connecting,
            backoff: Backoff::default(),
            attempt: None,
            welcomed: false,
            report_ms: DEFAULT_REPORT_MS,
            next_report: f64::INFINITY,
            next_sample: f64::INFINITY,
            room: None,
            bursts: (0, 0),
        }
    }

    /// The heart.
    pub fn heart(&self) -> &Heart {
        &self.heart
    }

    /// The clock sync.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// This client's love in the room.
    pub fn love(&self) -> &Love {
        &self.love
    }

    /// Where the connection stands.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// How often the heart's phase is reported, in milliseconds.
    pub fn report_ms(&self) -> u64 {
        self.report_ms
    }

    /// Whether the current connection has been welcomed.
    pub fn welcomed(&self) -> bool {
        self.welcomed
    }

    /// A socket is being opened at local time `now`.
    pub fn connecting(&mut self, now: f64) {
        self.attempt = Some(Attempt::start(now));
        self.welcomed = false;
        self.link = Link::Connecting;
    }

    /// The socket opened at `now`: start a burst of clock samples;
    /// unacknowledged love goes out again (from [`Self::poll`]).
    pub fn opened(&mut self, now: f64) -> Vec<ClientMessage> {
        self.attempt.get_or_insert_with(|| Attempt::start(now)).opened(now);
        self.welcomed = false;
        self.love.connected();
        vec![self.resync(now)]
    }

    /// Starts a burst of clock samples at local time `now`: the first
    /// request (the others follow each answer; then [`Self::poll`] samples
    /// gently, every [`SAMPLE_MS`], for as long as the socket is open).
    pub fn resync(&mut self, now: f64) -> ClientMessage {
        self.clock.restart(now);
        self.next_sample = now + SAMPLE_MS;
        ClientMessage::Time { t0: now }
    }

    /// Takes one text frame from the server, received at local time `now`.
    /// A frame that is not a server message changes nothing but the proof
    /// that the server is alive, and is returned as an error for the log.
    pub fn receive_text(&mut self, text: &str, now: f64) -> Result<Reaction, serde_json::Error> {
        self.heard(now);
        let message = ServerMessage::parse(text)?;
        Ok(self.receive(message, now))
    }

    /// The server was heard from at `now` (any frame at all).
    pub fn heard(&mut self, now: f64) {
        if let Some(attempt) = &mut self.attempt {
            attempt.heard(now);
        }
    }

    /// Takes one message from the server, received at local time `now`.
    pub fn receive(&mut self, message: ServerMessage, now: f64) -> Reaction {
        self.heard(now);
        let mut reaction = Reaction::default();
        match message {
            ServerMessage::Welcome(welcome) => {
                self.welcomed = true;
                self.link = Link::Connected;
                self.report_ms =
                    welcome.report_ms.clamp(*REPORT_MS_RANGE.start(), *REPORT_MS_RANGE.end());
                // Report as soon as the clock is known: the room hears about
                // this heart sooner than a whole period later.
                self.next_report = now;
            }
            ServerMessage::Consensus(consensus) => {
                self.heart.follow(consensus);
                self.room = Some(RoomNumbers {
                    hearts: consensus.hearts,
                    coherence: consensus.coherence.clamp(0.0, 1.0),
                    bpm: consensus.bpm,
                });
                let others = self.love.observe_total(consensus.love);
                self.bursts.1 = self.bursts.1.saturating_add(others);
            }
            ServerMessage::Time(reply) => {
                let used = self.clock.record(reply.t0, reply.server_time, now);
                // A burst sends one request at a time: each sample measures
                // a quiet round trip instead of queueing behind its
                // siblings. (An answer from before the burst started
                // starts no second chain.)
                if used && self.clock.wants_sample() {
                    reaction.send.push(ClientMessage::Time { t0: now });
                }
            }
            ServerMessage::LoveAck(ack) => {
                let before = (self.love.acked(), self.love.epoch());
                let others = self.love.acknowledged(ack);
                self.bursts.1 = self.bursts.1.saturating_add(others);
                reaction.acked_changed = (self.love.acked(), self.love.epoch()) != before;
            }
            ServerMessage::LoveFolded(folded) => {
                let before = (self.love.taps(), self.love.acked(), self.love.epoch());
                self.love.folded(folded);
                reaction.acked_changed =
                    (self.love.taps(), self.love.acked(), self.love.epoch()) != before;
            }
            ServerMessage::Error(error) => reaction.error = Some(error),
        }
        reaction
    }

    /// What to send at local time `now`: a clock sync, a phase report and
    /// love, each when it is due. An error says the connection is stuck and
    /// must be given up (then call [`Self::closed`]).
    pub fn poll(&mut self, now: f64) -> Result<Vec<ClientMessage>, Stuck> {
        let Some(attempt) = self.attempt else {
            return Ok(Vec::new());
        };
        if let Some(stuck) = attempt.stuck(now) {
            return Err(stuck);
        }
        let mut send = Vec::new();
        if !attempt.is_open() {
            return Ok(send);
        }
        if !self.clock.wants_sample() && now >= self.next_sample {
            send.push(ClientMessage::Time { t0: now });
            // On the schedule, so that late wake-ups do not slow it down.
            self.next_sample = (self.next_sample + SAMPLE_MS).max(now + SAMPLE_MS / 2.0);
        }
        if self.welcomed
            && now >= self.next_report
            && let Some(report) = self.report(now)
        {
            send.push(report);
            // On the schedule, so that late wake-ups do not slow it down.
            let period = self.report_ms as f64;
            self.next_report = (self.next_report + period).max(now + period / 2.0);
        }
        // Love waits for the clock too: a new ledger is named from it, so a
        // count resent after the ledger was folded is always recognised.
        if let Some(server_now) = self.clock.server_time(now)
            && let Some(seq) = self.love.due(now)
        {
            let epoch = self.love.epoch_to_send(Some(server_now));
            send.push(ClientMessage::Love { seq, epoch });
        }
        Ok(send)
    }

    /// The local time at which [`Self::poll`] next has something to do (it
    /// may be past); infinite while waiting to retry, since the wait is the
    /// shell's timer.
    pub fn next_wake(&self) -> f64 {
        let Some(attempt) = self.attempt else {
            return f64::INFINITY;
        };
        let mut wake = attempt.deadline();
        if attempt.is_open() {
            if !self.clock.wants_sample() {
                wake = wake.min(self.next_sample);
            }
            if self.welcomed && self.clock.synced() {
                wake = wake.min(self.next_report);
            }
            if let Some(love) = self.love.next_due().filter(|_| self.clock.synced()) {
                wake = wake.min(love);
            }
        }
        wake
    }

    /// The phase report for local time `now`, once the clock is synced: the
    /// heart is stepped to `now` first, so it follows the room even when
    /// the client draws nothing.
    fn report(&mut self, now: f64) -> Option<ClientMessage> {
        let server_now = self.clock.server_time(now)?;
        self.heart.step(now, Some(server_now));
        Some(ClientMessage::Phase(self.heart.report(now, server_now)))
    }

    /// The connection ended at `now` (`reason`, in a few words for a person):
    /// forget the room's live numbers and wait before the next attempt.
    /// `random` is in `[0, 1)`, `hidden` says nobody is looking (see
    /// [`link::next_delay_ms`]). Returns when to try again (local ms).
    pub fn closed(&mut self, now: f64, reason: &str, random: f64, hidden: bool) -> f64 {
        let up_ms = self.attempt.map_or(0.0, |attempt| attempt.up_ms(now));
        self.backoff.connection_ended(up_ms, self.welcomed);
        self.attempt = None;
        self.welcomed = false;
        self.room = None;
        self.next_report = f64::INFINITY;
        self.next_sample = f64::INFINITY;
        let until = now + link::next_delay_ms(&mut self.backoff, random, hidden);
        self.link = Link::Waiting { until, reason: reason.to_owned() };
        until
    }

    /// The network is back: whether to reconnect now (when waiting), with
    /// the backoff started over.
    pub fn online(&mut self) -> bool {
        if self.link.is_waiting() {
            self.backoff.reset();
            return true;
        }
        false
    }

    /// The client came back into view at `now`.
    pub fn visible(&mut self, now: f64) -> Visible {
        match self.link {
            Link::Waiting { .. } => Visible::Reconnect,
            Link::Connected => Visible::Resync(self.resync(now)),
            Link::Connecting => Visible::Nothing,
        }
    }

    /// One tap of love: counts it and queues a burst; [`Self::poll`] sends
    /// it. Returns the new count (for a client that persists it).
    pub fn tap(&mut self) -> u64 {
        self.bursts.0 = self.bursts.0.saturating_add(1);
        self.love.tap()
    }

    /// Steps the heart to local time `now`, pulled toward the room's beat
    /// once the clock is synced, and returns its phase.
    pub fn step(&mut self, now: f64) -> f64 {
        self.heart.step(now, self.clock.server_time(now))
    }

    /// The server's clock at local time `now`; before the first clock sync
    /// the local clock, close to Unix time, is the best guess.
    pub fn server_time(&self, now: f64) -> f64 {
        self.clock.server_time(now).unwrap_or(now)
    }

    /// Taps to draw as bursts since the last call: `(mine, others)`.
    pub fn take_bursts(&mut self) -> (u64, u64) {
        std::mem::take(&mut self.bursts)
    }

    /// What the client shows about the room.
    pub fn view(&self) -> RoomView {
        RoomView {
            link: self.link.clone(),
            room: self.room,
            love_total: self.love.total(),
            love_shown: self.love.shown_total(),
            love_pending: self.love.pending(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::heart::RESTING_BPM;
    use crate::client::link::{CONNECT_TIMEOUT_MS, SILENCE_MS};
    use crate::client::love::{BATCH_MS, FIRST_RESEND_MS};
    use crate::client::sync::CLOCK_SAMPLES;
    use crate::{Consensus, ErrorCode, LoveAck, LoveFolded, TimeReply, Welcome};
    use proptest::prelude::*;

    fn session() -> Session {
        Session::new(Heart::new(0.3, RESTING_BPM, 0.0), Love::new(0, 0))
    }

    fn welcome() -> ServerMessage {
        ServerMessage::Welcome(Welcome {
            protocol: 1,
            client_id: crate::ClientId::parse("abcdefgh12345678").expect("a valid client id"),
            room: crate::RoomName::main(),
            server_time: 1e12,
            tick_ms: 250,
            report_ms: 500,
        })
    }

    fn consensus(love: u64) -> ServerMessage {
        ServerMessage::Consensus(Consensus {
            seq: 1,
            at: 1e12,
            phase: 0.5,
            bpm: 72.0,
            coherence: 0.75,
            hearts: 3,
            voters: 2,
            love,
        })
    }

    /// A session whose socket opened at 0 and that was welcomed.
    fn open_session() -> Session {
        let mut s = session();
        s.connecting(0.0);
        s.opened(0.0);
        s.receive(welcome(), 0.0);
        s
    }

    #[test]
    fn connecting_syncs_the_clock_then_reports() {
        let mut s = session();
        s.connecting(90.0);
        let first = s.opened(100.0);
        assert_eq!(first, vec![ClientMessage::Time { t0: 100.0 }]);
        assert!(s.receive(welcome(), 110.0).send.is_empty());
        assert!(s.welcomed() && s.link().is_connected());
        assert_eq!(s.report_ms(), 500);
        assert_eq!(s.poll(120.0), Ok(vec![]), "no report before the clock is known");
        // Each answer asks for the next sample until there are enough.
        let mut t0 = 100.0;
        let mut requests = 1;
        loop {
            let t1 = t0 + 20.0;
            let reply = ServerMessage::Time(TimeReply { t0, server_time: 1e12 + t0 + 10.0 });
            let sent = s.receive(reply, t1).send;
            match sent.as_slice() {
                [ClientMessage::Time { t0: next }] => {
                    t0 = *next;
                    requests += 1;
                }
                [] => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(requests, CLOCK_SAMPLES);
        assert_eq!(s.clock().offset_at(t0), Some(1e12));
        // The first report is due at once, the next a period later.
        assert!(s.next_wake() <= t0 + 20.0);
        match s.poll(1000.0).as_deref() {
            Ok([ClientMessage::Phase(report)]) => {
                assert_eq!(report.at, 1e12 + 1000.0);
                assert_eq!(report.bpm, RESTING_BPM);
            }
            other => panic!("expected a phase report, got {other:?}"),
        }
        assert_eq!(s.poll(1001.0), Ok(vec![]));
        // The gentle clock sample (due a second after the burst began) goes
        // with the next report.
        assert!(matches!(
            s.poll(1500.0).as_deref(),
            Ok([ClientMessage::Time { t0: 1500.0 }, ClientMessage::Phase(_)])
        ));
    }

    #[test]
    fn consensus_updates_the_view() {
        let mut s = session();
        assert_eq!(s.view().room, None);
        s.receive(consensus(10), 0.0);
        let view = s.view();
        assert_eq!(view.room, Some(RoomNumbers { hearts: 3, coherence: 0.75, bpm: 72.0 }));
        assert_eq!((view.love_total, view.love_shown), (Some(10), 10));
        assert_eq!(s.take_bursts(), (0, 0), "love from before the client joined");
        s.receive(consensus(14), 0.0);
        assert_eq!(s.take_bursts(), (0, 4));
        assert_eq!(s.take_bursts(), (0, 0));
    }

    /// One clock sample at local `now`: the server's clock is local + 1e12.
    fn sync(s: &mut Session, now: f64) {
        s.receive(ServerMessage::Time(TimeReply { t0: now, server_time: 1e12 + now }), now);
    }

    /// The love messages among `sent`.
    fn loves(sent: Result<Vec<ClientMessage>, Stuck>) -> Vec<ClientMessage> {
        let sent = sent.expect("not stuck");
        sent.into_iter().filter(|m| matches!(m, ClientMessage::Love { .. })).collect()
    }

    #[test]
    fn taps_are_sent_acknowledged_and_burst_once() {
        let mut s = open_session();
        sync(&mut s, 0.0);
        s.receive(consensus(10), 0.0);
        assert_eq!(s.tap(), 1);
        assert_eq!((s.view().love_shown, s.view().love_pending), (11, 1));
        assert_eq!(s.take_bursts(), (1, 0));
        assert_eq!(s.next_wake(), f64::NEG_INFINITY, "love is due at once");
        let epoch = 1_000_000_000_000;
        assert_eq!(loves(s.poll(0.0)), vec![ClientMessage::Love { seq: 1, epoch }]);
        let reaction = s.receive(ServerMessage::LoveAck(LoveAck { seq: 1, total: 11, epoch }), 5.0);
        assert!(reaction.acked_changed);
        s.receive(consensus(11), 10.0);
        assert_eq!(s.take_bursts(), (0, 0));
        assert_eq!((s.view().love_shown, s.view().love_pending), (11, 0));
    }

    #[test]
    fn a_synced_client_names_its_ledger_and_starts_another_when_it_is_folded() {
        let mut s = open_session();
        let love = loves;
        sync(&mut s, 20.0);
        s.tap();
        let epoch = 1_000_000_000_020;
        assert_eq!(love(s.poll(20.0)), vec![ClientMessage::Love { seq: 1, epoch }]);
        let ack = s.receive(ServerMessage::LoveAck(LoveAck { seq: 1, total: 1, epoch }), 30.0);
        assert!(ack.acked_changed);
        s.tap();
        assert_eq!(love(s.poll(200.0)), vec![ClientMessage::Love { seq: 2, epoch }]);
        // The ledger was folded: the tap sent on this connection (answered
        // in order) starts a new ledger, named from the clock.
        let folded = LoveFolded { epoch, seq: 2, total: 1 };
        let reaction = s.receive(ServerMessage::LoveFolded(folded), 300.0);
        assert!(reaction.acked_changed, "the page persists the new ledger");
        assert_eq!((s.love().taps(), s.love().acked(), s.love().epoch()), (1, 0, 0));
        assert_eq!(love(s.poll(400.0)), vec![ClientMessage::Love { seq: 1, epoch: epoch + 380 }]);
    }

    #[test]
    fn love_waits_for_an_open_socket_and_a_synced_clock_and_goes_again_on_the_next() {
        let mut s = session();
        s.tap();
        assert_eq!(s.poll(0.0), Ok(vec![]), "not connected");
        s.connecting(0.0);
        assert_eq!(s.poll(1.0), Ok(vec![]), "not open yet");
        s.opened(2.0);
        assert_eq!(loves(s.poll(2.0)), vec![], "the clock is not synced yet");
        assert!(s.next_wake() > 2.0, "and nothing to wake for meanwhile");
        sync(&mut s, 2.0);
        let love = ClientMessage::Love { seq: 1, epoch: 1_000_000_000_002 };
        assert_eq!(loves(s.poll(2.0)), vec![love.clone()]);
        assert_eq!(loves(s.poll(2.0 + BATCH_MS)), vec![], "sent, not acknowledged yet");
        s.closed(3.0, "lost", 0.0, false);
        s.connecting(4.0);
        s.opened(5.0);
        assert_eq!(loves(s.poll(5.0)), vec![love], "the clock is kept across connections");
        assert_eq!(s.next_wake(), 5.0 + FIRST_RESEND_MS);
    }

    #[test]
    fn errors_are_passed_on() {
        let mut s = session();
        let error = ProtocolError::new(ErrorCode::UnknownType, "no love here");
        let reaction = s.receive(ServerMessage::Error(error.clone()), 0.0);
        assert_eq!(reaction.error, Some(error));
        assert!(s.receive_text("not json", 0.0).is_err());
    }

    #[test]
    fn a_wild_report_interval_is_bounded() {
        let mut s = session();
        for (asked, used) in
            [(0, *REPORT_MS_RANGE.start()), (u64::MAX, *REPORT_MS_RANGE.end()), (700, 700)]
        {
            if let ServerMessage::Welcome(mut w) = welcome() {
                w.report_ms = asked;
                s.receive(ServerMessage::Welcome(w), 0.0);
            }
            assert_eq!(s.report_ms(), used);
        }
    }

    #[test]
    fn a_socket_that_never_opens_is_stuck() {
        let mut s = session();
        s.connecting(1000.0);
        assert_eq!(s.next_wake(), 1000.0 + CONNECT_TIMEOUT_MS);
        assert_eq!(s.poll(1000.0 + CONNECT_TIMEOUT_MS - 1.0), Ok(vec![]));
        assert_eq!(s.poll(1000.0 + CONNECT_TIMEOUT_MS), Err(Stuck::NoAnswer));
    }

    #[test]
    fn a_silent_server_is_stuck_and_any_frame_is_a_sign_of_life() {
        let mut s = open_session();
        assert!(s.receive_text("{\"type\":\"from the future\"}", 9_000.0).is_err());
        assert!(s.poll(9_000.0 + SILENCE_MS - 1.0).is_ok());
        assert_eq!(s.poll(9_000.0 + SILENCE_MS), Err(Stuck::Silent));
    }

    /// The clock-sync requests among `sent`.
    fn times(sent: Result<Vec<ClientMessage>, Stuck>) -> Vec<f64> {
        sent.expect("not stuck")
            .into_iter()
            .filter_map(|m| match m {
                ClientMessage::Time { t0 } => Some(t0),
                _ => None,
            })
            .collect()
    }

    fn time_reply(t0: f64) -> ServerMessage {
        ServerMessage::Time(TimeReply { t0, server_time: 1e12 + t0 + 5.0 })
    }

    #[test]
    fn the_clock_is_sampled_in_a_burst_then_gently_for_good() {
        let mut s = open_session(); // it sent the burst's first request at 0
        let mut t0 = 0.0;
        for _ in 1..CLOCK_SAMPLES {
            let sent = s.receive(time_reply(t0), t0 + 10.0).send;
            assert_eq!(sent, vec![ClientMessage::Time { t0: t0 + 10.0 }]);
            t0 += 10.0;
        }
        assert_eq!(s.receive(time_reply(t0), t0 + 10.0).send, vec![], "the burst is done");
        // Then one sample a second, on the schedule, while the socket is open
        // (the server ticks, so the silence deadline never comes first).
        for k in 1..=120 {
            let at = SAMPLE_MS * f64::from(k);
            s.heard(at - 1.0);
            assert!(times(s.poll(at - 1.0)).is_empty());
            assert!(s.next_wake() <= at);
            assert_eq!(times(s.poll(at)), vec![at]);
            s.receive(time_reply(at), at + 10.0);
        }
        assert_eq!(s.clock().offset_at(0.0), Some(1e12));
    }

    #[test]
    fn coming_back_into_view_starts_a_new_burst_and_pauses_gentle_sampling() {
        let mut s = open_session();
        let mut t0 = 0.0;
        while let [ClientMessage::Time { t0: next }] = s.receive(time_reply(t0), t0 + 10.0).send[..]
        {
            t0 = next;
        }
        s.heard(500.0);
        let Visible::Resync(ClientMessage::Time { t0: burst }) = s.visible(500.0) else {
            panic!("a connected page resyncs");
        };
        assert_eq!(burst, 500.0);
        // The burst's answer has not come: no gentle sample meanwhile.
        s.heard(500.0 + SAMPLE_MS);
        assert!(times(s.poll(500.0 + SAMPLE_MS)).is_empty());
        // An answer to a request from before the burst starts nothing.
        assert_eq!(s.receive(time_reply(t0), 600.0).send, vec![]);
        assert_eq!(
            s.receive(time_reply(500.0), 610.0).send,
            vec![ClientMessage::Time { t0: 610.0 }]
        );
    }

    #[test]
    fn a_lost_connection_waits_and_forgets_the_live_numbers() {
        let mut s = open_session();
        s.receive(consensus(3), 10.0);
        let until = s.closed(200.0, "the connection dropped", 1.0, false);
        assert_eq!(until, 200.0 + 500.0, "the first retry waits at most half a second");
        assert_eq!(s.link().label(200.0), "the connection dropped: reconnecting in 1 s");
        assert_eq!(s.view().room, None);
        assert_eq!(s.view().love_total, Some(3), "love is durable: still shown");
        assert_eq!(s.next_wake(), f64::INFINITY);
        assert_eq!(s.poll(1e9), Ok(vec![]));
        // A welcome-and-hang-up keeps backing off.
        s.connecting(700.0);
        s.opened(700.0);
        s.receive(welcome(), 700.0);
        assert_eq!(s.closed(800.0, "again", 1.0, false), 800.0 + 1000.0);
        // The network coming back starts over at once.
        assert!(s.online());
        s.connecting(900.0);
        assert!(!s.online(), "already connecting");
        assert_eq!(s.closed(900.0, "again", 1.0, false), 900.0 + 500.0);
    }

    #[test]
    fn coming_back_into_view() {
        let mut s = session();
        s.connecting(0.0);
        assert_eq!(s.visible(1.0), Visible::Nothing);
        s.opened(1.0);
        s.receive(welcome(), 1.0);
        assert_eq!(s.visible(2.0), Visible::Resync(ClientMessage::Time { t0: 2.0 }));
        s.closed(3.0, "lost", 0.5, true);
        assert_eq!(s.visible(4.0), Visible::Reconnect);
    }

    #[test]
    fn stepping_the_session_steps_the_heart_toward_the_room() {
        let mut s = open_session();
        // The server's clock is 1e12 ahead; the room beats at phase 0.5 then.
        s.receive(ServerMessage::Time(TimeReply { t0: 0.0, server_time: 1e12 }), 0.0);
        s.receive(consensus(0), 0.0);
        let room = |now: f64| crate::project(0.5, 72.0, 1e12, 1e12 + now);
        let before = crate::phase::difference(s.step(0.0), room(0.0)).abs();
        let mut now = 0.0;
        while now < 5_000.0 {
            now += 16.0;
            s.step(now);
        }
        let after = crate::phase::difference(s.step(now), room(now)).abs();
        assert!(after < before / 10.0, "{before} -> {after}");
        assert_eq!(s.server_time(now), 1e12 + now);
    }

    proptest! {
        /// Whatever happens, `poll` before `next_wake` sends nothing, and
        /// `poll` at `next_wake` has something to do.
        #[test]
        fn next_wake_is_when_poll_has_work(
            events in proptest::collection::vec((0u8..4, 1.0f64..3_000.0), 1..40),
        ) {
            let mut s = open_session();
            s.receive(ServerMessage::Time(TimeReply { t0: 0.0, server_time: 1e12 }), 0.0);
            let mut now = 0.0;
            for (event, gap) in events {
                now += gap;
                match event {
                    0 => { s.tap(); }
                    1 => { s.receive(consensus(0), now); }
                    2 => {
                        let seq = s.love().taps();
                        s.receive(ServerMessage::LoveAck(LoveAck { seq, total: seq, epoch: 0 }), now);
                    }
                    _ => {}
                }
                let wake = s.next_wake();
                if wake > now {
                    prop_assert_eq!(s.clone().poll(now), Ok(vec![]));
                    prop_assert_eq!(s.clone().poll(wake - 1e-3), Ok(vec![]));
                    let at_wake = s.clone().poll(wake);
                    prop_assert!(at_wake.as_ref().map_or(true, |sent| !sent.is_empty()), "{:?}", at_wake);
                } else {
                    let sent = s.poll(now);
                    prop_assert!(sent.as_ref().map_or(true, |sent| !sent.is_empty()), "{:?}", sent);
                }
                s.heard(now);
            }
        }
    }
}
