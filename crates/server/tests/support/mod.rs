//! A broker in this process, on port 0, with its data in a temporary directory.

#![allow(dead_code)]

use std::path::Path;

use fluxgate_server::{Config, Handle, Listeners};

pub const ADMIN_TOKEN: &str = "admin-token-for-in-process-tests";

/// A started broker and the directory it keeps its data in.
pub struct TestBroker {
    pub handle: Handle,
    _dir: tempfile::TempDir,
}

impl TestBroker {
    /// Starts a broker on the embedded database, with the admin API on if `admin`, and
    /// waits until it is ready.
    pub async fn start(admin: bool) -> Self {
        Self::start_with(admin, |_| {}).await
    }

    /// Like [`TestBroker::start`], with `change` applied to the configuration first.
    pub async fn start_with(admin: bool, change: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path(), admin);
        change(&mut config);
        let listeners = Listeners::ephemeral().await.unwrap();
        let mut handle = fluxgate_server::run(config, listeners, Default::default()).unwrap();
        handle.ready().await.unwrap();
        Self { handle, _dir: dir }
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.handle.addresses().http)
    }

    pub fn agent_url(&self) -> String {
        format!("http://{}", self.handle.addresses().agent)
    }

    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.handle.addresses().metrics)
    }
}

/// The configuration of a test broker in `dir`.
pub fn config(dir: &Path, admin: bool) -> Config {
    let mut config = Config {
        data_dir: dir.join("data"),
        hook_secret: vec!["a-hook-secret-for-tests".to_owned()],
        shutdown_grace: std::time::Duration::from_secs(5),
        ..Config::default()
    };
    if admin {
        let token_file = dir.join("admin-token");
        std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
        config.admin_token_file = Some(token_file);
    }
    config
}
