//! The retry policy around Receiver calls, after the flux CLI's `trigger receiver`.
//!
//! | Answer | Verdict |
//! |---|---|
//! | 2xx | delivered |
//! | 404 (Receiver not registered yet, or reconciling), 408, 429, 5xx, no answer | retried |
//! | 400 (validation failed), 413 (body too large), any other status | rejected at once |
//!
//! A retried call is retried for as long as it keeps failing, with capped exponential
//! backoff and jitter ([`fluxgate_core::backoff`]): a Receiver that is down for an hour is still
//! called when it comes back (the loop is in [`super::worker`]). Only a 2xx or a final
//! refusal ends a delivery.

use std::time::Duration;

use reqwest::StatusCode;

use super::Receiver;
use super::Route;
use super::payload::TriggerRequest;
use super::trigger::{AttemptResult, NoAnswerReason, send_once, send_through_api_server};

/// How to retry, and when a receiver that keeps failing is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A receiver failing for this long is logged as a warning, counted in the failing
    /// receivers gauge and reported to the broker.
    pub report_after: Duration,
    /// While it keeps failing, the warning and the report are repeated this often.
    pub warn_every: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            report_after: Duration::from_secs(300),
            warn_every: Duration::from_secs(300),
        }
    }
}

/// How a delivery ended, or (for [`DeliveryOutcome::Coalesced`]) why it was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The Receiver answered 2xx.
    Delivered,
    /// A later event was delivered to the receiver instead (or refused for good).
    Coalesced,
    /// The Receiver refused it for good.
    Rejected,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Coalesced => "coalesced",
            Self::Rejected => "rejected",
        }
    }
}

/// The result of one delivery, as it goes into an ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub outcome: DeliveryOutcome,
    /// Status of the last attempt; 0 if there was no answer.
    pub http_status: u16,
    /// Calls made, failed ones included (also those made for events it replaced).
    pub attempts: u32,
    /// Empty when delivered.
    pub error: String,
    /// From the first call to the last answer.
    pub elapsed: Duration,
}

/// What to do after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Retry,
    Reject,
}

/// The verdict for one attempt's result.
pub fn classify(result: &AttemptResult) -> Verdict {
    match result {
        AttemptResult::NoAnswer { .. } => Verdict::Retry,
        AttemptResult::Answered(status) if status.is_success() => Verdict::Delivered,
        AttemptResult::Answered(status)
            if status.is_server_error()
                || matches!(
                    *status,
                    StatusCode::NOT_FOUND
                        | StatusCode::REQUEST_TIMEOUT
                        | StatusCode::TOO_MANY_REQUESTS
                ) =>
        {
            Verdict::Retry
        }
        AttemptResult::Answered(_) => Verdict::Reject,
    }
}

/// The status of an attempt, 0 if there was no answer.
pub fn http_status(result: &AttemptResult) -> u16 {
    match result {
        AttemptResult::Answered(status) => status.as_u16(),
        AttemptResult::NoAnswer { .. } => 0,
    }
}

/// An attempt's result for logs and reports: `HTTP 503 Service Unavailable`, or the error.
pub fn describe(result: &AttemptResult) -> String {
    match result {
        AttemptResult::Answered(status) => format!("HTTP {status}"),
        AttemptResult::NoAnswer { detail, .. } => detail.clone(),
    }
}

/// A metric label for a failed attempt: `http_503`, `connect`, `timeout`, `request`.
pub fn failure_reason(result: &AttemptResult) -> String {
    match result {
        AttemptResult::Answered(status) => format!("http_{}", status.as_u16()),
        AttemptResult::NoAnswer { reason, .. } => reason.as_str().to_owned(),
    }
}

/// Makes Receiver calls; the policy says how the worker spaces them.
#[derive(Clone)]
pub struct Deliverer {
    client: reqwest::Client,
    /// For receivers reached through the Kubernetes API server.
    kubernetes: Option<ApiServerRoute>,
    policy: RetryPolicy,
}

/// The Kubernetes client and the deadline of a call through it.
#[derive(Clone)]
struct ApiServerRoute {
    client: kube::Client,
    timeout: std::time::Duration,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("policy", &self.policy)
            .field("kubernetes", &self.kubernetes.is_some())
            .finish_non_exhaustive()
    }
}

impl Deliverer {
    pub fn new(client: reqwest::Client, policy: RetryPolicy) -> Self {
        Self {
            client,
            kubernetes: None,
            policy,
        }
    }

    /// Receivers with [`Route::KubernetesApi`] are called through `client`, each call
    /// bounded by `timeout`.
    pub fn with_kubernetes(mut self, client: kube::Client, timeout: std::time::Duration) -> Self {
        self.kubernetes = Some(ApiServerRoute { client, timeout });
        self
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// One call of `request` to `receiver`.
    pub async fn call(&self, receiver: &Receiver, request: &TriggerRequest) -> AttemptResult {
        match (receiver.route, &self.kubernetes) {
            (Route::Direct, _) => send_once(&self.client, receiver, request).await,
            (Route::KubernetesApi, Some(api)) => {
                send_through_api_server(&api.client, api.timeout, receiver, request).await
            }
            (Route::KubernetesApi, None) => AttemptResult::NoAnswer {
                reason: NoAnswerReason::Connect,
                detail: "this receiver is reached through the Kubernetes API, and the agent \
                         has no Kubernetes client"
                    .to_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(code: u16) -> Verdict {
        classify(&AttemptResult::Answered(
            StatusCode::from_u16(code).expect("valid status"),
        ))
    }

    fn refused() -> AttemptResult {
        AttemptResult::NoAnswer {
            reason: NoAnswerReason::Connect,
            detail: "connection failed: refused".to_owned(),
        }
    }

    #[test]
    fn retryable_statuses_follow_the_flux_cli() {
        for code in [404, 408, 429, 500, 502, 503, 504] {
            assert_eq!(answered(code), Verdict::Retry, "{code}");
        }
        assert_eq!(classify(&refused()), Verdict::Retry);
    }

    #[test]
    fn other_client_errors_are_final() {
        for code in [400, 401, 403, 405, 413, 422, 301] {
            assert_eq!(answered(code), Verdict::Reject, "{code}");
        }
        for code in [200, 202, 204] {
            assert_eq!(answered(code), Verdict::Delivered, "{code}");
        }
    }

    #[test]
    fn failures_are_described_and_labelled() {
        let unavailable = AttemptResult::Answered(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(describe(&unavailable), "HTTP 503 Service Unavailable");
        assert_eq!(failure_reason(&unavailable), "http_503");
        assert_eq!(http_status(&unavailable), 503);
        assert_eq!(describe(&refused()), "connection failed: refused");
        assert_eq!(failure_reason(&refused()), "connect");
        assert_eq!(http_status(&refused()), 0);
    }
}
