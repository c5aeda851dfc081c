//! The `migrate` and `agent …` commands: they open the same store as the server (the
//! server may be running) and print text or JSON. Only `migrate` (and `serve`) may create
//! the store; `agent …` opens an existing, migrated one or says how to make it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fluxgate_core::ApiError;
use fluxgate_replication::{RedisBus, RedisBusConfig};
use fluxgate_store::{
    CommitListener, InvalidRequest, NoListener, Publisher, SqlStore, Store, StoreError,
};
use tokio_util::sync::CancellationToken;

use crate::admin::{AgentAdmin, AgentView, AgentWithToken, CreateAgentRequest, PresenceSource};
use crate::broker::{open_store, store_options};
use crate::cli::{AgentCommand, TraceArgs};
use crate::config::Config;

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config, Duration::from_secs(30)).await?;
    store.close().await;
    println!(
        "migrations applied to {}",
        redact_url(&config.database_url())
    );
    Ok(())
}

pub async fn agent(config: &Config, command: AgentCommand) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::new(open_existing_store(config).await?);
    let bus = CliBus::start(config)?;
    let admin = AgentAdmin::new(
        Publisher::new(store, bus.listener.clone()),
        presence_source(config)?,
    );
    let result = run_agent_command(&admin, command).await;
    drop(admin);
    bus.flush().await;
    result
}

/// `fluxgate trace`: reads the store (the broker may be running) and prints the push's path.
pub async fn trace(config: &Config, args: &TraceArgs) -> anyhow::Result<()> {
    let store = open_existing_store(config).await?;
    let result = trace_with(&store, args).await;
    store.close().await;
    let view = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", crate::trace::render(&view));
    }
    Ok(())
}

async fn trace_with(
    store: &dyn Store,
    args: &TraceArgs,
) -> anyhow::Result<crate::trace::TraceView> {
    let seq = match args.push.split_once('@') {
        None => args
            .push
            .parse::<u64>()
            .ok()
            .filter(|seq| *seq > 0)
            .map(fluxgate_core::Seq)
            .with_context(|| format!("{:?} is neither a seq nor <project>@<sha>", args.push))?,
        Some((project, sha)) => {
            let project = fluxgate_core::FullPath::parse(project)
                .with_context(|| format!("{project:?} is not a project path"))?;
            crate::trace::find_push(store, &project, sha)
                .await
                .map_err(|e| anyhow::anyhow!(e.message))?
        }
    };
    crate::trace::trace(store, seq)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))
}

/// Opens the store a broker uses, never creating one: a mistyped `--data-dir` or URL must
/// not become a new, empty store (with agents and tokens no broker knows).
async fn open_existing_store(config: &Config) -> anyhow::Result<SqlStore> {
    let url = config.database_url();
    match SqlStore::connect_existing(&url, store_options(config)).await {
        Ok(store) => Ok(store),
        Err(StoreError::Invalid(InvalidRequest::NoDatabaseFile { path })) => {
            let from = if config.uses_embedded_database() {
                format!("--data-dir {}", config.data_dir.display())
            } else {
                format!("--database-url {}", redact_url(&url))
            };
            let path = std::path::absolute(&path).unwrap_or(path);
            Err(anyhow::anyhow!(
                "no fluxgate database at {} (from {from}): pass the --data-dir (or \
                 --database-url) the broker uses, or create the database first with \
                 `fluxgate migrate` or `fluxgate serve`",
                path.display()
            ))
        }
        Err(err @ StoreError::Invalid(InvalidRequest::NotMigrated { .. })) => Err(anyhow::anyhow!(
            "the database at {} {}: run `fluxgate migrate` (or start `fluxgate serve`) \
                 with the same configuration first",
            redact_url(&url),
            err.to_string().trim_start_matches("the database ")
        )),
        Err(err) => Err(anyhow::anyhow!(
            "cannot open the database at {}: {err}",
            redact_url(&url)
        )),
    }
}

/// Where the CLI publishes what it commits (see [`Publisher`]): with Redis configured, to
/// the Redis bus, so running brokers apply the change as soon as they read it; without
/// Redis, nowhere, and running brokers apply it from the log at their next poll of the
/// store (within `poll_interval`).
struct CliBus {
    listener: Arc<dyn CommitListener>,
    /// The Redis publisher task, which ends once every handle to the bus is dropped and
    /// its queue is sent.
    publisher: Option<(tokio::task::JoinHandle<()>, CancellationToken)>,
}

/// How long the CLI waits for Redis to take what it published before exiting anyway (the
/// brokers' poll still brings the change).
const CLI_PUBLISH_PATIENCE: Duration = Duration::from_secs(5);

impl CliBus {
    fn start(config: &Config) -> anyhow::Result<Self> {
        let Some(url) = &config.redis_url else {
            return Ok(Self {
                listener: Arc::new(NoListener),
                publisher: None,
            });
        };
        let stop = CancellationToken::new();
        let bus_config = RedisBusConfig {
            url: url.clone(),
            key_prefix: config.redis_key_prefix.clone(),
            stream_max_len: config.redis_stream_max_len,
            local_capacity: 1,
        };
        // Only the publisher runs: the CLI reads nothing from the bus.
        let (bus, [publisher, _subscriber]) =
            RedisBus::start(bus_config, stop.clone()).context("invalid redis URL")?;
        Ok(Self {
            listener: Arc::new(bus),
            publisher: Some((tokio::spawn(publisher), stop)),
        })
    }

    /// Waits until what was published has been handed to Redis (or given up on).
    async fn flush(self) {
        let Self {
            listener,
            publisher,
        } = self;
        drop(listener);
        if let Some((task, stop)) = publisher {
            let abort = task.abort_handle();
            if tokio::time::timeout(CLI_PUBLISH_PATIENCE, task)
                .await
                .is_err()
            {
                tracing::warn!(
                    "redis did not take the change in time; brokers apply it at their next poll"
                );
                stop.cancel();
                abort.abort();
            }
        }
    }
}

async fn run_agent_command(admin: &AgentAdmin, command: AgentCommand) -> anyhow::Result<()> {
    match command {
        AgentCommand::Create(create) => {
            let request = CreateAgentRequest {
                name: create.name,
                config_project: create.config_project,
                grant_projects: create.grant_project,
                grant_groups: create.grant_group,
                allow_internal: create.allow_internal,
            };
            let created = admin
                .create(request)
                .await
                .map_err(|err| fail_naming(err, CREATE_FLAGS))?;
            print_with_token(&created, create.output.json, "created")?;
        }
        AgentCommand::List(output) => {
            let agents = admin.list().await.map_err(fail)?;
            if output.json {
                println!("{}", serde_json::to_string_pretty(&agents)?);
            } else {
                print_table(&agents);
            }
        }
        AgentCommand::Show(named) => {
            let agent = admin.show(&named.name).await.map_err(fail)?;
            print_agent(&agent, named.output.json)?;
        }
        AgentCommand::Grant(flags) => {
            flags.ensure_some("grant")?;
            let agent = admin
                .grant(&flags.name, flags.request())
                .await
                .map_err(|err| fail_naming(err, ACCESS_FLAGS))?;
            print_agent(&agent, flags.output.json)?;
        }
        AgentCommand::Revoke(flags) => {
            flags.ensure_some("revoke")?;
            let agent = admin
                .revoke(&flags.name, flags.request())
                .await
                .map_err(|err| fail_naming(err, ACCESS_FLAGS))?;
            print_agent(&agent, flags.output.json)?;
        }
        AgentCommand::RotateToken(named) => {
            let rotated = admin.rotate_token(&named.name).await.map_err(fail)?;
            print_with_token(&rotated, named.output.json, "has a new token")?;
        }
        AgentCommand::Delete(named) => {
            admin.delete(&named.name).await.map_err(fail)?;
            if named.output.json {
                println!("{}", serde_json::json!({"deleted": named.name}));
            } else {
                println!("agent {} deleted", named.name);
            }
        }
    }
    Ok(())
}

/// A stream heard of within this long counts as connected: three keepalives.
pub fn presence_window(config: &Config) -> std::time::Duration {
    config.keepalive_interval * 3
}

/// Presence from Redis when it is configured, from last-seen times otherwise.
pub fn presence_source(config: &Config) -> anyhow::Result<PresenceSource> {
    let within = presence_window(config);
    Ok(match &config.redis_url {
        Some(url) => PresenceSource::Redis {
            presence: fluxgate_replication::RedisPresence::new(url, &config.redis_key_prefix)
                .context("invalid redis URL")?,
            within,
        },
        None => PresenceSource::LastSeen { within },
    })
}

/// An admin error as the CLI prints it: its message, one sentence (`Error: no agent named
/// "x"`), without the API's error code.
fn fail(err: ApiError) -> anyhow::Error {
    anyhow::anyhow!(err.message)
}

/// The admin API's field names (`config_project: …`) and the flags that set them.
const CREATE_FLAGS: &[(&str, &str)] = &[
    ("config_project", "--config-project"),
    ("project", "--grant-project"),
    ("group", "--grant-group"),
];
const ACCESS_FLAGS: &[(&str, &str)] = &[("project", "--project"), ("group", "--group")];

/// Like [`fail`], with a message that starts with an API field's name (`project: …`)
/// naming the command's flag instead (`--project: …`).
fn fail_naming(err: ApiError, flags: &[(&str, &str)]) -> anyhow::Error {
    for (field, flag) in flags {
        if let Some(rest) = err.message.strip_prefix(&format!("{field}: ")) {
            return anyhow::anyhow!("{flag}: {rest}");
        }
    }
    fail(err)
}

fn print_with_token(agent: &AgentWithToken, json: bool, what: &str) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(agent)?);
        return Ok(());
    }
    println!("agent {} {what}.", agent.agent.name);
    println!();
    println!("token (shown once; only its hash is stored):");
    println!("{}", agent.token);
    println!();
    print_agent(&agent.agent, false)
}

fn print_agent(agent: &AgentView, json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(agent).context("cannot print the agent")?
        );
        return Ok(());
    }
    let list = |items: &[String]| {
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(", ")
        }
    };
    println!("name:            {}", agent.name);
    println!("config project:  {}", agent.config_project);
    println!("granted projects: {}", list(&agent.grants.projects));
    println!("granted groups:  {}", list(&agent.grants.groups));
    println!(
        "internal:        {}",
        if agent.allow_internal {
            "allowed"
        } else {
            "not allowed"
        }
    );
    println!(
        "connected:       {}",
        if agent.connected { "yes" } else { "no" }
    );
    println!(
        "last seen:       {}",
        agent.last_seen_at.as_deref().unwrap_or("never")
    );
    println!("cursor:          {}", agent.cursor);
    println!("created:         {}", agent.created_at);
    print_receiver_health(agent);
    print_subscriptions(agent);
    Ok(())
}

fn print_subscriptions(agent: &AgentView) {
    let Some(report) = &agent.subscriptions else {
        println!(
            "subscriptions:   not reported (the agent has not connected since the broker records them)"
        );
        return;
    };
    let cannot = report
        .subscriptions
        .iter()
        .filter(|s| !s.state.can_match())
        .count();
    println!(
        "subscriptions:   {} ({cannot} cannot match; as of {})",
        report.subscriptions.len(),
        report.reported_at
    );
    for s in &report.subscriptions {
        let refs = if s.ref_pattern.is_empty() {
            "every ref"
        } else {
            s.ref_pattern.as_str()
        };
        println!(
            "  {} ({refs}): {}: {}",
            s.project,
            s.state.as_str(),
            s.reason
        );
    }
}

/// `fluxgate explain`: reads the store (the broker may be running) and prints whether the
/// agent would get the push and why. Returns whether it would.
pub async fn explain(config: &Config, args: &crate::cli::ExplainArgs) -> anyhow::Result<bool> {
    let store = open_store(config, Duration::from_secs(30)).await?;
    let result =
        crate::explain::explain_with(&store, &args.agent, &args.project, args.git_ref.as_deref())
            .await;
    store.close().await;
    let view = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", crate::explain::render(&view));
    }
    Ok(view.would_receive)
}

fn print_receiver_health(agent: &AgentView) {
    let Some(health) = &agent.receiver_health else {
        println!("failing receivers: not reported");
        return;
    };
    if health.failing.is_empty() {
        println!("failing receivers: none (reported {})", health.reported_at);
        return;
    }
    println!(
        "failing receivers: {} (reported {}; their events stay unacked while they are retried)",
        health.failing.len(),
        health.reported_at
    );
    for failing in &health.failing {
        let oldest = failing
            .oldest_unacked_seq
            .map_or_else(|| "-".to_owned(), |seq| seq.to_string());
        println!(
            "  {}: failing since {}, {} attempts, oldest unacked seq {}, last error: {}",
            failing.receiver, failing.failing_since, failing.attempts, oldest, failing.last_error
        );
    }
}

fn print_table(agents: &[AgentView]) {
    if agents.is_empty() {
        println!(
            "no agents; create one with `fluxgate agent create --name NAME --config-project PATH`"
        );
        return;
    }
    println!(
        "{:<24} {:<32} {:<10} {:>10}  LAST SEEN",
        "NAME", "CONFIG PROJECT", "CONNECTED", "CURSOR"
    );
    for agent in agents {
        println!(
            "{:<24} {:<32} {:<10} {:>10}  {}",
            agent.name,
            agent.config_project,
            if agent.connected { "yes" } else { "no" },
            agent.cursor,
            agent.last_seen_at.as_deref().unwrap_or("never")
        );
    }
}

/// GETs `url` (plain `http://host:port/path`) and fails unless the answer is 2xx.
pub async fn healthcheck(url: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("only http:// URLs are supported, not {url:?}"))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .context("no answer within 5s")?
        .with_context(|| format!("cannot reach {authority}"))?;
    let status_line = String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    anyhow::ensure!(status.starts_with('2'), "{url} answered {status_line:?}");
    Ok(())
}

/// A database URL without its password, for messages. A URL that does not parse (the store
/// opened it, so it does) is not shown at all.
fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<unparseable URL>".to_owned();
    };
    if parsed.password().is_none() {
        return url.to_owned();
    }
    match parsed.set_password(Some("***")) {
        Ok(()) => parsed.into(),
        Err(()) => "<unparseable URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://u:secret@db:5432/f"),
            "postgres://u:***@db:5432/f"
        );
        assert_eq!(redact_url("postgres://u@db/f"), "postgres://u@db/f");
        assert_eq!(
            redact_url("sqlite://./x.db?mode=rwc"),
            "sqlite://./x.db?mode=rwc"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss:w%40rd@db/f?sslmode=require"),
            "postgres://u:***@db/f?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://:secret@db/f"),
            "postgres://:***@db/f"
        );
        assert_eq!(redact_url("not a url :secret@"), "<unparseable URL>");
    }
}
