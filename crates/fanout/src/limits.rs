//! What one agent may hold on one replica, so that one client cannot degrade the others.

/// The limits of one agent on this replica.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Events queued per stream before a stream that does not keep up is closed.
    pub queue_capacity: usize,
    pub max_streams_per_agent: usize,
    pub max_subscriptions_per_stream: usize,
    pub max_subscriptions_per_agent: usize,
}

impl Default for HubLimits {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            max_streams_per_agent: 16,
            max_subscriptions_per_stream: 10_000,
            max_subscriptions_per_agent: 20_000,
        }
    }
}

/// A request that would take an agent over one of its [`HubLimits`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "the agent already has {open} streams open on this broker (at most {max}); close one before opening another"
    )]
    Streams { open: usize, max: usize },
    #[error(
        "the stream would hold {wanted} subscriptions (at most {max} per stream); subscribe to fewer projects or raise max_subscriptions_per_stream"
    )]
    StreamSubscriptions { wanted: usize, max: usize },
    #[error(
        "the agent would hold {wanted} subscriptions across its streams (at most {max}); subscribe to fewer projects or raise max_subscriptions_per_agent"
    )]
    AgentSubscriptions { wanted: usize, max: usize },
}
