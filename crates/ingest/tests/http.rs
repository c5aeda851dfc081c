//! `POST /hooks/gitlab` through the router, on a real SQLite store: authentication by
//! token and by signature, refs, and what the logs say.

#[path = "http/support.rs"]
mod support;

#[path = "http/auth.rs"]
mod auth;

#[path = "http/logs.rs"]
mod logs;
