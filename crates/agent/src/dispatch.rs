//! From broker events to receiver workers, and from their completions back to acks.
//!
//! Each event goes to the worker of every receiver it matches ([`Receiver::matches`]).
//! Its ack is ready once every one of those receivers has completed it, which happens
//! only when the receiver answered: it was delivered (2xx), coalesced into a later event
//! whose call was answered, or rejected for good (400, 413, other final 4xx). A receiver
//! that keeps failing is retried until it answers (see [`crate::receiver::worker`]), and
//! until then its events stay unacked: the broker keeps the agent's cursor below them and
//! sends them again after a reconnect. Each receiver has its own worker, so one failing
//! receiver never delays events that only other receivers match. An event that matches no
//! receiver is acked at once with no outcomes. Acks come out in completion order, not seq
//! order.
//!
//! # Bound
//!
//! Open events of earlier streams can never be acked, so [`Dispatcher::begin_stream`]
//! forgets them (their receivers' workers drop their tickets too, and the broker sends
//! them again). What is left is the current stream's unacked events, which the broker caps
//! at its in-flight limit (100 000). The dispatcher enforces the same cap,
//! [`MAX_OPEN_EVENTS`]: when it is reached, [`Dispatcher::is_full`] tells the session to
//! end the stream and resume from the cursor, as the broker itself would.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::TriggerEvent;
use crate::kubernetes::sync_watch::SyncTriggers;
use crate::receiver::Receiver;
use crate::receiver::health::HealthBoard;
use crate::receiver::retry::{Deliverer, DeliveryReport};
use crate::receiver::worker::{Completion, Origin, Ticket, WorkerContext, WorkerHandle};

/// True if both define the same receiver (the worker needs no update).
pub fn same_definition(a: &Receiver, b: &Receiver) -> bool {
    a.project.as_str() == b.project.as_str()
        && a.also_projects
            .iter()
            .map(|p| p.as_str())
            .eq(b.also_projects.iter().map(|p| p.as_str()))
        && a.accepts == b.accepts
        && a.ref_pattern.as_ref().map(|p| p.as_str()) == b.ref_pattern.as_ref().map(|p| p.as_str())
        && a.kind == b.kind
        && a.url == b.url
        && a.token.expose() == b.token.expose()
        && a.route == b.route
        && a.synced_source == b.synced_source
}

/// Most events the dispatcher holds unacked: the broker's own in-flight cap per stream.
pub const MAX_OPEN_EVENTS: usize = 100_000;

/// One receiver's part of an ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverOutcome {
    pub receiver: String,
    pub report: DeliveryReport,
}

/// Everything needed to ack one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckReport {
    pub ticket: Ticket,
    pub outcomes: Vec<ReceiverOutcome>,
    /// From the event's arrival to the last receiver finishing.
    pub handling: Duration,
}

/// An event waiting for its receivers.
struct OpenEvent {
    received_at: Instant,
    /// Names of the receivers that have not completed it yet.
    waiting_for: Vec<Arc<str>>,
    outcomes: Vec<ReceiverOutcome>,
}

struct ReceiverSlot {
    receiver: Arc<Receiver>,
    name: Arc<str>,
    worker: WorkerHandle,
    /// Stops this receiver's worker when it is removed.
    stop: CancellationToken,
}

pub struct Dispatcher {
    receivers: Vec<ReceiverSlot>,
    /// What new workers share, and the token their own ones are children of.
    context: WorkerContext,
    cancel: CancellationToken,
    open: HashMap<Ticket, OpenEvent>,
    /// The current stream's generation, shared with the workers.
    generation: Arc<AtomicU64>,
    health: Arc<HealthBoard>,
    completions: mpsc::UnboundedReceiver<Completion>,
    /// Kept so `completions` never reports closed while the dispatcher lives.
    _completions_sender: mpsc::UnboundedSender<Completion>,
}

impl Dispatcher {
    /// Starts one worker per receiver. They stop when `cancel` fires.
    pub fn start(
        receivers: Vec<Receiver>,
        deliverer: &Deliverer,
        sync: Option<SyncTriggers>,
        cancel: &CancellationToken,
    ) -> Self {
        let (sender, completions) = mpsc::unbounded_channel();
        let context = WorkerContext {
            deliverer: deliverer.clone(),
            completions: sender.clone(),
            health: Arc::default(),
            generation: Arc::default(),
            sync,
        };
        let mut dispatcher = Self {
            receivers: Vec::new(),
            open: HashMap::new(),
            generation: Arc::clone(&context.generation),
            health: Arc::clone(&context.health),
            context,
            cancel: cancel.clone(),
            completions,
            _completions_sender: sender,
        };
        dispatcher.set_receivers(&receivers);
        dispatcher
    }

    /// Makes `receivers` the receiver set: starts workers for new names, stops those of
    /// names no longer there, and hands changed definitions to their running workers (a
    /// delivery in flight goes on). Events that waited only for removed receivers are done:
    /// their acks are returned. Names must be unique.
    pub fn set_receivers(&mut self, receivers: &[Receiver]) -> Vec<AckReport> {
        let mut kept = Vec::with_capacity(receivers.len());
        let mut old: HashMap<Arc<str>, ReceiverSlot> = self
            .receivers
            .drain(..)
            .map(|slot| (Arc::clone(&slot.name), slot))
            .collect();
        for receiver in receivers {
            let receiver = Arc::new(receiver.clone());
            match old.remove(receiver.name.as_str()) {
                Some(mut slot) => {
                    if !same_definition(&slot.receiver, &receiver) {
                        slot.worker.update(Arc::clone(&receiver));
                        slot.receiver = receiver;
                    }
                    kept.push(slot);
                }
                None => {
                    let stop = self.cancel.child_token();
                    let worker = WorkerHandle::spawn(
                        Arc::clone(&receiver),
                        self.context.clone(),
                        stop.clone(),
                    );
                    kept.push(ReceiverSlot {
                        name: Arc::from(receiver.name.as_str()),
                        receiver,
                        worker,
                        stop,
                    });
                }
            }
        }
        self.receivers = kept;
        let mut acks = Vec::new();
        for (name, slot) in old {
            slot.stop.cancel();
            acks.extend(self.forget_receiver(&name));
        }
        acks
    }

    /// The receivers in use.
    pub fn receivers(&self) -> impl Iterator<Item = &Receiver> {
        self.receivers.iter().map(|slot| slot.receiver.as_ref())
    }

    /// A removed receiver completes nothing more: events waiting for it wait for the others
    /// only, and those it was the last one for are done.
    fn forget_receiver(&mut self, name: &str) -> Vec<AckReport> {
        let mut done = Vec::new();
        for (ticket, open) in &mut self.open {
            let before = open.waiting_for.len();
            open.waiting_for.retain(|waiting| waiting.as_ref() != name);
            if open.waiting_for.is_empty() && before > 0 {
                done.push(*ticket);
            }
        }
        done.into_iter()
            .filter_map(|ticket| self.finish(ticket))
            .collect()
    }

    /// A new broker stream begins: events of earlier streams can no longer be acked, so
    /// they are forgotten here and in the workers (the broker sends them again).
    pub fn begin_stream(&mut self, generation: u64) {
        self.generation.store(generation, Ordering::Release);
        let before = self.open.len();
        self.open
            .retain(|ticket, _| ticket.generation >= generation);
        let forgotten = before - self.open.len();
        if forgotten > 0 {
            tracing::debug!(
                forgotten,
                "events of an earlier stream are still waiting for receivers; the broker \
                 sends them again"
            );
        }
    }

    /// True when [`MAX_OPEN_EVENTS`] events are waiting: take no more on this stream.
    pub fn is_full(&self) -> bool {
        self.open.len() >= MAX_OPEN_EVENTS
    }

    /// Events waiting for their receivers.
    pub fn open_events(&self) -> usize {
        self.open.len()
    }

    /// The receivers failing for longer than the threshold.
    pub fn health(&self) -> &Arc<HealthBoard> {
        &self.health
    }

    /// Hands `event` to its receivers. Returns the ack at once if it matches none.
    pub fn dispatch(&mut self, event: TriggerEvent, generation: u64) -> Option<AckReport> {
        let ticket = Ticket {
            generation,
            seq: event.seq,
        };
        if self.open.contains_key(&ticket) {
            tracing::warn!(seq = event.seq, "duplicate event on one stream, ignored");
            return None;
        }
        let matching: Vec<&ReceiverSlot> = self
            .receivers
            .iter()
            .filter(|slot| slot.receiver.matches(&event))
            .collect();
        if matching.is_empty() {
            tracing::debug!(
                seq = event.seq,
                project = %event.project_path,
                r#ref = event.ref_str(),
                "event matches no receiver"
            );
            return Some(AckReport {
                ticket,
                outcomes: Vec::new(),
                handling: Duration::ZERO,
            });
        }
        self.open.insert(
            ticket,
            OpenEvent {
                received_at: Instant::now(),
                waiting_for: matching.iter().map(|slot| Arc::clone(&slot.name)).collect(),
                outcomes: Vec::with_capacity(matching.len()),
            },
        );
        let event = Arc::new(event);
        for slot in matching {
            slot.worker
                .submit(Arc::clone(&event), Origin::Event(ticket));
        }
        None
    }

    /// Triggers every receiver once with a resync event. Nothing is acked for these.
    pub fn resync_all(&self) {
        for slot in &self.receivers {
            let event = Arc::new(TriggerEvent::resync(&slot.receiver));
            slot.worker.submit(event, Origin::Resync);
        }
    }

    /// Waits for the next event whose receivers have all completed. Cancel-safe.
    pub async fn next_ack(&mut self) -> AckReport {
        loop {
            let Some(completion) = self.completions.recv().await else {
                // Unreachable: `self` holds a sender.
                return std::future::pending().await;
            };
            if let Some(ack) = self.record(completion) {
                return ack;
            }
        }
    }

    fn record(&mut self, completion: Completion) -> Option<AckReport> {
        let Origin::Event(ticket) = completion.origin else {
            return None;
        };
        let open = self.open.get_mut(&ticket)?;
        // A receiver that was removed (or replaced) no longer counts.
        let position = open
            .waiting_for
            .iter()
            .position(|name| *name == completion.receiver)?;
        open.waiting_for.swap_remove(position);
        open.outcomes.push(ReceiverOutcome {
            receiver: completion.receiver.to_string(),
            report: completion.report,
        });
        if !open.waiting_for.is_empty() {
            return None;
        }
        self.finish(ticket)
    }

    fn finish(&mut self, ticket: Ticket) -> Option<AckReport> {
        let done = self.open.remove(&ticket)?;
        Some(AckReport {
            ticket,
            outcomes: done.outcomes,
            handling: done.received_at.elapsed(),
        })
    }
}
