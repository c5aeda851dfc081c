//! The subscription index: from an event to the local subscribers that get it.
//!
//! Subscribers (one per agent stream) are indexed by the path keys they subscribe to. For
//! an event, the candidates are found through every path that names its project (current
//! and former) and the path the event carries; each is then checked against its ref
//! pattern and against the access rule with the agent's current policy.

use std::collections::HashMap;
use std::sync::Arc;

use fluxgate_core::{AgentId, EventKind, PushEvent};

use crate::access::may_see;
use crate::state::RoutingState;
use crate::subscription::Subscription;

/// A local subscriber (an agent stream).
pub type SubscriberId = u64;

/// One subscriber that gets an event, and the subscription labels it matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub subscriber: SubscriberId,
    pub agent: AgentId,
    pub matched: Vec<Arc<str>>,
}

#[derive(Debug)]
struct Subscriber {
    agent: AgentId,
    accepts: AcceptedKinds,
    subscriptions: SubscriptionSet,
}

/// The event kinds a subscriber understands. Every agent understands git pushes; the
/// newer kinds (pipeline artifacts, GitLab's ref-less project push) go only to agents whose
/// Hello listed them, so an older agent never sees an event it would misread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcceptedKinds {
    artifact: bool,
    project_push: bool,
}

impl AcceptedKinds {
    /// Git pushes only: what an agent that lists nothing understands.
    pub const GIT_PUSHES: AcceptedKinds = AcceptedKinds {
        artifact: false,
        project_push: false,
    };
    /// Every kind.
    pub const ALL: AcceptedKinds = AcceptedKinds {
        artifact: true,
        project_push: true,
    };

    /// Git pushes and the kinds listed.
    pub fn with(kinds: impl IntoIterator<Item = EventKind>) -> Self {
        let mut accepted = Self::GIT_PUSHES;
        for kind in kinds {
            match kind {
                EventKind::Push | EventKind::TagPush => {}
                EventKind::Artifact => accepted.artifact = true,
                EventKind::ProjectPush => accepted.project_push = true,
            }
        }
        accepted
    }

    pub fn accepts(self, kind: EventKind) -> bool {
        match kind {
            EventKind::Push | EventKind::TagPush => true,
            EventKind::Artifact => self.artifact,
            EventKind::ProjectPush => self.project_push,
        }
    }
}

/// One subscriber's subscriptions, grouped by path key: adding, removing and finding the
/// ones on a path cost the same however many the subscriber has.
#[derive(Debug, Default, Clone)]
pub struct SubscriptionSet {
    /// Looked up once per routed event per subscriber: a fast hasher (the keys are this
    /// subscriber's own paths, bounded by the per-stream subscription limit).
    by_path: foldhash::HashMap<String, Vec<Subscription>>,
    len: usize,
}

impl SubscriptionSet {
    /// Adds `subscription`; false if an equal one is there already.
    pub fn insert(&mut self, subscription: Subscription) -> bool {
        match self.by_path.entry(subscription.project.key().to_owned()) {
            // Most paths hold one subscription for the stream's whole life: exactly one
            // slot (a first `push` would make room for four).
            std::collections::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(vec![subscription]);
            }
            std::collections::hash_map::Entry::Occupied(occupied) => {
                let on_path = occupied.into_mut();
                // Few ref patterns share one path: this scan is short.
                if on_path.iter().any(|s| s.same_as(&subscription)) {
                    return false;
                }
                on_path.push(subscription);
            }
        }
        self.len += 1;
        true
    }

    /// Removes the subscription equal to `subscription`; false if there was none.
    pub fn remove(&mut self, subscription: &Subscription) -> bool {
        let key = subscription.project.key();
        let Some(on_path) = self.by_path.get_mut(key) else {
            return false;
        };
        let before = on_path.len();
        on_path.retain(|s| !s.same_as(subscription));
        let removed = before - on_path.len();
        if on_path.is_empty() {
            self.by_path.remove(key);
        }
        self.len -= removed;
        removed > 0
    }

    /// Whether any subscription is on the path `key`.
    pub fn has_path(&self, key: &str) -> bool {
        self.by_path.contains_key(key)
    }

    /// The subscriptions on the path `key`.
    pub fn on_path(&self, key: &str) -> &[Subscription] {
        self.by_path.get(key).map_or(&[], Vec::as_slice)
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.by_path.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Subscription> {
        self.by_path.values().flatten()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl FromIterator<Subscription> for SubscriptionSet {
    fn from_iter<I: IntoIterator<Item = Subscription>>(iter: I) -> Self {
        let mut set = Self::default();
        for subscription in iter {
            set.insert(subscription);
        }
        set
    }
}

/// The subscription index. Every operation costs time in proportion to what it adds,
/// removes or matches, never to how many subscriptions exist.
#[derive(Debug, Default)]
pub struct SubscriptionIndex {
    subscribers: foldhash::HashMap<SubscriberId, Subscriber>,
    /// Path key → subscribers with at least one subscription on that path.
    by_path: HashMap<String, foldhash::HashSet<SubscriberId>>,
    /// Subscriptions across every subscriber.
    total: usize,
}

static NO_SUBSCRIPTIONS: std::sync::LazyLock<SubscriptionSet> =
    std::sync::LazyLock::new(SubscriptionSet::default);

impl SubscriptionIndex {
    pub fn insert(
        &mut self,
        id: SubscriberId,
        agent: AgentId,
        accepts: AcceptedKinds,
        subscriptions: Vec<Subscription>,
    ) {
        self.subscribers.insert(
            id,
            Subscriber {
                agent,
                accepts,
                subscriptions: SubscriptionSet::default(),
            },
        );
        self.add(id, subscriptions);
    }

    pub fn remove(&mut self, id: SubscriberId) {
        if let Some(subscriber) = self.subscribers.remove(&id) {
            self.total -= subscriber.subscriptions.len();
            for key in subscriber.subscriptions.paths() {
                unlink(&mut self.by_path, id, key);
            }
        }
    }

    /// Adds subscriptions (ignoring ones it already has).
    pub fn add(&mut self, id: SubscriberId, subscriptions: Vec<Subscription>) {
        let Some(subscriber) = self.subscribers.get_mut(&id) else {
            return;
        };
        for subscription in subscriptions {
            let key = subscription.project.key().to_owned();
            if subscriber.subscriptions.insert(subscription) {
                self.total += 1;
                self.by_path.entry(key).or_default().insert(id);
            }
        }
    }

    /// Removes subscriptions; unknown ones are ignored.
    pub fn remove_subscriptions(&mut self, id: SubscriberId, subscriptions: &[Subscription]) {
        let Some(subscriber) = self.subscribers.get_mut(&id) else {
            return;
        };
        for removed in subscriptions {
            if subscriber.subscriptions.remove(removed) {
                self.total -= 1;
                let key = removed.project.key();
                if !subscriber.subscriptions.has_path(key) {
                    unlink(&mut self.by_path, id, key);
                }
            }
        }
    }

    /// The subscribers with a subscription on the path `key`.
    pub fn subscribers_on(&self, key: &str) -> impl Iterator<Item = SubscriberId> + '_ {
        self.by_path.get(key).into_iter().flatten().copied()
    }

    /// The subscriptions a subscriber has now.
    pub fn subscriptions(&self, id: SubscriberId) -> &SubscriptionSet {
        self.subscribers
            .get(&id)
            .map_or(&NO_SUBSCRIPTIONS, |s| &s.subscriptions)
    }

    /// The event kinds a subscriber understands (git pushes only if it is unknown).
    pub fn accepts(&self, id: SubscriberId) -> AcceptedKinds {
        self.subscribers
            .get(&id)
            .map_or(AcceptedKinds::GIT_PUSHES, |s| s.accepts)
    }

    /// How many subscriptions one subscriber has.
    pub fn count(&self, id: SubscriberId) -> usize {
        self.subscribers
            .get(&id)
            .map_or(0, |s| s.subscriptions.len())
    }

    /// How many subscriptions there are across every subscriber.
    pub fn total(&self) -> usize {
        self.total
    }

    pub fn len(&self) -> usize {
        self.subscribers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
    }

    /// Every local subscriber that should get `event`.
    pub fn route(&self, state: &RoutingState, event: &PushEvent) -> Vec<Match> {
        let keys = candidate_keys(state, event);
        let view = state.catalog().view(&event.project);
        // A subscriber appears under several keys only if the project has several names.
        let mut seen: Option<foldhash::HashSet<SubscriberId>> =
            (keys.len() > 1).then(foldhash::HashSet::default);
        let mut matches: Vec<Match> = Vec::new();
        for key in &keys {
            for &id in self.by_path.get(key.path).into_iter().flatten() {
                if seen.as_mut().is_some_and(|seen| !seen.insert(id)) {
                    continue;
                }
                let Some(subscriber) = self.subscribers.get(&id) else {
                    continue;
                };
                if !subscriber.accepts.accepts(event.kind) {
                    continue;
                }
                let allowed = state
                    .policy(subscriber.agent)
                    .is_some_and(|policy| may_see(policy, &view));
                if !allowed {
                    continue;
                }
                let matched = matched_labels(&subscriber.subscriptions, &keys, event);
                if !matched.is_empty() {
                    matches.push(Match {
                        subscriber: id,
                        agent: subscriber.agent,
                        matched,
                    });
                }
            }
        }
        matches
    }
}

fn unlink(
    by_path: &mut HashMap<String, foldhash::HashSet<SubscriberId>>,
    id: SubscriberId,
    key: &str,
) {
    if let Some(subscribers) = by_path.get_mut(key) {
        subscribers.remove(&id);
        if subscribers.is_empty() {
            by_path.remove(key);
        }
    }
}

/// A path key that may name the event's project.
struct CandidateKey<'a> {
    path: &'a str,
    /// The catalog resolves this path to the event's project (otherwise only a
    /// subscription equal to the path the event carries matches on it).
    names_project: bool,
}

/// Every path key that names the event's project: its current and former paths, and the
/// path the event carries. Only subscriptions on these can match it.
fn candidate_keys<'a>(state: &'a RoutingState, event: &'a PushEvent) -> Vec<CandidateKey<'a>> {
    let catalog = state.catalog();
    let event_key = event.project.path.key();
    let names_project = |path: &str| catalog.resolve_key(path) == Some(event.project.id);
    let mut keys: Vec<CandidateKey<'a>> = catalog
        .names_of(event.project.id)
        .iter()
        .map(|path| CandidateKey {
            path: path.as_str(),
            names_project: names_project(path),
        })
        .collect();
    if !keys.iter().any(|key| key.path == event_key) {
        keys.push(CandidateKey {
            path: event_key,
            names_project: names_project(event_key),
        });
    }
    keys
}

fn matched_labels(
    subscriptions: &SubscriptionSet,
    keys: &[CandidateKey<'_>],
    event: &PushEvent,
) -> Vec<Arc<str>> {
    let mut labels: Vec<Arc<str>> = Vec::new();
    for key in keys {
        for subscription in subscriptions.on_path(key.path) {
            if subscription.matches_given(key.names_project, event)
                && !labels.contains(&subscription.label)
            {
                labels.push(subscription.label.clone());
            }
        }
    }
    labels
}

/// The same decision as [`SubscriptionIndex::route`] for one agent, without an index: used
/// to filter the backlog an agent replays when it connects.
pub fn route_one(
    state: &RoutingState,
    agent: AgentId,
    accepts: AcceptedKinds,
    subscriptions: &SubscriptionSet,
    event: &PushEvent,
) -> Option<Vec<Arc<str>>> {
    if !accepts.accepts(event.kind) {
        return None;
    }
    let policy = state.policy(agent)?;
    if !may_see(policy, &state.catalog().view(&event.project)) {
        return None;
    }
    let keys = candidate_keys(state, event);
    let matched = matched_labels(subscriptions, &keys, event);
    (!matched.is_empty()).then_some(matched)
}
