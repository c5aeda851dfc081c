//! GitLab full paths (`group/subgroup/project`) for projects and groups.
//!
//! GitLab paths are ASCII (letters, digits, `_`, `-`, `.`, `+`), and GitLab compares them
//! with ASCII case folding. People write the same project as `Group/App`, `group/app.git`,
//! `https://gitlab.example.com/group/app.git` or `git@gitlab.example.com:group/app.git`.
//! [`FullPath::parse`] accepts all of these and keeps the path as written for display;
//! [`FullPath::key`] is the ASCII-lower-cased form every comparison uses. Because both
//! forms are ASCII, they have the same length, so offsets found in one are valid in the
//! other.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest full path accepted (GitLab allows 255 characters per segment and 20 levels).
pub const MAX_PATH_LEN: usize = 1024;

/// Why a string is not a full path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path is longer than {MAX_PATH_LEN} characters")]
    TooLong,
    #[error("path {0:?} has an empty segment")]
    EmptySegment(String),
    #[error("path {path:?} has a forbidden character {ch:?}")]
    BadChar { path: String, ch: char },
    #[error("path {0:?} has a '.' or '..' segment")]
    DotSegment(String),
}

/// A GitLab project or group full path, as written, compared case-insensitively.
#[derive(Clone)]
pub struct FullPath {
    display: String,
    key: String,
}

impl FullPath {
    /// Parses a path, a clone URL (`https://`, `ssh://`, `git@host:`) or a web URL into its
    /// full path: scheme, user, host and port are dropped, so is a trailing `.git` and any
    /// leading or trailing `/`.
    pub fn parse(input: &str) -> Result<Self, PathError> {
        let trimmed = input.trim();
        let path = strip_url(trimmed);
        let path = path.trim_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path);
        let path = path.trim_end_matches('/');
        Self::validate(path)?;
        Ok(Self {
            display: path.to_owned(),
            key: path.to_ascii_lowercase(),
        })
    }

    fn validate(path: &str) -> Result<(), PathError> {
        if path.is_empty() {
            return Err(PathError::Empty);
        }
        if path.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong);
        }
        for segment in path.split('/') {
            if segment.is_empty() {
                return Err(PathError::EmptySegment(path.to_owned()));
            }
            if segment == "." || segment == ".." {
                return Err(PathError::DotSegment(path.to_owned()));
            }
        }
        if let Some(ch) = path
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.' | '+')))
        {
            return Err(PathError::BadChar {
                path: path.to_owned(),
                ch,
            });
        }
        Ok(())
    }

    /// The path as it was written (after URL and `.git` stripping).
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The ASCII-lower-cased form used for every comparison and index.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// True if `self` is `group` itself or lies below it at any depth.
    pub fn is_within(&self, group: &FullPath) -> bool {
        self.key == group.key
            || (self.key.len() > group.key.len()
                && self.key.starts_with(&group.key)
                && self.key.as_bytes()[group.key.len()] == b'/')
    }

    /// Replaces the leading `old` namespace with `new`, for group renames and transfers.
    /// Returns `None` if `self` is not within `old`.
    pub fn rebase(&self, old: &FullPath, new: &FullPath) -> Option<FullPath> {
        if !self.is_within(old) {
            return None;
        }
        let rest = self.display.get(old.key.len()..)?;
        FullPath::parse(&format!("{}{rest}", new.display)).ok()
    }

    /// Removes a GitLab relative URL root (such as `gitlab` for an instance served under
    /// `/gitlab`) when the path starts with it.
    pub fn strip_root(&self, root: Option<&FullPath>) -> FullPath {
        match root {
            Some(root) if self.key != root.key && self.is_within(root) => {
                match self.display.get(root.key.len() + 1..) {
                    Some(rest) => FullPath::parse(rest).unwrap_or_else(|_| self.clone()),
                    None => self.clone(),
                }
            }
            _ => self.clone(),
        }
    }
}

/// Drops `scheme://user@host:port/` or scp-style `user@host:` from a clone or web URL.
fn strip_url(input: &str) -> &str {
    if let Some((_, rest)) = input.split_once("://") {
        return rest.split_once('/').map_or("", |(_, path)| path);
    }
    // scp-like syntax: `git@host:group/project.git` (a ':' before any '/').
    if let Some(colon) = input.find(':')
        && !input[..colon].contains('/')
    {
        return &input[colon + 1..];
    }
    input
}

impl PartialEq for FullPath {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for FullPath {}

impl std::hash::Hash for FullPath {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl PartialOrd for FullPath {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FullPath {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

impl fmt::Display for FullPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl fmt::Debug for FullPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.display)
    }
}

impl std::str::FromStr for FullPath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for FullPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.display)
    }
}

impl<'de> Deserialize<'de> for FullPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        FullPath::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> FullPath {
        FullPath::parse(s).unwrap()
    }

    #[test]
    fn parses_plain_paths_and_urls_to_the_same_key() {
        let forms = [
            "Group/App",
            "group/app.git",
            "/group/app/",
            "https://gitlab.example.com/group/app",
            "https://gitlab.example.com:8443/Group/App.git",
            "ssh://git@gitlab.example.com:2222/group/app.git",
            "git@gitlab.example.com:group/app.git",
        ];
        for form in forms {
            assert_eq!(p(form).key(), "group/app", "{form}");
        }
        assert_eq!(p("Group/App").as_str(), "Group/App");
    }

    #[test]
    fn rejects_malformed_paths() {
        assert_eq!(FullPath::parse(""), Err(PathError::Empty));
        assert_eq!(FullPath::parse("  / "), Err(PathError::Empty));
        assert!(matches!(
            FullPath::parse("a//b"),
            Err(PathError::EmptySegment(_))
        ));
        assert!(matches!(
            FullPath::parse("a/../b"),
            Err(PathError::DotSegment(_))
        ));
        assert!(matches!(
            FullPath::parse("a/b c"),
            Err(PathError::BadChar { ch: ' ', .. })
        ));
        assert!(matches!(
            FullPath::parse(&"a".repeat(2000)),
            Err(PathError::TooLong)
        ));
    }

    #[test]
    fn non_ascii_paths_are_refused_as_gitlab_refuses_them() {
        // `Ⱥ` lower-cases to `ⱥ`, which is one byte longer: byte offsets taken from the key
        // would not be valid in the display form. GitLab paths are ASCII, so refuse it.
        for path in ["ȺȺ/ÿÿ", "grp/Ünïcode", "ⱥⱥ"] {
            assert!(
                matches!(FullPath::parse(path), Err(PathError::BadChar { .. })),
                "{path}"
            );
        }
    }

    #[test]
    fn case_folding_is_ascii_and_rebase_keeps_the_rest_as_written() {
        assert_eq!(p("GRP/Sub/App").key(), "grp/sub/app");
        assert_eq!(
            p("GRP/Sub/App").rebase(&p("grp/sub"), &p("New")),
            Some(p("New/App"))
        );
        assert_eq!(
            p("GRP/Sub/App")
                .rebase(&p("grp/sub"), &p("New"))
                .unwrap()
                .as_str(),
            "New/App"
        );
    }

    #[test]
    fn is_within_matches_whole_segments_only() {
        assert!(p("grp/sub/app").is_within(&p("grp")));
        assert!(p("grp/sub/app").is_within(&p("GRP/sub")));
        assert!(p("grp").is_within(&p("grp")));
        assert!(!p("grpx/app").is_within(&p("grp")));
        assert!(!p("grp").is_within(&p("grp/sub")));
    }

    #[test]
    fn rebase_moves_a_path_to_a_new_namespace() {
        assert_eq!(
            p("old/sub/app").rebase(&p("old"), &p("new")),
            Some(p("new/sub/app"))
        );
        assert_eq!(p("other/app").rebase(&p("old"), &p("new")), None);
    }

    #[test]
    fn strip_root_removes_a_relative_url_root() {
        let root = p("gitlab");
        assert_eq!(p("gitlab/grp/app").strip_root(Some(&root)), p("grp/app"));
        assert_eq!(p("grp/app").strip_root(Some(&root)), p("grp/app"));
        assert_eq!(p("gitlab").strip_root(Some(&root)), p("gitlab"));
    }
}
