//! Appending one batch with a deadline: what hooks, pipeline notifications and GitLab's
//! KAS call share. Each caller turns a [`CommitFailure`] into its own answer.

use std::sync::Arc;
use std::time::Duration;

use fluxgate_core::{ErrorCode, HookBatch};
use fluxgate_store::{AppendError, Appender, HookOutcome, StoreError};

/// Why a batch was not (known to be) committed.
#[derive(Debug)]
pub enum CommitFailure {
    /// The store refused or failed the transaction.
    Store(Arc<StoreError>),
    /// The writer stopped: the broker is shutting down.
    Stopped,
    /// No answer within the deadline: the batch may or may not be stored.
    Timeout(Duration),
}

impl CommitFailure {
    /// A fixed label for metrics and log lines.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Store(_) => "commit_failed",
            Self::Stopped => "shutting_down",
            Self::Timeout(_) => "commit_timeout",
        }
    }

    /// The answer for the client. A timeout says the `what` may or may not be stored, then
    /// `resend` (why sending it again is safe).
    pub fn to_api_error(&self, what: &str, resend: &str) -> fluxgate_core::ApiError {
        use fluxgate_core::ApiError;
        match self {
            Self::Store(err) => err.to_api_error(),
            Self::Stopped => ApiError::unavailable("the broker is shutting down; retry"),
            Self::Timeout(timeout) => ApiError::unavailable(format!(
                "the commit did not finish within {:.1}s; {what} may or may not be stored, and \
                 {resend}",
                timeout.as_secs_f64()
            )),
        }
    }
}

/// Appends `batch` through the group-commit writer, waiting at most `timeout`. A store
/// failure that is the broker's own fault (not the request's) is logged as an error,
/// naming `what` was being committed.
pub async fn commit(
    appender: &Appender,
    timeout: Duration,
    batch: HookBatch,
    what: &str,
) -> Result<HookOutcome, CommitFailure> {
    match tokio::time::timeout(timeout, appender.append(batch)).await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(AppendError::Store(err))) => {
            if err.code() == ErrorCode::Internal {
                tracing::error!(error = %err, "cannot commit {what}");
            }
            Err(CommitFailure::Store(err))
        }
        Ok(Err(AppendError::Stopped)) => Err(CommitFailure::Stopped),
        Err(_) => Err(CommitFailure::Timeout(timeout)),
    }
}
