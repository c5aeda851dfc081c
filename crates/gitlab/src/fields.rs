//! Field validators: a [`Scalar`] from the wire to a domain value, or a [`ParseError`]
//! naming the field's JSON path and carrying the domain parser's reason.

use fluxgate_core::{FullPath, GitRef, ProjectId, Sha, Visibility};

use super::error::ParseError;
use super::json::Scalar;

/// A required string.
pub(crate) fn string<'a>(path: &str, value: &'a Scalar) -> Result<&'a str, ParseError> {
    match value {
        Scalar::Str(s) => Ok(s),
        Scalar::Absent => Err(ParseError::missing(path)),
        other => Err(ParseError::wrong_type(path, "a string", other)),
    }
}

/// A required project or group full path.
pub(crate) fn full_path(path: &str, value: &Scalar) -> Result<FullPath, ParseError> {
    FullPath::parse(string(path, value)?)
        .map_err(|e| ParseError::invalid(path, "a valid GitLab path", e))
}

/// A required full git ref.
pub(crate) fn git_ref(path: &str, value: &Scalar) -> Result<GitRef, ParseError> {
    GitRef::parse(string(path, value)?).map_err(|e| ParseError::invalid(path, "a valid git ref", e))
}

/// A required git object id; forty zeros (a created or deleted ref) is valid.
pub(crate) fn sha(path: &str, value: &Scalar) -> Result<Sha, ParseError> {
    Sha::parse(string(path, value)?).map_err(|e| ParseError::invalid(path, "a git object id", e))
}

/// A required project id.
pub(crate) fn project_id(path: &str, value: &Scalar) -> Result<ProjectId, ParseError> {
    match value {
        Scalar::Absent => Err(ParseError::missing(path)),
        other => optional_project_id(path, other)?
            .ok_or_else(|| ParseError::wrong_type(path, "a positive integer", other)),
    }
}

/// A project id that may be absent or `null`; present, it must be valid.
pub(crate) fn optional_project_id(
    path: &str,
    value: &Scalar,
) -> Result<Option<ProjectId>, ParseError> {
    match value {
        Scalar::Absent | Scalar::Null => Ok(None),
        Scalar::Int(n) => ProjectId::new(*n)
            .map(Some)
            .ok_or_else(|| ParseError::wrong_type(path, "a positive integer", value)),
        other => Err(ParseError::wrong_type(path, "a positive integer", other)),
    }
}

/// A numeric `visibility_level` (0, 10, 20). Absent, or anything else, is unknown.
pub(crate) fn visibility_level(value: &Scalar) -> Option<Visibility> {
    match value {
        Scalar::Int(level) => Visibility::from_level(*level),
        _ => None,
    }
}

/// A `project_visibility` name (`private`, `internal`, `public`). Absent, or anything
/// else, is unknown.
pub(crate) fn visibility_name(value: &Scalar) -> Option<Visibility> {
    match value {
        Scalar::Str(name) => Visibility::from_name(name),
        _ => None,
    }
}
