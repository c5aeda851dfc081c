//! The `fluxgate-agent` binary itself: configuration from a file, JSON logs, a clear
//! error for a bad configuration, and a clean exit on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt as _;
use tokio::process::Command;

use crate::fake_broker::FakeBroker;
use crate::support::{AGENT_TOKEN, PATIENCE};

const BINARY: &str = env!("CARGO_BIN_EXE_fluxgate-agent");

#[tokio::test]
async fn the_binary_subscribes_and_exits_cleanly_on_sigterm() {
    let mut broker = FakeBroker::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("token"), format!("{AGENT_TOKEN}\n")).expect("write");
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "broker: {}\ntoken_file: token\ncluster_name: bin\nreceivers:\n  - {{name: app, project: group/app, type: generic, token: t}}\n",
            broker.url()
        ),
    )
    .expect("write");

    let mut agent = Command::new(BINARY)
        .arg("--log-format")
        .arg("json")
        .env("FLUXGATE_AGENT_CONFIG", &config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the agent binary");

    let stream = broker.next_stream().await;
    assert_eq!(stream.hello.cluster_name, "bin");
    assert_eq!(stream.authorization, Some(format!("Bearer {AGENT_TOKEN}")));

    let pid = agent.id().expect("running").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("run kill");
    assert!(killed.success());
    let exit = tokio::time::timeout(Duration::from_secs(5), agent.wait())
        .await
        .expect("the agent exits soon after SIGTERM")
        .expect("wait for the agent");
    assert!(exit.success(), "exit status {exit:?}");

    let mut stderr = String::new();
    if let Some(mut pipe) = agent.stderr.take() {
        use tokio::io::AsyncReadExt as _;
        pipe.read_to_string(&mut stderr).await.expect("read stderr");
    }
    let first_line = stderr.lines().next().expect("the agent logs");
    let line: serde_json::Value = serde_json::from_str(first_line).expect("JSON log lines");
    assert_eq!(line["message"], "fluxgate-agent starting");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(!stderr.contains(AGENT_TOKEN), "the token is never logged");
}

#[tokio::test]
async fn a_bad_configuration_fails_with_the_field_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        "broker: ftp://nowhere\nreceivers:\n  - {name: app, project: g/a, type: generic, token: t}\n",
    )
    .expect("write");
    let output = tokio::time::timeout(
        PATIENCE,
        Command::new(BINARY).arg("--config").arg(&config).output(),
    )
    .await
    .expect("the agent exits")
    .expect("run the agent binary");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("broker: scheme must be http or https"),
        "{stderr}"
    );
}

#[tokio::test]
async fn metrics_count_failed_calls_and_failing_receivers() {
    let mut broker = FakeBroker::start().await;
    // Nobody listens on this port: every call is refused.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = closed.local_addr().expect("address");
    drop(closed);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "broker: {}\nhealth_listen: 127.0.0.1:0\n\
             retry: {{initial_backoff: 10ms, max_backoff: 50ms, report_after: 200ms}}\n\
             receivers:\n  - {{name: app, project: group/app, type: generic, url: 'http://{address}/hook/x'}}\n",
            broker.url()
        ),
    )
    .expect("write");
    let mut agent = Command::new(BINARY)
        .args(["--log-format", "json", "--config"])
        .arg(&config)
        .env("FLUXGATE_AGENT_TOKEN", AGENT_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the agent binary");
    let stream = broker.next_stream().await;
    stream.welcome(0, false);
    stream.event(1, "group/app", "refs/heads/main", &[]);

    // The bound address is in the log line that announces the listener.
    let stderr = agent.stderr.take().expect("piped stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let metrics_address = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            let line: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
            if line["message"] == "serving /livez, /readyz and /metrics" {
                return line["address"].as_str().expect("an address").to_owned();
            }
        }
        panic!("the agent exited without serving metrics");
    })
    .await
    .expect("the metrics listener starts");

    let url = format!("http://{metrics_address}/metrics");
    let client = fluxgate_e2e::harness::http_client();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = client
            .get(&url)
            .send()
            .await
            .expect("the metrics listener answers")
            .text()
            .await
            .expect("a body");
        let counted = text.lines().any(|line| {
            line.starts_with(
                "fluxgate_agent_receiver_failed_attempts_total{receiver=\"app\",reason=\"connect\"}",
            )
        });
        if counted && text.contains("fluxgate_agent_receivers_failing 1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never showed the failing receiver:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.kill().await.expect("kill the agent");
}
