//! HTTP ingest of GitLab hooks.
//!
//! GitLab system hooks and project/group webhooks arrive as JSON over HTTP. This crate
//! authenticates them, parses them into the records the store appends (with
//! `fluxgate-gitlab`, the pure parser), and answers GitLab quickly, so that every accepted
//! event is durable before the 2xx.

pub mod hooks;
pub mod log_field;
pub mod metric_names;
