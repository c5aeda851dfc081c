//! Which kind of hook a body is, decided from the body alone.
//!
//! `X-Gitlab-Event` is not trusted: the system-hook "Test" button has sent `Push Hook`,
//! and one system hook delivers many kinds under `System Hook`. The body's `object_kind`
//! wins when it is a string; otherwise its `event_name` decides.
//!
//! [`KnownKind`] is the one list of the kinds GitLab sends that fluxgate knows by name:
//! the parser dispatches on it, and metric labels are its names (anything else is
//! counted as `other`), so a sender cannot grow a label set.

use crate::json::Scalar;
use crate::wire::Envelope;

/// Longest kind name an ignored hook's answer and log line repeat.
const MAX_NAME_LEN: usize = 64;

/// What an ignored hook that names no usable kind is called.
const UNNAMED: &str = "unknown";

/// The metric label of every kind not in [`KnownKind`].
const OTHER_LABEL: &str = "other";

/// Defines [`KnownKind`] from one list of `Variant => "name"`, so that the enum, its
/// names and [`KnownKind::ALL`] cannot disagree.
macro_rules! known_kinds {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// A hook kind GitLab sends, by its `object_kind` or `event_name`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum KnownKind {
            $($(#[doc = $doc])* $variant,)*
        }

        impl KnownKind {
            /// Every known kind, in the order of the definition.
            pub const ALL: &'static [KnownKind] = &[$(KnownKind::$variant,)*];

            /// The kind as GitLab writes it: `push`, `merge_request`, …
            pub fn as_str(self) -> &'static str {
                match self {
                    $(KnownKind::$variant => $name,)*
                }
            }

            /// The kind GitLab writes as `name`, if fluxgate knows it.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(KnownKind::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

known_kinds! {
    /// A branch push (webhook or system hook): one ref changed.
    Push => "push",
    /// A tag push (webhook or system hook): one ref changed.
    TagPush => "tag_push",
    /// Every ref one `git push` changed (system hook).
    RepositoryUpdate => "repository_update",
    ProjectCreate => "project_create",
    ProjectUpdate => "project_update",
    ProjectDestroy => "project_destroy",
    ProjectRename => "project_rename",
    ProjectTransfer => "project_transfer",
    GroupRename => "group_rename",
    MergeRequest => "merge_request",
    Note => "note",
    Issue => "issue",
    Pipeline => "pipeline",
    Build => "build",
    Job => "job",
    Deployment => "deployment",
    Release => "release",
    WikiPage => "wiki_page",
    FeatureFlag => "feature_flag",
    Emoji => "emoji",
    UserCreate => "user_create",
    UserDestroy => "user_destroy",
    UserRename => "user_rename",
    UserFailedLogin => "user_failed_login",
    UserAddToTeam => "user_add_to_team",
    UserRemoveFromTeam => "user_remove_from_team",
    UserUpdateForTeam => "user_update_for_team",
    UserAddToGroup => "user_add_to_group",
    UserRemoveFromGroup => "user_remove_from_group",
    UserUpdateForGroup => "user_update_for_group",
    KeyCreate => "key_create",
    KeyDestroy => "key_destroy",
    GroupCreate => "group_create",
    GroupDestroy => "group_destroy",
}

impl std::fmt::Display for KnownKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind a body names, known or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookKind {
    Known(KnownKind),
    /// A name fluxgate does not know, as written: short and `[A-Za-z0-9_.-]` only.
    Unlisted(String),
    /// No kind, or one too long or with other characters than an unlisted name allows.
    Unnamed,
}

impl HookKind {
    /// Reads a kind name from the body: known, unlisted if it is short and plain, else
    /// unnamed, so that a hostile body cannot put anything long or odd in an answer or a
    /// log line.
    pub(crate) fn from_name(name: &str) -> Self {
        if let Some(known) = KnownKind::from_name(name) {
            return Self::Known(known);
        }
        let plain = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if plain {
            Self::Unlisted(name.to_owned())
        } else {
            Self::Unnamed
        }
    }

    /// The kind for answers and logs: the name as written, or `unknown`. At most 64
    /// characters of `[A-Za-z0-9_.-]`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Known(known) => known.as_str(),
            Self::Unlisted(name) => name,
            Self::Unnamed => UNNAMED,
        }
    }

    /// The kind as a metric label: a [`KnownKind`] name, or [`OTHER_LABEL`].
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Known(known) => known.as_str(),
            Self::Unlisted(_) | Self::Unnamed => OTHER_LABEL,
        }
    }
}

impl std::fmt::Display for HookKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The field of the body that named its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NamedBy {
    /// `object_kind`: project and group webhooks, and push system hooks.
    ObjectKind,
    /// `event_name`, read only when `object_kind` is not a string: system events.
    EventName,
}

/// A body's kind and the field that named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Named {
    pub kind: HookKind,
    pub by: NamedBy,
}

impl Named {
    pub(crate) fn of(envelope: &Envelope) -> Self {
        if let Scalar::Str(kind) = &envelope.object_kind {
            return Self {
                kind: HookKind::from_name(kind),
                by: NamedBy::ObjectKind,
            };
        }
        let kind = match &envelope.event_name {
            Scalar::Str(name) => HookKind::from_name(name),
            _ => HookKind::Unnamed,
        };
        Self {
            kind,
            by: NamedBy::EventName,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(object_kind: Scalar, event_name: Scalar) -> Named {
        Named::of(&Envelope {
            object_kind,
            event_name,
        })
    }

    fn s(v: &str) -> Scalar {
        Scalar::Str(v.to_owned())
    }

    #[test]
    fn object_kind_wins_over_event_name() {
        let named = kind(s("push"), s("repository_update"));
        assert_eq!(named.kind, HookKind::Known(KnownKind::Push));
        assert_eq!(named.by, NamedBy::ObjectKind);
        let named = kind(s("merge_request"), s("push"));
        assert_eq!(named.kind, HookKind::Known(KnownKind::MergeRequest));
        assert_eq!(named.by, NamedBy::ObjectKind);
    }

    #[test]
    fn event_name_decides_without_object_kind() {
        let named = kind(Scalar::Absent, s("tag_push"));
        assert_eq!(named.kind, HookKind::Known(KnownKind::TagPush));
        assert_eq!(named.by, NamedBy::EventName);
        assert_eq!(
            kind(Scalar::Int(3), s("project_transfer")).kind,
            HookKind::Known(KnownKind::ProjectTransfer)
        );
    }

    #[test]
    fn names_are_bounded() {
        assert_eq!(kind(Scalar::Absent, Scalar::Absent).kind, HookKind::Unnamed);
        assert_eq!(
            kind(Scalar::Absent, s(&"x".repeat(65))).kind,
            HookKind::Unnamed
        );
        assert_eq!(
            kind(s("bad label\n"), Scalar::Absent).kind,
            HookKind::Unnamed
        );
        assert_eq!(
            kind(s("gitlab_subscription"), Scalar::Absent).kind,
            HookKind::Unlisted("gitlab_subscription".to_owned())
        );
    }

    #[test]
    fn every_known_kind_reads_back_from_its_name() {
        for &known in KnownKind::ALL {
            assert_eq!(KnownKind::from_name(known.as_str()), Some(known));
            assert_eq!(HookKind::Known(known).metric_label(), known.as_str());
        }
        assert_eq!(KnownKind::ALL.len(), 34);
    }

    #[test]
    fn only_known_kinds_become_metric_labels() {
        assert_eq!(HookKind::Unlisted("x_y".to_owned()).metric_label(), "other");
        assert_eq!(HookKind::Unnamed.metric_label(), "other");
        assert_eq!(HookKind::Unnamed.as_str(), "unknown");
        assert_eq!(HookKind::Unlisted("x_y".to_owned()).as_str(), "x_y");
    }
}
