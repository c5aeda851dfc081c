//! A stand-in for Flux's source-controller and kustomize-controller, as far as a client
//! that watches a sync reads them (`shared/reference/kubernetes.md` §2).
//!
//! # What it stands for
//!
//! - **source-controller**: a `GitRepository` or `OCIRepository` whose
//!   `reconcile.fluxcd.io/requestedAt` annotation differs from its
//!   `status.lastHandledReconcileAt` is fetched: its `status.artifact.revision` becomes
//!   the remote's current revision (set by the test with [`FluxSyncStandIn::set_remote`],
//!   `<branch>@sha1:<sha>` or `<tag>@sha256:<digest>`), with `Ready=True` (reason
//!   `Succeeded`, message `stored artifact for revision '…'`) and
//!   `status.lastHandledReconcileAt`. A source whose remote is unknown gets `Ready=False`,
//!   reason `GitOperationFailed`, and keeps its old artifact.
//! - **kustomize-controller**: a `Kustomization` whose `spec.sourceRef` (namespace
//!   defaulting to its own) names a source with an artifact it has not attempted yet
//!   attempts it: `status.lastAttemptedRevision` becomes that revision and, unless the test
//!   made it fail ([`FluxSyncStandIn::fail_kustomization`]), `status.lastAppliedRevision`
//!   too, with `Ready=True` (reason `ReconciliationSucceeded`, message
//!   `Applied revision: …`); a failing one gets `Ready=False`, reason
//!   `ReconciliationFailed` and the test's message, and keeps its last applied revision.
//!
//! # What it leaves out
//!
//! Fetching on `spec.interval` (only requested reconciles fetch), `spec.suspend`,
//! dependencies (`dependsOn`), health checks and `wait`, the `Reconciling`/`Stalled`
//! conditions, artifacts' URLs, digests and sizes, `HelmRelease` (helm-controller), and
//! any delay between the request and the fetch beyond [`FluxSyncStandIn::start`]'s
//! `apply_delay` before each Kustomization applies.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::cluster::Cluster;
use super::notification_controller::REQUESTED_AT_ANNOTATION;
use super::stand_in::KubeApiStandIn;

const SOURCE_MANAGER: &str = "source-controller";
const KUSTOMIZE_MANAGER: &str = "kustomize-controller";

/// What the test controls: remotes' revisions and failing Kustomizations.
#[derive(Default)]
struct Script {
    /// `(plural, namespace, name)` → the revision a fetch finds.
    remotes: HashMap<(String, String, String), String>,
    /// `(namespace, name)` → the failure message.
    failing: HashMap<(String, String), String>,
}

/// The running stand-in; it stops when dropped.
pub struct FluxSyncStandIn {
    script: Arc<Mutex<Script>>,
    cluster: Cluster,
    task: JoinHandle<()>,
}

impl FluxSyncStandIn {
    /// Starts reconciling sources and Kustomizations; each Kustomization applies
    /// `apply_delay` after its source's revision changed.
    pub fn start(api: &KubeApiStandIn, apply_delay: Duration) -> Self {
        let script = Arc::new(Mutex::new(Script::default()));
        let cluster = api.cluster();
        let task = tokio::spawn(reconcile_forever(
            cluster.clone(),
            Arc::clone(&script),
            apply_delay,
        ));
        Self {
            script,
            cluster,
            task,
        }
    }

    /// The revision the next fetch of the source finds (`plural`: `gitrepositories` or
    /// `ocirepositories`).
    pub fn set_remote(&self, plural: &str, namespace: &str, name: &str, revision: &str) {
        self.script.lock().remotes.insert(
            (plural.to_owned(), namespace.to_owned(), name.to_owned()),
            revision.to_owned(),
        );
        self.cluster.touch();
    }

    /// Makes the Kustomization fail every revision it attempts from now on, with
    /// `message` as Flux's.
    pub fn fail_kustomization(&self, namespace: &str, name: &str, message: &str) {
        self.script
            .lock()
            .failing
            .insert((namespace.to_owned(), name.to_owned()), message.to_owned());
        self.cluster.touch();
    }
}

impl Drop for FluxSyncStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn reconcile_forever(cluster: Cluster, script: Arc<Mutex<Script>>, apply_delay: Duration) {
    let mut changes = cluster.changes();
    // When each Kustomization first saw a revision it had not attempted.
    let mut seen: HashMap<(String, String, String), tokio::time::Instant> = HashMap::new();
    loop {
        changes.mark_unchanged();
        for plural in ["gitrepositories", "ocirepositories"] {
            fetch_requested(&cluster, &script, plural);
        }
        let wake = apply_kustomizations(&cluster, &script, apply_delay, &mut seen);
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep_until(wake.unwrap_or(far)) => {}
        }
    }
}

fn meta(object: &Value, field: &str) -> String {
    object["metadata"][field]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn fetch_requested(cluster: &Cluster, script: &Mutex<Script>, plural: &str) {
    for source in cluster.list(plural, None) {
        let Some(requested) = source["metadata"]["annotations"][REQUESTED_AT_ANNOTATION].as_str()
        else {
            continue;
        };
        if source["status"]["lastHandledReconcileAt"].as_str() == Some(requested) {
            continue;
        }
        let (namespace, name) = (meta(&source, "namespace"), meta(&source, "name"));
        let remote = script
            .lock()
            .remotes
            .get(&(plural.to_owned(), namespace.clone(), name.clone()))
            .cloned();
        let mut status = source["status"].clone();
        if !status.is_object() {
            status = json!({});
        }
        status["lastHandledReconcileAt"] = json!(requested);
        match remote {
            Some(revision) => {
                status["artifact"] = json!({"revision": revision});
                status["conditions"] = json!([{
                    "type": "Ready", "status": "True", "reason": "Succeeded",
                    "message": format!("stored artifact for revision '{revision}'"),
                }]);
            }
            None => {
                status["conditions"] = json!([{
                    "type": "Ready", "status": "False", "reason": "GitOperationFailed",
                    "message": "failed to checkout and determine revision: remote unknown to the stand-in",
                }]);
            }
        }
        let _ = cluster.set_status_as(SOURCE_MANAGER, plural, &namespace, &name, status);
    }
}

/// Applies (or fails) every Kustomization whose source moved; returns when one whose
/// delay is running must be looked at again.
fn apply_kustomizations(
    cluster: &Cluster,
    script: &Mutex<Script>,
    apply_delay: Duration,
    seen: &mut HashMap<(String, String, String), tokio::time::Instant>,
) -> Option<tokio::time::Instant> {
    let mut wake = None;
    for kustomization in cluster.list("kustomizations", None) {
        let (namespace, name) = (
            meta(&kustomization, "namespace"),
            meta(&kustomization, "name"),
        );
        let reference = &kustomization["spec"]["sourceRef"];
        let plural = match reference["kind"].as_str() {
            Some("GitRepository") => "gitrepositories",
            Some("OCIRepository") => "ocirepositories",
            _ => continue,
        };
        let source_namespace = reference["namespace"].as_str().unwrap_or(&namespace);
        let Some(source) = cluster.get(
            plural,
            source_namespace,
            reference["name"].as_str().unwrap_or_default(),
        ) else {
            continue;
        };
        let Some(revision) = source["status"]["artifact"]["revision"].as_str() else {
            continue;
        };
        if kustomization["status"]["lastAttemptedRevision"].as_str() == Some(revision) {
            continue;
        }
        let key = (namespace.clone(), name.clone(), revision.to_owned());
        let first = *seen.entry(key).or_insert_with(tokio::time::Instant::now);
        let due = first + apply_delay;
        if tokio::time::Instant::now() < due {
            wake = Some(wake.map_or(due, |w: tokio::time::Instant| w.min(due)));
            continue;
        }
        let failing = script
            .lock()
            .failing
            .get(&(namespace.clone(), name.clone()))
            .cloned();
        let mut status = kustomization["status"].clone();
        if !status.is_object() {
            status = json!({});
        }
        status["lastAttemptedRevision"] = json!(revision);
        match failing {
            Some(message) => {
                status["conditions"] = json!([{
                    "type": "Ready", "status": "False", "reason": "ReconciliationFailed",
                    "message": message,
                }]);
            }
            None => {
                status["lastAppliedRevision"] = json!(revision);
                status["conditions"] = json!([{
                    "type": "Ready", "status": "True", "reason": "ReconciliationSucceeded",
                    "message": format!("Applied revision: {revision}"),
                }]);
            }
        }
        let _ = cluster.set_status_as(
            KUSTOMIZE_MANAGER,
            "kustomizations",
            &namespace,
            &name,
            status,
        );
    }
    wake
}
