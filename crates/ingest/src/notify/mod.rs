//! `POST /api/v1/notify`: a pipeline says "the artifact is ready", authenticated by its
//! GitLab CI ID token.
//!
//! - Credential: `Authorization: Bearer <ID token>`, verified by `fluxgate-idtoken`
//!   (RS256 against the configured GitLab's keys, `iss`, `aud`, `exp`/`nbf`, `jti`).
//! - The project, ref and sha come **only** from the token's claims: a pipeline can
//!   announce nothing but its own project. A body that names a project, ref or sha
//!   (`project`, `project_id`, `project_path`, `ref`, `sha`) is refused with 401, whatever
//!   it names; other unknown fields get 400.
//! - Optional body (JSON, at most [`NOTIFY_BODY_LIMIT`] bytes):
//!   `{"artifact": "oci://…", "tag": "…", "digest": "sha256:…"}`, each validated by the
//!   core `Artifact` rules.
//! - The notification becomes one `PushEvent` of kind `Artifact`, appended through the
//!   same `Appender` as hooks with the idempotency key `ci-jti:<jti>`: a replayed token is
//!   a duplicate (200 with the original seq, `"status": "duplicate"`). The answer comes
//!   after the commit.
//! - Answers: 200 `{"status", "seq", "project", "ref"}`; 401 `{"code":
//!   "unauthenticated", "message"}` naming the reason for any token failure; 503 while
//!   GitLab's keys are not loaded (or the commit does not finish in time); 400, 413, 415
//!   for the body. With no `gitlab_url`/`ci_audience` configured, [`disabled_router`]
//!   answers 404 saying how to enable it.
//!
//! Each request runs in a `notify` span (request id, then `jti`, project and seq), and is
//! counted in `fluxgate_notifications_total{outcome}`; refusals also in
//! `fluxgate_notify_refusals_total{reason}`, and logged at most once per source and reason
//! per interval. The token is never logged.

mod body;
mod handler;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use fluxgate_core::ApiError;
use fluxgate_idtoken::Verifier;
use fluxgate_store::Appender;

pub use body::{NotifyBody, PROJECT_FIELDS};
pub use handler::NotifyAnswer;

use crate::hooks::{ErrorAnswer, RefusalLog};

/// The endpoint's path.
pub const NOTIFY_PATH: &str = "/api/v1/notify";
/// Largest body accepted: three short fields.
pub const NOTIFY_BODY_LIMIT: usize = 16 * 1024;
/// The idempotency key of a notification: its token's `jti` under this prefix.
pub const JTI_KEY_PREFIX: &str = "ci-jti:";

/// What the endpoint needs.
#[derive(Clone)]
pub struct NotifyState {
    pub appender: Appender,
    pub verifier: Verifier,
    /// How long a notification waits for its commit before answering 503.
    pub commit_timeout: Duration,
    /// Rate limit of "notification refused" log lines.
    pub refusal_log: Arc<RefusalLog>,
}

/// The endpoint, on.
pub fn router(state: NotifyState) -> Router {
    Router::new()
        .route(NOTIFY_PATH, post(handler::receive))
        .with_state(state)
}

/// The endpoint, off: 404 with how to turn it on.
pub fn disabled_router() -> Router {
    Router::new().route(NOTIFY_PATH, axum::routing::any(disabled))
}

async fn disabled() -> ErrorAnswer {
    ErrorAnswer(ApiError::not_found(
        "pipeline notifications are off; start the broker with --gitlab-url and --ci-audience \
         to enable them (docs/pipeline-notify.md)",
    ))
}
