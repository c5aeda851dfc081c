//! One agent stream, from Welcome to close.
//!
//! 1. Register with the hub (live events after its head queue up from now on).
//! 2. Work out where to resume: the later of the agent's own cursor and the stored one; if
//!    retention already removed events after it, say so in the Welcome.
//! 3. Replay the backlog from the store up to the registration head, filtered by the same
//!    routing decision as live events.
//! 4. Serve live events, acks, subscription changes and keepalives until the agent leaves,
//!    the hub closes the stream (overflow, token rotated, agent deleted) or the broker
//!    shuts down.
//!
//! Events go out in seq order, each at most once per stream.

pub mod cursor;
pub mod receiver_health;
pub mod state;
pub mod subscription_status;

use std::sync::Arc;
use std::time::Duration;

use fluxgate_core::{AgentPolicy, DeliveryDetail, DeliveryRecord, DeliveryStage, Seq, UnixMillis};
use fluxgate_proto::v1::{self, agent_message, broker_message};
use fluxgate_store::Store;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use fluxgate_fanout::{
    AckClock, CloseSignal, Delivery, DispatchedEntry, Hub, Registration, StreamInfo,
};

use crate::agent_reports::AgentReports;
use crate::convert::{self, AgentHello};
use fluxgate_routing::Subscription;

use crate::cursor_saver::{CursorSaver, StreamCursor, StreamCursorHandle, subscriptions_digest};
use crate::delivery_recorder::DeliveryRecorder;
use crate::keepalive_grid;
use crate::metric_names as names;
use crate::outbound::{OutboundSender, Outgoing};
use crate::status;
use receiver_health::HealthRecorder;
use state::StreamState;
use subscription_status::StatusRecorder;

/// A boxed future: what the session awaits rarely, kept out of its own future.
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Unacked events recorded as `sent` when a stream ends, at most.
const MAX_UNACKED_RECORDS: usize = 1_000;

/// Sync reports one stream may send per second (a token bucket of [`SYNC_REPORT_BURST`]).
const SYNC_REPORTS_PER_SECOND: f64 = 200.0;
const SYNC_REPORT_BURST: f64 = 2_000.0;

/// One stream's allowance of sync reports.
struct SyncReportBudget {
    tokens: f64,
    refilled: std::time::Instant,
}

impl Default for SyncReportBudget {
    fn default() -> Self {
        Self {
            tokens: SYNC_REPORT_BURST,
            refilled: std::time::Instant::now(),
        }
    }
}

impl SyncReportBudget {
    /// Takes one report's token; false if there is none.
    fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * SYNC_REPORTS_PER_SECOND;
        self.tokens = (self.tokens + earned).min(SYNC_REPORT_BURST);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Pushes read from the store per backlog query.
const BACKLOG_PAGE: u32 = 500;

/// The part of the log a stream replays before its live events: (`after`, `head`], read a
/// page at a time, sent as the agent keeps up.
struct Backlog {
    /// The last seq read from the store.
    after: Seq,
    /// The hub's head when the stream registered: later entries come through the queue.
    head: Seq,
    page: std::collections::VecDeque<fluxgate_core::LogEntry>,
}

impl Backlog {
    fn new(start: Seq, head: Seq) -> Self {
        Self {
            after: start,
            head,
            page: std::collections::VecDeque::new(),
        }
    }

    fn needs_page(&self) -> bool {
        self.page.is_empty() && self.after < self.head
    }

    fn fill(&mut self, page: fluxgate_store::PushPage) {
        // A short page covers everything up to the head (entries retention removed since
        // included): the backlog then ends with what it holds.
        self.after = page.covered_to.clamp(self.after, self.head);
        let head = self.head;
        self.page
            .extend(page.entries.into_iter().take_while(|e| e.seq <= head));
    }

    fn has_entries(&self) -> bool {
        !self.page.is_empty()
    }

    fn next(&mut self) -> Option<fluxgate_core::LogEntry> {
        self.page.pop_front()
    }

    fn is_done(&self) -> bool {
        self.page.is_empty() && self.after >= self.head
    }
}

/// What every stream on this replica shares.
pub struct StreamContext {
    pub hub: Arc<Hub>,
    pub store: Arc<dyn Store>,
    pub cursors: Arc<CursorSaver>,
    pub broker_id: String,
    pub keepalive: Duration,
    /// Events one stream may have sent and not yet had acked: replay waits for acks at
    /// this many; a live event beyond it closes the stream (it resumes from its cursor).
    pub max_unacked: usize,
    /// Where acks and sync reports become delivery records.
    pub deliveries: DeliveryRecorder,
    /// Where agents' receiver health and subscription status go to be written.
    pub reports: Arc<AgentReports>,
    /// Cancelled at shutdown: the service then closes every stream (`AgentStreams::new`).
    pub shutdown: CancellationToken,
}

/// The agent, as authenticated, and what it asked for.
pub struct StreamRequest {
    /// This stream's id: in its tracing span and its cursor row.
    pub stream_id: String,
    pub policy: AgentPolicy,
    pub stored_cursor: Seq,
    pub hello: AgentHello,
}

/// Runs the stream to its end; the returned status (if any) is sent to the agent last.
///
/// The caller runs it inside the stream's span ([`stream_span`]). The request and the
/// inbound stream come boxed: this future lives as long as the stream, and an async fn
/// keeps room for its arguments for its whole life.
pub async fn run(
    context: Arc<StreamContext>,
    mut request: Box<StreamRequest>,
    inbound: Box<Streaming<v1::AgentMessage>>,
    outbound: OutboundSender,
) {
    // The index keeps the subscriptions; the Hello keeps only what identifies them.
    let subscriptions = std::mem::take(&mut request.hello.subscriptions);
    let current_subscriptions = subscriptions.clone();
    let opened_with = OpenedWith {
        digest: subscriptions_digest(&subscriptions),
        count: subscriptions.len(),
    };
    let info = StreamInfo {
        agent_name: request.policy.name.to_string(),
        cluster_name: request.hello.cluster_name.clone(),
        agent_version: request.hello.agent_version.clone(),
        connected_since: UnixMillis::now(),
        last_ack_at: None,
    };
    let registration = match context
        .hub
        .register(
            request.policy.id,
            request.policy.token_generation,
            info,
            request.hello.accepted_kinds,
            subscriptions,
        )
        .await
    {
        Ok(registration) => registration,
        Err(err) => {
            tracing::warn!(error = %err, "stream refused");
            let _ = outbound.send(status::refused(&err).into()).await;
            return;
        }
    };
    let Registration {
        id,
        queue,
        close,
        head,
        status_changed,
        acks,
    } = registration;
    let state = Arc::new(StreamState::new(
        queue,
        close.clone(),
        context.max_unacked,
        tracing::Span::current(),
    ));
    metrics::counter!(names::STREAMS_OPENED).increment(1);
    let agent_label = request.policy.name.to_string();
    metrics::gauge!(names::AGENT_STREAMS, "agent" => agent_label.clone()).increment(1.0);
    let mut session = Session {
        context: context.clone(),
        health: HealthRecorder::default(),
        subscription_status: StatusRecorder::default(),
        policy: request.policy,
        outbound,
        state,
        stream_id: request.stream_id.clone(),
        cursor: None,
        subscriptions: current_subscriptions,
        sync_reports: SyncReportBudget::default(),
        acks,
    };
    let end = session
        .serve(
            Registered {
                id,
                close,
                head,
                status_changed,
            },
            request.stored_cursor,
            &request.hello,
            opened_with,
            inbound,
        )
        .await;
    context.hub.unregister(id).await;
    metrics::gauge!(names::AGENT_STREAMS, "agent" => agent_label).decrement(1.0);
    session.record_unacked();
    let cursor = session.state.lock().tracker.cursor();
    if let Some(stream) = session.cursor.take() {
        stream.close(cursor);
    }
    let reason = match &end {
        Ok(()) => "agent left",
        Err(status) => names::close_label(status.code()),
    };
    metrics::counter!(names::STREAMS_CLOSED, "reason" => reason).increment(1);
    match end {
        Ok(()) => {
            tracing::info!(cursor = %cursor, "stream closed by the agent")
        }
        Err(status) => {
            tracing::info!(cursor = %cursor, reason = status.message(), "closing stream");
            let _ = session.outbound.send(status.into()).await;
        }
    }
}

/// The span every event of one stream is logged in: one grep (`stream=<id>`, or the
/// agent's name) follows a stream from Hello to close on this replica.
pub fn stream_span(stream_id: &str, policy: &AgentPolicy, replica: &str) -> tracing::Span {
    tracing::info_span!(
        "agent_stream",
        stream = stream_id,
        agent = %policy.name,
        agent_id = policy.id.0,
        replica = replica,
    )
}

/// The next page of the backlog's pushes after `after`, up to `head`.
async fn read_page(
    store: &dyn Store,
    after: Seq,
    head: Seq,
) -> Result<fluxgate_store::PushPage, fluxgate_store::StoreError> {
    store.read_pushes(after, head, BACKLOG_PAGE).await
}

/// The status a stream closed by the hub ends with.
fn close_status(reason: Option<fluxgate_fanout::CloseReason>) -> Status {
    reason.map_or_else(|| Status::unavailable("stream closed"), status::closed)
}

/// The stream as the hub registered it, less its queue (which the stream's state holds).
struct Registered {
    id: u64,
    close: Arc<CloseSignal>,
    /// The hub's head at registration: the backlog ends there.
    head: Seq,
    status_changed: Arc<tokio::sync::Notify>,
}

/// What a stream's Hello subscribed to, once the subscriptions went to the hub.
struct OpenedWith {
    digest: String,
    count: usize,
}

struct Session {
    context: Arc<StreamContext>,
    health: HealthRecorder,
    subscription_status: StatusRecorder,
    policy: AgentPolicy,
    outbound: OutboundSender,
    /// Where the stream stands; shared with its response body, which sends live events.
    state: Arc<StreamState>,
    stream_id: String,
    /// This stream's cursor as the saver sees it, once it knows where it resumes.
    cursor: Option<StreamCursorHandle>,
    /// What the stream subscribes to now (Hello, then every accepted change).
    subscriptions: Vec<Subscription>,
    sync_reports: SyncReportBudget,
    /// Where acks are noted for presence.
    acks: AckClock,
}

impl Session {
    async fn serve(
        &mut self,
        registered: Registered,
        stored_cursor: Seq,
        hello: &AgentHello,
        opened_with: OpenedWith,
        mut inbound: Box<Streaming<v1::AgentMessage>>,
    ) -> Result<(), Status> {
        let Registered {
            id,
            close,
            head,
            status_changed,
        } = registered;
        let bounds = self
            .context
            .store
            .log_bounds()
            .await
            .map_err(|e| e.to_api_error().to_grpc_status())?;
        let claimed = hello.resume_after.unwrap_or(Seq::ZERO).min(head);
        let mut start = claimed.max(stored_cursor);
        let cursor_expired = start < bounds.floor;
        if cursor_expired {
            tracing::warn!(cursor = %start, floor = %bounds.floor, "cursor is older than retention");
            start = bounds.floor;
        }
        self.state.start_at(start);
        let cursor_id = StreamCursor::open(
            self.policy.id,
            self.stream_id.clone(),
            opened_with.digest,
            start,
        );
        // From now on this stream holds its agent's cursor at `start`.
        self.cursor = Some(self.context.cursors.open(cursor_id, start));
        tracing::info!(
            cluster = hello.cluster_name.as_deref().unwrap_or("-"),
            version = %hello.agent_version,
            subscriptions = opened_with.count,
            resume_after = %start,
            head = %head,
            cursor_expired,
            "agent stream opened"
        );
        let statuses = self.current_status().await;
        self.subscription_status.record(
            &self.context.reports,
            self.policy.id,
            &self.policy.name,
            &statuses,
            true,
        );
        self.send(broker_message::Message::Welcome(v1::Welcome {
            agent_name: self.policy.name.to_string(),
            broker_id: self.context.broker_id.clone(),
            resume_after: start.get(),
            cursor_expired,
            head_seq: head.get(),
            keepalive_seconds: u32::try_from(self.context.keepalive.as_secs()).unwrap_or(u32::MAX),
            accepts_receiver_health: true,
            accepts_sync_reports: true,
            subscription_status: subscription_status::to_wire(&statuses),
        }))
        .await?;
        self.record_lag();

        let mut backlog = Backlog::new(start, head);
        // Whether the response body was handed the live events (after the backlog).
        let mut live = false;
        // On the connections' shared grid: see `keepalive_grid`.
        let mut keepalive = keepalive_grid::interval(self.context.keepalive);
        // Futures made once and polled on every wake-up (making them anew each time would
        // register and unregister a waiter on every event).
        let closed = close.closed();
        tokio::pin!(closed);
        let status_notified = status_changed.notified();
        tokio::pin!(status_notified);
        // Every branch's future is made on every pass, enabled or not: the backlog's are
        // plain `async fn`s, which cost nothing until polled, and the permit borrows this
        // sender rather than cloning the session's each time.
        let outbound = self.outbound.clone();
        let body_gone = outbound.closed();
        tokio::pin!(body_gone);
        loop {
            let max_unacked = self.context.max_unacked;
            tokio::select! {
                biased;
                // The hub closed the stream: it did not keep up, its agent was deleted or
                // its token rotated, or the broker is shutting down.
                () = &mut closed => return Err(close_status(close.reason())),
                // The response body is gone: it ended the stream itself (see
                // `StreamState::poll_live`), or the agent left.
                () = &mut body_gone => return self.state.take_end().map_or(Ok(()), Err),
                // Acks are read while the backlog replays too, so that replay is paced by
                // the agent and an agent far behind still catches up.
                message = inbound.message() => match message {
                    Ok(Some(message)) => {
                        if let Some(change) = self.handle_agent_message(message)? {
                            self.change_subscriptions(id, change).await?;
                        }
                    }
                    Ok(None) => return Ok(()),
                    Err(status) => {
                        tracing::debug!(error = %status, "agent stream broke");
                        return Ok(());
                    }
                },
                page = read_page(self.context.store.as_ref(), backlog.after, backlog.head), if backlog.needs_page() => {
                    let page = page.map_err(|e| e.to_api_error().to_grpc_status())?;
                    backlog.fill(page);
                    if backlog.is_done() {
                        self.backlog_replayed(backlog.head);
                    }
                }
                permit = outbound.reserve(),
                    if backlog.has_entries() && self.state.lock().tracker.in_flight() < max_unacked =>
                {
                    let permit = permit.map_err(|_| Status::cancelled("the agent went away"))?;
                    let entry = backlog.next().expect("the branch runs only with entries");
                    match self.route_backlog(id, entry).await {
                        Ok(delivery) => {
                            if let Some(message) = self.state.backlog_event(delivery) {
                                permit.send(Outgoing::Message(Box::new(message)));
                                metrics::counter!(names::BACKLOG_EVENTS_SENT).increment(1);
                            }
                        }
                        Err(passed) => self.state.lock().tracker.pass(passed),
                    }
                    if backlog.is_done() {
                        self.backlog_replayed(backlog.head);
                    }
                }
                // After the backlog, the body takes live events from the hub's queue.
                permit = outbound.reserve(), if backlog.is_done() && !live => {
                    let permit = permit.map_err(|_| Status::cancelled("the agent went away"))?;
                    permit.send(Outgoing::Live(self.state.clone()));
                    live = true;
                }
                () = &mut status_notified => {
                    status_notified.set(status_changed.notified());
                    self.send_status(false).await?;
                }
                _ = keepalive.tick() => {
                    // The head is read first: everything dispatched up to it is queued.
                    let head = self.context.hub.head();
                    let Some(position) = self.state.keepalive_position(head, backlog.is_done()) else {
                        continue;
                    };
                    self.send(broker_message::Message::Keepalive(v1::Keepalive { position: position.get() })).await?;
                    self.record_cursor();
                    self.record_lag();
                }
            }
        }
    }

    /// The backlog is replayed up to `head`: the stream has passed it.
    fn backlog_replayed(&self, head: Seq) {
        self.state.lock().tracker.pass(head);
        tracing::debug!(head = %head, "backlog replayed");
    }

    /// Keeps the cursor row's identity true to the new subscriptions. A closed stream's
    /// hold is released only by a later stream with the same subscriptions that started at
    /// or below it (`store::sql::agents`): for this stream, the changed set is covered only
    /// from the hub's head at the change on, so that is where it now counts as started.
    fn subscriptions_changed(&mut self, add: Vec<Subscription>, remove: &[Subscription]) {
        self.subscriptions
            .retain(|kept| !remove.iter().any(|gone| gone.same_as(kept)));
        for added in add {
            if !self.subscriptions.iter().any(|kept| kept.same_as(&added)) {
                self.subscriptions.push(added);
            }
        }
        let head = self.context.hub.head();
        if let Some(stream) = &self.cursor {
            stream.resubscribed(subscriptions_digest(&self.subscriptions), head);
        }
    }

    /// Records a sync stage the agent saw, and times it from the push on this broker's
    /// clock. Reports over the stream's budget are dropped (and counted), so one agent
    /// cannot crowd the others' records out of the writer's queue.
    fn record_sync(&mut self, report: convert::SyncStageReport) {
        if !self.sync_reports.take() {
            metrics::counter!(names::DELIVERY_RECORDS_DROPPED).increment(1);
            tracing::debug!(seq = %report.seq, "sync report over this stream's budget; dropped");
            return;
        }
        let now = UnixMillis::now();
        metrics::counter!(names::SYNC_REPORTS, "stage" => report.stage.as_str()).increment(1);
        if let Some(received_at) = report.event_received_at {
            let since_push = received_at.elapsed_until(now).as_secs_f64();
            match report.stage {
                DeliveryStage::Fetched => {
                    metrics::histogram!(names::STAGE_PUSH_TO_FETCHED).record(since_push)
                }
                DeliveryStage::Applied => {
                    metrics::histogram!(names::STAGE_PUSH_TO_APPLIED).record(since_push)
                }
                _ => {}
            }
        }
        let level_is_warn = matches!(
            report.stage,
            DeliveryStage::Failed | DeliveryStage::TimedOut
        );
        if level_is_warn {
            tracing::warn!(seq = %report.seq, stage = report.stage.as_str(), object = %report.object, revision = %report.revision, message = %report.message, "agent reports the sync did not complete");
        } else {
            tracing::info!(seq = %report.seq, stage = report.stage.as_str(), object = %report.object, revision = %report.revision, "agent reports a sync stage");
        }
        self.context.deliveries.record(DeliveryRecord {
            seq: report.seq,
            agent: self.policy.id,
            stage: report.stage,
            object: report.object,
            at: now,
            detail: DeliveryDetail {
                replica: self.context.broker_id.clone(),
                revision: report.revision,
                message: report.message,
                observed_at: report.observed_at,
                ..DeliveryDetail::default()
            },
        });
    }

    /// When the stream ends: the events it sent that were never acked, so that a trace
    /// shows where they stopped (the oldest [`MAX_UNACKED_RECORDS`]).
    fn record_unacked(&self) {
        let now = UnixMillis::now();
        let unacked: Vec<_> = self
            .state
            .lock()
            .tracker
            .unacked(MAX_UNACKED_RECORDS)
            .collect();
        for (seq, in_flight) in unacked {
            self.context.deliveries.record(DeliveryRecord {
                seq,
                agent: self.policy.id,
                stage: DeliveryStage::Sent,
                object: String::new(),
                at: now,
                detail: DeliveryDetail {
                    sent_at: Some(in_flight.sent_at),
                    replica: self.context.broker_id.clone(),
                    ..DeliveryDetail::default()
                },
            });
        }
    }

    /// Sets this agent's cursor-lag gauge (on keepalives: not on the ack path).
    fn record_lag(&self) {
        let lag = self
            .context
            .hub
            .head()
            .get()
            .saturating_sub(self.state.lock().tracker.cursor().get());
        metrics::gauge!(names::AGENT_CURSOR_LAG, "agent" => self.policy.name.to_string())
            .set(lag as f64);
    }

    /// Whether each subscription can match now, in order, without repeats.
    async fn current_status(&self) -> Vec<fluxgate_core::SubscriptionStatus> {
        let subscriptions = subscription_status::distinct(&self.subscriptions);
        self.context
            .hub
            .subscription_status(self.policy.id, &subscriptions)
            .await
            .unwrap_or_default()
    }

    /// Sends the subscriptions' status: `always` (the answer to a subscription change), or
    /// only if it differs from what the agent last got.
    /// Boxed, like [`Self::send`].
    fn send_status(&mut self, always: bool) -> BoxFuture<'_, Result<(), Status>> {
        Box::pin(async move {
            let statuses = self.current_status().await;
            if !self.subscription_status.record(
                &self.context.reports,
                self.policy.id,
                &self.policy.name,
                &statuses,
                always,
            ) {
                return Ok(());
            }
            self.send(broker_message::Message::SubscriptionStatus(
                v1::SubscriptionStatusUpdate {
                    subscriptions: subscription_status::to_wire(&statuses),
                },
            ))
            .await
        })
    }

    /// Applies a subscription change and answers with the new status. Boxed, like
    /// [`Self::send`]: changes are rare.
    fn change_subscriptions(
        &mut self,
        id: u64,
        change: v1::SubscriptionChange,
    ) -> BoxFuture<'_, Result<(), Status>> {
        Box::pin(async move {
            let (add, remove) = convert::subscription_change(change)?;
            tracing::info!(
                added = add.len(),
                removed = remove.len(),
                "subscriptions changed"
            );
            self.context
                .hub
                .change_subscriptions(id, add.clone(), &remove)
                .await
                .map_err(|limit| status::over_limit(&limit))?;
            self.subscriptions_changed(add, &remove);
            self.send_status(true).await
        })
    }

    fn record_cursor(&self) {
        if let Some(stream) = &self.cursor {
            stream.moved(self.state.lock().tracker.cursor());
        }
    }

    /// Routes a backlog entry for this stream: its delivery, or the seq the stream passes
    /// (not for it). Boxed, like [`Self::send`]: the entry is large.
    fn route_backlog(
        &self,
        id: u64,
        entry: fluxgate_core::LogEntry,
    ) -> BoxFuture<'_, Result<Delivery, Seq>> {
        Box::pin(async move {
            match self
                .context
                .hub
                .route_backlog(id, self.policy.id, &entry)
                .await
            {
                Some(matched) => Ok(Delivery {
                    entry: Arc::new(DispatchedEntry::new(entry)),
                    matched,
                }),
                None => Err(entry.seq),
            }
        })
    }

    /// Sends `message` once the body has room. Boxed, as every rare wait of the session
    /// is: the session's future is held by every idle stream, and it is as large as the
    /// largest thing it awaits in place.
    fn send(&self, message: broker_message::Message) -> BoxFuture<'_, Result<(), Status>> {
        Box::pin(async move {
            self.outbound
                .send(
                    v1::BrokerMessage {
                        message: Some(message),
                    }
                    .into(),
                )
                .await
                .map_err(|_| Status::cancelled("the agent went away"))
        })
    }

    /// Handles what an agent sent, at once; a subscription change, the one message that
    /// has to wait (for the hub), is handed back to be applied
    /// ([`Self::change_subscriptions`]).
    fn handle_agent_message(
        &mut self,
        message: v1::AgentMessage,
    ) -> Result<Option<v1::SubscriptionChange>, Status> {
        match message.message {
            Some(agent_message::Message::Ack(ack)) => {
                let ack = convert::ack(ack)?;
                let metrics = &self.state.metrics;
                metrics.acks.increment(1);
                for outcome in &ack.outcomes {
                    metrics.receiver_outcome(*outcome);
                }
                let (in_flight, cursor) = {
                    let mut position = self.state.lock();
                    let in_flight = position.tracker.acked(ack.seq);
                    (in_flight, position.tracker.cursor())
                };
                let now = UnixMillis::now();
                if let Some(in_flight) = in_flight {
                    let waited = in_flight.received_at.elapsed_until(now);
                    metrics.delivery_latency.record(waited.as_secs_f64());
                    metrics
                        .sent_to_acked
                        .record(in_flight.sent_at.elapsed_until(now).as_secs_f64());
                    tracing::debug!(seq = %ack.seq, latency_ms = waited.as_millis(), handling_ms = ack.handling_ms, "event acked");
                    self.context.deliveries.record(DeliveryRecord {
                        seq: ack.seq,
                        agent: self.policy.id,
                        stage: DeliveryStage::Acked,
                        object: String::new(),
                        at: now,
                        detail: DeliveryDetail {
                            sent_at: Some(in_flight.sent_at),
                            handling_ms: Some(ack.handling_ms),
                            receivers: ack.receivers,
                            replica: self.context.broker_id.clone(),
                            ..DeliveryDetail::default()
                        },
                    });
                }
                if let Some(stream) = &self.cursor {
                    stream.moved(cursor);
                }
                self.acks.record(now);
            }
            Some(agent_message::Message::SubscriptionChange(change)) => {
                return Ok(Some(change));
            }
            Some(agent_message::Message::ReceiverHealth(report)) => {
                self.health.record(
                    &self.context.reports,
                    self.policy.id,
                    &self.policy.name,
                    report,
                )?;
            }
            Some(agent_message::Message::SyncReport(report)) => {
                let report = convert::sync_report(report, self.context.hub.head())?;
                self.record_sync(report);
            }
            Some(agent_message::Message::Hello(_)) => {
                return Err(Status::invalid_argument(
                    "hello may only be sent once, as the first message",
                ));
            }
            // A kind added after this broker was built decodes as none: ignored, so newer
            // agents keep their stream.
            None => {
                metrics::counter!(names::AGENT_MESSAGES_IGNORED).increment(1);
                tracing::debug!("ignoring an agent message of an unknown kind");
            }
        }
        Ok(None)
    }
}
