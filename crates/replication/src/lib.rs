//! Replication: how each replica learns the log, and what replicas tell each other.
//!
//! - the [`bus`] carries committed entries to every replica's follower ([`InProcessBus`]
//!   for one process, [`RedisBus`] between replicas);
//! - the [`Follower`] feeds this replica's hub the log in seq order, filling gaps from the
//!   store, so the bus only ever costs latency, never events;
//! - [`presence`] keeps each replica's open streams in Redis, for the admin API and CLI.
//!
//! This is the only crate that talks to Redis.

pub mod bus;
pub mod follower;
pub mod metric_names;
pub mod presence;

pub use bus::{Batch, Bus, InProcessBus, RedisBus, RedisBusConfig};
pub use follower::Follower;
pub use presence::{OpenStream, RedisPresence};
