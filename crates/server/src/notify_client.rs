//! `fluxgate notify`: a CI job tells the broker its artifact is ready.
//!
//! The job's GitLab CI ID token is read from an environment variable (default
//! `FLUXGATE_ID_TOKEN`, the name the job's `id_tokens:` gives it), sent as
//! `Authorization: Bearer …` to `POST <url>/api/v1/notify` with the optional artifact
//! fields. Connection failures, timeouts, 5xx and 429 are retried with capped exponential
//! backoff (the core [`Backoff`], with jitter), bounded by `--attempts` and `--max-time`;
//! other 4xx answers are final. A non-2xx outcome is an error naming the broker's
//! message. The token is never printed.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fluxgate_core::{Backoff, bearer};
use serde::Serialize;

use crate::cli::NotifyArgs;

/// Longest answer read from the broker.
const ANSWER_LIMIT: usize = 64 * 1024;

/// The first retry delay; doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(15);

#[derive(Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
}

/// One attempt's outcome.
enum Attempt {
    /// 2xx: the broker's answer.
    Done(serde_json::Value),
    /// Worth retrying: why.
    Retry(String),
    /// Final refusal.
    Refused(String),
}

/// Runs `fluxgate notify`; returns the line printed on success.
pub async fn notify(
    args: &NotifyArgs,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<String> {
    let token = env(&args.token_env).filter(|token| !token.is_empty());
    let Some(token) = token else {
        bail!(
            "the environment variable {} is not set; declare it in the job's `id_tokens:` \
             with the broker's audience (docs/pipeline-notify.md)",
            args.token_env
        );
    };
    if bearer::check_token(&token).is_err() {
        bail!(
            "the environment variable {} does not hold a token (visible ASCII, no white space)",
            args.token_env
        );
    }
    let url = endpoint(&args.url)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(args.request_timeout)
        .connect_timeout(args.request_timeout)
        .user_agent(concat!("fluxgate-notify/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot build the HTTP client")?;
    let body = serde_json::to_vec(&Body {
        artifact: args.artifact.as_deref(),
        tag: args.tag.as_deref(),
        digest: args.digest.as_deref(),
    })?;
    let started = Instant::now();
    let mut backoff = Backoff::new(FIRST_DELAY, MAX_DELAY);
    let attempts = args.attempts.max(1);
    for attempt in 1..=attempts {
        let why = match send(&client, &url, &token, &body).await {
            Attempt::Done(answer) => return Ok(summary(&answer)),
            Attempt::Refused(message) => bail!("the broker refused the notification: {message}"),
            Attempt::Retry(why) => why,
        };
        let delay = backoff.next_delay();
        if attempt == attempts {
            bail!("gave up after {attempts} attempts: {why}");
        }
        if started.elapsed() + delay > args.max_time {
            bail!(
                "gave up after {attempt} attempts ({:?} of --max-time {:?} used): {why}",
                started.elapsed(),
                args.max_time
            );
        }
        eprintln!(
            "fluxgate notify: attempt {attempt} of {attempts} failed ({why}); retrying in {delay:?}"
        );
        tokio::time::sleep(delay).await;
    }
    unreachable!("the loop returns or bails on its last attempt")
}

/// `<url>/api/v1/notify`, or `url` itself if it already ends so.
fn endpoint(url: &str) -> anyhow::Result<String> {
    let parsed = url::Url::parse(url).with_context(|| format!("--url {url:?} is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!("--url must be http:// or https://, not {url:?}");
    }
    let base = url.trim_end_matches('/');
    Ok(if base.ends_with(fluxgate_ingest::notify::NOTIFY_PATH) {
        base.to_owned()
    } else {
        format!("{base}{}", fluxgate_ingest::notify::NOTIFY_PATH)
    })
}

async fn send(client: &reqwest::Client, url: &str, token: &str, body: &[u8]) -> Attempt {
    let response = client
        .post(url)
        .header(reqwest::header::AUTHORIZATION, bearer::header_value(token))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .send()
        .await;
    let mut response = match response {
        Ok(response) => response,
        Err(err) => return Attempt::Retry(fluxgate_idtoken::describe_http_error(&err)),
    };
    let status = response.status();
    let mut answer = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if answer.len() + chunk.len() <= ANSWER_LIMIT => {
                answer.extend_from_slice(&chunk);
            }
            Ok(Some(_)) | Ok(None) => break,
            Err(err) if status.is_success() => {
                return Attempt::Retry(fluxgate_idtoken::describe_http_error(&err));
            }
            Err(_) => break,
        }
    }
    let json: Option<serde_json::Value> = serde_json::from_slice(&answer).ok();
    if status.is_success() {
        return match json {
            Some(json) => Attempt::Done(json),
            None => Attempt::Retry(format!("HTTP {status} with a body that is not JSON")),
        };
    }
    let message = json
        .as_ref()
        .and_then(|json| json.get("message"))
        .and_then(serde_json::Value::as_str)
        .map_or_else(
            || String::from_utf8_lossy(&answer).chars().take(300).collect(),
            str::to_owned,
        );
    let described = format!("HTTP {status}: {message}");
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Attempt::Retry(described)
    } else {
        Attempt::Refused(described)
    }
}

fn summary(answer: &serde_json::Value) -> String {
    let text = |key: &str| {
        answer
            .get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    let seq = answer
        .get("seq")
        .and_then(serde_json::Value::as_u64)
        .map_or_else(|| "?".to_owned(), |seq| seq.to_string());
    format!(
        "{}: seq {seq} ({} {})",
        text("status"),
        text("project"),
        text("ref")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_the_notify_path_of_the_broker() {
        assert_eq!(
            endpoint("http://broker:8080").unwrap(),
            "http://broker:8080/api/v1/notify"
        );
        assert_eq!(
            endpoint("https://broker.example.com/").unwrap(),
            "https://broker.example.com/api/v1/notify"
        );
        assert_eq!(
            endpoint("https://broker.example.com/api/v1/notify").unwrap(),
            "https://broker.example.com/api/v1/notify"
        );
        assert!(endpoint("broker:8080").is_err());
        assert!(endpoint("ftp://broker").is_err());
    }

    #[test]
    fn the_answer_is_summarised_with_its_seq() {
        let answer = serde_json::json!({"status": "accepted", "seq": 12, "project": "g/app", "ref": "refs/heads/main"});
        assert_eq!(summary(&answer), "accepted: seq 12 (g/app refs/heads/main)");
    }
}
