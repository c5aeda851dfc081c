//! Group commit: one writer task turns concurrent appends into one transaction.
//!
//! Callers send a hook and wait for its outcome. The writer takes every request waiting
//! when it is free (up to a batch limit), appends them in one transaction, tells the
//! [`CommitListener`] what was committed (in seq order, before answering anyone), then
//! answers each caller. While one transaction commits, the next batch queues up, so
//! throughput does not hinge on one fsync per hook, and each hook is still answered only
//! after its commit.

use std::sync::Arc;
use std::time::Instant;

use fluxgate_core::HookBatch;
use fluxgate_core::LogEntry;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::api::Store;
use crate::error::StoreError;
use crate::model::HookOutcome;

/// Longest time one group-commit transaction may take.
const TRANSACTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Told about every committed entry, in seq order, before the hooks are answered.
pub trait CommitListener: Send + Sync + 'static {
    fn committed(&self, entries: &[LogEntry]);
}

/// A listener that does nothing (for tools that only write).
pub struct NoListener;

impl CommitListener for NoListener {
    fn committed(&self, _entries: &[LogEntry]) {}
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The transaction failed; every hook in it gets the same error.
    #[error(transparent)]
    Store(Arc<StoreError>),
    #[error("the writer has stopped (shutting down)")]
    Stopped,
}

struct Request {
    hook: HookBatch,
    reply: oneshot::Sender<Result<HookOutcome, Arc<StoreError>>>,
}

impl AppendError {
    pub fn code(&self) -> fluxgate_core::ErrorCode {
        match self {
            AppendError::Store(err) => err.code(),
            AppendError::Stopped => fluxgate_core::ErrorCode::Unavailable,
        }
    }
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct Appender {
    requests: mpsc::Sender<Request>,
}

impl Appender {
    /// Starts the writer. It stops once every `Appender` clone is dropped and the queue is
    /// drained.
    pub fn spawn(
        store: Arc<dyn Store>,
        listener: Arc<dyn CommitListener>,
        max_batch: usize,
    ) -> (Self, JoinHandle<()>) {
        let (requests, queue) = mpsc::channel(max_batch * 4);
        let task = tokio::spawn(run_writer(store, listener, queue, max_batch.max(1)));
        (Self { requests }, task)
    }

    /// Appends one hook and waits until it is committed (or refused).
    pub async fn append(&self, hook: HookBatch) -> Result<HookOutcome, AppendError> {
        let (reply, outcome) = oneshot::channel();
        self.requests
            .send(Request { hook, reply })
            .await
            .map_err(|_| AppendError::Stopped)?;
        match outcome.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(err)) => Err(AppendError::Store(err)),
            Err(_) => Err(AppendError::Stopped),
        }
    }
}

async fn run_writer(
    store: Arc<dyn Store>,
    listener: Arc<dyn CommitListener>,
    mut queue: mpsc::Receiver<Request>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while queue.recv_many(&mut batch, max_batch).await > 0 {
        let (hooks, replies): (Vec<HookBatch>, Vec<_>) =
            batch.drain(..).map(|r| (r.hook, r.reply)).unzip();
        let started = Instant::now();
        // A database that stops answering (a partition, not a refused connection) must not
        // hold the writer: give up on the transaction; dropping it rolls it back.
        let result = match tokio::time::timeout(TRANSACTION_TIMEOUT, store.append(&hooks)).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::NoAnswer {
                waited: TRANSACTION_TIMEOUT,
            }),
        };
        metrics::histogram!(crate::metric_names::APPEND_SECONDS)
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!(crate::metric_names::APPEND_BATCH_SIZE).record(hooks.len() as f64);
        match result {
            Ok(result) => {
                if !result.entries.is_empty() {
                    listener.committed(&result.entries);
                }
                let (hooks, outcomes) = (replies.len(), result.outcomes.len());
                let mut outcomes_left = result.outcomes.into_iter();
                let mismatch = (hooks != outcomes)
                    .then(|| Arc::new(StoreError::OutcomeCountMismatch { hooks, outcomes }));
                if let Some(err) = &mismatch {
                    tracing::error!(error = %err, "append answered the wrong number of outcomes");
                }
                for reply_to in replies {
                    let reply = match (outcomes_left.next(), &mismatch) {
                        (Some(outcome), None) => Ok(outcome),
                        (_, Some(err)) => Err(err.clone()),
                        (None, None) => unreachable!("as many outcomes as hooks"),
                    };
                    let _ = reply_to.send(reply);
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, hooks = hooks.len(), "append failed; nothing was stored");
                let err = Arc::new(err);
                for reply_to in replies {
                    let _ = reply_to.send(Err(err.clone()));
                }
            }
        }
    }
}
