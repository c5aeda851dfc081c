//! Fan-out: which of this replica's agent streams gets which event.
//!
//! The [`Hub`] holds the routing state (the catalog mirror and the agents' policies) and the
//! open streams with their subscriptions. It is fed the log in seq order (by the follower
//! of `fluxgate-replication`) and queues each push for the streams allowed to see it; a
//! stream that does not keep up, whose agent was deleted or whose token was rotated is
//! closed with a [`CloseReason`]. It knows nothing of gRPC or Redis: the transport
//! (`fluxgate-stream`) turns a [`CloseReason`] into the status an agent sees.

pub mod close;
pub mod hub;
pub mod limits;
pub mod metric_names;

pub use close::{CloseReason, CloseSignal};
pub use hub::{AckClock, Delivery, DispatchedEntry, Hub, RegisterError, Registration, StreamInfo};
pub use limits::{HubLimits, LimitError};
