//! One task per receiver that triggers it, coalescing bursts and retrying until it
//! answers.
//!
//! A worker has at most one delivery in flight and one event pending. An event that
//! arrives while a delivery is in flight becomes the pending one; if an event was already
//! pending, the new one replaces it. A burst of any size against a healthy receiver
//! therefore costs at most two deliveries: the one in flight when it started, and one for
//! the newest event.
//!
//! A delivery ends only when the Receiver answers: 2xx, or a final refusal (400, 413, …;
//! see [`super::retry`]). While it answers with a retryable status or not at all, the
//! worker retries with capped, jittered backoff, for as long as that takes. Before each
//! retry it takes the pending event, if there is one, so the retry goes on with the newest
//! event (and the same backoff): a receiver that is down for an hour while pushes arrive
//! is called, when it comes back, once, for the newest push.
//!
//! Every event submitted gets exactly one [`Completion`], and only when a delivery
//! answered:
//!
//! - the event that was sent last gets the outcome of its delivery;
//! - every event it replaced (pending when it arrived, or swapped out between retries)
//!   gets [`DeliveryOutcome::Coalesced`], carrying that delivery's status and attempts,
//!   and an error text naming the covering seq and, if that delivery was refused, why.
//!   So a coalesced event is acked only after the Receiver was actually called for a
//!   newer one.
//!
//! Workers outlive broker streams: a delivery, retries included, continues across a
//! reconnect. Events of an earlier stream can no longer be acked: the tickets a job holds
//! for them are dropped whenever it absorbs another job, so what a job holds is bounded
//! by the events of the current stream, which the broker caps (see [`crate::dispatch`]).
//! The broker sends those events again on the new stream, and they coalesce into the
//! running retry rather than start a second delivery.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use fluxgate_core::Backoff;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::Receiver;
use super::health::{FailureTracker, HealthBoard};
use super::payload::TriggerRequest;
use super::retry::{
    Deliverer, DeliveryOutcome, DeliveryReport, Verdict, classify, describe, http_status,
};
use crate::event::TriggerEvent;
use crate::kubernetes::flux_status::Wanted;
use crate::kubernetes::sync_watch::{SyncTriggers, Triggered};

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

/// What every worker shares with the dispatcher.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    pub deliverer: Deliverer,
    pub completions: mpsc::UnboundedSender<Completion>,
    pub health: Arc<HealthBoard>,
    /// The current stream's generation: tickets of older ones are dropped.
    pub generation: Arc<AtomicU64>,
    /// Where triggers of receivers with a synced source go to be followed.
    pub sync: Option<SyncTriggers>,
}

/// One submitted event, and the earlier ones its delivery covers.
struct Job {
    event: Arc<TriggerEvent>,
    origin: Origin,
    /// Earlier events of the current stream this one replaced.
    covers: Vec<Ticket>,
}

impl Job {
    /// Takes over `older`: its event and everything it covered are now covered by this
    /// job's delivery. Tickets of streams before `generation` are dropped.
    fn absorb(&mut self, older: Job, generation: u64) {
        let mut covers = older.covers;
        if let Origin::Event(ticket) = older.origin {
            covers.push(ticket);
        }
        covers.append(&mut self.covers);
        covers.retain(|ticket| ticket.generation >= generation);
        self.covers = covers;
    }

    /// The oldest broker event this job holds unacked.
    fn oldest_seq(&self) -> Option<u64> {
        let own = match self.origin {
            Origin::Event(ticket) => Some(ticket.seq),
            Origin::Resync => None,
        };
        self.covers.iter().map(|t| t.seq).chain(own).min()
    }
}

/// The pending event and the receiver's current definition, shared by the handle and the
/// task.
struct Slot {
    pending: Mutex<Option<Job>>,
    /// Replaced when the receiver changes (its URL or ref, say); read before every call.
    receiver: Mutex<Arc<Receiver>>,
    wake: Notify,
    generation: Arc<AtomicU64>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<Job>> {
        // Every critical section is a `take` or a `take` then `replace`, with no panicking
        // code in between, so a panic elsewhere cannot leave the slot half-updated.
        self.pending.lock()
    }

    fn receiver(&self) -> Arc<Receiver> {
        Arc::clone(&self.receiver.lock())
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn take(&self) -> Option<Job> {
        self.lock().take()
    }

    async fn next_job(&self) -> Job {
        loop {
            if let Some(job) = self.take() {
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
        context: WorkerContext,
        cancel: CancellationToken,
    ) -> Self {
        let name: Arc<str> = Arc::from(receiver.name.as_str());
        let slot = Arc::new(Slot {
            pending: Mutex::new(None),
            receiver: Mutex::new(receiver),
            wake: Notify::new(),
            generation: Arc::clone(&context.generation),
        });
        let worker = Worker {
            tracker: FailureTracker::new(
                Arc::clone(&name),
                context.health,
                context.deliverer.policy(),
            ),
            name,
            deliverer: context.deliverer,
            slot: Arc::clone(&slot),
            completions: context.completions,
            sync: context.sync,
        };
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = worker.run() => {}
            }
        });
        Self { slot }
    }

    /// Replaces the receiver's definition (same name) from the next call on. A delivery in
    /// flight, retries included, goes on with the new one.
    pub fn update(&self, receiver: Arc<Receiver>) {
        *self.slot.receiver.lock() = receiver;
    }

    /// Queues `event`, replacing the pending event if there is one.
    pub fn submit(&self, event: Arc<TriggerEvent>, origin: Origin) {
        let mut job = Job {
            event,
            origin,
            covers: Vec::new(),
        };
        let mut pending = self.slot.lock();
        if let Some(replaced) = pending.take() {
            job.absorb(replaced, self.slot.generation());
        }
        *pending = Some(job);
        drop(pending);
        self.slot.wake.notify_one();
    }
}

struct Worker {
    name: Arc<str>,
    deliverer: Deliverer,
    slot: Arc<Slot>,
    completions: mpsc::UnboundedSender<Completion>,
    tracker: FailureTracker,
    sync: Option<SyncTriggers>,
}

impl Worker {
    async fn run(mut self) {
        loop {
            let job = self.slot.next_job().await;
            let (job, report) = self.deliver(job).await;
            let receiver = self.slot.receiver();
            log_delivery(&receiver, &job, &report);
            self.follow_sync(&receiver, &job, &report);
            self.complete(job, report);
        }
    }

    /// Calls the Receiver until it answers, moving on to the newest pending event before
    /// every retry. Returns the job that was sent last, with its report.
    async fn deliver(&mut self, mut job: Job) -> (Job, DeliveryReport) {
        let started = Instant::now();
        let policy = *self.deliverer.policy();
        let mut backoff = Backoff::new(policy.initial_backoff, policy.max_backoff);
        let mut attempts: u32 = 0;
        loop {
            if let Some(mut newer) = self.slot.take() {
                newer.absorb(job, self.slot.generation());
                job = newer;
            }
            let receiver = self.slot.receiver();
            let request = match TriggerRequest::build(&receiver, &job.event) {
                Ok(request) => request,
                Err(error) => {
                    let report = DeliveryReport {
                        outcome: DeliveryOutcome::Rejected,
                        http_status: 0,
                        attempts,
                        error: error.to_string(),
                        elapsed: started.elapsed(),
                    };
                    return (job, report);
                }
            };
            attempts = attempts.saturating_add(1);
            let result = self.deliverer.call(&receiver, &request).await;
            let outcome = match classify(&result) {
                Verdict::Delivered => DeliveryOutcome::Delivered,
                Verdict::Reject => DeliveryOutcome::Rejected,
                Verdict::Retry => {
                    self.tracker.failed(&result, job.oldest_seq());
                    let delay = backoff.next_delay();
                    tracing::debug!(
                        receiver = %self.name,
                        seq = job.event.seq,
                        attempt = attempts,
                        result = %describe(&result),
                        retry_in = ?delay,
                        "receiver call failed, retrying"
                    );
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            self.tracker.answered();
            let error = match outcome {
                DeliveryOutcome::Rejected => format!("rejected: {}", describe(&result)),
                DeliveryOutcome::Delivered | DeliveryOutcome::Coalesced => String::new(),
            };
            let report = DeliveryReport {
                outcome,
                http_status: http_status(&result),
                attempts,
                error,
                elapsed: started.elapsed(),
            };
            return (job, report);
        }
    }

    /// Hands a delivered broker event to the sync watch, when the receiver has a source.
    fn follow_sync(&self, receiver: &Receiver, job: &Job, report: &DeliveryReport) {
        let (Some(sync), Some(source)) = (&self.sync, &receiver.synced_source) else {
            return;
        };
        if report.outcome != DeliveryOutcome::Delivered {
            return;
        }
        let Origin::Event(ticket) = job.origin else {
            return;
        };
        let Some(wanted) = wanted(&job.event) else {
            return;
        };
        sync.triggered(Triggered {
            source: source.clone(),
            seqs: std::iter::once(ticket.seq)
                .chain(job.covers.iter().map(|covered| covered.seq))
                .collect(),
            wanted,
            event_received_at: job.event.received_at,
        });
    }

    fn complete(&self, job: Job, report: DeliveryReport) {
        metrics::counter!(crate::metric_names::TRIGGERS, "outcome" => report.outcome.as_str())
            .increment(1);
        metrics::histogram!(crate::metric_names::TRIGGER_DURATION)
            .record(report.elapsed.as_secs_f64());
        let coalesced = coalesced_report(&job.event, &report);
        let sent = std::iter::once((job.origin, report));
        let replaced = job
            .covers
            .into_iter()
            .map(|ticket| (Origin::Event(ticket), coalesced.clone()));
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

/// What Flux should fetch for `event`; `None` for a deleted ref (nothing to fetch).
fn wanted(event: &TriggerEvent) -> Option<Wanted> {
    if let Some(digest) = event.artifact.as_ref().and_then(|a| a.digest.as_deref()) {
        return Some(Wanted::Digest(digest.to_ascii_lowercase()));
    }
    let after = event.after.to_ascii_lowercase();
    if after.len() == 40 && after.bytes().all(|b| b.is_ascii_hexdigit()) {
        if after.bytes().all(|b| b == b'0') {
            return None;
        }
        return Some(Wanted::Commit(after));
    }
    Some(Wanted::Newer)
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
        DeliveryOutcome::Rejected => format!(
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
        DeliveryOutcome::Rejected => {
            delivery_event!(warn, "receiver refused the trigger for good");
        }
    }
}

#[cfg(test)]
mod tests {
    use fluxgate_core::{EventKind, FullPath, GitRef};

    use super::*;

    fn job(generation: u64, seq: u64) -> Job {
        let git_ref = GitRef::parse("refs/heads/main").expect("ref");
        Job {
            event: Arc::new(TriggerEvent {
                seq,
                event_id: format!("e{seq}"),
                project_id: 1,
                project_path: FullPath::parse("g/a").expect("path"),
                matched_projects: Vec::new(),
                kind: EventKind::for_ref(&git_ref),
                artifact: None,
                received_at: None,
                git_ref: Some(git_ref),
                before: String::new(),
                after: String::new(),
            }),
            origin: Origin::Event(Ticket { generation, seq }),
            covers: Vec::new(),
        }
    }

    fn seqs(job: &Job) -> Vec<(u64, u64)> {
        let mut covered: Vec<_> = job.covers.iter().map(|t| (t.generation, t.seq)).collect();
        covered.sort_unstable();
        covered
    }

    #[test]
    fn a_newer_job_covers_the_older_one_and_what_it_covered() {
        let mut newest = job(1, 3);
        let mut middle = job(1, 2);
        middle.absorb(job(1, 1), 1);
        newest.absorb(middle, 1);
        assert_eq!(seqs(&newest), [(1, 1), (1, 2)]);
        assert_eq!(newest.oldest_seq(), Some(1));
    }

    #[test]
    fn tickets_of_earlier_streams_are_dropped() {
        let mut older = job(1, 5);
        older.absorb(job(1, 4), 1);
        // Stream 2 began: the broker sends 4 and 5 again; the old tickets cannot be acked.
        let mut redelivered = job(2, 5);
        redelivered.absorb(older, 2);
        assert!(redelivered.covers.is_empty(), "{:?}", seqs(&redelivered));
        assert_eq!(redelivered.oldest_seq(), Some(5));
    }
}
