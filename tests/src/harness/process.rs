//! A child process whose output lines are captured for assertions.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use super::wait::eventually;

/// A running binary. Killed when dropped.
pub struct Process {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    pub fn spawn(name: &str, mut command: Command) -> Self {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let echo = std::env::var_os("FLUXGATE_E2E_LOGS").is_some();
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(capture(stdout, lines.clone(), name.to_owned(), echo));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(capture(stderr, lines.clone(), name.to_owned(), echo));
        }
        Self {
            name: name.to_owned(),
            child,
            lines,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().clone()
    }

    /// The first captured JSON log line whose `message` equals `message`.
    pub fn log_line(&self, message: &str) -> Option<serde_json::Value> {
        self.lines()
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|value| value["message"] == message)
    }

    pub async fn wait_for_log(&mut self, message: &str, timeout: Duration) -> serde_json::Value {
        let what = format!("{} to log {message:?}", self.name);
        let lines = self.lines.clone();
        let name = self.name.clone();
        let exited = &mut self.child;
        eventually(timeout, &what, || {
            let found = lines
                .lock()
                .iter()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .find(|value| value["message"] == message);
            if found.is_none()
                && let Ok(Some(status)) = exited.try_wait()
            {
                let output = lines.lock().join("\n");
                panic!("{name} exited with {status} before logging {message:?}:\n{output}");
            }
            async move { found }
        })
        .await
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then waits for the exit; returns whether it exited successfully in time.
    pub async fn terminate(&mut self, timeout: Duration) -> bool {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => status.success(),
            _ => false,
        }
    }

    /// Waits for the process to exit on its own; `None` if it still runs after `timeout`.
    pub async fn wait_for_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => None,
        }
    }

    /// The operating-system process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

async fn capture(
    stream: impl AsyncRead + Unpin,
    lines: Arc<Mutex<Vec<String>>>,
    name: String,
    echo: bool,
) {
    let mut reader = BufReader::new(stream).lines();
    while let Ok(Some(line)) = reader.next_line().await {
        if echo {
            eprintln!("[{name}] {line}");
        }
        lines.lock().push(line);
    }
}
