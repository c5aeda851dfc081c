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

#[tokio::test]
async fn bad_hooks_get_precise_errors_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = BrokerOptions::embedded(dir.path());
    options.extra_args = vec!["--hook-body-limit".into(), "4096".into()];
    let broker = Broker::start(options).await;
    let secret = broker.options.hook_secret.as_str();
    let client = fluxgate_e2e::harness::http_client();
    let url = broker.http_url("/hooks/gitlab");
    let post = |token: Option<&str>, content_type: &str, body: Vec<u8>| {
        let mut request = client
            .post(&url)
            .header("Content-Type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.header("X-Gitlab-Token", token);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let json = "application/json";
    let valid = serde_json::to_vec(&push(
        &Project::private(1, "a/b"),
        "refs/heads/main",
        &sha(0),
        &sha(1),
    ))
    .unwrap();

    assert_eq!(
        post(None, json, valid.clone()).await,
        (
            401,
            json!({"code": "unauthenticated", "message": "missing X-Gitlab-Token header"})
        )
    );
    assert_eq!(post(Some("wrong"), json, valid.clone()).await.0, 401);
    assert_eq!(
        post(Some(secret), "text/plain", valid.clone()).await,
        (
            415,
            json!({"code": "unsupported_media_type", "message": "Content-Type must be application/json, not \"text/plain\""})
        )
    );
    assert_eq!(
        post(Some(secret), json, vec![b' '; 5000]).await,
        (
            413,
            json!({"code": "payload_too_large", "message": "the body is larger than the 4096-byte limit (--hook-body-limit)"})
        )
    );
    assert_eq!(
        post(Some(secret), json, b"{\"object_kind\": \"push\",".to_vec()).await,
        (
            400,
            json!({"code": "bad_request", "message": "body is not valid JSON: EOF while parsing a value at line 1 column 23"})
        )
    );
    let no_project = serde_json::to_vec(&json!({"object_kind": "push", "ref": "refs/heads/main", "before": sha(0), "after": sha(1)})).unwrap();
    let (status, body) = post(Some(secret), json, no_project).await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("project"),
        "{body}"
    );
    let (status, body) = post(
        Some(secret),
        json,
        br#"{"object_kind": "merge_request"}"#.to_vec(),
    )
    .await;
    assert_eq!(
        (status, body),
        (202, json!({"status": "ignored", "kind": "merge_request"}))
    );

    // Nothing was stored by any of these: the first valid push gets the first seqs.
    let accepted = broker
        .post_hook(&serde_json::from_slice(&valid).unwrap(), &[])
        .await;
    assert_eq!(accepted.seqs(), vec![2]);
    assert_eq!(
        broker.metric("fluxgate_hooks_total").await,
        8.0,
        "every hook above was counted"
    );
}
