//! `project_*` and `group_rename` system events to catalog changes.
//!
//! These bodies are flat: `project_id`, `path_with_namespace` and the visibility as a
//! name (`project_visibility`), unlike push bodies, which nest the project and give a
//! numeric `visibility_level`.

use fluxgate_core::{CatalogChange, NewRecord, ProjectRef};

use super::error::ParseError;
use super::fields;
use super::json;
use super::wire::{GroupRenameBody, ProjectEventBody};

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

/// A `project_create`, `project_update`, `project_destroy`, `project_rename` or
/// `project_transfer` body.
pub(crate) fn parse_project_event(
    body: &[u8],
    event: ProjectEvent,
) -> Result<Vec<NewRecord>, ParseError> {
    let wire: ProjectEventBody = json::decode(body)?;
    let change = match event {
        ProjectEvent::Upsert => CatalogChange::ProjectUpserted {
            project: project(&wire)?,
        },
        ProjectEvent::Destroy => CatalogChange::ProjectDestroyed {
            id: fields::project_id("project_id", &wire.project_id)?,
            path: fields::full_path("path_with_namespace", &wire.path_with_namespace)?,
        },
        ProjectEvent::Move => CatalogChange::ProjectRenamed {
            project: project(&wire)?,
            old_path: fields::full_path("old_path_with_namespace", &wire.old_path_with_namespace)?,
        },
    };
    Ok(catalog_record(change))
}

/// A `group_rename` body.
pub(crate) fn parse_group_rename(body: &[u8]) -> Result<Vec<NewRecord>, ParseError> {
    let wire: GroupRenameBody = json::decode(body)?;
    Ok(catalog_record(CatalogChange::GroupRenamed {
        old_path: fields::full_path("old_full_path", &wire.old_full_path)?,
        new_path: fields::full_path("full_path", &wire.full_path)?,
    }))
}

/// The project as it is after the event.
fn project(wire: &ProjectEventBody) -> Result<ProjectRef, ParseError> {
    Ok(ProjectRef {
        id: fields::project_id("project_id", &wire.project_id)?,
        path: fields::full_path("path_with_namespace", &wire.path_with_namespace)?,
        visibility: fields::visibility_name(&wire.project_visibility),
    })
}

fn catalog_record(change: CatalogChange) -> Vec<NewRecord> {
    vec![NewRecord::Catalog(change)]
}
