//! Persists stream cursors in batches.
//!
//! Each stream registers when it opens ([`CursorSaver::open`]) and gets a handle of its
//! own: acks and keepalives move its cursor there with atomics, so the ack path shares no
//! lock with other streams. The saver writes every stream that moved (or changed its
//! subscriptions, or closed) every `interval`, and once more at shutdown. The store sets
//! each agent's cursor to the lowest of its streams' (and closed streams' holds), so a
//! stream can never move its agent's cursor past an event another of its streams still
//! holds unacked. A failed write is retried with the next batch. Losing a write costs only
//! redelivery: delivery is at-least-once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
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

/// How often a stream whose cursor did not move is written as a sign of life, for
/// readers that count a stream seen within `presence_window` as connected: the newest
/// write is then at most two keepalives and a flush old, with a quarter keepalive to spare.
/// With the defaults (keepalive 15 s, flush 1 s, window 45 s) that is every other
/// keepalive; with a window of three keepalives it is never below one keepalive's writes.
pub fn sign_of_life(presence_window: Duration, keepalive: Duration, flush: Duration) -> Duration {
    presence_window
        .saturating_sub(keepalive)
        .saturating_sub(flush)
        .saturating_sub(keepalive / 4)
}

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

/// Every open stream's cursor (and closed ones not yet written), shared by the replica.
#[derive(Default)]
pub struct CursorSaver {
    /// See [`sign_of_life`]; zero (the default) writes a stream on every report.
    sign_of_life: Duration,
    streams: Mutex<HashMap<String, Arc<TrackedStream>>>,
    /// Updates whose write failed, merged into the next batch.
    failed: Mutex<HashMap<String, CursorUpdate>>,
}

/// One stream's cursor as its session moves it.
struct TrackedStream {
    /// Identity fields that change on a subscription change: only this stream's session
    /// and the saver take this lock.
    identity: Mutex<StreamCursor>,
    cursor: AtomicU64,
    seen_at: AtomicI64,
    /// The `seen_at` last taken for writing.
    written_seen_at: AtomicI64,
    /// When the stream ended; zero while it is open.
    closed_at: AtomicI64,
    /// Changed since the saver last took it.
    dirty: AtomicBool,
    sign_of_life: Duration,
}

/// A stream's handle on its cursor; dropping it (the session ended, however) reports the
/// stream closed at its last cursor.
pub struct StreamCursorHandle {
    stream: Arc<TrackedStream>,
}

impl CursorSaver {
    /// A saver that writes a stream whose cursor did not move only every `sign_of_life`
    /// ([`sign_of_life`]).
    pub fn with_sign_of_life(sign_of_life: Duration) -> Self {
        Self {
            sign_of_life,
            ..Self::default()
        }
    }

    /// Registers a stream that holds its agent's cursor at `cursor` from now on (reported
    /// with the next batch).
    pub fn open(&self, identity: StreamCursor, cursor: Seq) -> StreamCursorHandle {
        let id = identity.stream.clone();
        let stream = Arc::new(TrackedStream {
            identity: Mutex::new(identity),
            cursor: AtomicU64::new(cursor.get()),
            seen_at: AtomicI64::new(UnixMillis::now().get()),
            written_seen_at: AtomicI64::new(0),
            closed_at: AtomicI64::new(0),
            dirty: AtomicBool::new(true),
            sign_of_life: self.sign_of_life,
        });
        self.streams.lock().insert(id, Arc::clone(&stream));
        StreamCursorHandle { stream }
    }

    /// Writes what changed; on failure keeps it for the next try.
    pub async fn flush(&self, store: &dyn Store) {
        let mut batch: HashMap<String, CursorUpdate> = std::mem::take(&mut *self.failed.lock());
        {
            let mut streams = self.streams.lock();
            streams.retain(|id, stream| {
                let closed = stream.closed_at.load(Ordering::Acquire) != 0;
                if stream.dirty.swap(false, Ordering::AcqRel) {
                    let update = stream.update();
                    match batch.get_mut(id) {
                        Some(existing) => merge(existing, update),
                        None => {
                            batch.insert(id.clone(), update);
                        }
                    }
                }
                !closed
            });
        }
        if batch.is_empty() {
            return;
        }
        let updates: Vec<CursorUpdate> = batch.into_values().collect();
        let stale_before = UnixMillis::now().minus(STALE_STREAM);
        if let Err(err) = store.save_cursors(&updates, stale_before).await {
            metrics::counter!(names::CURSOR_SAVE_ERRORS).increment(1);
            tracing::warn!(error = %err, streams = updates.len(), "cannot save cursors; will retry");
            let mut failed = self.failed.lock();
            for update in updates {
                match failed.get_mut(&update.stream) {
                    Some(existing) => merge(existing, update),
                    None => {
                        failed.insert(update.stream.clone(), update);
                    }
                }
            }
        }
    }

    /// Streams registered and not yet written closed.
    pub fn tracked(&self) -> usize {
        self.streams.lock().len()
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

impl TrackedStream {
    /// What to write for this stream now.
    fn update(&self) -> CursorUpdate {
        let identity = self.identity.lock();
        let closed_at = self.closed_at.load(Ordering::Acquire);
        let seen_at = self.seen_at.load(Ordering::Acquire);
        self.written_seen_at.store(seen_at, Ordering::Release);
        CursorUpdate {
            agent: identity.agent,
            stream: identity.stream.clone(),
            subscriptions: identity.subscriptions.clone(),
            started_after: identity.started_after,
            opened_at: identity.opened_at,
            cursor: Seq(self.cursor.load(Ordering::Acquire)),
            seen_at: UnixMillis(seen_at),
            closed_at: (closed_at != 0).then_some(UnixMillis(closed_at)),
        }
    }

    fn moved(&self, cursor: Seq) {
        let before = self.cursor.fetch_max(cursor.get(), Ordering::AcqRel);
        let now = UnixMillis::now();
        self.seen_at.fetch_max(now.get(), Ordering::AcqRel);
        let written = UnixMillis(self.written_seen_at.load(Ordering::Acquire));
        if cursor.get() > before || written.elapsed_until(now) >= self.sign_of_life {
            self.dirty.store(true, Ordering::Release);
        }
    }
}

impl StreamCursorHandle {
    /// The stream is at `cursor` (an ack moved it, or a keepalive shows it is alive): written
    /// with the next batch if it moved, or as a sign of life ([`sign_of_life`]).
    pub fn moved(&self, cursor: Seq) {
        self.stream.moved(cursor);
    }

    /// The stream now covers subscriptions of digest `subscriptions`
    /// ([`subscriptions_digest`]) from `started_after` on.
    pub fn resubscribed(&self, subscriptions: String, started_after: Seq) {
        {
            let mut identity = self.stream.identity.lock();
            identity.subscriptions = subscriptions;
            identity.started_after = identity.started_after.max(started_after);
        }
        self.stream.dirty.store(true, Ordering::Release);
    }

    /// The stream ended at `cursor`.
    pub fn close(self, cursor: Seq) {
        self.stream.moved(cursor);
        // Drop reports the close.
    }
}

impl Drop for StreamCursorHandle {
    fn drop(&mut self) {
        let now = UnixMillis::now().get().max(1);
        let _ = self
            .stream
            .closed_at
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        self.stream.seen_at.fetch_max(now, Ordering::AcqRel);
        self.stream.dirty.store(true, Ordering::Release);
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

#[cfg(test)]
mod tests {
    use fluxgate_core::{AgentName, AgentToken, FullPath};
    use fluxgate_store::NewAgent;
    use fluxgate_store::testing::TestDatabase;

    use super::*;

    async fn agent(store: &dyn Store) -> AgentId {
        let (record, _) = store
            .create_agent(NewAgent {
                name: AgentName::parse("saver").unwrap(),
                config_project: FullPath::parse("group/config").unwrap(),
                grants: Vec::new(),
                allow_internal: false,
                token_digest: AgentToken::generate().digest(),
            })
            .await
            .unwrap();
        record.policy.id
    }

    async fn stored_cursor(store: &dyn Store, agent: AgentId) -> Seq {
        let agents = store.list_agents().await.unwrap();
        agents.iter().find(|a| a.policy.id == agent).unwrap().cursor
    }

    fn identity(agent: AgentId) -> StreamCursor {
        StreamCursor::open(agent, new_stream_id(), "digest".to_owned(), Seq(0))
    }

    #[tokio::test]
    async fn moves_are_written_and_a_dropped_handle_closes_its_stream() {
        let db = TestDatabase::sqlite();
        let store = db.store().await;
        let agent = agent(&store).await;
        let saver = CursorSaver::default();

        let stream = saver.open(identity(agent), Seq(0));
        stream.moved(Seq(7));
        saver.flush(&store).await;
        assert_eq!(stored_cursor(&store, agent).await, Seq(7));
        assert_eq!(saver.tracked(), 1, "an open stream stays tracked");

        // However the session ends, dropping its handle reports the close; once written,
        // the stream is forgotten.
        drop(stream);
        saver.flush(&store).await;
        assert_eq!(
            saver.tracked(),
            0,
            "a closed stream is written, then forgotten"
        );
        assert_eq!(stored_cursor(&store, agent).await, Seq(7));
    }

    #[tokio::test]
    async fn a_cursor_never_moves_back() {
        let db = TestDatabase::sqlite();
        let store = db.store().await;
        let agent = agent(&store).await;
        let saver = CursorSaver::default();
        let stream = saver.open(identity(agent), Seq(3));
        stream.moved(Seq(9));
        stream.moved(Seq(5));
        saver.flush(&store).await;
        assert_eq!(stored_cursor(&store, agent).await, Seq(9));
        stream.close(Seq(9));
    }

    #[test]
    fn a_sign_of_life_keeps_a_stream_within_the_presence_window() {
        let s = Duration::from_secs;
        // Defaults: every other keepalive.
        assert_eq!(
            sign_of_life(s(45), s(15), s(1)),
            Duration::from_millis(25_250)
        );
        // Short keepalives (tests): every keepalive.
        assert!(sign_of_life(s(3), s(1), s(1)) < s(1));
    }

    #[tokio::test]
    async fn an_idle_stream_is_rewritten_only_as_a_sign_of_life() {
        let db = TestDatabase::sqlite();
        let store = db.store().await;
        let agent = agent(&store).await;
        let saver = CursorSaver::with_sign_of_life(Duration::from_secs(60));
        let stream = saver.open(identity(agent), Seq(4));
        saver.flush(&store).await;
        let dirty = |stream: &StreamCursorHandle| stream.stream.dirty.load(Ordering::Acquire);

        stream.moved(Seq(4));
        assert!(
            !dirty(&stream),
            "a keepalive that moved nothing is not written"
        );
        stream.moved(Seq(5));
        assert!(dirty(&stream), "a moved cursor is written");
        saver.flush(&store).await;

        // Last written longer ago than the sign-of-life interval: written again.
        let long_ago = UnixMillis::now().minus(Duration::from_secs(60)).get() - 1;
        stream
            .stream
            .written_seen_at
            .store(long_ago, Ordering::Release);
        stream.moved(Seq(5));
        assert!(dirty(&stream), "an idle stream still shows it is alive");
    }
}
