//! A Flux Receiver that is down for a while, with the real binaries: it is retried until
//! it answers, its pushes stay unacked (across an agent restart too), `fluxgate agent
//! show` lists it while it fails, and when it is back it is called for the newest push.
//!
//! The outage has two phases: connection refused (a [`ChaosProxy`] in front of the Flux
//! stand-in, cut), then `503` (the Receiver is not Ready). A raw stream checks the broker's
//! side of the report: bounds, and that unknown agent messages do not close a stream.

use std::net::SocketAddr;

use fluxgate_e2e::flux_receiver::{FluxReceiverStandIn, Hit, Receiver, ReceiverType};
use fluxgate_e2e::harness::payloads::{push, sha};
use fluxgate_e2e::harness::{
    AgentProcess, Broker, BrokerOptions, ChaosProxy, PATIENCE, Project, RawStream, ReceiverConfig,
    eventually,
};
use fluxgate_proto::v1::{self, agent_message};
use serde_json::Value;

const AGENT: &str = "outage";

async fn connected(agent: &mut AgentProcess) {
    agent
        .process()
        .wait_for_log("connected to the broker", PATIENCE)
        .await;
}

async fn shown(broker: &Broker) -> Value {
    serde_json::from_str(&broker.cli(&["agent", "show", "--json", AGENT]).await)
        .expect("agent show prints JSON")
}

/// Waits until `agent show` lists `receiver` as failing and `check` accepts its entry.
async fn wait_until_failing(broker: &Broker, receiver: &str, check: impl Fn(&Value) -> bool) {
    eventually(
        PATIENCE,
        &format!("{receiver} listed as failing"),
        || async {
            let agent = shown(broker).await;
            let failing = agent["receiver_health"]["failing"].as_array()?.clone();
            failing
                .iter()
                .find(|f| f["receiver"] == receiver)
                .filter(|f| check(f))
                .map(|_| ())
        },
    )
    .await;
}

fn after(hit: &Hit) -> String {
    hit.json()["after"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_receiver_down_for_a_while_is_called_for_the_newest_push_when_it_is_back() {
    let flux = FluxReceiverStandIn::start([
        Receiver::new("app", ReceiverType::GenericHmac, "app-token"),
        Receiver::new("lib", ReceiverType::GenericHmac, "lib-token"),
    ])
    .await;
    let flux_address: SocketAddr = flux
        .base_url()
        .trim_start_matches("http://")
        .parse()
        .expect("the stand-in's address");
    let proxy = ChaosProxy::start(flux_address).await;
    proxy.cut();

    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerOptions::embedded(dir.path())).await;
    let token = broker
        .create_agent(AGENT, "team/app", &["--grant-project", "team/lib"])
        .await;
    let through_proxy = format!("http://{}", proxy.address());
    let receivers = [
        ReceiverConfig::flux(
            "app",
            "team/app",
            "generic-hmac",
            "app-token",
            &through_proxy,
        ),
        ReceiverConfig::flux(
            "lib",
            "team/lib",
            "generic-hmac",
            "lib-token",
            &flux.base_url(),
        ),
    ];
    let mut agent = AgentProcess::start(&broker.agent_url(), &token, &receivers).await;
    connected(&mut agent).await;
    let app = Project::private(1, "team/app");
    let lib = Project::private(2, "team/lib");

    // Phase 1: connection refused.
    let first = broker
        .post_hook(&push(&app, "refs/heads/main", &sha(0), &sha(1)), &[])
        .await
        .seqs()[0];
    wait_until_failing(&broker, "app", |f| {
        f["last_http_status"] == 0
            && f["last_error"]
                .as_str()
                .is_some_and(|e| e.starts_with("connection failed"))
            && f["oldest_unacked_seq"] == first
    })
    .await;
    let text = broker.cli(&["agent", "show", AGENT]).await;
    assert!(text.contains("failing receivers: 1"), "{text}");
    assert!(text.contains("  app: failing since"), "{text}");
    assert!(
        text.contains(&format!("oldest unacked seq {first}")),
        "{text}"
    );

    // Another receiver is not held up.
    let lib_seq = broker
        .post_hook(&push(&lib, "refs/heads/main", &sha(0), &sha(7)), &[])
        .await
        .seqs()[0];
    let lib_hits = flux.wait_for_hits("lib", 1, PATIENCE).await;
    assert_eq!(lib_hits[0].status, 200);
    assert_eq!(after(&lib_hits[0]), sha(7));
    assert!(lib_seq > first);
    assert!(
        broker.agent_cursor(AGENT).await < first,
        "the failing receiver's push is not acked"
    );

    // Phase 2: reachable, but the Receiver is not Ready (503).
    flux.set_ready("app", false);
    proxy.restore().await;
    flux.wait_for_hits("app", 1, PATIENCE).await;
    broker
        .post_hook(&push(&app, "refs/heads/main", &sha(1), &sha(2)), &[])
        .await;
    wait_until_failing(&broker, "app", |f| f["last_http_status"] == 503).await;

    // The agent restarts meanwhile; a push arrives while it is away, another after.
    assert!(agent.stop().await, "the agent stops on SIGTERM");
    broker
        .post_hook(&push(&app, "refs/heads/main", &sha(2), &sha(3)), &[])
        .await;
    agent.restart();
    connected(&mut agent).await;
    let newest = broker
        .post_hook(&push(&app, "refs/heads/main", &sha(3), &sha(4)), &[])
        .await
        .seqs()[0];
    // The restarted agent got every unacked push again, and its one retry moved on to
    // the newest.
    eventually(PATIENCE, "a retry carrying the newest push", || async {
        flux.hits("app")
            .iter()
            .any(|hit| after(hit) == sha(4))
            .then_some(())
    })
    .await;
    wait_until_failing(&broker, "app", |f| {
        f["last_http_status"] == 503 && f["oldest_unacked_seq"] == first
    })
    .await;
    assert!(broker.agent_cursor(AGENT).await < first);
    assert!(
        flux.hits("app").iter().all(|hit| hit.status == 503),
        "nothing was delivered while it failed"
    );

    // Back: one call, for the newest push; everything is acked after it.
    flux.set_ready("app", true);
    broker.wait_for_cursor(AGENT, newest).await;
    let delivered: Vec<String> = flux
        .hits("app")
        .iter()
        .filter(|hit| hit.status == 200)
        .map(after)
        .collect();
    assert_eq!(delivered, [sha(4)], "called once, for the newest push");
    eventually(PATIENCE, "the recovery reported", || async {
        let agent = shown(&broker).await;
        agent["receiver_health"]["failing"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    })
    .await;
    let text = broker.cli(&["agent", "show", AGENT]).await;
    assert!(text.contains("failing receivers: none"), "{text}");
    agent
        .process()
        .wait_for_log("receiver recovered", PATIENCE)
        .await;
}

#[tokio::test]
async fn the_broker_keeps_streams_open_on_unknown_messages_and_bounds_health_reports() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerOptions::embedded(dir.path())).await;
    let token = broker.create_agent(AGENT, "team/app", &[]).await;
    let url = broker.agent_url();
    let mut stream = RawStream::open(&url, &token, &[("team/app", "")], None)
        .await
        .expect("the stream opens");
    assert!(stream.welcome.accepts_receiver_health);

    // An agent message of a kind this broker does not know decodes as an empty one.
    stream.send(None).await;
    let app = Project::private(1, "team/app");
    let seq = broker
        .post_hook(&push(&app, "refs/heads/main", &sha(0), &sha(1)), &[])
        .await
        .seqs()[0];
    let event = stream
        .next_event(PATIENCE)
        .await
        .expect("the stream stays open")
        .expect("the push arrives");
    assert_eq!(event.seq, seq);
    stream.ack(seq).await;
    broker.wait_for_cursor(AGENT, seq).await;

    // A report within the bounds is stored; one over them closes the stream, naming it.
    let status = |name: &str, error: &str| v1::ReceiverStatus {
        receiver: name.to_owned(),
        failing_since: None,
        attempts: 3,
        last_error: error.to_owned(),
        last_http_status: 503,
        oldest_unacked_seq: Some(seq),
    };
    stream
        .send(Some(agent_message::Message::ReceiverHealth(
            v1::ReceiverHealth {
                failing: vec![status("app", "HTTP 503 Service Unavailable")],
            },
        )))
        .await;
    wait_until_failing(&broker, "app", |f| f["attempts"] == 3).await;
    stream
        .send(Some(agent_message::Message::ReceiverHealth(
            v1::ReceiverHealth {
                failing: vec![status("app", &"x".repeat(513))],
            },
        )))
        .await;
    let closed = loop {
        match stream.next_message(PATIENCE).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the oversized report was accepted"),
            Err(status) => break status,
        }
    };
    assert_eq!(closed.code(), tonic::Code::InvalidArgument);
    assert!(
        closed
            .message()
            .starts_with("receiver_health.failing[0].last_error: longer than 512 bytes"),
        "{}",
        closed.message()
    );
    let kept = &shown(&broker).await["receiver_health"]["failing"][0];
    assert_eq!(
        kept["last_error"], "HTTP 503 Service Unavailable",
        "not overwritten"
    );
}
