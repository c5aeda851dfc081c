//! fluxgate-agent: runs in a cluster, streams push events from the fluxgate broker and
//! triggers Flux Receivers for them.
//!
//! The agent dials the broker's `fluxgate.v1.AgentService/Subscribe` stream
//! ([`connection`], [`session`]), says which projects and refs its receivers want
//! ([`wire`]), and for each event calls the matching Flux Receivers over HTTP
//! ([`dispatch`], [`receiver`]), coalescing bursts per receiver. A receiver that fails is
//! retried until it answers; an event is acked only once every receiver it matches has
//! answered (delivered, coalesced into a later delivered event, or refused for good), so a
//! push is never acked past a receiver that did not get it. Receivers failing for long are
//! logged, counted ([`metric_names`], served by [`metrics_listener`]) and reported to the
//! broker. The agent keeps a resume cursor ([`cursor`]) so a reconnect picks up where it
//! left off. Delivery is at-least-once: after a reconnect, events that were not acked come
//! again.
//!
//! The binary in `main.rs` only parses flags, sets up logging and calls [`run`].

pub mod config;
pub mod connection;
pub mod cursor;
pub mod dispatch;
pub mod event;
pub mod flux_path;
pub mod health_listener;
pub mod kubernetes;
pub mod metric_names;
pub mod readiness;
pub mod receiver;
pub mod secret;
pub mod session;
pub mod shutdown;
pub mod subscription_status;
pub mod telemetry;
mod tls_error;
pub mod wire;
mod wrong_port;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use config::AgentConfig;

use connection::{Connection, ConnectionError, SharedSyncReports};
use dispatch::Dispatcher;
use kubernetes::sync_watch::SyncTriggers;
use readiness::{Readiness, Role};
use receiver::ReceiverSet;
use receiver::retry::Deliverer;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot build the HTTP client for receivers: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error(transparent)]
    HealthListener(#[from] health_listener::HealthListenerError),
    #[error(transparent)]
    Kubernetes(#[from] kubernetes::ClientError),
}

/// Installs rustls' `ring` crypto provider as the process default, once. Both the
/// receiver HTTP client and TLS to the broker need one.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs the agent until `shutdown` fires.
///
/// Static receivers are served from the start. In the Kubernetes mode, the discovery
/// controller adds the receivers it finds, and with leader election only the leader
/// streams and triggers: each term as leader opens its own stream and receiver workers,
/// resuming from the cursor the broker stored, and a lost lease ends them at once.
///
/// On shutdown the stream is dropped and deliveries still in flight are abandoned. Their
/// events were not acked, so the broker sends them again to the next agent run.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), StartError> {
    install_crypto_provider();
    for warning in &config.warnings {
        tracing::warn!("configuration: {warning}");
    }
    let readiness = Arc::new(Readiness::new(config.kubernetes.is_some()));
    if let Some(address) = config.health_listen {
        health_listener::start(address, Arc::clone(&readiness), shutdown.child_token()).await?;
    }
    let client = receiver::trigger::http_client(config.request_timeout)?;
    let mut deliverer = Deliverer::new(client, config.retry);
    let (publish, receivers) = watch::channel::<ReceiverSet>(Arc::new(config.receivers.clone()));
    let (leading_sender, leading) = watch::channel(true);
    // Without the Kubernetes mode the set is complete from the start; with it, the
    // discovery controller says when this replica may act.
    let (acting_sender, acting) = watch::channel(config.kubernetes.is_none());
    // Kept here when no controller takes it, so `acting` never reports closed.
    let mut acting_sender = Some(acting_sender);
    let background = shutdown.child_token();
    let mut sync = None;
    if let Some(settings) = &config.kubernetes {
        let clients = kubernetes::clients(settings).await?;
        deliverer = deliverer.with_kubernetes(clients.proxy, config.request_timeout);
        let client = clients.api;
        if settings.leader.enabled {
            leading_sender.send_replace(false);
            readiness.set_role(Role::Standby);
            let elector = kubernetes::leader::LeaderElector::new(
                client.clone(),
                settings.leader.clone(),
                leading_sender,
            );
            supervise(
                "leader election",
                elector.run(background.clone()),
                &readiness,
                &background,
            );
        }
        if settings.sync_watch.enabled {
            let (triggers, triggered, reports, reported) = kubernetes::sync_watch::channels();
            let watch = kubernetes::sync_watch::SyncWatch::new(
                client.clone(),
                &settings.namespaces,
                settings.sync_watch.deadline,
                triggered,
                reports,
            );
            supervise(
                "sync watch",
                watch.run(background.clone()),
                &readiness,
                &background,
            );
            sync = Some((triggers, Arc::new(tokio::sync::Mutex::new(reported))));
        }
        let controller = kubernetes::controller::Controller::new(
            client,
            settings.clone(),
            config.receivers.clone(),
            publish,
            Arc::clone(&readiness),
            leading,
            acting_sender.take().expect("taken once"),
        );
        supervise(
            "discovery controller",
            controller.run(background.clone()),
            &readiness,
            &background,
        );
    } else {
        // Static receivers only: nothing ever changes the set.
        drop(publish);
    }
    tracing::info!(
        brokers = ?config.brokers,
        receivers = config.receivers.len(),
        kubernetes = config.kubernetes.is_some(),
        version = env!("CARGO_PKG_VERSION"),
        "fluxgate-agent starting"
    );
    serve_while_leading(
        &config, &deliverer, receivers, acting, sync, &readiness, &shutdown,
    )
    .await?;
    background.cancel();
    tracing::info!("fluxgate-agent stopped");
    Ok(())
}

/// Streams and triggers while `acting` (leading, with a complete receiver set), until
/// `shutdown` fires.
async fn serve_while_leading(
    config: &AgentConfig,
    deliverer: &Deliverer,
    receivers: watch::Receiver<ReceiverSet>,
    mut acting: watch::Receiver<bool>,
    sync: Option<(SyncTriggers, SharedSyncReports)>,
    readiness: &Arc<Readiness>,
    shutdown: &CancellationToken,
) -> Result<(), StartError> {
    let elected = config.kubernetes.as_ref().is_some_and(|k| k.leader.enabled);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            became = until(&mut acting, true) => {
                if !became {
                    // The election stopped (its failure is reported by `supervise`).
                    shutdown.cancelled().await;
                    return Ok(());
                }
            }
        }
        if elected {
            readiness.set_role(Role::Leader);
        }
        metrics::gauge!(metric_names::LEADER).set(1.0);
        let term = shutdown.child_token();
        let workers = term.child_token();
        let current: Vec<receiver::Receiver> = receivers.borrow().to_vec();
        let dispatcher = Dispatcher::start(
            current,
            deliverer,
            sync.as_ref().map(|(triggers, _)| triggers.clone()),
            &workers,
        );
        let connection = Connection::new(
            config,
            dispatcher,
            receivers.clone(),
            Arc::clone(readiness),
            sync.as_ref().map(|(_, reports)| Arc::clone(reports)),
        )?;
        let mut lost = acting.clone();
        let ended = term.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = ended.cancelled() => {}
                _ = until(&mut lost, false) => ended.cancel(),
            }
        });
        connection.run(term.clone()).await;
        term.cancel();
        readiness.set_broker_stream(false);
        metrics::gauge!(metric_names::LEADER).set(0.0);
        if shutdown.is_cancelled() {
            return Ok(());
        }
        readiness.set_role(Role::Standby);
        tracing::info!("no longer the leader: stopped streaming and triggering");
    }
}

/// Waits until `flag` is `wanted`; false if it can no longer change.
async fn until(flag: &mut watch::Receiver<bool>, wanted: bool) -> bool {
    flag.wait_for(|value| *value == wanted).await.is_ok()
}

/// Runs an essential background task; if it ever ends before `shutdown`, the agent is no
/// longer ready and says why.
fn supervise(
    name: &'static str,
    task: impl Future<Output = ()> + Send + 'static,
    readiness: &Arc<Readiness>,
    shutdown: &CancellationToken,
) {
    let readiness = Arc::clone(readiness);
    let shutdown = shutdown.clone();
    let handle = tokio::spawn(task);
    tokio::spawn(async move {
        let ended = handle.await;
        if shutdown.is_cancelled() {
            return;
        }
        let why = match ended {
            Ok(()) => "ended".to_owned(),
            Err(error) => format!("failed: {error}"),
        };
        tracing::error!(
            task = name,
            "an essential task {why}; the agent is no longer ready"
        );
        readiness.set_kubernetes_error(Some(format!("the {name} {why}")));
    });
}
