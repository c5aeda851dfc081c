//! Flux objects (`GitRepository`, `OCIRepository`, `Kustomization`) checked against small
//! schemas written from the Flux CRDs (`/work/shared/reference/kubernetes.md` §2): unknown
//! fields are refused, required fields must be there, URLs must match the CRDs' patterns
//! (`^(http|https|ssh)://.*$` for git, `^oci://.*$` for OCI), and durations Flux's
//! `^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`. Only the fields these manifests may use are modelled;
//! a field Flux has and this schema lacks fails here, on purpose, until it is added.
//! `metadata` is checked with the built-in `ObjectMeta` round trip.

// The schemas' fields are parsed to be checked; the tests read only a few of them.
#![allow(dead_code)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The API versions each Flux kind is served under, newest first: GitRepository and
/// Kustomization `v1` since Flux 2.0; OCIRepository `v1beta2` since Flux 2.0 and `v1`
/// since Flux 2.6.
const SERVED: [(&str, &[&str]); 3] = [
    ("GitRepository", &["source.toolkit.fluxcd.io/v1"]),
    (
        "OCIRepository",
        &[
            "source.toolkit.fluxcd.io/v1",
            "source.toolkit.fluxcd.io/v1beta2",
        ],
    ),
    ("Kustomization", &["kustomize.toolkit.fluxcd.io/v1"]),
];

/// Whether `kind` (any apiVersion) is one of the Flux kinds checked here.
pub fn is_flux_kind(kind: &str) -> bool {
    SERVED.iter().any(|(served, _)| *served == kind)
}

/// Checks `object`. `None`: not a Flux kind.
pub fn check(object: &Value) -> Option<Result<(), String>> {
    let kind = object["kind"].as_str()?;
    let (_, versions) = SERVED.iter().find(|(served, _)| *served == kind)?;
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    if !versions.contains(&api_version) {
        return Some(Err(format!(
            "apiVersion {api_version:?} does not serve {kind}; use one of {versions:?}"
        )));
    }
    Some(match kind {
        "GitRepository" => parse::<GitRepositorySpec>(object),
        "OCIRepository" => parse::<OciRepositorySpec>(object),
        _ => parse::<KustomizationSpec>(object),
    })
}

/// A Flux object of the kind whose spec is `S`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FluxObject<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: Value,
    pub spec: S,
}

/// Parses `object` strictly as a Flux object with spec `S`, with its metadata.
pub fn parse<S: DeserializeOwned>(object: &Value) -> Result<(), String> {
    let parsed: FluxObject<S> = serde_path_to_error::deserialize(object.clone())
        .map_err(|err| format!("field {}: {}", err.path(), err.inner()))?;
    super::builtin::round_trip::<ObjectMeta>(&parsed.metadata)
        .map_err(|err| format!("metadata{err}"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GitRepositorySpec {
    pub url: GitUrl,
    #[serde(rename = "ref")]
    pub reference: Option<GitReference>,
    pub interval: FluxDuration,
    pub timeout: Option<FluxDuration>,
    pub secret_ref: Option<LocalObjectReference>,
    /// `.gitignore` lines: what the artifact leaves out.
    pub ignore: Option<String>,
    pub suspend: Option<bool>,
    pub recurse_submodules: Option<bool>,
}

/// `spec.ref` of a GitRepository: Flux takes commit over name over semver over tag over
/// branch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitReference {
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub semver: Option<String>,
    pub name: Option<String>,
    pub commit: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OciRepositorySpec {
    pub url: OciUrl,
    #[serde(rename = "ref")]
    pub reference: Option<OciReference>,
    pub interval: FluxDuration,
    pub timeout: Option<FluxDuration>,
    pub provider: Option<OciProvider>,
    pub secret_ref: Option<LocalObjectReference>,
    pub service_account_name: Option<String>,
    pub ignore: Option<String>,
    pub insecure: Option<bool>,
    pub suspend: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OciReference {
    pub digest: Option<String>,
    pub semver: Option<String>,
    pub semver_filter: Option<String>,
    pub tag: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OciProvider {
    Generic,
    Aws,
    Azure,
    Gcp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KustomizationSpec {
    pub source_ref: SourceReference,
    pub path: Option<String>,
    pub interval: FluxDuration,
    pub retry_interval: Option<FluxDuration>,
    pub timeout: Option<FluxDuration>,
    pub prune: bool,
    pub wait: Option<bool>,
    pub force: Option<bool>,
    pub suspend: Option<bool>,
    pub target_namespace: Option<String>,
    pub service_account_name: Option<String>,
    pub depends_on: Option<Vec<DependencyReference>>,
    pub patches: Option<Vec<KustomizePatch>>,
    pub images: Option<Vec<KustomizeImage>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceReference {
    pub kind: SourceKind,
    pub name: String,
    pub namespace: Option<String>,
    pub api_version: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub enum SourceKind {
    GitRepository,
    OCIRepository,
    Bucket,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependencyReference {
    pub name: String,
    pub namespace: Option<String>,
}

/// An inline kustomize patch (strategic merge or JSON 6902) and what it applies to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KustomizePatch {
    pub patch: String,
    pub target: Option<PatchTarget>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchTarget {
    pub group: Option<String>,
    pub version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub label_selector: Option<String>,
    pub annotation_selector: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KustomizeImage {
    pub name: String,
    pub new_name: Option<String>,
    pub new_tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalObjectReference {
    pub name: String,
}

/// A git URL Flux accepts: `^(http|https|ssh)://.*$` (SCP style `git@host:path` is not).
#[derive(Debug, Deserialize)]
#[serde(try_from = "String")]
pub struct GitUrl(pub String);

impl TryFrom<String> for GitUrl {
    type Error = String;
    fn try_from(url: String) -> Result<Self, String> {
        if ["http://", "https://", "ssh://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            Ok(Self(url))
        } else {
            Err(format!("{url:?} does not match ^(http|https|ssh)://.*$"))
        }
    }
}

/// An OCI repository URL: `^oci://.*$`.
#[derive(Debug, Deserialize)]
#[serde(try_from = "String")]
pub struct OciUrl(pub String);

impl TryFrom<String> for OciUrl {
    type Error = String;
    fn try_from(url: String) -> Result<Self, String> {
        if url.starts_with("oci://") {
            Ok(Self(url))
        } else {
            Err(format!("{url:?} does not match ^oci://.*$"))
        }
    }
}

/// A Flux duration: `^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`, such as `1h`, `2m30s`, `1.5s`.
#[derive(Debug, Deserialize)]
#[serde(try_from = "String")]
pub struct FluxDuration(pub String);

impl TryFrom<String> for FluxDuration {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        if is_flux_duration(&text) {
            Ok(Self(text))
        } else {
            Err(format!(
                "{text:?} does not match ^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
            ))
        }
    }
}

/// Whether `text` is one or more `<number><unit>` groups, the number an integer or a
/// decimal, the unit `ms`, `s`, `m` or `h`.
fn is_flux_duration(text: &str) -> bool {
    let mut rest = text.as_bytes();
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        if let Some(after_point) = rest.strip_prefix(b".") {
            let decimals = after_point
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if decimals == 0 {
                return false;
            }
            rest = &after_point[decimals..];
        }
        rest = if let Some(after) = rest.strip_prefix(b"ms") {
            after
        } else if let Some(after) = rest
            .strip_prefix(b"s")
            .or_else(|| rest.strip_prefix(b"m"))
            .or_else(|| rest.strip_prefix(b"h"))
        {
            after
        } else {
            return false;
        };
    }
    true
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn git_repository(spec: Value) -> Value {
        json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": {"name": "g", "namespace": "flux-system"},
            "spec": spec
        })
    }

    #[test]
    fn durations_follow_flux_pattern() {
        for good in ["1h", "10m", "500ms", "1.5s", "1h30m", "2m0s"] {
            assert!(is_flux_duration(good), "{good}");
        }
        for bad in ["", "1", "1d", "h", "1.h", ".5s", "1h ", "10 m", "1m-"] {
            assert!(!is_flux_duration(bad), "{bad}");
        }
    }

    #[test]
    fn a_valid_git_repository_passes() {
        let object = git_repository(json!({
            "url": "https://gitlab.example.com/group/project.git",
            "ref": {"branch": "main"},
            "interval": "1m"
        }));
        assert_eq!(check(&object), Some(Ok(())));
    }

    #[test]
    fn an_unknown_spec_field_is_named() {
        let object = git_repository(json!({
            "url": "https://gitlab.example.com/g/p", "interval": "1m", "intervall": "1m"
        }));
        let error = check(&object).unwrap().unwrap_err();
        assert!(
            error.starts_with("field spec.intervall: unknown field `intervall`"),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_metadata_field_is_named() {
        let mut object = git_repository(json!({"url": "ssh://git@h/g/p", "interval": "1m"}));
        object["metadata"]["lables"] = json!({"a": "b"});
        assert_eq!(
            check(&object),
            Some(Err("metadata.lables: unknown field".to_owned()))
        );
    }

    #[test]
    fn patterns_and_required_fields_are_enforced() {
        let scp_url = git_repository(json!({"url": "git@h:g/p", "interval": "1m"}));
        let error = check(&scp_url).unwrap().unwrap_err();
        assert!(error.contains("^(http|https|ssh)://"), "{error}");
        let bad_interval = git_repository(json!({"url": "https://h/g/p", "interval": "1 day"}));
        let error = check(&bad_interval).unwrap().unwrap_err();
        assert!(error.starts_with("field spec.interval: "), "{error}");
        let no_interval = git_repository(json!({"url": "https://h/g/p"}));
        let error = check(&no_interval).unwrap().unwrap_err();
        assert!(error.contains("missing field `interval`"), "{error}");
        let kustomization_without_prune = json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": "k"},
            "spec": {"interval": "1m", "sourceRef": {"kind": "GitRepository", "name": "g"}}
        });
        let error = check(&kustomization_without_prune).unwrap().unwrap_err();
        assert!(error.contains("missing field `prune`"), "{error}");
        let oci_url = json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1beta2",
            "kind": "OCIRepository",
            "metadata": {"name": "o"},
            "spec": {"url": "https://registry/x", "interval": "1m"}
        });
        let error = check(&oci_url).unwrap().unwrap_err();
        assert!(error.contains("^oci://"), "{error}");
    }

    #[test]
    fn an_api_version_flux_does_not_serve_fails() {
        let mut object = git_repository(json!({"url": "https://h/g/p", "interval": "1m"}));
        object["apiVersion"] = json!("source.toolkit.fluxcd.io/v1beta1");
        let error = check(&object).unwrap().unwrap_err();
        assert!(error.contains("does not serve GitRepository"), "{error}");
    }
}
