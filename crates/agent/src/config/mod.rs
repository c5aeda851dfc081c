//! The agent's YAML configuration: parsing, defaults and validation.
//!
//! ```yaml
//! broker: http://127.0.0.1:8150   # required; the broker's agent gRPC listener (http:// or https://),
//!                                 # or a list of replicas' addresses, tried in turn after each disconnect
//! token_file: /var/run/secrets/fluxgate/token   # the agent token, surrounding whitespace trimmed;
//! token_env: FLUXGATE_AGENT_TOKEN # ...or an environment variable (the default when neither is set)
//! cluster_name: prod-eu           # optional, shown on the broker's dashboard
//! request_timeout: 10s            # deadline of one Receiver call
//! retry:                          # Receiver calls answered 404/408/429/5xx or not at all are
//!                                 # retried until the Receiver answers; their events stay unacked
//!   initial_backoff: 500ms        # doubles after each failure, with jitter ...
//!   max_backoff: 30s              # ... up to this
//!   report_after: 5m              # a receiver failing this long is logged as a warning, counted
//!                                 # in fluxgate_agent_receivers_failing and reported to the broker
//!   warn_every: 5m                # ... and again this often while it keeps failing
//! health_listen: 0.0.0.0:9152     # optional: serve /livez, /readyz and /metrics (default: off;
//!                                 # metrics_listen is its former name)
//! reconnect:                      # broker stream
//!   initial_backoff: 500ms
//!   max_backoff: 30s              # also the delay after the broker rejects the token
//! tls:                            # for https:// brokers; see the `tls` module
//!   ca_file: ca.crt               # trust only this CA instead of the system roots
//!   cert_file: tls.crt            # client certificate and key, if the broker asks for one
//!   key_file: tls.key
//!   server_name: fluxgate.example.com   # name to verify instead of the URL's host
//! receivers:                      # at least one, unless the kubernetes: section (see the
//!                                 # `kubernetes` module) discovers them
//!   - name: app                   # unique; the Receiver's metadata.name. Required unless url is set
//!     project: group/app          # GitLab full path, or a clone or web URL of the project
//!     ref: refs/heads/main        # optional: exact ref, glob (refs/tags/v*) or branch/tag name
//!     type: generic-hmac          # generic | generic-hmac | gitlab
//!     token_file: /path/to/token  # the Receiver Secret's token, used RAW (see below) ...
//!     token: "..."                # ... or inline; exactly one of the two
//!     namespace: flux-system      # the Receiver's namespace (default flux-system)
//!     webhook_receiver_url: http://webhook-receiver.flux-system.svc.cluster.local  # (default)
//!     url: http://...             # or the full hook URL instead of the three keys above
//! ```
//!
//! Durations are humantime strings (`250ms`, `10s`, `1m 30s`). Relative token paths are
//! read from the configuration file's directory.
//!
//! A receiver's `token_file` is used exactly as read, trailing newline included: Flux
//! hashes the Secret's raw bytes into the webhook path and keys the HMAC with them, and a
//! mounted Secret file holds exactly those bytes. Only the agent's own token is trimmed.
//!
//! A receiver with `url` needs no token if its type is `generic`, since the path is
//! already known. Without `url`, the URL is `webhook_receiver_url` +
//! `/hook/` + hex(sha256(token + name + namespace)).

mod file;
mod kubernetes;
mod receivers;
mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fluxgate_core::{AgentToken, bearer};
use reqwest::Url;

use crate::receiver::Receiver;
use crate::receiver::retry::RetryPolicy;
use file::{ConfigFile, ReconnectSection, RetrySection};
pub use kubernetes::{KubernetesSettings, LeaderElection};
pub use tls::{BrokerTls, ClientIdentity};

/// The environment variable holding the agent token when the file names none.
pub const DEFAULT_TOKEN_ENV: &str = "FLUXGATE_AGENT_TOKEN";

/// Why the configuration cannot be used. The message names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The I/O error is part of the message, not a source, so that a chain of causes
    /// (`anyhow`'s `Caused by:`) does not print it twice.
    #[error("cannot read {path}: {error}")]
    ReadFile {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The YAML parser's message, once (it is the message, not also a cause).
    #[error(transparent)]
    Parse(#[from] serde_yaml_ng::Error),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Reconnect delays for the broker stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

/// A validated configuration, with every secret read.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `http://` or `https://` addresses of the broker's agent listeners (replicas), tried
    /// in turn.
    pub brokers: Vec<String>,
    pub token: AgentToken,
    /// Empty if not set.
    pub cluster_name: String,
    pub receivers: Vec<Receiver>,
    pub retry: RetryPolicy,
    pub reconnect: ReconnectPolicy,
    pub request_timeout: Duration,
    /// How `https://` brokers are trusted and how the agent proves who it is.
    pub tls: BrokerTls,
    /// Where to serve `/livez`, `/readyz` and `/metrics`; `None`: nowhere.
    pub health_listen: Option<SocketAddr>,
    /// The Kubernetes mode: discover Flux sources and own their Receivers; `None`: off.
    pub kubernetes: Option<KubernetesSettings>,
    /// Things in the file that still work but should change, logged at start.
    pub warnings: Vec<String>,
}

impl AgentConfig {
    /// Reads the file at `path`, taking secrets from files and the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::ReadFile {
            path: path.to_owned(),
            error,
        })?;
        let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
        Self::from_yaml(&text, base_dir, &|name| std::env::var(name).ok())
    }

    /// Parses `yaml`. Relative token paths are read from `base_dir`, environment variables
    /// through `env`.
    pub fn from_yaml(
        yaml: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file: ConfigFile = serde_yaml_ng::from_str(yaml)?;
        let brokers = brokers(file.broker.into_vec())?;
        let mut warnings = Vec::new();
        if file.retry.max_attempts.is_some() {
            warnings.push(
                "retry.max_attempts is no longer used and can be removed: a failing receiver is \
                 retried until it answers"
                    .to_owned(),
            );
        }
        let health_listen = match (file.health_listen, file.metrics_listen) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "metrics_listen",
                    "is the former name of health_listen: set only health_listen",
                ));
            }
            (Some(raw), None) => Some(listen_address("health_listen", &raw)?),
            (None, Some(raw)) => {
                warnings.push(
                    "metrics_listen is now called health_listen (it also serves /livez and \
                     /readyz); rename it"
                        .to_owned(),
                );
                Some(listen_address("metrics_listen", &raw)?)
            }
            (None, None) => None,
        };
        if file.kubernetes.is_none()
            && (file.gitlab_url.is_some() || file.flux.webhook_receiver_url.is_some())
        {
            warnings.push(
                "gitlab_url and flux.webhook_receiver_url are used only with kubernetes:, \
                 which is not set; static receivers take webhook_receiver_url each"
                    .to_owned(),
            );
        }
        let kubernetes = file
            .kubernetes
            .map(|section| {
                kubernetes::validate(section, file.gitlab_url.as_deref(), file.flux, env)
            })
            .transpose()?;
        if kubernetes.is_none() && file.receivers.is_empty() {
            return Err(ConfigError::invalid(
                "receivers",
                "at least one receiver is required, unless kubernetes: discovers them",
            ));
        }
        Ok(Self {
            tls: tls::validate(file.tls, &brokers, base_dir)?,
            brokers,
            token: agent_token(file.token_file.as_deref(), file.token_env, base_dir, env)?,
            cluster_name: file.cluster_name.unwrap_or_default().trim().to_owned(),
            receivers: receivers::validate(file.receivers, base_dir)?,
            retry: retry(&file.retry)?,
            reconnect: reconnect(&file.reconnect)?,
            request_timeout: positive("request_timeout", file.request_timeout)?,
            health_listen,
            kubernetes,
            warnings,
        })
    }
}

fn brokers(raw: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::invalid("broker", "give at least one address"));
    }
    raw.iter().map(|address| broker(address)).collect()
}

/// A broker address: an `http://` or `https://` URL with a host. An address without a
/// scheme (`127.0.0.1:8150`, `broker:8150`) is refused with the URL it probably meant.
fn broker(raw: &str) -> Result<String, ConfigError> {
    let raw = raw.trim();
    if !raw.contains("://") {
        return Err(ConfigError::invalid(
            "broker",
            format!(
                "{raw:?} has no scheme: give the agent (gRPC) listener's URL with http:// or \
                 https://; did you mean \"http://{raw}\"?"
            ),
        ));
    }
    let url = Url::parse(raw)
        .map_err(|e| ConfigError::invalid("broker", format!("{raw:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::invalid(
            "broker",
            format!("scheme must be http or https, not {:?}", url.scheme()),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid("broker", "the URL has no host"));
    }
    Ok(raw.to_owned())
}

fn agent_token(
    token_file: Option<&Path>,
    token_env: Option<String>,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AgentToken, ConfigError> {
    let raw = match (token_file, token_env) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                "token_file",
                "set token_file or token_env, not both",
            ));
        }
        (Some(path), None) => read_secret_file("token_file", base_dir, path)?,
        (None, env_name) => {
            let name = env_name.unwrap_or_else(|| DEFAULT_TOKEN_ENV.to_owned());
            env(&name).ok_or_else(|| {
                ConfigError::invalid(
                    "token_env",
                    format!("environment variable {name} is not set (set it, or use token_file)"),
                )
            })?
        }
    };
    let token = AgentToken::from_presented(&raw);
    let field = if token_file.is_some() {
        "token_file"
    } else {
        "token_env"
    };
    if token.reveal().is_empty() {
        return Err(ConfigError::invalid(field, "the agent token is empty"));
    }
    if bearer::check_token(token.reveal()).is_err() {
        return Err(ConfigError::invalid(
            field,
            "the agent token has characters that cannot be sent in a header",
        ));
    }
    Ok(token)
}

/// Reads a secret file as is. `field` names the key in errors.
pub(crate) fn read_secret_file(
    field: &str,
    base_dir: &Path,
    path: &Path,
) -> Result<String, ConfigError> {
    let full = base_dir.join(path);
    std::fs::read_to_string(&full)
        .map_err(|e| ConfigError::invalid(field, format!("cannot read {}: {e}", full.display())))
}

fn retry(section: &RetrySection) -> Result<RetryPolicy, ConfigError> {
    let (initial_backoff, max_backoff) =
        backoff_pair("retry", section.initial_backoff, section.max_backoff)?;
    Ok(RetryPolicy {
        initial_backoff,
        max_backoff,
        report_after: positive("retry.report_after", section.report_after)?,
        warn_every: positive("retry.warn_every", section.warn_every)?,
    })
}

fn listen_address(field: &str, raw: &str) -> Result<SocketAddr, ConfigError> {
    raw.trim().parse().map_err(|e| {
        ConfigError::invalid(
            field,
            format!("{e}: give an IP address and port, such as 0.0.0.0:9152"),
        )
    })
}

fn reconnect(section: &ReconnectSection) -> Result<ReconnectPolicy, ConfigError> {
    let (initial_backoff, max_backoff) =
        backoff_pair("reconnect", section.initial_backoff, section.max_backoff)?;
    Ok(ReconnectPolicy {
        initial_backoff,
        max_backoff,
    })
}

fn backoff_pair(
    section: &str,
    initial: Duration,
    max: Duration,
) -> Result<(Duration, Duration), ConfigError> {
    let initial = positive(&format!("{section}.initial_backoff"), initial)?;
    if max < initial {
        return Err(ConfigError::invalid(
            format!("{section}.max_backoff"),
            format!("must not be shorter than initial_backoff ({initial:?})"),
        ));
    }
    Ok((initial, max))
}

fn positive(field: &str, value: Duration) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::invalid(field, "must be longer than zero"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
