//! The `Store` trait: everything the broker keeps durably.

use async_trait::async_trait;
use fluxgate_core::HookBatch;
use fluxgate_core::{
    AgentId, AgentName, DeliveryRecord, LogEntry, ProjectId, ReceiverHealth, Seq, TokenDigest,
    UnixMillis,
};

use crate::error::StoreError;
use crate::model::{
    AgentRecord, AgentUpdate, AppendResult, CursorUpdate, DeliveryWatermark, LogBounds, NewAgent,
    PushPage, RecentPushes, Snapshot,
};

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Durable state: the log, the catalog, agents and their cursors.
///
/// Contract shared by every implementation (checked by the behavioural suite in
/// `tests/suite.rs`):
/// - seqs are global, gapless and assigned in commit order, also across processes;
/// - a failed call writes nothing;
/// - every change to routing state (catalog or agent) is itself a log entry, committed in
///   the same transaction as the change.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Cheap check that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Cheap check that the database would accept a write now (readiness). Writes nothing.
    async fn check_writable(&self) -> Result<(), StoreError>;

    /// Appends hooks in one transaction (group commit), deduplicating each.
    async fn append(&self, hooks: &[HookBatch]) -> Result<AppendResult, StoreError>;

    /// Up to `limit` entries with seq > `after`, in seq order.
    async fn read_log(&self, after: Seq, limit: u32) -> Result<Vec<LogEntry>, StoreError>;

    /// Up to `limit` pushes with seq in (`after`, `up_to`], in seq order, and how far that
    /// covered the log (`up_to` once fewer than `limit` were found). State changes are
    /// skipped in the database: a stream replaying its backlog has no use for them, and a
    /// fleet of new agents (each one a state change) would otherwise make every new
    /// stream read every agent created after it.
    async fn read_pushes(&self, after: Seq, up_to: Seq, limit: u32)
    -> Result<PushPage, StoreError>;

    async fn log_bounds(&self) -> Result<LogBounds, StoreError>;

    /// Removes entries recorded before `older_than`, and dedup state of the same age.
    /// Returns the new bounds.
    async fn trim(&self, older_than: UnixMillis) -> Result<LogBounds, StoreError>;

    /// The routing state (catalog and agent policies) and the log head it corresponds to,
    /// read consistently.
    async fn snapshot(&self) -> Result<Snapshot, StoreError>;

    /// Creates an agent; its cursor starts at the current head, so it receives every event
    /// from its creation on. Returns the agent and the log entry recording the change.
    async fn create_agent(&self, agent: NewAgent) -> Result<(AgentRecord, LogEntry), StoreError>;

    async fn update_agent(
        &self,
        name: &AgentName,
        update: AgentUpdate,
    ) -> Result<(AgentRecord, LogEntry), StoreError>;

    async fn delete_agent(&self, name: &AgentName) -> Result<LogEntry, StoreError>;

    async fn agent(&self, name: &AgentName) -> Result<Option<AgentRecord>, StoreError>;

    /// The agent whose token has this digest (compared in constant time after lookup).
    async fn agent_by_token(&self, digest: &TokenDigest)
    -> Result<Option<AgentRecord>, StoreError>;

    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError>;

    /// Replaces the agent's subscription status report (its latest subscriptions and
    /// whether each can match). Not a routing change, so not logged. Refuses a report over
    /// the bounds of [`fluxgate_core::SubscriptionReport::validate`] (`Invalid`) and an
    /// unknown agent (`NotFound`).
    async fn save_subscription_status(
        &self,
        agent: AgentId,
        report: &fluxgate_core::SubscriptionReport,
    ) -> Result<(), StoreError>;

    /// Records streams' cursors (each only moves forward) and when each agent was last
    /// seen, then sets each agent's cursor to the lowest of its streams', so that no stream
    /// moves it past an event another stream still holds unacked.
    ///
    /// A closed stream keeps holding its agent's cursor back (the events after it were not
    /// handled by anyone in its place) until a later stream of the agent with the same
    /// subscriptions, opened after it closed and started at or below its cursor, has moved
    /// past it: that stream replayed everything the closed one was owed after it. An open
    /// stream not heard of since `stale_before` (its replica died) counts as closed at its
    /// last report.
    async fn save_cursors(
        &self,
        updates: &[CursorUpdate],
        stale_before: UnixMillis,
    ) -> Result<(), StoreError>;

    /// Replaces the agent's receiver health report. Not a routing change, so not logged.
    /// Refuses a report over the bounds of [`ReceiverHealth::validate`] (`Invalid`) and an
    /// unknown agent (`NotFound`).
    async fn save_receiver_health(
        &self,
        agent: AgentId,
        health: &ReceiverHealth,
    ) -> Result<(), StoreError>;

    /// Keeps delivery records (the first record of a stage for an object wins). Not a
    /// routing change, so not logged. Refuses a record over the bounds of
    /// [`DeliveryRecord::validate`] (`Invalid`), writing none of the batch.
    async fn save_delivery_records(&self, records: &[DeliveryRecord]) -> Result<(), StoreError>;

    /// Every delivery record of the event at `seq`, oldest first.
    async fn delivery_records(&self, seq: Seq) -> Result<Vec<DeliveryRecord>, StoreError>;

    /// The log entry at `seq`, if it is still in the log.
    async fn read_entry(&self, seq: Seq) -> Result<Option<LogEntry>, StoreError>;

    /// Seqs of the newest pushes to `project`, newest first, at most `limit`.
    async fn recent_pushes_of(
        &self,
        project: ProjectId,
        limit: u32,
    ) -> Result<Vec<Seq>, StoreError>;

    /// The newest `limit` pushes (not routing changes), newest first, each with its
    /// delivery records; at most `max_records` records in all, the newest pushes' first.
    /// Two queries, whatever the number of pushes.
    async fn recent_pushes(&self, limit: u32, max_records: u32)
    -> Result<RecentPushes, StoreError>;

    /// The log's head, and the count and newest time of the delivery records of events at
    /// or after `from` (a range read on the records' key).
    async fn delivery_watermark(&self, from: Seq) -> Result<DeliveryWatermark, StoreError>;
}
