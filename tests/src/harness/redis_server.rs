//! A `redis-server` of the test's own, on a free port, that the test may stop and start.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::wait::eventually;

pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let port = super::free_port();
        let mut server = Self { port, child: None };
        server.resume().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: clients see their connections reset, as in a crash.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts again on the same port (empty: it keeps nothing on disk).
    pub async fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        eventually(
            Duration::from_secs(10),
            "redis-server to accept connections",
            || async move {
                tokio::net::TcpStream::connect(address)
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }
}
