//! The hub: this replica's routing state and its open agent streams.
//!
//! The follower hands the hub every log entry in seq order. State entries update the
//! routing state (and close streams whose agent was deleted or whose token was rotated);
//! pushes go to the matching streams' bounded queues with a non-blocking send. A stream
//! whose queue is full is closed with RESOURCE_EXHAUSTED, so a slow agent never stalls
//! the others, and loses nothing: it resumes from its cursor.
//!
//! The state is behind one asynchronous lock (a task waiting for it yields its thread;
//! every critical section costs what it adds, removes or matches, never a scan of every
//! subscription). Dispatching an entry and advancing [`Hub::head`] happen under that lock,
//! and registration takes the same lock: a stream registered at head H gets every entry after
//! H in its queue, and reads everything up to H from the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fluxgate_core::{AgentId, LogEntry, LogRecord, Seq, UnixMillis};
use fluxgate_routing::{
    AgentEffect, RoutingState, SubscriberId, Subscription, SubscriptionIndex, route_one,
};
use parking_lot::Mutex;
use tokio::sync::{Notify, RwLock, RwLockWriteGuard, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::metric_names as names;

/// An event for one stream, with the subscription labels it matched.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub entry: Arc<LogEntry>,
    pub matched: Vec<String>,
}

/// Closes one stream from outside its task, with a reason.
#[derive(Debug, Default)]
pub struct CloseSignal {
    token: CancellationToken,
    reason: Mutex<Option<Status>>,
}

impl CloseSignal {
    /// Asks the stream to close; the first reason wins.
    pub fn close(&self, status: Status) {
        let mut reason = self.reason.lock();
        if reason.is_none() {
            *reason = Some(status);
        }
        self.token.cancel();
    }

    pub async fn closed(&self) {
        self.token.cancelled().await;
    }

    pub fn reason(&self) -> Option<Status> {
        self.reason.lock().clone()
    }
}

/// Who is on the other end of a stream, for presence.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub agent_name: String,
    pub cluster_name: Option<String>,
    pub agent_version: String,
    pub connected_since: UnixMillis,
    pub last_ack_at: Option<UnixMillis>,
}

struct Session {
    agent: AgentId,
    token_generation: u32,
    info: SessionInfo,
    queue: mpsc::Sender<Delivery>,
    close: Arc<CloseSignal>,
}

struct State {
    routing: RoutingState,
    index: SubscriptionIndex,
    sessions: HashMap<SubscriberId, Session>,
    /// Per agent: open streams and subscriptions across them (for the limits).
    per_agent: HashMap<AgentId, AgentUsage>,
}

#[derive(Debug, Default, Clone, Copy)]
struct AgentUsage {
    streams: usize,
    subscriptions: usize,
}

/// What one agent may hold on this replica, so that one client cannot degrade the others.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Events queued per stream before a stream that does not keep up is closed.
    pub queue_capacity: usize,
    pub max_streams_per_agent: usize,
    pub max_subscriptions_per_stream: usize,
    pub max_subscriptions_per_agent: usize,
}

impl Default for HubLimits {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            max_streams_per_agent: 16,
            max_subscriptions_per_stream: 10_000,
            max_subscriptions_per_agent: 20_000,
        }
    }
}

/// A request that would take an agent over one of its [`HubLimits`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "the agent already has {open} streams open on this broker (at most {max}); close one before opening another"
    )]
    Streams { open: usize, max: usize },
    #[error(
        "the stream would hold {wanted} subscriptions (at most {max} per stream); subscribe to fewer projects or raise max_subscriptions_per_stream"
    )]
    StreamSubscriptions { wanted: usize, max: usize },
    #[error(
        "the agent would hold {wanted} subscriptions across its streams (at most {max}); subscribe to fewer projects or raise max_subscriptions_per_agent"
    )]
    AgentSubscriptions { wanted: usize, max: usize },
}

impl LimitError {
    pub fn to_status(&self) -> Status {
        Status::resource_exhausted(self.to_string())
    }
}

/// A registered stream's end of the hub.
pub struct Registration {
    pub id: SubscriberId,
    /// Entries after `head` arrive here.
    pub queue: mpsc::Receiver<Delivery>,
    pub close: Arc<CloseSignal>,
    /// The hub's head at registration: the stream reads up to here from the store.
    pub head: Seq,
}

/// Why a stream could not register.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("the agent was deleted")]
    AgentDeleted,
    #[error("the agent's token was rotated; use the new token")]
    TokenRotated,
    #[error(transparent)]
    Limit(#[from] LimitError),
}

impl RegisterError {
    pub fn to_status(&self) -> Status {
        match self {
            RegisterError::Limit(limit) => limit.to_status(),
            other => Status::unauthenticated(other.to_string()),
        }
    }
}

pub struct Hub {
    state: RwLock<State>,
    head: AtomicU64,
    /// The head, for those who wait for it to advance.
    head_watch: watch::Sender<Seq>,
    /// Asks the follower to read the store now instead of at its next poll.
    catch_up: Notify,
    /// Tells presence publishers that streams opened or closed.
    sessions_changed: Notify,
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
                sessions: HashMap::new(),
                per_agent: HashMap::new(),
            }),
            head: AtomicU64::new(head.get()),
            head_watch: watch::Sender::new(head),
            catch_up: Notify::new(),
            sessions_changed: Notify::new(),
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
    pub(crate) async fn catch_up_requested(&self) {
        self.catch_up.notified().await;
    }

    async fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().await
    }

    pub async fn register(
        &self,
        agent: AgentId,
        token_generation: u32,
        info: SessionInfo,
        subscriptions: Vec<Subscription>,
    ) -> Result<Registration, RegisterError> {
        let mut state = self.write().await;
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
        state.index.insert(id, agent, subscriptions);
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
        state.sessions.insert(
            id,
            Session {
                agent,
                token_generation,
                info,
                queue,
                close: close.clone(),
            },
        );
        metrics::gauge!(names::STREAMS_OPEN).set(state.sessions.len() as f64);
        self.sessions_changed.notify_waiters();
        Ok(Registration {
            id,
            queue: receiver,
            close,
            head: self.head(),
        })
    }

    pub async fn unregister(&self, id: SubscriberId) {
        let mut state = self.write().await;
        forget_session(&mut state, id);
        metrics::gauge!(names::STREAMS_OPEN).set(state.sessions.len() as f64);
        self.sessions_changed.notify_waiters();
    }

    /// Notes an ack on a stream, for presence.
    pub async fn record_ack(&self, id: SubscriberId, at: UnixMillis) {
        if let Some(session) = self.write().await.sessions.get_mut(&id) {
            session.info.last_ack_at = Some(at);
        }
    }

    /// Every open stream: its id, its agent and who is on the other end.
    pub async fn sessions(&self) -> Vec<(SubscriberId, AgentId, SessionInfo)> {
        let state = self.state.read().await;
        state
            .sessions
            .iter()
            .map(|(id, session)| (*id, session.agent, session.info.clone()))
            .collect()
    }

    /// Resolves when a stream opens or closes.
    pub async fn sessions_changed(&self) {
        self.sessions_changed.notified().await;
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
        let Some(agent) = state.sessions.get(&id).map(|s| s.agent) else {
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
    ) -> Option<Vec<String>> {
        let event = entry.as_push()?;
        let state = self.state.read().await;
        route_one(&state.routing, agent, state.index.subscriptions(id), event)
    }

    /// Applies or routes the next entry of the log. Entries must come in seq order,
    /// without gaps; the follower guarantees it.
    pub async fn dispatch(&self, entry: LogEntry) {
        let seq = entry.seq;
        let mut state = self.write().await;
        let matches = match &entry.record {
            LogRecord::State(change) => {
                let effects = state.routing.apply(change);
                close_sessions_of_changed_agents(&mut state, &effects);
                Vec::new()
            }
            LogRecord::Push(event) => state.index.route(&state.routing, event),
        };
        let entry = Arc::new(entry);
        let mut overflowed = Vec::new();
        for found in matches {
            let Some(session) = state.sessions.get(&found.subscriber) else {
                continue;
            };
            let delivery = Delivery {
                entry: entry.clone(),
                matched: found.matched,
            };
            if session.queue.try_send(delivery).is_err() {
                overflowed.push(found.subscriber);
            }
        }
        for id in overflowed {
            let status = Status::resource_exhausted(
                "the agent did not keep up with its events; reconnect to resume from the cursor",
            );
            close_session(&mut state, id, status);
            metrics::counter!(names::QUEUE_OVERFLOWS).increment(1);
        }
        self.head.store(seq.get(), Ordering::Release);
        self.head_watch.send_replace(seq);
        metrics::gauge!(names::LOG_HEAD).set(seq.get() as f64);
    }

    /// Closes every stream (shutdown).
    pub async fn close_all(&self, status: Status) {
        let mut state = self.write().await;
        let ids: Vec<SubscriberId> = state.sessions.keys().copied().collect();
        for id in ids {
            close_session(&mut state, id, status.clone());
        }
    }
}

fn close_session(state: &mut State, id: SubscriberId, status: Status) {
    if let Some(session) = forget_session(state, id) {
        session.close.close(status);
    }
    metrics::gauge!(names::STREAMS_OPEN).set(state.sessions.len() as f64);
}

/// Removes a stream from the index, the sessions and its agent's usage.
fn forget_session(state: &mut State, id: SubscriberId) -> Option<Session> {
    let subscriptions = state.index.count(id);
    state.index.remove(id);
    let session = state.sessions.remove(&id)?;
    if let Some(usage) = state.per_agent.get_mut(&session.agent) {
        usage.streams = usage.streams.saturating_sub(1);
        usage.subscriptions = usage.subscriptions.saturating_sub(subscriptions);
        if usage.streams == 0 {
            state.per_agent.remove(&session.agent);
        }
    }
    Some(session)
}

fn close_sessions_of_changed_agents(state: &mut State, effects: &[AgentEffect]) {
    for effect in effects {
        let (agent, keep_generation, reason) = match *effect {
            AgentEffect::Removed { id } => (id, None, "the agent was deleted"),
            AgentEffect::Updated {
                id,
                token_generation,
            } => (
                id,
                Some(token_generation),
                "the agent's token was rotated; use the new token",
            ),
        };
        let stale: Vec<SubscriberId> = state
            .sessions
            .iter()
            .filter(|(_, s)| s.agent == agent && Some(s.token_generation) != keep_generation)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            close_session(state, id, Status::unauthenticated(reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use fluxgate_core::{AgentName, AgentPolicy, FullPath};

    use super::*;

    const AGENT: AgentId = AgentId(1);
    const OTHER: AgentId = AgentId(2);

    fn hub(limits: HubLimits) -> Hub {
        let policy = |id: AgentId, name: &str| AgentPolicy {
            id,
            name: AgentName::parse(name).unwrap(),
            config_project: FullPath::parse("group/config").unwrap(),
            grants: Vec::new(),
            allow_internal: false,
            token_generation: 0,
        };
        let routing = RoutingState::new([], [], [policy(AGENT, "one"), policy(OTHER, "two")]);
        Hub::new(routing, Seq::ZERO, limits)
    }

    fn subscriptions(range: std::ops::Range<usize>) -> Vec<Subscription> {
        range
            .map(|n| {
                let path = format!("group/project-{n}");
                Subscription {
                    project: FullPath::parse(&path).unwrap(),
                    refs: None,
                    label: path,
                }
            })
            .collect()
    }

    fn info() -> SessionInfo {
        SessionInfo {
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
        hub.register(agent, 0, info(), subs).await
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
        assert_eq!(refused.to_status().code(), tonic::Code::ResourceExhausted);
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
}
