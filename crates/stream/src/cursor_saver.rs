//! Persists agent cursors in batches.
//!
//! Streams report their agent's cursor whenever it moves (and on keepalives, as a sign of
//! life); the saver keeps the highest per agent and writes them all every `interval`, and
//! once more at shutdown. A failed write is retried with the next batch. Losing a write
//! costs only redelivery: delivery is at-least-once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fluxgate_core::{AgentId, Seq, UnixMillis};
use fluxgate_store::{CursorUpdate, Store};
use tokio_util::sync::CancellationToken;

use crate::metric_names as names;

#[derive(Default)]
pub struct CursorSaver {
    pending: Mutex<HashMap<AgentId, CursorUpdate>>,
}

impl CursorSaver {
    pub fn record(&self, agent: AgentId, cursor: Seq) {
        let update = CursorUpdate {
            agent,
            cursor,
            seen_at: UnixMillis::now(),
        };
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .entry(agent)
            .and_modify(|existing| merge(existing, update))
            .or_insert(update);
    }

    /// Writes what is pending; on failure keeps it for the next try.
    pub async fn flush(&self, store: &dyn Store) {
        let batch: Vec<CursorUpdate> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().map(|(_, update)| update).collect()
        };
        if batch.is_empty() {
            return;
        }
        if let Err(err) = store.save_cursors(&batch).await {
            metrics::counter!(names::CURSOR_SAVE_ERRORS).increment(1);
            tracing::warn!(error = %err, agents = batch.len(), "cannot save cursors; will retry");
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for update in batch {
                pending
                    .entry(update.agent)
                    .and_modify(|existing| merge(existing, update))
                    .or_insert(update);
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
    existing.cursor = existing.cursor.max(update.cursor);
    existing.seen_at = existing.seen_at.max(update.seen_at);
}
