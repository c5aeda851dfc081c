//! Why and how the hub closes a stream from outside its task.

use parking_lot::Mutex;

use tokio_util::sync::CancellationToken;

/// Why the hub closed a stream. The transport maps each to what the agent is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The stream's queue was full: the agent did not keep up (it resumes from its cursor).
    Lagged,
    /// The agent was deleted.
    AgentDeleted,
    /// The agent's token was rotated; the stream was opened with the old one.
    TokenRotated,
    /// The broker is shutting down.
    Shutdown,
}

impl CloseReason {
    /// What the agent is told, as one sentence that says what to do.
    pub fn message(self) -> &'static str {
        match self {
            CloseReason::Lagged => {
                "the agent did not keep up with its events; reconnect to resume from the cursor"
            }
            CloseReason::AgentDeleted => "the agent was deleted",
            CloseReason::TokenRotated => "the agent's token was rotated; use the new token",
            CloseReason::Shutdown => "the broker is shutting down; reconnect to another replica",
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// Closes one stream from outside its task, with a reason.
#[derive(Debug, Default)]
pub struct CloseSignal {
    token: CancellationToken,
    reason: Mutex<Option<CloseReason>>,
}

impl CloseSignal {
    /// Asks the stream to close; the first reason wins.
    pub fn close(&self, reason: CloseReason) {
        let mut current = self.reason.lock();
        if current.is_none() {
            *current = Some(reason);
        }
        self.token.cancel();
    }

    /// Resolves once the stream was asked to close.
    pub async fn closed(&self) {
        self.token.cancelled().await;
    }

    /// Why the stream was asked to close, if it was.
    pub fn reason(&self) -> Option<CloseReason> {
        *self.reason.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_wins() {
        let signal = CloseSignal::default();
        assert_eq!(signal.reason(), None);
        signal.close(CloseReason::Lagged);
        signal.close(CloseReason::Shutdown);
        assert_eq!(signal.reason(), Some(CloseReason::Lagged));
    }
}
