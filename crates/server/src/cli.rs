//! The command line: `fluxgate serve | migrate | agent …`.
//!
//! Flags carry the same names as the configuration keys (`--http-listen` is
//! `http_listen`, `FLUXGATE_HTTP_LISTEN`); only the flags given become a configuration
//! layer, on top of the file and the environment.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::admin::GrantsRequest;
use crate::config::{LogFormat, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "fluxgate",
    version,
    about = "Push notifications from GitLab to Flux, delivered at least once."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalFlags,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes: where the store is, how to log.
#[derive(Debug, Args)]
pub struct GlobalFlags {
    /// A TOML configuration file (keys as in the configuration reference).
    #[arg(long, global = true, env = "FLUXGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of the embedded SQLite database and the generated hook secret.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// `postgres://…` (several replicas) or `sqlite://…`; default: SQLite in --data-dir.
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// `redis://…`: share events and agent presence between replicas.
    #[arg(long, global = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key [default: fluxgate].
    #[arg(long, global = true)]
    pub redis_key_prefix: Option<String>,
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// A tracing filter, such as `info` or `fluxgate=debug,info`.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker.
    Serve(Box<ServeFlags>),
    /// Apply database migrations and exit.
    Migrate,
    /// Manage agents (works on the same store as the server, also while it runs).
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Exit 0 if `URL` answers 2xx (for container health checks, where there is no curl).
    Healthcheck {
        /// Such as http://127.0.0.1:8151/readyz.
        url: String,
    },
}

#[derive(Debug, Args, Default)]
pub struct ServeFlags {
    /// Hooks and admin API [default: 127.0.0.1:8080].
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Agent gRPC streams [default: 127.0.0.1:8150].
    #[arg(long)]
    pub agent_listen: Option<String>,
    /// /metrics, /livez, /readyz [default: 127.0.0.1:8151].
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// An accepted X-Gitlab-Token, at least 16 bytes (repeat to rotate; visible in `ps`:
    /// prefer --hook-secret-file or FLUXGATE_HOOK_SECRET).
    #[arg(long = "hook-secret")]
    pub hook_secret: Vec<String>,
    /// A file of accepted hook secrets, one per line.
    #[arg(long)]
    pub hook_secret_file: Option<PathBuf>,
    /// A GitLab signing token (`whsec_…`) whose signatures are accepted (repeat to rotate;
    /// visible in `ps`: prefer --hook-signing-token-file or FLUXGATE_HOOK_SIGNING_TOKEN).
    #[arg(long = "hook-signing-token")]
    pub hook_signing_token: Vec<String>,
    /// A file of signing tokens, one per line.
    #[arg(long)]
    pub hook_signing_token_file: Option<PathBuf>,
    /// Accept only signed hooks; X-Gitlab-Token alone is refused.
    #[arg(long)]
    pub hook_signature_required: bool,
    /// Largest clock distance of a signed hook's timestamp, either way [default: 5m].
    #[arg(long)]
    pub hook_signature_tolerance: Option<String>,
    /// At most one "hook refused" log line per source and reason per this [default: 1m].
    #[arg(long)]
    pub hook_refusal_log_interval: Option<String>,
    /// Largest hook body, in bytes [default: 8388608].
    #[arg(long)]
    pub hook_body_limit: Option<usize>,
    /// File holding the admin API bearer token; without it the admin API is off.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// How long events are kept for agents that are away [default: 7d].
    #[arg(long)]
    pub retention: Option<String>,
    /// How often expired log entries are removed [default: 1m].
    #[arg(long)]
    pub retention_check_interval: Option<String>,
    /// How long deliveries are remembered for dedup [default: 24h].
    #[arg(long)]
    pub dedup_window: Option<String>,
    /// Read the log from the store after the bus was quiet this long [default: 1s].
    #[arg(long)]
    pub poll_interval: Option<String>,
    /// Keepalive period on idle agent streams [default: 15s].
    #[arg(long)]
    pub keepalive_interval: Option<String>,
    /// Events queued per agent stream before a slow one is closed [default: 1024].
    #[arg(long)]
    pub agent_queue_capacity: Option<usize>,
    /// Events one agent stream may have unacked [default: 100000].
    #[arg(long)]
    pub agent_max_unacked: Option<usize>,
    /// Streams one agent may have open on this replica at once [default: 16].
    #[arg(long)]
    pub max_streams_per_agent: Option<usize>,
    /// Subscriptions one agent stream may hold [default: 10000].
    #[arg(long)]
    pub max_subscriptions_per_stream: Option<usize>,
    /// Subscriptions one agent may hold across its streams on this replica [default: 20000].
    #[arg(long)]
    pub max_subscriptions_per_agent: Option<usize>,
    /// How often agent cursors are saved [default: 1s].
    #[arg(long)]
    pub cursor_flush_interval: Option<String>,
    /// How long a hook waits for its commit before 503 [default: 5s].
    #[arg(long)]
    pub commit_timeout: Option<String>,
    /// How long shutdown waits for open work [default: 10s].
    #[arg(long)]
    pub shutdown_grace: Option<String>,
    /// This replica's name in logs and to agents.
    #[arg(long)]
    pub broker_id: Option<String>,
    /// The Redis stream keeps about this many entries [default: 100000].
    #[arg(long)]
    pub redis_stream_max_len: Option<usize>,
    /// How often presence is refreshed in Redis [default: 5s].
    #[arg(long)]
    pub presence_refresh: Option<String>,
    /// Connections open at once on the HTTP listener [default: 1024].
    #[arg(long)]
    pub http_max_connections: Option<usize>,
    /// Connections open at once on the agent listener [default: 10000].
    #[arg(long)]
    pub agent_max_connections: Option<usize>,
    /// Connections open at once on the operations listener [default: 64].
    #[arg(long)]
    pub metrics_max_connections: Option<usize>,
    /// Deadline for a request head (HTTP/1) or the first request (agent port) [default: 10s].
    #[arg(long)]
    pub header_read_timeout: Option<String>,
    /// Close connections with no request in flight for this long [default: 60s].
    #[arg(long)]
    pub idle_timeout: Option<String>,
    /// Deadline for a TLS handshake [default: 10s].
    #[arg(long)]
    pub tls_handshake_timeout: Option<String>,
    /// How often TLS files are read again for changes [default: 5s].
    #[arg(long)]
    pub tls_reload_interval: Option<String>,
    /// PEM certificate chain of the HTTP listener (with --http-tls-key-file: HTTPS).
    #[arg(long)]
    pub http_tls_cert_file: Option<PathBuf>,
    /// PEM private key of the HTTP listener.
    #[arg(long)]
    pub http_tls_key_file: Option<PathBuf>,
    /// PEM certificate chain of the agent listener (with --agent-tls-key-file: TLS).
    #[arg(long)]
    pub agent_tls_cert_file: Option<PathBuf>,
    /// PEM private key of the agent listener.
    #[arg(long)]
    pub agent_tls_key_file: Option<PathBuf>,
    /// PEM CA certificates; agents must present a client certificate signed by one.
    #[arg(long)]
    pub agent_tls_client_ca_file: Option<PathBuf>,
    /// PEM certificate chain of the operations listener.
    #[arg(long)]
    pub metrics_tls_cert_file: Option<PathBuf>,
    /// PEM private key of the operations listener.
    #[arg(long)]
    pub metrics_tls_key_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create an agent and print its token (shown once; only a hash is stored).
    Create(CreateAgent),
    /// List agents.
    List(Output),
    /// Show one agent.
    Show(NamedAgent),
    /// Grant projects, groups or internal projects to an agent.
    Grant(AccessFlags),
    /// Withdraw grants from an agent.
    Revoke(AccessFlags),
    /// Replace an agent's token (the old one stops working at once) and print the new one.
    RotateToken(NamedAgent),
    /// Delete an agent (its streams are closed).
    Delete(NamedAgent),
}

#[derive(Debug, Args)]
pub struct Output {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CreateAgent {
    #[arg(long)]
    pub name: String,
    /// The agent's configuration project (it always sees pushes to it).
    #[arg(long)]
    pub config_project: String,
    /// Also see this project (repeatable).
    #[arg(long = "grant-project")]
    pub grant_project: Vec<String>,
    /// Also see every project in this group and its subgroups (repeatable).
    #[arg(long = "grant-group")]
    pub grant_group: Vec<String>,
    /// Also see internal projects.
    #[arg(long)]
    pub allow_internal: bool,
    #[command(flatten)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct NamedAgent {
    pub name: String,
    #[command(flatten)]
    pub output: Output,
}

/// Access to add (`grant`) or withdraw (`revoke`).
#[derive(Debug, Args)]
pub struct AccessFlags {
    pub name: String,
    /// A project (repeatable).
    #[arg(long = "project")]
    pub projects: Vec<String>,
    /// A group, with its subgroups (repeatable).
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Internal projects: `grant` lets the agent see them, `revoke` withdraws them.
    #[arg(long, visible_alias = "allow-internal")]
    pub internal: bool,
    #[command(flatten)]
    pub output: Output,
}

impl AccessFlags {
    pub fn request(&self) -> GrantsRequest {
        GrantsRequest {
            projects: self.projects.clone(),
            groups: self.groups.clone(),
            internal: self.internal,
        }
    }
}

impl Cli {
    /// Flags given that carry secrets, which any local user can read with `ps`.
    pub fn secret_flags(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        if let Command::Serve(serve) = &self.command {
            if !serve.hook_secret.is_empty() {
                given.push("--hook-secret");
            }
            if !serve.hook_signing_token.is_empty() {
                given.push("--hook-signing-token");
            }
        }
        given
    }

    /// The configuration layer made of the flags given.
    pub fn overrides(&self) -> Overrides {
        let mut layer = Overrides::new();
        let mut set = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                layer.insert(key.to_owned(), value);
            }
        };
        let global = &self.global;
        set(
            "data_dir",
            global
                .data_dir
                .as_ref()
                .map(|p| p.display().to_string().into()),
        );
        set("database_url", global.database_url.clone().map(Value::from));
        set("redis_url", global.redis_url.clone().map(Value::from));
        set(
            "redis_key_prefix",
            global.redis_key_prefix.clone().map(Value::from),
        );
        set(
            "log_format",
            global
                .log_format
                .map(|f| serde_json::to_value(f).unwrap_or(Value::Null)),
        );
        set("log_level", global.log_level.clone().map(Value::from));
        if let Command::Serve(serve) = &self.command {
            let text = |v: &Option<String>| v.clone().map(Value::from);
            set("http_listen", text(&serve.http_listen));
            set("agent_listen", text(&serve.agent_listen));
            set("metrics_listen", text(&serve.metrics_listen));
            if !serve.hook_secret.is_empty() {
                set("hook_secret", Some(serve.hook_secret.clone().into()));
            }
            set(
                "hook_secret_file",
                serve
                    .hook_secret_file
                    .as_ref()
                    .map(|p| p.display().to_string().into()),
            );
            if !serve.hook_signing_token.is_empty() {
                set(
                    "hook_signing_token",
                    Some(serve.hook_signing_token.clone().into()),
                );
            }
            set(
                "hook_signing_token_file",
                serve
                    .hook_signing_token_file
                    .as_ref()
                    .map(|p| p.display().to_string().into()),
            );
            if serve.hook_signature_required {
                set("hook_signature_required", Some(true.into()));
            }
            set(
                "hook_signature_tolerance",
                text(&serve.hook_signature_tolerance),
            );
            set(
                "hook_refusal_log_interval",
                text(&serve.hook_refusal_log_interval),
            );
            set("hook_body_limit", serve.hook_body_limit.map(Value::from));
            set(
                "admin_token_file",
                serve
                    .admin_token_file
                    .as_ref()
                    .map(|p| p.display().to_string().into()),
            );
            set("retention", text(&serve.retention));
            set(
                "retention_check_interval",
                text(&serve.retention_check_interval),
            );
            set("dedup_window", text(&serve.dedup_window));
            set("poll_interval", text(&serve.poll_interval));
            set("keepalive_interval", text(&serve.keepalive_interval));
            set(
                "agent_queue_capacity",
                serve.agent_queue_capacity.map(Value::from),
            );
            set(
                "agent_max_unacked",
                serve.agent_max_unacked.map(Value::from),
            );
            set(
                "max_streams_per_agent",
                serve.max_streams_per_agent.map(Value::from),
            );
            set(
                "max_subscriptions_per_stream",
                serve.max_subscriptions_per_stream.map(Value::from),
            );
            set(
                "max_subscriptions_per_agent",
                serve.max_subscriptions_per_agent.map(Value::from),
            );
            set("cursor_flush_interval", text(&serve.cursor_flush_interval));
            set("commit_timeout", text(&serve.commit_timeout));
            set("shutdown_grace", text(&serve.shutdown_grace));
            set("broker_id", text(&serve.broker_id));
            set(
                "redis_stream_max_len",
                serve.redis_stream_max_len.map(Value::from),
            );
            set("presence_refresh", text(&serve.presence_refresh));
            let count = |v: Option<usize>| v.map(Value::from);
            set("http_max_connections", count(serve.http_max_connections));
            set("agent_max_connections", count(serve.agent_max_connections));
            set(
                "metrics_max_connections",
                count(serve.metrics_max_connections),
            );
            set("header_read_timeout", text(&serve.header_read_timeout));
            set("idle_timeout", text(&serve.idle_timeout));
            set("tls_handshake_timeout", text(&serve.tls_handshake_timeout));
            set("tls_reload_interval", text(&serve.tls_reload_interval));
            let path = |v: &Option<PathBuf>| v.as_ref().map(|p| p.display().to_string().into());
            set("http_tls_cert_file", path(&serve.http_tls_cert_file));
            set("http_tls_key_file", path(&serve.http_tls_key_file));
            set("agent_tls_cert_file", path(&serve.agent_tls_cert_file));
            set("agent_tls_key_file", path(&serve.agent_tls_key_file));
            set(
                "agent_tls_client_ca_file",
                path(&serve.agent_tls_client_ca_file),
            );
            set("metrics_tls_cert_file", path(&serve.metrics_tls_cert_file));
            set("metrics_tls_key_file", path(&serve.metrics_tls_key_file));
        }
        layer
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::config::Config;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_become_a_configuration_layer() {
        let cli = Cli::parse_from([
            "fluxgate",
            "--data-dir",
            "/var/lib/fluxgate",
            "serve",
            "--http-listen",
            "0.0.0.0:80",
            "--hook-secret",
            "a",
            "--hook-secret",
            "b",
            "--retention",
            "1d",
        ]);
        let config = Config::load(None, Vec::new(), cli.overrides()).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/fluxgate"));
        assert_eq!(config.http_listen.to_string(), "0.0.0.0:80");
        assert_eq!(config.hook_secret, vec!["a", "b"]);
        assert_eq!(config.retention.as_secs(), 86_400);
        assert_eq!(config.agent_listen.to_string(), "127.0.0.1:8150");
        assert_eq!(cli.secret_flags(), vec!["--hook-secret"]);
    }

    #[test]
    fn signature_flags_become_keys() {
        let cli = Cli::parse_from([
            "fluxgate",
            "serve",
            "--hook-signing-token",
            "whsec_a",
            "--hook-signing-token",
            "whsec_b",
            "--hook-signing-token-file",
            "/run/secrets/signing",
            "--hook-signature-required",
            "--hook-signature-tolerance",
            "2m",
            "--hook-refusal-log-interval",
            "10s",
        ]);
        let config = Config::load(None, Vec::new(), cli.overrides()).unwrap();
        assert_eq!(config.hook_signing_token, vec!["whsec_a", "whsec_b"]);
        assert_eq!(
            config.hook_signing_token_file,
            Some(PathBuf::from("/run/secrets/signing"))
        );
        assert!(config.hook_signature_required);
        assert_eq!(config.hook_signature_tolerance.as_secs(), 120);
        assert_eq!(config.hook_refusal_log_interval.as_secs(), 10);
        assert_eq!(cli.secret_flags(), vec!["--hook-signing-token"]);

        let defaults = Config::load(
            None,
            Vec::new(),
            Cli::parse_from(["fluxgate", "serve"]).overrides(),
        )
        .unwrap();
        assert!(!defaults.hook_signature_required);
        assert_eq!(defaults.hook_signature_tolerance.as_secs(), 300);
        assert_eq!(defaults.hook_refusal_log_interval.as_secs(), 60);
    }
}
