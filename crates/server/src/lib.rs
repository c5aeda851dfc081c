//! The `fluxgate` broker: configuration, wiring, admin API and CLI, health and metrics,
//! graceful shutdown. The other crates do the work; this one puts them together.

pub mod admin;
pub mod broker;
pub mod cli;
pub mod commands;
pub mod config;
pub mod health;
pub mod http;
pub mod retention;
pub mod secrets;
pub mod shutdown;
pub mod telemetry;
