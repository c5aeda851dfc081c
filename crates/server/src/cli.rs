//! The command line: `fluxgate serve | migrate | agent … | healthcheck | notify`.
//!
//! The configuration keys' flags come from [`crate::config::flags`] (`--http-listen` is
//! `http_listen`, `FLUXGATE_HTTP_LISTEN`); only the flags given become a configuration
//! layer, on top of the file and the environment.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::admin::GrantsRequest;
use crate::config::Overrides;
use crate::config::flags::ConfigFlags;

#[derive(Debug, Parser)]
#[command(
    name = "fluxgate",
    version,
    about = "Push notifications from GitLab to Flux, delivered at least once."
)]
pub struct Cli {
    /// A TOML configuration file (keys as in docs/configuration.md).
    #[arg(long, global = true, env = "FLUXGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the store is, how to log: flags of every command.
    #[command(flatten)]
    pub global: ConfigFlags<true>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker.
    Serve(ConfigFlags<false>),
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
    /// Would this agent get a push to this project (and ref), and why or why not: the
    /// access rule's branch, the agent's subscriptions that name the project (also by a
    /// former path), their ref patterns. Exit status 0: it would; 1: it would not; 2: no
    /// answer (an error).
    Explain(ExplainArgs),
    /// From a GitLab CI job: tell the broker the pipeline's artifact is ready
    /// (`POST /api/v1/notify` with the job's ID token); prints the event's seq.
    Notify(NotifyArgs),
    /// Follow one push across the clusters: which agents were entitled to it (and by which
    /// rule), when each got it, when its Receivers answered, when Flux fetched and applied
    /// the revision, or where it stopped.
    Trace(TraceArgs),
}

/// `fluxgate trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The push: its seq (as `fluxgate notify` and the hook answer print it), or
    /// `<project path>@<sha>` (at least 7 hex digits of the new commit).
    #[arg(value_name = "SEQ|PROJECT@SHA")]
    pub push: String,
    /// Print JSON (as `GET /api/v1/events/{seq}` answers) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `fluxgate explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The agent's name.
    #[arg(long, value_name = "NAME")]
    pub agent: String,
    /// The project's full path (`group/project`).
    #[arg(long, value_name = "PATH")]
    pub project: String,
    /// A full ref such as refs/heads/main; without it, any ref.
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `fluxgate notify`: where to, which token, what was built, how long to retry.
#[derive(Debug, Args)]
pub struct NotifyArgs {
    /// The broker's HTTP listener, such as https://fluxgate.example.com.
    #[arg(long, env = "FLUXGATE_URL", value_name = "URL")]
    pub url: String,
    /// The environment variable holding the job's ID token (its `id_tokens:` name).
    #[arg(long, default_value = "FLUXGATE_ID_TOKEN", value_name = "NAME")]
    pub token_env: String,
    /// The OCI artifact pushed, such as oci://registry.example.com/group/app/manifests.
    #[arg(long, value_name = "URL")]
    pub artifact: Option<String>,
    /// Its tag.
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// Its digest, sha256:<64 hex>.
    #[arg(long, value_name = "DIGEST")]
    pub digest: Option<String>,
    /// Attempts at most (connection failures, timeouts, 5xx and 429 are retried with
    /// backoff; other answers are final).
    #[arg(long, default_value_t = 6, value_name = "COUNT")]
    pub attempts: u32,
    /// Give up once retrying would take longer than this in all.
    #[arg(long, default_value = "2m", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_time: Duration,
    /// Each attempt must be answered within this.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
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
    /// The agent's name: 1 to 63 lower-case letters, digits, `-`, `_` or `.`.
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
    /// The agent's name.
    pub name: String,
    #[command(flatten)]
    pub output: Output,
}

/// Access to add (`grant`) or withdraw (`revoke`).
#[derive(Debug, Args)]
pub struct AccessFlags {
    /// The agent's name.
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
    /// Fails, naming the flags, unless at least one of them was given.
    pub fn ensure_some(&self, verb: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.projects.is_empty() || !self.groups.is_empty() || self.internal,
            "nothing to {verb}: give --project, --group or --internal"
        );
        Ok(())
    }

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
        let overrides = self.overrides();
        [
            ("hook_secret", "--hook-secret"),
            ("hook_signing_token", "--hook-signing-token"),
        ]
        .into_iter()
        .filter(|(key, _)| overrides.contains_key(*key))
        .map(|(_, flag)| flag)
        .collect()
    }

    /// The configuration layer made of the flags given.
    pub fn overrides(&self) -> Overrides {
        let mut layer = self.global.given().clone();
        if let Command::Serve(serve) = &self.command {
            layer.extend(serve.given().clone());
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
    fn every_flag_and_argument_has_help() {
        fn check(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                check(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        check(&Cli::command(), "fluxgate", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:?}");
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

    /// A value that fits each value name.
    fn sample(value_name: &str) -> &'static str {
        match value_name {
            "ADDRESS" => "0.0.0.0:1",
            "BYTES" | "COUNT" => "3",
            "DURATION" => "3s",
            "FILTER" => "debug",
            "FORMAT" => "json",
            "URL" => "postgres://localhost/test",
            _ => "/some/path",
        }
    }

    #[test]
    fn every_key_is_a_flag_of_serve_or_of_every_command() {
        for arg in crate::config::flags::all() {
            let key = arg.get_id().as_str().to_owned();
            let flag = format!("--{}", arg.get_long().unwrap());
            let mut words = vec!["fluxgate".to_owned()];
            let command = if arg.is_global_set() {
                vec!["agent", "list"]
            } else {
                vec!["serve"]
            };
            words.extend(command.iter().map(|word| (*word).to_owned()));
            words.push(flag.clone());
            if arg.get_action().takes_values() {
                let name = arg.get_value_names().unwrap()[0].to_string();
                words.push(sample(&name).to_owned());
            }
            let cli = Cli::try_parse_from(&words).unwrap_or_else(|e| panic!("{words:?}: {e}"));
            let overrides = cli.overrides();
            assert!(overrides.contains_key(&key), "{flag} sets {key}");
            let defaults = serde_json::to_value(Config::default()).unwrap();
            let loaded =
                serde_json::to_value(Config::load(None, Vec::new(), overrides).unwrap()).unwrap();
            assert_ne!(loaded[&key], defaults[&key], "{flag} changes {key}");
        }
    }

    #[test]
    fn notify_takes_its_own_flags() {
        let cli = Cli::parse_from([
            "fluxgate",
            "notify",
            "--url",
            "http://broker:8080",
            "--tag",
            "v1",
            "--attempts",
            "3",
            "--max-time",
            "30s",
        ]);
        let Command::Notify(args) = cli.command else {
            panic!("not notify: {:?}", cli.command);
        };
        assert_eq!(args.url, "http://broker:8080");
        assert_eq!(args.token_env, "FLUXGATE_ID_TOKEN");
        assert_eq!(args.tag.as_deref(), Some("v1"));
        assert_eq!(args.attempts, 3);
        assert_eq!(args.max_time, Duration::from_secs(30));
        assert_eq!(args.request_timeout, Duration::from_secs(10));
    }

    #[test]
    fn serve_flags_belong_to_serve() {
        assert!(Cli::try_parse_from(["fluxgate", "migrate", "--retention", "1d"]).is_err());
        let cli = Cli::try_parse_from([
            "fluxgate",
            "agent",
            "list",
            "--database-max-connections",
            "2",
        ])
        .unwrap();
        let config = Config::load(None, Vec::new(), cli.overrides()).unwrap();
        assert_eq!(config.database_max_connections, 2);
    }
}
