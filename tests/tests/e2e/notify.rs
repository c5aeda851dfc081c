//! `fluxgate notify`, the CI job's command, against the real broker binary trusting the
//! GitLab OIDC stand-in: it retries a 503 (keys not loaded while GitLab is down) until it
//! succeeds, and exits non-zero with the broker's message on a 401, never printing the
//! token.

use std::process::Stdio;
use std::time::Duration;

use fluxgate_e2e::gitlab_oidc::GitLabOidc;
use fluxgate_e2e::harness::binaries::binary;
use fluxgate_e2e::harness::{Broker, BrokerOptions, PATIENCE};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

const AUD: &str = "https://fluxgate.example.com";
const SHA: &str = "714a629c0b401fdce83e847fc9589983fc6f46bc";

async fn broker(gitlab: &GitLabOidc, dir: &std::path::Path) -> Broker {
    let mut options = BrokerOptions::embedded(dir);
    options.extra_args = vec![
        "--gitlab-url".to_owned(),
        gitlab.issuer().to_owned(),
        "--ci-audience".to_owned(),
        AUD.to_owned(),
    ];
    Broker::start(options).await
}

/// `fluxgate notify --url <broker> <args…>` with `token` in `FLUXGATE_ID_TOKEN`.
fn notify(broker: &Broker, token: Option<&str>, args: &[&str]) -> Command {
    let mut command = Command::new(binary("fluxgate"));
    command
        .arg("notify")
        .arg("--url")
        .arg(broker.http_url(""))
        .args(args)
        .env_remove("FLUXGATE_ID_TOKEN")
        .env_remove("FLUXGATE_URL")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(token) = token {
        command.env("FLUXGATE_ID_TOKEN", token);
    }
    command
}

#[tokio::test]
async fn notify_retries_while_the_broker_answers_503_then_prints_the_seq() {
    let gitlab = GitLabOidc::start(0).await;
    gitlab.set_down(true);
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(&gitlab, dir.path()).await;
    let token = gitlab.mint(&gitlab.claims(AUD, 28, "group/app", "main", SHA));

    let mut child = notify(
        &broker,
        Some(&token),
        &["--tag", "v1", "--attempts", "30", "--max-time", "90s"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("run fluxgate notify");
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    // The first attempt meets the 503 of a broker without keys.
    let first = tokio::time::timeout(PATIENCE, stderr.next_line())
        .await
        .expect("a first failed attempt in time")
        .unwrap()
        .expect("a line on stderr");
    assert!(
        first.contains("attempt 1 of 30 failed (HTTP 503 Service Unavailable")
            && first.contains("GitLab's signing keys are not available yet"),
        "{first}"
    );
    gitlab.set_down(false);

    let mut rest = String::new();
    while let Ok(Some(line)) = stderr.next_line().await {
        rest.push_str(&line);
        rest.push('\n');
    }
    let output = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("notify finishes within --max-time")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout {stdout}, stderr {first}\n{rest}"
    );
    assert!(
        stdout.starts_with("accepted: seq ") && stdout.contains("(group/app refs/heads/main)"),
        "{stdout}"
    );
    assert!(!stdout.contains(&token) && !rest.contains(&token) && !first.contains(&token));
}

#[tokio::test]
async fn notify_exits_non_zero_with_the_reason_on_401_without_retrying() {
    let gitlab = GitLabOidc::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(&gitlab, dir.path()).await;
    let mut claims = gitlab.claims("https://other.example.com", 28, "group/app", "main", SHA);
    claims.aud = "https://other.example.com".to_owned();
    let token = gitlab.mint(&claims);
    // Keys load in the background: wait until the broker judges tokens (no 503).
    fluxgate_e2e::harness::eventually(PATIENCE, "the broker to load GitLab's keys", || async {
        let status = broker
            .client()
            .post(broker.http_url("/api/v1/notify"))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?
            .status();
        (status != 503).then_some(())
    })
    .await;

    let output = tokio::time::timeout(
        PATIENCE,
        notify(&broker, Some(&token), &["--attempts", "5"]).output(),
    )
    .await
    .expect("notify gives up at once")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("fluxgate notify: the broker refused the notification: HTTP 401 Unauthorized: ID token refused: audience [\"https://other.example.com\"] is not \"https://fluxgate.example.com\""),
        "{stderr}"
    );
    assert!(
        !stderr.contains("attempt 1 of"),
        "a 401 is not retried: {stderr}"
    );
    assert!(!stderr.contains(&token), "the token is never printed");
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn notify_without_a_token_says_which_variable_is_missing() {
    let gitlab = GitLabOidc::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(&gitlab, dir.path()).await;
    let output = notify(&broker, None, &["--token-env", "MY_ID_TOKEN"])
        .env_remove("MY_ID_TOKEN")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the environment variable MY_ID_TOKEN is not set"),
        "{stderr}"
    );
}
