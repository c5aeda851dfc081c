//! [`ParseError`]: why a hook body was rejected, worded for the HTTP 400 body.
//!
//! Every message names the JSON path of the offending field (`project.id`,
//! `changes[2].after`) so that whoever reads GitLab's delivery log knows what to fix.

use std::fmt::Display;

use super::json::Scalar;

/// A hook body that fluxgate cannot accept. The message says exactly what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The body is not JSON at all (serde's message carries the line and column).
    pub(crate) fn not_json(error: &serde_json::Error) -> Self {
        Self::new(format!("body is not valid JSON: {error}"))
    }

    /// The body is JSON, but not an object.
    pub(crate) fn not_an_object(error: &serde_json::Error) -> Self {
        Self::new(format!("body is not a JSON object: {error}"))
    }

    /// A required field is absent (or `null`).
    pub(crate) fn missing(path: &str) -> Self {
        Self::new(format!("field `{path}` is missing"))
    }

    /// A field holds a JSON value of the wrong type.
    pub(crate) fn wrong_type(path: &str, expected: &str, found: &Scalar) -> Self {
        Self::new(format!(
            "field `{path}` must be {expected}, found {}",
            found.describe()
        ))
    }

    /// A field has the right JSON type but a value the domain rejects.
    pub(crate) fn invalid(path: &str, what: &str, reason: impl Display) -> Self {
        Self::new(format!("field `{path}` is not {what}: {reason}"))
    }

    /// A nested object or array has the wrong shape; `path` comes from
    /// `serde_path_to_error`, `error` carries serde's line and column.
    pub(crate) fn shape(path: impl Display, error: impl Display) -> Self {
        Self::new(format!("field `{path}` is invalid: {error}"))
    }
}
