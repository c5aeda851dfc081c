//! Whether each of a stream's subscriptions can match a push: sent to the agent in the
//! Welcome and whenever it changes, and persisted in the background so
//! `fluxgate agent show` and `fluxgate explain` (which read the store) have it.
//!
//! The hub works the status out (`routing::explain`). The stream sends it after every
//! subscription change (as the answer to it), and after a state change the hub says may
//! have changed it (a project created, renamed or made public, a grant added or withdrawn)
//! only if it differs from what the agent last got. Each report goes to the replica's one
//! report writer ([`AgentReports`]), which always writes the newest. With several
//! streams, the agent's report is the last one written.

use fluxgate_core::{
    AgentId, AgentName, SubscriptionReport, SubscriptionState, SubscriptionStatus, UnixMillis,
};
use fluxgate_proto::v1;
use fluxgate_routing::Subscription;

use crate::agent_reports::AgentReports;

/// What one stream last sent its agent of its subscriptions' status.
#[derive(Default)]
pub struct StatusRecorder {
    last: Option<Vec<SubscriptionStatus>>,
}

impl StatusRecorder {
    /// Notes `statuses` as sent and hands them to `reports`; false (nothing to send) if
    /// they equal the last ones sent and `always` is not set.
    pub fn record(
        &mut self,
        reports: &AgentReports,
        agent: AgentId,
        name: &AgentName,
        statuses: &[SubscriptionStatus],
        always: bool,
    ) -> bool {
        if !always && self.last.as_deref() == Some(statuses) {
            return false;
        }
        let cannot = statuses.iter().filter(|s| !s.state.can_match()).count();
        if cannot > 0 {
            tracing::info!(
                subscriptions = statuses.len(),
                cannot_match = cannot,
                "some subscriptions cannot match"
            );
        }
        self.last = Some(statuses.to_vec());
        reports.subscription_status(
            agent,
            name,
            SubscriptionReport {
                reported_at: UnixMillis::now(),
                subscriptions: statuses.to_vec(),
            },
        );
        true
    }
}

/// `subscriptions` without repeats (a repeat is the same path and ref pattern), in order.
pub fn distinct(subscriptions: &[Subscription]) -> Vec<Subscription> {
    let mut out: Vec<Subscription> = Vec::with_capacity(subscriptions.len());
    for subscription in subscriptions {
        if !out.iter().any(|kept| kept.same_as(subscription)) {
            out.push(subscription.clone());
        }
    }
    out
}

/// The wire form of statuses.
pub fn to_wire(statuses: &[SubscriptionStatus]) -> Vec<v1::SubscriptionStatus> {
    statuses
        .iter()
        .map(|status| v1::SubscriptionStatus {
            subscription: Some(v1::Subscription {
                project: status.project.clone(),
                ref_pattern: status.ref_pattern.clone(),
            }),
            state: wire_state(status.state) as i32,
            reason: status.reason.clone(),
            project_path: status.project_path.clone().unwrap_or_default(),
        })
        .collect()
}

fn wire_state(state: SubscriptionState) -> v1::SubscriptionState {
    match state {
        SubscriptionState::Matchable => v1::SubscriptionState::Matchable,
        SubscriptionState::NoSuchProject => v1::SubscriptionState::NoSuchProject,
        SubscriptionState::NotAllowed => v1::SubscriptionState::NotAllowed,
        SubscriptionState::UnmatchableRef => v1::SubscriptionState::UnmatchableRef,
    }
}
