//! Agent streams: the transport between the hub and the agents.
//!
//! - [`AgentStreams`] is the `fluxgate.v1.AgentService` gRPC service: it authenticates a
//!   stream, reads its Hello and starts its task;
//! - [`session`] runs one stream: resume, backlog, live events from the hub, acks,
//!   subscription changes, keepalives;
//! - [`keepalive_grid`] puts the streams' keepalives and their connections' HTTP/2 PINGs
//!   on one clock grid, so idle streams wake the broker together and write once;
//! - [`convert`] validates what agents send and builds what they receive;
//! - [`status`] says, as a `tonic::Status`, why a stream was refused or closed;
//! - [`AgentReports`] persists what agents report of themselves (receiver health,
//!   subscription status), newest first, from one writer task;
//! - [`CursorSaver`] persists the streams' cursors in batches;
//! - [`DeliveryRecorder`] persists what happened to each event at each agent (acks, and
//!   the sync stages agents report), in batches, for `fluxgate trace`;
//! - [`gitlab_flux`] is KAS's `GitLabFlux/ReconcileProjects` for agentk-style clients:
//!   the same authentication, access rule and hub, best effort (no backlog, no acks).
//!
//! Which stream gets which event is decided by the hub (`fluxgate-fanout`); how the log
//! reaches the hub is `fluxgate-replication`'s job.

pub mod agent_reports;
pub mod convert;
pub mod cursor_saver;
pub mod delivery_recorder;
pub mod gitlab_flux;
pub mod keepalive_grid;
pub mod metric_names;
pub mod outbound;
pub mod service;
pub mod session;
pub mod status;

pub use agent_reports::AgentReports;
pub use cursor_saver::CursorSaver;
pub use delivery_recorder::{DeliveryRecorder, DeliveryWriter};
pub use gitlab_flux::GitLabFluxStreams;
pub use service::AgentStreams;
pub use session::StreamContext;
