//! `push`, `tag_push` and `repository_update` bodies to push records.

use fluxgate_core::{EventKind, GitRef, NewRecord, ProjectRef, PushEvent, Sha, UnixMillis};
use uuid::Uuid;

use super::error::ParseError;
use super::fields;
use super::json::{self, Obj};
use super::project::hook_project;
use super::wire::{PushBody, RefChange, RepositoryUpdateBody};

/// A `push` or `tag_push` body: one ref changed. `commits` is never read.
pub(crate) fn parse_push(
    body: &[u8],
    received_at: UnixMillis,
) -> Result<Vec<NewRecord>, ParseError> {
    let wire: PushBody = json::decode(body)?;
    let git_ref = fields::git_ref("ref", &wire.git_ref)?;
    let before = fields::sha("before", &wire.before)?;
    let after = fields::sha("after", &wire.after)?;
    let project = hook_project(wire.project.as_ref().map(|Obj(p)| p), &wire.project_id)?;
    Ok(vec![push_record(
        project,
        git_ref,
        before,
        after,
        received_at,
    )])
}

/// A `repository_update` body: one push record per element of `changes`, in order
/// (none for an empty `changes`).
pub(crate) fn parse_repository_update(
    body: &[u8],
    received_at: UnixMillis,
) -> Result<Vec<NewRecord>, ParseError> {
    let wire: RepositoryUpdateBody = json::decode(body)?;
    let changes = wire.changes.ok_or_else(|| ParseError::missing("changes"))?;
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let project = hook_project(wire.project.as_ref().map(|Obj(p)| p), &wire.project_id)?;
    changes
        .iter()
        .enumerate()
        .map(|(index, Obj(change))| {
            let (git_ref, before, after) = ref_change(index, change)?;
            Ok(push_record(
                project.clone(),
                git_ref,
                before,
                after,
                received_at,
            ))
        })
        .collect()
}

fn ref_change(index: usize, change: &RefChange) -> Result<(GitRef, Sha, Sha), ParseError> {
    let at = |field: &str| format!("changes[{index}].{field}");
    Ok((
        fields::git_ref(&at("ref"), &change.git_ref)?,
        fields::sha(&at("before"), &change.before)?,
        fields::sha(&at("after"), &change.after)?,
    ))
}

fn push_record(
    project: ProjectRef,
    git_ref: GitRef,
    before: Sha,
    after: Sha,
    received_at: UnixMillis,
) -> NewRecord {
    NewRecord::Push(PushEvent {
        event_id: Uuid::now_v7(),
        project,
        kind: EventKind::for_ref(&git_ref),
        git_ref: Some(git_ref),
        before,
        after,
        artifact: None,
        received_at,
    })
}
