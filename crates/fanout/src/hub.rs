//! The hub: this replica's routing state and its open agent streams.
//!
//! The follower hands the hub every log entry in seq order. State entries update the
//! routing state (and close streams whose agent was deleted or whose token was rotated);
//! pushes go to the matching streams' bounded queues with a non-blocking send. A stream
//! whose queue is full is closed as [`CloseReason::Lagged`], so a slow agent never stalls
//! the others, and loses nothing: it resumes from its cursor.
//!
//! The state is behind one asynchronous lock (a task waiting for it yields its thread;
//! every critical section costs what it adds, removes or matches, never a scan of every
//! subscription). Dispatching an entry and advancing [`Hub::head`] happen under that lock,
//! and registration takes the same lock: a stream registered at head H gets every entry after
//! H in its queue, and reads everything up to H from the store.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use fluxgate_core::{
    AgentId, LogEntry, LogRecord, Seq, StateChange, StateEffect, SubscriptionStatus, UnixMillis,
};
use fluxgate_routing::{
    AcceptedKinds, AgentEffect, RoutingState, SubscriberId, Subscription, SubscriptionIndex,
    explain, route_one,
};
use tokio::sync::{Notify, RwLock, RwLockWriteGuard, mpsc, watch};

use crate::close::{CloseReason, CloseSignal};
use crate::limits::{HubLimits, LimitError};
use crate::metric_names as names;

/// An event for one stream, with the subscription labels it matched.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub entry: Arc<DispatchedEntry>,
    pub matched: Vec<std::sync::Arc<str>>,
}

/// A log entry on its way to the streams that get it, with room for its wire form: the
/// first stream to send it encodes it, and every other stream writes the same bytes.
#[derive(Debug)]
pub struct DispatchedEntry {
    entry: LogEntry,
    wire: OnceLock<Bytes>,
}

impl DispatchedEntry {
    pub fn new(entry: LogEntry) -> Self {
        Self {
            entry,
            wire: OnceLock::new(),
        }
    }

    /// The entry's wire form, encoded by `encode` if no stream has encoded it yet.
    pub fn wire(&self, encode: impl FnOnce(&LogEntry) -> Bytes) -> Bytes {
        self.wire.get_or_init(|| encode(&self.entry)).clone()
    }
}

impl std::ops::Deref for DispatchedEntry {
    type Target = LogEntry;

    fn deref(&self) -> &LogEntry {
        &self.entry
    }
}

/// Who is on the other end of a stream, for presence.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub agent_name: String,
    pub cluster_name: Option<String>,
    pub agent_version: String,
    pub connected_since: UnixMillis,
    pub last_ack_at: Option<UnixMillis>,
}

/// When a stream's agent last acked, written by the stream without taking the hub's lock
/// (acks are the hottest path there is) and read for presence.
#[derive(Debug, Clone)]
pub struct AckClock(Arc<AtomicI64>);

/// The clock's value before the first ack.
const NEVER_ACKED: i64 = i64::MIN;

impl AckClock {
    fn new() -> Self {
        Self(Arc::new(AtomicI64::new(NEVER_ACKED)))
    }

    /// Notes an ack at `at`.
    pub fn record(&self, at: UnixMillis) {
        self.0.store(at.0, Ordering::Relaxed);
    }

    /// When the last ack was noted, if ever.
    pub fn last(&self) -> Option<UnixMillis> {
        let at = self.0.load(Ordering::Relaxed);
        (at != NEVER_ACKED).then_some(UnixMillis(at))
    }
}

struct RegisteredStream {
    agent: AgentId,
    token_generation: u32,
    /// Who is on the other end; its `last_ack_at` is read from `acks`.
    info: StreamInfo,
    acks: AckClock,
    queue: mpsc::Sender<Delivery>,
    close: Arc<CloseSignal>,
    status_changed: Arc<Notify>,
}

struct State {
    routing: RoutingState,
    index: SubscriptionIndex,
    streams: foldhash::HashMap<SubscriberId, RegisteredStream>,
    /// Per agent: open streams and subscriptions across them (for the limits).
    per_agent: foldhash::HashMap<AgentId, AgentUsage>,
    /// Set by [`Hub::close_all`]: no stream registers after it.
    shut_down: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct AgentUsage {
    streams: usize,
    subscriptions: usize,
}

/// A registered stream's end of the hub.
pub struct Registration {
    pub id: SubscriberId,
    /// Entries after `head` arrive here.
    pub queue: mpsc::Receiver<Delivery>,
    pub close: Arc<CloseSignal>,
    /// The hub's head at registration: the stream reads up to here from the store.
    pub head: Seq,
    /// Notified when a state change may have changed whether the stream's subscriptions
    /// can match (see [`Hub::subscription_status`]).
    pub status_changed: Arc<Notify>,
    /// Where the stream notes its acks, for presence.
    pub acks: AckClock,
}

/// Why a stream could not register.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("{}", CloseReason::AgentDeleted)]
    AgentDeleted,
    #[error("{}", CloseReason::TokenRotated)]
    TokenRotated,
    #[error("{}", CloseReason::Shutdown)]
    ShuttingDown,
    #[error(transparent)]
    Limit(#[from] LimitError),
}

pub struct Hub {
    state: RwLock<State>,
    head: AtomicU64,
    /// The head, for those who wait for it to advance.
    head_watch: watch::Sender<Seq>,
    /// Asks the follower to read the store now instead of at its next poll.
    catch_up: Notify,
    /// Tells presence publishers that streams opened or closed.
    streams_changed: Notify,
    next_id: AtomicU64,
    limits: HubLimits,
}

impl Hub {
    /// A hub whose routing state corresponds to log position `head`.
    pub fn new(routing: RoutingState, head: Seq, limits: HubLimits) -> Self {
        metrics::gauge!(names::LOG_HEAD).set(head.get() as f64);
        Self {
            state: RwLock::new(State {
                routing,
                index: SubscriptionIndex::default(),
                streams: foldhash::HashMap::default(),
                per_agent: foldhash::HashMap::default(),
                shut_down: false,
            }),
            head: AtomicU64::new(head.get()),
            head_watch: watch::Sender::new(head),
            catch_up: Notify::new(),
            streams_changed: Notify::new(),
            next_id: AtomicU64::new(1),
            limits: HubLimits {
                queue_capacity: limits.queue_capacity.max(1),
                ..limits
            },
        }
    }

    /// The last seq dispatched.
    pub fn head(&self) -> Seq {
        Seq(self.head.load(Ordering::Acquire))
    }

    /// Waits until the hub has dispatched everything up to `seq`, asking the follower to
    /// read the store at once. Returns false if that did not happen within `timeout`.
    pub async fn caught_up_to(&self, seq: Seq, timeout: std::time::Duration) -> bool {
        if self.head() >= seq {
            return true;
        }
        self.catch_up.notify_one();
        let mut head = self.head_watch.subscribe();
        tokio::time::timeout(timeout, head.wait_for(|head| *head >= seq))
            .await
            .is_ok_and(|waited| waited.is_ok())
    }

    /// Resolves when someone asked the follower to catch up.
    pub async fn catch_up_requested(&self) {
        self.catch_up.notified().await;
    }

    async fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().await
    }

    pub async fn register(
        &self,
        agent: AgentId,
        token_generation: u32,
        info: StreamInfo,
        accepts: AcceptedKinds,
        subscriptions: Vec<Subscription>,
    ) -> Result<Registration, RegisterError> {
        let mut state = self.write().await;
        if state.shut_down {
            return Err(RegisterError::ShuttingDown);
        }
        match state.routing.policy(agent) {
            None => return Err(RegisterError::AgentDeleted),
            Some(policy) if policy.token_generation != token_generation => {
                return Err(RegisterError::TokenRotated);
            }
            Some(_) => {}
        }
        let usage = state.per_agent.get(&agent).copied().unwrap_or_default();
        let limits = self.limits;
        if usage.streams >= limits.max_streams_per_agent {
            return Err(LimitError::Streams {
                open: usage.streams,
                max: limits.max_streams_per_agent,
            }
            .into());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        state.index.insert(id, agent, accepts, subscriptions);
        let count = state.index.count(id);
        let over = if count > limits.max_subscriptions_per_stream {
            Some(LimitError::StreamSubscriptions {
                wanted: count,
                max: limits.max_subscriptions_per_stream,
            })
        } else if usage.subscriptions + count > limits.max_subscriptions_per_agent {
            Some(LimitError::AgentSubscriptions {
                wanted: usage.subscriptions + count,
                max: limits.max_subscriptions_per_agent,
            })
        } else {
            None
        };
        if let Some(over) = over {
            state.index.remove(id);
            return Err(over.into());
        }
        let entry = state.per_agent.entry(agent).or_default();
        entry.streams += 1;
        entry.subscriptions += count;
        let (queue, receiver) = mpsc::channel(limits.queue_capacity);
        let close = Arc::new(CloseSignal::default());
        let status_changed = Arc::new(Notify::new());
        let acks = AckClock::new();
        state.streams.insert(
            id,
            RegisteredStream {
                agent,
                token_generation,
                info,
                acks: acks.clone(),
                queue,
                close: close.clone(),
                status_changed: status_changed.clone(),
            },
        );
        metrics::gauge!(names::STREAMS_OPEN).set(state.streams.len() as f64);
        self.streams_changed.notify_waiters();
        Ok(Registration {
            id,
            queue: receiver,
            close,
            head: self.head(),
            status_changed,
            acks,
        })
    }

    /// Whether each of `subscriptions` of `agent` can match a push on the current routing
    /// state, and why not (`routing::explain`); `None` if the agent is unknown. Costs what
    /// it checks.
    pub async fn subscription_status(
        &self,
        agent: AgentId,
        subscriptions: &[Subscription],
    ) -> Option<Vec<SubscriptionStatus>> {
        let state = self.state.read().await;
        let policy = state.routing.policy(agent)?;
        Some(explain::subscription_statuses(
            &state.routing,
            policy,
            subscriptions,
        ))
    }

    pub async fn unregister(&self, id: SubscriberId) {
        let mut state = self.write().await;
        forget_stream(&mut state, id);
        metrics::gauge!(names::STREAMS_OPEN).set(state.streams.len() as f64);
        self.streams_changed.notify_waiters();
    }

    /// Every open stream: its id, its agent and who is on the other end.
    pub async fn open_streams(&self) -> Vec<(SubscriberId, AgentId, StreamInfo)> {
        let state = self.state.read().await;
        state
            .streams
            .iter()
            .map(|(id, stream)| {
                let info = StreamInfo {
                    last_ack_at: stream.acks.last(),
                    ..stream.info.clone()
                };
                (*id, stream.agent, info)
            })
            .collect()
    }

    /// Resolves when a stream opens or closes.
    pub async fn streams_changed(&self) {
        self.streams_changed.notified().await;
    }

    /// Changes a stream's subscriptions in place; refused as a whole (nothing changes) if
    /// it would take the stream or its agent over a limit.
    pub async fn change_subscriptions(
        &self,
        id: SubscriberId,
        add: Vec<Subscription>,
        remove: &[Subscription],
    ) -> Result<(), LimitError> {
        let mut state = self.write().await;
        let Some(agent) = state.streams.get(&id).map(|s| s.agent) else {
            return Ok(());
        };
        let before = state.index.count(id);
        state.index.remove_subscriptions(id, remove);
        let newly_added: Vec<Subscription> = add
            .iter()
            .filter(|s| {
                !state
                    .index
                    .subscriptions(id)
                    .on_path(s.project.key())
                    .iter()
                    .any(|h| h.same_as(s))
            })
            .cloned()
            .collect();
        state.index.add(id, add);
        let after = state.index.count(id);
        let usage = state.per_agent.get(&agent).copied().unwrap_or_default();
        let agent_total = usage.subscriptions - before + after;
        let over = if after > self.limits.max_subscriptions_per_stream {
            Some(LimitError::StreamSubscriptions {
                wanted: after,
                max: self.limits.max_subscriptions_per_stream,
            })
        } else if after > before && agent_total > self.limits.max_subscriptions_per_agent {
            Some(LimitError::AgentSubscriptions {
                wanted: agent_total,
                max: self.limits.max_subscriptions_per_agent,
            })
        } else {
            None
        };
        if let Some(over) = over {
            // Undo: drop what was newly added, put back what was removed.
            state.index.remove_subscriptions(id, &newly_added);
            state.index.add(id, remove.to_vec());
            return Err(over);
        }
        if let Some(usage) = state.per_agent.get_mut(&agent) {
            usage.subscriptions = agent_total;
        }
        Ok(())
    }

    /// The subscription labels a backlog entry matches for this stream, if it may see it.
    pub async fn route_backlog(
        &self,
        id: SubscriberId,
        agent: AgentId,
        entry: &LogEntry,
    ) -> Option<Vec<std::sync::Arc<str>>> {
        let event = entry.as_push()?;
        let state = self.state.read().await;
        route_one(
            &state.routing,
            agent,
            state.index.accepts(id),
            state.index.subscriptions(id),
            event,
        )
    }

    /// Applies or routes the next entry of the log. Entries must come in seq order,
    /// without gaps; the follower guarantees it.
    pub async fn dispatch(&self, entry: LogEntry) {
        let seq = entry.seq;
        let mut state = self.write().await;
        let matches = match &entry.record {
            LogRecord::State(change) => {
                let mut touched = touched_paths(&state.routing, change);
                let effects = state.routing.apply(change);
                touched.extend(touched_paths(&state.routing, change));
                close_streams_of_changed_agents(&mut state, &effects);
                notify_status_changes(&state, &touched, &effects);
                Vec::new()
            }
            LogRecord::Push(event) => state.index.route(&state.routing, event),
        };
        let entry = Arc::new(DispatchedEntry::new(entry));
        let mut overflowed = Vec::new();
        for found in matches {
            let Some(stream) = state.streams.get(&found.subscriber) else {
                continue;
            };
            let delivery = Delivery {
                entry: entry.clone(),
                matched: found.matched,
            };
            if stream.queue.try_send(delivery).is_err() {
                overflowed.push(found.subscriber);
            }
        }
        for id in overflowed {
            close_stream(&mut state, id, CloseReason::Lagged);
            metrics::counter!(names::QUEUE_OVERFLOWS).increment(1);
        }
        self.head.store(seq.get(), Ordering::Release);
        self.head_watch.send_replace(seq);
        metrics::gauge!(names::LOG_HEAD).set(seq.get() as f64);
    }

    /// Closes every stream, and refuses new ones from now on (shutdown).
    pub async fn close_all(&self, reason: CloseReason) {
        let mut state = self.write().await;
        state.shut_down = true;
        let ids: Vec<SubscriberId> = state.streams.keys().copied().collect();
        for id in ids {
            close_stream(&mut state, id, reason);
        }
    }
}

fn close_stream(state: &mut State, id: SubscriberId, reason: CloseReason) {
    if let Some(stream) = forget_stream(state, id) {
        // The reason first: the stream learns of the close when `stream` (holding the
        // only sender of its queue) is dropped, and then reads the reason.
        stream.close.close(reason);
        drop(stream);
    }
    metrics::gauge!(names::STREAMS_OPEN).set(state.streams.len() as f64);
}

/// Removes a stream from the index, the open streams and its agent's usage.
fn forget_stream(state: &mut State, id: SubscriberId) -> Option<RegisteredStream> {
    let subscriptions = state.index.count(id);
    state.index.remove(id);
    let stream = state.streams.remove(&id)?;
    if let Some(usage) = state.per_agent.get_mut(&stream.agent) {
        usage.streams = usage.streams.saturating_sub(1);
        usage.subscriptions = usage.subscriptions.saturating_sub(subscriptions);
        if usage.streams == 0 {
            state.per_agent.remove(&stream.agent);
        }
    }
    Some(stream)
}

/// Every path key a state change may change the meaning of: the paths it names, and every
/// path of the projects it names (read before and after applying it).
fn touched_paths(routing: &RoutingState, change: &StateChange) -> HashSet<String> {
    let mut keys = HashSet::new();
    let mut names_of = |id| {
        keys.extend(routing.catalog().names_of(id).iter().cloned());
    };
    for effect in &change.effects {
        match effect {
            StateEffect::Project { id, .. } | StateEffect::ProjectRemoved { id } => names_of(*id),
            StateEffect::Alias { project, .. } => names_of(*project),
            StateEffect::Agent { .. } | StateEffect::AgentRemoved { .. } => {}
        }
    }
    for effect in &change.effects {
        match effect {
            StateEffect::Project { path, .. } | StateEffect::Alias { path, .. } => {
                keys.insert(path.key().to_owned());
            }
            _ => {}
        }
    }
    keys
}

/// Tells each open stream whose subscriptions' status a state change may have changed:
/// those with a subscription on a touched path, and every stream of an agent whose policy
/// changed. Each stream works its status out again and sends it if it differs.
fn notify_status_changes(state: &State, touched: &HashSet<String>, effects: &[AgentEffect]) {
    let mut streams: HashSet<SubscriberId> = touched
        .iter()
        .flat_map(|key| state.index.subscribers_on(key))
        .collect();
    let agents: HashSet<AgentId> = effects
        .iter()
        .filter_map(|effect| match effect {
            AgentEffect::Updated { id, .. } => Some(*id),
            AgentEffect::Removed { .. } => None,
        })
        .collect();
    if !agents.is_empty() {
        streams.extend(
            state
                .streams
                .iter()
                .filter(|(_, s)| agents.contains(&s.agent))
                .map(|(id, _)| *id),
        );
    }
    for id in streams {
        if let Some(stream) = state.streams.get(&id) {
            stream.status_changed.notify_one();
        }
    }
}

fn close_streams_of_changed_agents(state: &mut State, effects: &[AgentEffect]) {
    for effect in effects {
        let (agent, keep_generation, reason) = match *effect {
            AgentEffect::Removed { id } => (id, None, CloseReason::AgentDeleted),
            AgentEffect::Updated {
                id,
                token_generation,
            } => (id, Some(token_generation), CloseReason::TokenRotated),
        };
        let stale: Vec<SubscriberId> = state
            .streams
            .iter()
            .filter(|(_, s)| s.agent == agent && Some(s.token_generation) != keep_generation)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            close_stream(state, id, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fluxgate_core::{
        AdminAction, AgentName, AgentPolicy, EventKind, FullPath, GitRef, Grant, ProjectId,
        ProjectRef, PushEvent, Sha, StateCause, StateChange, StateEffect, Visibility,
    };

    use super::*;

    const AGENT: AgentId = AgentId(1);
    const OTHER: AgentId = AgentId(2);

    /// A private project that only AGENT is granted, and a public one.
    const PRIVATE: (i64, &str) = (1, "team/app");
    const PUBLIC: (i64, &str) = (2, "oss/lib");

    fn policy(id: AgentId, name: &str) -> AgentPolicy {
        AgentPolicy {
            id,
            name: AgentName::parse(name).unwrap(),
            config_project: FullPath::parse("group/config").unwrap(),
            grants: Vec::new(),
            allow_internal: false,
            token_generation: 0,
        }
    }

    fn hub(limits: HubLimits) -> Hub {
        let granted = AgentPolicy {
            grants: vec![Grant::Group(FullPath::parse("team").unwrap())],
            ..policy(AGENT, "one")
        };
        let project = |(id, path): (i64, &str), visibility| {
            (
                ProjectId::new(id).unwrap(),
                FullPath::parse(path).unwrap(),
                Some(visibility),
            )
        };
        let routing = RoutingState::new(
            [
                project(PRIVATE, Visibility::Private),
                project(PUBLIC, Visibility::Public),
            ],
            [],
            [granted, policy(OTHER, "two")],
        );
        Hub::new(routing, Seq::ZERO, limits)
    }

    fn push(seq: u64, (id, path): (i64, &str), visibility: Visibility) -> LogEntry {
        LogEntry {
            seq: Seq(seq),
            recorded_at: UnixMillis(0),
            record: LogRecord::Push(PushEvent {
                event_id: uuid::Uuid::new_v4(),
                project: ProjectRef {
                    id: ProjectId::new(id).unwrap(),
                    path: FullPath::parse(path).unwrap(),
                    visibility: Some(visibility),
                },
                git_ref: Some(GitRef::parse("refs/heads/main").unwrap()),
                before: Sha::parse(&"0".repeat(40)).unwrap(),
                after: Sha::parse(&format!("{seq:040x}")).unwrap(),
                kind: EventKind::Push,
                artifact: None,
                received_at: UnixMillis(0),
            }),
        }
    }

    fn state(seq: u64, action: AdminAction, effect: StateEffect) -> LogEntry {
        LogEntry {
            seq: Seq(seq),
            recorded_at: UnixMillis(0),
            record: LogRecord::State(StateChange {
                cause: StateCause::Admin {
                    action,
                    agent: AgentName::parse("one").unwrap(),
                },
                effects: vec![effect],
            }),
        }
    }

    fn subscribe(paths: &[&str]) -> Vec<Subscription> {
        paths
            .iter()
            .map(|path| Subscription {
                project: FullPath::parse(path).unwrap(),
                refs: None,
                label: (*path).into(),
            })
            .collect()
    }

    /// The seqs waiting in a stream's queue.
    fn queued(registration: &mut Registration) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Ok(delivery) = registration.queue.try_recv() {
            seqs.push(delivery.entry.seq.get());
        }
        seqs
    }

    fn subscriptions(range: std::ops::Range<usize>) -> Vec<Subscription> {
        range
            .map(|n| {
                let path = format!("group/project-{n}");
                Subscription {
                    project: FullPath::parse(&path).unwrap(),
                    refs: None,
                    label: path.into(),
                }
            })
            .collect()
    }

    fn info() -> StreamInfo {
        StreamInfo {
            agent_name: "one".to_owned(),
            cluster_name: None,
            agent_version: "test".to_owned(),
            connected_since: UnixMillis(0),
            last_ack_at: None,
        }
    }

    async fn register(
        hub: &Hub,
        agent: AgentId,
        subs: Vec<Subscription>,
    ) -> Result<Registration, RegisterError> {
        hub.register(agent, 0, info(), AcceptedKinds::ALL, subs)
            .await
    }

    #[tokio::test]
    async fn an_agent_may_open_only_so_many_streams_and_others_are_not_affected() {
        let hub = hub(HubLimits {
            max_streams_per_agent: 2,
            ..HubLimits::default()
        });
        let first = register(&hub, AGENT, subscriptions(0..1)).await.unwrap();
        let _second = register(&hub, AGENT, subscriptions(0..1)).await.unwrap();
        let refused = register(&hub, AGENT, subscriptions(0..1))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(
                refused,
                RegisterError::Limit(LimitError::Streams { open: 2, max: 2 })
            ),
            "{refused}"
        );
        assert!(
            register(&hub, OTHER, subscriptions(0..1)).await.is_ok(),
            "another agent is not limited"
        );
        hub.unregister(first.id).await;
        assert!(
            register(&hub, AGENT, subscriptions(0..1)).await.is_ok(),
            "a closed stream frees its slot"
        );
    }

    #[tokio::test]
    async fn repeated_subscription_changes_cannot_grow_a_stream_past_its_cap() {
        let hub = hub(HubLimits {
            max_subscriptions_per_stream: 100,
            ..HubLimits::default()
        });
        let stream = register(&hub, AGENT, subscriptions(0..60)).await.unwrap();
        // Within one change, re-adding what it has costs nothing.
        hub.change_subscriptions(stream.id, subscriptions(0..60), &[])
            .await
            .unwrap();
        hub.change_subscriptions(stream.id, subscriptions(60..100), &[])
            .await
            .unwrap();
        let refused = hub
            .change_subscriptions(stream.id, subscriptions(100..101), &[])
            .await
            .unwrap_err();
        assert_eq!(
            refused,
            LimitError::StreamSubscriptions {
                wanted: 101,
                max: 100
            }
        );
        // A refused change changes nothing, removals included.
        let refused = hub
            .change_subscriptions(stream.id, subscriptions(100..150), &subscriptions(0..10))
            .await
            .unwrap_err();
        assert_eq!(
            refused,
            LimitError::StreamSubscriptions {
                wanted: 140,
                max: 100
            }
        );
        let state = hub.state.read().await;
        assert_eq!(state.index.count(stream.id), 100);
        assert!(
            state
                .index
                .subscriptions(stream.id)
                .has_path("group/project-0")
        );
        assert!(
            !state
                .index
                .subscriptions(stream.id)
                .has_path("group/project-100")
        );
        drop(state);
        // Swapping is fine: the total stays within the cap.
        hub.change_subscriptions(stream.id, subscriptions(100..110), &subscriptions(0..10))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_agent_cannot_spread_subscriptions_over_streams_past_its_cap() {
        let hub = hub(HubLimits {
            max_subscriptions_per_agent: 150,
            ..HubLimits::default()
        });
        let first = register(&hub, AGENT, subscriptions(0..100)).await.unwrap();
        let refused = register(&hub, AGENT, subscriptions(0..51))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(
                refused,
                RegisterError::Limit(LimitError::AgentSubscriptions {
                    wanted: 151,
                    max: 150
                })
            ),
            "{refused}"
        );
        let second = register(&hub, AGENT, subscriptions(0..50)).await.unwrap();
        assert_eq!(
            hub.change_subscriptions(second.id, subscriptions(50..51), &[])
                .await,
            Err(LimitError::AgentSubscriptions {
                wanted: 151,
                max: 150
            })
        );
        hub.unregister(first.id).await;
        hub.change_subscriptions(second.id, subscriptions(50..150), &[])
            .await
            .unwrap();
        assert!(
            register(&hub, OTHER, subscriptions(0..150)).await.is_ok(),
            "per agent"
        );
    }

    #[tokio::test]
    async fn pushes_go_to_the_streams_that_subscribed_and_may_see_them() {
        let hub = hub(HubLimits::default());
        let both = [PRIVATE.1, PUBLIC.1];
        let mut granted = register(&hub, AGENT, subscribe(&both)).await.unwrap();
        let mut not_granted = register(&hub, OTHER, subscribe(&both)).await.unwrap();
        let mut public_only = register(&hub, AGENT, subscribe(&[PUBLIC.1])).await.unwrap();

        hub.dispatch(push(1, PRIVATE, Visibility::Private)).await;
        hub.dispatch(push(2, PUBLIC, Visibility::Public)).await;
        hub.dispatch(push(3, PRIVATE, Visibility::Private)).await;

        assert_eq!(
            queued(&mut granted),
            [1, 2, 3],
            "granted: everything, in order"
        );
        assert_eq!(
            queued(&mut not_granted),
            [2],
            "not granted: only the public project"
        );
        assert_eq!(queued(&mut public_only), [2], "only what it subscribed to");
        assert_eq!(hub.head(), Seq(3));
    }

    #[tokio::test]
    async fn a_full_queue_closes_only_the_slow_stream_as_lagged() {
        let hub = hub(HubLimits {
            queue_capacity: 2,
            ..HubLimits::default()
        });
        let mut slow = register(&hub, AGENT, subscribe(&[PUBLIC.1])).await.unwrap();
        let mut fast = register(&hub, OTHER, subscribe(&[PUBLIC.1])).await.unwrap();
        let mut fast_seen = Vec::new();
        for seq in 1..=5 {
            hub.dispatch(push(seq, PUBLIC, Visibility::Public)).await;
            fast_seen.extend(queued(&mut fast));
        }
        assert_eq!(
            fast_seen,
            [1, 2, 3, 4, 5],
            "the reader keeps getting everything"
        );
        assert_eq!(fast.close.reason(), None);
        assert_eq!(slow.close.reason(), Some(CloseReason::Lagged));
        assert_eq!(
            queued(&mut slow),
            [1, 2],
            "what fitted before it was closed"
        );
        let open: Vec<SubscriberId> = hub.open_streams().await.iter().map(|s| s.0).collect();
        assert_eq!(open, [fast.id], "the slow stream is gone from the hub");
    }

    #[tokio::test]
    async fn deleting_or_rotating_an_agent_closes_its_streams_with_the_reason() {
        let hub = hub(HubLimits::default());
        let one = register(&hub, AGENT, subscribe(&[PUBLIC.1])).await.unwrap();
        let two = register(&hub, OTHER, subscribe(&[PUBLIC.1])).await.unwrap();
        let rotated = AgentPolicy {
            token_generation: 1,
            ..policy(AGENT, "one")
        };
        hub.dispatch(state(
            1,
            AdminAction::RotateToken,
            StateEffect::Agent { policy: rotated },
        ))
        .await;
        assert_eq!(one.close.reason(), Some(CloseReason::TokenRotated));
        assert_eq!(
            two.close.reason(),
            None,
            "another agent's stream stays open"
        );
        assert!(
            matches!(
                register(&hub, AGENT, subscribe(&[PUBLIC.1])).await,
                Err(RegisterError::TokenRotated)
            ),
            "the old token is refused"
        );
        hub.dispatch(state(
            2,
            AdminAction::Delete,
            StateEffect::AgentRemoved { id: OTHER },
        ))
        .await;
        assert_eq!(two.close.reason(), Some(CloseReason::AgentDeleted));
        assert!(matches!(
            register(&hub, OTHER, subscribe(&[PUBLIC.1])).await,
            Err(RegisterError::AgentDeleted)
        ));
    }

    #[tokio::test]
    async fn close_all_closes_every_stream_for_shutdown() {
        let hub = hub(HubLimits::default());
        let one = register(&hub, AGENT, subscribe(&[PUBLIC.1])).await.unwrap();
        let two = register(&hub, OTHER, subscribe(&[PUBLIC.1])).await.unwrap();
        hub.close_all(CloseReason::Shutdown).await;
        for mut stream in [one, two] {
            tokio::time::timeout(Duration::from_secs(5), stream.close.closed())
                .await
                .expect("closed");
            assert_eq!(stream.close.reason(), Some(CloseReason::Shutdown));
            assert!(
                stream.queue.recv().await.is_none(),
                "a live stream learns of the close from its queue's end"
            );
        }
        assert!(hub.open_streams().await.is_empty());
        assert!(
            matches!(
                register(&hub, AGENT, subscribe(&[PUBLIC.1])).await,
                Err(RegisterError::ShuttingDown)
            ),
            "no stream registers once the hub closed them all"
        );
    }

    #[tokio::test]
    async fn acks_are_noted_for_presence_without_the_hubs_lock() {
        let hub = hub(HubLimits::default());
        let stream = register(&hub, AGENT, subscribe(&[PUBLIC.1])).await.unwrap();
        assert_eq!(hub.open_streams().await[0].2.last_ack_at, None);
        let writer = hub.state.write().await;
        stream.acks.record(UnixMillis(1_700_000_000_000));
        drop(writer);
        assert_eq!(
            hub.open_streams().await[0].2.last_ack_at,
            Some(UnixMillis(1_700_000_000_000))
        );
    }

    #[tokio::test]
    async fn a_stream_registered_at_head_h_gets_what_comes_after_h_in_its_queue() {
        let hub = hub(HubLimits::default());
        hub.dispatch(push(1, PUBLIC, Visibility::Public)).await;
        let mut stream = register(&hub, OTHER, subscribe(&[PUBLIC.1])).await.unwrap();
        assert_eq!(stream.head, Seq(1), "it reads up to 1 from the store");
        hub.dispatch(push(2, PUBLIC, Visibility::Public)).await;
        assert_eq!(queued(&mut stream), [2]);
        assert!(
            hub.caught_up_to(Seq(2), Duration::ZERO).await,
            "already there: no wait"
        );
    }
}
