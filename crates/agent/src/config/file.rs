//! The YAML configuration as written, before validation. Unknown keys are errors.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::receiver::ReceiverKind;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigFile {
    pub broker: OneOrMany,
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    pub cluster_name: Option<String>,
    #[serde(default)]
    pub receivers: Vec<ReceiverEntry>,
    pub gitlab_url: Option<String>,
    #[serde(default)]
    pub flux: super::kubernetes::FluxSection,
    pub kubernetes: Option<super::kubernetes::KubernetesSection>,
    #[serde(default)]
    pub retry: RetrySection,
    #[serde(default)]
    pub reconnect: ReconnectSection,
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(default)]
    pub tls: super::tls::TlsSection,
    pub health_listen: Option<String>,
    /// The former name of `health_listen`.
    pub metrics_listen: Option<String>,
}

/// `broker: <address>` or `broker: [<address>, …]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReceiverEntry {
    pub name: Option<String>,
    pub project: String,
    #[serde(rename = "ref")]
    pub ref_pattern: Option<String>,
    #[serde(rename = "type")]
    pub kind: ReceiverKind,
    pub token_file: Option<PathBuf>,
    pub token: Option<String>,
    pub url: Option<String>,
    pub webhook_receiver_url: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RetrySection {
    /// No longer used (receivers are retried until they answer); accepted so older
    /// files still load, with a warning.
    pub max_attempts: Option<u32>,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub report_after: Duration,
    #[serde(with = "humantime_serde")]
    pub warn_every: Duration,
}

impl Default for RetrySection {
    fn default() -> Self {
        Self {
            max_attempts: None,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            report_after: Duration::from_secs(300),
            warn_every: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct ReconnectSection {
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for ReconnectSection {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
