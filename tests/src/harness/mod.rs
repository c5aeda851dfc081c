//! The end-to-end harness: real binaries in child processes, real TCP, captured logs.

pub mod agent;
pub mod binaries;
pub mod broker;
pub mod chaos_proxy;
pub mod payloads;
pub mod process;
pub mod raw_stream;
pub mod redis_server;
pub mod wait;

pub use agent::{AgentProcess, ReceiverConfig, Target};
pub use broker::{Broker, BrokerOptions, BrokerTls, HookClient, HookResponse};
pub use chaos_proxy::ChaosProxy;
pub use payloads::Project;
pub use raw_stream::RawStream;
pub use redis_server::RedisServer;
pub use wait::{PATIENCE, eventually};

/// An HTTP client for tests (installs the ring rustls provider once per process).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// An HTTP client that trusts only the CA in `ca_pem` (for a broker with TLS).
pub fn https_client(ca_pem: &str) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("a PEM CA certificate");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .expect("an HTTPS client")
}

/// A TCP port that was free a moment ago (for servers that cannot report the port they
/// bound, such as `redis-server`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}
