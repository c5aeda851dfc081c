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
    NoAnswer {
        reason: NoAnswerReason,
        /// The error and its causes, without the URL.
        detail: String,
    },
}

/// Why a call got no answer, coarse enough for a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAnswerReason {
    /// No TCP or TLS connection: refused, unreachable, DNS failure.
    Connect,
    /// The connection or the whole call took longer than its deadline.
    Timeout,
    /// Anything else: reset mid-call, a broken response.
    Request,
}

impl NoAnswerReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Request => "request",
        }
    }
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
        Err(error) => no_answer(error),
    }
}

/// Sends `request` to `receiver` once through the Kubernetes API server `client` talks to
/// (a service-proxy path), with the client's credentials, within `timeout`.
pub async fn send_through_api_server(
    client: &kube::Client,
    timeout: Duration,
    receiver: &Receiver,
    request: &TriggerRequest,
) -> AttemptResult {
    let url = receiver.url.as_url();
    let mut builder = http::Request::post(url.path());
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let call = match builder.body(kube::client::Body::from(request.body.clone())) {
        Ok(call) => call,
        Err(error) => {
            return AttemptResult::NoAnswer {
                reason: NoAnswerReason::Request,
                detail: format!("cannot build the request: {error}"),
            };
        }
    };
    match tokio::time::timeout(timeout, client.send(call)).await {
        Err(_) => AttemptResult::NoAnswer {
            reason: NoAnswerReason::Timeout,
            detail: format!("timed out after {timeout:?} (through the Kubernetes API server)"),
        },
        Ok(Ok(response)) => AttemptResult::Answered(response.status()),
        Ok(Err(error)) => AttemptResult::NoAnswer {
            reason: NoAnswerReason::Connect,
            detail: format!("through the Kubernetes API server: {error}"),
        },
    }
}

/// The error and its causes, without the URL.
fn no_answer(error: reqwest::Error) -> AttemptResult {
    let (reason, head) = if error.is_timeout() {
        (NoAnswerReason::Timeout, "timed out")
    } else if error.is_connect() {
        (NoAnswerReason::Connect, "connection failed")
    } else {
        (NoAnswerReason::Request, "request failed")
    };
    AttemptResult::NoAnswer {
        reason,
        detail: with_causes(head, &error.without_url()),
    }
}

/// `head: cause: cause of the cause…`: `head` stands for the error's own message (reqwest's
/// says only that a request failed), followed by every source below it.
fn with_causes(head: &str, error: &reqwest::Error) -> String {
    std::iter::once(head.to_owned())
        .chain(
            anyhow::Chain::new(error)
                .skip(1)
                .map(|cause| cause.to_string()),
        )
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_answer_names_the_causes_but_not_the_url() {
        // Nothing listens on port 1 of the loopback address: the connect is refused.
        crate::install_crypto_provider();
        let error = http_client(Duration::from_secs(5))
            .expect("client")
            .post("http://127.0.0.1:1/hook/secret-path")
            .send()
            .await
            .expect_err("nothing listens there");
        let AttemptResult::NoAnswer { reason, detail } = no_answer(error) else {
            panic!("expected no answer");
        };
        assert_eq!(reason, NoAnswerReason::Connect);
        assert!(detail.starts_with("connection failed: "), "{detail}");
        assert!(detail.len() > "connection failed: ".len(), "{detail}");
        assert!(!detail.contains("secret-path"), "{detail}");
        assert!(!detail.contains("error sending request"), "{detail}");
    }
}
