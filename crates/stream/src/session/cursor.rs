//! Where one stream stands: what it has passed, what was sent and not yet acked.
//!
//! The cursor (what the store keeps for the agent) is the highest seq such that every event
//! at or below it that the agent may see has been acked: the position if nothing is in
//! flight, otherwise just below the oldest unacked event. Positions move past events the
//! agent does not get, so a quiet agent's cursor still follows the log.

use std::collections::BTreeMap;

use fluxgate_core::{Seq, UnixMillis};

/// Sent-but-unacked events one stream may hold by default (`agent_max_unacked`).
pub const MAX_IN_FLIGHT: usize = 100_000;

/// An event sent and not yet acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    /// When the hook carrying it was received.
    pub received_at: UnixMillis,
    /// When this stream sent it.
    pub sent_at: UnixMillis,
}

#[derive(Debug)]
pub struct CursorTracker {
    position: Seq,
    in_flight: BTreeMap<Seq, InFlight>,
}

impl CursorTracker {
    pub fn new(start: Seq) -> Self {
        Self {
            position: start,
            in_flight: BTreeMap::new(),
        }
    }

    /// Every entry up to `seq` has been handled (sent or not for this agent).
    pub fn pass(&mut self, seq: Seq) {
        self.position = self.position.max(seq);
    }

    pub fn sent(&mut self, seq: Seq, received_at: UnixMillis, sent_at: UnixMillis) {
        self.pass(seq);
        self.in_flight.insert(
            seq,
            InFlight {
                received_at,
                sent_at,
            },
        );
    }

    /// Returns when the acked event was received and sent, if it was in flight.
    pub fn acked(&mut self, seq: Seq) -> Option<InFlight> {
        self.in_flight.remove(&seq)
    }

    /// The oldest `limit` events still unacked.
    pub fn unacked(&self, limit: usize) -> impl Iterator<Item = (Seq, InFlight)> + '_ {
        self.in_flight
            .iter()
            .take(limit)
            .map(|(seq, in_flight)| (*seq, *in_flight))
    }

    pub fn position(&self) -> Seq {
        self.position
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub fn cursor(&self) -> Seq {
        match self.in_flight.keys().next() {
            Some(oldest) => Seq(oldest.get() - 1),
            None => self.position,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_waits_for_the_oldest_unacked_event() {
        let mut tracker = CursorTracker::new(Seq(10));
        assert_eq!(tracker.cursor(), Seq(10));
        tracker.sent(Seq(12), UnixMillis(0), UnixMillis(1));
        tracker.sent(Seq(15), UnixMillis(0), UnixMillis(1));
        tracker.pass(Seq(20));
        assert_eq!(tracker.cursor(), Seq(11));
        tracker.acked(Seq(15));
        assert_eq!(tracker.cursor(), Seq(11), "12 is still unacked");
        tracker.acked(Seq(12));
        assert_eq!(
            tracker.cursor(),
            Seq(20),
            "everything sent is acked; the position counts"
        );
        assert_eq!(tracker.acked(Seq(12)), None, "a repeated ack is ignored");
    }
}
