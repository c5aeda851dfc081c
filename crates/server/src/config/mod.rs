//! Configuration: the one typed definition of every key ([`Config`]), and the layers it is
//! merged from: defaults, then an optional TOML file, then `FLUXGATE_<KEY>` environment
//! variables, then command-line flags (each layer overrides the one before).
//!
//! Each field of [`Config`] is a key: its doc comment is its description (in `--help` and
//! in `docs/configuration.md`), its `#[arg]` makes it a flag (`--key-with-dashes`; `global`
//! ones are taken by every command, the others by `serve`), [`Config::default`] holds its
//! default. Nothing else lists keys: the flags ([`flags`]), the environment layer
//! ([`load`]) and the reference ([`reference`]) are derived from it.

pub mod flags;
pub mod load;
pub mod reference;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fluxgate_idtoken::{Issuer, VerifierConfig};
use serde::{Deserialize, Deserializer, Serialize};

pub use load::{ConfigError, Overrides};

/// Every key of the broker's configuration.
///
/// Value names (`<DURATION>`, `<COUNT>`, …) are the types shown in `--help` and in the
/// reference; a test keeps them to the documented set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the embedded SQLite database and the generated hook secret live; created
    /// 0700, its files 0600 (looser modes are tightened at start).
    #[arg(long, global = true, value_name = "PATH")]
    pub data_dir: PathBuf,
    /// `postgres://…` for several replicas, or `sqlite://…`; without it, SQLite in
    /// `data_dir`.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Connections in the database pool.
    #[arg(long, global = true, value_name = "COUNT")]
    pub database_max_connections: u32,
    /// `redis://…`: share committed events and agent presence between replicas through
    /// Redis. Without it, replicas learn of each other's events from the database within
    /// `poll_interval`.
    #[arg(long, global = true, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (several deployments can share one Redis).
    #[arg(long, global = true, value_name = "TEXT")]
    pub redis_key_prefix: String,
    /// The Redis stream keeps about this many events.
    #[arg(long, value_name = "COUNT")]
    pub redis_stream_max_len: usize,
    /// How often a replica refreshes its agents' presence in Redis (entries expire after
    /// 3× this).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub presence_refresh: Duration,
    /// Hooks (`POST /hooks/gitlab`) and the admin API.
    #[arg(long, value_name = "ADDRESS")]
    pub http_listen: SocketAddr,
    /// Agent gRPC streams.
    #[arg(long, value_name = "ADDRESS")]
    pub agent_listen: SocketAddr,
    /// `/metrics`, `/livez`, `/readyz`.
    #[arg(long, value_name = "ADDRESS")]
    pub metrics_listen: SocketAddr,
    /// Connections open at once on the HTTP listener; more wait in the kernel's backlog
    /// until one closes (idle and slow ones are closed by the timeouts).
    #[arg(long, value_name = "COUNT")]
    pub http_max_connections: usize,
    /// Connections open at once on the agent listener; more wait in the backlog.
    #[arg(long, value_name = "COUNT")]
    pub agent_max_connections: usize,
    /// Connections open at once on the operations listener; more wait in the backlog.
    #[arg(long, value_name = "COUNT")]
    pub metrics_max_connections: usize,
    /// HTTP: a request's head must arrive in full within this (from accept, and from the
    /// end of the previous response on a kept-alive connection). Agent port: the HTTP/2
    /// preface and first request must arrive within this.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A TLS handshake must finish within this after accept.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub tls_handshake_timeout: Duration,
    /// How often the TLS files are read again; a changed pair is used from the next
    /// connection on.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub tls_reload_interval: Duration,
    /// PEM certificate chain of the HTTP listener; with `http_tls_key_file`: HTTPS for
    /// hooks and the admin API.
    #[arg(long, value_name = "PATH")]
    pub http_tls_cert_file: Option<PathBuf>,
    /// PEM private key of the HTTP listener.
    #[arg(long, value_name = "PATH")]
    pub http_tls_key_file: Option<PathBuf>,
    /// PEM certificate chain of the agent listener; with `agent_tls_key_file`: gRPC over
    /// TLS.
    #[arg(long, value_name = "PATH")]
    pub agent_tls_cert_file: Option<PathBuf>,
    /// PEM private key of the agent listener.
    #[arg(long, value_name = "PATH")]
    pub agent_tls_key_file: Option<PathBuf>,
    /// PEM CA certificates: agents must present a client certificate signed by one.
    #[arg(long, value_name = "PATH")]
    pub agent_tls_client_ca_file: Option<PathBuf>,
    /// PEM certificate chain of the operations listener; with `metrics_tls_key_file`:
    /// HTTPS.
    #[arg(long, value_name = "PATH")]
    pub metrics_tls_cert_file: Option<PathBuf>,
    /// PEM private key of the operations listener.
    #[arg(long, value_name = "PATH")]
    pub metrics_tls_key_file: Option<PathBuf>,
    /// Accepted `X-Gitlab-Token` values, at least 16 bytes each (several, for rotation):
    /// repeat the flag, or comma-separate in the variable. A flag is visible in `ps`:
    /// prefer the file or the variable.
    #[arg(long, value_name = "SECRET")]
    #[serde(deserialize_with = "string_or_list")]
    pub hook_secret: Vec<String>,
    /// A file of accepted hook secrets, one per line. With no secret and no signing
    /// token, one is generated in `data_dir` (embedded database only).
    #[arg(long, value_name = "PATH")]
    pub hook_secret_file: Option<PathBuf>,
    /// GitLab signing tokens (`whsec_<base64 key>`) whose Standard Webhooks signatures
    /// are accepted (several, for rotation): repeat the flag, or comma-separate in the
    /// variable. A flag is visible in `ps`: prefer the file or the variable.
    #[arg(long, value_name = "SECRET")]
    #[serde(deserialize_with = "string_or_list")]
    pub hook_signing_token: Vec<String>,
    /// A file of signing tokens, one per line.
    #[arg(long, value_name = "PATH")]
    pub hook_signing_token_file: Option<PathBuf>,
    /// Accept only hooks with a valid signature (`X-Gitlab-Token` alone is refused).
    #[arg(long)]
    pub hook_signature_required: bool,
    /// Largest distance between a signed hook's `webhook-timestamp` and the broker's
    /// clock, either way (replay protection).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub hook_signature_tolerance: Duration,
    /// At most one "hook refused" log line per source address and reason per interval
    /// (each refusal is still counted in `fluxgate_hook_refusals_total`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub hook_refusal_log_interval: Duration,
    /// Largest hook body accepted, in bytes (413 above).
    #[arg(long, value_name = "BYTES")]
    pub hook_body_limit: usize,
    /// The GitLab instance (its external URL, as in its ID tokens' `iss`): with
    /// `ci_audience`, turns on `POST /api/v1/notify`, authenticated by GitLab CI ID tokens
    /// verified against this instance's OIDC discovery and keys (docs/pipeline-notify.md).
    #[arg(long, value_name = "URL")]
    pub gitlab_url: Option<String>,
    /// The audience (`aud`) that pipeline jobs' `id_tokens:` name for fluxgate, such as
    /// the broker's URL; with `gitlab_url`.
    #[arg(long, value_name = "TEXT")]
    pub ci_audience: Option<String>,
    /// Clock skew allowed on an ID token's `exp` and `nbf`, both ways.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub ci_token_leeway: Duration,
    /// A token naming an unknown key id refreshes GitLab's keys at most once per this
    /// (bad tokens cannot make the broker hammer GitLab).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub ci_keys_refresh_min_interval: Duration,
    /// A file holding the admin API's bearer token (at least 16 characters); without it
    /// the admin API is off.
    #[arg(long, value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
    /// GitLab KAS's internal API (`Notifications/GitPushEvent`, what GitLab Rails'
    /// `gitlab_kas.internal_url` points at): gRPC without TLS, so keep it on a private
    /// network. Bound only when `kas_secret_file` is set.
    #[arg(long, value_name = "ADDRESS")]
    pub kas_listen: SocketAddr,
    /// GitLab's KAS secret (`.gitlab_kas_secret`: the Base64 of exactly 32 bytes), which
    /// signs Rails' calls; setting it turns the KAS listener on. Should be 0600.
    #[arg(long, value_name = "PATH")]
    pub kas_secret_file: Option<PathBuf>,
    /// Connections open at once on the KAS listener; more wait in the backlog.
    #[arg(long, value_name = "COUNT")]
    pub kas_max_connections: usize,
    /// The GitLab instance's relative URL root (`/gitlab` for
    /// `https://example.com/gitlab`): a project path sent to `ReconcileProjects` under it
    /// also matches without it. Defaults to the path of `gitlab_url`.
    #[arg(long, value_name = "TEXT")]
    pub kas_relative_url_root: Option<String>,
    /// How long the log keeps events for agents that are away.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often expired log entries are removed.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub retention_check_interval: Duration,
    /// How long an `Idempotency-Key`, or a ref's last change, is remembered for dedup.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// How long the bus may be quiet before the log is read from the database.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often an idle agent stream gets a keepalive.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// Events queued per agent stream; a stream that does not keep up is closed and
    /// resumes from its cursor.
    #[arg(long, value_name = "COUNT")]
    pub agent_queue_capacity: usize,
    /// Events one agent stream may have sent and not yet acked: the backlog replay waits
    /// for acks at this many (an agent far behind catches up at its own pace); a live
    /// event beyond it closes the stream, which resumes from its cursor.
    #[arg(long, value_name = "COUNT")]
    pub agent_max_unacked: usize,
    /// Streams one agent (one token) may have open on this replica at once; more are
    /// refused with RESOURCE_EXHAUSTED.
    #[arg(long, value_name = "COUNT")]
    pub max_streams_per_agent: usize,
    /// Subscriptions one agent stream may hold (Hello and changes together); a change
    /// beyond it closes the stream with RESOURCE_EXHAUSTED.
    #[arg(long, value_name = "COUNT")]
    pub max_subscriptions_per_stream: usize,
    /// Subscriptions one agent may hold across its streams on this replica.
    #[arg(long, value_name = "COUNT")]
    pub max_subscriptions_per_agent: usize,
    /// How often agent cursors are saved.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub cursor_flush_interval: Duration,
    /// How long a hook waits for its commit before answering 503.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub commit_timeout: Duration,
    /// How long shutdown waits for open work before giving up.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Names this replica in logs and to agents; without it, the host name and a random
    /// suffix.
    #[arg(long, value_name = "TEXT")]
    pub broker_id: Option<String>,
    /// `text` or `json`; logs go to stderr.
    #[arg(long, global = true, value_name = "FORMAT", value_enum)]
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `fluxgate=debug,info`; `RUST_LOG` wins if set.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./fluxgate-data"),
            database_url: None,
            database_max_connections: 8,
            redis_url: None,
            redis_key_prefix: "fluxgate".to_owned(),
            redis_stream_max_len: 100_000,
            presence_refresh: Duration::from_secs(5),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            agent_listen: SocketAddr::from(([127, 0, 0, 1], 8150)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 8151)),
            http_max_connections: 1024,
            agent_max_connections: 10_000,
            metrics_max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
            tls_reload_interval: Duration::from_secs(5),
            http_tls_cert_file: None,
            http_tls_key_file: None,
            agent_tls_cert_file: None,
            agent_tls_key_file: None,
            agent_tls_client_ca_file: None,
            metrics_tls_cert_file: None,
            metrics_tls_key_file: None,
            hook_secret: Vec::new(),
            hook_secret_file: None,
            hook_signing_token: Vec::new(),
            hook_signing_token_file: None,
            hook_signature_required: false,
            hook_signature_tolerance: fluxgate_ingest::hooks::DEFAULT_SIGNATURE_TOLERANCE,
            hook_refusal_log_interval: fluxgate_ingest::hooks::DEFAULT_REFUSAL_LOG_INTERVAL,
            hook_body_limit: fluxgate_ingest::hooks::DEFAULT_BODY_LIMIT,
            gitlab_url: None,
            ci_audience: None,
            ci_token_leeway: fluxgate_idtoken::VerifierConfig::DEFAULT_LEEWAY,
            ci_keys_refresh_min_interval:
                fluxgate_idtoken::VerifierConfig::DEFAULT_REFRESH_MIN_INTERVAL,
            admin_token_file: None,
            kas_listen: SocketAddr::from(([127, 0, 0, 1], 8153)),
            kas_secret_file: None,
            kas_max_connections: 64,
            kas_relative_url_root: None,
            retention: Duration::from_secs(7 * 24 * 3600),
            retention_check_interval: Duration::from_secs(60),
            dedup_window: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(15),
            agent_queue_capacity: 1024,
            max_streams_per_agent: 16,
            agent_max_unacked: fluxgate_stream::session::cursor::MAX_IN_FLIGHT,
            max_subscriptions_per_stream: 10_000,
            max_subscriptions_per_agent: 20_000,
            cursor_flush_interval: Duration::from_secs(1),
            commit_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            broker_id: None,
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
        }
    }
}

impl Config {
    /// The database URL: the configured one, or SQLite in the data directory.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("fluxgate.db").display()
            )
        })
    }

    pub fn uses_embedded_database(&self) -> bool {
        self.database_url.is_none()
    }

    /// The ID token verifier's configuration when `gitlab_url` and `ci_audience` are both
    /// set (pipeline notifications on), `None` when neither is; one without the other, or
    /// a value that is not usable, is an error (the broker does not start).
    pub fn ci_verifier(&self) -> Result<Option<VerifierConfig>, CiConfigError> {
        let (url, audience) = match (&self.gitlab_url, &self.ci_audience) {
            (None, None) => return Ok(None),
            (Some(url), Some(audience)) => (url, audience),
            (Some(_), None) => {
                return Err(CiConfigError::Incomplete {
                    missing: "ci_audience",
                    given: "gitlab_url",
                });
            }
            (None, Some(_)) => {
                return Err(CiConfigError::Incomplete {
                    missing: "gitlab_url",
                    given: "ci_audience",
                });
            }
        };
        let issuer = Issuer::parse(url)?;
        let mut verifier = VerifierConfig::new(issuer, audience)?;
        verifier.leeway = self.ci_token_leeway;
        verifier.refresh_min_interval = self.ci_keys_refresh_min_interval;
        Ok(Some(verifier))
    }

    /// The KAS relative URL root as a path (`/gitlab/` → `gitlab`): `kas_relative_url_root`,
    /// else the path of `gitlab_url`; `None` when neither has one (or it is `/`).
    pub fn kas_relative_root(&self) -> anyhow::Result<Option<fluxgate_core::FullPath>> {
        let from_gitlab_url = self.gitlab_url.as_deref().and_then(|url| {
            let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
            after_scheme
                .split_once('/')
                .map(|(_, path)| path.to_owned())
        });
        let Some(root) = self.kas_relative_url_root.clone().or(from_gitlab_url) else {
            return Ok(None);
        };
        let trimmed = root.trim().trim_matches('/');
        if trimmed.is_empty() {
            return Ok(None);
        }
        fluxgate_core::FullPath::parse(trimmed)
            .map(Some)
            .map_err(|err| {
                anyhow::anyhow!("kas_relative_url_root {root:?} is not a URL path: {err}")
            })
    }
}

/// Why the pipeline-notification keys cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CiConfigError {
    #[error(
        "{given} is set but {missing} is not: pipeline notifications need both \
         (set both to enable POST /api/v1/notify, or neither)"
    )]
    Incomplete {
        missing: &'static str,
        given: &'static str,
    },
    #[error(transparent)]
    Invalid(#[from] fluxgate_idtoken::ConfigError),
}

/// A list from a list (file, flags) or from one comma-separated string (a variable).
fn string_or_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => one
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        OneOrMany::Many(many) => many,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kas_relative_root_is_a_path_without_slashes() {
        let root = |value: Option<&str>| {
            Config {
                kas_relative_url_root: value.map(str::to_owned),
                ..Config::default()
            }
            .kas_relative_root()
        };
        assert_eq!(root(None).unwrap(), None);
        assert_eq!(root(Some("/")).unwrap(), None);
        assert_eq!(root(Some("/gitlab/")).unwrap().unwrap().as_str(), "gitlab");
        assert!(root(Some("/a b")).is_err());
    }

    #[test]
    fn the_embedded_database_lives_in_the_data_dir() {
        let config = Config::default();
        assert_eq!(
            config.database_url(),
            "sqlite://./fluxgate-data/fluxgate.db?mode=rwc"
        );
        assert!(config.uses_embedded_database());
    }

    #[test]
    fn pipeline_notifications_need_both_gitlab_url_and_ci_audience() {
        let mut config = Config::default();
        assert!(config.ci_verifier().unwrap().is_none());
        config.gitlab_url = Some("https://gitlab.example.com/".to_owned());
        assert_eq!(
            config.ci_verifier().unwrap_err().to_string(),
            "gitlab_url is set but ci_audience is not: pipeline notifications need both \
             (set both to enable POST /api/v1/notify, or neither)"
        );
        config.ci_audience = Some("https://fluxgate.example.com".to_owned());
        config.ci_token_leeway = Duration::from_secs(7);
        let verifier = config.ci_verifier().unwrap().unwrap();
        assert_eq!(verifier.issuer.as_str(), "https://gitlab.example.com");
        assert_eq!(verifier.audience, "https://fluxgate.example.com");
        assert_eq!(verifier.leeway, Duration::from_secs(7));
        config.gitlab_url = None;
        assert!(
            config
                .ci_verifier()
                .unwrap_err()
                .to_string()
                .starts_with("ci_audience is set but gitlab_url is not")
        );
        config.gitlab_url = Some("gitlab.example.com".to_owned());
        assert!(
            config
                .ci_verifier()
                .unwrap_err()
                .to_string()
                .contains("is not a URL")
        );
    }
}
