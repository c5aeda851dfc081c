//! A stand-in for Flux's notification-controller v1.9.3, on top of the API stand-in.
//!
//! # What it stands for
//!
//! - **The Receiver reconciler** (`shared/reference/flux-and-hooks.md` A.1, A.2): for each
//!   `notification.toolkit.fluxcd.io/v1` Receiver whose `spec.secretRef` Secret (same
//!   namespace) has a `token` key, it writes through the status subresource
//!   `status.webhookPath` = `/hook/` + hex(sha256(token + name + namespace)),
//!   `status.observedGeneration` and `Ready=True` (reason `Succeeded`, message
//!   `Receiver initialized for path: …`). Without the Secret or the key: `Ready=False`,
//!   reason `TokenNotFound`, and no new path. `generic-oidc` uses the empty token. It
//!   reacts to every change of Receivers and Secrets at once (Flux re-reads the Secret
//!   only every `spec.interval`, or on change with the `reconcile.fluxcd.io/watch` label),
//!   and skips suspended Receivers, as Flux does.
//! - **The webhook server** (A.3–A.6): the existing [`FluxReceiverStandIn`], fed with every
//!   Receiver that has a `status.webhookPath`; after validation passes it merge-patches
//!   `metadata.annotations["reconcile.fluxcd.io/requestedAt"]` onto each
//!   `spec.resources[]` object (namespace defaulting to the Receiver's, `apiVersion` to
//!   Flux's defaults, `name: "*"` with `matchLabels` listing), and answers `500` if any of
//!   them is missing or its type is not served. Its address is registered as the Service
//!   `flux-system/webhook-receiver`, so the API stand-in's service proxy reaches it.
//!
//! # What it leaves out
//!
//! - The annotation value is an RFC 3339 timestamp with nanoseconds; Flux writes Go's
//!   `time.Time.String()`. Flux treats the value as opaque, and so should its readers.
//! - Receiver types other than `generic`, `generic-hmac` and `gitlab` become Ready but are
//!   not served by the webhook server (their path answers `404`).
//! - A Receiver that loses its Secret after being Ready keeps its old `webhookPath` in
//!   status (as in Flux) but its path answers `404` here, not `503`.
//! - CEL filters, `--no-cross-namespace-refs`, events, metrics, the `Reconciling` and
//!   `Stalled` conditions, and `status.lastHandledReconcileAt`.
//!
//! # Test hooks
//!
//! [`NotificationControllerStandIn::start_with_ready_delay`] holds each new Receiver
//! generation `Ready=Unknown` for a while, to test a client that waits for Ready.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::cluster::Cluster;
use super::selector::LabelSelector;
use super::stand_in::KubeApiStandIn;
use crate::flux_receiver::{
    FluxReceiverStandIn, Hit, Receiver, ReceiverType, ReconcileRequester, webhook_path,
};

/// The annotation Flux's Receivers set on their targets (A.6).
pub const REQUESTED_AT_ANNOTATION: &str = "reconcile.fluxcd.io/requestedAt";

/// The field manager of the stand-in's writes.
const MANAGER: &str = "notification-controller";

/// A running notification-controller stand-in. It stops when dropped.
pub struct NotificationControllerStandIn {
    flux: Arc<FluxReceiverStandIn>,
    reconciler: JoinHandle<()>,
}

impl NotificationControllerStandIn {
    /// Starts reconciling the stand-in's Receivers, and serving their webhooks.
    pub async fn start(api: &KubeApiStandIn) -> Self {
        Self::start_with_ready_delay(api, Duration::ZERO).await
    }

    /// As [`Self::start`], but each new Receiver generation stays `Ready=Unknown`
    /// (reason `Progressing`, no path) for `ready_delay` first.
    pub async fn start_with_ready_delay(api: &KubeApiStandIn, ready_delay: Duration) -> Self {
        let flux = Arc::new(FluxReceiverStandIn::start([]).await);
        let cluster = api.cluster();
        flux.set_reconcile_requester(Arc::new(Annotator {
            cluster: cluster.clone(),
        }));
        cluster.register_service("flux-system", "webhook-receiver", flux.address());
        let reconciler = tokio::spawn(reconcile_forever(cluster, Arc::clone(&flux), ready_delay));
        Self { flux, reconciler }
    }

    /// `http://127.0.0.1:<port>`, the `webhook-receiver` Service's URL.
    pub fn webhook_base_url(&self) -> String {
        self.flux.base_url()
    }

    /// The webhook server, with every request it answered.
    pub fn flux(&self) -> &FluxReceiverStandIn {
        &self.flux
    }

    /// Every request that matched the Receiver named `name`.
    pub fn hits(&self, name: &str) -> Vec<Hit> {
        self.flux.hits(name)
    }

    /// Waits for `count` requests to the Receiver named `name`.
    pub async fn wait_for_hits(&self, name: &str, count: usize, timeout: Duration) -> Vec<Hit> {
        self.flux.wait_for_hits(name, count, timeout).await
    }
}

impl Drop for NotificationControllerStandIn {
    fn drop(&mut self) {
        self.reconciler.abort();
    }
}

/// Reconciles after every change, and when a held Receiver's delay ends.
async fn reconcile_forever(
    cluster: Cluster,
    flux: Arc<FluxReceiverStandIn>,
    ready_delay: Duration,
) {
    let mut changes = cluster.changes();
    let mut first_seen: HashMap<(String, String, i64), Instant> = HashMap::new();
    loop {
        changes.mark_unchanged();
        let wake = reconcile_all(&cluster, &flux, ready_delay, &mut first_seen);
        let far = Instant::now() + Duration::from_secs(3600);
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

/// What one Receiver's reconcile decided.
struct Outcome {
    status: Value,
    /// The token the webhook path was computed from, when Ready.
    token: Option<String>,
}

/// One pass over every Receiver; returns when a held Receiver must be looked at again.
fn reconcile_all(
    cluster: &Cluster,
    flux: &FluxReceiverStandIn,
    ready_delay: Duration,
    first_seen: &mut HashMap<(String, String, i64), Instant>,
) -> Option<Instant> {
    let mut wake: Option<Instant> = None;
    let mut served = Vec::new();
    for receiver in cluster.list("receivers", None) {
        let name = receiver["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let namespace = receiver["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let generation = receiver["metadata"]["generation"].as_i64().unwrap_or(1);
        let spec = &receiver["spec"];
        let suspended = spec["suspend"].as_bool().unwrap_or(false);
        let seen = *first_seen
            .entry((namespace.clone(), name.clone(), generation))
            .or_insert_with(Instant::now);
        let token = if suspended {
            None
        } else if seen.elapsed() < ready_delay {
            let due = seen + ready_delay;
            wake = Some(wake.map_or(due, |w| w.min(due)));
            set_status_if_changed(
                cluster,
                &namespace,
                &name,
                &receiver,
                held_status(generation),
            );
            None
        } else {
            let outcome = reconcile_one(cluster, &receiver, &name, &namespace, generation);
            set_status_if_changed(cluster, &namespace, &name, &receiver, outcome.status);
            outcome.token
        };
        let current = cluster
            .get("receivers", &namespace, &name)
            .unwrap_or_else(|| receiver.clone());
        let ready = condition_status(&current["status"]) == Some("True");
        let has_path = current["status"]["webhookPath"].is_string();
        let receiver_type = match spec["type"].as_str() {
            Some("generic") => Some(ReceiverType::Generic),
            Some("generic-hmac") => Some(ReceiverType::GenericHmac),
            Some("gitlab") => Some(ReceiverType::Gitlab),
            _ => None,
        };
        let token = token.or_else(|| {
            suspended
                .then(|| current_token(cluster, spec, &namespace))
                .flatten()
        });
        if let (Some(receiver_type), Some(token), true) = (receiver_type, token, has_path) {
            let events: Vec<&str> = spec["events"]
                .as_array()
                .map(|e| e.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut served_receiver = Receiver::new(&name, receiver_type, &token)
                .in_namespace(&namespace)
                .with_events(&events);
            served_receiver.ready = ready;
            served_receiver.suspended = suspended;
            flux.upsert_receiver(served_receiver);
            served.push((namespace, name));
        }
    }
    for old in flux.receivers() {
        if !served
            .iter()
            .any(|(ns, n)| *ns == old.namespace && *n == old.name)
        {
            flux.remove_receiver(&old.name, &old.namespace);
        }
    }
    first_seen.retain(|(ns, n, _), _| {
        served.iter().any(|(sns, sn)| sns == ns && sn == n)
            || cluster.get("receivers", ns, n).is_some()
    });
    wake
}

/// The token of the Receiver's Secret: `""` for `generic-oidc`, `None` if missing.
fn current_token(cluster: &Cluster, spec: &Value, namespace: &str) -> Option<String> {
    if spec["type"].as_str() == Some("generic-oidc") {
        return Some(String::new());
    }
    let secret_name = spec["secretRef"]["name"].as_str()?;
    let secret = cluster.get("secrets", namespace, secret_name)?;
    let encoded = secret["data"]["token"].as_str()?;
    let raw = BASE64.decode(encoded).ok()?;
    Some(String::from_utf8_lossy(&raw).into_owned())
}

fn reconcile_one(
    cluster: &Cluster,
    receiver: &Value,
    name: &str,
    namespace: &str,
    generation: i64,
) -> Outcome {
    let spec = &receiver["spec"];
    let old_status = &receiver["status"];
    match current_token(cluster, spec, namespace) {
        Some(token) => {
            let path = webhook_path(&token, name, namespace);
            let message = format!("Receiver initialized for path: {path}");
            Outcome {
                status: json!({
                    "observedGeneration": generation,
                    "webhookPath": path,
                    "conditions": [ready_condition(old_status, "True", "Succeeded", &message, generation)],
                }),
                token: Some(token),
            }
        }
        None => {
            let secret = spec["secretRef"]["name"].as_str().unwrap_or_default();
            let message = format!(
                "unable to read token from secret '{namespace}/{secret}': secret not found or has no 'token' key"
            );
            let mut status = json!({
                "observedGeneration": generation,
                "conditions": [ready_condition(old_status, "False", "TokenNotFound", &message, generation)],
            });
            if let Some(path) = old_status.get("webhookPath") {
                status["webhookPath"] = path.clone();
            }
            Outcome {
                status,
                token: None,
            }
        }
    }
}

fn held_status(generation: i64) -> Value {
    json!({
        "conditions": [{
            "type": "Ready",
            "status": "Unknown",
            "reason": "Progressing",
            "message": "Reconciliation in progress",
            "observedGeneration": generation,
            "lastTransitionTime": now(),
        }],
    })
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// A `Ready` condition, keeping the old `lastTransitionTime` when the status is unchanged.
fn ready_condition(
    old_status: &Value,
    status: &str,
    reason: &str,
    message: &str,
    generation: i64,
) -> Value {
    let old = ready_of(old_status);
    let transition = match old {
        Some(old) if old["status"].as_str() == Some(status) => old["lastTransitionTime"].clone(),
        _ => json!(now()),
    };
    json!({
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": transition,
    })
}

fn ready_of(status: &Value) -> Option<&Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"].as_str() == Some("Ready"))
}

fn condition_status(status: &Value) -> Option<&str> {
    ready_of(status)?["status"].as_str()
}

/// Writes `status` unless it equals the current one apart from transition times.
fn set_status_if_changed(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    receiver: &Value,
    status: Value,
) {
    let strip = |value: &Value| {
        let mut value = value.clone();
        if let Some(conditions) = value["conditions"].as_array_mut() {
            for condition in conditions {
                if let Some(c) = condition.as_object_mut() {
                    c.remove("lastTransitionTime");
                }
            }
        }
        value
    };
    if strip(&receiver["status"]) != strip(&status) {
        // The Receiver may be gone by now; the next pass sees that.
        let _ = cluster.set_status_as(MANAGER, "receivers", namespace, name, status);
    }
}

/// Flux's default `apiVersion` per kind when a resource reference has none.
fn default_api_version(kind: &str) -> Option<&'static str> {
    match kind {
        "Bucket" | "HelmChart" | "HelmRepository" | "GitRepository" | "OCIRepository" => {
            Some("source.toolkit.fluxcd.io/v1")
        }
        "ImageRepository" => Some("image.toolkit.fluxcd.io/v1"),
        "ArtifactGenerator" => Some("source.extensions.fluxcd.io/v1beta1"),
        _ => None,
    }
}

/// A.6: annotates every resource of a Receiver that accepted a request.
struct Annotator {
    cluster: Cluster,
}

impl Annotator {
    fn annotate(&self, reference: &Value, receiver_namespace: &str) -> Result<(), String> {
        let kind = reference["kind"].as_str().ok_or("resource without kind")?;
        let api_version = match reference["apiVersion"].as_str() {
            Some(api_version) => api_version.to_owned(),
            None => default_api_version(kind)
                .ok_or_else(|| format!("no default apiVersion for kind {kind}"))?
                .to_owned(),
        };
        let resource = self
            .cluster
            .resource_for(&api_version, kind)
            .map_err(|e| e.to_string())?;
        let namespace = reference["namespace"]
            .as_str()
            .unwrap_or(receiver_namespace);
        let name = reference["name"].as_str().ok_or("resource without name")?;
        let names: Vec<String> = if name == "*" {
            let selector = reference["matchLabels"]
                .as_object()
                .map(|labels| {
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let selector = LabelSelector::parse(&selector).map_err(|e| e.to_string())?;
            self.cluster
                .list_labelled(&resource, Some(namespace), &selector)
                .iter()
                .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
                .collect()
        } else {
            vec![name.to_owned()]
        };
        let stamp = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
        let patch = json!({"metadata": {"annotations": {REQUESTED_AT_ANNOTATION: stamp}}});
        for name in names {
            self.cluster
                .merge_patch_as(MANAGER, resource.plural, namespace, &name, &patch)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

impl ReconcileRequester for Annotator {
    fn request_reconcile(&self, namespace: &str, name: &str) -> Result<(), String> {
        let receiver = self
            .cluster
            .get("receivers", namespace, name)
            .ok_or_else(|| format!("receiver {namespace}/{name} not found"))?;
        let mut failures = Vec::new();
        for reference in receiver["spec"]["resources"]
            .as_array()
            .into_iter()
            .flatten()
        {
            // Flux carries on with the other resources and fails the request at the end.
            if let Err(error) = self.annotate(reference, namespace) {
                failures.push(error);
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }
}
