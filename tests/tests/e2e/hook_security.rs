//! Hook security with the real broker: credentials checked at start-up, Standard Webhooks
//! signatures, private data files, and log lines that stay short whatever GitLab (or
//! anyone else) sends.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fluxgate_e2e::harness::binaries::binary;
use fluxgate_e2e::harness::payloads::{push, sha};
use fluxgate_e2e::harness::{Broker, BrokerOptions, PATIENCE, Project};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// The signing key GitLab would generate, and its token as GitLab shows it.
const KEY: [u8; 32] = *b"e2e signing key of 32 bytes....!";

fn signing_token() -> String {
    format!("whsec_{}", STANDARD.encode(KEY))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// GitLab's headers for a signed delivery, computed here with the hmac crate.
fn signed_headers(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Vec<(String, String)> {
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let signature = STANDARD.encode(mac.finalize().into_bytes());
    vec![
        ("webhook-id".into(), id.into()),
        ("Idempotency-Key".into(), id.into()),
        ("webhook-timestamp".into(), timestamp.to_string()),
        ("webhook-signature".into(), format!("v1,{signature}")),
    ]
}

/// POSTs raw `body` with exactly `headers` (no token unless given).
async fn post(broker: &Broker, body: &[u8], headers: &[(String, String)]) -> (u16, Value) {
    let mut request = fluxgate_e2e::harness::http_client()
        .post(broker.http_url("/hooks/gitlab"))
        .header("Content-Type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("the broker answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn token(broker: &Broker) -> (String, String) {
    ("X-Gitlab-Token".into(), broker.options.hook_secret.clone())
}

fn push_body(n: u64) -> Vec<u8> {
    serde_json::to_vec(&push(
        &Project::private(7, "team/app"),
        "refs/heads/main",
        &sha(n),
        &sha(n + 1),
    ))
    .unwrap()
}

/// Runs `fluxgate serve` with `args`, which must fail at start-up; returns its stderr.
async fn serve_must_fail(data_dir: &Path, args: &[&str]) -> String {
    let output = tokio::time::timeout(
        PATIENCE,
        tokio::process::Command::new(binary("fluxgate"))
            .arg("--data-dir")
            .arg(data_dir)
            .arg("serve")
            .args([
                "--http-listen",
                "127.0.0.1:0",
                "--agent-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("fluxgate exits instead of serving")
    .expect("run fluxgate");
    assert!(
        !output.status.success(),
        "fluxgate {args:?} started; it must refuse"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn empty_or_short_secrets_stop_the_broker_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = serve_must_fail(dir.path(), &["--hook-secret", ""]).await;
    assert!(
        stderr.contains(
            "hook secret #1 of `hook_secret` (--hook-secret, FLUXGATE_HOOK_SECRET or the config file) is refused"
        ) && stderr.contains("a hook secret is empty; an empty secret would accept hooks with an empty X-Gitlab-Token"),
        "{stderr}"
    );
    let file = dir.path().join("secrets");
    std::fs::write(&file, "a-good-secret-0123456789\nshort\n").unwrap();
    let stderr = serve_must_fail(dir.path(), &["--hook-secret-file", file.to_str().unwrap()]).await;
    assert!(
        stderr.contains(&format!(
            "the hook secret on line 2 of {} is refused",
            file.display()
        )) && stderr.contains("a hook secret is 5 bytes long; at least 16 are required"),
        "{stderr}"
    );
    let stderr = serve_must_fail(dir.path(), &["--hook-signature-required"]).await;
    assert!(stderr.contains("signatures are required"), "{stderr}");
}

#[tokio::test]
async fn signed_hooks_are_verified_and_a_bad_signature_beats_a_good_token() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("signing-tokens");
    let retired = format!("whsec_{}", STANDARD.encode([9u8; 32]));
    std::fs::write(&tokens, format!("{retired}\n{}\n", signing_token())).unwrap();
    let mut options = BrokerOptions::embedded(dir.path().join("data"));
    options.extra_args = vec![
        "--hook-signing-token-file".into(),
        tokens.display().to_string(),
    ];
    let mut broker = Broker::start(options).await;
    // The harness passes --hook-secret on the command line: the broker says why not to.
    assert!(
        broker
            .process()
            .lines()
            .iter()
            .any(|l| l.contains("a secret was given on the command line")
                && l.contains("--hook-secret-file")),
        "no warning about --hook-secret"
    );

    let body = push_body(0);
    let (status, answer) = post(
        &broker,
        &body,
        &signed_headers(&KEY, "delivery-1", now(), &body),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "accepted");

    let mut forged = signed_headers(
        b"not the key, but 32 bytes long..",
        "delivery-2",
        now(),
        &body,
    );
    forged.push(token(&broker));
    assert_eq!(
        post(&broker, &body, &forged).await,
        (
            401,
            json!({"code": "unauthenticated", "message": "webhook-signature does not match the body with any configured signing token"})
        )
    );

    let stale = signed_headers(&KEY, "delivery-3", now() - 3600, &body);
    let (status, answer) = post(&broker, &body, &stale).await;
    assert_eq!(status, 401);
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.starts_with("webhook-timestamp is 36")
            && message.contains("s in the past; at most 300 s"),
        "{message}"
    );

    // Without a signature the token still works (signatures are not required here).
    let (status, answer) = post(&broker, &push_body(1), &[token(&broker)]).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn required_signatures_refuse_token_only_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("signing-tokens");
    std::fs::write(&tokens, format!("{}\n", signing_token())).unwrap();
    let mut options = BrokerOptions::embedded(dir.path().join("data"));
    options.extra_args = vec![
        "--hook-signing-token-file".into(),
        tokens.display().to_string(),
        "--hook-signature-required".into(),
    ];
    let broker = Broker::start(options).await;
    let body = push_body(0);
    assert_eq!(
        post(&broker, &body, &[token(&broker)]).await,
        (
            401,
            json!({"code": "unauthenticated", "message": "this broker accepts only signed hooks: webhook-signature is missing (X-Gitlab-Token alone is not accepted)"})
        )
    );
    let (status, answer) = post(&broker, &body, &signed_headers(&KEY, "d-1", now(), &body)).await;
    assert_eq!(status, 200, "{answer}");
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Broker::start(BrokerOptions::embedded(&data)).await;
    assert_eq!(
        broker
            .post_hook(
                &push(
                    &Project::private(1, "a/b"),
                    "refs/heads/main",
                    &sha(0),
                    &sha(1)
                ),
                &[]
            )
            .await
            .status,
        200
    );
    let files = ["fluxgate.db", "fluxgate.db-wal", "fluxgate.db-shm"];
    assert_eq!(mode(&data), 0o700);
    for name in files {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }

    // Files loosened by someone else are tightened at the next start, and that is logged.
    assert!(broker.terminate().await, "the broker stops on SIGTERM");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["fluxgate.db", "fluxgate.db-wal", "fluxgate.db-shm"] {
        if data.join(name).exists() {
            std::fs::set_permissions(data.join(name), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
    }
    let mut broker = Broker::start(BrokerOptions::embedded(&data)).await;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("fluxgate.db")), 0o600);
    let lines = broker.process().lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("tightened the mode of a database file")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("tightened the mode of a data file")),
        "{lines:#?}"
    );
}

/// Longest log line the broker may write while taking these hooks, in bytes.
const MAX_LOG_LINE: usize = 4096;

#[tokio::test]
async fn a_huge_hook_and_a_flood_of_refusals_yield_short_rate_limited_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(BrokerOptions::embedded(dir.path())).await;

    // A repository_update the size of the one that produced a 900 KB line.
    let changes: Vec<Value> = (0..14_000u64)
        .map(|n| json!({"before": sha(0), "after": sha(n + 1), "ref": format!("refs/heads/feature/long-branch-name-{n:08}")}))
        .collect();
    let refs: Vec<Value> = changes.iter().map(|c| c["ref"].clone()).collect();
    let update = json!({
        "event_name": "repository_update",
        "project_id": 77,
        "project": {"id": 77, "path_with_namespace": "team/monorepo", "visibility_level": 0},
        "changes": changes,
        "refs": refs,
    });
    let body = serde_json::to_vec(&update).unwrap();
    assert!(body.len() > 2_600_000, "{} bytes", body.len());
    let (status, answer) = post(&broker, &body, &[token(&broker)]).await;
    assert_eq!(status, 200, "{answer}");

    // A bad body quoting a megabyte back, and a flood of wrong tokens.
    let mut bad = br#"{"event_name":"repository_update","project_id":9,"changes":[""#.to_vec();
    bad.extend(std::iter::repeat_n(b'x', 1_000_000));
    bad.extend(br#""]}"#);
    assert_eq!(post(&broker, &bad, &[token(&broker)]).await.0, 400);
    let wrong = [(
        "X-Gitlab-Token".to_owned(),
        "not-the-secret-at-all".to_owned(),
    )];
    for _ in 0..20 {
        assert_eq!(post(&broker, &push_body(5), &wrong).await.0, 401);
    }
    assert_eq!(broker.metric("fluxgate_hook_refusals_total").await, 21.0);

    let lines = broker.process().lines();
    let committed = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "hook committed")
        .expect("the hook was logged");
    assert_eq!(committed["records"], 14_000);
    assert_eq!(committed["project"], "team/monorepo");
    let refused: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "hook refused")
        .collect();
    assert_eq!(
        refused
            .iter()
            .map(|l| l["reason"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["payload_invalid", "token_wrong"],
        "one line per source and reason: {refused:#?}"
    );
    let longest = lines.iter().map(String::len).max().unwrap_or(0);
    assert!(
        longest < MAX_LOG_LINE,
        "the longest log line is {longest} bytes: {}",
        lines
            .iter()
            .max_by_key(|l| l.len())
            .map(|l| &l[..300])
            .unwrap_or_default()
    );
}
