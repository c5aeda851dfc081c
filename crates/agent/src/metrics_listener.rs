//! `GET /metrics` in the Prometheus text format, on `metrics_listen` when it is set.
//!
//! The recorder is process-wide, so this can be started once per process.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// Why the metrics listener cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(#[from] metrics_exporter_prometheus::BuildError),
    #[error("metrics_listen {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Installs the recorder, binds `address` and serves `/metrics` until `shutdown` fires.
/// Returns the bound address (useful with port 0).
pub async fn start(
    address: SocketAddr,
    shutdown: CancellationToken,
) -> Result<SocketAddr, MetricsError> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    crate::metric_names::describe();
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| MetricsError::Bind { address, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| MetricsError::Bind { address, source })?;
    let app = Router::new().route("/metrics", get(move || render(handle.clone())));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the metrics listener stopped");
        }
    });
    tracing::info!(address = %bound, "serving metrics on /metrics");
    Ok(bound)
}

async fn render(handle: PrometheusHandle) -> String {
    handle.render()
}
