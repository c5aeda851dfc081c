//! Which receivers are failing, loudly: logs, metrics and the report to the broker.
//!
//! Each worker keeps a [`FailureTracker`]. An outage starts with a receiver's first failed
//! call (logged at info) and ends when it answers again, 2xx or a final refusal. Once an
//! outage has lasted `retry.report_after`:
//!
//! - a warning is logged, then again every `retry.warn_every` while it lasts, and an
//!   info line "recovered" with how long it was down when it ends;
//! - the receiver is on the [`HealthBoard`]: counted in the
//!   `fluxgate_agent_receivers_failing` gauge and sent to the broker (the session sends
//!   the board when it changes, and the warnings count as changes, so the broker's copy
//!   is refreshed at the same rate).
//!
//! Every failed call counts in `fluxgate_agent_receiver_failed_attempts_total`, by
//! receiver and reason.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxgate_core::receiver_health::{MAX_RECEIVER_ERROR_BYTES, truncate_text};
use fluxgate_core::{FailingReceiver, Seq, UnixMillis};
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::watch;

use super::retry::{RetryPolicy, describe, failure_reason, http_status};
use super::trigger::AttemptResult;
use crate::metric_names;

/// The receivers failing for longer than the threshold, shared by the workers and the
/// session.
#[derive(Debug)]
pub struct HealthBoard {
    failing: Mutex<BTreeMap<String, FailingReceiver>>,
    /// Bumped on every change (and on every repeated warning).
    changes: watch::Sender<u64>,
}

impl Default for HealthBoard {
    fn default() -> Self {
        Self {
            failing: Mutex::default(),
            changes: watch::Sender::new(0),
        }
    }
}

impl HealthBoard {
    /// The failing receivers, by name.
    pub fn report(&self) -> Vec<FailingReceiver> {
        self.lock().values().cloned().collect()
    }

    /// Notified whenever [`HealthBoard::report`] should be sent again.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn set(&self, status: FailingReceiver) {
        let count = {
            let mut failing = self.lock();
            failing.insert(status.receiver.clone(), status);
            failing.len()
        };
        self.changed(count);
    }

    fn clear(&self, receiver: &str) {
        let count = {
            let mut failing = self.lock();
            failing.remove(receiver);
            failing.len()
        };
        self.changed(count);
    }

    fn changed(&self, count: usize) {
        metrics::gauge!(metric_names::RECEIVERS_FAILING)
            .set(u32::try_from(count).unwrap_or(u32::MAX));
        self.changes
            .send_modify(|version| *version = version.wrapping_add(1));
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, FailingReceiver>> {
        // Every critical section is one map operation.
        self.failing.lock()
    }
}

/// One receiver's current outage.
#[derive(Debug)]
struct Outage {
    since: Instant,
    since_wall: UnixMillis,
    attempts: u64,
    last_error: String,
    last_http_status: u16,
    oldest_unacked_seq: Option<u64>,
    /// On the board (the threshold was crossed), and when the last warning was logged.
    warned_at: Option<Instant>,
}

/// Follows one receiver's failures; owned by its worker.
#[derive(Debug)]
pub struct FailureTracker {
    receiver: Arc<str>,
    board: Arc<HealthBoard>,
    report_after: Duration,
    warn_every: Duration,
    outage: Option<Outage>,
}

impl FailureTracker {
    pub fn new(receiver: Arc<str>, board: Arc<HealthBoard>, policy: &RetryPolicy) -> Self {
        Self {
            receiver,
            board,
            report_after: policy.report_after,
            warn_every: policy.warn_every,
            outage: None,
        }
    }

    /// A call failed with a retryable result; `oldest_seq` is the oldest event waiting
    /// for this receiver (none for a resync).
    pub fn failed(&mut self, result: &AttemptResult, oldest_seq: Option<u64>) {
        self.failed_at(Instant::now(), result, oldest_seq);
    }

    fn failed_at(&mut self, now: Instant, result: &AttemptResult, oldest_seq: Option<u64>) {
        metrics::counter!(
            metric_names::RECEIVER_FAILED_ATTEMPTS,
            "receiver" => self.receiver.to_string(),
            "reason" => failure_reason(result),
        )
        .increment(1);
        let error = describe(result);
        let outage = self.outage.get_or_insert_with(|| {
            tracing::info!(
                receiver = %self.receiver,
                error = %error,
                "receiver call failed; retrying until it answers, its events stay unacked"
            );
            Outage {
                since: now,
                since_wall: UnixMillis::now(),
                attempts: 0,
                last_error: String::new(),
                last_http_status: 0,
                oldest_unacked_seq: None,
                warned_at: None,
            }
        });
        outage.attempts += 1;
        outage.last_error = truncate_text(&error, MAX_RECEIVER_ERROR_BYTES);
        outage.last_http_status = http_status(result);
        outage.oldest_unacked_seq = match (outage.oldest_unacked_seq, oldest_seq) {
            (Some(held), Some(new)) => Some(held.min(new)),
            (held, new) => held.or(new),
        };
        let down_for = now.duration_since(outage.since);
        let warn = match outage.warned_at {
            None => down_for >= self.report_after,
            Some(warned_at) => now.duration_since(warned_at) >= self.warn_every,
        };
        if !warn {
            return;
        }
        outage.warned_at = Some(now);
        tracing::warn!(
            receiver = %self.receiver,
            down_for = ?down_for,
            attempts = outage.attempts,
            last_error = %outage.last_error,
            oldest_unacked_seq = outage.oldest_unacked_seq,
            "receiver keeps failing; its events stay unacked and it is retried until it answers"
        );
        self.board.set(FailingReceiver {
            receiver: self.receiver.to_string(),
            failing_since: outage.since_wall,
            attempts: outage.attempts,
            last_error: outage.last_error.clone(),
            last_http_status: outage.last_http_status,
            oldest_unacked_seq: outage.oldest_unacked_seq.map(Seq),
        });
    }

    /// The receiver answered (2xx or a final refusal): its outage, if any, is over.
    pub fn answered(&mut self) {
        let Some(outage) = self.outage.take() else {
            return;
        };
        let down_for = outage.since.elapsed();
        tracing::info!(
            receiver = %self.receiver,
            down_for = ?down_for,
            attempts = outage.attempts,
            "receiver recovered"
        );
        if outage.warned_at.is_some() {
            self.board.clear(&self.receiver);
        }
    }
}

impl Drop for FailureTracker {
    /// A receiver that is gone (its worker stopped) is no longer reported as failing.
    fn drop(&mut self) {
        if self.outage.as_ref().is_some_and(|o| o.warned_at.is_some()) {
            self.board.clear(&self.receiver);
        }
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn tracker(board: &Arc<HealthBoard>) -> FailureTracker {
        let policy = RetryPolicy {
            report_after: 100 * MS,
            warn_every: 1000 * MS,
            ..RetryPolicy::default()
        };
        FailureTracker::new(Arc::from("app"), Arc::clone(board), &policy)
    }

    const UNAVAILABLE: AttemptResult = AttemptResult::Answered(StatusCode::SERVICE_UNAVAILABLE);

    #[test]
    fn a_receiver_is_reported_after_the_threshold_then_cleared_on_recovery() {
        let board = Arc::new(HealthBoard::default());
        let mut changes = board.subscribe();
        let mut tracker = tracker(&board);
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);

        tracker.failed_at(at(0), &UNAVAILABLE, Some(7));
        tracker.failed_at(at(50), &UNAVAILABLE, Some(5));
        assert!(board.report().is_empty(), "not failing for long enough yet");
        assert!(!changes.has_changed().expect("board alive"));

        tracker.failed_at(at(110), &UNAVAILABLE, Some(9));
        let report = board.report();
        assert_eq!(report.len(), 1);
        let failing = &report[0];
        assert_eq!(failing.receiver, "app");
        assert_eq!(failing.attempts, 3);
        assert_eq!(failing.last_http_status, 503);
        assert_eq!(failing.last_error, "HTTP 503 Service Unavailable");
        assert_eq!(failing.oldest_unacked_seq, Some(Seq(5)));
        assert!(changes.has_changed().expect("board alive"));
        changes.mark_unchanged();

        // Rate-limited: no new report until warn_every has passed.
        tracker.failed_at(at(610), &UNAVAILABLE, None);
        assert!(!changes.has_changed().expect("board alive"));
        tracker.failed_at(at(1110), &UNAVAILABLE, None);
        assert!(changes.has_changed().expect("board alive"));
        assert_eq!(board.report()[0].attempts, 5);
        changes.mark_unchanged();

        tracker.answered();
        assert!(board.report().is_empty());
        assert!(changes.has_changed().expect("board alive"));

        // A new outage starts from scratch.
        tracker.failed_at(at(1200), &UNAVAILABLE, Some(20));
        assert!(board.report().is_empty());
    }
}
