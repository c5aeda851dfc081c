//! Who gets in: hook secrets, Standard Webhooks signatures, and the policy over both.

use serde_json::json;

use crate::support::{
    Hooks, SECRET, SIGNING_KEY, Setup, now_seconds, push, signature, signed, token,
};

#[tokio::test]
async fn an_empty_token_is_refused() {
    let hooks = Hooks::start(Setup::default()).await;
    let answer = hooks.post(push("refs/heads/main", 1), &[token("")]).await;
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.body["message"],
        "X-Gitlab-Token does not match any configured hook secret"
    );
    let answer = hooks
        .post(push("refs/heads/main", 1), &[token(SECRET)])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn a_signed_hook_is_accepted_and_its_webhook_id_deduplicates() {
    let hooks = Hooks::start(Setup {
        signing: true,
        ..Setup::default()
    })
    .await;
    let body = push("refs/heads/main", 1);
    let now = now_seconds();
    let headers = signed(&SIGNING_KEY, "msg_1", now, &body);
    let first = hooks.post(body.clone(), &headers).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["status"], "accepted");
    // A resend (same webhook-id) a moment later, freshly signed: a duplicate.
    let again = hooks
        .post(body.clone(), &signed(&SIGNING_KEY, "msg_1", now + 1, &body))
        .await;
    assert_eq!(
        again.body,
        json!({"status": "duplicate", "seqs": first.body["seqs"], "duplicates": 1})
    );
}

#[tokio::test]
async fn bad_or_stale_signatures_are_refused_even_with_a_valid_token() {
    let hooks = Hooks::start(Setup {
        signing: true,
        ..Setup::default()
    })
    .await;
    let body = push("refs/heads/main", 1);
    let now = now_seconds();

    let mut wrong_key = signed(b"another key, 32 bytes long......", "msg_2", now, &body);
    wrong_key.push(token(SECRET));
    let answer = hooks.post(body.clone(), &wrong_key).await;
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.body,
        json!({"code": "unauthenticated", "message": "webhook-signature does not match the body with any configured signing token"})
    );

    let tampered = signed(&SIGNING_KEY, "msg_2", now, &push("refs/heads/main", 2));
    assert_eq!(hooks.post(body.clone(), &tampered).await.status, 401);

    let stale = signed(&SIGNING_KEY, "msg_2", now - 600, &body);
    let answer = hooks.post(body.clone(), &stale).await;
    assert_eq!(answer.status, 401);
    let message = answer.body["message"].as_str().unwrap();
    assert!(
        message.starts_with("webhook-timestamp is 60")
            && message.contains("s in the past; at most 300 s"),
        "{message}"
    );

    let future = signed(&SIGNING_KEY, "msg_2", now + 600, &body);
    let answer = hooks.post(body.clone(), &future).await;
    assert_eq!(answer.status, 401);
    assert!(
        answer.body["message"]
            .as_str()
            .unwrap()
            .contains("in the future"),
        "{}",
        answer.body
    );

    let no_timestamp = vec![
        ("webhook-id", "msg_2".to_owned()),
        (
            "webhook-signature",
            signature(&SIGNING_KEY, "msg_2", now, &body),
        ),
    ];
    let answer = hooks.post(body.clone(), &no_timestamp).await;
    assert_eq!(
        answer.body["message"],
        "webhook-signature is present but webhook-timestamp is missing"
    );

    // With both configured and no signature, the token still works.
    assert_eq!(hooks.post(body, &[token(SECRET)]).await.status, 200);
}

#[tokio::test]
async fn rotated_signing_keys_and_several_signatures() {
    let hooks = Hooks::start(Setup {
        signing: true,
        ..Setup::default()
    })
    .await;
    let body = push("refs/heads/main", 3);
    let now = now_seconds();
    let old = signature(b"the retired key, 32 bytes long..", "msg_3", now, &body);
    let new = signature(&SIGNING_KEY, "msg_3", now, &body);
    let headers = vec![
        ("webhook-id", "msg_3".to_owned()),
        ("webhook-timestamp", now.to_string()),
        ("webhook-signature", format!("{old} {new}")),
    ];
    assert_eq!(hooks.post(body, &headers).await.status, 200);
}

#[tokio::test]
async fn required_signatures_refuse_token_only_hooks() {
    let hooks = Hooks::start(Setup {
        signing: true,
        required: true,
        ..Setup::default()
    })
    .await;
    let body = push("refs/heads/main", 1);
    let answer = hooks.post(body.clone(), &[token(SECRET)]).await;
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.body["message"],
        "this broker accepts only signed hooks: webhook-signature is missing (X-Gitlab-Token alone is not accepted)"
    );
    let headers = signed(&SIGNING_KEY, "msg_4", now_seconds(), &body);
    assert_eq!(hooks.post(body, &headers).await.status, 200);
}

#[tokio::test]
async fn refs_git_refuses_get_a_400_naming_the_field() {
    let hooks = Hooks::start(Setup::default()).await;
    for raw in ["refs/heads/../x", "HEAD", "master", "refs/heads/"] {
        let answer = hooks.post(push(raw, 1), &[token(SECRET)]).await;
        assert_eq!(answer.status, 400, "{raw}");
        let message = answer.body["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!(
                "field `ref` is not a valid git ref: ref {raw:?} is invalid: "
            )),
            "{message}"
        );
    }
}
