//! Wiring: builds every part of a broker from its configuration, runs it, and stops it in
//! order.
//!
//! ```text
//! HTTP hooks ─► ingest ─► Appender (group commit) ─► store
//!                              └─► bus ─► Follower ─► Hub ─► agent streams (gRPC)
//! ```
//!
//! Start-up has one shape: build (store, bus, routing state, hub, writer), start (background
//! tasks and listeners, each an essential task under the [`Supervisor`]), supervise (until a
//! signal, or until an essential task ends on its own), drain.
//!
//! Shutdown order: report not ready; close agent streams with UNAVAILABLE (agents move to
//! another replica) and stop accepting new ones; finish the hooks in flight and stop the
//! HTTP listener; let the writer drain; save cursors; close the database.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fluxgate_fanout::{CloseReason, Hub, HubLimits};
use fluxgate_ingest::hooks::{HookState, RefusalLog};
use fluxgate_replication::{Bus, Follower, InProcessBus, RedisBus, RedisBusConfig, RedisPresence};
use fluxgate_routing::RoutingState;
use fluxgate_store::{Appender, CommitListener, SqlStore, Store, StoreOptions};
use fluxgate_stream::{AgentStreams, CursorSaver, StreamContext};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::AgentAdmin;
use crate::config::Config;
use crate::health::Readiness;
use crate::supervisor::Supervisor;
use crate::{commands, http, listen, retention, secrets};

/// Hooks committed per transaction at most.
const MAX_COMMIT_BATCH: usize = 256;
/// Batches the in-process bus buffers for a slow follower before it reads the store.
const BUS_CAPACITY: usize = 4096;
/// Largest message an agent may send.
const MAX_AGENT_MESSAGE: usize = 256 * 1024;
/// How long an agent has to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Names of the essential tasks the drain waits for, in order.
const AGENT_SERVER: &str = "agent gRPC server";
const HTTP_SERVER: &str = "HTTP server";
const WRITER: &str = "log writer";

/// The listeners, bound before the broker starts (tests bind port 0).
pub struct Listeners {
    pub http: TcpListener,
    pub agent: TcpListener,
    pub metrics: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let bind = |addr| async move {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))
        };
        Ok(Self {
            http: bind(config.http_listen).await?,
            agent: bind(config.agent_listen).await?,
            metrics: bind(config.metrics_listen).await?,
        })
    }
}

/// Connects to the store and migrates it, retrying while the database is unreachable.
pub async fn open_store(config: &Config, patience: Duration) -> anyhow::Result<SqlStore> {
    if config.uses_embedded_database() {
        crate::data_dir::create_private_dir(&config.data_dir)?;
    }
    let options = StoreOptions {
        dedup_window: config.dedup_window,
        max_connections: config.database_max_connections,
        ..StoreOptions::default()
    };
    let url = config.database_url();
    let deadline = tokio::time::Instant::now() + patience;
    let mut wait = Duration::from_millis(200);
    loop {
        let attempt = async {
            let store = SqlStore::connect(&url, options.clone()).await?;
            store.migrate().await?;
            Ok::<_, fluxgate_store::StoreError>(store)
        };
        match attempt.await {
            Ok(store) => return Ok(store),
            Err(err)
                if err.code() == fluxgate_core::ErrorCode::Unavailable
                    && tokio::time::Instant::now() < deadline =>
            {
                tracing::warn!(error = %err, retry_in = ?wait, "database not reachable yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(err).context("cannot open the database"),
        }
    }
}

fn broker_id(config: &Config) -> String {
    config.broker_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "fluxgate".to_owned());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}-{}", &suffix[..8])
    })
}

/// Runs a broker until `shutdown` is cancelled, then stops it in order. Returns an error
/// if an essential task ended on its own (after draining, so the process can exit
/// non-zero and be restarted).
pub async fn run(
    config: Config,
    listeners: Listeners,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addresses = (
        listeners.http.local_addr()?,
        listeners.agent.local_addr()?,
        listeners.metrics.local_addr()?,
    );
    let hook_auth = secrets::hook_auth(&config)?;
    let admin_token = secrets::admin_token(&config)?;
    let store: Arc<dyn Store> = Arc::new(open_store(&config, Duration::from_secs(60)).await?);
    let broker_id = broker_id(&config);

    let readiness = Arc::new(Readiness::default());
    let cursors = Arc::new(CursorSaver::default());
    let stop_streams = CancellationToken::new();
    let stop_http = CancellationToken::new();
    let stop_background = CancellationToken::new();
    let mut tasks = Supervisor::default();

    // Build: the bus, the routing state and the hub, the writer.
    let redis_bus = match &config.redis_url {
        Some(url) => {
            let bus_config = RedisBusConfig {
                url: url.clone(),
                key_prefix: config.redis_key_prefix.clone(),
                stream_max_len: config.redis_stream_max_len,
                local_capacity: BUS_CAPACITY,
            };
            let (bus, bus_tasks) = RedisBus::start(bus_config, stop_background.clone())
                .context("invalid redis URL")?;
            let [publisher, subscriber] = bus_tasks;
            tasks.spawn_until_stopped("redis bus publisher", publisher);
            tasks.spawn_until_stopped("redis bus subscriber", subscriber);
            Some(Arc::new(bus))
        }
        None => None,
    };
    let bus: Arc<dyn Bus> = match &redis_bus {
        Some(redis) => redis.clone(),
        None => Arc::new(InProcessBus::new(BUS_CAPACITY)),
    };
    let bus_receiver = bus.subscribe();
    let snapshot = store
        .snapshot()
        .await
        .context("cannot load the routing state")?;
    let routing = RoutingState::new(
        snapshot
            .projects
            .iter()
            .map(|p| (p.id, p.path.clone(), p.visibility)),
        snapshot.aliases.iter().cloned(),
        snapshot.agents.iter().cloned(),
    );
    let limits = HubLimits {
        queue_capacity: config.agent_queue_capacity,
        max_streams_per_agent: config.max_streams_per_agent,
        max_subscriptions_per_stream: config.max_subscriptions_per_stream,
        max_subscriptions_per_agent: config.max_subscriptions_per_agent,
    };
    let hub = Arc::new(Hub::new(routing, snapshot.bounds.head, limits));
    let listener: Arc<dyn CommitListener> = bus.clone();
    let (appender, writer) = Appender::spawn(store.clone(), listener.clone(), MAX_COMMIT_BATCH);
    tasks.spawn(WRITER, async move {
        writer.await.map_err(propagate_panic)?;
        Ok(())
    });

    // Start the background tasks.
    tasks.spawn_until_stopped(
        "follower",
        Follower::new(
            store.clone(),
            hub.clone(),
            bus_receiver,
            config.poll_interval,
        )
        .run(stop_background.clone()),
    );
    tasks.spawn_until_stopped(
        "cursor saver",
        cursors.clone().run(
            store.clone(),
            config.cursor_flush_interval,
            stop_background.clone(),
        ),
    );
    tasks.spawn_until_stopped(
        "retention",
        retention::run(
            store.clone(),
            config.retention,
            config.retention_check_interval,
            stop_background.clone(),
        ),
    );
    let redis_health = redis_bus.clone().map(|bus| move || bus.is_connected());
    tasks.spawn_until_stopped(
        "readiness check",
        readiness.clone().watch(
            store.clone(),
            redis_health,
            Duration::from_secs(1),
            stop_background.clone(),
        ),
    );
    if let Some(url) = &config.redis_url {
        let presence =
            RedisPresence::new(url, &config.redis_key_prefix).context("invalid redis URL")?;
        tasks.spawn_until_stopped(
            "presence publisher",
            presence.publish(
                hub.clone(),
                broker_id.clone(),
                config.presence_refresh,
                stop_background.clone(),
            ),
        );
    }

    // Start the listeners.
    let admin = match admin_token {
        Some(token) => {
            let presence = commands::presence_source(&config)?;
            let admin = AgentAdmin::new(store.clone(), listener.clone(), presence);
            Some((Arc::new(admin), token))
        }
        None => None,
    };
    let hooks = HookState {
        appender,
        auth: Arc::new(hook_auth),
        body_limit: config.hook_body_limit,
        commit_timeout: config.commit_timeout,
        refusal_log: Arc::new(RefusalLog::new(config.hook_refusal_log_interval)),
    };
    let public = http::public_router(hooks, admin);
    let plan = listen::Plan::from_config(&config, stop_background.clone())?;
    tasks.spawn_until_stopped(
        HTTP_SERVER,
        listen::serve(listeners.http, public, plan.http, stop_http.clone()),
    );

    let context = Arc::new(StreamContext {
        hub: hub.clone(),
        store: store.clone(),
        cursors: cursors.clone(),
        broker_id: broker_id.clone(),
        keepalive: config.keepalive_interval,
        max_unacked: config.agent_max_unacked,
        shutdown: stop_streams.clone(),
    });
    let agent_service = AgentStreams::new(context, HELLO_TIMEOUT)
        .into_server()
        .max_decoding_message_size(MAX_AGENT_MESSAGE);
    tasks.spawn_until_stopped(
        AGENT_SERVER,
        listen::serve(
            listeners.agent,
            tonic::service::Routes::new(agent_service).prepare(),
            plan.agent,
            stop_streams.clone(),
        ),
    );
    tasks.spawn_until_stopped(
        "operations server",
        listen::serve(
            listeners.metrics,
            http::ops::router(readiness.clone(), metrics),
            plan.metrics,
            stop_background.clone(),
        ),
    );

    tracing::info!(
        broker_id = %broker_id,
        http = %addresses.0,
        agent = %addresses.1,
        metrics = %addresses.2,
        database = %store_label(&config),
        head = %snapshot.bounds.head,
        agents = snapshot.agents.len(),
        projects = snapshot.projects.len(),
        "fluxgate is ready"
    );

    // Supervise: run until asked to stop, or until an essential task ends on its own.
    let failure = tokio::select! {
        () = shutdown.cancelled() => None,
        exit = tasks.next_exit() => exit,
    };
    match &failure {
        None => tracing::info!("shutting down: not ready, closing agent streams"),
        Some(exit) => {
            tracing::error!(
                task = exit.name,
                reason = %exit,
                "essential task ended; not ready, draining, then exiting so that it is restarted"
            );
            readiness.fail(exit.to_string());
            metrics::counter!("fluxgate_task_failures_total", "task" => exit.name).increment(1);
        }
    }

    // Drain, in order.
    readiness.begin_shutdown();
    stop_streams.cancel();
    hub.close_all(CloseReason::Shutdown).await;
    let grace = config.shutdown_grace;
    let stopped = tokio::time::timeout(grace, async {
        tasks.wait_for(AGENT_SERVER).await;
        stop_http.cancel();
        tasks.wait_for(HTTP_SERVER).await;
        // The HTTP server held the last appender; the writer ends once its queue is empty.
        tasks.wait_for(WRITER).await;
    })
    .await;
    if stopped.is_err() {
        tracing::warn!(?grace, "shutdown grace period elapsed; stopping anyway");
    }
    stop_background.cancel();
    tasks.wait_all().await;
    cursors.flush(store.as_ref()).await;
    match failure {
        None => {
            tracing::info!("fluxgate stopped");
            Ok(())
        }
        Some(exit) => Err(anyhow::anyhow!("{exit}")),
    }
}

/// Turns a task's panic back into a panic of the supervised task, so it is reported as one.
fn propagate_panic(err: tokio::task::JoinError) -> anyhow::Error {
    match err.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        Err(err) => anyhow::Error::from(err),
    }
}

fn store_label(config: &Config) -> String {
    if config.uses_embedded_database() {
        format!("sqlite in {}", config.data_dir.display())
    } else {
        "external database".to_owned()
    }
}
