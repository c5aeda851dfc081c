//! The bus carries committed log entries to every replica's follower.
//!
//! Publishing happens right after commit (the bus is the store's [`CommitListener`]), in
//! seq order per replica. The bus is an accelerator, not the source of truth: a follower
//! that misses messages (lag, a Redis outage, another replica's batch arriving late) reads
//! the missing range from the store.

mod local;
mod redis;
mod stream_entry;

use std::sync::Arc;

use fluxgate_core::LogEntry;
use fluxgate_store::CommitListener;
use tokio::sync::broadcast;

pub use local::InProcessBus;
pub use redis::{RedisBus, RedisBusConfig};
pub use stream_entry::DecodeError;

/// Entries committed together, in seq order.
pub type Batch = Arc<Vec<LogEntry>>;

/// A way for committed entries to reach every replica's follower.
pub trait Bus: CommitListener {
    /// A receiver of every batch published from now on (by any replica).
    fn subscribe(&self) -> broadcast::Receiver<Batch>;
}
