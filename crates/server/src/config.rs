//! Configuration: defaults, then an optional TOML file, then `FLUXGATE_*` environment
//! variables, then command-line flags (each layer overrides the one before).
//!
//! Every key is listed in [`Config`] with its default; `docs/configuration.md` and the
//! README's reference are generated from the same names.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use serde::{Deserialize, Deserializer, Serialize};

/// Environment variables read, as `FLUXGATE_<KEY>` for each key here.
const ENV_KEYS: &[&str] = &[
    "data_dir",
    "database_url",
    "http_listen",
    "agent_listen",
    "metrics_listen",
    "hook_secret",
    "hook_secret_file",
    "hook_signing_token",
    "hook_signing_token_file",
    "hook_signature_required",
    "hook_signature_tolerance",
    "hook_refusal_log_interval",
    "hook_body_limit",
    "admin_token_file",
    "retention",
    "retention_check_interval",
    "dedup_window",
    "poll_interval",
    "keepalive_interval",
    "agent_queue_capacity",
    "max_streams_per_agent",
    "agent_max_unacked",
    "max_subscriptions_per_stream",
    "max_subscriptions_per_agent",
    "cursor_flush_interval",
    "commit_timeout",
    "shutdown_grace",
    "broker_id",
    "log_format",
    "log_level",
    "database_max_connections",
    "redis_url",
    "redis_key_prefix",
    "redis_stream_max_len",
    "presence_refresh",
    "http_max_connections",
    "agent_max_connections",
    "metrics_max_connections",
    "header_read_timeout",
    "idle_timeout",
    "tls_handshake_timeout",
    "tls_reload_interval",
    "http_tls_cert_file",
    "http_tls_key_file",
    "agent_tls_cert_file",
    "agent_tls_key_file",
    "agent_tls_client_ca_file",
    "metrics_tls_cert_file",
    "metrics_tls_key_file",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the embedded SQLite database and the generated hook secret live.
    pub data_dir: PathBuf,
    /// `postgres://…` for several replicas, or `sqlite://…`; default: SQLite in `data_dir`.
    pub database_url: Option<String>,
    pub database_max_connections: u32,
    /// `redis://…`: share committed events between replicas (and agent presence) through
    /// Redis. Optional: without it, replicas learn of each other's events from the
    /// database within `poll_interval`.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (several deployments can share one Redis).
    pub redis_key_prefix: String,
    /// The Redis stream keeps about this many entries.
    pub redis_stream_max_len: usize,
    /// How often a replica refreshes its agents' presence in Redis (entries live 3× this).
    #[serde(with = "humantime_serde")]
    pub presence_refresh: Duration,
    /// Hooks, admin API.
    pub http_listen: SocketAddr,
    /// Agent gRPC streams.
    pub agent_listen: SocketAddr,
    /// `/metrics`, `/livez`, `/readyz`.
    pub metrics_listen: SocketAddr,
    /// Connections open at once on each listener; more wait in the kernel's backlog until
    /// one closes (idle and slow ones are closed by the timeouts below).
    pub http_max_connections: usize,
    pub agent_max_connections: usize,
    pub metrics_max_connections: usize,
    /// HTTP/1: a request's head must arrive within this (from accept, and from the end of
    /// the previous response on a kept-alive connection). Agent port: the HTTP/2 preface
    /// and first request must arrive within this.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A TLS handshake must finish within this after accept.
    #[serde(with = "humantime_serde")]
    pub tls_handshake_timeout: Duration,
    /// How often the TLS files are read again (a changed certificate is used from the next
    /// connection on).
    #[serde(with = "humantime_serde")]
    pub tls_reload_interval: Duration,
    /// PEM certificate chain and key of the HTTP listener; both set: HTTPS.
    pub http_tls_cert_file: Option<PathBuf>,
    pub http_tls_key_file: Option<PathBuf>,
    /// PEM certificate chain and key of the agent listener; both set: gRPC over TLS.
    pub agent_tls_cert_file: Option<PathBuf>,
    pub agent_tls_key_file: Option<PathBuf>,
    /// PEM CA certificates: agents must present a client certificate signed by one.
    pub agent_tls_client_ca_file: Option<PathBuf>,
    /// PEM certificate chain and key of the operations listener.
    pub metrics_tls_cert_file: Option<PathBuf>,
    pub metrics_tls_key_file: Option<PathBuf>,
    /// Accepted `X-Gitlab-Token` values (several, for rotation), each at least
    /// 16 bytes.
    #[serde(deserialize_with = "string_or_list")]
    pub hook_secret: Vec<String>,
    /// A file of hook secrets, one per line. Without any secret or signing token, one is
    /// generated in `data_dir/hook-secret` on first start.
    pub hook_secret_file: Option<PathBuf>,
    /// GitLab signing tokens (`whsec_<base64 key>`) whose Standard Webhooks signatures
    /// are accepted (several, for rotation).
    #[serde(deserialize_with = "string_or_list")]
    pub hook_signing_token: Vec<String>,
    /// A file of signing tokens, one per line.
    pub hook_signing_token_file: Option<PathBuf>,
    /// Accept only signed hooks (retires `X-Gitlab-Token`).
    pub hook_signature_required: bool,
    /// Largest distance between a signed hook's `webhook-timestamp` and the broker's
    /// clock, either way (replay protection).
    #[serde(with = "humantime_serde")]
    pub hook_signature_tolerance: Duration,
    /// At most one "hook refused" log line per source address and reason per interval.
    #[serde(with = "humantime_serde")]
    pub hook_refusal_log_interval: Duration,
    /// Largest hook body accepted, in bytes.
    pub hook_body_limit: usize,
    /// A file holding the admin API's bearer token; without it the admin API is off.
    pub admin_token_file: Option<PathBuf>,
    /// How long the log keeps events for agents that are away.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often expired log entries are removed.
    #[serde(with = "humantime_serde")]
    pub retention_check_interval: Duration,
    /// How long a delivery id or a ref's last change is remembered for dedup.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// How long the bus may be quiet before the log is read from the store.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often an idle agent stream gets a keepalive.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// Events queued per agent stream before a stream that does not keep up is closed.
    pub agent_queue_capacity: usize,
    /// Events one agent stream may have unacked: replay waits for acks at this many; a
    /// live event beyond it closes the stream (it resumes from its cursor).
    pub agent_max_unacked: usize,
    /// Streams one agent (one token) may have open on this replica at once.
    pub max_streams_per_agent: usize,
    /// Subscriptions one agent stream may hold (Hello and changes together).
    pub max_subscriptions_per_stream: usize,
    /// Subscriptions one agent may hold across its streams on this replica.
    pub max_subscriptions_per_agent: usize,
    #[serde(with = "humantime_serde")]
    pub cursor_flush_interval: Duration,
    /// How long a hook waits for its commit before answering 503.
    #[serde(with = "humantime_serde")]
    pub commit_timeout: Duration,
    /// How long shutdown waits for open work before giving up.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Names this replica in logs and to agents; default: host name and a random suffix.
    pub broker_id: Option<String>,
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `fluxgate=debug,info`; `RUST_LOG` wins if set.
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
            admin_token_file: None,
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

/// Flags set on the command line, as a sparse layer (unset flags are absent).
pub type Overrides = serde_json::Map<String, serde_json::Value>;

impl Config {
    /// Loads the layers. `env` is the process environment, passed in so that tests never
    /// mutate it.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: Overrides,
    ) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                let missing = format!("config file {} does not exist", file.display());
                return Err(Box::new(figment::Error::from(missing)));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(Serialized::defaults(env_layer(env)))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)
    }

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
}

/// Keys whose environment values are taken verbatim (a secret of digits stays a string).
const VERBATIM_KEYS: &[&str] = &[
    "hook_secret",
    "hook_signing_token",
    "database_url",
    "redis_url",
    "redis_key_prefix",
    "broker_id",
    "log_level",
    "http_tls_cert_file",
    "http_tls_key_file",
    "agent_tls_cert_file",
    "agent_tls_key_file",
    "agent_tls_client_ca_file",
    "metrics_tls_cert_file",
    "metrics_tls_key_file",
];

/// `FLUXGATE_<KEY>` variables for known keys, typed the way figment types them.
fn env_layer(env: impl IntoIterator<Item = (String, String)>) -> Dict {
    env.into_iter()
        .filter_map(|(name, value)| {
            let key = name.strip_prefix("FLUXGATE_")?.to_lowercase();
            if !ENV_KEYS.contains(&key.as_str()) {
                return None;
            }
            let value = if VERBATIM_KEYS.contains(&key.as_str()) {
                Value::from(value)
            } else {
                value
                    .parse::<Value>()
                    .unwrap_or_else(|never| match never {})
            };
            Some((key, value))
        })
        .collect()
}

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

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn env_keys_are_exactly_the_config_fields() {
        let fields = serde_json::to_value(Config::default()).unwrap();
        let mut fields: Vec<&str> = fields
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut keys = ENV_KEYS.to_vec();
        fields.sort_unstable();
        keys.sort_unstable();
        assert_eq!(keys, fields);
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fluxgate.toml");
        std::fs::write(
            &file,
            "http_listen = \"0.0.0.0:9000\"\nretention = \"2d\"\nagent_queue_capacity = 10\n",
        )
        .unwrap();
        let environment = env(&[
            ("FLUXGATE_RETENTION", "3d"),
            ("FLUXGATE_HOOK_SECRET", "123, abc"),
            ("FLUXGATE_AGENT_TOKEN", "not a broker key"),
            ("HOME", "/root"),
        ]);
        let mut flags = Overrides::new();
        flags.insert("agent_queue_capacity".into(), 20.into());
        let config = Config::load(Some(&file), environment, flags).unwrap();
        assert_eq!(
            config.http_listen,
            "0.0.0.0:9000".parse().unwrap(),
            "file over default"
        );
        assert_eq!(
            config.retention,
            Duration::from_secs(3 * 24 * 3600),
            "env over file"
        );
        assert_eq!(config.agent_queue_capacity, 20, "flag over file");
        assert_eq!(
            config.hook_secret,
            vec!["123", "abc"],
            "a list from one variable, digits kept as text"
        );
        assert_eq!(
            config.keepalive_interval,
            Duration::from_secs(15),
            "default"
        );
    }

    #[test]
    fn signature_keys_from_the_environment() {
        let environment = env(&[
            ("FLUXGATE_HOOK_SIGNING_TOKEN", "whsec_a+b/c=, whsec_d"),
            ("FLUXGATE_HOOK_SIGNATURE_REQUIRED", "true"),
            ("FLUXGATE_HOOK_SIGNATURE_TOLERANCE", "90s"),
        ]);
        let config = Config::load(None, environment, Overrides::new()).unwrap();
        assert_eq!(config.hook_signing_token, vec!["whsec_a+b/c=", "whsec_d"]);
        assert!(config.hook_signature_required);
        assert_eq!(config.hook_signature_tolerance, Duration::from_secs(90));
    }

    #[test]
    fn bad_values_and_unknown_keys_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fluxgate.toml");
        std::fs::write(&file, "htp_listen = \"0.0.0.0:9000\"\n").unwrap();
        let err = Config::load(Some(&file), Vec::new(), Overrides::new()).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown field: found `htp_listen`"),
            "{err}"
        );

        let err = Config::load(
            None,
            env(&[("FLUXGATE_RETENTION", "soon")]),
            Overrides::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("retention"), "{err}");

        let missing = Config::load(
            Some(Path::new("/nonexistent.toml")),
            Vec::new(),
            Overrides::new(),
        )
        .unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
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
}
