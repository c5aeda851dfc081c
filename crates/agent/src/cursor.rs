//! The agent's resume cursor: how far into the broker's log everything has been handled.
//!
//! The cursor is the highest seq `S` such that every event received with a seq up to `S`
//! has been acked. Acks may complete out of order, so the cursor stops below the oldest
//! event still in progress. A keepalive (`position`: everything up to it that this agent
//! may see has been sent) moves the cursor to `position` when nothing is in progress.
//!
//! The cursor lives in memory only: after a restart the agent sends no `resume_after`, and
//! the broker resumes from the cursor it stored from the agent's acks.
//!
//! Events still in progress when a stream ends are forgotten by [`Cursor::begin_stream`]:
//! their acks cannot be sent on the next stream, the broker will send them again, and the
//! cursor must stay below them, which it already does.

use std::collections::BTreeSet;

#[derive(Debug, Default)]
pub struct Cursor {
    /// Everything up to here is handled. `None` until the first ack or keepalive.
    handled_through: Option<u64>,
    /// Events received on the current stream and not yet acked.
    in_progress: BTreeSet<u64>,
    /// The highest seq received on the current stream.
    highest_received: Option<u64>,
}

impl Cursor {
    /// The cursor to send as `resume_after`, if there is one.
    pub fn position(&self) -> Option<u64> {
        self.handled_through
    }

    /// Starts a new stream: work from earlier streams no longer counts. Returns the
    /// position to resume after.
    pub fn begin_stream(&mut self) -> Option<u64> {
        self.in_progress.clear();
        self.highest_received = None;
        self.handled_through
    }

    /// An event arrived on the current stream.
    pub fn received(&mut self, seq: u64) {
        self.in_progress.insert(seq);
        self.highest_received = self.highest_received.max(Some(seq));
    }

    /// The ack for an event of the current stream was sent.
    pub fn acked(&mut self, seq: u64) {
        if !self.in_progress.remove(&seq) {
            return;
        }
        let candidate = match self.in_progress.first() {
            Some(oldest) => oldest.checked_sub(1),
            None => self.highest_received,
        };
        self.advance_to(candidate);
    }

    /// The broker says every event up to `position` has been sent on this stream.
    pub fn keepalive(&mut self, position: u64) {
        if self.in_progress.is_empty() {
            self.advance_to(Some(position));
        }
    }

    fn advance_to(&mut self, candidate: Option<u64>) {
        self.handled_through = self.handled_through.max(candidate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_empty() {
        let mut cursor = Cursor::default();
        assert_eq!(cursor.position(), None);
        assert_eq!(cursor.begin_stream(), None);
    }

    #[test]
    fn out_of_order_acks_hold_the_cursor_below_the_oldest_open_event() {
        let mut cursor = Cursor::default();
        cursor.begin_stream();
        for seq in [3, 5, 9] {
            cursor.received(seq);
        }
        cursor.acked(5);
        assert_eq!(cursor.position(), Some(2));
        cursor.acked(9);
        assert_eq!(cursor.position(), Some(2));
        cursor.acked(3);
        assert_eq!(cursor.position(), Some(9));
    }

    #[test]
    fn keepalives_move_the_cursor_only_when_idle() {
        let mut cursor = Cursor::default();
        cursor.begin_stream();
        cursor.received(4);
        cursor.keepalive(10);
        assert_eq!(cursor.position(), None, "seq 4 is still in progress");
        cursor.acked(4);
        cursor.keepalive(10);
        assert_eq!(cursor.position(), Some(10));
        cursor.keepalive(7);
        assert_eq!(cursor.position(), Some(10), "never moves back");
    }

    #[test]
    fn a_new_stream_forgets_open_events_and_resumes_below_them() {
        let mut cursor = Cursor::default();
        cursor.begin_stream();
        cursor.received(1);
        cursor.received(2);
        cursor.acked(1);
        assert_eq!(cursor.begin_stream(), Some(1));
        cursor.acked(2);
        assert_eq!(
            cursor.position(),
            Some(1),
            "acks of an old stream do not count"
        );
        cursor.received(2);
        cursor.acked(2);
        assert_eq!(cursor.position(), Some(2));
    }
}
