//! Reading how far Flux got from its objects' status (`shared/reference/kubernetes.md` §2):
//! a source's fetched revision, and which revision a Kustomization or HelmRelease applied
//! or failed on.
//!
//! - Sources: `status.artifact.revision` is `<branch>@sha1:<sha>` for a `GitRepository`
//!   (older Flux: `<branch>/<sha>`) and `<tag>@sha256:<digest>` for an `OCIRepository`.
//! - Kustomization (`spec.sourceRef`): applied when `Ready=True` and
//!   `status.lastAppliedRevision` is the source's revision; failed when `Ready=False` and
//!   `status.lastAttemptedRevision` is.
//! - HelmRelease (`spec.chartRef`, or `spec.chart.spec.sourceRef`): the same with
//!   `status.lastAttemptedRevision` (the chart version; Flux appends `+<sha[..12]>` for
//!   charts built from a git revision) or `status.lastAttemptedRevisionDigest` standing for
//!   the applied revision.

use kube::api::DynamicObject;
use serde_json::Value;

/// A Flux object, as `<Kind>/<namespace>/<name>` in reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn of(kind: &str, object: &DynamicObject) -> Self {
        Self::new(
            kind,
            object.metadata.namespace.as_deref().unwrap_or_default(),
            object.metadata.name.as_deref().unwrap_or_default(),
        )
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// What an event asks Flux to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// A git commit (40 hex digits, lower case).
    Commit(String),
    /// An OCI manifest digest (`sha256:<hex>`).
    Digest(String),
    /// Anything newer than what the source had when the Receiver was called (a project
    /// push, or an artifact without a digest).
    Newer,
}

impl Wanted {
    /// True if `revision` is the wanted one.
    pub fn is_in(&self, revision: &str) -> bool {
        let revision = revision.to_ascii_lowercase();
        match self {
            Self::Commit(sha) => {
                revision.ends_with(&format!("@sha1:{sha}"))
                    || revision.ends_with(&format!("/{sha}"))
            }
            Self::Digest(digest) => revision.ends_with(&format!("@{digest}")),
            Self::Newer => false,
        }
    }
}

/// `status.artifact.revision`, if the source has fetched anything.
pub fn artifact_revision(object: &DynamicObject) -> Option<&str> {
    object
        .data
        .pointer("/status/artifact/revision")
        .and_then(Value::as_str)
        .filter(|revision| !revision.is_empty())
}

/// The `Ready` condition: its status (`True`, `False`, `Unknown`) and message.
pub fn ready(object: &DynamicObject) -> Option<(&str, &str)> {
    object
        .data
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|condition| condition.get("type").and_then(Value::as_str) == Some("Ready"))
        .map(|condition| {
            (
                condition
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("Unknown"),
                condition
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            )
        })
}

/// The source a Kustomization (`Kustomization`) or HelmRelease (`HelmRelease`) uses; a
/// reference without a namespace is in the workload's own.
pub fn workload_source(kind: &str, object: &DynamicObject) -> Option<ObjectRef> {
    let reference = match kind {
        "Kustomization" => object.data.pointer("/spec/sourceRef"),
        "HelmRelease" => object
            .data
            .pointer("/spec/chartRef")
            .or_else(|| object.data.pointer("/spec/chart/spec/sourceRef")),
        _ => None,
    }?;
    let own = object.metadata.namespace.as_deref().unwrap_or_default();
    Some(ObjectRef::new(
        reference.get("kind")?.as_str()?,
        reference
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or(own),
        reference.get("name")?.as_str()?,
    ))
}

/// How a workload stands with `revision` (the source's, as fetched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadState {
    Applied,
    Failed(String),
    /// Not yet reconciled with that revision.
    Pending,
}

/// How the workload `object` of `kind` stands with the source revision `revision`.
pub fn workload_state(kind: &str, object: &DynamicObject, revision: &str) -> WorkloadState {
    let status = |field: &str| {
        object
            .data
            .pointer(&format!("/status/{field}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let (applied, attempted) = match kind {
        "Kustomization" => (
            status("lastAppliedRevision") == revision,
            status("lastAttemptedRevision") == revision,
        ),
        _ => {
            let attempted = [
                status("lastAttemptedRevision"),
                status("lastAttemptedRevisionDigest"),
            ]
            .into_iter()
            .any(|candidate| same_chart_revision(candidate, revision));
            (attempted, attempted)
        }
    };
    match ready(object) {
        Some(("True", _)) if applied => WorkloadState::Applied,
        Some(("False", message)) if attempted => WorkloadState::Failed(message.to_owned()),
        _ => WorkloadState::Pending,
    }
}

/// A HelmRelease's attempted chart revision stands for the source `revision`: equal, the
/// same digest, or a chart version built from that commit (`…+<sha[..12]>`).
fn same_chart_revision(attempted: &str, revision: &str) -> bool {
    if attempted.is_empty() {
        return false;
    }
    if attempted == revision {
        return true;
    }
    let Some((_, id)) = revision.rsplit_once('@') else {
        return false;
    };
    if attempted == id || attempted.ends_with(&format!("@{id}")) {
        return true;
    }
    id.strip_prefix("sha1:")
        .and_then(|sha| sha.get(..12))
        .is_some_and(|short| attempted.ends_with(&format!("+{short}")))
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;
    use serde_json::json;

    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn object(data: Value) -> DynamicObject {
        DynamicObject {
            types: None,
            metadata: ObjectMeta {
                name: Some("apps".to_owned()),
                namespace: Some("flux-system".to_owned()),
                ..ObjectMeta::default()
            },
            data,
        }
    }

    fn ready_condition(status: &str, message: &str) -> Value {
        json!([{"type": "Ready", "status": status, "message": message}])
    }

    #[test]
    fn a_commit_is_found_in_both_revision_formats_and_a_digest_in_oci_ones() {
        let commit = Wanted::Commit(SHA.to_owned());
        assert!(commit.is_in(&format!("main@sha1:{SHA}")));
        assert!(commit.is_in(&format!("main/{SHA}")));
        assert!(!commit.is_in("main@sha1:ffffffffffffffffffffffffffffffffffffffff"));
        let digest = Wanted::Digest(format!("sha256:{}", "a".repeat(64)));
        assert!(digest.is_in(&format!("1.2.0@sha256:{}", "a".repeat(64))));
        assert!(!digest.is_in(&format!("1.2.0@sha256:{}", "b".repeat(64))));
        assert!(!Wanted::Newer.is_in("anything"));
    }

    #[test]
    fn a_kustomization_is_applied_failed_or_pending_for_a_revision() {
        let revision = format!("main@sha1:{SHA}");
        let applied = object(json!({
            "spec": {"sourceRef": {"kind": "GitRepository", "name": "repo"}},
            "status": {"lastAppliedRevision": revision, "lastAttemptedRevision": revision,
                       "conditions": ready_condition("True", "Applied revision")}
        }));
        assert_eq!(
            workload_source("Kustomization", &applied),
            Some(ObjectRef::new("GitRepository", "flux-system", "repo"))
        );
        assert_eq!(
            workload_state("Kustomization", &applied, &revision),
            WorkloadState::Applied
        );
        let failed = object(json!({
            "status": {"lastAppliedRevision": "main@sha1:old", "lastAttemptedRevision": revision,
                       "conditions": ready_condition("False", "kustomize build failed")}
        }));
        assert_eq!(
            workload_state("Kustomization", &failed, &revision),
            WorkloadState::Failed("kustomize build failed".to_owned())
        );
        let older = object(json!({
            "status": {"lastAppliedRevision": "main@sha1:old", "lastAttemptedRevision": "main@sha1:old",
                       "conditions": ready_condition("True", "Applied revision")}
        }));
        assert_eq!(
            workload_state("Kustomization", &older, &revision),
            WorkloadState::Pending
        );
    }

    #[test]
    fn a_helm_release_follows_its_chart_ref_and_chart_revision() {
        let revision = format!("main@sha1:{SHA}");
        let release = object(json!({
            "spec": {"chart": {"spec": {"sourceRef": {"kind": "GitRepository", "name": "charts", "namespace": "other"}}}},
            "status": {"lastAttemptedRevision": format!("1.0.0+{}", &SHA[..12]),
                       "conditions": ready_condition("True", "Helm upgrade succeeded")}
        }));
        assert_eq!(
            workload_source("HelmRelease", &release),
            Some(ObjectRef::new("GitRepository", "other", "charts"))
        );
        assert_eq!(
            workload_state("HelmRelease", &release, &revision),
            WorkloadState::Applied
        );
        let digest = format!("sha256:{}", "c".repeat(64));
        let oci = object(json!({
            "spec": {"chartRef": {"kind": "OCIRepository", "name": "chart"}},
            "status": {"lastAttemptedRevisionDigest": digest,
                       "conditions": ready_condition("False", "install retries exhausted")}
        }));
        assert_eq!(
            workload_state("HelmRelease", &oci, &format!("1.0.0@{digest}")),
            WorkloadState::Failed("install retries exhausted".to_owned())
        );
    }
}
