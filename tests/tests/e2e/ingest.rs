//! Hooks over HTTP against the real broker: answers, errors, dedup.

use fluxgate_e2e::harness::payloads::{push, sha};
use fluxgate_e2e::harness::{Broker, BrokerOptions, Project};
use serde_json::json;

#[tokio::test]
async fn hooks_are_answered_after_commit_with_their_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerOptions::embedded(dir.path())).await;
    let project = Project::private(7, "team/app");

    let first = broker
        .post_hook(&push(&project, "refs/heads/main", &sha(0), &sha(1)), &[])
        .await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["status"], "accepted");
    // Seq 1 records what the push taught the catalog; the push is seq 2.
    assert_eq!(first.seqs(), vec![2]);

    let shared = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/gitlab/gitlab-system-hook-repository-update.json"
    ))
    .unwrap();
    let fixture: serde_json::Value = serde_json::from_slice(&shared).unwrap();
    let update = broker
        .post_hook(&fixture, &[("Idempotency-Key", "delivery-1")])
        .await;
    assert_eq!(update.status, 200);
    assert_eq!(update.seqs(), vec![4]);

    let again = broker
        .post_hook(&fixture, &[("Idempotency-Key", "delivery-1")])
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.body,
        json!({"status": "duplicate", "seqs": [4], "duplicates": 1})
    );
}
