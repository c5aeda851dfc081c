//! The agent's small HTTP listener on `health_listen`: `/livez`, `/readyz` and `/metrics`.
//!
//! - `/livez`: 200 while the process serves requests (a kubelet restarts it otherwise).
//! - `/readyz`: 200 when the agent is doing its job, else 503; the JSON body says why
//!   ([`crate::readiness`]).
//! - `/metrics`: Prometheus text format.
//!
//! The metrics recorder is process-wide, so this can be started once per process.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::readiness::Readiness;

/// Why the listener cannot start.
#[derive(Debug, thiserror::Error)]
pub enum HealthListenerError {
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(#[from] metrics_exporter_prometheus::BuildError),
    #[error("health_listen {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone)]
struct Shared {
    metrics: PrometheusHandle,
    readiness: Arc<Readiness>,
}

/// Installs the recorder, binds `address` and serves until `shutdown` fires. Returns the
/// bound address (useful with port 0).
pub async fn start(
    address: SocketAddr,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) -> Result<SocketAddr, HealthListenerError> {
    let metrics = PrometheusBuilder::new().install_recorder()?;
    crate::metric_names::describe();
    // Zero until a receiver fails: listed from the start, so that an alert on it can tell
    // "none failing" from "not exported" (deploy/monitoring/alerts.yaml).
    metrics::gauge!(crate::metric_names::RECEIVERS_FAILING).set(0.0);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| HealthListenerError::Bind { address, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| HealthListenerError::Bind { address, source })?;
    let app = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render))
        .with_state(Shared { metrics, readiness });
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the health listener stopped");
        }
    });
    tracing::info!(address = %bound, "serving /livez, /readyz and /metrics");
    Ok(bound)
}

async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    let report = shared.readiness.report();
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}

async fn render(State(shared): State<Shared>) -> String {
    shared.metrics.render()
}
