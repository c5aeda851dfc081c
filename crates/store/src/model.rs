//! What goes into the store and what comes out of it.

use fluxgate_core::{
    AgentName, AgentPolicy, DeliveryRecord, FullPath, Grant, LogEntry, ProjectId, ReceiverHealth,
    Seq, TokenDigest, UnixMillis, Visibility,
};

/// Where one record of a hook ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordOutcome {
    /// The record's seq, or the original's seq for a duplicate.
    pub seq: Seq,
    pub duplicate: bool,
}

/// Where every record of one hook ended up, in the hook's order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HookOutcome {
    pub records: Vec<RecordOutcome>,
}

impl HookOutcome {
    /// True if every record was a duplicate (or there were none).
    pub fn all_duplicates(&self) -> bool {
        self.records.iter().all(|r| r.duplicate)
    }
}

/// The result of appending a batch of hooks in one transaction.
#[derive(Debug, Clone, Default)]
pub struct AppendResult {
    /// One outcome per hook, in the order given.
    pub outcomes: Vec<HookOutcome>,
    /// Every entry the transaction committed, in seq order.
    pub entries: Vec<LogEntry>,
}

/// One push with what is known of its delivery (the dashboard's recent pushes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushWithRecords {
    pub entry: LogEntry,
    /// Its delivery records, oldest first.
    pub records: Vec<DeliveryRecord>,
}

/// The newest pushes with their delivery records, read in a fixed number of queries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecentPushes {
    /// Newest first.
    pub pushes: Vec<PushWithRecords>,
    /// True if records were left out to stay within the caller's bound (those of the
    /// oldest pushes go first).
    pub records_truncated: bool,
}

/// What changes whenever the log or the delivery records of recent events change: cheap to
/// read, so that a dashboard can poll it and read the rest only after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryWatermark {
    /// The log's head.
    pub head: Seq,
    /// Delivery records of events at or after the `from` seq asked for.
    pub records: u64,
    /// The newest `at` among those records.
    pub latest_at: Option<UnixMillis>,
}

/// The log's extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogBounds {
    /// The last seq assigned.
    pub head: Seq,
    /// Every seq at or below this was removed by retention.
    pub floor: Seq,
}

/// A page of the log's pushes ([`crate::Store::read_pushes`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PushPage {
    /// The pushes found, in seq order.
    pub entries: Vec<LogEntry>,
    /// How far the read covered the log: every push at or below this seq (and above the
    /// read's `after`) is in `entries`.
    pub covered_to: Seq,
}

/// A project as the catalog stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogProject {
    pub id: ProjectId,
    pub path: FullPath,
    pub visibility: Option<Visibility>,
}

/// The routing state at one point of the log: start from this, then apply every entry
/// after `bounds.head`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub bounds: LogBounds,
    pub projects: Vec<CatalogProject>,
    /// Every path (current or former) and the project that owns it.
    pub aliases: Vec<(FullPath, ProjectId)>,
    pub agents: Vec<AgentPolicy>,
}

/// A new agent. The caller generated the token and passes only its digest.
#[derive(Debug, Clone)]
pub struct NewAgent {
    pub name: AgentName,
    pub config_project: FullPath,
    pub grants: Vec<Grant>,
    pub allow_internal: bool,
    pub token_digest: TokenDigest,
}

/// A change to an existing agent.
#[derive(Debug, Clone)]
pub enum AgentUpdate {
    /// Adds grants; `allow_internal: true` also lets it see internal projects.
    Grant {
        grants: Vec<Grant>,
        allow_internal: bool,
    },
    /// Removes grants (each must exist); `internal: true` withdraws internal projects.
    Revoke { grants: Vec<Grant>, internal: bool },
    /// Replaces the token; streams opened with the old one are closed.
    RotateToken { digest: TokenDigest },
}

/// An agent as stored.
#[derive(Debug, Clone)]
pub struct AgentRecord {
    pub policy: AgentPolicy,
    pub token_digest: TokenDigest,
    /// Every event at or below this seq was handled by the agent (from its acks).
    pub cursor: Seq,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    /// Last connect or ack, from any replica.
    pub last_seen_at: Option<UnixMillis>,
    /// The receivers the agent last reported as failing; `None` before its first report.
    pub receiver_health: Option<ReceiverHealth>,
    /// The latest report (open, ack, keepalive) of this agent's streams that have not
    /// closed, from any replica; `None` when every stream it opened has closed. A stream
    /// that ends is marked closed within the cursor saver's interval, so an agent that
    /// leaves shows as gone at once; one whose replica died stops being refreshed.
    pub open_stream_seen_at: Option<UnixMillis>,
    /// The agent's latest subscriptions with their status; `None` before its first stream.
    pub subscription_status: Option<fluxgate_core::SubscriptionReport>,
}

/// One agent stream's cursor to persist. A stream's cursor only moves forward; the agent's
/// cursor is the lowest of its streams' (see [`crate::Store::save_cursors`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorUpdate {
    pub agent: fluxgate_core::AgentId,
    /// Names the stream, unique across replicas and restarts.
    pub stream: String,
    /// Digest of the stream's current subscriptions (it may change them in place): only a
    /// later stream with the same digest takes over this one's hold once it has closed.
    /// The latest report's digest is kept.
    pub subscriptions: String,
    /// Where the stream started covering its current subscriptions: where it resumed (it
    /// replays everything the agent may see after this), or where it last changed them.
    /// Only moves forward.
    pub started_after: Seq,
    /// When the stream opened.
    pub opened_at: UnixMillis,
    /// Every event at or below this that the stream was entitled to has been acked.
    pub cursor: Seq,
    /// When this was reported (also the agent's last-seen time).
    pub seen_at: UnixMillis,
    /// Set once the stream has closed: its cursor then holds the agent's back until a
    /// later stream takes over.
    pub closed_at: Option<UnixMillis>,
}
