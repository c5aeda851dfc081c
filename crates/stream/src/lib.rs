//! Agent streams: how committed events reach the agents allowed to see them.
//!
//! - [`bus`] carries committed entries between replicas ([`InProcessBus`] for one process);
//! - [`Follower`] feeds this replica's [`Hub`] the log in seq order, filling gaps from the
//!   store;
//! - [`Hub`] holds the routing state and the open streams, and queues each event for the
//!   streams that may see it;
//! - [`session`] runs one stream: resume, backlog, live events, acks, keepalives;
//! - [`AgentStreams`] is the `fluxgate.v1.AgentService` gRPC service in front of it all.

pub mod bus;
pub mod convert;
pub mod cursor_saver;
pub mod follower;
pub mod hub;
pub mod metric_names;
pub mod presence;
pub mod service;
pub mod session;

pub use bus::{Batch, Bus, InProcessBus, RedisBus, RedisBusConfig};
pub use cursor_saver::CursorSaver;
pub use follower::Follower;
pub use hub::{Delivery, Hub, HubLimits, LimitError, SessionInfo};
pub use presence::{Connection, RedisPresence};
pub use service::AgentStreams;
pub use session::SessionContext;
