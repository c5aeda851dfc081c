//! HTTP ingest of GitLab hooks and pipeline notifications.
//!
//! GitLab system hooks and project/group webhooks arrive as JSON over HTTP. This crate
//! authenticates them, parses them into the records the store appends (with
//! `fluxgate-gitlab`, the pure parser), and answers GitLab quickly, so that every accepted
//! event is durable before the 2xx.
//!
//! Pipelines notify through `POST /api/v1/notify` ([`notify`]), authenticated by their
//! GitLab CI ID token (`fluxgate-idtoken`); a notification becomes an artifact event in the
//! same log, through the same appender.
//!
//! [`kas`] takes GitLab's other push notice: the `GitPushEvent` call Rails makes to KAS,
//! authenticated by Rails' KAS JWT, appended through the same `Appender`.

mod commit;
pub mod hooks;
pub mod kas;
pub mod log_field;
pub mod metric_names;
pub mod notify;
