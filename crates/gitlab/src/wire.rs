//! The fields of GitLab hook bodies that fluxgate reads, one struct per body shape.
//!
//! Sources: `lib/gitlab/data_builder/push.rb` and `repository.rb` (push, tag push,
//! repository update), `lib/gitlab/hook_data/project_builder.rb` and `group_builder.rb`
//! (system events), and the examples in GitLab's `doc/administration/system_hooks.md`.
//! Every other field (`commits`, `repository`, `user_*`, ...) is skipped unread.

use serde::Deserialize;

use super::json::{Obj, Scalar};

/// What every body is first read as, to decide which shape it has.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Envelope {
    pub object_kind: Scalar,
    pub event_name: Scalar,
}

/// `project` in push, tag push and repository update bodies (`Project#hook_attrs`).
/// The system-hook documentation examples leave out `id`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct HookProject {
    pub id: Scalar,
    pub path_with_namespace: Scalar,
    pub visibility_level: Scalar,
}

/// A `push` or `tag_push` body, from a system hook or a project/group webhook.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PushBody {
    #[serde(rename = "ref")]
    pub git_ref: Scalar,
    pub before: Scalar,
    pub after: Scalar,
    pub project_id: Scalar,
    pub project: Option<Obj<HookProject>>,
}

/// A `repository_update` system-hook body: every ref one `git push` changed.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RepositoryUpdateBody {
    pub project_id: Scalar,
    pub project: Option<Obj<HookProject>>,
    pub changes: Option<Vec<Obj<RefChange>>>,
}

/// One element of `changes[]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RefChange {
    #[serde(rename = "ref")]
    pub git_ref: Scalar,
    pub before: Scalar,
    pub after: Scalar,
}

/// A `project_create`, `project_update`, `project_destroy`, `project_rename` or
/// `project_transfer` system-hook body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ProjectEventBody {
    pub project_id: Scalar,
    pub path_with_namespace: Scalar,
    pub project_visibility: Scalar,
    /// Only in `project_rename` and `project_transfer`.
    pub old_path_with_namespace: Scalar,
}

/// A `group_rename` system-hook body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct GroupRenameBody {
    pub full_path: Scalar,
    pub old_full_path: Scalar,
}
