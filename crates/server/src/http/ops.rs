//! The operations listener: `/metrics` (Prometheus), `/livez`, `/readyz`. Keep it off the
//! public network.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::health::Readiness;

#[derive(Clone)]
struct OpsState {
    readiness: Arc<Readiness>,
    metrics: Option<PrometheusHandle>,
}

pub fn router(readiness: Arc<Readiness>, metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route(
            "/livez",
            get(|| async { Json(serde_json::json!({"alive": true})) }),
        )
        .route("/readyz", get(readyz))
        .fallback(super::not_found)
        .with_state(OpsState { readiness, metrics })
}

async fn render_metrics(State(state): State<OpsState>) -> Response {
    match &state.metrics {
        Some(handle) => {
            handle.run_upkeep();
            (
                [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                handle.render(),
            )
                .into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not enabled in this process\n",
        )
            .into_response(),
    }
}

async fn readyz(State(state): State<OpsState>) -> Response {
    let report = state.readiness.report();
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}
