//! Wiring: builds every part of a broker from its configuration, runs it, and stops it in
//! order.
//!
//! ```text
//! HTTP hooks, KAS GitPushEvent ─► ingest ─► Appender (group commit) ─► store
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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fluxgate_fanout::{CloseReason, Hub, HubLimits};
use fluxgate_idtoken::{Verifier, VerifierConfig};
use fluxgate_ingest::hooks::{HookAuth, HookState, RefusalLog};
use fluxgate_ingest::kas::{KasJwtVerifier, KasNotifications, KasSecret};
use fluxgate_ingest::notify::NotifyState;
use fluxgate_replication::{Bus, Follower, InProcessBus, RedisBus, RedisBusConfig, RedisPresence};
use fluxgate_routing::RoutingState;
use fluxgate_store::{Publisher, SqlStore, Store, StoreOptions};
use fluxgate_stream::{
    AgentReports, AgentStreams, CursorSaver, DeliveryRecorder, GitLabFluxStreams, StreamContext,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::AgentAdmin;
use crate::config::Config;
use crate::dashboard::{Dashboard, DashboardOptions};
use crate::health::Readiness;
use crate::stream_runtime::StreamRuntime;
use crate::supervisor::{Supervisor, TaskExit};
use crate::{commands, http, listen, metric_names, retention, secrets, telemetry};

/// Hooks committed per transaction at most.
const MAX_COMMIT_BATCH: usize = 256;
/// Batches the in-process bus buffers for a slow follower before it reads the store.
const BUS_CAPACITY: usize = 4096;
/// Largest message an agent may send.
const MAX_AGENT_MESSAGE: usize = 256 * 1024;
/// How long an agent has to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often readiness checks that the database accepts writes (and how long one check may take).
const READINESS_INTERVAL: Duration = Duration::from_secs(1);

/// Names of the essential tasks the drain waits for, in order.
const AGENT_SERVER: &str = "agent gRPC server";
const HTTP_SERVER: &str = "HTTP server";
const KAS_SERVER: &str = "KAS API server";
const WRITER: &str = "log writer";

/// The listeners, bound before the broker starts (tests bind port 0).
pub struct Listeners {
    pub http: TcpListener,
    pub agent: TcpListener,
    pub metrics: TcpListener,
    /// GitLab KAS's internal API: bound only when `kas_secret_file` is set.
    pub kas: Option<TcpListener>,
}

impl Listeners {
    /// Binds the configured addresses.
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
            kas: match &config.kas_secret_file {
                Some(_) => Some(bind(config.kas_listen).await?),
                None => None,
            },
        })
    }

    /// Binds port 0 on the loopback interface for each listener (tests).
    pub async fn ephemeral() -> std::io::Result<Self> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Ok(Self {
            http: TcpListener::bind(loopback).await?,
            agent: TcpListener::bind(loopback).await?,
            metrics: TcpListener::bind(loopback).await?,
            kas: None,
        })
    }

    /// [`Listeners::ephemeral`] with a KAS listener on port 0 too.
    pub async fn ephemeral_with_kas() -> std::io::Result<Self> {
        let mut listeners = Self::ephemeral().await?;
        listeners.kas = Some(TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?);
        Ok(listeners)
    }

    /// The bound addresses.
    pub fn addresses(&self) -> std::io::Result<Addresses> {
        Ok(Addresses {
            http: self.http.local_addr()?,
            agent: self.agent.local_addr()?,
            metrics: self.metrics.local_addr()?,
            kas: self.kas.as_ref().map(TcpListener::local_addr).transpose()?,
        })
    }
}

/// Connects to the store and migrates it, retrying while the database is unreachable.
pub async fn open_store(config: &Config, patience: Duration) -> anyhow::Result<SqlStore> {
    if config.uses_embedded_database() {
        crate::data_dir::create_private_dir(&config.data_dir)?;
    }
    let options = store_options(config);
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

/// How the broker and the CLI use the store.
pub(crate) fn store_options(config: &Config) -> StoreOptions {
    StoreOptions {
        dedup_window: config.dedup_window,
        max_connections: config.database_max_connections,
        ..StoreOptions::default()
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

/// The addresses a broker listens on (the bound ones: port 0 resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    pub http: SocketAddr,
    pub agent: SocketAddr,
    pub metrics: SocketAddr,
    /// The KAS internal API, when enabled.
    pub kas: Option<SocketAddr>,
}

/// A running broker: its addresses, whether it has started, and its end.
pub struct Handle {
    addresses: Addresses,
    shutdown: CancellationToken,
    started: watch::Receiver<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Handle {
    /// Where it listens.
    pub fn addresses(&self) -> Addresses {
        self.addresses
    }

    /// Waits until start-up is complete (store open, routing state loaded, readiness
    /// checked once, every task and listener running). An error if the broker stopped before that; [`Handle::wait`]
    /// then says why.
    pub async fn ready(&mut self) -> anyhow::Result<()> {
        match self.started.wait_for(|started| *started).await {
            Ok(_) => Ok(()),
            Err(_) => anyhow::bail!("the broker stopped during start-up"),
        }
    }

    /// Asks the broker to stop, as SIGTERM does; [`Handle::wait`] returns once it has
    /// drained.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the broker has stopped: `Ok` after a requested shutdown, an error if
    /// start-up failed or an essential task ended on its own. A panic is resumed.
    pub async fn wait(self) -> anyhow::Result<()> {
        match self.task.await {
            Ok(result) => result,
            Err(err) => Err(propagate_panic(err)),
        }
    }

    /// [`Handle::shutdown`], then [`Handle::wait`].
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown();
        self.wait().await
    }
}

/// Starts a broker on already bound `listeners` and returns at once; it runs until
/// `shutdown` is cancelled (or [`Handle::shutdown`]), then stops in order.
///
/// The process-wide Prometheus recorder is installed here, before any part records (see
/// [`telemetry::prometheus`]): values set while building, such as the log head gauge,
/// would otherwise go to no recorder. Logging is the caller's.
pub fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<Handle> {
    let _ = metrics_handle();
    let addresses = listeners.addresses()?;
    let (started, started_rx) = watch::channel(false);
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        // Build, start, supervise, drain.
        let parts = Parts::build(config).await?;
        let mut running = parts.start(listeners, addresses)?;
        started.send_replace(true);
        let failure = running.supervise(&stop).await;
        running.drain(failure).await
    });
    Ok(Handle {
        addresses,
        shutdown,
        started: started_rx,
        task,
    })
}

/// Tokens that stop the broker's parts, cancelled in this order by the drain.
#[derive(Default)]
struct Stops {
    /// Agent streams and the agent listener.
    streams: CancellationToken,
    /// The HTTP listener (hooks, admin API).
    http: CancellationToken,
    /// Everything else: the follower, the bus, the cursor saver, retention, readiness,
    /// presence, the operations listener, TLS reloading.
    background: CancellationToken,
}

/// A broker built from its configuration, not yet running.
struct Parts {
    config: Config,
    broker_id: String,
    hook_auth: HookAuth,
    admin_token: Option<String>,
    /// `POST /api/v1/notify`'s verifier, when `gitlab_url` and `ci_audience` are set.
    ci_verifier: Option<VerifierConfig>,
    kas: Option<KasSecret>,
    kas_relative_root: Option<fluxgate_core::FullPath>,
    store: Arc<dyn Store>,
    snapshot_summary: SnapshotSummary,
    bus: Arc<dyn Bus>,
    follower: Follower,
    redis: Option<RedisParts>,
    hub: Arc<Hub>,
    /// Checked once already, so a started broker reports a real result.
    readiness: Arc<Readiness>,
    stops: Stops,
}

/// The Redis bus and its two tasks, the publisher and the subscriber.
struct RedisParts {
    bus: Arc<RedisBus>,
    tasks: [BackgroundTask; 2],
}

/// A task built but not yet spawned.
type BackgroundTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What the start-up log line says about the state loaded.
struct SnapshotSummary {
    head: fluxgate_core::Seq,
    floor: fluxgate_core::Seq,
    agents: usize,
    projects: usize,
}

impl Parts {
    /// Checks the credentials, opens the store, builds the bus, the routing state and the
    /// hub.
    async fn build(config: Config) -> anyhow::Result<Self> {
        let hook_auth = secrets::hook_auth(&config)?;
        let admin_token = secrets::admin_token(&config)?;
        let ci_verifier = config.ci_verifier()?;
        let kas = config
            .kas_secret_file
            .as_deref()
            .map(KasSecret::load)
            .transpose()?;
        let kas_relative_root = config.kas_relative_root()?;
        let store: Arc<dyn Store> = Arc::new(open_store(&config, Duration::from_secs(60)).await?);
        let broker_id = broker_id(&config);
        let stops = Stops::default();

        let redis = match &config.redis_url {
            Some(url) => {
                let bus_config = RedisBusConfig {
                    url: url.clone(),
                    key_prefix: config.redis_key_prefix.clone(),
                    stream_max_len: config.redis_stream_max_len,
                    local_capacity: BUS_CAPACITY,
                };
                let (bus, tasks) = RedisBus::start(bus_config, stops.background.clone())
                    .context("invalid redis URL")?;
                Some(RedisParts {
                    bus: Arc::new(bus),
                    tasks,
                })
            }
            None => None,
        };
        let bus: Arc<dyn Bus> = match &redis {
            Some(redis) => redis.bus.clone(),
            None => Arc::new(InProcessBus::new(BUS_CAPACITY)),
        };
        // Subscribed before the snapshot: nothing committed after it is missed.
        let bus_receiver = bus.subscribe();
        let snapshot = store
            .snapshot()
            .await
            .context("cannot load the routing state")?;
        let routing = routing_state(&snapshot);
        let limits = HubLimits {
            queue_capacity: config.agent_queue_capacity,
            max_streams_per_agent: config.max_streams_per_agent,
            max_subscriptions_per_stream: config.max_subscriptions_per_stream,
            max_subscriptions_per_agent: config.max_subscriptions_per_agent,
        };
        let hub = Arc::new(Hub::new(routing, snapshot.bounds.head, limits));
        let readiness = Arc::new(Readiness::default());
        let redis_health = redis.as_ref().map(|redis| {
            let bus = redis.bus.clone();
            move || bus.is_connected()
        });
        readiness
            .check(store.as_ref(), redis_health.as_ref(), READINESS_INTERVAL)
            .await;
        let follower = Follower::new(
            store.clone(),
            hub.clone(),
            bus_receiver,
            config.poll_interval,
        );
        Ok(Self {
            snapshot_summary: SnapshotSummary {
                head: snapshot.bounds.head,
                floor: snapshot.bounds.floor,
                agents: snapshot.agents.len(),
                projects: snapshot.projects.len(),
            },
            config,
            broker_id,
            hook_auth,
            admin_token,
            ci_verifier,
            kas,
            kas_relative_root,
            store,
            bus,
            follower,
            redis,
            hub,
            readiness,
            stops,
        })
    }

    /// Starts the writer, the background tasks and the listeners, each an essential task.
    fn start(self, listeners: Listeners, addresses: Addresses) -> anyhow::Result<Running> {
        let Parts {
            config,
            broker_id,
            hook_auth,
            admin_token,
            ci_verifier,
            kas,
            kas_relative_root,
            store,
            snapshot_summary,
            bus,
            follower,
            redis,
            hub,
            readiness,
            stops,
        } = self;
        let metrics = metrics_handle();
        // Gauges start at what is true now (counters start at zero: see telemetry).
        metrics::gauge!(metric_names::LOG_FLOOR).set(snapshot_summary.floor.get() as f64);
        metrics::gauge!(fluxgate_fanout::metric_names::STREAMS_OPEN).set(0.0);
        if redis.is_some() {
            metrics::gauge!(fluxgate_replication::metric_names::REDIS_CONNECTED).set(0.0);
        }
        let cursors = Arc::new(CursorSaver::with_sign_of_life(
            fluxgate_stream::cursor_saver::sign_of_life(
                commands::presence_window(&config),
                config.keepalive_interval,
                config.cursor_flush_interval,
            ),
        ));
        let (deliveries, delivery_writer) = DeliveryRecorder::new();
        let reports = Arc::new(AgentReports::default());
        let mut tasks = Supervisor::default();
        let log = Publisher::new(store.clone(), bus.clone());

        // The writer, and the bus.
        let (appender, writer) = log.spawn_appender(MAX_COMMIT_BATCH);
        tasks.spawn(WRITER, async move {
            writer.await.map_err(propagate_panic)?;
            Ok(())
        });
        let redis_bus = redis.map(|redis| {
            let [publisher, subscriber] = redis.tasks;
            tasks.spawn_until_stopped("redis bus publisher", publisher);
            tasks.spawn_until_stopped("redis bus subscriber", subscriber);
            redis.bus
        });

        // The background tasks.
        tasks.spawn_until_stopped("follower", follower.run(stops.background.clone()));
        tasks.spawn_until_stopped(
            "cursor saver",
            cursors.clone().run(
                store.clone(),
                config.cursor_flush_interval,
                stops.background.clone(),
            ),
        );
        tasks.spawn_until_stopped(
            "delivery record writer",
            delivery_writer.run(store.clone(), stops.background.clone()),
        );
        tasks.spawn_until_stopped(
            "agent report writer",
            reports.clone().run(store.clone(), stops.background.clone()),
        );
        tasks.spawn_until_stopped(
            "retention",
            retention::run(
                store.clone(),
                config.retention,
                config.retention_check_interval,
                stops.background.clone(),
            ),
        );
        let redis_health = redis_bus.clone().map(|bus| move || bus.is_connected());
        tasks.spawn_until_stopped(
            "readiness check",
            readiness.clone().watch(
                store.clone(),
                redis_health,
                READINESS_INTERVAL,
                stops.background.clone(),
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
                    stops.background.clone(),
                ),
            );
        }

        // The listeners.
        let admin = match admin_token {
            Some(token) => {
                let presence = commands::presence_source(&config)?;
                Some((Arc::new(AgentAdmin::new(log, presence)), token))
            }
            None => None,
        };
        let dashboard = admin.as_ref().map(|(admin, token)| {
            Arc::new(Dashboard::new(DashboardOptions {
                admin: admin.clone(),
                admin_token: token.clone(),
                secure_cookie: config.http_tls_cert_file.is_some(),
                // Without Redis there is one replica: its own streams are every stream.
                local_streams: config
                    .redis_url
                    .is_none()
                    .then(|| (hub.clone(), broker_id.clone())),
                shutdown: stops.http.clone(),
            }))
        });
        let refusal_log = Arc::new(RefusalLog::new(config.hook_refusal_log_interval));
        let kas_service = kas.map(|secret| {
            KasNotifications::new(
                appender.clone(),
                KasJwtVerifier::new(secret),
                config.commit_timeout,
                refusal_log.clone(),
            )
        });
        let notify = match ci_verifier {
            Some(verifier_config) => {
                tracing::info!(
                    gitlab_url = %verifier_config.issuer,
                    audience = %verifier_config.audience,
                    "pipeline notifications on (POST /api/v1/notify); loading GitLab's ID token keys"
                );
                Some(NotifyState {
                    appender: appender.clone(),
                    verifier: Verifier::start(verifier_config)?,
                    commit_timeout: config.commit_timeout,
                    refusal_log: refusal_log.clone(),
                })
            }
            None => None,
        };
        let hooks = HookState {
            appender,
            auth: Arc::new(hook_auth),
            body_limit: config.hook_body_limit,
            commit_timeout: config.commit_timeout,
            refusal_log,
        };
        let plan = listen::Plan::from_config(&config, stops.background.clone())?;
        let kas_server = match (kas_service, listeners.kas) {
            (Some(service), Some(listener)) => {
                tasks.spawn_until_stopped(
                    KAS_SERVER,
                    listen::serve(
                        listener,
                        tonic::service::Routes::new(service.into_server()).prepare(),
                        plan.kas,
                        stops.http.clone(),
                    ),
                );
                tracing::info!(
                    kas = %addresses.kas.map_or_else(String::new, |a| a.to_string()),
                    "KAS internal API on (GitPushEvent from GitLab Rails: point gitlab_kas.internal_url here)"
                );
                true
            }
            (Some(_), None) => {
                anyhow::bail!("kas_secret_file is set but no KAS listener was bound")
            }
            (None, _) => {
                tracing::info!(
                    "KAS internal API off (set kas_secret_file to take GitLab Rails' GitPushEvent calls)"
                );
                false
            }
        };
        tasks.spawn_until_stopped(
            HTTP_SERVER,
            listen::serve(
                listeners.http,
                http::public_router(hooks, notify, admin, dashboard),
                plan.http,
                stops.http.clone(),
            ),
        );
        let context = Arc::new(StreamContext {
            hub: hub.clone(),
            store: store.clone(),
            cursors: cursors.clone(),
            broker_id: broker_id.clone(),
            keepalive: config.keepalive_interval,
            max_unacked: config.agent_max_unacked,
            deliveries,
            reports,
            shutdown: stops.streams.clone(),
        });
        let flux_service = GitLabFluxStreams::new(context.clone(), kas_relative_root).into_server();
        let agent_service = AgentStreams::new(context, HELLO_TIMEOUT)
            .into_server()
            .max_decoding_message_size(MAX_AGENT_MESSAGE);
        // Agent streams run on a runtime of their own (`stream_runtime`): a fan-out to
        // thousands of streams does not hold up the answers to hooks.
        let stream_runtime =
            StreamRuntime::start().context("cannot start the agent streams' runtime")?;
        let agent_listener = listeners
            .agent
            .into_std()
            .context("cannot move the agent listener to the streams' runtime")?;
        let agent_routes = tonic::service::Routes::new(agent_service)
            .add_service(flux_service)
            .prepare();
        let stop_streams = stops.streams.clone();
        tasks.spawn(
            AGENT_SERVER,
            stream_runtime.run(async move {
                let listener = tokio::net::TcpListener::from_std(agent_listener)
                    .context("cannot listen for agents on the streams' runtime")?;
                listen::serve(listener, agent_routes, plan.agent, stop_streams).await;
                Ok(())
            }),
        );
        tasks.spawn_until_stopped(
            "operations server",
            listen::serve(
                listeners.metrics,
                http::ops::router(readiness.clone(), metrics),
                plan.metrics,
                stops.background.clone(),
            ),
        );

        tracing::info!(
            broker_id = %broker_id,
            http = %addresses.http,
            agent = %addresses.agent,
            metrics = %addresses.metrics,
            kas = %addresses.kas.filter(|_| kas_server).map_or_else(|| "off".to_owned(), |a| a.to_string()),
            database = %store_label(&config),
            head = %snapshot_summary.head,
            agents = snapshot_summary.agents,
            projects = snapshot_summary.projects,
            "fluxgate is ready"
        );
        Ok(Running {
            _stream_runtime: stream_runtime,
            kas_server,
            tasks,
            hub,
            readiness,
            cursors,
            store,
            stops,
            grace: config.shutdown_grace,
        })
    }
}

/// A started broker: its essential tasks and what the drain needs.
struct Running {
    /// Where agent streams run; shut down when the broker is dropped.
    _stream_runtime: StreamRuntime,
    /// Whether the KAS listener runs (the drain waits for it before the writer).
    kas_server: bool,
    tasks: Supervisor,
    hub: Arc<Hub>,
    readiness: Arc<Readiness>,
    cursors: Arc<CursorSaver>,
    store: Arc<dyn Store>,
    stops: Stops,
    grace: Duration,
}

impl Running {
    /// Runs until asked to stop, or until an essential task ends on its own (returned).
    async fn supervise(&mut self, shutdown: &CancellationToken) -> Option<TaskExit> {
        let failure = tokio::select! {
            () = shutdown.cancelled() => None,
            exit = self.tasks.next_exit() => exit,
        };
        match &failure {
            None => tracing::info!("shutting down: not ready, closing agent streams"),
            Some(exit) => {
                tracing::error!(
                    task = exit.name,
                    reason = %exit,
                    "essential task ended; not ready, draining, then exiting so that it is restarted"
                );
                self.readiness.fail(exit.to_string());
                metrics::counter!(metric_names::TASK_FAILURES, "task" => exit.name).increment(1);
            }
        }
        failure
    }

    /// Stops in order: not ready; agent streams closed and the agent listener drained;
    /// the HTTP listener drained; the writer drained; the rest stopped; cursors saved.
    /// An error if `failure` ended the broker.
    async fn drain(mut self, failure: Option<TaskExit>) -> anyhow::Result<()> {
        self.readiness.begin_shutdown();
        self.stops.streams.cancel();
        self.hub.close_all(CloseReason::Shutdown).await;
        let grace = self.grace;
        let tasks = &mut self.tasks;
        let stop_http = &self.stops.http;
        let kas_server = self.kas_server;
        let stopped = tokio::time::timeout(grace, async {
            tasks.wait_for(AGENT_SERVER).await;
            stop_http.cancel();
            tasks.wait_for(HTTP_SERVER).await;
            if kas_server {
                tasks.wait_for(KAS_SERVER).await;
            }
            // The HTTP and KAS servers held the last appenders; the writer ends once its
            // queue is empty.
            tasks.wait_for(WRITER).await;
        })
        .await;
        if stopped.is_err() {
            // An agent whose network went silent holds its connection open: what did not
            // drain is dropped (the agent server's connections go with the streams'
            // runtime when the broker is dropped).
            tracing::warn!(
                ?grace,
                "shutdown grace period elapsed; dropping connections that did not drain"
            );
            self.stops.http.cancel();
            self.tasks.abort(AGENT_SERVER);
        }
        self.stops.background.cancel();
        self.tasks.wait_all().await;
        self.cursors.flush(self.store.as_ref()).await;
        match failure {
            None => {
                tracing::info!("fluxgate stopped");
                Ok(())
            }
            Some(exit) => Err(anyhow::anyhow!("{exit}")),
        }
    }
}

/// The Prometheus handle `/metrics` renders; without one (another recorder is installed
/// in this process) `/metrics` says metrics are off.
fn metrics_handle() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    telemetry::prometheus()
        .inspect_err(|err| tracing::warn!(error = %err, "metrics are off"))
        .ok()
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

/// The routing state a store snapshot describes (the broker's start, `trace`, `explain`).
pub(crate) fn routing_state(snapshot: &fluxgate_store::Snapshot) -> RoutingState {
    RoutingState::new(
        snapshot
            .projects
            .iter()
            .map(|p| (p.id, p.path.clone(), p.visibility)),
        snapshot.aliases.iter().cloned(),
        snapshot.agents.iter().cloned(),
    )
}
