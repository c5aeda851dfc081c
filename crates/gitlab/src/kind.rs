//! Which kind of hook a body is, decided from the body alone.
//!
//! `X-Gitlab-Event` is not trusted: the system-hook "Test" button has sent `Push Hook`,
//! and one system hook delivers many kinds under `System Hook`. The body's `object_kind`
//! wins when it is a string; otherwise its `event_name` decides.

use super::json::Scalar;
use super::wire::Envelope;

/// Longest kind label reported for an ignored hook.
const MAX_LABEL_LEN: usize = 64;

/// The hook kinds fluxgate acts on, and everything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HookKind {
    /// `push` or `tag_push`: one ref changed.
    Push,
    /// `repository_update`: every ref one `git push` changed.
    RepositoryUpdate,
    /// A `project_*` system event.
    Project(ProjectEvent),
    /// `group_rename`.
    GroupRename,
    /// Any other kind, with a label that is safe for metrics and logs.
    Other(String),
}

/// The `project_*` system events, by the catalog change each makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProjectEvent {
    /// `project_create` or `project_update`.
    Upsert,
    /// `project_destroy`.
    Destroy,
    /// `project_rename` or `project_transfer`.
    Move,
}

impl HookKind {
    pub(crate) fn of(envelope: &Envelope) -> Self {
        if let Scalar::Str(kind) = &envelope.object_kind {
            return match kind.as_str() {
                "push" | "tag_push" => Self::Push,
                other => Self::Other(label(other)),
            };
        }
        let Scalar::Str(name) = &envelope.event_name else {
            return Self::Other("unknown".to_owned());
        };
        match name.as_str() {
            "push" | "tag_push" => Self::Push,
            "repository_update" => Self::RepositoryUpdate,
            "project_create" | "project_update" => Self::Project(ProjectEvent::Upsert),
            "project_destroy" => Self::Project(ProjectEvent::Destroy),
            "project_rename" | "project_transfer" => Self::Project(ProjectEvent::Move),
            "group_rename" => Self::GroupRename,
            other => Self::Other(label(other)),
        }
    }
}

/// The kind as written if it looks like a GitLab kind (short, `[A-Za-z0-9_.-]`), else
/// `unknown`, so that a hostile body cannot blow up metric label sets or log lines.
fn label(kind: &str) -> String {
    let plain = !kind.is_empty()
        && kind.len() <= MAX_LABEL_LEN
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if plain {
        kind.to_owned()
    } else {
        "unknown".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(object_kind: Scalar, event_name: Scalar) -> HookKind {
        HookKind::of(&Envelope {
            object_kind,
            event_name,
        })
    }

    fn s(v: &str) -> Scalar {
        Scalar::Str(v.to_owned())
    }

    #[test]
    fn object_kind_wins_over_event_name() {
        assert_eq!(kind(s("push"), s("repository_update")), HookKind::Push);
        assert_eq!(
            kind(s("merge_request"), s("push")),
            HookKind::Other("merge_request".to_owned())
        );
    }

    #[test]
    fn event_name_decides_without_object_kind() {
        assert_eq!(kind(Scalar::Absent, s("tag_push")), HookKind::Push);
        assert_eq!(kind(Scalar::Int(3), s("push")), HookKind::Push);
        assert_eq!(
            kind(Scalar::Absent, s("project_transfer")),
            HookKind::Project(ProjectEvent::Move)
        );
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(
            kind(Scalar::Absent, Scalar::Absent),
            HookKind::Other("unknown".to_owned())
        );
        assert_eq!(
            kind(Scalar::Absent, s(&"x".repeat(65))),
            HookKind::Other("unknown".to_owned())
        );
        assert_eq!(
            kind(s("bad label\n"), Scalar::Absent),
            HookKind::Other("unknown".to_owned())
        );
        assert_eq!(
            kind(s("user_create"), Scalar::Absent),
            HookKind::Other("user_create".to_owned())
        );
    }
}
