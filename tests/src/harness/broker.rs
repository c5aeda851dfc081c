//! The real `fluxgate` broker in a child process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use super::binaries::binary;
use super::payloads::{Project, push, sha};
use super::process::Process;
use super::wait::PATIENCE;

/// How to run a broker. Ports default to 0 (the harness reads the bound ones from the log).
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub redis_prefix: Option<String>,
    pub hook_secret: String,
    pub admin_token_file: Option<PathBuf>,
    pub http_listen: SocketAddr,
    pub agent_listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    /// TLS on all three listeners.
    pub tls: Option<BrokerTls>,
    pub extra_args: Vec<String>,
    /// Extra environment variables for the broker process.
    pub env: Vec<(String, String)>,
    /// Run as shipped (benchmarks): the default intervals and log filter, instead of the
    /// tests' short intervals and debug logging.
    pub shipped_defaults: bool,
    /// Start the broker bound to this CPU (`taskset`), so that its runtime sizes its
    /// worker pool for one core, as a one-core deployment would.
    pub cpu: Option<usize>,
}

/// PEM files for a broker with TLS on every listener.
#[derive(Debug, Clone)]
pub struct BrokerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Agents must present a certificate signed by this CA.
    pub client_ca_file: Option<PathBuf>,
    /// The CA the harness's own clients (hooks, metrics) trust.
    pub ca_pem: String,
}

impl BrokerTls {
    /// Flags for the certificate and key of each listener, and a short reload interval.
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for listener in ["http", "agent", "metrics"] {
            args.push(format!("--{listener}-tls-cert-file"));
            args.push(self.cert_file.display().to_string());
            args.push(format!("--{listener}-tls-key-file"));
            args.push(self.key_file.display().to_string());
        }
        if let Some(ca) = &self.client_ca_file {
            args.push("--agent-tls-client-ca-file".to_owned());
            args.push(ca.display().to_string());
        }
        args.extend(["--tls-reload-interval".to_owned(), "200ms".to_owned()]);
        args
    }
}

impl BrokerOptions {
    /// The embedded default (SQLite in `data_dir`), with short intervals for tests.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            data_dir: data_dir.into(),
            database_url: None,
            redis_url: None,
            redis_prefix: None,
            hook_secret: "e2e-hook-secret-0123456789".to_owned(),
            admin_token_file: None,
            http_listen: any_port,
            agent_listen: any_port,
            metrics_listen: any_port,
            tls: None,
            extra_args: Vec::new(),
            env: Vec::new(),
            shipped_defaults: false,
            cpu: None,
        }
    }

    /// A replica on a shared database and Redis, with its own data directory. Keys in
    /// Redis carry `redis_prefix`, so tests sharing one Redis do not see each other.
    pub fn replica(
        data_dir: impl Into<PathBuf>,
        database_url: &str,
        redis_url: &str,
        redis_prefix: &str,
    ) -> Self {
        let mut options = Self::embedded(data_dir);
        options.database_url = Some(database_url.to_owned());
        options.redis_url = Some(redis_url.to_owned());
        options.redis_prefix = Some(redis_prefix.to_owned());
        options
    }

    /// Flags that choose the store (and Redis): what the CLI needs too.
    fn args(&self) -> Vec<String> {
        let mut args = vec!["--data-dir".to_owned(), self.data_dir.display().to_string()];
        if let Some(url) = &self.database_url {
            args.extend(["--database-url".to_owned(), url.clone()]);
        }
        if let Some(url) = &self.redis_url {
            args.extend(["--redis-url".to_owned(), url.clone()]);
        }
        if let Some(prefix) = &self.redis_prefix {
            args.extend(["--redis-key-prefix".to_owned(), prefix.clone()]);
        }
        args
    }
}

/// A running broker.
pub struct Broker {
    process: Process,
    pub options: BrokerOptions,
    pub http: SocketAddr,
    pub agent: SocketAddr,
    pub metrics: SocketAddr,
    /// The KAS internal API, when `--kas-secret-file` was given.
    pub kas: Option<SocketAddr>,
    client: reqwest::Client,
}

/// A hook's answer: status and JSON body.
#[derive(Debug, Clone)]
pub struct HookResponse {
    pub status: u16,
    pub body: Value,
}

impl HookResponse {
    /// The seqs the broker named, in payload order.
    pub fn seqs(&self) -> Vec<u64> {
        self.body["seqs"]
            .as_array()
            .map(|seqs| seqs.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default()
    }
}

/// Posts hooks to one broker with its secret; cheap to clone into tasks.
#[derive(Clone)]
pub struct HookClient {
    client: reqwest::Client,
    url: String,
    secret: String,
}

impl HookClient {
    /// POSTs a hook as GitLab's system hook does; `Err` if no answer came back.
    pub async fn post(
        &self,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Result<HookResponse, reqwest::Error> {
        let mut request = self
            .client
            .post(&self.url)
            .header("X-Gitlab-Token", &self.secret)
            .header("X-Gitlab-Event", "System Hook")
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok(HookResponse { status, body })
    }

    /// Pushes to `refs/heads/b<n>` of `project` (after = `sha(n + 1)`) for each `n`, one
    /// after the other; returns their seqs.
    pub async fn push_branches(self, project: Project, numbers: std::ops::Range<u64>) -> Vec<u64> {
        let mut seqs = Vec::with_capacity(numbers.clone().count());
        for n in numbers {
            let body = push(&project, &format!("refs/heads/b{n}"), &sha(0), &sha(n + 1));
            seqs.push(self.accepted_seq(&body).await);
        }
        seqs
    }

    /// POSTs a hook that must be accepted, and returns its first seq.
    pub async fn accepted_seq(&self, body: &Value) -> u64 {
        let response = self
            .post(body, &[])
            .await
            .expect("the broker answers hooks");
        assert_eq!(response.status, 200, "{:?}", response.body);
        response.seqs()[0]
    }
}

impl Broker {
    pub async fn start(options: BrokerOptions) -> Self {
        let mut command = match options.cpu {
            // taskset execs the broker: the child's pid is the broker's.
            Some(cpu) => {
                let mut command = Command::new("taskset");
                command
                    .arg("--cpu-list")
                    .arg(cpu.to_string())
                    .arg(binary("fluxgate"));
                command
            }
            None => Command::new(binary("fluxgate")),
        };
        command.args(options.args()).arg("serve");
        let http = options.http_listen.to_string();
        let agent = options.agent_listen.to_string();
        let metrics = options.metrics_listen.to_string();
        // Short intervals for tests; a flag in `extra_args` wins over its default here.
        let mut defaults = vec![
            ("--log-format", "json"),
            ("--http-listen", http.as_str()),
            ("--agent-listen", agent.as_str()),
            ("--metrics-listen", metrics.as_str()),
            ("--hook-secret", options.hook_secret.as_str()),
        ];
        if !options.shipped_defaults {
            defaults.extend([
                ("--poll-interval", "200ms"),
                ("--keepalive-interval", "1s"),
                ("--cursor-flush-interval", "100ms"),
                ("--presence-refresh", "500ms"),
                ("--shutdown-grace", "5s"),
            ]);
        }
        for (flag, value) in defaults {
            if !options.extra_args.iter().any(|arg| arg == flag) {
                command.args([flag, value]);
            }
        }
        if let Some(file) = &options.admin_token_file {
            command.arg("--admin-token-file").arg(file);
        }
        if let Some(tls) = &options.tls {
            command.args(tls.args());
        }
        command.args(&options.extra_args);
        if options.shipped_defaults {
            command.env_remove("RUST_LOG");
        } else {
            command.env(
                "RUST_LOG",
                "info,fluxgate_stream=debug,fluxgate_replication=debug,fluxgate_fanout=debug",
            );
        }
        command.envs(options.env.iter().map(|(k, v)| (k, v)));
        let mut process = Process::spawn("fluxgate", command);
        let ready = process.wait_for_log("fluxgate is ready", PATIENCE).await;
        let address = |field: &str| -> SocketAddr {
            ready[field]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("the ready line has no {field} address: {ready}"))
        };
        let client = match &options.tls {
            Some(tls) => super::https_client(&tls.ca_pem),
            None => super::http_client(),
        };
        Self {
            http: address("http"),
            agent: address("agent"),
            metrics: address("metrics"),
            kas: ready["kas"].as_str().and_then(|a| a.parse().ok()),
            process,
            options,
            client,
        }
    }

    /// Starts again on the same store and the same ports (after [`Broker::kill`]).
    pub async fn restart(&mut self) {
        let mut options = self.options.clone();
        options.http_listen = self.http;
        options.agent_listen = self.agent;
        options.metrics_listen = self.metrics;
        *self = Broker::start(options).await;
    }

    /// `http` or, with TLS, `https`.
    fn scheme(&self) -> &'static str {
        if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// `http://127.0.0.1:<agent port>` (`https://` with TLS), for agent configurations.
    pub fn agent_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.agent)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme(), self.http)
    }

    /// A URL on the operations listener.
    pub fn metrics_url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme(), self.metrics)
    }

    /// The client the harness talks to this broker with (trusting its CA under TLS).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    pub async fn kill(&mut self) {
        self.process.kill().await;
    }

    pub async fn terminate(&mut self) -> bool {
        self.process.terminate(Duration::from_secs(15)).await
    }

    /// A client for this broker's hook endpoint.
    pub fn hooks(&self) -> HookClient {
        HookClient {
            client: self.client.clone(),
            url: self.http_url("/hooks/gitlab"),
            secret: self.options.hook_secret.clone(),
        }
    }

    /// POSTs a hook with the right token and any extra headers.
    pub async fn post_hook(&self, body: &Value, headers: &[(&str, &str)]) -> HookResponse {
        self.hooks()
            .post(body, headers)
            .await
            .expect("the broker answers hooks")
    }

    /// Runs `fluxgate <args…>` against this broker's store and returns its stdout.
    pub async fn cli(&self, args: &[&str]) -> String {
        let output = Command::new(binary("fluxgate"))
            .args(self.options.args())
            .args(args)
            .output()
            .await
            .expect("run the fluxgate CLI");
        assert!(
            output.status.success(),
            "fluxgate {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs the CLI and returns its exit code and standard output, whatever the code.
    pub async fn cli_status(&self, args: &[&str]) -> (Option<i32>, String) {
        let output = Command::new(binary("fluxgate"))
            .args(self.options.args())
            .args(args)
            .output()
            .await
            .expect("run the fluxgate CLI");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    }

    /// Creates an agent with the CLI and returns its token.
    pub async fn create_agent(&self, name: &str, config_project: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "agent",
            "create",
            "--json",
            "--name",
            name,
            "--config-project",
            config_project,
        ];
        args.extend_from_slice(extra);
        let created: Value =
            serde_json::from_str(&self.cli(&args).await).expect("agent create prints JSON");
        created["token"].as_str().expect("a token").to_owned()
    }

    /// The agent's stored cursor (from its acks).
    pub async fn agent_cursor(&self, name: &str) -> u64 {
        let shown: Value =
            serde_json::from_str(&self.cli(&["agent", "show", "--json", name]).await)
                .expect("agent show prints JSON");
        shown["cursor"].as_u64().expect("a cursor")
    }

    /// Waits until the agent's stored cursor reaches `seq`: everything up to it that the
    /// agent may see was handled and acked (or passed).
    pub async fn wait_for_cursor(&self, name: &str, seq: u64) {
        super::wait::eventually(
            PATIENCE,
            &format!("agent {name}'s cursor to reach {seq}"),
            || async { (self.agent_cursor(name).await >= seq).then_some(()) },
        )
        .await;
    }

    /// A metric's value from `/metrics` (the sum over its label sets).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(self.metrics_url("/metrics"))
            .send()
            .await
            .expect("the metrics listener answers")
            .text()
            .await
            .unwrap_or_default();
        text.lines()
            .filter(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}
