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
pub mod metric_names;
pub mod metrics_listener;
pub mod receiver;
pub mod secret;
pub mod session;
pub mod shutdown;
pub mod telemetry;
mod tls_error;
pub mod wire;

use tokio_util::sync::CancellationToken;

pub use config::AgentConfig;

use connection::{Connection, ConnectionError};
use dispatch::Dispatcher;
use receiver::retry::Deliverer;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot build the HTTP client for receivers: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error(transparent)]
    Metrics(#[from] metrics_listener::MetricsError),
}

/// Installs rustls' `ring` crypto provider as the process default, once. Both the
/// receiver HTTP client and TLS to the broker need one.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs the agent until `shutdown` fires: receiver workers, then the broker connection.
///
/// On shutdown the stream is dropped and deliveries still in flight are abandoned. Their
/// events were not acked, so the broker sends them again to the next agent run.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), StartError> {
    install_crypto_provider();
    for warning in &config.warnings {
        tracing::warn!("configuration: {warning}");
    }
    if let Some(address) = config.metrics_listen {
        metrics_listener::start(address, shutdown.child_token()).await?;
    }
    let client = receiver::trigger::http_client(config.request_timeout)?;
    let deliverer = Deliverer::new(client, config.retry);
    let workers = shutdown.child_token();
    let dispatcher = Dispatcher::start(config.receivers.clone(), &deliverer, &workers);
    let connection = Connection::new(&config, dispatcher)?;
    tracing::info!(
        brokers = ?config.brokers,
        receivers = config.receivers.len(),
        version = env!("CARGO_PKG_VERSION"),
        "fluxgate-agent starting"
    );
    connection.run(shutdown.clone()).await;
    workers.cancel();
    tracing::info!("fluxgate-agent stopped");
    Ok(())
}
