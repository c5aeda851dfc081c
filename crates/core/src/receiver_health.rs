//! Receivers an agent reports as failing: what the agent sends, the broker keeps and
//! `fluxgate agent show` prints.
//!
//! An agent retries a failing receiver until it answers; once one has been failing for
//! longer than the agent's `retry.report_after`, the agent reports it. Each report
//! replaces the previous one: an empty report means every receiver is healthy again.
//! Reports are bounded ([`MAX_REPORTED_RECEIVERS`], [`MAX_RECEIVER_NAME_BYTES`],
//! [`MAX_RECEIVER_ERROR_BYTES`]); the agent truncates to these bounds and the broker
//! refuses anything larger.

use serde::{Deserialize, Serialize};

use crate::log::Seq;
use crate::time::UnixMillis;

/// Most receivers one report may list.
pub const MAX_REPORTED_RECEIVERS: usize = 256;
/// Longest receiver name in a report, in bytes.
pub const MAX_RECEIVER_NAME_BYTES: usize = 256;
/// Longest error text in a report, in bytes.
pub const MAX_RECEIVER_ERROR_BYTES: usize = 512;

/// One receiver that has been failing for longer than the agent's threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailingReceiver {
    /// The receiver's name in the agent's configuration.
    pub receiver: String,
    /// When its first failed attempt of this outage was made (agent clock).
    pub failing_since: UnixMillis,
    /// Calls made since then, all failed.
    pub attempts: u64,
    /// Why the last call failed (`HTTP 503 Service Unavailable`, `connection failed: …`).
    pub last_error: String,
    /// Status of the last call, 0 if there was no answer.
    pub last_http_status: u16,
    /// The oldest event waiting for this receiver, not acked because of it.
    pub oldest_unacked_seq: Option<Seq>,
}

/// The last health report an agent sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiverHealth {
    /// When the broker received the report.
    pub reported_at: UnixMillis,
    /// Empty: every receiver answers.
    pub failing: Vec<FailingReceiver>,
}

/// A report that is over a bound; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ReceiverHealthError {
    pub field: String,
    pub reason: String,
}

impl ReceiverHealth {
    /// Checks every bound, naming the first field that is over one.
    pub fn validate(&self) -> Result<(), ReceiverHealthError> {
        if self.failing.len() > MAX_REPORTED_RECEIVERS {
            return Err(ReceiverHealthError {
                field: "failing".to_owned(),
                reason: format!(
                    "{} receivers; at most {MAX_REPORTED_RECEIVERS} are allowed",
                    self.failing.len()
                ),
            });
        }
        for (index, receiver) in self.failing.iter().enumerate() {
            let field = |name: &str| format!("failing[{index}].{name}");
            let name = &receiver.receiver;
            if name.is_empty()
                || name.len() > MAX_RECEIVER_NAME_BYTES
                || name.chars().any(char::is_control)
            {
                return Err(ReceiverHealthError {
                    field: field("receiver"),
                    reason: format!(
                        "must be 1 to {MAX_RECEIVER_NAME_BYTES} bytes without control characters"
                    ),
                });
            }
            if receiver.last_error.len() > MAX_RECEIVER_ERROR_BYTES {
                return Err(ReceiverHealthError {
                    field: field("last_error"),
                    reason: format!("longer than {MAX_RECEIVER_ERROR_BYTES} bytes"),
                });
            }
        }
        Ok(())
    }
}

/// `text` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub fn truncate_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    const ELLIPSIS: &str = "…";
    let mut end = max.saturating_sub(ELLIPSIS.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(name: &str, error: &str) -> FailingReceiver {
        FailingReceiver {
            receiver: name.to_owned(),
            failing_since: UnixMillis(1),
            attempts: 3,
            last_error: error.to_owned(),
            last_http_status: 503,
            oldest_unacked_seq: Some(Seq(4)),
        }
    }

    fn report(failing: Vec<FailingReceiver>) -> ReceiverHealth {
        ReceiverHealth {
            reported_at: UnixMillis(2),
            failing,
        }
    }

    #[test]
    fn bounds_are_enforced_with_the_field_named() {
        assert!(report(vec![failing("app", "HTTP 503")]).validate().is_ok());
        assert!(report(Vec::new()).validate().is_ok());
        let too_many = report(vec![failing("app", ""); MAX_REPORTED_RECEIVERS + 1]);
        assert_eq!(too_many.validate().unwrap_err().field, "failing");
        let long_error = report(vec![
            failing("a", ""),
            failing("b", &"x".repeat(MAX_RECEIVER_ERROR_BYTES + 1)),
        ]);
        assert_eq!(
            long_error.validate().unwrap_err().to_string(),
            "failing[1].last_error: longer than 512 bytes"
        );
        for bad in ["", "a\nb"] {
            let error = report(vec![failing(bad, "")]).validate().unwrap_err();
            assert_eq!(error.field, "failing[0].receiver");
        }
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate_text("short", 10), "short");
        let cut = truncate_text(&"é".repeat(600), MAX_RECEIVER_ERROR_BYTES);
        assert!(cut.len() <= MAX_RECEIVER_ERROR_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(
            report(vec![failing("a", &cut)]).validate().is_ok(),
            "a truncated text passes validation"
        );
    }
}
