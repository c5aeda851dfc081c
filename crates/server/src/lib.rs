//! `fluxgate-server`: the broker as a library, and the pieces of its command line.
//!
//! [`run`] starts a broker on listeners the caller bound (tests bind port 0) and returns a
//! [`Handle`]: the bound addresses, a wait for start-up, shutdown, and the exit result.
//! The `fluxgate` binary (`main.rs`) only parses the command line, loads the
//! configuration, sets up logging and the allocator, and calls in here.
//!
//! Configuration, wiring, admin API and CLI, health and metrics, graceful shutdown. The
//! other crates do the work; this one puts them together.

pub mod admin;
mod broker;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dashboard;
mod data_dir;
pub mod explain;
mod health;
mod http;
mod listen;
pub mod metric_names;
pub mod notify_client;
mod retention;
pub mod secrets;
pub mod shutdown;
mod stream_runtime;
mod supervisor;
pub mod telemetry;
pub mod trace;

pub use broker::{Addresses, Handle, Listeners, run};
pub use config::Config;
