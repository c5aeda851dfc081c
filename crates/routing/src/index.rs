//! The subscription index: from an event to the local subscribers that get it.
//!
//! Subscribers (one per agent stream) are indexed by the path keys they subscribe to. For
//! an event, the candidates are found through every path that names its project (current
//! and former) and the path the event carries; each is then checked against its ref
//! pattern and against the access rule with the agent's current policy.

use std::collections::HashMap;

use fluxgate_core::{AgentId, PushEvent};

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
    pub matched: Vec<String>,
}

#[derive(Debug)]
struct Subscriber {
    agent: AgentId,
    subscriptions: Vec<Subscription>,
}

#[derive(Debug, Default)]
pub struct SubscriptionIndex {
    subscribers: HashMap<SubscriberId, Subscriber>,
    /// Path key → subscribers with a subscription on that path.
    by_path: HashMap<String, Vec<SubscriberId>>,
}

impl SubscriptionIndex {
    pub fn insert(&mut self, id: SubscriberId, agent: AgentId, subscriptions: Vec<Subscription>) {
        self.subscribers.insert(
            id,
            Subscriber {
                agent,
                subscriptions: Vec::new(),
            },
        );
        self.add(id, subscriptions);
    }

    pub fn remove(&mut self, id: SubscriberId) {
        if let Some(subscriber) = self.subscribers.remove(&id) {
            for subscription in &subscriber.subscriptions {
                self.unlink(id, subscription.project.key());
            }
        }
    }

    /// Adds subscriptions (ignoring ones it already has).
    pub fn add(&mut self, id: SubscriberId, subscriptions: Vec<Subscription>) {
        let Some(subscriber) = self.subscribers.get_mut(&id) else {
            return;
        };
        for subscription in subscriptions {
            if subscriber
                .subscriptions
                .iter()
                .any(|s| s.same_as(&subscription))
            {
                continue;
            }
            let subscribers = self
                .by_path
                .entry(subscription.project.key().to_owned())
                .or_default();
            if !subscribers.contains(&id) {
                subscribers.push(id);
            }
            subscriber.subscriptions.push(subscription);
        }
    }

    /// Removes subscriptions; unknown ones are ignored.
    pub fn remove_subscriptions(&mut self, id: SubscriberId, subscriptions: &[Subscription]) {
        let Some(subscriber) = self.subscribers.get_mut(&id) else {
            return;
        };
        subscriber
            .subscriptions
            .retain(|s| !subscriptions.iter().any(|r| r.same_as(s)));
        let still_used: Vec<String> = subscriber
            .subscriptions
            .iter()
            .map(|s| s.project.key().to_owned())
            .collect();
        for removed in subscriptions {
            if !still_used.iter().any(|key| key == removed.project.key()) {
                self.unlink(id, removed.project.key());
            }
        }
    }

    fn unlink(&mut self, id: SubscriberId, key: &str) {
        if let Some(subscribers) = self.by_path.get_mut(key) {
            subscribers.retain(|s| *s != id);
            if subscribers.is_empty() {
                self.by_path.remove(key);
            }
        }
    }

    /// The subscriptions a subscriber has now.
    pub fn subscriptions(&self, id: SubscriberId) -> &[Subscription] {
        self.subscribers
            .get(&id)
            .map_or(&[], |s| s.subscriptions.as_slice())
    }

    pub fn len(&self) -> usize {
        self.subscribers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
    }

    /// Every local subscriber that should get `event`.
    pub fn route(&self, state: &RoutingState, event: &PushEvent) -> Vec<Match> {
        let catalog = state.catalog();
        let event_key = event.project.path.key();
        let mut keys: Vec<&str> = catalog
            .names_of(event.project.id)
            .iter()
            .map(String::as_str)
            .collect();
        if !keys.contains(&event_key) {
            keys.push(event_key);
        }
        let view = catalog.view(&event.project);
        let mut matches: Vec<Match> = Vec::new();
        for key in keys {
            for &id in self.by_path.get(key).into_iter().flatten() {
                if matches.iter().any(|m| m.subscriber == id) {
                    continue;
                }
                let Some(subscriber) = self.subscribers.get(&id) else {
                    continue;
                };
                let allowed = state
                    .policy(subscriber.agent)
                    .is_some_and(|policy| may_see(policy, &view));
                if !allowed {
                    continue;
                }
                let matched = matched_labels(&subscriber.subscriptions, state, event);
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

fn matched_labels(
    subscriptions: &[Subscription],
    state: &RoutingState,
    event: &PushEvent,
) -> Vec<String> {
    let mut labels: Vec<String> = Vec::new();
    for subscription in subscriptions {
        if subscription.matches(state.catalog(), event) && !labels.contains(&subscription.label) {
            labels.push(subscription.label.clone());
        }
    }
    labels
}

/// The same decision as [`SubscriptionIndex::route`] for one agent, without an index: used
/// to filter the backlog an agent replays when it connects.
pub fn route_one(
    state: &RoutingState,
    agent: AgentId,
    subscriptions: &[Subscription],
    event: &PushEvent,
) -> Option<Vec<String>> {
    let policy = state.policy(agent)?;
    if !may_see(policy, &state.catalog().view(&event.project)) {
        return None;
    }
    let matched = matched_labels(subscriptions, state, event);
    (!matched.is_empty()).then_some(matched)
}
