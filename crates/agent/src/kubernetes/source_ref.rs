//! Which pushes move a `GitRepository`: its `spec.ref`, read with Flux's precedence.
//!
//! Flux picks one field of `spec.ref`: `commit` > `name` > `semver` > `tag` > `branch`
//! (kubernetes.md §2). A source without `spec.ref`, or with an empty one, follows branch
//! `master`, Flux's default (not the project's default branch).
//!
//! | `spec.ref` | pushes that move it |
//! |---|---|
//! | `commit` (alone or with `branch`) | none: the source is pinned |
//! | `name: refs/…` | that exact ref |
//! | `semver` | any tag (a new tag may satisfy the range; Flux decides) |
//! | `tag` | `refs/tags/<tag>` |
//! | `branch` | `refs/heads/<branch>` |
//! | absent | `refs/heads/master` |

use fluxgate_core::{GitError, GitRef, RefPattern};
use serde::Deserialize;

/// Flux's default branch when a `GitRepository` has no ref.
pub const FLUX_DEFAULT_BRANCH: &str = "master";

/// `spec.ref` as Flux defines it; unknown fields are ignored, as a newer Flux may add some.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct GitRepositoryRef {
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub semver: Option<String>,
    pub name: Option<String>,
    pub commit: Option<String>,
}

/// What a source follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// Pushes to refs matching this pattern can move the source.
    Refs(RefPattern),
    /// The source is pinned to this commit: no push moves it, so it is not triggered.
    Pinned(String),
}

/// The trimmed value of a field, if it is set and not blank.
fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Why a `spec.ref` cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("spec.ref.{field} {value:?} is not a valid git ref: {source}")]
    Invalid {
        field: &'static str,
        value: String,
        #[source]
        source: GitError,
    },
}

impl GitRepositoryRef {
    /// What the source follows, with Flux's precedence.
    pub fn followed(&self) -> Result<Followed, RefError> {
        if let Some(commit) = set(&self.commit) {
            return Ok(Followed::Pinned(commit.to_owned()));
        }
        let (field, value, pattern) = if let Some(name) = set(&self.name) {
            ("name", name, name.to_owned())
        } else if let Some(semver) = set(&self.semver) {
            ("semver", semver, "refs/tags/*".to_owned())
        } else if let Some(tag) = set(&self.tag) {
            ("tag", tag, format!("refs/tags/{tag}"))
        } else if let Some(branch) = set(&self.branch) {
            ("branch", branch, format!("refs/heads/{branch}"))
        } else {
            (
                "branch",
                FLUX_DEFAULT_BRANCH,
                format!("refs/heads/{FLUX_DEFAULT_BRANCH}"),
            )
        };
        let invalid = |source| RefError::Invalid {
            field,
            value: value.to_owned(),
            source,
        };
        // A name, tag or branch is one exact ref, valid for git: no wildcards sneak in.
        if field != "semver" {
            GitRef::parse(&pattern).map_err(invalid)?;
        }
        let parsed = RefPattern::parse(&pattern).map_err(invalid)?;
        Ok(Followed::Refs(parsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn followed(json: serde_json::Value) -> Result<Followed, RefError> {
        serde_json::from_value::<GitRepositoryRef>(json)
            .unwrap()
            .followed()
    }

    fn pattern(json: serde_json::Value) -> String {
        match followed(json).unwrap() {
            Followed::Refs(pattern) => pattern.as_str().to_owned(),
            Followed::Pinned(commit) => panic!("pinned to {commit}"),
        }
    }

    #[test]
    fn no_ref_follows_master_as_flux_does() {
        assert_eq!(pattern(serde_json::json!({})), "refs/heads/master");
        assert_eq!(
            pattern(serde_json::json!({"branch": " "})),
            "refs/heads/master"
        );
    }

    #[test]
    fn flux_precedence_is_commit_name_semver_tag_branch() {
        let all = serde_json::json!({
            "branch": "main", "tag": "v1", "semver": ">=1.0.0",
            "name": "refs/merge-requests/1/head", "commit": "abc123"
        });
        assert_eq!(
            followed(all.clone()).unwrap(),
            Followed::Pinned("abc123".to_owned())
        );
        let mut no_commit = all;
        no_commit.as_object_mut().unwrap().remove("commit");
        assert_eq!(pattern(no_commit.clone()), "refs/merge-requests/1/head");
        no_commit.as_object_mut().unwrap().remove("name");
        assert_eq!(pattern(no_commit.clone()), "refs/tags/*");
        no_commit.as_object_mut().unwrap().remove("semver");
        assert_eq!(pattern(no_commit.clone()), "refs/tags/v1");
        no_commit.as_object_mut().unwrap().remove("tag");
        assert_eq!(pattern(no_commit), "refs/heads/main");
    }

    #[test]
    fn a_commit_within_a_branch_is_still_pinned() {
        let pinned = followed(serde_json::json!({"branch": "main", "commit": "0123abcd"}));
        assert_eq!(pinned.unwrap(), Followed::Pinned("0123abcd".to_owned()));
    }

    #[test]
    fn refs_are_exact_even_when_they_look_like_globs() {
        let exact = pattern(serde_json::json!({"branch": "feature/x"}));
        assert_eq!(exact, "refs/heads/feature/x");
        assert!(followed(serde_json::json!({"branch": "feat*"})).is_err());
        assert!(followed(serde_json::json!({"name": "main"})).is_err());
        assert!(followed(serde_json::json!({"tag": "bad..tag"})).is_err());
    }
}
