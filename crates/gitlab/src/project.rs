//! The project a push-shaped body is about: id, path and visibility.

use fluxgate_core::{ProjectId, ProjectRef};

use super::error::ParseError;
use super::fields;
use super::json::Scalar;
use super::wire::HookProject;

/// Reads `project.{id, path_with_namespace, visibility_level}` and the top-level
/// `project_id`. Either id may be missing (the system-hook examples have no `project.id`),
/// but one must be present, every id present must be valid, and the two must agree.
pub(crate) fn hook_project(
    project: Option<&HookProject>,
    top_level_id: &Scalar,
) -> Result<ProjectRef, ParseError> {
    let absent = Scalar::Absent;
    let (nested_id, path, level) = match project {
        Some(p) => (&p.id, &p.path_with_namespace, &p.visibility_level),
        None => (&absent, &absent, &absent),
    };
    let id = project_id(nested_id, top_level_id)?;
    let path = fields::full_path("project.path_with_namespace", path)?;
    Ok(ProjectRef {
        id,
        path,
        visibility: fields::visibility_level(level),
    })
}

fn project_id(nested: &Scalar, top_level: &Scalar) -> Result<ProjectId, ParseError> {
    let from_project = fields::optional_project_id("project.id", nested)?;
    let from_top = fields::optional_project_id("project_id", top_level)?;
    match (from_project, from_top) {
        (Some(a), Some(b)) if a != b => Err(ParseError::new(format!(
            "fields `project.id` ({a}) and `project_id` ({b}) disagree"
        ))),
        (Some(id), _) | (None, Some(id)) => Ok(id),
        (None, None) => Err(ParseError::new(
            "field `project_id` is missing, and so is `project.id`",
        )),
    }
}
