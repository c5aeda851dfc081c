//! The Kubernetes mode: the agent finds Flux sources by itself, owns their Receivers and
//! elects a leader among its replicas.
//!
//! - [`gitlab_instance`], [`source_ref`], [`source`]: which `GitRepository` objects point
//!   at the GitLab instance, at which project, following which refs.
//! - [`registry`], [`oci_ref`], [`semver_range`]: which `OCIRepository` objects point at
//!   the instance's container registry, at which candidate projects, following which tags
//!   (exact, or a semver range read as Flux does).
//! - [`names`], [`owned`], [`annotations`]: the Secret and Receiver the agent owns per
//!   source, and the marks it puts on them.
//! - [`flux_receiver`]: reading Receivers (Ready, webhook path, who made them).
//! - [`flux_api`]: whether the cluster serves the Flux APIs (checked until it does).
//! - [`object_cache`], [`controller`]: the watches and the reconcile pass that turn all of
//!   this into the receiver set the broker stream serves.
//! - [`sync_watch`], [`flux_status`]: after a trigger, following the source and the
//!   Kustomizations and HelmReleases using it until the revision is applied, and
//!   reporting each stage to the broker.
//! - [`leader`]: the Lease election; only the leader writes and triggers.
//! - [`webhook_base`]: calling Receivers directly or through the API server's service proxy.
//!
//! The facts these follow are in `shared/reference/kubernetes.md`.

pub mod annotations;
pub mod controller;
pub mod flux_api;
pub mod flux_receiver;
pub mod flux_status;
pub mod gitlab_instance;
pub mod leader;
pub mod names;
pub mod object_cache;
pub mod oci_ref;
pub mod owned;
pub mod registry;
pub mod semver_range;
pub mod source;
pub mod source_ref;
pub mod sync_watch;
pub mod webhook_base;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::config::KubernetesSettings;

/// Why the Kubernetes client cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot find the Kubernetes configuration (in-cluster, KUBECONFIG or ~/.kube/config): {0}"
    )]
    Infer(#[from] kube::config::InferConfigError),
    #[error("cannot load context {context:?} from the kubeconfig: {source}")]
    Context {
        context: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot build the Kubernetes client: {0}")]
    Build(#[from] kube::Error),
}

/// The two clients the agent uses, from one configuration.
#[derive(Clone)]
pub struct Clients {
    /// For watches, reads and writes: kube's own retries of 429, 503 and 504 apply.
    pub api: kube::Client,
    /// For Receiver calls through the service proxy: no retries of its own, so a
    /// Receiver's 503 reaches the agent's retry policy at once instead of waiting in
    /// kube's (up to minutes).
    pub proxy: kube::Client,
}

/// The clients of the standard resolution: in-cluster service account, else
/// `KUBECONFIG` / `~/.kube/config`; `context` picks a kubeconfig context.
pub async fn clients(settings: &KubernetesSettings) -> Result<Clients, ClientError> {
    let config = config(settings).await?;
    let mut proxy = config.clone();
    proxy.default_retry = false;
    Ok(Clients {
        api: kube::Client::try_from(config)?,
        proxy: kube::Client::try_from(proxy)?,
    })
}

async fn config(settings: &KubernetesSettings) -> Result<kube::Config, ClientError> {
    let config = match &settings.context {
        None => kube::Config::infer().await?,
        Some(context) => {
            let options = KubeConfigOptions {
                context: Some(context.clone()),
                ..KubeConfigOptions::default()
            };
            let loaded = match Kubeconfig::read() {
                Ok(kubeconfig) => kube::Config::from_custom_kubeconfig(kubeconfig, &options).await,
                Err(error) => Err(error),
            };
            loaded.map_err(|source| ClientError::Context {
                context: context.clone(),
                source,
            })?
        }
    };
    Ok(config)
}
