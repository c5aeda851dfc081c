//! One task per receiver that triggers it, coalescing bursts.
//!
//! A worker has at most one delivery in flight and one event pending. An event that
//! arrives while a delivery is in flight becomes the pending one; if an event was already
//! pending, the new one replaces it. A burst of any size therefore costs at most two
//! deliveries: the one in flight when it started, and one for the newest event.
//!
//! Every event submitted gets exactly one [`Completion`]:
//!
//! - the event that was sent gets the outcome of its delivery;
//! - an event that was replaced gets [`DeliveryOutcome::Coalesced`] once the delivery that
//!   covered it finishes (not when it is replaced), carrying that delivery's status and
//!   attempts, and an error text naming the covering seq and, if that delivery did not
//!   succeed, how it ended. The ack for a coalesced event is thus sent only after the
//!   Receiver was actually called for a newer event.
//!
//! Workers outlive broker streams: a delivery continues across a reconnect, and its
//! completion is dropped later if its stream is gone.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::Receiver;
use super::retry::{Deliverer, DeliveryOutcome, DeliveryReport};
use crate::event::TriggerEvent;

/// Which broker stream an event came from, and its seq, so its ack goes to that stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    /// Counts streams; events of an earlier stream can no longer be acked.
    pub generation: u64,
    pub seq: u64,
}

/// Why an event was submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A broker event, to be acked.
    Event(Ticket),
    /// A resync after a cursor expiry; nothing to ack.
    Resync,
}

/// The end of one submitted event for one receiver.
#[derive(Debug, Clone)]
pub struct Completion {
    pub origin: Origin,
    pub receiver: Arc<str>,
    pub report: DeliveryReport,
}

/// One submitted event.
struct Job {
    event: Arc<TriggerEvent>,
    origin: Origin,
    /// Earlier events this one replaced.
    covers: Vec<Origin>,
}

/// The pending event, shared by the handle and the task.
#[derive(Default)]
struct Slot {
    pending: Mutex<Option<Job>>,
    wake: Notify,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<Job>> {
        // Every critical section is a single `take` or `replace`, so a panic elsewhere
        // cannot leave the slot half-updated.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn next_job(&self) -> Job {
        loop {
            if let Some(job) = self.lock().take() {
                return job;
            }
            self.wake.notified().await;
        }
    }
}

/// The submitting side of a worker.
#[derive(Clone)]
pub struct WorkerHandle {
    slot: Arc<Slot>,
}

impl WorkerHandle {
    /// Starts the worker task for `receiver`. It stops when `cancel` fires.
    pub fn spawn(
        receiver: Arc<Receiver>,
        deliverer: Deliverer,
        completions: mpsc::UnboundedSender<Completion>,
        cancel: CancellationToken,
    ) -> Self {
        let slot = Arc::new(Slot::default());
        let worker = Worker {
            name: Arc::from(receiver.name.as_str()),
            receiver,
            deliverer,
            slot: Arc::clone(&slot),
            completions,
        };
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = worker.run() => {}
            }
        });
        Self { slot }
    }

    /// Queues `event`, replacing the pending event if there is one.
    pub fn submit(&self, event: Arc<TriggerEvent>, origin: Origin) {
        let mut pending = self.slot.lock();
        let covers = match pending.take() {
            Some(replaced) => {
                let mut covers = replaced.covers;
                covers.push(replaced.origin);
                covers
            }
            None => Vec::new(),
        };
        *pending = Some(Job {
            event,
            origin,
            covers,
        });
        drop(pending);
        self.slot.wake.notify_one();
    }
}

struct Worker {
    receiver: Arc<Receiver>,
    name: Arc<str>,
    deliverer: Deliverer,
    slot: Arc<Slot>,
    completions: mpsc::UnboundedSender<Completion>,
}

impl Worker {
    async fn run(self) {
        loop {
            let job = self.slot.next_job().await;
            let report = self.deliverer.deliver(&self.receiver, &job.event).await;
            log_delivery(&self.receiver, &job, &report);
            self.complete(job, report);
        }
    }

    fn complete(&self, job: Job, report: DeliveryReport) {
        let coalesced = coalesced_report(&job.event, &report);
        let sent = std::iter::once((job.origin, report));
        let replaced = job.covers.into_iter().map(|o| (o, coalesced.clone()));
        for (origin, report) in sent.chain(replaced) {
            let completion = Completion {
                origin,
                receiver: Arc::clone(&self.name),
                report,
            };
            // The dispatcher only goes away at shutdown, when nothing is acked any more.
            let _ = self.completions.send(completion);
        }
    }
}

/// The report for events that `covering`'s delivery replaced.
fn coalesced_report(covering: &TriggerEvent, report: &DeliveryReport) -> DeliveryReport {
    let into = if covering.is_resync() {
        "a resync trigger".to_owned()
    } else {
        format!("seq {}", covering.seq)
    };
    let error = match report.outcome {
        DeliveryOutcome::Delivered | DeliveryOutcome::Coalesced => format!("coalesced into {into}"),
        DeliveryOutcome::Rejected | DeliveryOutcome::Failed => format!(
            "coalesced into {into}, which was {}: {}",
            report.outcome.as_str(),
            report.error
        ),
    };
    DeliveryReport {
        outcome: DeliveryOutcome::Coalesced,
        error,
        ..report.clone()
    }
}

fn log_delivery(receiver: &Receiver, job: &Job, report: &DeliveryReport) {
    let event = &job.event;
    let latency_ms = u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX);
    macro_rules! delivery_event {
        ($level:ident, $message:literal) => {
            tracing::$level!(
                receiver = %receiver.name,
                url = %receiver.url,
                seq = event.seq,
                event_id = %event.event_id,
                project = %event.project_path,
                r#ref = event.ref_str(),
                outcome = report.outcome.as_str(),
                status = report.http_status,
                attempts = report.attempts,
                latency_ms,
                coalesced = job.covers.len(),
                error = %report.error,
                $message
            )
        };
    }
    match report.outcome {
        DeliveryOutcome::Delivered | DeliveryOutcome::Coalesced => {
            delivery_event!(info, "receiver triggered");
        }
        DeliveryOutcome::Rejected | DeliveryOutcome::Failed => {
            delivery_event!(warn, "receiver trigger failed");
        }
    }
}
