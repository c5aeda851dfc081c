//! The agent binary's library run against the fake broker and the Flux Receiver
//! stand-in: Hello, acks, reconnect with the cursor, cursor expiry, token rejection.

use std::collections::BTreeSet;
use std::time::Duration;

use fluxgate_e2e::flux_receiver::{FluxReceiverStandIn, Receiver, ReceiverType};
use fluxgate_proto::v1 as proto;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::fake_broker::{FakeBroker, FakeStream};
use crate::support::{AGENT_TOKEN, PATIENCE, config};

/// A running agent, stopped (and checked to stop promptly) by [`RunningAgent::stop`] or
/// cancelled on drop.
struct RunningAgent {
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl RunningAgent {
    fn start(config: fluxgate_agent::AgentConfig) -> Self {
        let shutdown = CancellationToken::new();
        let cancel = shutdown.clone();
        let task = tokio::spawn(async move {
            fluxgate_agent::run(config, cancel)
                .await
                .expect("agent starts");
        });
        Self {
            shutdown,
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .expect("the agent stops promptly on shutdown")
                .expect("the agent task does not panic");
        }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Three Receivers: two on `group/app` main (one is a mirror entry that shares the
/// subscription), one on tags with the gitlab type, one on another project.
async fn flux() -> FluxReceiverStandIn {
    FluxReceiverStandIn::start([
        Receiver::new("app", ReceiverType::GenericHmac, "app-token"),
        Receiver::new("app-mirror", ReceiverType::Generic, "mirror-token"),
        Receiver::new("tags", ReceiverType::Gitlab, "gl-token").with_events(&["Tag Push Hook"]),
        Receiver::new("other", ReceiverType::Generic, "other-token"),
    ])
    .await
}

fn agent_config(broker: &FakeBroker, flux: &FluxReceiverStandIn) -> fluxgate_agent::AgentConfig {
    let base = flux.base_url();
    config(
        &broker.url(),
        &format!(
            "  - {{name: app, project: group/app, ref: main, type: generic-hmac, token: app-token, webhook_receiver_url: '{base}'}}
  - {{name: app-mirror, project: Group/App.git, ref: main, type: generic, token: mirror-token, webhook_receiver_url: '{base}'}}
  - {{name: tags, project: group/app, ref: 'refs/tags/v*', type: gitlab, token: gl-token, webhook_receiver_url: '{base}'}}
  - {{name: other, project: group/other, type: generic, token: other-token, webhook_receiver_url: '{base}'}}
"
        ),
    )
}

/// (receiver, outcome, http_status, attempts) of an ack, sorted by receiver.
fn outcomes(ack: &proto::Ack) -> Vec<(String, proto::Outcome, u32, u32)> {
    let mut outcomes: Vec<_> = ack
        .outcomes
        .iter()
        .map(|o| {
            let outcome = proto::Outcome::try_from(o.outcome).expect("known outcome");
            (o.receiver.clone(), outcome, o.http_status, o.attempts)
        })
        .collect();
    outcomes.sort();
    outcomes
}

fn delivered(receiver: &str) -> (String, proto::Outcome, u32, u32) {
    (receiver.to_owned(), proto::Outcome::Delivered, 200, 1)
}

/// Sends an event nobody subscribed to and waits for its ack: everything the agent was
/// sent before it has been handled by the time this returns.
async fn barrier(stream: &mut FakeStream, seq: u64) {
    stream.event(seq, "nobody/wants-this", "refs/heads/main", &[]);
    let ack = stream.next_ack().await;
    assert_eq!((ack.seq, ack.outcomes.len()), (seq, 0));
}

#[tokio::test]
async fn hello_then_acks_with_the_right_outcomes() {
    let flux = flux().await;
    let mut broker = FakeBroker::start().await;
    let agent = RunningAgent::start(agent_config(&broker, &flux));

    let mut stream = broker.next_stream().await;
    assert_eq!(
        stream.authorization.as_deref(),
        Some(format!("Bearer {AGENT_TOKEN}").as_str())
    );
    let hello = &stream.hello;
    assert_eq!(hello.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(hello.cluster_name, "test-cluster");
    assert_eq!(hello.resume_after, None);
    let subscriptions: BTreeSet<(String, String)> = hello
        .subscriptions
        .iter()
        .map(|s| (s.project.to_lowercase(), s.ref_pattern.clone()))
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("group/app", "main"),
        ("group/app", "refs/tags/v*"),
        ("group/other", ""),
    ]
    .into_iter()
    .map(|(p, r)| (p.to_owned(), r.to_owned()))
    .collect();
    assert_eq!(subscriptions, expected);

    stream.welcome(0, false);
    stream.event(1, "group/app", "refs/heads/main", &["group/app"]);
    let ack = stream.next_ack().await;
    assert_eq!(ack.seq, 1);
    assert_eq!(outcomes(&ack), [delivered("app"), delivered("app-mirror")]);

    stream.event(2, "group/app", "refs/tags/v1.0", &["group/app"]);
    let ack = stream.next_ack().await;
    assert_eq!((ack.seq, outcomes(&ack)), (2, vec![delivered("tags")]));
    let tag_hit = flux.wait_for_hits("tags", 1, PATIENCE).await.remove(0);
    assert_eq!(tag_hit.header("x-gitlab-event"), Some("Tag Push Hook"));

    // Renamed since the agent subscribed: found through matched_projects.
    stream.event(3, "new-group/app", "refs/heads/main", &["group/app"]);
    let ack = stream.next_ack().await;
    assert_eq!(ack.seq, 3);
    assert_eq!(outcomes(&ack), [delivered("app"), delivered("app-mirror")]);
    let renamed = flux.wait_for_hits("app", 2, PATIENCE).await.remove(1);
    assert_eq!(
        renamed.json()["project"]["path_with_namespace"],
        "new-group/app"
    );

    // A receiver that refuses: the ack says so.
    flux.fail_next("other", reqwest::StatusCode::BAD_REQUEST, 1);
    stream.event(4, "group/other", "refs/heads/dev", &["group/other"]);
    let ack = stream.next_ack().await;
    assert_eq!(
        outcomes(&ack),
        [("other".to_owned(), proto::Outcome::Rejected, 400, 1)]
    );
    assert!(ack.outcomes[0].error.contains("400"));

    barrier(&mut stream, 5).await;
    agent.stop().await;
}

#[tokio::test]
async fn reconnects_after_the_stream_closes_and_resumes_after_its_cursor() {
    let flux = flux().await;
    flux.set_response_delay("other", Duration::from_millis(300));
    let mut broker = FakeBroker::start().await;
    let agent = RunningAgent::start(agent_config(&broker, &flux));

    let mut first = broker.next_stream().await;
    first.welcome(0, false);
    first.event(1, "group/app", "refs/heads/main", &[]);
    assert_eq!(first.next_ack().await.seq, 1);
    first.keepalive(6);
    // Event 7 is still being delivered (slow receiver) when the stream closes: its ack
    // must not leak onto the next stream, and the cursor must stay below it.
    first.event(7, "group/other", "refs/heads/main", &[]);
    flux.wait_for_hits("other", 1, PATIENCE).await;
    first.close();

    let mut second = broker.next_stream().await;
    assert_eq!(second.hello.resume_after, Some(6));
    second.welcome(6, false);
    second.event(7, "group/other", "refs/heads/main", &[]);
    let ack = second.next_ack().await;
    assert_eq!((ack.seq, outcomes(&ack)), (7, vec![delivered("other")]));
    barrier(&mut second, 8).await;

    second.fail(tonic::Status::unavailable("replica draining"));
    let third = broker.next_stream().await;
    assert_eq!(third.hello.resume_after, Some(8));
    agent.stop().await;
}

/// The agent sends no HTTP/2 PINGs of its own: a broker that stops sending (here: the
/// stream stays open and says nothing after a Welcome promising a keepalive every second)
/// is noticed by the session's silence limit, three keepalives, and the agent reconnects.
#[tokio::test]
async fn a_broker_gone_silent_for_three_keepalives_ends_the_session_and_the_agent_reconnects() {
    let flux = flux().await;
    let mut broker = FakeBroker::start().await;
    let agent = RunningAgent::start(agent_config(&broker, &flux));

    let first = broker.next_stream().await;
    first.welcome_with_keepalive(1);
    let welcomed = std::time::Instant::now();
    let second = broker.next_stream().await;
    let silent_for = welcomed.elapsed();
    assert!(
        silent_for >= Duration::from_millis(2900),
        "the session ended after {silent_for:?} of silence, before three keepalives"
    );
    drop((first, second));
    agent.stop().await;
}

#[tokio::test]
async fn an_expired_cursor_triggers_every_receiver_once() {
    let flux = flux().await;
    let mut broker = FakeBroker::start().await;
    let agent = RunningAgent::start(agent_config(&broker, &flux));

    let mut stream = broker.next_stream().await;
    stream.welcome(50, true);
    for name in ["app", "app-mirror", "tags", "other"] {
        let hits = flux.wait_for_hits(name, 1, PATIENCE).await;
        assert_eq!(hits[0].status, 200, "{name} accepts the resync");
        assert_eq!(hits[0].json()["seq"], 0, "{name}: a resync has seq 0");
        let body = hits[0].json();
        assert_eq!(body["resync"]["reason"], "cursor_expired", "{name}: {body}");
        assert!(
            body.get("after").is_none(),
            "{name}: no commit to name: {body}"
        );
    }
    assert_eq!(
        flux.hits("tags")[0].header("x-gitlab-event"),
        Some("Tag Push Hook"),
        "a tags-only receiver is resynced with a tag push"
    );
    barrier(&mut stream, 51).await;
    for name in ["app", "app-mirror", "tags", "other"] {
        assert_eq!(flux.hits(name).len(), 1, "{name} is triggered once");
    }
    agent.stop().await;
}

#[tokio::test]
async fn a_rejected_token_is_retried_until_the_broker_accepts_it() {
    let flux = flux().await;
    let mut broker = FakeBroker::start().await;
    broker.reject_next(tonic::Status::unauthenticated("unknown token"));
    broker.reject_next(tonic::Status::permission_denied("revoked"));
    let agent = RunningAgent::start(agent_config(&broker, &flux));

    let stream = broker.next_stream().await;
    assert_eq!(broker.attempts(), 3);
    assert_eq!(stream.hello.resume_after, None);
    agent.stop().await;
}

#[tokio::test]
async fn fails_over_between_broker_addresses_and_resumes_from_its_cursor() {
    let flux = flux().await;
    let mut first = FakeBroker::start().await;
    let mut second = FakeBroker::start().await;
    let base = flux.base_url();
    let agent = RunningAgent::start(config(
        &format!("[{}, {}]", first.url(), second.url()),
        &format!(
            "  - {{name: app, project: group/app, type: generic-hmac, token: app-token, webhook_receiver_url: '{base}'}}\n"
        ),
    ));

    let mut stream = first.next_stream().await;
    stream.welcome(0, false);
    stream.event(3, "group/app", "refs/heads/main", &[]);
    assert_eq!(stream.next_ack().await.seq, 3);
    // The first replica goes away; the agent moves on to the second address.
    stream.fail(tonic::Status::unavailable("replica shutting down"));
    drop(first);

    let moved = second.next_stream().await;
    assert_eq!(moved.hello.resume_after, Some(3));
    agent.stop().await;
}

#[tokio::test]
async fn a_failing_receiver_is_reported_and_its_retry_survives_a_reconnect() {
    let flux = flux().await;
    flux.set_ready("other", false);
    let mut broker = FakeBroker::start().await;
    let agent = RunningAgent::start(agent_config(&broker, &flux));

    let mut first = broker.next_stream().await;
    first.welcome_with_health(0);
    assert!(
        first.next_health().await.failing.is_empty(),
        "right after the Welcome: every receiver healthy, clearing an earlier run's report"
    );
    first.event(5, "group/other", "refs/heads/main", &[]);
    // report_after is 300ms in the test configuration.
    let report = first.next_health().await;
    assert_eq!(report.failing.len(), 1, "{report:?}");
    let failing = &report.failing[0];
    assert_eq!(failing.receiver, "other");
    assert_eq!(failing.last_http_status, 503);
    assert_eq!(failing.oldest_unacked_seq, Some(5));
    assert!(failing.failing_since.is_some());
    assert!(!first.has_pending_message(), "no ack while it fails");
    first.close();

    // The broker never got an ack for 5, so it sends it again, and a newer push.
    let mut second = broker.next_stream().await;
    assert_eq!(second.hello.resume_after, None, "the cursor stayed below 5");
    second.welcome_with_health(0);
    let report = second.next_health().await;
    assert_eq!(report.failing.len(), 1, "still failing: {report:?}");
    second.event(5, "group/other", "refs/heads/main", &[]);
    second.event(6, "group/other", "refs/heads/main", &[]);
    fluxgate_e2e::harness::eventually(PATIENCE, "the running retry to carry seq 6", || async {
        flux.hits("other")
            .iter()
            .any(|hit| hit.json()["seq"] == 6)
            .then_some(())
    })
    .await;

    flux.set_ready("other", true);
    let mut acks = [second.next_ack().await, second.next_ack().await];
    acks.sort_by_key(|ack| ack.seq);
    assert_eq!(
        acks.iter().map(outcomes).collect::<Vec<_>>(),
        [
            vec![(
                "other".to_owned(),
                proto::Outcome::Coalesced,
                200,
                acks[0].outcomes[0].attempts
            )],
            vec![(
                "other".to_owned(),
                proto::Outcome::Delivered,
                200,
                acks[1].outcomes[0].attempts
            )],
        ]
    );
    assert_eq!(acks[0].outcomes[0].error, "coalesced into seq 6");
    let delivered: Vec<serde_json::Value> = flux
        .hits("other")
        .iter()
        .filter(|hit| hit.status == 200)
        .map(|hit| hit.json()["seq"].clone())
        .collect();
    assert_eq!(delivered, [6], "one successful call, for the newest push");
    // Recovery is reported (periodic repeats of the failing report may come first).
    loop {
        if second.next_health().await.failing.is_empty() {
            break;
        }
    }
    barrier(&mut second, 7).await;
    agent.stop().await;
}

#[tokio::test]
async fn a_new_receiver_set_changes_the_subscriptions_on_the_open_stream() {
    use std::sync::Arc;

    use fluxgate_agent::connection::Connection;
    use fluxgate_agent::readiness::Readiness;
    use fluxgate_agent::receiver::ReceiverSet;

    let flux = flux().await;
    let mut broker = FakeBroker::start().await;
    let config = agent_config(&broker, &flux);
    let (publish, receivers) =
        tokio::sync::watch::channel::<ReceiverSet>(Arc::new(config.receivers[..1].to_vec()));
    let (dispatcher, _workers) = crate::support::dispatcher(&config);
    let readiness = Arc::new(Readiness::new(false));
    let connection = Connection::new(&config, dispatcher, receivers, Arc::clone(&readiness), None)
        .expect("connection");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(connection.run(shutdown.clone()));

    let mut stream = broker.next_stream().await;
    let hello: Vec<(String, String)> = stream
        .hello
        .subscriptions
        .iter()
        .map(|s| (s.project.clone(), s.ref_pattern.clone()))
        .collect();
    assert_eq!(hello, [("group/app".to_owned(), "main".to_owned())]);
    stream.welcome(0, false);
    crate::support::wait_until("the stream is up", || readiness.report().ready).await;

    // Discovery found "other" and lost "app": one change, on the same stream.
    publish.send_replace(Arc::new(vec![config.receivers[3].clone()]));
    let change = stream.next_subscription_change().await;
    let pairs = |list: &[proto::Subscription]| -> Vec<(String, String)> {
        list.iter()
            .map(|s| (s.project.clone(), s.ref_pattern.clone()))
            .collect()
    };
    assert_eq!(
        pairs(&change.add),
        [("group/other".to_owned(), String::new())]
    );
    assert_eq!(
        pairs(&change.remove),
        [("group/app".to_owned(), "main".to_owned())]
    );
    stream.event(1, "group/other", "refs/heads/main", &[]);
    let ack = stream.next_ack().await;
    assert_eq!(outcomes(&ack), [delivered("other")]);
    assert_eq!(broker.attempts(), 1, "no reconnect");

    shutdown.cancel();
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("the connection stops")
        .expect("no panic");
    assert!(
        !readiness.report().ready,
        "the stream is down after shutdown"
    );
}
