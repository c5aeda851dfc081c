//! The `kubernetes:` section, with `gitlab_url` and `flux.webhook_receiver_url`: what the
//! agent's Kubernetes mode watches, where it calls Receivers, and how replicas elect a
//! leader.
//!
//! ```yaml
//! gitlab_url: https://gitlab.example.com   # required with kubernetes:; may carry a relative
//!                                           # root (https://example.com/gitlab)
//! flux:
//!   webhook_receiver_url: http://webhook-receiver.flux-system.svc.cluster.local   # (default)
//!   # or a kube-apiserver service proxy path, called with the agent's credentials:
//!   # https://api.example.com/api/v1/namespaces/flux-system/services/webhook-receiver:80/proxy
//! kubernetes:
//!   context: my-cluster      # kubeconfig context when outside a cluster (default: current)
//!   namespaces: [apps]       # watch only these namespaces (default: all)
//!   label_selector: fluxgate.io/agent=prod   # only sources with these labels (default: all)
//!   registry_hosts: [registry.gitlab.example.com]   # the instance's container registry:
//!                            # OCIRepository URLs on these hosts are followed (host or
//!                            # host:port; default: registry.<gitlab_url host>; [] turns
//!                            # OCIRepository discovery off)
//!   sync_watch:
//!     enabled: true          # after a trigger, watch the source fetch the revision and the
//!                            # Kustomizations/HelmReleases using it apply it, and report
//!                            # each stage to the broker (default: true)
//!     deadline: 10m          # report timed_out if not applied by then (1s..24h)
//!   leader_election:
//!     enabled: true          # replicas elect one leader with a Lease (default: true)
//!     lease_name: fluxgate-agent
//!     lease_namespace: ...   # default: $POD_NAMESPACE, else the service account's namespace
//!     identity: ...          # default: $POD_NAME, else $HOSTNAME
//!     lease_duration: 15s
//!     renew_deadline: 10s
//!     retry_period: 2s
//! ```

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::flux_path::DEFAULT_WEBHOOK_RECEIVER_URL;
use crate::kubernetes::gitlab_instance::GitLabInstance;
use crate::kubernetes::names::is_dns_label;
use crate::kubernetes::registry::{Registry, RegistryHost};
use crate::kubernetes::webhook_base::WebhookBase;

/// Where a pod finds its own namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// `flux:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct FluxSection {
    pub webhook_receiver_url: Option<String>,
}

/// `kubernetes:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct KubernetesSection {
    pub context: Option<String>,
    pub namespaces: Vec<String>,
    pub label_selector: Option<String>,
    pub registry_hosts: Option<Vec<String>>,
    pub sync_watch: SyncWatchSection,
    pub leader_election: LeaderElectionSection,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct SyncWatchSection {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
}

impl Default for SyncWatchSection {
    fn default() -> Self {
        Self {
            enabled: true,
            deadline: Duration::from_secs(600),
        }
    }
}

/// Watching the sync after a trigger (see [`crate::kubernetes::sync_watch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncWatch {
    pub enabled: bool,
    /// How long after the trigger the revision must be applied before it is reported
    /// `timed_out`.
    pub deadline: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct LeaderElectionSection {
    pub enabled: bool,
    pub lease_name: String,
    pub lease_namespace: Option<String>,
    pub identity: Option<String>,
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    #[serde(with = "humantime_serde")]
    pub renew_deadline: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_period: Duration,
}

impl Default for LeaderElectionSection {
    fn default() -> Self {
        // agentk's values (kubernetes.md §4).
        Self {
            enabled: true,
            lease_name: "fluxgate-agent".to_owned(),
            lease_namespace: None,
            identity: None,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The validated Kubernetes mode.
#[derive(Debug, Clone)]
pub struct KubernetesSettings {
    /// Sources must point at this instance.
    pub gitlab: GitLabInstance,
    /// Receivers are called at this base plus their `status.webhookPath`.
    pub webhook_base: WebhookBase,
    /// The kubeconfig context; `None`: in-cluster, else the current context.
    pub context: Option<String>,
    /// Namespaces to watch; empty: all.
    pub namespaces: Vec<String>,
    pub label_selector: Option<String>,
    /// The instance's container registry: `OCIRepository` sources must point at it.
    pub registry: Registry,
    pub leader: LeaderElection,
    pub sync_watch: SyncWatch,
    /// Names this agent on the objects it owns (`<lease namespace>/<lease name>`), so two
    /// agents in one cluster never take each other's objects.
    pub agent_id: String,
}

/// How replicas elect the one that acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElection {
    /// `false`: this process always acts (one replica only).
    pub enabled: bool,
    pub lease_name: String,
    pub lease_namespace: String,
    /// This replica's name in the Lease's `holderIdentity`.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

pub(super) fn validate(
    section: KubernetesSection,
    gitlab_url: Option<&str>,
    flux: FluxSection,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<KubernetesSettings, ConfigError> {
    let gitlab_url = gitlab_url.ok_or_else(|| {
        ConfigError::invalid(
            "gitlab_url",
            "required with kubernetes: sources are matched against this GitLab instance",
        )
    })?;
    let gitlab = GitLabInstance::parse(gitlab_url)
        .map_err(|e| ConfigError::invalid("gitlab_url", e.to_string()))?;
    let webhook_base = WebhookBase::parse(
        flux.webhook_receiver_url
            .as_deref()
            .unwrap_or(DEFAULT_WEBHOOK_RECEIVER_URL),
    )
    .map_err(|e| ConfigError::invalid("flux.webhook_receiver_url", e.to_string()))?;
    for (index, namespace) in section.namespaces.iter().enumerate() {
        if !is_dns_label(namespace) {
            return Err(ConfigError::invalid(
                format!("kubernetes.namespaces[{index}]"),
                format!("{namespace:?} is not a valid namespace name"),
            ));
        }
    }
    /// Most `registry_hosts` entries.
    const MAX_REGISTRY_HOSTS: usize = 16;
    let registry = match section.registry_hosts {
        None => Registry::new(vec![RegistryHost::default_for(gitlab.host())]),
        Some(hosts) if hosts.len() > MAX_REGISTRY_HOSTS => {
            return Err(ConfigError::invalid(
                "kubernetes.registry_hosts",
                format!("at most {MAX_REGISTRY_HOSTS} hosts"),
            ));
        }
        Some(hosts) => Registry::new(
            hosts
                .iter()
                .enumerate()
                .map(|(index, host)| {
                    RegistryHost::parse(host).map_err(|e| {
                        ConfigError::invalid(
                            format!("kubernetes.registry_hosts[{index}]"),
                            e.to_string(),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    let label_selector = section
        .label_selector
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let context = section
        .context
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    let leader = leader_election(section.leader_election, env)?;
    let deadline = section.sync_watch.deadline;
    if !(Duration::from_secs(1)..=Duration::from_secs(24 * 3600)).contains(&deadline) {
        return Err(ConfigError::invalid(
            "kubernetes.sync_watch.deadline",
            format!("{deadline:?} is outside 1s..24h"),
        ));
    }
    let sync_watch = SyncWatch {
        enabled: section.sync_watch.enabled,
        deadline,
    };
    Ok(KubernetesSettings {
        sync_watch,
        agent_id: format!("{}/{}", leader.lease_namespace, leader.lease_name),
        gitlab,
        webhook_base,
        context,
        namespaces: section.namespaces,
        label_selector,
        registry,
        leader,
    })
}

fn leader_election(
    section: LeaderElectionSection,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LeaderElection, ConfigError> {
    let field = |key: &str| format!("kubernetes.leader_election.{key}");
    if !is_dns_label(&section.lease_name) {
        return Err(ConfigError::invalid(
            field("lease_name"),
            format!("{:?} is not a valid object name", section.lease_name),
        ));
    }
    let lease_namespace = section
        .lease_namespace
        .or_else(|| env("POD_NAMESPACE"))
        .or_else(|| read_trimmed(Path::new(SERVICE_ACCOUNT_NAMESPACE)))
        .unwrap_or_else(|| "default".to_owned());
    if !is_dns_label(&lease_namespace) {
        return Err(ConfigError::invalid(
            field("lease_namespace"),
            format!("{lease_namespace:?} is not a valid namespace name"),
        ));
    }
    let identity = section
        .identity
        .or_else(|| env("POD_NAME"))
        .or_else(|| env("HOSTNAME"))
        .map(|i| i.trim().to_owned())
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| format!("fluxgate-agent-{}", uuid::Uuid::new_v4()));
    for (key, value) in [
        ("lease_duration", section.lease_duration),
        ("renew_deadline", section.renew_deadline),
        ("retry_period", section.retry_period),
    ] {
        if value < Duration::from_secs(1) {
            return Err(ConfigError::invalid(field(key), "must be at least 1s"));
        }
    }
    // client-go's rules: renewing must end before the lease lapses, and retries must
    // fit several times into the renew deadline.
    if section.renew_deadline >= section.lease_duration {
        return Err(ConfigError::invalid(
            field("renew_deadline"),
            "must be shorter than lease_duration, or two replicas could both act",
        ));
    }
    if section.retry_period >= section.renew_deadline {
        return Err(ConfigError::invalid(
            field("retry_period"),
            "must be shorter than renew_deadline",
        ));
    }
    Ok(LeaderElection {
        enabled: section.enabled,
        lease_name: section.lease_name,
        lease_namespace,
        identity,
        lease_duration: section.lease_duration,
        renew_deadline: section.renew_deadline,
        retry_period: section.retry_period,
    })
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}
