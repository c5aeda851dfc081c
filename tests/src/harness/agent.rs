//! The real `fluxgate-agent` in a child process, configured with receivers.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;

use super::binaries::binary;
use super::process::Process;

/// Where the agent sends a receiver's calls.
#[derive(Debug, Clone)]
pub enum Target {
    /// The full hook URL.
    Url(String),
    /// Flux's webhook server; the agent computes `/hook/<sha256(token+name+namespace)>`.
    Flux {
        webhook_receiver_url: String,
        namespace: String,
    },
}

/// One receiver entry of the agent's configuration.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub name: String,
    pub project: String,
    pub git_ref: Option<String>,
    pub receiver_type: String,
    pub token: String,
    pub target: Target,
}

impl ReceiverConfig {
    pub fn new(name: &str, project: &str, receiver_type: &str, token: &str, url: &str) -> Self {
        Self {
            name: name.to_owned(),
            project: project.to_owned(),
            git_ref: None,
            receiver_type: receiver_type.to_owned(),
            token: token.to_owned(),
            target: Target::Url(url.to_owned()),
        }
    }

    /// A receiver addressed the way Flux publishes it: base URL, name and namespace.
    pub fn flux(
        name: &str,
        project: &str,
        receiver_type: &str,
        token: &str,
        base_url: &str,
    ) -> Self {
        Self {
            target: Target::Flux {
                webhook_receiver_url: base_url.to_owned(),
                namespace: "flux-system".to_owned(),
            },
            ..Self::new(name, project, receiver_type, token, "")
        }
    }

    /// `<prefix>r<n>` on `refs/heads/b<n>` for each n below `count` (`generic-hmac`, token
    /// `token`): one receiver per branch, so every event can be counted on its own.
    pub fn one_per_branch(prefix: &str, project: &str, count: u64, base_url: &str) -> Vec<Self> {
        (0..count)
            .map(|n| {
                Self::flux(
                    &format!("{prefix}r{n}"),
                    project,
                    "generic-hmac",
                    "token",
                    base_url,
                )
                .on_ref(&format!("refs/heads/b{n}"))
            })
            .collect()
    }

    pub fn on_ref(mut self, git_ref: &str) -> Self {
        self.git_ref = Some(git_ref.to_owned());
        self
    }
}

/// A running agent. Killed when dropped.
pub struct AgentProcess {
    process: Process,
    _dir: tempfile::TempDir,
    config_path: PathBuf,
    /// Extra environment of the process (such as `KUBECONFIG`).
    env: Vec<(String, String)>,
}

impl AgentProcess {
    pub async fn start(broker_url: &str, token: &str, receivers: &[ReceiverConfig]) -> Self {
        Self::start_with_brokers(&[broker_url], token, receivers).await
    }

    /// An agent that knows several replicas and moves to the next after a disconnect.
    pub async fn start_with_brokers(
        broker_urls: &[&str],
        token: &str,
        receivers: &[ReceiverConfig],
    ) -> Self {
        Self::start_with_yaml(broker_urls, token, receivers, "").await
    }

    /// An agent whose configuration also has `extra_yaml` (top-level keys such as a
    /// `tls:` section).
    pub async fn start_with_yaml(
        broker_urls: &[&str],
        token: &str,
        receivers: &[ReceiverConfig],
        extra_yaml: &str,
    ) -> Self {
        let broker_url = format!("[{}]", broker_urls.join(", "));
        let dir = tempfile::tempdir().expect("a temporary directory");
        let token_path = dir.path().join("token");
        std::fs::write(&token_path, format!("{token}\n")).expect("write the agent token");
        let mut yaml = format!(
            "broker: {broker_url}\ntoken_file: {}\ncluster_name: e2e\n\
             retry:\n  initial_backoff: 50ms\n  max_backoff: 500ms\n  report_after: 1s\n  warn_every: 5s\n\
             reconnect:\n  initial_backoff: 100ms\n  max_backoff: 1s\nreceivers:\n",
            token_path.display()
        );
        yaml.insert_str(0, extra_yaml);
        for receiver in receivers {
            let _ = write!(
                yaml,
                "  - name: {}\n    project: {}\n    type: {}\n    token: {:?}\n",
                receiver.name, receiver.project, receiver.receiver_type, receiver.token
            );
            match &receiver.target {
                Target::Url(url) => {
                    let _ = writeln!(yaml, "    url: {url}");
                }
                Target::Flux {
                    webhook_receiver_url,
                    namespace,
                } => {
                    let _ = writeln!(
                        yaml,
                        "    webhook_receiver_url: {webhook_receiver_url}\n    namespace: {namespace}"
                    );
                }
            }
            if let Some(git_ref) = &receiver.git_ref {
                let _ = writeln!(yaml, "    ref: {git_ref:?}");
            }
        }
        let config_path = dir.path().join("agent.yaml");
        std::fs::write(&config_path, yaml).expect("write the agent configuration");
        let process = Self::spawn(&config_path, &[]);
        Self {
            process,
            _dir: dir,
            config_path,
            env: Vec::new(),
        }
    }

    /// An agent in the Kubernetes mode, with no static receivers: `yaml` holds its
    /// `gitlab_url`, `flux:` and `kubernetes:` keys (and `health_listen`), and the
    /// kubeconfig at `kubeconfig` points it at the API server.
    pub async fn start_kubernetes(
        broker_url: &str,
        token: &str,
        yaml: &str,
        kubeconfig: &std::path::Path,
    ) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let token_path = dir.path().join("token");
        std::fs::write(&token_path, format!("{token}\n")).expect("write the agent token");
        let yaml = format!(
            "broker: {broker_url}\ntoken_file: {}\ncluster_name: e2e\n\
             retry:\n  initial_backoff: 50ms\n  max_backoff: 500ms\n  report_after: 1s\n  warn_every: 5s\n\
             reconnect:\n  initial_backoff: 100ms\n  max_backoff: 1s\n{yaml}",
            token_path.display()
        );
        let config_path = dir.path().join("agent.yaml");
        std::fs::write(&config_path, yaml).expect("write the agent configuration");
        let env = vec![("KUBECONFIG".to_owned(), kubeconfig.display().to_string())];
        let process = Self::spawn(&config_path, &env);
        Self {
            process,
            _dir: dir,
            config_path,
            env,
        }
    }

    fn spawn(config_path: &PathBuf, env: &[(String, String)]) -> Process {
        let mut command = Command::new(binary("fluxgate-agent"));
        command
            .arg("--config")
            .arg(config_path)
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info,fluxgate_agent=debug")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        Process::spawn("fluxgate-agent", command)
    }

    /// Starts the agent again with the same configuration (after a stop or kill).
    pub fn restart(&mut self) {
        self.process = Self::spawn(&self.config_path, &self.env);
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    pub async fn stop(&mut self) -> bool {
        self.process.terminate(Duration::from_secs(10)).await
    }

    pub async fn kill(&mut self) {
        self.process.kill().await;
    }
}
