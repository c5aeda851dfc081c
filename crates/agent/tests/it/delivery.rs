//! Receiver calls over real HTTP against the Flux Receiver stand-in: authentication per
//! type, body shape, retry policy and coalescing.

use std::time::Duration;

use fluxgate_agent::dispatch::AckReport;
use fluxgate_agent::receiver::retry::{DeliveryOutcome, DeliveryReport};
use fluxgate_e2e::flux_receiver::{FluxReceiverStandIn, Receiver, ReceiverType};
use reqwest::StatusCode;

use crate::support::{PATIENCE, config, dispatcher, next_acks, push};

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
async fn a_receiver_that_stays_unavailable_fails_after_max_attempts() {
    let flux = FluxReceiverStandIn::start([Receiver::new("app", ReceiverType::Generic, "t")]).await;
    flux.fail_next("app", StatusCode::SERVICE_UNAVAILABLE, 10);
    let config = config(
        "http://127.0.0.1:1",
        &generic(&flux, "app", "t", "group/app"),
    );
    let (mut dispatcher, _workers) = dispatcher(&config);
    dispatcher.dispatch(push(1, "group/app", "refs/heads/main"), 1);
    let ack = next_acks(&mut dispatcher, 1).await.remove(0);
    let report = single(&ack);
    assert_eq!(report.outcome, DeliveryOutcome::Failed);
    assert_eq!((report.http_status, report.attempts), (503, 3));
    assert!(
        report.error.contains("gave up after 3 attempts"),
        "{report:?}"
    );
    assert_eq!(flux.hits("app").len(), 3);
}

#[tokio::test]
async fn an_unreachable_receiver_fails_without_a_status() {
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
    dispatcher.dispatch(push(1, "group/app", "refs/heads/main"), 1);
    let ack = next_acks(&mut dispatcher, 1).await.remove(0);
    let report = single(&ack);
    assert_eq!(report.outcome, DeliveryOutcome::Failed);
    assert_eq!((report.http_status, report.attempts), (0, 3));
    assert!(
        !report.error.contains("/hook/x"),
        "the URL stays out of errors: {report:?}"
    );
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
