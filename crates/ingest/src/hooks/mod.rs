//! The HTTP endpoint GitLab calls: `POST /hooks/gitlab`.

mod auth;
mod handler;
mod response;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use fluxgate_store::Appender;

pub use auth::HookSecrets;
pub use handler::IDEMPOTENCY_KEY_HEADER;
pub use response::{ErrorAnswer, HookAnswer};

/// Default limit on a hook's body. GitLab sends at most 25 MB, mostly commit lists; the
/// fields fluxgate uses are a tiny part of that.
pub const DEFAULT_BODY_LIMIT: usize = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct HookState {
    pub appender: Appender,
    pub secrets: Arc<HookSecrets>,
    pub body_limit: usize,
    /// How long a hook waits for its commit before answering 503.
    pub commit_timeout: Duration,
}

pub fn router(state: HookState) -> Router {
    Router::new()
        .route("/hooks/gitlab", post(handler::receive_hook))
        .with_state(state)
}
