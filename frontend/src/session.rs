//! One page's conversation with its room, without the socket: what to send
//! when a connection opens, what each server message changes, when to
//! report, and what the page shows. The connection is a thin shell that
//! feeds socket events in and sends what comes out; the canvas steps the
//! heart and drains the love bursts. Pure, so the protocol side of the page
//! is tested natively.

use crate::love::Love;
use crate::sync::{Clock, Heart};
use shared::{ClientMessage, ProtocolError, ServerMessage};

/// How often to report before the welcome says otherwise, in milliseconds.
pub const DEFAULT_REPORT_MS: u64 = 1_000;

/// Bounds on the welcome's `report_ms`, so a confused server can neither
/// make the page flood it nor fall silent.
pub const REPORT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=5_000;

/// What the page shows about its room.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RoomView {
    /// Open connections in the room.
    pub hearts: u32,
    /// How in step the room is, in `[0, 1]`.
    pub coherence: f64,
    /// The love total to show (the server's plus this page's unsent taps).
    pub love: u64,
}

/// What a server message asks of the page, beyond the state it changed.
#[derive(Debug, Default, PartialEq)]
pub struct Reaction {
    /// Messages to send back, in order.
    pub send: Vec<ClientMessage>,
    /// The server acknowledged love: persist [`Love::acked`].
    pub acked_changed: bool,
    /// The server refused something; the page logs it.
    pub error: Option<ProtocolError>,
}

/// Everything the page knows about its room and its own heart.
#[derive(Debug, Clone)]
pub struct Session {
    /// The page's heart, pulled toward the room's beat.
    pub heart: Heart,
    /// The offset to the server's clock.
    pub clock: Clock,
    /// This page's love taps in this room.
    pub love: Love,
    /// How often to report, from the welcome.
    report_ms: u64,
    /// Whether the current connection has been welcomed.
    welcomed: bool,
    /// What the last consensus said about the room.
    hearts: u32,
    coherence: f64,
    /// Taps to burst out of the heart that the canvas has not drawn yet:
    /// this page's own, and other people's.
    bursts: (u64, u64),
}

impl Session {
    /// A page with its new `heart` and the love state found in storage.
    pub fn new(heart: Heart, love: Love) -> Self {
        Self {
            heart,
            clock: Clock::default(),
            love,
            report_ms: DEFAULT_REPORT_MS,
            welcomed: false,
            hearts: 0,
            coherence: 0.0,
            bursts: (0, 0),
        }
    }

    /// How often to report the heart's phase, in milliseconds.
    pub fn report_ms(&self) -> u64 {
        self.report_ms
    }

    /// Whether the current connection has been welcomed.
    pub fn welcomed(&self) -> bool {
        self.welcomed
    }

    /// A socket opened at local time `now`: start a clock sync and resend
    /// unacknowledged love (the first of which follows from [`Self::tick`]).
    pub fn opened(&mut self, now: f64) -> Vec<ClientMessage> {
        self.welcomed = false;
        self.love.connected();
        vec![self.resync(now)]
    }

    /// The socket closed.
    pub fn closed(&mut self) {
        self.welcomed = false;
    }

    /// Starts a new clock sync at local time `now`: the first request (the
    /// others follow each answer).
    pub fn resync(&mut self, now: f64) -> ClientMessage {
        self.clock.restart();
        ClientMessage::Time { t0: now }
    }

    /// Takes one message from the server, received at local time `now`.
    pub fn receive(&mut self, message: ServerMessage, now: f64) -> Reaction {
        let mut reaction = Reaction::default();
        match message {
            ServerMessage::Welcome(welcome) => {
                self.welcomed = true;
                self.report_ms =
                    welcome.report_ms.clamp(*REPORT_MS_RANGE.start(), *REPORT_MS_RANGE.end());
            }
            ServerMessage::Consensus(consensus) => {
                self.heart.follow(consensus);
                self.hearts = consensus.hearts;
                self.coherence = consensus.coherence.clamp(0.0, 1.0);
                self.bursts.1 += self.love.observe_total(consensus.love);
            }
            ServerMessage::Time(reply) => {
                self.clock.record(reply.t0, reply.server_time, now);
                // One request at a time: each sample measures a quiet round
                // trip instead of queueing behind its siblings.
                if self.clock.wants_sample() {
                    reaction.send.push(ClientMessage::Time { t0: now });
                }
            }
            ServerMessage::LoveAck(ack) => {
                let acked = self.love.acked();
                self.bursts.1 += self.love.acknowledged(ack);
                reaction.acked_changed = self.love.acked() != acked;
            }
            ServerMessage::Error(error) => reaction.error = Some(error),
        }
        reaction
    }

    /// The phase report to send at local time `now`, once the clock is synced.
    pub fn report(&self, now: f64) -> Option<ClientMessage> {
        let server_now = self.clock.server_time(now)?;
        Some(ClientMessage::Phase(self.heart.report(now, server_now)))
    }

    /// Love to send at local time `now`, if any is due.
    pub fn tick(&mut self, now: f64) -> Option<ClientMessage> {
        self.love.due(now).map(|seq| ClientMessage::Love { seq })
    }

    /// One tap of love: counts it and queues a burst. Returns the new count
    /// (to persist).
    pub fn tap(&mut self) -> u64 {
        self.bursts.0 += 1;
        self.love.tap()
    }

    /// Taps to draw as bursts since the last call: `(mine, others)`.
    pub fn take_bursts(&mut self) -> (u64, u64) {
        std::mem::take(&mut self.bursts)
    }

    /// What the page shows about the room.
    pub fn view(&self) -> RoomView {
        RoomView { hearts: self.hearts, coherence: self.coherence, love: self.love.shown_total() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{CLOCK_SAMPLES, DEFAULT_BPM};
    use shared::{Consensus, ErrorCode, LoveAck, TimeReply, Welcome};

    fn session() -> Session {
        Session::new(Heart::new(0.3, DEFAULT_BPM, 0.0), Love::new(0, 0))
    }

    fn welcome() -> ServerMessage {
        ServerMessage::Welcome(Welcome {
            protocol: 1,
            client_id: shared::ClientId::parse("abcdefgh12345678").expect("a valid client id"),
            room: shared::RoomName::main(),
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

    #[test]
    fn connecting_syncs_the_clock_then_reports() {
        let mut s = session();
        let first = s.opened(100.0);
        assert_eq!(first, vec![ClientMessage::Time { t0: 100.0 }]);
        assert!(s.receive(welcome(), 110.0).send.is_empty());
        assert!(s.welcomed());
        assert_eq!(s.report_ms(), 500);
        assert_eq!(s.report(120.0), None, "no report before the clock is known");
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
        assert_eq!(s.clock.offset(), Some(1e12));
        match s.report(1000.0) {
            Some(ClientMessage::Phase(report)) => {
                assert_eq!(report.at, 1e12 + 1000.0);
                assert_eq!(report.bpm, DEFAULT_BPM);
            }
            other => panic!("expected a phase report, got {other:?}"),
        }
    }

    #[test]
    fn consensus_updates_the_view() {
        let mut s = session();
        s.receive(consensus(10), 0.0);
        assert_eq!(s.view(), RoomView { hearts: 3, coherence: 0.75, love: 10 });
        assert_eq!(s.take_bursts(), (0, 0), "love from before the page opened");
        s.receive(consensus(14), 0.0);
        assert_eq!(s.take_bursts(), (0, 4));
        assert_eq!(s.take_bursts(), (0, 0));
    }

    #[test]
    fn taps_are_sent_acknowledged_and_burst_once() {
        let mut s = session();
        s.receive(consensus(10), 0.0);
        assert_eq!(s.tap(), 1);
        assert_eq!(s.view().love, 11);
        assert_eq!(s.take_bursts(), (1, 0));
        assert_eq!(s.tick(0.0), Some(ClientMessage::Love { seq: 1 }));
        let reaction = s.receive(ServerMessage::LoveAck(LoveAck { seq: 1, total: 11 }), 5.0);
        assert!(reaction.acked_changed);
        s.receive(consensus(11), 10.0);
        assert_eq!(s.take_bursts(), (0, 0));
        assert_eq!(s.view().love, 11);
    }

    #[test]
    fn errors_are_passed_on() {
        let mut s = session();
        let error = ProtocolError::new(ErrorCode::UnknownType, "no love here");
        let reaction = s.receive(ServerMessage::Error(error.clone()), 0.0);
        assert_eq!(reaction.error, Some(error));
    }

    #[test]
    fn a_wild_report_interval_is_bounded() {
        let mut s = session();
        if let ServerMessage::Welcome(mut w) = welcome() {
            w.report_ms = 0;
            s.receive(ServerMessage::Welcome(w), 0.0);
        }
        assert_eq!(s.report_ms(), *REPORT_MS_RANGE.start());
    }
}
