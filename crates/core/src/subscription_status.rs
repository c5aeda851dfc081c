//! Whether each of an agent's subscriptions can ever match a push, and why not: what the
//! broker tells the agent (Welcome, and after every change) and keeps for
//! `fluxgate agent show` and `fluxgate explain`.
//!
//! The broker works the status out (crate `routing`, `explain`); this is its durable,
//! serialisable form. Each report replaces the previous one of the agent; with several
//! streams, the last one to open or change writes it.

use serde::{Deserialize, Serialize};

use crate::time::UnixMillis;

/// Most subscriptions one report may list (a stream's own cap is lower).
pub const MAX_REPORTED_SUBSCRIPTIONS: usize = 4096;
/// Longest project or ref pattern text in a report, in bytes.
pub const MAX_SUBSCRIPTION_TEXT_BYTES: usize = 1024;
/// Longest reason in a report, in bytes.
pub const MAX_SUBSCRIPTION_REASON_BYTES: usize = 1024;

/// Whether a subscription can match, or the first thing that stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionState {
    /// Its path names a project the agent may see, and its ref pattern can match a ref.
    Matchable,
    /// No project in the broker's catalog has this path (now or formerly).
    NoSuchProject,
    /// The project exists, and the access rule does not let the agent see it.
    NotAllowed,
    /// No valid git ref matches the ref pattern.
    UnmatchableRef,
}

impl SubscriptionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Matchable => "matchable",
            Self::NoSuchProject => "no_such_project",
            Self::NotAllowed => "not_allowed",
            Self::UnmatchableRef => "unmatchable_ref",
        }
    }

    pub fn can_match(self) -> bool {
        self == Self::Matchable
    }
}

/// One subscription, as the agent sent it, with its status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionStatus {
    /// The project as the agent wrote it (path or URL).
    pub project: String,
    /// The ref pattern as the agent wrote it; empty: every ref.
    pub ref_pattern: String,
    pub state: SubscriptionState,
    /// For people: the access rule's branch that allows or refuses the project, or what is
    /// wrong with the path or the pattern.
    pub reason: String,
    /// The project's current path when the catalog knows the subscription's path (it
    /// differs after a rename).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_path: Option<String>,
}

/// The last subscriptions of an agent the broker saw, with their status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionReport {
    /// When the broker worked the status out.
    pub reported_at: UnixMillis,
    pub subscriptions: Vec<SubscriptionStatus>,
}

/// A report over a bound; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SubscriptionReportError {
    pub field: String,
    pub reason: String,
}

impl SubscriptionReport {
    /// Subscriptions that cannot match.
    pub fn unmatchable(&self) -> impl Iterator<Item = &SubscriptionStatus> {
        self.subscriptions.iter().filter(|s| !s.state.can_match())
    }

    /// Checks every bound, naming the first field over one.
    pub fn validate(&self) -> Result<(), SubscriptionReportError> {
        if self.subscriptions.len() > MAX_REPORTED_SUBSCRIPTIONS {
            return Err(SubscriptionReportError {
                field: "subscriptions".to_owned(),
                reason: format!(
                    "{} subscriptions; at most {MAX_REPORTED_SUBSCRIPTIONS} are allowed",
                    self.subscriptions.len()
                ),
            });
        }
        for (index, status) in self.subscriptions.iter().enumerate() {
            let over = [
                ("project", &status.project, MAX_SUBSCRIPTION_TEXT_BYTES),
                (
                    "ref_pattern",
                    &status.ref_pattern,
                    MAX_SUBSCRIPTION_TEXT_BYTES,
                ),
                ("reason", &status.reason, MAX_SUBSCRIPTION_REASON_BYTES),
            ]
            .into_iter()
            .chain(
                status
                    .project_path
                    .iter()
                    .map(|path| ("project_path", path, MAX_SUBSCRIPTION_TEXT_BYTES)),
            )
            .find(|(_, text, max)| text.len() > *max);
            if let Some((name, _, max)) = over {
                return Err(SubscriptionReportError {
                    field: format!("subscriptions[{index}].{name}"),
                    reason: format!("longer than {max} bytes"),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(reason: &str) -> SubscriptionStatus {
        SubscriptionStatus {
            project: "team/app".to_owned(),
            ref_pattern: String::new(),
            state: SubscriptionState::NotAllowed,
            reason: reason.to_owned(),
            project_path: None,
        }
    }

    #[test]
    fn bounds_are_enforced_with_the_field_named() {
        let report = |subscriptions| SubscriptionReport {
            reported_at: UnixMillis(1),
            subscriptions,
        };
        assert!(report(vec![status("a private project")]).validate().is_ok());
        let long = report(vec![
            status("ok"),
            status(&"x".repeat(MAX_SUBSCRIPTION_REASON_BYTES + 1)),
        ]);
        assert_eq!(
            long.validate().unwrap_err().to_string(),
            "subscriptions[1].reason: longer than 1024 bytes"
        );
        let many = report(vec![status("ok"); MAX_REPORTED_SUBSCRIPTIONS + 1]);
        assert_eq!(many.validate().unwrap_err().field, "subscriptions");
    }

    #[test]
    fn states_serialise_as_their_names() {
        for state in [
            SubscriptionState::Matchable,
            SubscriptionState::NoSuchProject,
            SubscriptionState::NotAllowed,
            SubscriptionState::UnmatchableRef,
        ] {
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{}\"", state.as_str())
            );
        }
    }
}
