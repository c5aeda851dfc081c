//! The retry policy around Receiver calls, after the flux CLI's `trigger receiver`.
//!
//! | Answer | Verdict |
//! |---|---|
//! | 2xx | delivered |
//! | 404 (Receiver not registered yet, or reconciling), 408, 429, 5xx, no answer | retried |
//! | 400 (validation failed), 413 (body too large), any other status | rejected at once |
//!
//! Retries wait with capped exponential backoff and jitter ([`crate::backoff`]) and stop
//! after `max_attempts` calls in all: the outcome is then failed, with the last status.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use super::Receiver;
use super::payload::TriggerRequest;
use super::trigger::{AttemptResult, send_once};
use crate::backoff::Backoff;
use crate::event::TriggerEvent;

/// How hard to try one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls in all, the first included. At least 1.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// How a delivery ended, or (for [`DeliveryOutcome::Coalesced`]) why it was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The Receiver answered 2xx.
    Delivered,
    /// A later event was delivered to the receiver instead.
    Coalesced,
    /// The Receiver refused it for good.
    Rejected,
    /// Every attempt failed with a retryable answer or none.
    Failed,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Coalesced => "coalesced",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }
}

/// The result of one delivery, as it goes into an ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub outcome: DeliveryOutcome,
    /// Status of the last attempt; 0 if there was no answer.
    pub http_status: u16,
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
        AttemptResult::NoAnswer(_) => Verdict::Retry,
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

/// Makes the calls for one delivery.
#[derive(Debug, Clone)]
pub struct Deliverer {
    client: reqwest::Client,
    policy: RetryPolicy,
}

impl Deliverer {
    pub fn new(client: reqwest::Client, policy: RetryPolicy) -> Self {
        Self { client, policy }
    }

    /// Delivers `event` to `receiver`, retrying as the policy allows.
    pub async fn deliver(&self, receiver: &Receiver, event: &TriggerEvent) -> DeliveryReport {
        let started = Instant::now();
        let request = match TriggerRequest::build(receiver, event) {
            Ok(request) => request,
            Err(error) => {
                return DeliveryReport {
                    outcome: DeliveryOutcome::Rejected,
                    http_status: 0,
                    attempts: 0,
                    error: error.to_string(),
                    elapsed: started.elapsed(),
                };
            }
        };
        let mut backoff = Backoff::new(self.policy.initial_backoff, self.policy.max_backoff);
        let max_attempts = self.policy.max_attempts.max(1);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = send_once(&self.client, receiver, &request).await;
            let verdict = classify(&result);
            let outcome = match verdict {
                Verdict::Delivered => Some(DeliveryOutcome::Delivered),
                Verdict::Reject => Some(DeliveryOutcome::Rejected),
                Verdict::Retry if attempts >= max_attempts => Some(DeliveryOutcome::Failed),
                Verdict::Retry => None,
            };
            if let Some(outcome) = outcome {
                return report(outcome, &result, attempts, started.elapsed());
            }
            let delay = backoff.next_delay();
            tracing::debug!(
                receiver = %receiver.name,
                seq = event.seq,
                attempt = attempts,
                result = %describe(&result),
                retry_in = ?delay,
                "receiver call failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

fn report(
    outcome: DeliveryOutcome,
    result: &AttemptResult,
    attempts: u32,
    elapsed: Duration,
) -> DeliveryReport {
    let http_status = match result {
        AttemptResult::Answered(status) => status.as_u16(),
        AttemptResult::NoAnswer(_) => 0,
    };
    let error = match outcome {
        DeliveryOutcome::Delivered => String::new(),
        DeliveryOutcome::Rejected => format!("rejected: {}", describe(result)),
        DeliveryOutcome::Failed => {
            format!("gave up after {attempts} attempts: {}", describe(result))
        }
        DeliveryOutcome::Coalesced => String::new(),
    };
    DeliveryReport {
        outcome,
        http_status,
        attempts,
        error,
        elapsed,
    }
}

fn describe(result: &AttemptResult) -> String {
    match result {
        AttemptResult::Answered(status) => format!("HTTP {status}"),
        AttemptResult::NoAnswer(error) => error.clone(),
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

    #[test]
    fn retryable_statuses_follow_the_flux_cli() {
        for code in [404, 408, 429, 500, 502, 503, 504] {
            assert_eq!(answered(code), Verdict::Retry, "{code}");
        }
        assert_eq!(
            classify(&AttemptResult::NoAnswer("refused".to_owned())),
            Verdict::Retry
        );
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
}
