//! What one stream's session task and its response body share.
//!
//! Live events do not pass through the session task. Once the session has sent the
//! backlog, it hands the response body this state ([`Outgoing::Live`]), and the body —
//! polled by the connection's stream task whenever the socket can take more — takes live
//! events from the hub's queue itself. That saves a channel and a task wake-up per
//! delivery, the largest cost of a fan-out after the socket writes.
//!
//! Both sides note what was sent and acked in one lock of this stream's own, never held
//! across an await: the session for the backlog, acks and keepalives, the body for live
//! events.
//!
//! [`Outgoing::Live`]: crate::outbound::Outgoing::Live

use std::sync::Arc;
use std::task::{Context, Poll};

use fluxgate_core::{Seq, UnixMillis};
use fluxgate_fanout::{CloseSignal, Delivery};
use fluxgate_proto::outbound::{OutboundMessage, SharedEvent};
use fluxgate_proto::v1;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::mpsc;
use tonic::Status;

use super::cursor::CursorTracker;
use crate::convert;
use crate::metric_names as names;

/// One stream's position, queue and metrics, shared by its session and its response body.
pub struct StreamState {
    position: Mutex<Position>,
    /// Why the hub closed the stream, if it did.
    close: Arc<CloseSignal>,
    /// Sent-but-unacked events beyond which a live event closes the stream.
    max_unacked: usize,
    pub(super) metrics: SessionMetrics,
    /// The stream's span, for what the body logs outside the session task.
    span: tracing::Span,
}

/// Where the stream stands.
pub struct Position {
    pub tracker: CursorTracker,
    /// The last event sent: none is sent twice.
    last_sent: Seq,
    /// Live events from the hub, after its head at registration.
    queue: mpsc::Receiver<Delivery>,
    /// Whether an event went out since the last keepalive.
    sent_since_keepalive: bool,
    /// How the body ended the stream, when it did so itself.
    ended: Option<Box<Status>>,
}

/// The metrics a stream records per event, looked up once per stream rather than in the
/// recorder's registry on every event.
pub(super) struct SessionMetrics {
    /// Receivers' outcomes in acks, in the order of [`RECEIVER_OUTCOMES`].
    receiver_outcomes: [metrics::Counter; RECEIVER_OUTCOMES.len()],
    events_sent: metrics::Counter,
    committed_to_sent: metrics::Histogram,
    pub(super) acks: metrics::Counter,
    pub(super) delivery_latency: metrics::Histogram,
    pub(super) sent_to_acked: metrics::Histogram,
}

/// Every receiver outcome, in the order of their wire values (0, 1, …).
const RECEIVER_OUTCOMES: [v1::Outcome; 5] = [
    v1::Outcome::Unspecified,
    v1::Outcome::Delivered,
    v1::Outcome::Coalesced,
    v1::Outcome::Rejected,
    v1::Outcome::Failed,
];

impl SessionMetrics {
    /// Counts a receiver's outcome reported in an ack.
    pub(super) fn receiver_outcome(&self, outcome: v1::Outcome) {
        if let Some(counter) = self.receiver_outcomes.get(outcome as usize) {
            counter.increment(1);
        }
    }

    fn new() -> Self {
        Self {
            receiver_outcomes: RECEIVER_OUTCOMES.map(|outcome| {
                metrics::counter!(names::RECEIVER_OUTCOMES, "outcome" => names::outcome_label(outcome))
            }),
            events_sent: metrics::counter!(names::EVENTS_SENT),
            committed_to_sent: metrics::histogram!(names::STAGE_COMMITTED_TO_SENT),
            acks: metrics::counter!(names::ACKS),
            delivery_latency: metrics::histogram!(names::DELIVERY_LATENCY),
            sent_to_acked: metrics::histogram!(names::STAGE_SENT_TO_ACKED),
        }
    }
}

impl StreamState {
    pub fn new(
        queue: mpsc::Receiver<Delivery>,
        close: Arc<CloseSignal>,
        max_unacked: usize,
        span: tracing::Span,
    ) -> Self {
        Self {
            position: Mutex::new(Position {
                tracker: CursorTracker::new(Seq::ZERO),
                last_sent: Seq::ZERO,
                queue,
                sent_since_keepalive: false,
                ended: None,
            }),
            close,
            max_unacked,
            metrics: SessionMetrics::new(),
            span,
        }
    }

    /// The position, for the session's own reads and changes.
    pub fn lock(&self) -> MutexGuard<'_, Position> {
        self.position.lock()
    }

    /// Starts the stream at `start`: nothing at or below it is sent.
    pub fn start_at(&self, start: Seq) {
        let mut position = self.lock();
        position.tracker = CursorTracker::new(start);
        position.last_sent = start;
    }

    /// The message for a backlog event, noted as sent; `None` if it is not a push or was
    /// sent already.
    pub fn backlog_event(&self, delivery: Delivery) -> Option<OutboundMessage> {
        self.event_message(&mut self.lock(), delivery)
    }

    /// The next live event from the hub's queue, noted as sent. Ends the stream with an
    /// error when the hub closed the stream, or when the agent holds too many unacked
    /// events (live events cannot wait, or the hub's queue would overflow: the agent
    /// resumes from its cursor).
    ///
    /// A queue that ends with no reason was let go by the session, whose last word is on
    /// its way: this waits for it (the caller polls the session's channel first).
    pub fn poll_live(&self, cx: &mut Context<'_>) -> Poll<Result<OutboundMessage, Status>> {
        let mut position = self.lock();
        loop {
            let Some(delivery) = std::task::ready!(position.queue.poll_recv(cx)) else {
                return match self.close.reason() {
                    Some(reason) => {
                        Poll::Ready(Err(self.end(&mut position, crate::status::closed(reason))))
                    }
                    None => Poll::Pending,
                };
            };
            if position.tracker.in_flight() >= self.max_unacked {
                let max = self.max_unacked;
                let status = Status::resource_exhausted(format!(
                    "more than {max} events are unacknowledged; reconnect to resume from the cursor"
                ));
                return Poll::Ready(Err(self.end(&mut position, status)));
            }
            if let Some(message) = self.event_message(&mut position, delivery) {
                position.sent_since_keepalive = true;
                return Poll::Ready(Ok(message));
            }
        }
    }

    /// Notes that the body ended the stream with `status`, for the session to report.
    fn end(&self, position: &mut Position, status: Status) -> Status {
        position.ended = Some(Box::new(status.clone()));
        status
    }

    /// How the body ended the stream, if it did so itself.
    pub fn take_end(&self) -> Option<Status> {
        self.lock().ended.take().map(|status| *status)
    }

    /// At a keepalive: the position to report, or `None` if an event went out since the
    /// last one (a busy stream skips keepalives rather than reading the clock per event, so
    /// the agent hears from it at least every two intervals). `head` is the hub's head, read
    /// before this call: once the backlog is done, everything the hub dispatched up to it
    /// is in the queue, so with the queue empty the stream has passed it.
    pub fn keepalive_position(&self, head: Seq, backlog_done: bool) -> Option<Seq> {
        let mut position = self.lock();
        if std::mem::take(&mut position.sent_since_keepalive) {
            return None;
        }
        if backlog_done && position.queue.is_empty() {
            position.tracker.pass(head);
        }
        Some(position.tracker.position())
    }

    fn event_message(
        &self,
        position: &mut Position,
        delivery: Delivery,
    ) -> Option<OutboundMessage> {
        let entry = &delivery.entry;
        let event = entry.as_push()?;
        if entry.seq <= position.last_sent {
            return None;
        }
        let fields = entry.wire(|entry| convert::shared_event_fields(entry, event));
        position.last_sent = entry.seq;
        let now = UnixMillis::now();
        position.tracker.sent(entry.seq, event.received_at, now);
        let since_commit = entry.recorded_at.elapsed_until(now);
        self.metrics
            .committed_to_sent
            .record(since_commit.as_secs_f64());
        self.metrics.events_sent.increment(1);
        if tracing::enabled!(tracing::Level::DEBUG) {
            self.span.in_scope(|| {
                tracing::debug!(seq = %entry.seq, event_id = %event.event_id, project = %event.project.path, r#ref = ?event.git_ref.as_ref().map(|r| r.as_str()), kind = event.kind.as_str(), "event sent");
            });
        }
        Some(OutboundMessage::Event(SharedEvent {
            fields,
            matched_projects: delivery.matched,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiver_outcomes_are_listed_in_wire_order() {
        for (index, outcome) in RECEIVER_OUTCOMES.iter().enumerate() {
            assert_eq!(*outcome as usize, index, "{outcome:?}");
        }
    }
}
