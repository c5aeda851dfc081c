//! Which artifact tags move an `OCIRepository`: its `spec.ref`, read with Flux's
//! precedence (kubernetes.md §2; source-controller's `getArtifactRef`).
//!
//! | `spec.ref` | artifact tags that move it |
//! |---|---|
//! | `digest` (whatever else is set) | none: the source is pinned |
//! | `semver` (with optional `semverFilter`) | tags that match the filter (a regular expression, unanchored, as Go's `regexp.MatchString`) and are versions in the range ([`super::semver_range`]) |
//! | `tag` | that exact tag |
//! | absent or empty | `latest`, Flux's default |
//!
//! `semverFilter` applies only with `semver`, as in Flux.
//!
//! An artifact event without a tag is taken as tag `latest`: OCI tools (`docker push`,
//! `oras push`, `flux push artifact` without `:<tag>`) push to `latest` when no tag is
//! given, so such an event moves the sources that follow `latest` (by default or by
//! `tag: latest`) and no semver source.

use fluxgate_core::artifact::is_valid_tag;
use regex::Regex;
use serde::Deserialize;

use super::semver_range::{RangeError, SemverRange};

/// Flux's default tag when an `OCIRepository` has no ref.
pub const DEFAULT_TAG: &str = "latest";
/// Longest `semverFilter` accepted, in bytes; the compiled program is capped too.
pub const MAX_FILTER_LEN: usize = 1024;
const FILTER_SIZE_LIMIT: usize = 1 << 20;

/// `spec.ref` of an `OCIRepository`; unknown fields are ignored, as a newer Flux may add
/// some.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciRepositoryRef {
    pub digest: Option<String>,
    pub semver: Option<String>,
    pub semver_filter: Option<String>,
    pub tag: Option<String>,
}

/// What an `OCIRepository` follows.
#[derive(Debug, Clone)]
pub enum OciFollowed {
    /// Artifacts with a tag this filter accepts can move the source.
    Tags(TagFilter),
    /// Pinned to this digest: no artifact moves it, so it is not triggered.
    Pinned(String),
}

/// Which artifact tags a source follows.
#[derive(Debug, Clone)]
pub enum TagFilter {
    /// One tag, compared exactly (OCI tags are case-sensitive).
    Exact(String),
    /// Tags that match `filter` (if any) and are versions within `range`.
    Semver {
        range: SemverRange,
        /// As written, for logs and equality.
        range_text: String,
        filter: Option<Regex>,
    },
}

impl PartialEq for TagFilter {
    fn eq(&self, other: &Self) -> bool {
        self.describe() == other.describe()
    }
}

impl Eq for TagFilter {}

impl TagFilter {
    /// True if an artifact with `tag` (`None`: untagged, taken as `latest`) moves the
    /// source.
    pub fn accepts(&self, tag: Option<&str>) -> bool {
        let tag = tag.unwrap_or(DEFAULT_TAG);
        match self {
            Self::Exact(wanted) => wanted == tag,
            Self::Semver { range, filter, .. } => {
                filter.as_ref().is_none_or(|f| f.is_match(tag)) && range.matches_tag(tag)
            }
        }
    }

    /// A short text for logs: `tag latest`, `semver >=1.0.0 (filter ^v)`.
    pub fn describe(&self) -> String {
        match self {
            Self::Exact(tag) => format!("tag {tag}"),
            Self::Semver {
                range_text, filter, ..
            } => match filter {
                Some(filter) => format!("semver {range_text} (filter {})", filter.as_str()),
                None => format!("semver {range_text}"),
            },
        }
    }
}

/// Why a `spec.ref` cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OciRefError {
    #[error("spec.ref.semver {value:?} is not a semver range: {source}")]
    Semver {
        value: String,
        #[source]
        source: RangeError,
    },
    #[error("spec.ref.semverFilter {value:?} is not a usable regular expression: {reason}")]
    Filter { value: String, reason: String },
    #[error("spec.ref.tag {0:?} is not a valid OCI tag")]
    Tag(String),
}

/// The trimmed value of a field, if it is set and not blank.
fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl OciRepositoryRef {
    /// What the source follows, with Flux's precedence: digest > semver > tag > `latest`.
    pub fn followed(&self) -> Result<OciFollowed, OciRefError> {
        if let Some(digest) = set(&self.digest) {
            return Ok(OciFollowed::Pinned(digest.to_owned()));
        }
        if let Some(semver) = set(&self.semver) {
            let range = SemverRange::parse(semver).map_err(|source| OciRefError::Semver {
                value: semver.to_owned(),
                source,
            })?;
            let filter = match set(&self.semver_filter) {
                None => None,
                Some(text) => Some(compile_filter(text)?),
            };
            return Ok(OciFollowed::Tags(TagFilter::Semver {
                range,
                range_text: semver.to_owned(),
                filter,
            }));
        }
        let tag = set(&self.tag).unwrap_or(DEFAULT_TAG);
        if !is_valid_tag(tag) {
            return Err(OciRefError::Tag(tag.to_owned()));
        }
        Ok(OciFollowed::Tags(TagFilter::Exact(tag.to_owned())))
    }
}

fn compile_filter(text: &str) -> Result<Regex, OciRefError> {
    let error = |reason: String| OciRefError::Filter {
        value: text.chars().take(256).collect(),
        reason,
    };
    if text.len() > MAX_FILTER_LEN {
        return Err(error(format!("longer than {MAX_FILTER_LEN} bytes")));
    }
    regex::RegexBuilder::new(text)
        .size_limit(FILTER_SIZE_LIMIT)
        .build()
        .map_err(|e| error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn followed(json: serde_json::Value) -> Result<OciFollowed, OciRefError> {
        serde_json::from_value::<OciRepositoryRef>(json)
            .unwrap()
            .followed()
    }

    fn filter(json: serde_json::Value) -> TagFilter {
        match followed(json).unwrap() {
            OciFollowed::Tags(filter) => filter,
            OciFollowed::Pinned(digest) => panic!("pinned to {digest}"),
        }
    }

    #[test]
    fn no_ref_follows_latest_as_flux_does() {
        for json in [
            serde_json::json!({}),
            serde_json::json!({"tag": " "}),
            serde_json::json!({"semverFilter": "^v"}),
        ] {
            assert_eq!(filter(json), TagFilter::Exact("latest".to_owned()));
        }
    }

    #[test]
    fn flux_precedence_is_digest_semver_tag() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let all = serde_json::json!({"digest": digest, "semver": ">=1.0.0", "tag": "stable"});
        assert!(matches!(followed(all.clone()).unwrap(), OciFollowed::Pinned(d) if d == digest));
        let mut no_digest = all;
        no_digest.as_object_mut().unwrap().remove("digest");
        assert_eq!(filter(no_digest.clone()).describe(), "semver >=1.0.0");
        no_digest.as_object_mut().unwrap().remove("semver");
        assert_eq!(filter(no_digest).describe(), "tag stable");
    }

    /// (spec.ref, artifact tag, moves the source)
    #[test]
    fn tags_semver_ranges_and_filters() {
        let cases: &[(serde_json::Value, Option<&str>, bool)] = &[
            (serde_json::json!({}), Some("latest"), true),
            (serde_json::json!({}), None, true),
            (serde_json::json!({}), Some("1.0.0"), false),
            (serde_json::json!({"tag": "latest"}), None, true),
            (serde_json::json!({"tag": "stable"}), Some("stable"), true),
            (serde_json::json!({"tag": "stable"}), Some("Stable"), false),
            (serde_json::json!({"tag": "stable"}), None, false),
            (
                serde_json::json!({"semver": ">=1.0.0 <2.0.0"}),
                Some("1.4.0"),
                true,
            ),
            (
                serde_json::json!({"semver": ">=1.0.0 <2.0.0"}),
                Some("v1.4.0"),
                true,
            ),
            (
                serde_json::json!({"semver": ">=1.0.0 <2.0.0"}),
                Some("2.0.0"),
                false,
            ),
            (serde_json::json!({"semver": ">=1.0.0 <2.0.0"}), None, false),
            (serde_json::json!({"semver": "*"}), Some("latest"), false),
            (
                serde_json::json!({"semver": ">=1.0.0", "semverFilter": "^v"}),
                Some("v1.2.0"),
                true,
            ),
            (
                serde_json::json!({"semver": ">=1.0.0", "semverFilter": "^v"}),
                Some("1.2.0"),
                false,
            ),
            (
                serde_json::json!({"semver": ">=1.0.0-0", "semverFilter": "-rc"}),
                Some("1.2.0-rc.1"),
                true,
            ),
            (
                serde_json::json!({"semver": ">=1.0.0-0", "semverFilter": "-rc"}),
                Some("1.2.0-beta.1"),
                false,
            ),
            // The filter is unanchored, as Go's MatchString.
            (
                serde_json::json!({"semver": "1.x", "semverFilter": "2"}),
                Some("1.2.0"),
                true,
            ),
        ];
        for (reference, tag, expected) in cases {
            assert_eq!(
                filter(reference.clone()).accepts(*tag),
                *expected,
                "{reference} vs {tag:?}"
            );
        }
    }

    #[test]
    fn unreadable_refs_name_their_field() {
        assert!(matches!(
            followed(serde_json::json!({"semver": ">=banana"})),
            Err(OciRefError::Semver { .. })
        ));
        assert!(matches!(
            followed(serde_json::json!({"semver": "*", "semverFilter": "(unclosed"})),
            Err(OciRefError::Filter { .. })
        ));
        assert!(matches!(
            followed(
                serde_json::json!({"semver": "*", "semverFilter": "a".repeat(MAX_FILTER_LEN + 1)})
            ),
            Err(OciRefError::Filter { .. })
        ));
        assert_eq!(
            followed(serde_json::json!({"tag": "-bad"})).unwrap_err(),
            OciRefError::Tag("-bad".to_owned())
        );
        assert!(!is_valid_tag(&"a".repeat(129)));
        assert!(is_valid_tag(&"a".repeat(128)));
    }
}
