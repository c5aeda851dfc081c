//! Persists stream cursors in batches.
//!
//! Each stream reports its own cursor when it opens, whenever it moves (and on keepalives,
//! as a sign of life), and when it closes; the saver keeps the latest per stream and writes
//! them all every `interval`, and once more at shutdown. The store sets each agent's cursor
//! to the lowest of its streams' (and closed streams' holds), so a stream can never move
//! its agent's cursor past an event another of its streams still holds unacked. A failed
//! write is retried with the next batch. Losing a write costs only redelivery: delivery is
//! at-least-once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fluxgate_core::{AgentId, Seq, UnixMillis};
use fluxgate_routing::Subscription;
use fluxgate_store::{CursorUpdate, Store};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::metric_names as names;

/// An open stream that was not heard of for this long (its replica died without closing
/// it) counts as closed at its last report. Streams report at least every keepalive.
pub const STALE_STREAM: Duration = Duration::from_secs(10 * 60);

/// One stream's identity, for its cursor reports.
#[derive(Debug, Clone)]
pub struct StreamCursor {
    pub agent: AgentId,
    pub stream: String,
    /// Digest of its current subscriptions ([`subscriptions_digest`]): those it opened
    /// with, then those of its last accepted change.
    pub subscriptions: String,
    /// Where it started covering its current subscriptions: where it resumed, or the
    /// hub's head at its last subscription change.
    pub started_after: Seq,
    pub opened_at: UnixMillis,
}

/// A new stream's id, unique across replicas and restarts.
pub fn new_stream_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl StreamCursor {
    /// Stream `stream` ([`new_stream_id`]) of `agent`, opened with the subscriptions of
    /// digest `subscriptions` ([`subscriptions_digest`]), that resumes after `started_after`.
    pub fn open(agent: AgentId, stream: String, subscriptions: String, started_after: Seq) -> Self {
        Self {
            agent,
            stream,
            subscriptions,
            started_after,
            opened_at: UnixMillis::now(),
        }
    }
}

/// A digest of a set of subscriptions that is the same for the same set in any order, on
/// any replica and version: SHA-256 over the sorted, deduplicated `path<TAB>refs` lines.
pub fn subscriptions_digest(subscriptions: &[Subscription]) -> String {
    use sha2::Digest as _;
    let mut lines: Vec<String> = subscriptions
        .iter()
        .map(|s| {
            let refs = s.refs.as_ref().map(ToString::to_string).unwrap_or_default();
            format!("{}\t{refs}", s.project.key())
        })
        .collect();
    lines.sort_unstable();
    lines.dedup();
    let mut hasher = sha2::Sha256::new();
    for line in &lines {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

/// The latest cursor of every stream, waiting to be written.
#[derive(Default)]
pub struct CursorSaver {
    pending: Mutex<HashMap<String, CursorUpdate>>,
}

impl CursorSaver {
    /// The stream is at `cursor`; `closed` once it has ended.
    pub fn record(&self, stream: &StreamCursor, cursor: Seq, closed: bool) {
        let now = UnixMillis::now();
        let update = CursorUpdate {
            agent: stream.agent,
            stream: stream.stream.clone(),
            subscriptions: stream.subscriptions.clone(),
            started_after: stream.started_after,
            opened_at: stream.opened_at,
            cursor,
            seen_at: now,
            closed_at: closed.then_some(now),
        };
        let mut pending = self.pending.lock();
        match pending.get_mut(&stream.stream) {
            Some(existing) => merge(existing, update),
            None => {
                pending.insert(stream.stream.clone(), update);
            }
        }
    }

    /// Writes what is pending; on failure keeps it for the next try.
    pub async fn flush(&self, store: &dyn Store) {
        let batch: Vec<CursorUpdate> = {
            let mut pending = self.pending.lock();
            pending.drain().map(|(_, update)| update).collect()
        };
        if batch.is_empty() {
            return;
        }
        let stale_before = UnixMillis::now().minus(STALE_STREAM);
        if let Err(err) = store.save_cursors(&batch, stale_before).await {
            metrics::counter!(names::CURSOR_SAVE_ERRORS).increment(1);
            tracing::warn!(error = %err, agents = batch.len(), "cannot save cursors; will retry");
            let mut pending = self.pending.lock();
            for update in batch {
                match pending.get_mut(&update.stream) {
                    Some(existing) => merge(existing, update),
                    None => {
                        pending.insert(update.stream.clone(), update);
                    }
                }
            }
        }
    }

    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => self.flush(store.as_ref()).await,
            }
        }
        self.flush(store.as_ref()).await;
    }
}

fn merge(existing: &mut CursorUpdate, update: CursorUpdate) {
    // The later report knows the stream's current subscriptions.
    existing.subscriptions = update.subscriptions;
    existing.started_after = existing.started_after.max(update.started_after);
    existing.cursor = existing.cursor.max(update.cursor);
    existing.seen_at = existing.seen_at.max(update.seen_at);
    existing.closed_at = existing.closed_at.or(update.closed_at);
}
