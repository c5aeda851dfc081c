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
