//! What a pipeline says it published: an OCI artifact's URL, tag and digest.
//!
//! A pipeline notification (authenticated by a GitLab CI ID token) carries these next to
//! the project, ref and sha its token names. Every field is optional on the wire and
//! validated here, so an agent can trust them when it matches a tag against a source's
//! `spec.ref`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest artifact URL accepted.
pub const MAX_URL_LEN: usize = 1024;
/// Longest pipeline or job id accepted (GitLab's are decimal integers).
pub const MAX_ID_LEN: usize = 32;

/// One pipeline's artifact, as its notification described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// `oci://<registry host>/<repository path>`, as the pipeline sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The OCI tag the pipeline pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The pipeline that sent it (from the token's claims).
    pub pipeline_id: String,
    /// The job that sent it (from the token's claims).
    pub job_id: String,
}

/// Why an artifact description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    #[error(
        "artifact URL must start with oci:// and name a registry host and a repository path, got {0:?}"
    )]
    Url(String),
    #[error("artifact URL is longer than {MAX_URL_LEN} bytes")]
    UrlTooLong,
    #[error("OCI tag must match [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}, got {0:?}")]
    Tag(String),
    #[error("digest must be sha256:<64 lowercase hex digits>, got {0:?}")]
    Digest(String),
    #[error("{field} must be 1 to {MAX_ID_LEN} decimal digits, got {value:?}")]
    Id { field: &'static str, value: String },
}

impl Artifact {
    /// Validates every field; `None` fields stay absent.
    pub fn new(
        url: Option<String>,
        tag: Option<String>,
        digest: Option<String>,
        pipeline_id: String,
        job_id: String,
    ) -> Result<Self, ArtifactError> {
        if let Some(url) = &url {
            validate_url(url)?;
        }
        if let Some(tag) = &tag {
            validate_tag(tag)?;
        }
        if let Some(digest) = &digest {
            validate_digest(digest)?;
        }
        validate_id("pipeline_id", &pipeline_id)?;
        validate_id("job_id", &job_id)?;
        Ok(Self {
            url,
            tag,
            digest,
            pipeline_id,
            job_id,
        })
    }

    /// The registry host (with its port, if any) and repository path of `url`.
    pub fn registry_and_path(&self) -> Option<(&str, &str)> {
        split_oci_url(self.url.as_deref()?)
    }
}

impl fmt::Display for Artifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pipeline {}", self.pipeline_id)?;
        if let Some(url) = &self.url {
            write!(f, " {url}")?;
        }
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// `oci://host[:port]/path` → `(host[:port], path)`; `None` if it is not of that form.
pub fn split_oci_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("oci://")?;
    let (host, path) = rest.split_once('/')?;
    let path = path.trim_end_matches('/');
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    let path_ok = !path.is_empty()
        && path.split('/').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        });
    (host_ok && path_ok).then_some((host, path))
}

fn validate_url(url: &str) -> Result<(), ArtifactError> {
    if url.len() > MAX_URL_LEN {
        return Err(ArtifactError::UrlTooLong);
    }
    split_oci_url(url)
        .map(|_| ())
        .ok_or_else(|| ArtifactError::Url(url.to_owned()))
}

/// The OCI distribution spec's tag grammar.
pub fn is_valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn validate_tag(tag: &str) -> Result<(), ArtifactError> {
    if is_valid_tag(tag) {
        Ok(())
    } else {
        Err(ArtifactError::Tag(tag.chars().take(140).collect()))
    }
}

fn validate_digest(digest: &str) -> Result<(), ArtifactError> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if ok {
        Ok(())
    } else {
        Err(ArtifactError::Digest(digest.chars().take(80).collect()))
    }
}

fn validate_id(field: &'static str, value: &str) -> Result<(), ArtifactError> {
    if !value.is_empty() && value.len() <= MAX_ID_LEN && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(ArtifactError::Id {
            field,
            value: value.chars().take(40).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(
        url: Option<&str>,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> Result<Artifact, ArtifactError> {
        Artifact::new(
            url.map(str::to_owned),
            tag.map(str::to_owned),
            digest.map(str::to_owned),
            "1042".into(),
            "77".into(),
        )
    }

    #[test]
    fn a_full_description_is_accepted_and_split() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let a = artifact(
            Some("oci://registry.gitlab.example.com:5050/group/sub/project/manifests"),
            Some("v1.2.3"),
            Some(&digest),
        )
        .unwrap();
        assert_eq!(
            a.registry_and_path(),
            Some((
                "registry.gitlab.example.com:5050",
                "group/sub/project/manifests"
            ))
        );
    }

    #[test]
    fn malformed_fields_are_refused_by_name() {
        for url in [
            "https://registry/x/y",
            "oci://",
            "oci://host",
            "oci://host/",
            "oci://host/a//b",
            "oci://ho st/a",
        ] {
            assert!(
                matches!(artifact(Some(url), None, None), Err(ArtifactError::Url(_))),
                "{url}"
            );
        }
        let long = format!("oci://h/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(
            artifact(Some(&long), None, None),
            Err(ArtifactError::UrlTooLong)
        );
        for tag in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(
                matches!(artifact(None, Some(tag), None), Err(ArtifactError::Tag(_))),
                "{tag}"
            );
        }
        for digest in [
            "sha256:abc",
            "sha512:00",
            &format!("sha256:{}", "AB".repeat(32)),
        ] {
            assert!(
                matches!(
                    artifact(None, None, Some(digest)),
                    Err(ArtifactError::Digest(_))
                ),
                "{digest}"
            );
        }
        assert!(matches!(
            Artifact::new(None, None, None, "12a".into(), "1".into()),
            Err(ArtifactError::Id {
                field: "pipeline_id",
                ..
            })
        ));
        assert!(matches!(
            Artifact::new(None, None, None, "1".into(), "".into()),
            Err(ArtifactError::Id {
                field: "job_id",
                ..
            })
        ));
    }

    #[test]
    fn tags_follow_the_oci_grammar() {
        for tag in [
            "latest",
            "v1.2.3",
            "_x",
            "1.0.0-rc.1",
            "a_b-c.d",
            &"a".repeat(128),
        ] {
            assert!(is_valid_tag(tag), "{tag}");
        }
    }
}
