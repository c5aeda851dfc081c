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
//! | anything else, and a `repository_update` without changes | [`ParsedHook::Ignored`], never an error |
//!
//! Only `push` and `tag_push` are read from `object_kind`; the system events are read
//! from `event_name` (see [`KnownKind`]).
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

use fluxgate_core::{NewRecord, UnixMillis};

pub use error::ParseError;
pub use kind::{HookKind, KnownKind};

use catalog::ProjectEvent;
use kind::{Named, NamedBy};

/// What a hook body amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedHook {
    /// Records to append, in payload order (a repository_update yields one push per
    /// change); never empty.
    Records {
        kind: KnownKind,
        records: Vec<NewRecord>,
    },
    /// A kind fluxgate does not use (merge_request, user_create, ...); answered 202 and
    /// counted.
    Ignored { kind: HookKind },
}

impl ParsedHook {
    /// The hook's kind, for answers and logs (bounded: see [`HookKind::as_str`]).
    pub fn kind(&self) -> &str {
        match self {
            Self::Records { kind, .. } => kind.as_str(),
            Self::Ignored { kind } => kind.as_str(),
        }
    }
}

/// Parses a GitLab hook body received at `received_at`.
///
/// Errors only for a body that is not a JSON object, or for a kind fluxgate uses whose
/// fields are missing or invalid; an uninteresting kind is [`ParsedHook::Ignored`].
pub fn parse_hook(body: &[u8], received_at: UnixMillis) -> Result<ParsedHook, ParseError> {
    let envelope: wire::Envelope = json::decode(body)?;
    let Named { kind, by } = Named::of(&envelope);
    let HookKind::Known(known) = kind else {
        return Ok(ParsedHook::Ignored { kind });
    };
    let system_event = by == NamedBy::EventName;
    let records = match known {
        KnownKind::Push | KnownKind::TagPush => push::parse_push(body, received_at)?,
        KnownKind::RepositoryUpdate if system_event => {
            push::parse_repository_update(body, received_at)?
        }
        KnownKind::ProjectCreate | KnownKind::ProjectUpdate if system_event => {
            catalog::parse_project_event(body, ProjectEvent::Upsert)?
        }
        KnownKind::ProjectDestroy if system_event => {
            catalog::parse_project_event(body, ProjectEvent::Destroy)?
        }
        KnownKind::ProjectRename | KnownKind::ProjectTransfer if system_event => {
            catalog::parse_project_event(body, ProjectEvent::Move)?
        }
        KnownKind::GroupRename if system_event => catalog::parse_group_rename(body)?,
        _ => Vec::new(),
    };
    if records.is_empty() {
        return Ok(ParsedHook::Ignored { kind });
    }
    Ok(ParsedHook::Records {
        kind: known,
        records,
    })
}
