//! One broker stream, from Hello to its end.
//!
//! The agent sends a Hello (identity, subscriptions, its cursor), then expects a Welcome
//! first, then events and keepalives. Each event goes to the [`Dispatcher`]; each finished
//! event is acked on this stream and moves the [`Cursor`]. Finished events that belong to
//! an earlier stream are dropped: the broker sends those again.
//!
//! If the Welcome says the broker accepts them, the session also sends the failing
//! receivers ([`crate::receiver::health`]): once after the Welcome (an empty report clears
//! what an earlier run of the agent reported), then whenever they change.
//!
//! The session ends when the broker closes the stream or fails it, when the broker breaks
//! the protocol, when nothing arrives for three keepalive periods, or on shutdown. It
//! reports how it ended so the connection loop can pick the delay before the next one.

use std::fmt;
use std::time::Duration;

use fluxgate_core::bearer;
use fluxgate_proto::v1 as proto;
use fluxgate_proto::v1::agent_service_client::AgentServiceClient;
use proto::broker_message::Message;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Channel;

use crate::cursor::Cursor;
use crate::dispatch::{AckReport, Dispatcher, MAX_OPEN_EVENTS};
use crate::event::TriggerEvent;
use crate::kubernetes::sync_watch::SyncReports;
use crate::readiness::Readiness;
use crate::receiver::ReceiverSet;
use crate::wire::{self, Identity};

/// How long to wait for the stream to open and the Welcome to arrive.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);

/// How many keepalive periods of silence end the stream.
const MISSED_KEEPALIVES: u32 = 3;

/// Why a session ended.
#[derive(Debug)]
pub enum EndReason {
    Shutdown,
    /// The broker ended the stream without an error.
    Closed,
    /// The broker (or the transport) failed the stream or refused to open it.
    Status(tonic::Status),
    /// The broker sent something the protocol does not allow.
    Protocol(&'static str),
    /// Nothing arrived for this long.
    Silent(Duration),
    /// Too many events are waiting for receivers; resume from the cursor.
    Overloaded,
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shutdown => f.write_str("shutting down"),
            Self::Closed => f.write_str("the broker closed the stream"),
            Self::Status(status) => write!(f, "{:?}: {}", status.code(), status.message()),
            Self::Protocol(what) => write!(f, "protocol error: {what}"),
            Self::Silent(duration) => write!(f, "nothing received for {duration:?}"),
            Self::Overloaded => write!(
                f,
                "more than {MAX_OPEN_EVENTS} events are waiting for receivers; resuming from \
                 the cursor"
            ),
        }
    }
}

/// How a session ended, and whether the broker had accepted it.
#[derive(Debug)]
pub struct SessionEnd {
    /// A Welcome was received.
    pub welcomed: bool,
    pub reason: EndReason,
}

/// What a session needs from the connection that outlives it.
pub struct SessionContext<'a> {
    pub identity: &'a Identity,
    /// The receivers to serve; when they change, the dispatcher and the stream's
    /// subscriptions follow on this stream.
    pub receivers: &'a mut watch::Receiver<ReceiverSet>,
    pub authorization: &'a AsciiMetadataValue,
    /// Counts streams; acks of other generations are dropped.
    pub generation: u64,
    pub dispatcher: &'a mut Dispatcher,
    pub cursor: &'a mut Cursor,
    /// Told when the stream is up (welcomed) and when it ends.
    pub readiness: &'a Readiness,
    /// What the sync watch saw Flux do, sent when the broker accepts it.
    pub sync_reports: Option<&'a mut SyncReports>,
    pub shutdown: &'a CancellationToken,
}

/// Runs one stream on `client` until it ends.
pub async fn run(
    mut client: AgentServiceClient<Channel>,
    context: SessionContext<'_>,
) -> SessionEnd {
    let resume_after = context.cursor.begin_stream();
    context.dispatcher.begin_stream(context.generation);
    let receivers = context.receivers.borrow_and_update().clone();
    // Acks of an earlier stream's events cannot be sent: the broker sends them again.
    let _ = context.dispatcher.set_receivers(&receivers);
    let subscribed = wire::subscriptions(&receivers);
    let health = context.dispatcher.health().subscribe();
    let (outbound, outbound_messages) = mpsc::unbounded_channel();
    // The receiving half is alive until `request` is dropped, so this cannot fail.
    let _ = outbound.send(wire::hello(
        context.identity,
        subscribed.clone(),
        resume_after,
    ));
    let mut request = tonic::Request::new(UnboundedReceiverStream::new(outbound_messages));
    request
        .metadata_mut()
        .insert("authorization", context.authorization.clone());
    tracing::info!(
        generation = context.generation,
        ?resume_after,
        "opening the event stream"
    );

    let opened = tokio::select! {
        () = context.shutdown.cancelled() => return not_welcomed(EndReason::Shutdown),
        opened = tokio::time::timeout(WELCOME_TIMEOUT, client.subscribe(request)) => opened,
    };
    let inbound = match opened {
        Err(_) => return not_welcomed(EndReason::Silent(WELCOME_TIMEOUT)),
        Ok(Err(status)) => return not_welcomed(EndReason::Status(status)),
        Ok(Ok(response)) => response.into_inner(),
    };
    let mut session = Session {
        context,
        outbound,
        welcomed: false,
        silence_limit: Some(WELCOME_TIMEOUT),
        health,
        reports_health: false,
        reports_sync: false,
        subscribed,
        subscription_status: Default::default(),
    };
    let reason = session.pump(inbound).await;
    session.context.readiness.set_broker_stream(false);
    SessionEnd {
        welcomed: session.welcomed,
        reason,
    }
}

/// The bearer token as gRPC metadata.
pub fn authorization(
    token: &str,
) -> Result<AsciiMetadataValue, tonic::metadata::errors::InvalidMetadataValue> {
    let mut value = MetadataValue::try_from(bearer::header_value(token))?;
    value.set_sensitive(true);
    Ok(value)
}

fn not_welcomed(reason: EndReason) -> SessionEnd {
    SessionEnd {
        welcomed: false,
        reason,
    }
}

struct Session<'a> {
    context: SessionContext<'a>,
    outbound: mpsc::UnboundedSender<proto::AgentMessage>,
    welcomed: bool,
    /// End the stream after this long without a message; `None`: never.
    silence_limit: Option<Duration>,
    /// Changes of the failing receivers.
    health: watch::Receiver<u64>,
    /// The broker accepts ReceiverHealth messages.
    reports_health: bool,
    /// The broker accepts SyncReport messages.
    reports_sync: bool,
    /// The subscriptions this stream has asked for so far.
    subscribed: Vec<proto::Subscription>,
    /// What the broker said about them.
    subscription_status: crate::subscription_status::SubscriptionStatusLog,
}

impl Session<'_> {
    async fn pump(&mut self, mut inbound: tonic::Streaming<proto::BrokerMessage>) -> EndReason {
        let mut last_heard = Instant::now();
        loop {
            let silence_deadline = self.silence_limit.map(|limit| last_heard + limit);
            tokio::select! {
                biased;
                () = self.context.shutdown.cancelled() => return EndReason::Shutdown,
                // Acks first: they are cheap, and they let the cursor advance during a
                // long replay.
                ack = self.context.dispatcher.next_ack() => self.send_ack(&ack),
                () = health_changed(&mut self.health, self.reports_health) => self.send_health(),
                () = set_changed(self.context.receivers) => self.receivers_changed(),
                report = next_sync_report(&mut self.context.sync_reports, self.reports_sync) => {
                    // The stream's request half lives as long as this session.
                    let _ = self.outbound.send(proto::AgentMessage {
                        message: Some(proto::agent_message::Message::SyncReport(report)),
                    });
                }
                message = inbound.message() => {
                    last_heard = Instant::now();
                    match message {
                        Ok(Some(message)) => {
                            if let Err(reason) = self.handle(message) {
                                return reason;
                            }
                        }
                        Ok(None) => return EndReason::Closed,
                        Err(status) => return EndReason::Status(status),
                    }
                }
                () = sleep_until(silence_deadline) => {
                    return EndReason::Silent(self.silence_limit.unwrap_or_default());
                }
            }
        }
    }

    fn handle(&mut self, message: proto::BrokerMessage) -> Result<(), EndReason> {
        let Some(message) = message.message else {
            tracing::debug!("ignoring a broker message of an unknown kind");
            return Ok(());
        };
        match message {
            Message::Welcome(welcome) if !self.welcomed => {
                self.on_welcome(&welcome);
                Ok(())
            }
            Message::Welcome(_) => Err(EndReason::Protocol("a second Welcome")),
            _ if !self.welcomed => Err(EndReason::Protocol("a message before the Welcome")),
            Message::Event(_) if self.context.dispatcher.is_full() => Err(EndReason::Overloaded),
            Message::Event(event) => {
                self.on_event(event);
                Ok(())
            }
            Message::Keepalive(keepalive) => {
                self.context.cursor.keepalive(keepalive.position);
                Ok(())
            }
            Message::SubscriptionStatus(update) => {
                self.subscription_status.update(&update.subscriptions);
                Ok(())
            }
        }
    }

    fn on_welcome(&mut self, welcome: &proto::Welcome) {
        self.welcomed = true;
        self.context.readiness.set_broker_stream(true);
        self.silence_limit = (welcome.keepalive_seconds > 0)
            .then(|| Duration::from_secs(u64::from(welcome.keepalive_seconds)) * MISSED_KEEPALIVES);
        tracing::info!(
            agent = %welcome.agent_name,
            broker = %welcome.broker_id,
            resume_after = welcome.resume_after,
            head_seq = welcome.head_seq,
            cursor_expired = welcome.cursor_expired,
            keepalive_seconds = welcome.keepalive_seconds,
            accepts_receiver_health = welcome.accepts_receiver_health,
            accepts_sync_reports = welcome.accepts_sync_reports,
            "connected to the broker"
        );
        self.reports_sync = welcome.accepts_sync_reports;
        self.subscription_status
            .welcome(&welcome.subscription_status);
        if welcome.accepts_receiver_health {
            self.reports_health = true;
            self.send_health();
        }
        if welcome.cursor_expired {
            tracing::warn!(
                resume_after = welcome.resume_after,
                "the broker no longer holds every event after this agent's cursor: pushes \
                 may have been missed; triggering every receiver once"
            );
            self.context.dispatcher.resync_all();
        }
    }

    fn on_event(&mut self, event: proto::Event) {
        let seq = event.seq;
        self.context.cursor.received(seq);
        match TriggerEvent::try_from(event) {
            Ok(event) => {
                if let Some(ack) = self
                    .context
                    .dispatcher
                    .dispatch(event, self.context.generation)
                {
                    self.send_ack(&ack);
                }
            }
            Err(error) => {
                tracing::warn!(seq, %error, "unusable event, acking it without triggering");
                self.send_ack(&AckReport {
                    ticket: crate::receiver::worker::Ticket {
                        generation: self.context.generation,
                        seq,
                    },
                    outcomes: Vec::new(),
                    handling: Duration::ZERO,
                });
            }
        }
    }

    fn send_ack(&mut self, ack: &AckReport) {
        if ack.ticket.generation != self.context.generation {
            tracing::debug!(
                seq = ack.ticket.seq,
                "dropping the ack of an event from an earlier stream; the broker resends it"
            );
            return;
        }
        // The stream's request half lives as long as this session.
        let _ = self.outbound.send(wire::ack(ack));
        self.context.cursor.acked(ack.ticket.seq);
    }
}

impl Session<'_> {
    /// Serves the new receiver set on this stream: the dispatcher first, so that events
    /// of new subscriptions find their receivers, then the subscription change.
    fn receivers_changed(&mut self) {
        let receivers = self.context.receivers.borrow_and_update().clone();
        for ack in self.context.dispatcher.set_receivers(&receivers) {
            self.send_ack(&ack);
        }
        let subscriptions = wire::subscriptions(&receivers);
        if let Some(change) = wire::subscription_change(&self.subscribed, &subscriptions) {
            tracing::info!(
                receivers = receivers.len(),
                subscriptions = subscriptions.len(),
                "receivers changed; updating the stream's subscriptions"
            );
            // The stream's request half lives as long as this session.
            let _ = self.outbound.send(change);
            self.subscribed = subscriptions;
        }
    }

    fn send_health(&mut self) {
        self.health.mark_unchanged();
        let failing = self.context.dispatcher.health().report();
        tracing::debug!(failing = failing.len(), "reporting receiver health");
        // The stream's request half lives as long as this session.
        let _ = self.outbound.send(wire::receiver_health(&failing));
    }
}

/// Resolves when the failing receivers changed, if they are reported at all.
async fn health_changed(changes: &mut watch::Receiver<u64>, reported: bool) {
    if !reported || changes.changed().await.is_err() {
        // Not reported, or the board is gone (only at shutdown).
        std::future::pending::<()>().await;
    }
}

/// The next sync report, if they are sent at all; reports wait while no broker takes them.
async fn next_sync_report(reports: &mut Option<&mut SyncReports>, sent: bool) -> proto::SyncReport {
    match reports {
        Some(reports) if sent => match reports.recv().await {
            Some(report) => report,
            None => std::future::pending().await,
        },
        _ => std::future::pending().await,
    }
}

/// Resolves when the receiver set changed; never if it can no longer change (static
/// receivers only).
async fn set_changed(receivers: &mut watch::Receiver<ReceiverSet>) {
    if receivers.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
