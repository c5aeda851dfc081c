//! Domain types shared by every fluxgate crate.
//!
//! Wire types (JSON payloads, protobuf messages, database rows) are converted to these at
//! each boundary, so everything past the boundary works with validated values: a
//! [`FullPath`] is a well-formed GitLab path, a [`Sha`] is a real object id, a [`Seq`] is a
//! position in the durable log. The crate does no I/O.

pub mod agent;
pub mod artifact;
pub mod backoff;
pub mod bearer;
pub mod delivery;
pub mod error;
pub mod git;
pub mod hook;
pub mod log;
pub mod path;
pub mod project;
pub mod receiver_health;
pub mod subscription_status;
pub mod time;
pub mod token;

pub use agent::{AgentId, AgentName, AgentNameError, AgentPolicy, Grant};
pub use artifact::{Artifact, ArtifactError};
pub use backoff::Backoff;
pub use delivery::{
    DeliveryDetail, DeliveryRecord, DeliveryRecordError, DeliveryStage, ReceiverAnswer,
};
pub use error::{ApiError, ErrorCode};
pub use git::{GitError, GitRef, RefPattern, Sha};
pub use hook::{HookBatch, NewRecord};
pub use log::{
    AdminAction, CatalogChange, EventKind, LogEntry, LogRecord, PushEvent, Seq, StateCause,
    StateChange, StateEffect,
};
pub use path::{FullPath, PathError};
pub use project::{ProjectId, ProjectRef, Visibility};
pub use receiver_health::{FailingReceiver, ReceiverHealth, ReceiverHealthError};
pub use subscription_status::{
    SubscriptionReport, SubscriptionReportError, SubscriptionState, SubscriptionStatus,
};
pub use time::UnixMillis;
pub use token::{AgentToken, TokenDigest};
