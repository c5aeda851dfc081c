//! A Kubernetes API server stand-in, in process, that the real kube-rs client talks to over
//! HTTP/1.1, and a stand-in for Flux's notification-controller on top of it.
//!
//! # What it stands for
//!
//! kube-apiserver v1.33 as a client sees it (`shared/reference/kubernetes.md` §5), with the
//! built-in types `v1` `namespaces` (implicit: every namespace exists), `secrets`,
//! `services`, `configmaps`, `events`, `events.k8s.io/v1` `events`,
//! `coordination.k8s.io/v1` `leases`, and the Flux CRDs a test installs at runtime
//! ([`FluxCrds`]): `source.toolkit.fluxcd.io` `gitrepositories` and `ocirepositories`,
//! `notification.toolkit.fluxcd.io/v1` `receivers`, `kustomize.toolkit.fluxcd.io/v1`
//! `kustomizations`. Before they are installed their paths and discovery answer 404, as on
//! a cluster without Flux. It implements:
//!
//! - bearer-token authentication (401 `Status` without the token);
//! - discovery (`/version`, `/api`, `/api/v1`, `/apis`, `/apis/<g>`, `/apis/<g>/<v>`) and
//!   the installed CRD objects (`apiextensions.k8s.io/v1`, Established);
//! - list (namespaced and across namespaces) with label selectors (`=`, `==`, `!=`,
//!   exists, `!`, `in`, `notin`) and field selectors on `metadata.name`/`namespace`
//!   (`limit`/`continue` are ignored: everything comes in one page, which is legal);
//! - watch from a `resourceVersion` with bookmarks, `timeoutSeconds` (capped) and
//!   `410 Expired` once the bounded history no longer reaches back;
//! - create, get, replace with optimistic concurrency, delete, JSON merge patch, and
//!   server-side apply with `managedFields`, conflicts and `force` (see `apply.rs`);
//! - one global `resourceVersion`; server-set `uid`, `creationTimestamp`, `generation`
//!   (CRDs: bumped when anything outside `metadata` and `status` changes); the status
//!   subresource of CRDs (writes to the main resource ignore `status`, writes to
//!   `…/status` change only `status`);
//! - garbage collection of objects whose owners (`ownerReferences[].uid`) are all gone, at
//!   once after the owner's delete (background propagation, without the GC's delay);
//! - the validation listed in `validation.rs` (422 `Invalid` with `details.causes`), and
//!   the defaults and `stringData` folding the API server applies;
//! - the service proxy (`…/services/<svc>/proxy/<path>`) to addresses tests register.
//!
//! [`FluxSyncStandIn`] adds source-controller's fetch and kustomize-controller's apply, as
//! far as a client that watches a sync reads them (`flux_sync_controllers.rs`).
//!
//! # What it leaves out
//!
//! RBAC and admission webhooks (any holder of the token may do anything); OpenAPI schema
//! validation beyond the listed rules (unknown fields are kept); protobuf, tables and
//! aggregated discovery; `deleteCollection`, finalizers, `deletionTimestamp`, foreground
//! deletion and `dryRun`; JSON patch (`application/json-patch+json`, 415) and YAML apply
//! bodies (apply bodies must be JSON, which kube-rs sends); strategic merge patch is a merge
//! patch (built-in types only, as for the real server CRDs refuse it); `sendInitialEvents`
//! (streaming lists); watches whose selector stops matching an object do not get a
//! synthetic `DELETED`; list pagination; the other built-in types.
//!
//! # Test hooks the real server does not have
//!
//! [`Cluster`] reads and writes objects without HTTP, records every request
//! ([`RequestRecord`]), waits for a condition ([`Cluster::wait_for`]), compacts the watch
//! history ([`Cluster::compact_history`]) and ends every open watch
//! ([`Cluster::end_all_watches`]).

mod apply;
mod cluster;
mod discovery;
pub mod flux_sync_controllers;
mod kubeconfig;
pub mod notification_controller;
mod proxy;
mod resources;
mod selector;
mod server;
mod stand_in;
mod status;
mod store;
mod validation;
mod watch;

use std::net::SocketAddr;
use std::time::Duration;

use parking_lot::Mutex;

pub use cluster::Cluster;
pub use flux_sync_controllers::FluxSyncStandIn;
pub use kubeconfig::CONTEXT;
pub use notification_controller::NotificationControllerStandIn;
pub use resources::{FluxCrds, KUSTOMIZE_GROUP, NOTIFICATION_GROUP, SOURCE_GROUP};
pub use stand_in::KubeApiStandIn;
pub use status::{ApiError, Cause};
pub use store::RequestRecord;

/// Tunables of the stand-in.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_interval: Duration,
    /// How many change events are kept for watches that resume from a `resourceVersion`.
    pub history_limit: usize,
    /// The longest a watch lasts, whatever its `timeoutSeconds`.
    pub max_watch_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            bookmark_interval: Duration::from_secs(1),
            history_limit: 1000,
            max_watch_timeout: Duration::from_secs(1800),
        }
    }
}

/// What the HTTP server, the watches and the test handles share.
pub(crate) struct Shared {
    pub(crate) state: Mutex<store::State>,
    pub(crate) token: String,
    pub(crate) options: Options,
    pub(crate) address: SocketAddr,
    pub(crate) http: reqwest::Client,
}
