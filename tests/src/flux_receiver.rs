//! A stand-in for Flux's webhook receiver server, for tests that cannot run Kubernetes.
//!
//! # What it stands for
//!
//! The HTTP server that Flux's notification-controller (v1.9.3) runs on `:9292`
//! (`--receiverAddr`), reached in a cluster through the `webhook-receiver` Service on port 80.
//! It has one route, `/hook/`. Each `Receiver` object it knows is looked up by its
//! `status.webhookPath`. This stand-in holds a fixed set of [`Receiver`]s instead of
//! watching Kubernetes objects, and a token instead of a Secret reference.
//!
//! It follows `shared/reference/flux-and-hooks.md`:
//!
//! - **A.2 Webhook path.** `"/hook/" + lowercase_hex(sha256(token ‖ name ‖ namespace))`:
//!   raw bytes, no separators, no trimming. The path must match the request URI exactly,
//!   so a trailing slash, a query string or upper-case hex gets `404`.
//! - **A.3 Limits.** The body is capped at 3 MiB.
//! - **A.4 Pipeline, in Flux's order.** Read the body (over 3 MiB → `413`, read error →
//!   `400`); look up the Receiver (none → `404`); suspended or not Ready → `503`; type
//!   validation fails → `400`; otherwise `200`. Every response has an empty body. Any
//!   HTTP method is accepted, as Flux has no method check.
//! - **A.5 Validation.** `generic` checks nothing. `generic-hmac` needs
//!   `X-Signature: <sha1|sha256|sha512>=<hex>`, the HMAC of the raw body keyed by the
//!   token; a missing header, an unknown prefix or a mismatch is `400`. `gitlab` needs
//!   `X-Gitlab-Token` equal to the token. If `events` is non-empty, `X-Gitlab-Event` must
//!   also equal one of them, ignoring ASCII case.
//!
//! # Two ways to feed it
//!
//! - **Static**: [`FluxReceiverStandIn::start`] with a fixed set of [`Receiver`]s, each
//!   with its token instead of a Secret reference. A `200` means Flux would have annotated
//!   the Receiver's resources (A.6); nothing is annotated.
//! - **Dynamic**: the notification-controller stand-in
//!   (`kube_api::notification_controller`) adds, replaces and removes Receivers
//!   ([`FluxReceiverStandIn::upsert_receiver`], [`FluxReceiverStandIn::remove_receiver`])
//!   as it reconciles `Receiver` objects, and installs a [`ReconcileRequester`] that does
//!   A.6 step 6: after validation passes, it annotates every resource; a failure answers
//!   `500`.
//!
//! # What it leaves out
//!
//! - CEL `resourceFilter`s, and with them Flux's `500` for a filter that does not build
//!   (A.4 step 5).
//! - Receiver types other than the three above.
//! - Re-reading the Secret on each request.
//!
//! # Test hooks that Flux does not have
//!
//! - Every request is recorded as a [`Hit`].
//! - [`FluxReceiverStandIn::fail_next`] makes the next requests to a Receiver get a chosen
//!   status. These statuses are returned after the lookup and before the other checks,
//!   like a Receiver that is reconciling (`404`/`503`) or an API server that is failing
//!   (`500`).
//! - [`FluxReceiverStandIn::set_response_delay`] makes a Receiver answer slowly.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use hmac::{Hmac, KeyInit, Mac};
use parking_lot::{Mutex, MutexGuard};
use sha2::{Digest, Sha256, Sha512};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Flux's body cap (`maxRequestSizeBytes`, A.3).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The prefix of every webhook path (`ReceiverWebhookPath`, A.2).
pub const WEBHOOK_PATH_PREFIX: &str = "/hook/";

/// The Receiver types this stand-in validates (A.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverType {
    /// No validation: the path is the only secret.
    Generic,
    /// `X-Signature: <algo>=<hex HMAC(token, body)>`.
    GenericHmac,
    /// `X-Gitlab-Token` and, optionally, `X-Gitlab-Event`.
    Gitlab,
}

/// One Flux `Receiver` as the webhook server sees it.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub name: String,
    pub namespace: String,
    pub receiver_type: ReceiverType,
    /// The raw `token` of the Receiver's Secret.
    pub token: String,
    /// `spec.events`. Only the `gitlab` type checks it.
    pub events: Vec<String>,
    /// The `Ready` condition.
    pub ready: bool,
    /// `spec.suspend`.
    pub suspended: bool,
}

impl Receiver {
    /// A Ready, unsuspended Receiver in `flux-system` that accepts every event.
    pub fn new(name: &str, receiver_type: ReceiverType, token: &str) -> Self {
        Self {
            name: name.to_owned(),
            namespace: "flux-system".to_owned(),
            receiver_type,
            token: token.to_owned(),
            events: Vec::new(),
            ready: true,
            suspended: false,
        }
    }

    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_owned();
        self
    }

    pub fn with_events(mut self, events: &[&str]) -> Self {
        self.events = events.iter().map(|e| (*e).to_owned()).collect();
        self
    }

    pub fn not_ready(mut self) -> Self {
        self.ready = false;
        self
    }

    pub fn suspended(mut self) -> Self {
        self.suspended = true;
        self
    }

    /// The `status.webhookPath` Flux computes for this Receiver.
    pub fn webhook_path(&self) -> String {
        webhook_path(&self.token, &self.name, &self.namespace)
    }
}

/// `"/hook/" + lowercase_hex(sha256(token + name + namespace))`, as Flux computes it (A.2).
pub fn webhook_path(token: &str, name: &str, namespace: &str) -> String {
    let digest = Sha256::new()
        .chain_update(token.as_bytes())
        .chain_update(name.as_bytes())
        .chain_update(namespace.as_bytes())
        .finalize();
    format!("{WEBHOOK_PATH_PREFIX}{}", hex::encode(digest))
}

/// The `X-Signature` value the flux CLI sends: `sha256=<hex HMAC-SHA256(token, body)>` (A.5).
pub fn sha256_signature(token: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_digest::<Sha256>(token.as_bytes(), body))
    )
}

/// One request the stand-in received, recorded on arrival with the status it gets.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The Receiver whose path matched, if any.
    pub receiver: Option<String>,
    /// That Receiver's namespace.
    pub receiver_namespace: Option<String>,
    pub method: Method,
    /// The request URI as sent: path and query.
    pub uri: String,
    pub headers: HeaderMap,
    /// The body as read. It is empty if reading failed or hit the cap.
    pub body: Bytes,
    /// The status returned.
    pub status: StatusCode,
    /// When the request arrived.
    pub received_at: Instant,
}

impl Hit {
    /// A header's value as text, if it is present and printable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON.
    ///
    /// # Panics
    /// If the body is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("hit body is JSON")
    }
}

/// What a Receiver does once a request passed validation (A.6): request reconciliation of
/// its `spec.resources`. An error makes the request answer `500`, as in Flux's step 6.
pub trait ReconcileRequester: Send + Sync {
    fn request_reconcile(&self, namespace: &str, name: &str) -> Result<(), String>;
}

/// A running stand-in. The server stops when this is dropped.
pub struct FluxReceiverStandIn {
    address: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl FluxReceiverStandIn {
    /// Serves `receivers` on `127.0.0.1` on a free port.
    ///
    /// # Panics
    /// If two Receivers share a name, or the listener cannot be bound.
    pub async fn start(receivers: impl IntoIterator<Item = Receiver>) -> Self {
        let registered: Vec<Registered> = receivers.into_iter().map(Registered::new).collect();
        for (index, receiver) in registered.iter().enumerate() {
            let name = &receiver.spec.name;
            assert!(
                registered[..index].iter().all(|r| &r.spec.name != name),
                "duplicate receiver name {name:?}"
            );
        }
        let shared = Arc::new(Shared {
            registry: Mutex::new(Registry {
                receivers: registered,
                hits: Vec::new(),
            }),
            requester: Mutex::new(None),
            hit_count: watch::Sender::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Flux Receiver stand-in");
        let address = listener.local_addr().expect("listener has an address");
        let app = Router::new()
            .fallback(handle_payload)
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            // The server only ends with an I/O error on the listener, which a test sees as
            // refused connections.
            let _ = axum::serve(listener, app).await;
        });
        Self {
            address,
            shared,
            server,
        }
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://127.0.0.1:<port>`, the equivalent of the `webhook-receiver` Service URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The webhook path of the Receiver named `name`.
    ///
    /// # Panics
    /// If there is no such Receiver.
    pub fn webhook_path(&self, name: &str) -> String {
        self.shared
            .with_receiver(name, |r| r.path.clone())
            .unwrap_or_else(|| panic!("no receiver named {name:?}"))
    }

    /// `base_url() + webhook_path(name)`.
    pub fn webhook_url(&self, name: &str) -> String {
        format!("{}{}", self.base_url(), self.webhook_path(name))
    }

    /// Every request that matched the Receiver named `name`, oldest first.
    pub fn hits(&self, name: &str) -> Vec<Hit> {
        self.shared
            .registry()
            .hits
            .iter()
            .filter(|hit| hit.receiver.as_deref() == Some(name))
            .cloned()
            .collect()
    }

    /// Every request, matched or not, oldest first.
    pub fn all_hits(&self) -> Vec<Hit> {
        self.shared.registry().hits.clone()
    }

    /// Waits until the Receiver named `name` has at least `count` hits, and returns them.
    ///
    /// # Panics
    /// If `timeout` passes first. The message lists the hits seen so far.
    pub async fn wait_for_hits(&self, name: &str, count: usize, timeout: Duration) -> Vec<Hit> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut hit_count = self.shared.hit_count.subscribe();
        loop {
            hit_count.mark_unchanged();
            let hits = self.hits(name);
            if hits.len() >= count {
                return hits;
            }
            let changed = tokio::time::timeout_at(deadline, hit_count.changed()).await;
            if changed.is_err() {
                let seen: Vec<(StatusCode, String)> = hits
                    .iter()
                    .map(|h| (h.status, String::from_utf8_lossy(&h.body).into_owned()))
                    .collect();
                panic!(
                    "receiver {name:?}: wanted {count} hits within {timeout:?}, got {}: {seen:?}",
                    hits.len()
                );
            }
        }
    }

    /// Answers the next `count` requests to the Receiver named `name` with `status`,
    /// after any failures already queued.
    pub fn fail_next(&self, name: &str, status: StatusCode, count: usize) {
        self.update_receiver(name, |r| {
            r.injected.extend(std::iter::repeat_n(status, count))
        });
    }

    /// Sets the Receiver's `Ready` condition.
    pub fn set_ready(&self, name: &str, ready: bool) {
        self.update_receiver(name, |r| r.spec.ready = ready);
    }

    /// Sets the Receiver's `spec.suspend`.
    pub fn set_suspended(&self, name: &str, suspended: bool) {
        self.update_receiver(name, |r| r.spec.suspended = suspended);
    }

    /// Delays every response of the Receiver named `name` by `delay`. The hit is recorded
    /// when the request arrives, so a test can see a request that is still in flight.
    pub fn set_response_delay(&self, name: &str, delay: Duration) {
        self.update_receiver(name, |r| r.delay = delay);
    }

    /// Adds `receiver`, or replaces the one with its name and namespace. A replaced
    /// Receiver keeps its queued failures and response delay.
    pub fn upsert_receiver(&self, receiver: Receiver) {
        let mut registry = self.shared.registry();
        let existing = registry
            .receivers
            .iter_mut()
            .find(|r| r.spec.name == receiver.name && r.spec.namespace == receiver.namespace);
        match existing {
            Some(registered) => {
                registered.path = receiver.webhook_path();
                registered.spec = receiver;
            }
            None => registry.receivers.push(Registered::new(receiver)),
        }
    }

    /// Removes the Receiver `namespace/name`, if present. Its path then gets `404`.
    pub fn remove_receiver(&self, name: &str, namespace: &str) {
        self.shared
            .registry()
            .receivers
            .retain(|r| !(r.spec.name == name && r.spec.namespace == namespace));
    }

    /// The Receivers currently served.
    pub fn receivers(&self) -> Vec<Receiver> {
        self.shared
            .registry()
            .receivers
            .iter()
            .map(|r| r.spec.clone())
            .collect()
    }

    /// Makes every request that passes validation call `requester` (A.6).
    pub fn set_reconcile_requester(&self, requester: Arc<dyn ReconcileRequester>) {
        *self.shared.requester.lock() = Some(requester);
    }

    fn update_receiver(&self, name: &str, change: impl FnOnce(&mut Registered)) {
        self.shared
            .with_receiver(name, change)
            .unwrap_or_else(|| panic!("no receiver named {name:?}"));
    }
}

impl Drop for FluxReceiverStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// State shared between the handle and the server.
struct Shared {
    registry: Mutex<Registry>,
    /// Called after validation passes, when fed by the notification-controller stand-in.
    requester: Mutex<Option<Arc<dyn ReconcileRequester>>>,
    /// The number of hits recorded, so waiters wake on each new one.
    hit_count: watch::Sender<usize>,
}

struct Registry {
    receivers: Vec<Registered>,
    hits: Vec<Hit>,
}

struct Registered {
    spec: Receiver,
    path: String,
    injected: VecDeque<StatusCode>,
    delay: Duration,
}

impl Registered {
    fn new(spec: Receiver) -> Self {
        Self {
            path: spec.webhook_path(),
            spec,
            injected: VecDeque::new(),
            delay: Duration::ZERO,
        }
    }
}

/// What the pipeline decided for one request.
struct Verdict {
    /// The matched Receiver's name and namespace.
    receiver: Option<(String, String)>,
    status: StatusCode,
    /// Whether the status came from the pipeline (not injected), so a `200` annotates.
    validated: bool,
    delay: Duration,
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panicking test thread cannot leave the registry half-updated: every update
        // is a single assignment or push.
        self.registry.lock()
    }

    fn with_receiver<T>(&self, name: &str, f: impl FnOnce(&mut Registered) -> T) -> Option<T> {
        let mut registry = self.registry();
        registry
            .receivers
            .iter_mut()
            .find(|r| r.spec.name == name)
            .map(f)
    }

    fn record(&self, hit: Hit) {
        let mut registry = self.registry();
        registry.hits.push(hit);
        let count = registry.hits.len();
        drop(registry);
        self.hit_count.send_replace(count);
    }

    /// Steps 2–4 of Flux's pipeline (A.4). Step 1 happened before this call.
    fn decide(&self, request_uri: &str, headers: &HeaderMap, body: &[u8]) -> Verdict {
        let mut registry = self.registry();
        let Some(receiver) = registry
            .receivers
            .iter_mut()
            .find(|r| r.path == request_uri)
        else {
            return Verdict {
                receiver: None,
                status: StatusCode::NOT_FOUND,
                validated: false,
                delay: Duration::ZERO,
            };
        };
        let injected = receiver.injected.pop_front();
        let validated = injected.is_none();
        let status = if let Some(injected) = injected {
            injected
        } else if receiver.spec.suspended || !receiver.spec.ready {
            StatusCode::SERVICE_UNAVAILABLE
        } else if validate(&receiver.spec, headers, body).is_err() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        Verdict {
            receiver: Some((receiver.spec.name.clone(), receiver.spec.namespace.clone())),
            status,
            validated,
            delay: receiver.delay,
        }
    }
}

/// The `/hook/` handler, mounted as the fallback so it sees every path and method.
async fn handle_payload(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> StatusCode {
    let received_at = Instant::now();
    let request_uri = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let (body, verdict) = match read_body_with_limit(body, MAX_BODY_BYTES).await {
        Ok(body) => {
            let verdict = shared.decide(&request_uri, &headers, &body);
            (body, verdict)
        }
        Err(error) => {
            let status = match error {
                BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                BodyError::Read => StatusCode::BAD_REQUEST,
            };
            let verdict = Verdict {
                receiver: None,
                status,
                validated: false,
                delay: Duration::ZERO,
            };
            (Bytes::new(), verdict)
        }
    };
    let mut status = verdict.status;
    if let (StatusCode::OK, true, Some((name, namespace))) =
        (status, verdict.validated, &verdict.receiver)
    {
        let requester = shared.requester.lock().clone();
        if let Some(requester) = requester
            && requester.request_reconcile(namespace, name).is_err()
        {
            status = StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    let (receiver, receiver_namespace) = verdict.receiver.unzip();
    shared.record(Hit {
        receiver,
        receiver_namespace,
        method,
        uri: request_uri,
        headers,
        body,
        status,
        received_at,
    });
    if !verdict.delay.is_zero() {
        tokio::time::sleep(verdict.delay).await;
    }
    status
}

enum BodyError {
    TooLarge,
    Read,
}

/// Flux's `readRequestBodyWithLimit`: up to `limit` bytes are fine, one more is `413`.
/// The rest of an oversized body is read and thrown away, so the client gets the `413`
/// rather than a reset connection.
async fn read_body_with_limit(mut body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let mut buffer = Vec::new();
    let mut too_large = false;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|_| BodyError::Read)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if too_large || buffer.len() + data.len() > limit {
            too_large = true;
            buffer.clear();
            continue;
        }
        buffer.extend_from_slice(&data);
    }
    if too_large {
        return Err(BodyError::TooLarge);
    }
    Ok(Bytes::from(buffer))
}

/// Why validation failed. Flux answers every one of these with `400`.
#[derive(Debug, PartialEq, Eq)]
enum Invalid {
    MissingSignature,
    MalformedSignature,
    UnknownHashPrefix,
    SignatureMismatch,
    WrongGitlabToken,
    EventNotAllowed,
}

/// Flux's `validate()` for the three supported types (A.5).
fn validate(receiver: &Receiver, headers: &HeaderMap, body: &[u8]) -> Result<(), Invalid> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    match receiver.receiver_type {
        ReceiverType::Generic => Ok(()),
        ReceiverType::GenericHmac => {
            verify_signature(header("X-Signature"), receiver.token.as_bytes(), body)
        }
        ReceiverType::Gitlab => {
            if header("X-Gitlab-Token") != receiver.token {
                return Err(Invalid::WrongGitlabToken);
            }
            let event = header("X-Gitlab-Event");
            let allowed = receiver.events.is_empty()
                || receiver
                    .events
                    .iter()
                    .any(|e| e.eq_ignore_ascii_case(event));
            if allowed {
                Ok(())
            } else {
                Err(Invalid::EventNotAllowed)
            }
        }
    }
}

/// go-github's `ValidateSignature`: split on the first `=`, pick the hash by the exact
/// lower-case prefix, compare the HMAC in constant time.
fn verify_signature(signature: &str, key: &[u8], body: &[u8]) -> Result<(), Invalid> {
    if signature.is_empty() {
        return Err(Invalid::MissingSignature);
    }
    let (prefix, hex_mac) = signature
        .split_once('=')
        .ok_or(Invalid::MalformedSignature)?;
    let presented = hex::decode(hex_mac).map_err(|_| Invalid::MalformedSignature)?;
    let verified = match prefix {
        "sha1" => hmac_verify::<sha1::Sha1>(key, body, &presented),
        "sha256" => hmac_verify::<Sha256>(key, body, &presented),
        "sha512" => hmac_verify::<Sha512>(key, body, &presented),
        _ => return Err(Invalid::UnknownHashPrefix),
    };
    if verified {
        Ok(())
    } else {
        Err(Invalid::SignatureMismatch)
    }
}

fn hmac_digest<D: hmac::EagerHash>(key: &[u8], body: &[u8]) -> Vec<u8>
where
    Hmac<D>: KeyInit + Mac,
{
    // HMAC takes keys of any length, so `new_from_slice` cannot fail.
    let mut mac = <Hmac<D> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

fn hmac_verify<D: hmac::EagerHash>(key: &[u8], body: &[u8], presented: &[u8]) -> bool
where
    Hmac<D>: KeyInit + Mac,
{
    // HMAC takes keys of any length, so `new_from_slice` cannot fail.
    let mut mac = <Hmac<D> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(body);
    mac.verify_slice(presented).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    async fn post(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> StatusCode {
        let mut request = client().post(url).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request reaches the stand-in");
        let status = StatusCode::from_u16(response.status().as_u16()).expect("valid status");
        let body = response.bytes().await.expect("read response body");
        assert!(body.is_empty(), "Flux answers with empty bodies");
        status
    }

    async fn stand_in() -> FluxReceiverStandIn {
        FluxReceiverStandIn::start([
            Receiver::new("plain", ReceiverType::Generic, "t1"),
            Receiver::new("signed", ReceiverType::GenericHmac, "my-token"),
            Receiver::new("gitlab", ReceiverType::Gitlab, "s3cr3t")
                .with_events(&["Push Hook", "Tag Push Hook"]),
            Receiver::new("gitlab-any", ReceiverType::Gitlab, "s3cr3t"),
            Receiver::new("starting", ReceiverType::Generic, "t2").not_ready(),
            Receiver::new("paused", ReceiverType::Generic, "t3").suspended(),
        ])
        .await
    }

    #[test]
    fn webhook_paths_match_the_reference_vectors() {
        let vectors = [
            (
                "my-token",
                "my-receiver",
                "flux-system",
                "/hook/8a1182bb8ba88eae305b69af2c1839590333ebddd73eccbbe482c0c93d147305",
            ),
            (
                "",
                "my-receiver",
                "flux-system",
                "/hook/7ee308e8ba2149f30a12e7dff0aeaf8d226f3df02db9c04721a1a69e20c386cd",
            ),
            (
                "my-token\n",
                "my-receiver",
                "flux-system",
                "/hook/baf942a6b8038e8231291d524f1d8e54720d7b65c3bd1aa84057c41c317d5732",
            ),
            (
                "s3cr3t",
                "gitlab-receiver",
                "flux-system",
                "/hook/b98046fdfce6b4f7d6974d236a32ef16a5cb3bc0de15093af5866cb749e393fc",
            ),
        ];
        for (token, name, namespace, path) in vectors {
            assert_eq!(
                webhook_path(token, name, namespace),
                path,
                "token {token:?}"
            );
            assert_eq!(path.len(), 70);
        }
    }

    #[test]
    fn hmac_signature_matches_the_reference_vector() {
        let signature = sha256_signature("my-token", b"{}");
        assert_eq!(
            signature,
            "sha256=8d7b81f27d3cf16729a74a4ba76461de972545d495142cd604f903735fe33d53"
        );
        assert_eq!(verify_signature(&signature, b"my-token", b"{}"), Ok(()));
    }

    #[test]
    fn signature_checks_follow_go_github() {
        let key = b"k";
        let body = b"body";
        let sha1 = format!("sha1={}", hex::encode(hmac_digest::<sha1::Sha1>(key, body)));
        let sha512 = format!("sha512={}", hex::encode(hmac_digest::<Sha512>(key, body)));
        assert_eq!(verify_signature(&sha1, key, body), Ok(()));
        assert_eq!(verify_signature(&sha512, key, body), Ok(()));
        assert_eq!(
            verify_signature("", key, body),
            Err(Invalid::MissingSignature)
        );
        assert_eq!(
            verify_signature("sha256", key, body),
            Err(Invalid::MalformedSignature)
        );
        let upper = sha1.replacen("sha1", "SHA1", 1);
        assert_eq!(
            verify_signature(&upper, key, body),
            Err(Invalid::UnknownHashPrefix)
        );
        assert_eq!(
            verify_signature(&sha1, key, b"other"),
            Err(Invalid::SignatureMismatch)
        );
    }

    #[tokio::test]
    async fn a_valid_request_gets_200_with_an_empty_body_and_is_recorded() {
        let flux = stand_in().await;
        let url = flux.webhook_url("plain");
        assert_eq!(post(&url, &[], b"{}".to_vec()).await, StatusCode::OK);
        let hits = flux.wait_for_hits("plain", 1, SECOND).await;
        assert_eq!(hits[0].method, Method::POST);
        assert_eq!(hits[0].uri, flux.webhook_path("plain"));
        assert_eq!(hits[0].body.as_ref(), b"{}");
        assert_eq!(hits[0].status, StatusCode::OK);
    }

    #[tokio::test]
    async fn any_method_is_accepted() {
        let flux = stand_in().await;
        let response = client()
            .get(flux.webhook_url("plain"))
            .send()
            .await
            .expect("request reaches the stand-in");
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(flux.hits("plain")[0].method, Method::GET);
    }

    #[tokio::test]
    async fn the_path_must_match_exactly() {
        let flux = stand_in().await;
        let url = flux.webhook_url("plain");
        let base = flux.base_url();
        let upper = format!("{base}{}", flux.webhook_path("plain").to_uppercase());
        let upper = upper.replacen("/HOOK/", "/hook/", 1);
        for wrong in [
            format!("{url}/"),
            format!("{url}?x=1"),
            upper,
            format!("{base}/hook/"),
            format!("{base}{}", webhook_path("t1", "plain", "default")),
        ] {
            assert_eq!(
                post(&wrong, &[], Vec::new()).await,
                StatusCode::NOT_FOUND,
                "{wrong}"
            );
        }
        assert!(flux.hits("plain").is_empty());
        assert_eq!(flux.all_hits().len(), 5);
    }

    #[tokio::test]
    async fn generic_hmac_checks_the_signature() {
        let flux = stand_in().await;
        let url = flux.webhook_url("signed");
        let good = sha256_signature("my-token", b"{}");
        assert_eq!(
            post(&url, &[("X-Signature", &good)], b"{}".to_vec()).await,
            StatusCode::OK
        );
        let cases: [&[(&str, &str)]; 3] = [
            &[],
            &[("X-Signature", "md5=00")],
            &[("X-Signature", &sha256_signature("other-token", b"{}"))],
        ];
        for headers in cases {
            assert_eq!(
                post(&url, headers, b"{}".to_vec()).await,
                StatusCode::BAD_REQUEST,
                "{headers:?}"
            );
        }
    }

    #[tokio::test]
    async fn gitlab_checks_the_token_and_the_event() {
        let flux = stand_in().await;
        let url = flux.webhook_url("gitlab");
        let token = ("X-Gitlab-Token", "s3cr3t");
        let push = ("X-Gitlab-Event", "push hook");
        assert_eq!(post(&url, &[token, push], Vec::new()).await, StatusCode::OK);
        let wrong_token = ("X-Gitlab-Token", "nope");
        assert_eq!(
            post(&url, &[wrong_token, push], Vec::new()).await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            post(&url, &[push], Vec::new()).await,
            StatusCode::BAD_REQUEST
        );
        let system = ("X-Gitlab-Event", "System Hook");
        assert_eq!(
            post(&url, &[token, system], Vec::new()).await,
            StatusCode::BAD_REQUEST
        );
        let any = flux.webhook_url("gitlab-any");
        assert_eq!(
            post(&any, &[token, system], Vec::new()).await,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn not_ready_or_suspended_gets_503() {
        let flux = stand_in().await;
        for name in ["starting", "paused"] {
            assert_eq!(
                post(&flux.webhook_url(name), &[], Vec::new()).await,
                StatusCode::SERVICE_UNAVAILABLE
            );
        }
        flux.set_ready("starting", true);
        assert_eq!(
            post(&flux.webhook_url("starting"), &[], Vec::new()).await,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn bodies_over_3_mib_get_413() {
        let flux = stand_in().await;
        let url = flux.webhook_url("plain");
        assert_eq!(
            post(&url, &[], vec![b' '; MAX_BODY_BYTES]).await,
            StatusCode::OK
        );
        assert_eq!(
            post(&url, &[], vec![b' '; MAX_BODY_BYTES + 1]).await,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[tokio::test]
    async fn injected_failures_come_first_then_normal_handling_resumes() {
        let flux = stand_in().await;
        let url = flux.webhook_url("plain");
        flux.fail_next("plain", StatusCode::NOT_FOUND, 1);
        flux.fail_next("plain", StatusCode::TOO_MANY_REQUESTS, 2);
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(post(&url, &[], Vec::new()).await);
        }
        assert_eq!(
            statuses,
            [
                StatusCode::NOT_FOUND,
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::OK
            ]
        );
        let recorded: Vec<StatusCode> = flux.hits("plain").iter().map(|h| h.status).collect();
        assert_eq!(recorded, statuses);
    }

    #[tokio::test]
    #[should_panic(expected = "wanted 1 hits")]
    async fn waiting_for_hits_that_never_come_fails_with_a_message() {
        let flux = stand_in().await;
        flux.wait_for_hits("plain", 1, Duration::from_millis(50))
            .await;
    }
}
