//! Durable state for fluxgate: the log, the project catalog, agents and their cursors.
//!
//! [`Store`] is the seam; [`SqlStore`] implements it on SQLite (the embedded default) and
//! on PostgreSQL (for several replicas) with the same SQL. [`Appender`] batches concurrent
//! appends into one transaction (group commit) and reports each commit to a
//! [`CommitListener`] (the bus) in seq order.

mod api;
mod appender;
mod error;
mod model;
mod sql;

pub use api::{Backend, Store};
pub use appender::{AppendError, Appender, CommitListener, NoListener};
pub use error::StoreError;
pub use model::{
    AgentRecord, AgentUpdate, AppendResult, CatalogProject, CursorUpdate, HookOutcome, LogBounds,
    NewAgent, RecordOutcome, Snapshot,
};
pub use sql::private_file::restrict_mode;
pub use sql::{SqlStore, StoreOptions};

#[cfg(feature = "test-util")]
pub mod testing;
