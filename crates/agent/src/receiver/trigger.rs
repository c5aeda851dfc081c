//! One HTTP call to a Flux Receiver: `POST` the prepared body to the hook URL.
//!
//! The client follows no redirects (Flux's receiver server never redirects a
//! `/hook/<hex>` path, and following one could carry a token elsewhere) and gives every
//! call a deadline. Errors are reported without the URL, whose path is a secret.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::redirect::Policy;

use super::Receiver;
use super::payload::TriggerRequest;

/// How long to wait for a TCP (and TLS) connection to a Receiver.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What one call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The Receiver answered with this status.
    Answered(StatusCode),
    /// No answer: connection refused or reset, DNS failure, timeout.
    NoAnswer(String),
}

/// The HTTP client for every Receiver call. `request_timeout` bounds each call.
pub fn http_client(request_timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("fluxgate-agent/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(request_timeout)
        .redirect(Policy::none())
        .build()
}

/// Sends `request` to `receiver` once.
pub async fn send_once(
    client: &reqwest::Client,
    receiver: &Receiver,
    request: &TriggerRequest,
) -> AttemptResult {
    let sent = client
        .post(receiver.url.as_url().clone())
        .headers(request.headers.clone())
        .body(request.body.clone())
        .send()
        .await;
    match sent {
        Ok(response) => AttemptResult::Answered(response.status()),
        Err(error) => AttemptResult::NoAnswer(describe(error)),
    }
}

/// The error and its causes, without the URL.
fn describe(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    crate::error_chain::with_causes(kind, &error.without_url())
}
