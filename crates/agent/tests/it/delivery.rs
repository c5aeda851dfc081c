//! Receiver calls over real HTTP against the Flux Receiver stand-in: authentication per
//! type, body shape, retry policy and coalescing.

use std::time::Duration;

use fluxgate_agent::dispatch::AckReport;
use fluxgate_agent::receiver::retry::{DeliveryOutcome, DeliveryReport};
use fluxgate_e2e::flux_receiver::{FluxReceiverStandIn, Receiver, ReceiverType};
use reqwest::StatusCode;

use crate::support::{PATIENCE, assert_no_ack, config, dispatcher, next_acks, push};

/// The only outcome of an ack, checking there is exactly one.
fn single(ack: &AckReport) -> &DeliveryReport {
    assert_eq!(ack.outcomes.len(), 1, "{ack:?}");
    &ack.outcomes[0].report
}

fn generic(flux: &FluxReceiverStandIn, name: &str, token: &str, project: &str) -> String {
    format!(
        "  - {{name: {name}, project: {project}, type: generic, token: {token}, \
         webhook_receiver_url: '{}'}}\n",
        flux.base_url()
    )
}

/// Two generic receivers, "down" (not Ready: every call fails) on `down_project` and
/// "up" on `up_project`.
async fn down_and_up(
    down_project: &str,
    up_project: &str,
) -> (FluxReceiverStandIn, fluxgate_agent::AgentConfig) {
    let flux = FluxReceiverStandIn::start([
        Receiver::new("down", ReceiverType::Generic, "d"),
        Receiver::new("up", ReceiverType::Generic, "u"),
    ])
    .await;
    flux.set_ready("down", false);
    let config = config(
        "http://127.0.0.1:1",
        &format!(
            "{}{}",
            generic(&flux, "down", "d", down_project),
            generic(&flux, "up", "u", up_project)
        ),
    );
    (flux, config)
}

#[tokio::test]
async fn every_receiver_type_authenticates_and_gets_the_small_body() {
    let flux = FluxReceiverStandIn::start([
        Receiver::new("plain", ReceiverType::Generic, "p"),
        Receiver::new("signed", ReceiverType::GenericHmac, "my-token"),
        Receiver::new("gitlab", ReceiverType::Gitlab, "s3cr3t")
            .with_events(&["Push Hook", "Tag Push Hook"]),
    ])
    .await;
    let base = flux.base_url();
    let config = config(
        "http://127.0.0.1:1",
        &format!(
            "  - {{name: plain, project: group/app, type: generic, token: p, webhook_receiver_url: '{base}'}}
  - {{name: signed, project: group/app, type: generic-hmac, token: my-token, webhook_receiver_url: '{base}'}}
  - {{name: gitlab, project: group/app, type: gitlab, token: s3cr3t, webhook_receiver_url: '{base}'}}
"
        ),
    );
    let (mut dispatcher, _workers) = dispatcher(&config);

    assert!(
        dispatcher
            .dispatch(push(1, "Group/App", "refs/heads/main"), 1)
            .is_none()
    );
    let ack = next_acks(&mut dispatcher, 1).await.remove(0);
    assert_eq!(ack.ticket.seq, 1);
    let mut names: Vec<&str> = ack.outcomes.iter().map(|o| o.receiver.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["gitlab", "plain", "signed"]);
    for outcome in &ack.outcomes {
        assert_eq!(
            outcome.report.outcome,
            DeliveryOutcome::Delivered,
            "{outcome:?}"
        );
        assert_eq!(
            (outcome.report.http_status, outcome.report.attempts),
            (200, 1)
        );
    }

    let hit = flux.wait_for_hits("plain", 1, PATIENCE).await.remove(0);
    assert_eq!(hit.method, "POST");
    assert_eq!(hit.header("content-type"), Some("application/json"));
    assert_eq!(
        hit.json(),
        serde_json::json!({
            "object_kind": "push",
            "ref": "refs/heads/main",
            "before": "0".repeat(40),
            "after": format!("{:040}", 1),
            "project": {"id": 42, "path_with_namespace": "Group/App"},
            "seq": 1,
            "event_id": "event-1",
        })
    );
    let gitlab = flux.wait_for_hits("gitlab", 1, PATIENCE).await;
    assert_eq!(gitlab[0].header("x-gitlab-event"), Some("Push Hook"));

    dispatcher.dispatch(push(2, "group/app", "refs/tags/v1.0"), 1);
    next_acks(&mut dispatcher, 1).await;
    let gitlab = flux.wait_for_hits("gitlab", 2, PATIENCE).await;
    assert_eq!(gitlab[1].header("x-gitlab-event"), Some("Tag Push Hook"));
    assert_eq!(gitlab[1].json()["object_kind"], "tag_push");
}

#[tokio::test]
async fn an_event_for_no_receiver_is_acked_at_once() {
    let flux = FluxReceiverStandIn::start([Receiver::new("app", ReceiverType::Generic, "t")]).await;
    let config = config(
        "http://127.0.0.1:1",
        &generic(&flux, "app", "t", "group/app"),
    );
    let (mut dispatcher, _workers) = dispatcher(&config);
    let ack = dispatcher
        .dispatch(push(7, "group/other", "refs/heads/main"), 1)
        .expect("acked at once");
    assert_eq!(ack.ticket.seq, 7);
    assert!(ack.outcomes.is_empty());
    assert!(flux.all_hits().is_empty());
}

#[tokio::test]
async fn a_404_is_retried_then_delivered() {
    let flux = FluxReceiverStandIn::start([Receiver::new("app", ReceiverType::Generic, "t")]).await;
    flux.fail_next("app", StatusCode::NOT_FOUND, 1);
    let config = config(
        "http://127.0.0.1:1",
        &generic(&flux, "app", "t", "group/app"),
    );
    let (mut dispatcher, _workers) = dispatcher(&config);
    dispatcher.dispatch(push(1, "group/app", "refs/heads/main"), 1);
    let ack = next_acks(&mut dispatcher, 1).await.remove(0);
    let report = single(&ack);
    assert_eq!(report.outcome, DeliveryOutcome::Delivered);
    assert_eq!((report.http_status, report.attempts), (200, 2));
    assert!(report.error.is_empty());
    let statuses: Vec<u16> = flux.hits("app").iter().map(|h| h.status.as_u16()).collect();
    assert_eq!(statuses, [404, 200]);
}

#[tokio::test]
async fn a_400_is_rejected_after_one_attempt() {
    let flux = FluxReceiverStandIn::start([
        // Flux answers 400 when the GitLab event is not in `events`.
        Receiver::new("tags-only", ReceiverType::Gitlab, "s3cr3t").with_events(&["Tag Push Hook"]),
        Receiver::new("app", ReceiverType::Generic, "t"),
    ])
    .await;
    flux.fail_next("app", StatusCode::PAYLOAD_TOO_LARGE, 1);
    let base = flux.base_url();
    let config = config(
        "http://127.0.0.1:1",
        &format!(
            "  - {{name: tags-only, project: group/app, type: gitlab, token: s3cr3t, webhook_receiver_url: '{base}'}}\n{}",
            generic(&flux, "app", "t", "group/app")
        ),
    );
    let (mut dispatcher, _workers) = dispatcher(&config);
    dispatcher.dispatch(push(1, "group/app", "refs/heads/main"), 1);
    let ack = next_acks(&mut dispatcher, 1).await.remove(0);
    for outcome in &ack.outcomes {
        let expected = if outcome.receiver == "app" { 413 } else { 400 };
        assert_eq!(
            outcome.report.outcome,
            DeliveryOutcome::Rejected,
            "{outcome:?}"
        );
        assert_eq!(
            (outcome.report.http_status, outcome.report.attempts),
            (expected, 1)
        );
        assert!(
            outcome.report.error.contains(&expected.to_string()),
            "{outcome:?}"
        );
    }
    assert_eq!(flux.hits("tags-only").len(), 1);
    assert_eq!(flux.hits("app").len(), 1);
}

#[tokio::test]
async fn a_receiver_answering_503_is_retried_until_200_and_acked_only_then() {
    let flux = FluxReceiverStandIn::start([Receiver::new("app", ReceiverType::Generic, "t")]).await;
    // Flux answers 503 while the Receiver is not Ready.
    flux.set_ready("app", false);
    let config = config(
        "http://127.0.0.1:1",
        &generic(&flux, "app", "t", "group/app"),
    );
    let (mut dispatcher, _workers) = dispatcher(&config);
    let mut health = dispatcher.health().subscribe();
    dispatcher.dispatch(push(1, "group/app", "refs/heads/main"), 1);

    // Far more calls than any retry budget, and longer than report_after (300ms).
    flux.wait_for_hits("app", 12, PATIENCE).await;
    assert_no_ack(&mut dispatcher, "the receiver has only answered 503").await;
    tokio::time::timeout(PATIENCE, async {
        while dispatcher.health().report().is_empty() {
            health.changed().await.expect("board alive");
        }
    })
    .await
    .expect("the receiver is reported as failing");
    let failing = dispatcher.health().report().remove(0);
    assert_eq!(failing.receiver, "app");
    assert_eq!(failing.last_http_status, 503);
    assert_eq!(failing.last_error, "HTTP 503 Service Unavailable");
    assert_eq!(failing.oldest_unacked_seq.map(|s| s.get()), Some(1));
    assert!(failing.attempts >= 2, "{failing:?}");

    flux.set_ready("app", true);
    let ack = next_acks(&mut dispatcher, 1).await.remove(0);
    let report = single(&ack);
    assert_eq!(report.outcome, DeliveryOutcome::Delivered);
    assert_eq!(report.http_status, 200);
    assert!(report.error.is_empty(), "{report:?}");
    let statuses: Vec<u16> = flux.hits("app").iter().map(|h| h.status.as_u16()).collect();
    let (last, failed) = statuses.split_last().expect("hits");
    assert_eq!(*last, 200);
    assert!(failed.iter().all(|s| *s == 503), "{statuses:?}");
    assert_eq!(
        report.attempts as usize,
        statuses.len(),
        "every call is counted"
    );
    assert!(
        dispatcher.health().report().is_empty(),
        "recovered receivers leave the report"
    );
}

#[tokio::test]
async fn an_unreachable_receiver_is_retried_and_reported_without_its_url() {
    // Bind and drop a listener to get a port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = closed.local_addr().expect("address");
    drop(closed);
    let config = config(
        "http://127.0.0.1:1",
        &format!(
            "  - {{name: gone, project: group/app, type: generic, url: 'http://{address}/hook/x'}}\n"
        ),
    );
    let (mut dispatcher, _workers) = dispatcher(&config);
    let mut health = dispatcher.health().subscribe();
    dispatcher.dispatch(push(1, "group/app", "refs/heads/main"), 1);
    tokio::time::timeout(PATIENCE, async {
        while dispatcher.health().report().is_empty() {
            health.changed().await.expect("board alive");
        }
    })
    .await
    .expect("the receiver is reported as failing");
    let failing = dispatcher.health().report().remove(0);
    assert_eq!(failing.last_http_status, 0, "no answer, no status");
    assert!(
        failing.last_error.starts_with("connection failed"),
        "{failing:?}"
    );
    assert!(
        !failing.last_error.contains("/hook/x"),
        "the URL stays out of errors: {failing:?}"
    );
    assert_no_ack(&mut dispatcher, "the receiver was never reached").await;
}

#[tokio::test]
async fn one_failing_receiver_does_not_delay_another_receivers_acks() {
    let (flux, config) = down_and_up("group/down", "group/up").await;
    let (mut dispatcher, _workers) = dispatcher(&config);
    dispatcher.dispatch(push(1, "group/down", "refs/heads/main"), 1);
    flux.wait_for_hits("down", 2, PATIENCE).await;
    for seq in 2..=4 {
        dispatcher.dispatch(push(seq, "group/up", "refs/heads/main"), 1);
    }
    let mut acked: Vec<u64> = next_acks(&mut dispatcher, 3)
        .await
        .iter()
        .map(|ack| {
            // Delivered, or coalesced into a later delivered event.
            assert_ne!(single(ack).outcome, DeliveryOutcome::Rejected, "{ack:?}");
            assert_eq!(single(ack).http_status, 200, "{ack:?}");
            ack.ticket.seq
        })
        .collect();
    acked.sort_unstable();
    assert_eq!(acked, [2, 3, 4], "the healthy receiver's events are acked");
    assert_no_ack(&mut dispatcher, "seq 1's receiver keeps failing").await;

    flux.set_ready("down", true);
    let ack = next_acks(&mut dispatcher, 1).await.remove(0);
    assert_eq!(ack.ticket.seq, 1);
    assert_eq!(single(&ack).outcome, DeliveryOutcome::Delivered);
}

#[tokio::test]
async fn a_burst_while_failing_ends_in_one_call_for_the_newest_event_and_acks_all() {
    let flux = FluxReceiverStandIn::start([Receiver::new("app", ReceiverType::Generic, "t")]).await;
    flux.set_ready("app", false);
    let config = config(
        "http://127.0.0.1:1",
        &generic(&flux, "app", "t", "group/app"),
    );
    let (mut dispatcher, _workers) = dispatcher(&config);
    dispatcher.dispatch(push(1, "group/app", "refs/heads/main"), 1);
    flux.wait_for_hits("app", 2, PATIENCE).await;
    for seq in 2..=10 {
        dispatcher.dispatch(push(seq, "group/app", "refs/heads/main"), 1);
    }
    // The running retry moves on to the newest event.
    let seq_of = |hit: &fluxgate_e2e::flux_receiver::Hit| hit.json()["seq"].as_u64();
    fluxgate_e2e::harness::eventually(PATIENCE, "a retry carrying seq 10", || async {
        flux.hits("app")
            .iter()
            .any(|hit| seq_of(hit) == Some(10))
            .then_some(())
    })
    .await;
    assert_no_ack(&mut dispatcher, "nothing was delivered yet").await;

    flux.set_ready("app", true);
    let mut acks = next_acks(&mut dispatcher, 10).await;
    acks.sort_by_key(|ack| ack.ticket.seq);
    let hits = flux.hits("app");
    let delivered: Vec<Option<u64>> = hits
        .iter()
        .filter(|hit| hit.status == StatusCode::OK)
        .map(seq_of)
        .collect();
    assert_eq!(delivered, [Some(10)], "one successful call, for the newest");
    let sent: Vec<u64> = hits.iter().filter_map(seq_of).collect();
    let first_ten = sent.iter().position(|seq| *seq == 10).expect("seq 10 sent");
    assert!(
        sent[first_ten..].iter().all(|seq| *seq == 10),
        "once on the newest event, the retry never goes back: {sent:?}"
    );
    for ack in &acks {
        let report = single(ack);
        if ack.ticket.seq == 10 {
            assert_eq!(report.outcome, DeliveryOutcome::Delivered, "{ack:?}");
        } else {
            assert_eq!(report.outcome, DeliveryOutcome::Coalesced, "{ack:?}");
            assert_eq!(report.error, "coalesced into seq 10");
            assert_eq!(report.http_status, 200);
        }
    }
    assert_eq!(
        acks.iter().map(|a| a.ticket.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_no_ack(&mut dispatcher, "every event was acked once").await;
}

#[tokio::test]
async fn a_burst_against_a_slow_receiver_costs_two_calls_and_acks_every_event() {
    let flux = FluxReceiverStandIn::start([Receiver::new("app", ReceiverType::Generic, "t")]).await;
    flux.set_response_delay("app", Duration::from_millis(300));
    let config = config(
        "http://127.0.0.1:1",
        &generic(&flux, "app", "t", "group/app"),
    );
    let (mut dispatcher, _workers) = dispatcher(&config);

    // The first event goes out at once; the other nine arrive while it is in flight.
    dispatcher.dispatch(push(1, "group/app", "refs/heads/main"), 1);
    flux.wait_for_hits("app", 1, PATIENCE).await;
    for seq in 2..=10 {
        assert!(
            dispatcher
                .dispatch(push(seq, "group/app", "refs/heads/main"), 1)
                .is_none()
        );
    }
    let mut acks = next_acks(&mut dispatcher, 10).await;
    acks.sort_by_key(|ack| ack.ticket.seq);

    let calls = flux.hits("app");
    assert!(calls.len() <= 2, "{} calls", calls.len());
    let sent: Vec<u64> = calls
        .iter()
        .map(|hit| hit.json()["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(sent, [1, 10], "the first event, then the newest");

    for ack in &acks {
        let report = single(ack);
        match ack.ticket.seq {
            1 | 10 => assert_eq!(report.outcome, DeliveryOutcome::Delivered, "{ack:?}"),
            _ => {
                assert_eq!(report.outcome, DeliveryOutcome::Coalesced, "{ack:?}");
                assert_eq!(report.error, "coalesced into seq 10");
                assert_eq!((report.http_status, report.attempts), (200, 1));
            }
        }
    }
    assert_eq!(acks.len(), 10);
}

#[tokio::test]
async fn removing_a_receiver_finishes_the_events_that_waited_only_for_it() {
    let (flux, config) = down_and_up("group/app", "group/app").await;
    let (mut dispatcher, _workers) = dispatcher(&config);
    dispatcher.dispatch(push(1, "group/app", "refs/heads/main"), 1);
    flux.wait_for_hits("down", 2, PATIENCE).await;
    assert_no_ack(
        &mut dispatcher,
        "seq 1 still waits for the failing receiver",
    )
    .await;

    // The failing receiver's source is gone: seq 1 is done with the other one's outcome.
    let remaining: Vec<_> = config
        .receivers
        .iter()
        .filter(|r| r.name == "up")
        .cloned()
        .collect();
    let mut acks = dispatcher.set_receivers(&remaining);
    if acks.is_empty() {
        acks = next_acks(&mut dispatcher, 1).await;
    }
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!(acks[0].ticket.seq, 1);
    let names: Vec<&str> = acks[0]
        .outcomes
        .iter()
        .map(|o| o.receiver.as_str())
        .collect();
    assert_eq!(names, ["up"]);
    // Its worker stopped: no more calls, however long it would have retried. A call already
    // on the wire when it stopped may still land (on a loaded machine it reaches the
    // stand-in after this count), so at most one more is allowed; a retry loop makes more.
    let calls = flux.hits("down").len();
    dispatcher.dispatch(push(2, "group/app", "refs/heads/main"), 1);
    assert_eq!(next_acks(&mut dispatcher, 1).await[0].ticket.seq, 2);
    // Five times the longest backoff (40ms): a retry loop would call again meanwhile.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        flux.hits("down").len() <= calls + 1,
        "the removed receiver is not called again: {} calls after {calls}",
        flux.hits("down").len()
    );
}

#[tokio::test]
async fn a_changed_receiver_reaches_its_running_retry() {
    let flux = FluxReceiverStandIn::start([
        Receiver::new("old", ReceiverType::Generic, "t"),
        Receiver::new("new", ReceiverType::Generic, "t"),
    ])
    .await;
    flux.set_ready("old", false);
    let config = config(
        "http://127.0.0.1:1",
        &format!(
            "  - {{name: app, project: group/app, type: generic, url: '{}'}}\n",
            flux.webhook_url("old")
        ),
    );
    let (mut dispatcher, _workers) = dispatcher(&config);
    dispatcher.dispatch(push(1, "group/app", "refs/heads/main"), 1);
    flux.wait_for_hits("old", 2, PATIENCE).await;

    // Same receiver name, new URL (as when a Receiver's webhook path changes).
    let mut moved = config.receivers[0].clone();
    moved.url = fluxgate_agent::flux_path::WebhookUrl::parse(&flux.webhook_url("new")).unwrap();
    assert!(dispatcher.set_receivers(&[moved]).is_empty());
    let ack = next_acks(&mut dispatcher, 1).await.remove(0);
    assert_eq!(ack.ticket.seq, 1);
    assert_eq!(single(&ack).outcome, DeliveryOutcome::Delivered);
    assert_eq!(flux.hits("new").len(), 1, "the retry went to the new URL");
}
