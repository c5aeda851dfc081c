//! Projects as the catalog knows them: a stable numeric id, a current path, a visibility.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::path::FullPath;

/// GitLab's numeric project id (always positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProjectId(i64);

impl ProjectId {
    /// Returns `None` unless `raw` is positive.
    pub fn new(raw: i64) -> Option<Self> {
        (raw > 0).then_some(Self(raw))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A project's visibility level. An unknown visibility is treated as [`Visibility::Private`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Private,
    Internal,
    Public,
}

impl Visibility {
    /// GitLab's numeric `visibility_level` (0, 10, 20).
    pub fn from_level(level: i64) -> Option<Self> {
        match level {
            0 => Some(Self::Private),
            10 => Some(Self::Internal),
            20 => Some(Self::Public),
            _ => None,
        }
    }

    /// GitLab's `project_visibility` string in system events.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "private" => Some(Self::Private),
            "internal" => Some(Self::Internal),
            "public" => Some(Self::Public),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Internal => "internal",
            Self::Public => "public",
        }
    }
}

/// What a payload says about a project: its id, its current path and, if the payload
/// carries it, its visibility.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectRef {
    pub id: ProjectId,
    pub path: FullPath,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Visibility>,
}
