//! The `fluxgate-agent` binary itself: configuration from a file, JSON logs, a clear
//! error for a bad configuration, and a clean exit on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

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
