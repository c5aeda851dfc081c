//! An ID token's claims, checked and typed.
//!
//! GitLab writes every id as a string (`"project_id": "28"`) and the ref as a short name
//! with its type (`"ref": "main", "ref_type": "branch"`); these become core types here, so
//! nothing past the verifier handles raw claims.

use std::time::{Duration, UNIX_EPOCH};

use fluxgate_core::{FullPath, GitRef, ProjectId, ProjectRef, Sha};
use serde_json::{Map, Value};

use crate::config::VerifierConfig;
use crate::error::{VerifyError, shorten};

/// Longest `jti`, `pipeline_id`, `job_id` or `user_login` accepted.
const MAX_TEXT_CLAIM: usize = 255;
/// How much of a token-supplied value an error message repeats.
const MAX_QUOTED: usize = 80;

/// Whether the pipeline ran for a branch or a tag (`ref_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefType {
    Branch,
    Tag,
}

/// What a verified ID token says about the pipeline job that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineClaims {
    pub project_id: ProjectId,
    pub project_path: FullPath,
    /// The full ref: `refs/heads/<ref>` for a branch, `refs/tags/<ref>` for a tag.
    pub git_ref: GitRef,
    pub ref_type: RefType,
    /// The commit the pipeline runs for (GitLab ≥ 16.0 sends it).
    pub sha: Option<Sha>,
    pub pipeline_id: String,
    pub job_id: String,
    /// The token's unique id: a replayed token has the same one.
    pub jti: String,
    /// Who started the pipeline, when the token says.
    pub user_login: Option<String>,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
}

impl PipelineClaims {
    /// The project as a log event names it (visibility unknown: the catalog keeps it).
    pub fn project(&self) -> ProjectRef {
        ProjectRef {
            id: self.project_id,
            path: self.project_path.clone(),
            visibility: None,
        }
    }
}

/// Checks the claims of a token whose signature is verified, at `now` (seconds since the
/// epoch): issuer, audience, expiry and start, then the pipeline's claims.
pub(crate) fn check(
    claims: &Map<String, Value>,
    config: &VerifierConfig,
    now: u64,
) -> Result<PipelineClaims, VerifyError> {
    let iss = text(claims, "iss")?;
    if !config.issuer.matches(iss) {
        return Err(VerifyError::WrongIssuer {
            found: shorten(iss, MAX_QUOTED),
            expected: config.issuer.to_string(),
        });
    }
    check_audience(claims, &config.audience)?;
    let leeway = config.leeway.as_secs();
    let exp = seconds(claims, "exp")?;
    if now > exp.saturating_add(leeway) {
        return Err(VerifyError::Expired {
            at: rfc3339(exp),
            leeway_secs: leeway,
        });
    }
    let nbf = seconds(claims, "nbf")?;
    if now.saturating_add(leeway) < nbf {
        return Err(VerifyError::NotYetValid {
            at: rfc3339(nbf),
            leeway_secs: leeway,
        });
    }
    let jti = bounded_text(claims, "jti")?;

    let project_id = text(claims, "project_id")?;
    let project_id = project_id
        .parse::<i64>()
        .ok()
        .filter(|_| project_id.bytes().all(|b| b.is_ascii_digit()))
        .and_then(ProjectId::new)
        .ok_or_else(|| invalid("project_id", "not a positive integer", project_id))?;
    let path = text(claims, "project_path")?;
    let project_path = FullPath::parse(path)
        .ok()
        .filter(|parsed| parsed.as_str() == path)
        .ok_or_else(|| invalid("project_path", "not a GitLab full path", path))?;
    let ref_type = match text(claims, "ref_type")? {
        "branch" => RefType::Branch,
        "tag" => RefType::Tag,
        other => return Err(invalid("ref_type", "not \"branch\" or \"tag\"", other)),
    };
    let short_ref = text(claims, "ref")?;
    let prefix = match ref_type {
        RefType::Branch => "refs/heads/",
        RefType::Tag => "refs/tags/",
    };
    let git_ref = GitRef::parse(&format!("{prefix}{short_ref}")).map_err(|err| {
        VerifyError::InvalidClaim {
            claim: "ref",
            reason: err.to_string(),
        }
    })?;
    let sha = match claims.get("sha") {
        None | Some(Value::Null) => None,
        Some(Value::String(sha)) => {
            Some(Sha::parse(sha).map_err(|err| VerifyError::InvalidClaim {
                claim: "sha",
                reason: err.to_string(),
            })?)
        }
        Some(_) => return Err(not_a_string("sha")),
    };
    let pipeline_id = digits(claims, "pipeline_id")?;
    let job_id = digits(claims, "job_id")?;
    let user_login = match claims.get("user_login") {
        None | Some(Value::Null) => None,
        Some(_) => Some(bounded_text(claims, "user_login")?),
    };
    Ok(PipelineClaims {
        project_id,
        project_path,
        git_ref,
        ref_type,
        sha,
        pipeline_id,
        job_id,
        jti,
        user_login,
        expires_at: exp,
    })
}

/// `aud` is a string or a list of strings (RFC 7519 §4.1.3); one must be `expected`.
fn check_audience(claims: &Map<String, Value>, expected: &str) -> Result<(), VerifyError> {
    let found: Vec<&str> = match claims.get("aud") {
        None | Some(Value::Null) => return Err(VerifyError::MissingClaim("aud")),
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        Some(_) => return Err(not_a_string("aud")),
    };
    if found.contains(&expected) {
        return Ok(());
    }
    let found = found
        .iter()
        .take(4)
        .map(|aud| format!("{:?}", shorten(aud, MAX_QUOTED)))
        .collect::<Vec<_>>()
        .join(", ");
    Err(VerifyError::WrongAudience {
        found: format!("[{found}]"),
        expected: expected.to_owned(),
    })
}

fn text<'a>(claims: &'a Map<String, Value>, claim: &'static str) -> Result<&'a str, VerifyError> {
    match claims.get(claim) {
        None | Some(Value::Null) => Err(VerifyError::MissingClaim(claim)),
        Some(Value::String(value)) if value.is_empty() => Err(VerifyError::MissingClaim(claim)),
        Some(Value::String(value)) => Ok(value),
        Some(_) => Err(not_a_string(claim)),
    }
}

/// A short text claim of visible characters.
fn bounded_text(claims: &Map<String, Value>, claim: &'static str) -> Result<String, VerifyError> {
    let value = text(claims, claim)?;
    if value.len() > MAX_TEXT_CLAIM || value.chars().any(char::is_control) {
        return Err(invalid(
            claim,
            "longer than 255 bytes or has control characters",
            value,
        ));
    }
    Ok(value.to_owned())
}

/// An id GitLab writes as a string of digits.
fn digits(claims: &Map<String, Value>, claim: &'static str) -> Result<String, VerifyError> {
    let value = text(claims, claim)?;
    if value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(claim, "not a string of digits", value));
    }
    Ok(value.to_owned())
}

/// A NumericDate (seconds since the epoch, an integer as GitLab writes it).
fn seconds(claims: &Map<String, Value>, claim: &'static str) -> Result<u64, VerifyError> {
    match claims.get(claim) {
        None | Some(Value::Null) => Err(VerifyError::MissingClaim(claim)),
        Some(Value::Number(number)) => number.as_u64().ok_or_else(|| VerifyError::InvalidClaim {
            claim,
            reason: format!("{number} is not a whole number of seconds since the epoch"),
        }),
        Some(_) => Err(VerifyError::InvalidClaim {
            claim,
            reason: "not a number".to_owned(),
        }),
    }
}

fn invalid(claim: &'static str, what: &str, value: &str) -> VerifyError {
    VerifyError::InvalidClaim {
        claim,
        reason: format!("{:?} is {what}", shorten(value, MAX_QUOTED)),
    }
}

fn not_a_string(claim: &'static str) -> VerifyError {
    VerifyError::InvalidClaim {
        claim,
        reason: "not a string".to_owned(),
    }
}

fn rfc3339(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::Issuer;

    const NOW: u64 = 1_800_000_000;

    fn config() -> VerifierConfig {
        VerifierConfig::new(
            Issuer::parse("https://gitlab.example.com").unwrap(),
            "https://fluxgate.example.com",
        )
        .unwrap()
    }

    /// Claims as GitLab writes them (kubernetes.md §6).
    fn gitlab_claims() -> Map<String, Value> {
        let value = json!({
            "namespace_id": "1", "namespace_path": "group",
            "project_id": "28", "project_path": "group/sub/app",
            "user_id": "1", "user_login": "root", "user_email": "root@example.com",
            "pipeline_id": "1212", "pipeline_source": "push", "job_id": "7010",
            "ref": "main", "ref_type": "branch", "ref_protected": "true",
            "sha": "714a629c0b401fdce83e847fc9589983fc6f46bc",
            "runner_id": "1", "runner_environment": "self-hosted",
            "jti": "5d8ae0ba-2e0b-4fbd-9a64-09b4f5f9e5b9",
            "iat": NOW, "nbf": NOW - 5, "exp": NOW + 3600,
            "sub": "project_path:group/sub/app:ref_type:branch:ref:main",
            "iss": "https://gitlab.example.com", "aud": "https://fluxgate.example.com",
        });
        let Value::Object(map) = value else {
            unreachable!()
        };
        map
    }

    fn with(key: &str, value: Value) -> Map<String, Value> {
        let mut claims = gitlab_claims();
        claims.insert(key.to_owned(), value);
        claims
    }

    fn without(key: &str) -> Map<String, Value> {
        let mut claims = gitlab_claims();
        claims.remove(key);
        claims
    }

    #[test]
    fn gitlab_claims_become_core_types() {
        let claims = check(&gitlab_claims(), &config(), NOW).unwrap();
        assert_eq!(claims.project_id.get(), 28);
        assert_eq!(claims.project_path.as_str(), "group/sub/app");
        assert_eq!(claims.git_ref.as_str(), "refs/heads/main");
        assert_eq!(claims.ref_type, RefType::Branch);
        assert_eq!(
            claims.sha.unwrap().as_str(),
            "714a629c0b401fdce83e847fc9589983fc6f46bc"
        );
        assert_eq!(claims.pipeline_id, "1212");
        assert_eq!(claims.job_id, "7010");
        assert_eq!(claims.user_login.as_deref(), Some("root"));

        let tag = with("ref_type", json!("tag"));
        let tag = check(
            &{
                let mut t = tag;
                t.insert("ref".into(), json!("v1.2.0"));
                t
            },
            &config(),
            NOW,
        )
        .unwrap();
        assert_eq!(tag.git_ref.as_str(), "refs/tags/v1.2.0");
        assert!(
            check(&without("sha"), &config(), NOW)
                .unwrap()
                .sha
                .is_none()
        );
    }

    #[test]
    fn times_are_checked_with_the_leeway() {
        let exp = NOW + 3600;
        assert!(check(&gitlab_claims(), &config(), exp + 30).is_ok());
        assert_eq!(
            check(&gitlab_claims(), &config(), exp + 31).unwrap_err(),
            VerifyError::Expired {
                at: rfc3339(exp),
                leeway_secs: 30
            }
        );
        let nbf = NOW - 5;
        assert!(check(&gitlab_claims(), &config(), nbf - 30).is_ok());
        let err = check(&gitlab_claims(), &config(), nbf - 31).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the token is not valid before {} (leeway 30s)",
                rfc3339(nbf)
            )
        );
    }

    #[test]
    fn issuer_and_audience_must_match() {
        let err = check(
            &with("iss", json!("https://evil.example.com")),
            &config(),
            NOW,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "issuer \"https://evil.example.com\" is not \"https://gitlab.example.com\""
        );
        let err = check(&with("aud", json!("other")), &config(), NOW).unwrap_err();
        assert_eq!(
            err.to_string(),
            "audience [\"other\"] is not \"https://fluxgate.example.com\""
        );
        let listed = with("aud", json!(["other", "https://fluxgate.example.com"]));
        assert!(check(&listed, &config(), NOW).is_ok());
    }

    #[test]
    fn every_claim_used_is_required_and_typed() {
        for claim in [
            "iss",
            "aud",
            "exp",
            "nbf",
            "jti",
            "project_id",
            "project_path",
            "ref",
            "ref_type",
            "pipeline_id",
            "job_id",
        ] {
            assert_eq!(
                check(&without(claim), &config(), NOW).unwrap_err(),
                VerifyError::MissingClaim(claim),
                "{claim}"
            );
        }
        for (claim, value) in [
            ("project_id", json!(28)),
            ("project_id", json!("-3")),
            ("project_id", json!("0")),
            (
                "project_path",
                json!("https://gitlab.example.com/group/app"),
            ),
            ("project_path", json!("group/../app")),
            ("ref", json!("bad..ref")),
            ("ref_type", json!("commit")),
            ("sha", json!("xyz")),
            ("pipeline_id", json!("12a")),
            ("exp", json!("soon")),
            ("jti", json!("a\nb")),
        ] {
            let err = check(&with(claim, value.clone()), &config(), NOW).unwrap_err();
            assert!(
                matches!(err, VerifyError::InvalidClaim { claim: c, .. } if c == claim),
                "{claim} = {value}: {err}"
            );
        }
    }
}
