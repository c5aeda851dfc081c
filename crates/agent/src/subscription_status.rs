//! What the broker says about this agent's subscriptions: whether each can ever match a
//! push, and if not why (a private project the agent may not see, an internal one without
//! `allow_internal`, a mistyped path, a ref pattern no ref can match).
//!
//! A subscription that cannot match is a receiver that never fires, so each is logged as
//! a warning: every one listed in a Welcome (so once per stream, also after a reconnect),
//! then, from the broker's later updates (after a subscription change, or when a grant, a
//! new project or a visibility change altered the answer), only those whose status changed;
//! one that can match again is logged at info.

use std::collections::HashMap;

use fluxgate_proto::v1 as proto;

/// The statuses last heard on this stream, by (project, ref pattern).
#[derive(Debug, Default)]
pub struct SubscriptionStatusLog {
    known: HashMap<(String, String), (i32, String)>,
}

impl SubscriptionStatusLog {
    /// A Welcome's statuses: every subscription that cannot match is logged.
    pub fn welcome(&mut self, statuses: &[proto::SubscriptionStatus]) {
        self.known.clear();
        self.update(statuses);
    }

    /// An update's statuses (they replace the previous ones): changes are logged.
    /// Returns how many subscriptions cannot match.
    pub fn update(&mut self, statuses: &[proto::SubscriptionStatus]) -> usize {
        let mut next = HashMap::with_capacity(statuses.len());
        let mut cannot = 0;
        for status in statuses {
            let subscription = status.subscription.clone().unwrap_or_default();
            let key = (subscription.project, subscription.ref_pattern);
            let value = (status.state, status.reason.clone());
            let matchable = status.state() == proto::SubscriptionState::Matchable;
            if !matchable {
                cannot += 1;
            }
            let changed = self.known.get(&key) != Some(&value);
            if changed && !matchable {
                tracing::warn!(
                    project = %key.0,
                    ref_pattern = %key.1,
                    state = status.state().as_str_name(),
                    reason = %status.reason,
                    "this subscription cannot match any push: its receivers will never be called"
                );
            } else if changed && self.known.contains_key(&key) {
                tracing::info!(
                    project = %key.0,
                    ref_pattern = %key.1,
                    reason = %status.reason,
                    "this subscription can match again"
                );
            }
            next.insert(key, value);
        }
        self.known = next;
        cannot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(project: &str, state: proto::SubscriptionState) -> proto::SubscriptionStatus {
        proto::SubscriptionStatus {
            subscription: Some(proto::Subscription {
                project: project.to_owned(),
                ref_pattern: String::new(),
            }),
            state: state as i32,
            reason: format!("{project}: {}", state.as_str_name()),
            project_path: String::new(),
        }
    }

    #[test]
    fn counts_what_cannot_match_and_remembers_the_last_statuses() {
        use proto::SubscriptionState::{Matchable, NotAllowed};
        let mut log = SubscriptionStatusLog::default();
        log.welcome(&[status("a/b", NotAllowed), status("c/d", Matchable)]);
        assert_eq!(log.known.len(), 2);
        assert_eq!(
            log.update(&[status("a/b", Matchable), status("c/d", Matchable)]),
            0
        );
        assert_eq!(log.update(&[status("a/b", NotAllowed)]), 1);
        assert_eq!(log.known.len(), 1, "an update replaces the statuses");
    }
}
