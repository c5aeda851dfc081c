//! The follower feeds the hub the log, in seq order, without gaps.
//!
//! It listens to the bus for low latency and falls back on the store for correctness:
//! - an entry older than what the hub has is skipped (a duplicate or a late batch);
//! - an entry beyond the next expected seq means a gap: the missing range is read from the
//!   store first (every seq below a committed one is committed, so the range is complete);
//! - a lagged bus receiver, or a bus quiet for `poll_interval`, makes it read everything
//!   after the hub's head from the store. That also picks up entries written by other
//!   processes that do not share the bus (the CLI, another replica while Redis is down);
//! - a stream that needs the hub to be current (a new agent connecting) asks for a read
//!   at once.
//!
//! A store error is logged and retried on the next tick; the follower never skips a seq.

use std::sync::Arc;
use std::time::Duration;

use fluxgate_core::{LogEntry, Seq};
use fluxgate_store::Store;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use fluxgate_fanout::Hub;

use crate::bus::Batch;
use crate::metric_names as names;

/// How many entries to read from the store per query.
const PAGE: u32 = 1000;

/// Feeds one hub the log; run it with [`Follower::run`].
pub struct Follower {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    bus: broadcast::Receiver<Batch>,
    poll_interval: Duration,
}

impl Follower {
    pub fn new(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        bus: broadcast::Receiver<Batch>,
        poll_interval: Duration,
    ) -> Self {
        Self {
            store,
            hub,
            bus,
            poll_interval,
        }
    }

    /// Follows the log until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut quiet_since = Instant::now();
        loop {
            let poll_at = quiet_since + self.poll_interval;
            tokio::select! {
                () = shutdown.cancelled() => return,
                received = self.bus.recv() => match received {
                    Ok(batch) => {
                        quiet_since = Instant::now();
                        self.apply_batch(&batch).await;
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed_batches = missed, "bus lagged; reading the log from the store");
                        self.catch_up(None).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        tracing::warn!("bus closed; following the log from the store only");
                        self.poll_forever(shutdown).await;
                        return;
                    }
                },
                () = self.hub.catch_up_requested() => {
                    self.catch_up(None).await;
                }
                () = tokio::time::sleep_until(poll_at) => {
                    metrics::counter!(names::FOLLOWER_POLLS).increment(1);
                    self.catch_up(None).await;
                    quiet_since = Instant::now();
                }
            }
        }
    }

    async fn poll_forever(&self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.poll_interval) => {
                    self.catch_up(None).await;
                }
            }
        }
    }

    async fn apply_batch(&self, batch: &[LogEntry]) {
        for entry in batch {
            let expected = self.hub.head().next();
            if entry.seq < expected {
                continue;
            }
            if entry.seq > expected {
                metrics::counter!(names::FOLLOWER_GAP_READS).increment(1);
                let before = Seq(entry.seq.get() - 1);
                if !self.catch_up(Some(before)).await {
                    // The gap is not readable yet (store down); the next poll retries.
                    return;
                }
            }
            self.hub.dispatch(entry.clone()).await;
        }
    }

    /// Reads and dispatches everything after the hub's head, up to `until` if given.
    /// Returns false if it could not get that far.
    async fn catch_up(&self, until: Option<Seq>) -> bool {
        loop {
            let head = self.hub.head();
            if until.is_some_and(|until| head >= until) {
                return true;
            }
            let entries = match self.store.read_log(head, PAGE).await {
                Ok(entries) => entries,
                Err(err) => {
                    metrics::counter!(names::FOLLOWER_ERRORS).increment(1);
                    tracing::warn!(error = %err, after = %head, "cannot read the log; will retry");
                    return false;
                }
            };
            let Some(first) = entries.first() else {
                return until.is_none();
            };
            if first.seq != head.next() {
                // Retention removed entries this replica never saw. Nothing can bring them
                // back; streams that needed them learn it from the floor when they resume.
                tracing::error!(expected = %head.next(), found = %first.seq, "log entries are missing; skipping ahead");
            }
            let full_page = entries.len() == PAGE as usize;
            for entry in entries {
                if until.is_some_and(|until| entry.seq > until) {
                    return true;
                }
                self.hub.dispatch(entry).await;
            }
            if !full_page && until.is_none() {
                return true;
            }
        }
    }
}
