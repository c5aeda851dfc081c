//! Crashes and shutdowns: nothing acknowledged to GitLab is lost.

use std::sync::Arc;

use fluxgate_e2e::flux_receiver::{FluxReceiverStandIn, Receiver, ReceiverType};
use fluxgate_e2e::harness::payloads::{push, sha};
use fluxgate_e2e::harness::{
    AgentProcess, Broker, BrokerOptions, PATIENCE, Project, RawStream, ReceiverConfig,
};
use tokio::sync::{Mutex, Notify};
use tonic::Code;

const REFS: u64 = 100;
/// The broker is killed when this many hooks have been answered.
const KILL_AFTER: usize = 10;

#[tokio::test]
async fn a_broker_killed_with_sigkill_loses_no_acknowledged_event() {
    let receivers =
        (0..REFS).map(|n| Receiver::new(&format!("r{n}"), ReceiverType::GenericHmac, "token"));
    let flux = FluxReceiverStandIn::start(receivers).await;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerOptions::embedded(dir.path())).await;
    let token = broker.create_agent("survivor", "team/app", &[]).await;
    let configs = ReceiverConfig::one_per_branch("", "team/app", REFS, &flux.base_url());
    let mut agent = AgentProcess::start(&broker.agent_url(), &token, &configs).await;
    agent
        .process()
        .wait_for_log("connected to the broker", PATIENCE)
        .await;

    // Hooks go out four at a time; the broker is killed as soon as some were answered.
    let app = Project::private(5, "team/app");
    let hooks = broker.hooks();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let enough = Arc::new(Notify::new());
    let mut senders = Vec::new();
    for lane in 0..4 {
        let (hooks, app, acknowledged, enough) = (
            hooks.clone(),
            app.clone(),
            acknowledged.clone(),
            enough.clone(),
        );
        senders.push(tokio::spawn(async move {
            for n in (lane..REFS).step_by(4) {
                let body = push(&app, &format!("refs/heads/b{n}"), &sha(0), &sha(n + 1));
                if let Ok(response) = hooks.post(&body, &[]).await
                    && response.status == 200
                {
                    let mut acknowledged = acknowledged.lock().await;
                    acknowledged.push(n);
                    if acknowledged.len() == KILL_AFTER {
                        enough.notify_one();
                    }
                }
            }
        }));
    }
    let mut broker = broker;
    enough.notified().await;
    broker.kill().await;
    for sender in senders {
        sender.await.unwrap();
    }
    let acknowledged = acknowledged.lock().await.clone();
    assert!(
        acknowledged.len() < REFS as usize,
        "the kill came too late to test anything"
    );
    eprintln!(
        "{} of {REFS} hooks were acknowledged before the kill",
        acknowledged.len()
    );

    broker.restart().await;
    for n in &acknowledged {
        let hits = flux.wait_for_hits(&format!("r{n}"), 1, PATIENCE).await;
        assert_eq!(hits[0].json()["after"], sha(n + 1), "ref b{n}");
        assert_eq!(hits[0].status, 200);
    }
}

#[tokio::test]
async fn graceful_shutdown_closes_agent_streams_with_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(BrokerOptions::embedded(dir.path())).await;
    let token = broker.create_agent("leaver", "team/app", &[]).await;
    let app = Project::private(5, "team/app");
    let seq = broker
        .post_hook(&push(&app, "refs/heads/main", &sha(0), &sha(1)), &[])
        .await
        .seqs()[0];
    let mut stream = RawStream::open(&broker.agent_url(), &token, &[("team/app", "")], None)
        .await
        .unwrap();
    let event = stream.next_event(PATIENCE).await.unwrap().unwrap();
    assert_eq!(event.seq, seq);
    stream.ack(seq).await;
    broker.wait_for_cursor("leaver", seq).await;
    // The container health check passes while the broker is ready.
    broker
        .cli(&["healthcheck", &format!("http://{}/readyz", broker.metrics)])
        .await;

    let stopping = tokio::spawn(async move {
        let clean = broker.terminate().await;
        (clean, broker)
    });
    let closed = loop {
        match stream.next_message(PATIENCE).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream stayed open during shutdown"),
            Err(status) => break status,
        }
    };
    assert_eq!(closed.code(), Code::Unavailable, "{closed:?}");
    let (clean, broker) = stopping.await.unwrap();
    assert!(clean, "the broker exits 0 after SIGTERM");
    assert_eq!(broker.agent_cursor("leaver").await, seq);
}

/// A bug that ends an essential task must not leave a broker that looks ready but cannot
/// work (the log writer once panicked on a non-ASCII path while `/readyz` stayed green):
/// the broker reports why, drains and exits non-zero so that it is restarted.
#[tokio::test]
async fn a_broker_whose_essential_task_panics_drains_and_exits_non_zero() {
    for task in [
        "log writer",
        "follower",
        "cursor saver",
        "agent gRPC server",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut options = BrokerOptions::embedded(dir.path());
        options
            .env
            .push(("FLUXGATE_FAULT_PANIC".to_owned(), format!("{task}@1500")));
        let mut broker = Broker::start(options).await;
        let failure = broker
            .process()
            .wait_for_log(
                "essential task ended; not ready, draining, then exiting so that it is restarted",
                PATIENCE,
            )
            .await;
        assert_eq!(failure["task"], task, "{failure}");
        assert!(
            failure["reason"]
                .as_str()
                .is_some_and(|r| r.contains("panicked: fault injected")),
            "{failure}"
        );
        let status = broker
            .process()
            .wait_for_exit(PATIENCE)
            .await
            .unwrap_or_else(|| panic!("the broker still runs after its {task} panicked"));
        assert!(!status.success(), "{task}: exit status {status}");
    }
}

/// Logging must never take the broker down: with stderr a closed pipe (the log collector
/// went away), the broker keeps answering hooks and still drains and exits 0 on SIGTERM.
#[tokio::test]
async fn a_broker_whose_stderr_is_closed_keeps_working_and_stops_on_sigterm() {
    use tokio::io::AsyncBufReadExt as _;

    let dir = tempfile::tempdir().unwrap();
    let mut child =
        tokio::process::Command::new(fluxgate_e2e::harness::binaries::binary("fluxgate"))
            .args(["--data-dir", &dir.path().display().to_string(), "serve"])
            .args([
                "--log-format",
                "json",
                "--hook-secret",
                "e2e-hook-secret-0123456789",
            ])
            .args([
                "--http-listen",
                "127.0.0.1:0",
                "--agent-listen",
                "127.0.0.1:0",
            ])
            .args(["--metrics-listen", "127.0.0.1:0", "--shutdown-grace", "5s"])
            .env("RUST_LOG", "debug")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if value["message"] == "fluxgate is ready" {
                return value;
            }
        }
        panic!("the broker exited before it was ready");
    })
    .await
    .expect("the broker became ready");
    drop(lines); // Closes the read end: every later write to stderr fails with EPIPE.

    let hooks = format!("http://{}/hooks/gitlab", ready["http"].as_str().unwrap());
    let client = fluxgate_e2e::harness::http_client();
    let app = Project::private(5, "team/app");
    for n in 0..50 {
        let response = client
            .post(&hooks)
            .header("X-Gitlab-Token", "e2e-hook-secret-0123456789")
            .json(&push(&app, "refs/heads/main", &sha(n), &sha(n + 1)))
            .send()
            .await
            .expect("the broker answers with its stderr closed");
        assert_eq!(response.status(), 200, "hook {n}");
    }

    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("SIGTERM stops the broker even though it cannot log")
        .unwrap();
    assert!(status.success(), "exit status {status}");
}
