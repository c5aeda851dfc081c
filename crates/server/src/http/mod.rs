//! The public HTTP listener: GitLab hooks, pipeline notifications, the admin API and the
//! dashboard, with request ids, tracing,
//! timeouts and JSON answers for unknown routes.

pub mod admin_api;
pub mod json;
pub mod ops;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use fluxgate_core::{ApiError, ErrorCode};
use fluxgate_ingest::hooks::{self, HookState};
use fluxgate_ingest::log_field::bounded;
use fluxgate_ingest::notify::{self, NotifyState};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::admin::AgentAdmin;
use crate::dashboard::Dashboard;
use json::ErrorAnswer;

/// No HTTP request may take longer than this (GitLab gives up after 10 s by default).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP listener's routes. The dashboard is on when the admin API is (it needs the
/// admin token); without it `/` says how to turn it on.
pub fn public_router(
    hooks: HookState,
    notify: Option<NotifyState>,
    admin: Option<(Arc<AgentAdmin>, String)>,
    dashboard: Option<Arc<Dashboard>>,
) -> Router {
    let mut router = hooks::router(hooks).merge(match notify {
        Some(state) => notify::router(state),
        None => notify::disabled_router(),
    });
    router = match admin {
        Some((admin, token)) => router.merge(admin_api::router(admin, &token)),
        None => router.route("/api/v1/{*rest}", axum::routing::any(admin_api_off)),
    };
    router = router.merge(match dashboard {
        Some(dashboard) => crate::dashboard::router(dashboard),
        None => crate::dashboard::disabled_router(),
    });
    let request_id = http::HeaderName::from_static("x-request-id");
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            REQUEST_TIMEOUT,
            answer_within,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            ErrorAnswer(ApiError::new(
                ErrorCode::Internal,
                "internal error; see the broker's logs",
            ))
            .into_response()
        }))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Answers the documented JSON 503 when a request takes longer than `timeout` (the work
/// is dropped; a hook's commit is either done or rolled back).
async fn answer_within(
    axum::extract::State(timeout): axum::extract::State<Duration>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_owned();
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(path, ?timeout, "request timed out");
            ErrorAnswer(ApiError::unavailable(format!(
                "the request did not finish within {timeout:?}; retry later"
            )))
            .into_response()
        }
    }
}

/// The span of one request: method and path only (no query, no headers), the path
/// bounded, since both come from the client.
fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %bounded(request.method().as_str()).with_max_chars(16),
        path = %bounded(request.uri().path()),
    )
}

async fn admin_api_off() -> ErrorAnswer {
    ErrorAnswer(ApiError::not_found(
        "the admin API is off; start the broker with --admin-token-file to enable it",
    ))
}

pub(crate) async fn not_found(request: Request) -> ErrorAnswer {
    ErrorAnswer(ApiError::not_found(format!(
        "no route for {} {}",
        request.method(),
        request.uri().path()
    )))
}

async fn method_not_allowed(request: Request) -> Response {
    ErrorAnswer(ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt as _;

    use super::*;

    #[tokio::test]
    async fn a_request_that_takes_too_long_gets_the_json_503() {
        let router = Router::new()
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "late"
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                Duration::from_millis(50),
                answer_within,
            ));
        let response = router
            .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "unavailable", "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("did not finish within 50ms"),
            "{body}"
        );
    }
}
