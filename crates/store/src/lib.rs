//! Durable state for fluxgate: the log, the project catalog, agents and their cursors.
//!
//! [`Store`] is the seam; [`SqlStore`] implements it on SQLite (the embedded default) and
//! on PostgreSQL (for several replicas) with the same SQL. [`Appender`] batches concurrent
//! appends into one transaction (group commit) and reports each commit to a
//! [`CommitListener`] (the bus) in seq order. [`Publisher`] is the one way onto the bus:
//! every write that adds log entries goes through it.

mod api;
mod appender;
mod clock;
mod error;
pub mod metric_names;
mod model;
mod publisher;
mod sql;

pub use api::{Backend, Store};
pub use appender::{AppendError, Appender, CommitListener, NoListener};
pub use clock::{Clock, ManualClock};
pub use error::{CorruptValue, ExistingEntity, InvalidRequest, MissingEntity, StoreError};
pub use model::{
    AgentRecord, AgentUpdate, AppendResult, CatalogProject, CursorUpdate, DeliveryWatermark,
    HookOutcome, LogBounds, NewAgent, PushPage, PushWithRecords, RecentPushes, RecordOutcome,
    Snapshot,
};
pub use publisher::Publisher;
pub use sql::private_file::restrict_mode;
pub use sql::{SqlStore, StoreOptions};

#[cfg(feature = "test-util")]
pub mod testing;
