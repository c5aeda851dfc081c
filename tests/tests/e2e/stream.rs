//! The broker's delivery contract, observed with a bare gRPC client: backlog then live
//! events in seq order without gaps or duplicates, access enforced by the broker, slow
//! agents closed without loss, and clear errors.

use std::collections::BTreeSet;
use std::time::Duration;

use fluxgate_e2e::harness::payloads::{push, sha};
use fluxgate_e2e::harness::{Broker, BrokerOptions, PATIENCE, Project, RawStream, eventually};
use fluxgate_proto::v1::{self, agent_message, broker_message};
use tonic::Code;

const SHORT: Duration = Duration::from_millis(300);

async fn start(extra: &[&str]) -> (Broker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = BrokerOptions::embedded(dir.path());
    options.extra_args = extra.iter().map(|s| (*s).to_owned()).collect();
    (Broker::start(options).await, dir)
}

/// Posts `count` pushes to `project` on distinct refs; returns their seqs.
async fn post_pushes(broker: &Broker, project: &Project, from: u64, count: u64) -> Vec<u64> {
    broker
        .hooks()
        .push_branches(project.clone(), from..from + count)
        .await
}

#[tokio::test]
async fn backlog_then_live_events_arrive_in_order_without_gaps() {
    let (broker, _dir) = start(&[]).await;
    let token = broker
        .create_agent("edge", "team/cfg", &["--grant-group", "team"])
        .await;
    let app = Project::private(1, "team/app");
    let other = Project::private(2, "other/app");

    let mut expected = post_pushes(&broker, &app, 0, 30).await;
    post_pushes(&broker, &other, 0, 5).await;

    let mut stream = RawStream::open(&broker.agent_url(), &token, &[("team/app", "")], None)
        .await
        .unwrap();
    assert!(!stream.welcome.cursor_expired);
    assert_eq!(stream.welcome.agent_name, "edge");
    // More pushes while the backlog is being replayed and after.
    let writer = tokio::spawn(broker.hooks().push_branches(app.clone(), 30..60));
    expected.extend(writer.await.unwrap());

    let mut received = Vec::new();
    while received.len() < expected.len() {
        let event = stream
            .next_event(PATIENCE)
            .await
            .unwrap()
            .unwrap_or_else(|| {
                panic!(
                    "only {} of {} events arrived",
                    received.len(),
                    expected.len()
                )
            });
        assert_eq!(event.project_path, "team/app");
        assert_eq!(event.matched_projects, vec!["team/app"]);
        received.push(event.seq);
    }
    assert_eq!(received, expected, "every event, in seq order, once");
    // Nothing else follows (the other project's events are not subscribed nor allowed).
    let last = *expected.last().unwrap();
    let extra = stream.events_until_position(last, PATIENCE).await.unwrap();
    assert!(extra.is_empty(), "unexpected events: {extra:?}");
}

#[tokio::test]
async fn the_broker_enforces_access_whatever_the_agent_subscribes() {
    let (broker, _dir) = start(&[]).await;
    let token = broker.create_agent("nosy", "mine/cfg", &[]).await;
    let private = Project::private(1, "secret/app");
    let internal = Project::new(2, "corp/app", 10);
    let public = Project::new(3, "oss/lib", 20);
    let own = Project::private(4, "mine/cfg");
    let subs = [
        ("secret/app", ""),
        ("corp/app", ""),
        ("oss/lib", ""),
        ("mine/cfg", ""),
    ];
    let mut stream = RawStream::open(&broker.agent_url(), &token, &subs, None)
        .await
        .unwrap();

    let mut allowed = BTreeSet::new();
    post_pushes(&broker, &private, 0, 2).await;
    post_pushes(&broker, &internal, 0, 2).await;
    allowed.extend(post_pushes(&broker, &public, 0, 2).await);
    let seqs = post_pushes(&broker, &own, 0, 2).await;
    allowed.extend(&seqs);

    let events = stream
        .events_until_position(*seqs.last().unwrap(), PATIENCE)
        .await
        .unwrap();
    let got: BTreeSet<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(got, allowed, "only public projects and the config project");
}

#[tokio::test]
async fn grants_and_revokes_apply_to_open_streams() {
    let (broker, _dir) = start(&[]).await;
    let token = broker.create_agent("grantee", "ops/cfg", &[]).await;
    let app = Project::private(1, "team/app");
    let mut stream = RawStream::open(&broker.agent_url(), &token, &[("team/app", "")], None)
        .await
        .unwrap();

    let before = post_pushes(&broker, &app, 0, 1).await;
    let events = stream
        .events_until_position(before[0], PATIENCE)
        .await
        .unwrap();
    assert!(events.is_empty(), "not granted yet: {events:?}");

    // The CLI is another process: the broker learns of the grant from the log, within its
    // poll interval. Push until an event arrives.
    broker
        .cli(&["agent", "grant", "grantee", "--group", "team"])
        .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut n = 100;
    let event = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the grant never reached the stream"
        );
        post_pushes(&broker, &app, n, 1).await;
        n += 1;
        if let Some(event) = stream.next_event(SHORT).await.unwrap() {
            break event;
        }
    };
    assert_eq!(event.project_path, "team/app");

    broker
        .cli(&["agent", "revoke", "grantee", "--group", "team"])
        .await;
    // The revoke is committed before this push, and the broker applies the log in order:
    // this push, and every later one, must not reach the stream.
    let after_revoke = post_pushes(&broker, &app, 200, 1).await[0];
    let mut late = stream
        .events_until_position(after_revoke, PATIENCE)
        .await
        .unwrap();
    late.retain(|e| e.seq >= after_revoke);
    assert!(late.is_empty(), "events after the revoke: {late:?}");
}

#[tokio::test]
async fn a_slow_agent_is_closed_and_resumes_without_loss_while_others_flow() {
    let (broker, _dir) = start(&["--agent-queue-capacity", "32"]).await;
    let slow_token = broker.create_agent("slow", "team/app", &[]).await;
    let fast_token = broker.create_agent("fast", "team/app", &[]).await;
    let app = Project::private(1, "team/app");
    let mut slow = RawStream::open_with_window(
        &broker.agent_url(),
        &slow_token,
        &[("team/app", "")],
        16 * 1024,
    )
    .await
    .unwrap();
    let mut fast = RawStream::open(&broker.agent_url(), &fast_token, &[("team/app", "")], None)
        .await
        .unwrap();

    // The slow one reads nothing until everything was posted: its small transport window
    // fills, then the broker's buffers, then its queue, and the broker closes it.
    let writer = tokio::spawn(broker.hooks().push_branches(app.clone(), 0..1500));
    let mut fast_seqs = Vec::new();
    while fast_seqs.len() < 1500 {
        let event = fast
            .next_event(PATIENCE)
            .await
            .unwrap()
            .expect("the fast agent keeps receiving");
        fast.ack(event.seq).await;
        fast_seqs.push(event.seq);
    }
    let expected = writer.await.unwrap();
    assert_eq!(
        fast_seqs, expected,
        "the fast agent got everything, in order"
    );

    let mut slow_seqs = Vec::new();
    let closed = loop {
        match slow.next_event(PATIENCE).await {
            Ok(Some(event)) => {
                slow.ack(event.seq).await;
                slow_seqs.push(event.seq);
            }
            Ok(None) => panic!(
                "the slow stream was not closed ({} events read)",
                slow_seqs.len()
            ),
            Err(status) => break status,
        }
    };
    assert_eq!(closed.code(), Code::ResourceExhausted, "{closed:?}");
    assert!(slow_seqs.len() < expected.len());

    // Resuming from its own cursor, it gets the rest.
    let cursor = *slow_seqs.last().unwrap();
    let mut resumed = RawStream::open(
        &broker.agent_url(),
        &slow_token,
        &[("team/app", "")],
        Some(cursor),
    )
    .await
    .unwrap();
    while slow_seqs.len() < expected.len() {
        let event = resumed
            .next_event(PATIENCE)
            .await
            .unwrap()
            .expect("the rest after resuming");
        slow_seqs.push(event.seq);
    }
    assert_eq!(
        slow_seqs, expected,
        "nothing lost, nothing repeated, in order"
    );
    assert!(broker.metric("fluxgate_stream_queue_overflows_total").await >= 1.0);
}

#[tokio::test]
async fn acked_cursor_is_where_a_new_stream_resumes() {
    let (broker, _dir) = start(&[]).await;
    let token = broker.create_agent("acker", "team/app", &[]).await;
    let app = Project::private(1, "team/app");
    let seqs = post_pushes(&broker, &app, 0, 6).await;

    let mut first = RawStream::open(&broker.agent_url(), &token, &[("team/app", "")], None)
        .await
        .unwrap();
    for expected in &seqs[..3] {
        let event = first.next_event(PATIENCE).await.unwrap().unwrap();
        assert_eq!(event.seq, *expected);
        first.ack(event.seq).await;
    }
    broker.wait_for_cursor("acker", seqs[2]).await;
    drop(first);

    // No resume point from the agent: the stored cursor decides.
    let mut second = RawStream::open(&broker.agent_url(), &token, &[("team/app", "")], None)
        .await
        .unwrap();
    assert_eq!(second.welcome.resume_after, seqs[2]);
    let event = second.next_event(PATIENCE).await.unwrap().unwrap();
    assert_eq!(event.seq, seqs[3]);
}

/// One open stream swaps its subscriptions: from then on it gets the new ones (tags of
/// team/b only) and no longer the old one (team/a), and it is never closed.
#[tokio::test]
async fn subscriptions_change_without_reconnecting() {
    let (broker, _dir) = start(&[]).await;
    let token = broker
        .create_agent("changer", "team/cfg", &["--grant-group", "team"])
        .await;
    let a = Project::private(1, "team/a");
    let b = Project::private(2, "team/b");
    let mut stream = RawStream::open(&broker.agent_url(), &token, &[("team/a", "")], None)
        .await
        .unwrap();
    let before = post_pushes(&broker, &a, 0, 1).await[0];
    let event = stream.next_event(PATIENCE).await.unwrap().expect("team/a");
    assert_eq!((event.seq, event.project_path.as_str()), (before, "team/a"));

    stream
        .change_subscriptions(&[("team/b", "refs/tags/v*")], &[("team/a", "")])
        .await;
    // The change travels on the stream while hooks travel over HTTP: push tags to b until
    // one arrives; from that one on, the change is in effect.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut tags = BTreeSet::new();
    let first = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no tag of team/b arrived after the change"
        );
        let tag = format!("refs/tags/v{}", tags.len());
        let response = broker
            .post_hook(&push(&b, &tag, &sha(0), &sha(tags.len() as u64 + 1)), &[])
            .await;
        tags.insert(response.seqs()[0]);
        if let Some(event) = stream.next_event(SHORT).await.unwrap() {
            break event;
        }
    };
    assert_eq!(first.project_path, "team/b");
    assert!(
        tags.contains(&first.seq),
        "{first:?} is not one of the tags pushed ({tags:?})"
    );

    // Now: a branch of b (not subscribed), a push to a (unsubscribed), a tag of b that
    // does not match, and one that does. Only the last arrives.
    let branch = broker
        .post_hook(&push(&b, "refs/heads/main", &sha(0), &sha(1)), &[])
        .await
        .seqs()[0];
    let old = broker
        .post_hook(&push(&a, "refs/heads/main", &sha(1), &sha(2)), &[])
        .await
        .seqs()[0];
    let other_tag = broker
        .post_hook(&push(&b, "refs/tags/x1", &sha(0), &sha(1)), &[])
        .await
        .seqs()[0];
    let wanted = broker
        .post_hook(&push(&b, "refs/tags/v-last", &sha(0), &sha(1)), &[])
        .await
        .seqs()[0];
    let last = branch.max(old).max(other_tag).max(wanted);
    let rest = stream.events_until_position(last, PATIENCE).await.unwrap();
    let rest: Vec<(u64, &str, &str)> = rest
        .iter()
        .filter(|e| !tags.contains(&e.seq))
        .map(|e| (e.seq, e.project_path.as_str(), e.r#ref.as_str()))
        .collect();
    assert_eq!(
        rest,
        [(wanted, "team/b", "refs/tags/v-last")],
        "only the matching tag of team/b arrives"
    );
}

#[tokio::test]
async fn streams_are_refused_with_precise_errors() {
    let (broker, _dir) = start(&[]).await;
    let token = broker.create_agent("strict", "team/app", &[]).await;
    let url = broker.agent_url();

    let unknown = RawStream::open(&url, "fgat_not-a-token", &[("team/app", "")], None)
        .await
        .err()
        .unwrap();
    assert_eq!(
        (unknown.code(), unknown.message()),
        (Code::Unauthenticated, "unknown agent token")
    );

    let bad_path = RawStream::open(&url, &token, &[("team/app", ""), ("a//b", "")], None)
        .await
        .err()
        .unwrap();
    assert_eq!(bad_path.code(), Code::InvalidArgument);
    assert_eq!(
        bad_path.message(),
        "hello.subscriptions[1].project: path \"a//b\" has an empty segment"
    );

    let ack_first = RawStream::open_with_first(
        &url,
        &token,
        agent_message::Message::Ack(v1::Ack::default()),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(
        (ack_first.code(), ack_first.message()),
        (Code::InvalidArgument, "the first message must be a Hello")
    );
}

#[tokio::test]
async fn rotating_the_token_closes_open_streams() {
    let (broker, _dir) = start(&[]).await;
    let token = broker.create_agent("rotated", "team/app", &[]).await;
    let mut stream = RawStream::open(&broker.agent_url(), &token, &[("team/app", "")], None)
        .await
        .unwrap();

    let rotated: serde_json::Value = serde_json::from_str(
        &broker
            .cli(&["agent", "rotate-token", "--json", "rotated"])
            .await,
    )
    .unwrap();
    let closed = loop {
        match stream.next_message(PATIENCE).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream stayed open after the rotation"),
            Err(status) => break status,
        }
    };
    assert_eq!(closed.code(), Code::Unauthenticated);
    assert_eq!(
        closed.message(),
        "the agent's token was rotated; use the new token"
    );

    let old = RawStream::open(&broker.agent_url(), &token, &[("team/app", "")], None)
        .await
        .err()
        .unwrap();
    assert_eq!(old.code(), Code::Unauthenticated);
    let new_token = rotated["token"].as_str().unwrap();
    assert!(
        RawStream::open(&broker.agent_url(), new_token, &[("team/app", "")], None)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_agent_behind_retention_is_told_so() {
    let (broker, _dir) = start(&[
        "--retention",
        "100ms",
        "--retention-check-interval",
        "100ms",
    ])
    .await;
    let token = broker.create_agent("late", "team/app", &[]).await;
    let app = Project::private(1, "team/app");
    let seqs = post_pushes(&broker, &app, 0, 3).await;
    let last = *seqs.last().unwrap() as f64;
    eventually(PATIENCE, "retention to remove the pushes", || async {
        (broker.metric("fluxgate_log_floor_seq").await >= last).then_some(())
    })
    .await;

    let mut stream = RawStream::open(&broker.agent_url(), &token, &[("team/app", "")], None)
        .await
        .unwrap();
    assert!(stream.welcome.cursor_expired);
    assert!(stream.welcome.resume_after >= *seqs.last().unwrap());
    let fresh = post_pushes(&broker, &app, 10, 1).await[0];
    let event = stream.next_event(PATIENCE).await.unwrap().unwrap();
    assert_eq!(event.seq, fresh);
    // Keepalives are sent while idle.
    let keepalive = stream.next_message(Duration::from_secs(3)).await.unwrap();
    assert!(
        matches!(keepalive, Some(broker_message::Message::Keepalive(_))),
        "{keepalive:?}"
    );
}

/// Two streams of one agent with other subscriptions: the one that moves on (acks,
/// keepalives) must not move the agent's cursor past an event the other still holds
/// unacked. After the holder leaves, a new stream with its subscriptions gets the event.
#[tokio::test]
async fn a_stream_cannot_move_its_agent_past_an_event_another_stream_holds() {
    let (broker, _dir) = start(&[]).await;
    let token = broker
        .create_agent("twin", "team/a", &["--grant-project", "team/b"])
        .await;
    let a = Project::private(1, "team/a");
    let b = Project::private(2, "team/b");
    let mut holder = RawStream::open(&broker.agent_url(), &token, &[("team/a", "")], None)
        .await
        .unwrap();
    let mut mover = RawStream::open(&broker.agent_url(), &token, &[("team/b", "")], None)
        .await
        .unwrap();
    let held = post_pushes(&broker, &a, 0, 1).await[0];
    assert_eq!(
        holder.next_event(PATIENCE).await.unwrap().unwrap().seq,
        held
    );
    // The holder never acks. The mover acks everything it gets, well past `held`.
    for seq in post_pushes(&broker, &b, 0, 3).await {
        assert_eq!(mover.next_event(PATIENCE).await.unwrap().unwrap().seq, seq);
        mover.ack(seq).await;
    }
    drop(holder);
    // Wait until the mover's reports reached the store (the last-seen time moves with them).
    let acked_at = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    eventually(
        PATIENCE,
        "the mover's cursor reports to be saved",
        || async {
            let shown: serde_json::Value =
                serde_json::from_str(&broker.cli(&["agent", "show", "--json", "twin"]).await)
                    .unwrap();
            (shown["last_seen_at"].as_str().unwrap_or_default() > acked_at.as_str()).then_some(())
        },
    )
    .await;
    assert!(
        broker.agent_cursor("twin").await < held,
        "the stored cursor passed an event the holder never acked"
    );
    let mut again = RawStream::open(&broker.agent_url(), &token, &[("team/a", "")], None)
        .await
        .unwrap();
    let event = again.next_event(PATIENCE).await.unwrap().unwrap();
    assert_eq!(event.seq, held, "the held event is delivered again");
}

/// An agent far behind catches up: the backlog is larger than the number of events a
/// stream may have unacked, and replay waits for the agent's acks (it reads them while it
/// replays) instead of closing the stream at the cap, which would repeat on every reconnect.
#[tokio::test]
async fn a_backlog_larger_than_the_unacked_cap_is_replayed_as_the_agent_acks() {
    let (broker, _dir) = start(&["--agent-max-unacked", "20"]).await;
    let token = broker.create_agent("far-behind", "team/app", &[]).await;
    let app = Project::private(1, "team/app");
    let seqs = post_pushes(&broker, &app, 0, 120).await;
    let mut stream = RawStream::open(&broker.agent_url(), &token, &[("team/app", "")], None)
        .await
        .unwrap();
    for expected in &seqs {
        let event = stream
            .next_event(PATIENCE)
            .await
            .unwrap_or_else(|status| panic!("closed before seq {expected}: {status:?}"))
            .expect("an event");
        assert_eq!(event.seq, *expected);
        stream.ack(event.seq).await;
    }
    broker
        .wait_for_cursor("far-behind", *seqs.last().unwrap())
        .await;
}
