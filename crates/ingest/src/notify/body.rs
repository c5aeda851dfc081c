//! The optional body of a notification: what the pipeline built.

use serde::Deserialize;
use serde_json::{Map, Value};

/// Fields a body may not have: the project, ref and sha come from the ID token.
pub const PROJECT_FIELDS: &[&str] = &["project", "project_id", "project_path", "ref", "sha"];

/// `{"artifact": "oci://…", "tag": "…", "digest": "sha256:…"}`, every field optional.
/// Validated afterwards by the core `Artifact` rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyBody {
    /// The OCI repository URL, as the pipeline pushed it.
    pub artifact: Option<String>,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// Why a body is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// It names a project, ref or sha (the first such field).
    NamesProject(&'static str),
    /// It is not a JSON object of the fields above.
    Invalid(String),
}

impl NotifyBody {
    /// An empty (or all white space) body is no body.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, BodyError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let object: Map<String, Value> = serde_json::from_slice(bytes)
            .map_err(|err| BodyError::Invalid(format!("the body is not a JSON object: {err}")))?;
        if let Some(field) = PROJECT_FIELDS
            .iter()
            .find(|field| object.contains_key(**field))
        {
            return Err(BodyError::NamesProject(field));
        }
        serde_json::from_value(Value::Object(object)).map_err(|err| {
            BodyError::Invalid(format!(
                "{err} (the body may have \"artifact\", \"tag\" and \"digest\")"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_optional_and_has_three_fields() {
        assert_eq!(NotifyBody::parse(b"").unwrap(), NotifyBody::default());
        assert_eq!(NotifyBody::parse(b" \n").unwrap(), NotifyBody::default());
        assert_eq!(NotifyBody::parse(b"{}").unwrap(), NotifyBody::default());
        let body = NotifyBody::parse(
            br#"{"artifact": "oci://registry.example.com/g/app/manifests", "tag": "v1", "digest": null}"#,
        )
        .unwrap();
        assert_eq!(
            body.artifact.as_deref(),
            Some("oci://registry.example.com/g/app/manifests")
        );
        assert_eq!(body.tag.as_deref(), Some("v1"));
        assert_eq!(body.digest, None);
    }

    #[test]
    fn a_body_naming_a_project_ref_or_sha_is_refused() {
        for field in PROJECT_FIELDS {
            let body = format!(r#"{{"tag": "v1", "{field}": "x"}}"#);
            assert_eq!(
                NotifyBody::parse(body.as_bytes()).unwrap_err(),
                BodyError::NamesProject(field)
            );
        }
    }

    #[test]
    fn other_fields_and_other_shapes_are_invalid() {
        for body in [
            &br#"{"tags": "v1"}"#[..],
            b"[]",
            b"\"v1\"",
            b"{",
            br#"{"tag": 1}"#,
        ] {
            assert!(
                matches!(NotifyBody::parse(body), Err(BodyError::Invalid(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
