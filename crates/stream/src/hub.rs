//! The hub: this replica's routing state and its open agent streams.
//!
//! The follower hands the hub every log entry in seq order. State entries update the
//! routing state (and close streams whose agent was deleted or whose token was rotated);
//! pushes go to the matching streams' bounded queues with a non-blocking send. A stream
//! whose queue is full is closed with RESOURCE_EXHAUSTED, so a slow agent never stalls
//! the others, and loses nothing: it resumes from its cursor.
//!
//! Dispatching an entry and advancing [`Hub::head`] happen under one lock, and
//! registration takes the same lock: a stream registered at head H gets every entry after
//! H in its queue, and reads everything up to H from the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockWriteGuard};

use fluxgate_core::{AgentId, LogEntry, LogRecord, Seq, UnixMillis};
use fluxgate_routing::{
    AgentEffect, RoutingState, SubscriberId, Subscription, SubscriptionIndex, route_one,
};
use tokio::sync::{Notify, mpsc, watch};
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
        let mut reason = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if reason.is_none() {
            *reason = Some(status);
        }
        self.token.cancel();
    }

    pub async fn closed(&self) {
        self.token.cancelled().await;
    }

    pub fn reason(&self) -> Option<Status> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
    queue_capacity: usize,
}

impl Hub {
    /// A hub whose routing state corresponds to log position `head`.
    pub fn new(routing: RoutingState, head: Seq, queue_capacity: usize) -> Self {
        metrics::gauge!(names::LOG_HEAD).set(head.get() as f64);
        Self {
            state: RwLock::new(State {
                routing,
                index: SubscriptionIndex::default(),
                sessions: HashMap::new(),
            }),
            head: AtomicU64::new(head.get()),
            head_watch: watch::Sender::new(head),
            catch_up: Notify::new(),
            sessions_changed: Notify::new(),
            next_id: AtomicU64::new(1),
            queue_capacity: queue_capacity.max(1),
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

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(
        &self,
        agent: AgentId,
        token_generation: u32,
        info: SessionInfo,
        subscriptions: Vec<Subscription>,
    ) -> Result<Registration, RegisterError> {
        let mut state = self.write();
        match state.routing.policy(agent) {
            None => return Err(RegisterError::AgentDeleted),
            Some(policy) if policy.token_generation != token_generation => {
                return Err(RegisterError::TokenRotated);
            }
            Some(_) => {}
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (queue, receiver) = mpsc::channel(self.queue_capacity);
        let close = Arc::new(CloseSignal::default());
        state.index.insert(id, agent, subscriptions);
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

    pub fn unregister(&self, id: SubscriberId) {
        let mut state = self.write();
        state.index.remove(id);
        state.sessions.remove(&id);
        metrics::gauge!(names::STREAMS_OPEN).set(state.sessions.len() as f64);
        self.sessions_changed.notify_waiters();
    }

    /// Notes an ack on a stream, for presence.
    pub fn record_ack(&self, id: SubscriberId, at: UnixMillis) {
        if let Some(session) = self.write().sessions.get_mut(&id) {
            session.info.last_ack_at = Some(at);
        }
    }

    /// Every open stream: its id, its agent and who is on the other end.
    pub fn sessions(&self) -> Vec<(SubscriberId, AgentId, SessionInfo)> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
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

    pub fn change_subscriptions(
        &self,
        id: SubscriberId,
        add: Vec<Subscription>,
        remove: &[Subscription],
    ) {
        let mut state = self.write();
        state.index.remove_subscriptions(id, remove);
        state.index.add(id, add);
    }

    /// The subscription labels a backlog entry matches for this stream, if it may see it.
    pub fn route_backlog(
        &self,
        id: SubscriberId,
        agent: AgentId,
        entry: &LogEntry,
    ) -> Option<Vec<String>> {
        let event = entry.as_push()?;
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        route_one(&state.routing, agent, state.index.subscriptions(id), event)
    }

    /// Applies or routes the next entry of the log. Entries must come in seq order,
    /// without gaps; the follower guarantees it.
    pub fn dispatch(&self, entry: LogEntry) {
        let seq = entry.seq;
        let mut state = self.write();
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
    pub fn close_all(&self, status: Status) {
        let mut state = self.write();
        let ids: Vec<SubscriberId> = state.sessions.keys().copied().collect();
        for id in ids {
            close_session(&mut state, id, status.clone());
        }
    }
}

fn close_session(state: &mut State, id: SubscriberId, status: Status) {
    if let Some(session) = state.sessions.remove(&id) {
        session.close.close(status);
    }
    state.index.remove(id);
    metrics::gauge!(names::STREAMS_OPEN).set(state.sessions.len() as f64);
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
