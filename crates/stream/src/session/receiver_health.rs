//! The receivers an agent reports as failing: validated at the edge, persisted in the
//! background so `fluxgate agent show` (which reads the store) lists them.
//!
//! Agents send a report after the Welcome and whenever it changes, and repeat it while
//! receivers keep failing (every few minutes). A report equal to the previous one on this
//! stream is not written again; the others go to the replica's one report writer
//! ([`AgentReports`]), which always writes the newest.

use fluxgate_core::receiver_health::{
    MAX_RECEIVER_ERROR_BYTES, MAX_RECEIVER_NAME_BYTES, MAX_REPORTED_RECEIVERS,
};
use fluxgate_core::{AgentId, AgentName, FailingReceiver, ReceiverHealth, Seq, UnixMillis};
use fluxgate_proto::v1;
use tonic::Status;

use crate::agent_reports::AgentReports;

/// What one stream last reported of its agent's receivers, to skip repeats.
#[derive(Default)]
pub struct HealthRecorder {
    last_failing: Option<Vec<FailingReceiver>>,
}

impl HealthRecorder {
    /// Validates `message` and hands it to `reports` unless it repeats the last one.
    pub fn record(
        &mut self,
        reports: &AgentReports,
        agent: AgentId,
        name: &AgentName,
        message: v1::ReceiverHealth,
    ) -> Result<(), Status> {
        let failing = failing_receivers(message)?;
        if self.last_failing.as_ref() == Some(&failing) {
            return Ok(());
        }
        let names: Vec<&str> = failing.iter().map(|f| f.receiver.as_str()).collect();
        if failing.is_empty() {
            tracing::info!(agent = %name, "agent reports every receiver healthy");
        } else {
            tracing::warn!(agent = %name, receivers = ?names, "agent reports failing receivers");
        }
        self.last_failing = Some(failing.clone());
        reports.receiver_health(
            agent,
            name,
            ReceiverHealth {
                reported_at: UnixMillis::now(),
                failing,
            },
        );
        Ok(())
    }
}

/// The report's receivers, within the bounds (a report over one is refused).
fn failing_receivers(message: v1::ReceiverHealth) -> Result<Vec<FailingReceiver>, Status> {
    if message.failing.len() > MAX_REPORTED_RECEIVERS {
        return Err(Status::invalid_argument(format!(
            "receiver_health.failing has {} entries; at most {MAX_REPORTED_RECEIVERS} are allowed",
            message.failing.len()
        )));
    }
    let failing: Vec<FailingReceiver> = message
        .failing
        .into_iter()
        .map(|status| FailingReceiver {
            receiver: status.receiver,
            failing_since: status.failing_since.map_or(UnixMillis(0), |t| {
                UnixMillis(
                    t.seconds
                        .saturating_mul(1000)
                        .saturating_add(i64::from(t.nanos / 1_000_000)),
                )
            }),
            attempts: status.attempts,
            last_error: status.last_error,
            last_http_status: u16::try_from(status.last_http_status).unwrap_or(0),
            oldest_unacked_seq: status.oldest_unacked_seq.map(Seq),
        })
        .collect();
    let report = ReceiverHealth {
        reported_at: UnixMillis(0),
        failing,
    };
    report.validate().map_err(|e| {
        Status::invalid_argument(format!(
            "receiver_health.{e} (names up to {MAX_RECEIVER_NAME_BYTES} bytes, errors up to \
             {MAX_RECEIVER_ERROR_BYTES} bytes)"
        ))
    })?;
    Ok(report.failing)
}

#[cfg(test)]
mod tests {
    use fluxgate_proto::prost_types::Timestamp;

    use super::*;

    fn status(name: &str, error: &str) -> v1::ReceiverStatus {
        v1::ReceiverStatus {
            receiver: name.to_owned(),
            failing_since: Some(Timestamp {
                seconds: 2,
                nanos: 250_000_000,
            }),
            attempts: 4,
            last_error: error.to_owned(),
            last_http_status: 503,
            oldest_unacked_seq: Some(9),
        }
    }

    #[test]
    fn reports_are_converted_and_bounded() {
        let failing = failing_receivers(v1::ReceiverHealth {
            failing: vec![status("app", "HTTP 503")],
        })
        .expect("valid");
        assert_eq!(
            failing,
            [FailingReceiver {
                receiver: "app".to_owned(),
                failing_since: UnixMillis(2_250),
                attempts: 4,
                last_error: "HTTP 503".to_owned(),
                last_http_status: 503,
                oldest_unacked_seq: Some(Seq(9)),
            }]
        );
        let too_many = failing_receivers(v1::ReceiverHealth {
            failing: vec![status("app", ""); MAX_REPORTED_RECEIVERS + 1],
        })
        .unwrap_err();
        assert_eq!(too_many.code(), tonic::Code::InvalidArgument);
        let long = failing_receivers(v1::ReceiverHealth {
            failing: vec![status("app", &"x".repeat(MAX_RECEIVER_ERROR_BYTES + 1))],
        })
        .unwrap_err();
        assert!(
            long.message()
                .starts_with("receiver_health.failing[0].last_error"),
            "{}",
            long.message()
        );
    }
}
