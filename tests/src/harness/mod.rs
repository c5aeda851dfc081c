//! The end-to-end harness: real binaries in child processes, real TCP, captured logs.

pub mod agent;
pub mod binaries;
pub mod broker;
pub mod payloads;
pub mod process;
pub mod raw_stream;
pub mod wait;

pub use agent::{AgentProcess, ReceiverConfig, Target};
pub use broker::{Broker, BrokerOptions, HookResponse};
pub use payloads::Project;
pub use raw_stream::RawStream;
pub use wait::{PATIENCE, eventually};

/// An HTTP client for tests (installs the ring rustls provider once per process).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
