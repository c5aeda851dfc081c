//! GitLab hook bodies to log records: a pure parser, with no I/O and no database, so
//! that it can be fuzzed and tested on its own.
//!
//! [`parse_hook`] turns the body of a system hook or a project/group webhook into the
//! records the store appends, or says the hook is of a kind fluxgate does not use. It
//! looks at the body only, never at `X-Gitlab-Event`:
//!
//! | body kind | result |
//! |---|---|
//! | `push`, `tag_push` (both the system-hook shape and the webhook shape) | one push |
//! | `repository_update` | one push per element of `changes` |
//! | `project_create`, `project_update` | [`CatalogChange::ProjectUpserted`] |
//! | `project_destroy` | [`CatalogChange::ProjectDestroyed`] |
//! | `project_rename`, `project_transfer` | [`CatalogChange::ProjectRenamed`] |
//! | `group_rename` | [`CatalogChange::GroupRenamed`] |
//! | anything else | [`ParsedHook::Ignored`], never an error |
//!
//! A body of a kind fluxgate uses but with a missing or invalid field is a
//! [`ParseError`] whose message names the field's JSON path.
//!
//! Bodies are decoded twice, first for the kind and then for the fields of that kind,
//! each time without allocating for the fields that are not read (see `json`), so a
//! 25 MB push costs two scans and a few small strings.
//!
//! [`CatalogChange::ProjectUpserted`]: fluxgate_core::CatalogChange::ProjectUpserted
//! [`CatalogChange::ProjectDestroyed`]: fluxgate_core::CatalogChange::ProjectDestroyed
//! [`CatalogChange::ProjectRenamed`]: fluxgate_core::CatalogChange::ProjectRenamed
//! [`CatalogChange::GroupRenamed`]: fluxgate_core::CatalogChange::GroupRenamed

mod catalog;
mod error;
mod fields;
mod json;
mod kind;
mod project;
mod push;
mod wire;

use fluxgate_core::NewRecord;
use fluxgate_core::UnixMillis;

pub use error::ParseError;

use kind::HookKind;

/// What a hook body amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedHook {
    /// Records to append, in payload order (a repository_update yields one push per change).
    Records(Vec<NewRecord>),
    /// A kind fluxgate does not use (merge_request, user_create, ...); answered 202 and counted.
    /// `kind` is a short label for metrics/logs: the object_kind or event_name, or "unknown".
    Ignored { kind: String },
}

/// Parses a GitLab hook body received at `received_at`.
///
/// Errors only for a body that is not a JSON object, or for a kind fluxgate uses whose
/// fields are missing or invalid; an uninteresting kind is [`ParsedHook::Ignored`].
pub fn parse_hook(body: &[u8], received_at: UnixMillis) -> Result<ParsedHook, ParseError> {
    let envelope: wire::Envelope = json::decode(body)?;
    match HookKind::of(&envelope) {
        HookKind::Push => push::parse_push(body, received_at),
        HookKind::RepositoryUpdate => push::parse_repository_update(body, received_at),
        HookKind::Project(event) => catalog::parse_project_event(body, event),
        HookKind::GroupRename => catalog::parse_group_rename(body),
        HookKind::Other(kind) => Ok(ParsedHook::Ignored { kind }),
    }
}
