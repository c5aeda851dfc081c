//! The HTTP endpoint GitLab calls: `POST /hooks/gitlab`.

mod auth;
mod credentials;
mod handler;
mod refusal_log;
mod response;
mod signature;
mod token;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use fluxgate_store::Appender;

pub use auth::{
    AuthRefusal, Authenticated, DEFAULT_SIGNATURE_TOLERANCE, HookAuth, SignaturePolicy,
};
pub use credentials::CredentialError;
pub use handler::{IDEMPOTENCY_KEY_HEADER, REQUEST_ID_HEADER};
pub use refusal_log::{DEFAULT_REFUSAL_LOG_INTERVAL, RefusalLog, record_refusal};
pub use response::{ErrorAnswer, HookAnswer, HookStatus};
pub use signature::{
    SIGNING_TOKEN_PREFIX, SigningKey, WEBHOOK_ID_HEADER, WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_TIMESTAMP_HEADER,
};
pub use token::{HookSecret, HookSecrets, MIN_HOOK_SECRET_LEN, TOKEN_HEADER};

/// Default limit on a hook's body. GitLab sends at most 25 MB, mostly commit lists; the
/// fields fluxgate uses are a tiny part of that.
pub const DEFAULT_BODY_LIMIT: usize = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct HookState {
    pub appender: Appender,
    /// Who may post hooks: hook secrets, signing tokens and the policy over them.
    pub auth: Arc<HookAuth>,
    pub body_limit: usize,
    /// How long a hook waits for its commit before answering 503.
    pub commit_timeout: Duration,
    /// Rate limit of "hook refused" log lines.
    pub refusal_log: Arc<RefusalLog>,
}

pub fn router(state: HookState) -> Router {
    Router::new()
        .route("/hooks/gitlab", post(handler::receive_hook))
        .with_state(state)
}
