//! The durable log: every record the broker accepts, in one global, gapless order.
//!
//! The log carries two kinds of record. Pushes are what agents receive. State changes
//! (catalog and agent changes) are what every replica folds into its routing state, so
//! that all replicas decide access the same way at the same point of the log.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::agent::{AgentId, AgentName, AgentPolicy};
use crate::artifact::Artifact;
use crate::git::{GitRef, Sha};
use crate::path::FullPath;
use crate::project::{ProjectId, ProjectRef, Visibility};
use crate::time::UnixMillis;

/// A position in the log. The first record has seq 1; seq 0 is "before everything".
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    pub const ZERO: Seq = Seq(0);

    pub fn get(self) -> u64 {
        self.0
    }

    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What happened, as an agent sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A branch (or other non-tag ref) changed.
    Push,
    /// A tag changed.
    TagPush,
    /// A pipeline announced that it published an artifact (authenticated by its CI ID
    /// token); the event carries the pipeline's ref and sha and an [`Artifact`].
    Artifact,
    /// GitLab's KAS notification: "something was pushed to this project", with no ref and
    /// no shas. It reaches every subscription of the project, whatever its ref pattern.
    ProjectPush,
}

impl EventKind {
    /// The kind GitLab would report for a change to `git_ref`.
    pub fn for_ref(git_ref: &GitRef) -> Self {
        if git_ref.is_tag() {
            Self::TagPush
        } else {
            Self::Push
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::TagPush => "tag_push",
            Self::Artifact => "artifact",
            Self::ProjectPush => "project_push",
        }
    }

    /// True for the kinds every agent understands; the others go only to agents that said
    /// they accept them.
    pub fn is_git_push(self) -> bool {
        matches!(self, Self::Push | Self::TagPush)
    }
}

/// An event agents receive: one ref changed in one project ([`EventKind::Push`],
/// [`EventKind::TagPush`]), a pipeline's artifact notification ([`EventKind::Artifact`]),
/// or GitLab's ref-less push notice ([`EventKind::ProjectPush`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEvent {
    /// Unique id of this event, for logs and tracing.
    pub event_id: Uuid,
    pub project: ProjectRef,
    /// The ref that changed, or the pipeline's ref; `None` only for
    /// [`EventKind::ProjectPush`], which matches every ref.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<GitRef>,
    /// The ref's previous sha; zero when unknown (artifact, project push).
    pub before: Sha,
    /// The ref's new sha, or the pipeline's; zero when unknown.
    pub after: Sha,
    pub kind: EventKind,
    /// What the pipeline published; only for [`EventKind::Artifact`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// When the broker received the hook that carried it.
    pub received_at: UnixMillis,
}

/// A change to the project catalog, from GitLab's `project_*` and `group_rename` events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum CatalogChange {
    /// `project_create` or `project_update`.
    ProjectUpserted { project: ProjectRef },
    /// `project_rename` or `project_transfer`: the project now lives at `project.path`.
    ProjectRenamed {
        project: ProjectRef,
        old_path: FullPath,
    },
    /// `project_destroy`.
    ProjectDestroyed { id: ProjectId, path: FullPath },
    /// `group_rename`: every project and grant under `old_path` moves to `new_path`.
    GroupRenamed {
        old_path: FullPath,
        new_path: FullPath,
    },
}

/// A change to the broker's routing state, resolved by the store into explicit effects.
///
/// The store is the one place that knows the rules (how a rename moves aliases and grants,
/// what a push payload teaches the catalog). It records the resulting effects, so each
/// replica applies them mechanically and all replicas agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    pub cause: StateCause,
    pub effects: Vec<StateEffect>,
}

/// Why the state changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum StateCause {
    /// A GitLab system event.
    Gitlab { change: CatalogChange },
    /// A push payload showed a project that was new, moved, or changed visibility.
    Observed { project: ProjectId },
    /// An administrator changed an agent (admin API or CLI).
    Admin {
        action: AdminAction,
        agent: AgentName,
    },
}

/// What an administrator did to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminAction {
    Create,
    Grant,
    Revoke,
    RotateToken,
    Delete,
}

/// One fact to apply to the routing state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum StateEffect {
    /// The project now has this path (also an alias of it) and visibility.
    Project {
        id: ProjectId,
        path: FullPath,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        visibility: Option<Visibility>,
    },
    /// `path` (a former path) still names `project`.
    Alias { path: FullPath, project: ProjectId },
    /// The project is gone, with all its aliases.
    ProjectRemoved { id: ProjectId },
    /// The agent's policy is now this.
    Agent { policy: AgentPolicy },
    /// The agent was deleted.
    AgentRemoved { id: AgentId },
}

/// What a log entry holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogRecord {
    Push(PushEvent),
    State(StateChange),
}

impl LogRecord {
    /// The record's kind as a short label, for metrics and the store's index column.
    pub fn kind(&self) -> &'static str {
        match self {
            LogRecord::Push(event) => event.kind.as_str(),
            LogRecord::State(_) => "state",
        }
    }
}

/// A committed record and its position in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub seq: Seq,
    pub recorded_at: UnixMillis,
    pub record: LogRecord,
}

impl LogEntry {
    pub fn as_push(&self) -> Option<&PushEvent> {
        match &self.record {
            LogRecord::Push(event) => Some(event),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_entries_round_trip_through_json() {
        let entry = LogEntry {
            seq: Seq(7),
            recorded_at: UnixMillis(1_700_000_000_000),
            record: LogRecord::Push(PushEvent {
                event_id: Uuid::nil(),
                project: ProjectRef {
                    id: ProjectId::new(15).unwrap(),
                    path: FullPath::parse("mike/diaspora").unwrap(),
                    visibility: Some(Visibility::Private),
                },
                git_ref: Some(GitRef::parse("refs/heads/master").unwrap()),
                before: Sha::zero(),
                after: Sha::parse(&"a".repeat(40)).unwrap(),
                kind: EventKind::Push,
                artifact: None,
                received_at: UnixMillis(1_700_000_000_000),
            }),
        };
        let json = serde_json::to_string(&entry).unwrap();
        assert!(json.contains(r#""type":"push""#), "{json}");
        assert!(json.contains(r#""ref":"refs/heads/master""#), "{json}");
        assert!(!json.contains("artifact"), "{json}");
        assert_eq!(serde_json::from_str::<LogEntry>(&json).unwrap(), entry);
    }

    #[test]
    fn a_ref_less_project_push_round_trips_without_a_ref() {
        let entry = LogEntry {
            seq: Seq(8),
            recorded_at: UnixMillis(1_700_000_000_000),
            record: LogRecord::Push(PushEvent {
                event_id: Uuid::nil(),
                project: ProjectRef {
                    id: ProjectId::new(15).unwrap(),
                    path: FullPath::parse("mike/diaspora").unwrap(),
                    visibility: None,
                },
                git_ref: None,
                before: Sha::zero(),
                after: Sha::zero(),
                kind: EventKind::ProjectPush,
                artifact: None,
                received_at: UnixMillis(1_700_000_000_000),
            }),
        };
        let json = serde_json::to_string(&entry).unwrap();
        assert!(!json.contains(r#""ref""#), "{json}");
        assert!(json.contains(r#""kind":"project_push""#), "{json}");
        assert_eq!(serde_json::from_str::<LogEntry>(&json).unwrap(), entry);
    }
}
