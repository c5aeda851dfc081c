//! Delivery records on their way to the store, written in batches off the stream's path.
//!
//! Streams hand records over without waiting ([`DeliveryRecorder::record`]: a bounded,
//! lock-free queue); one writer task takes everything waiting and saves it in one
//! transaction, at most every [`FLUSH_INTERVAL`], so ingest shares the database with one
//! short write at a time rather than one per ack. When the queue is full (the database is
//! slower than the agents) a record is dropped, counted and logged: records describe
//! deliveries, they are not needed to make them. A batch that fails is retried once, then
//! dropped the same way. At shutdown the writer saves what is queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fluxgate_core::{DeliveryRecord, DeliveryStage};
use fluxgate_store::Store;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metric_names as names;

/// Records waiting at most; beyond it new ones are dropped.
pub const QUEUE_CAPACITY: usize = 100_000;
/// How often the writer saves what is waiting.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Records per transaction at most.
const MAX_BATCH: usize = 5_000;

/// The streams' handle to the writer.
#[derive(Clone)]
pub struct DeliveryRecorder {
    queue: mpsc::Sender<DeliveryRecord>,
    dropped: Arc<AtomicU64>,
    /// Records per stage, in the order of [`DeliveryStage::ALL`] (looked up once, not in
    /// the registry per record: there is one per ack).
    recorded: Arc<[metrics::Counter; DeliveryStage::ALL.len()]>,
}

/// The writer task; run it with [`DeliveryWriter::run`].
pub struct DeliveryWriter {
    queue: mpsc::Receiver<DeliveryRecord>,
    dropped: Arc<AtomicU64>,
}

impl DeliveryRecorder {
    pub fn new() -> (Self, DeliveryWriter) {
        Self::with_capacity(QUEUE_CAPACITY)
    }

    pub fn with_capacity(capacity: usize) -> (Self, DeliveryWriter) {
        let (queue, receiver) = mpsc::channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        (
            Self {
                queue,
                dropped: Arc::clone(&dropped),
                recorded: Arc::new(DeliveryStage::ALL.map(
                    |stage| metrics::counter!(names::DELIVERY_RECORDS, "stage" => stage.as_str()),
                )),
            },
            DeliveryWriter {
                queue: receiver,
                dropped,
            },
        )
    }

    /// Queues `record` for the writer; drops (and counts) it if the queue is full.
    pub fn record(&self, record: DeliveryRecord) {
        if let Some(recorded) = DeliveryStage::ALL
            .iter()
            .position(|stage| *stage == record.stage)
        {
            self.recorded[recorded].increment(1);
        }
        if self.queue.try_send(record).is_err() {
            metrics::counter!(names::DELIVERY_RECORDS_DROPPED).increment(1);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl DeliveryWriter {
    /// Saves what is queued every [`FLUSH_INTERVAL`] until `shutdown`, then once more.
    pub async fn run(mut self, store: Arc<dyn Store>, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                received = self.queue.recv_many(&mut batch, MAX_BATCH) => {
                    if received == 0 {
                        break;
                    }
                }
            }
            self.save(store.as_ref(), &mut batch).await;
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(FLUSH_INTERVAL) => {}
            }
        }
        while let Ok(record) = self.queue.try_recv() {
            batch.push(record);
            if batch.len() == MAX_BATCH {
                self.save(store.as_ref(), &mut batch).await;
            }
        }
        self.save(store.as_ref(), &mut batch).await;
    }

    /// Saves `batch` (taking every record already waiting, up to [`MAX_BATCH`]), then
    /// empties it.
    async fn save(&mut self, store: &dyn Store, batch: &mut Vec<DeliveryRecord>) {
        let room = MAX_BATCH.saturating_sub(batch.len());
        if room > 0 {
            while batch.len() < MAX_BATCH {
                match self.queue.try_recv() {
                    Ok(record) => batch.push(record),
                    Err(_) => break,
                }
            }
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "delivery records dropped: the database is slower than the agents; \
                 fluxgate trace will miss these stages"
            );
        }
        if batch.is_empty() {
            return;
        }
        let mut result = store.save_delivery_records(batch).await;
        if let Err(first) = &result {
            tracing::debug!(error = %first, "cannot save delivery records; retrying once");
            tokio::time::sleep(FLUSH_INTERVAL).await;
            result = store.save_delivery_records(batch).await;
        }
        if let Err(error) = result {
            metrics::counter!(names::DELIVERY_RECORD_SAVE_ERRORS).increment(1);
            metrics::counter!(names::DELIVERY_RECORDS_DROPPED).increment(batch.len() as u64);
            tracing::warn!(%error, records = batch.len(), "cannot save delivery records; dropped");
        }
        batch.clear();
    }
}
