//! The receivers an agent reports as failing: validated at the edge, persisted in the
//! background so `fluxgate agent show` (which reads the store) lists them.
//!
//! Agents send a report after the Welcome and whenever it changes, and repeat it while
//! receivers keep failing (every few minutes). A report equal to the previous one on this
//! stream is not written again. Writes go through one task per stream that always writes
//! the newest report, so a slow database never holds up the stream and reports are never
//! written out of order. A failed write is logged and counted; the agent's next report
//! (or next stream) writes again.

use std::sync::Arc;

use fluxgate_core::receiver_health::{
    MAX_RECEIVER_ERROR_BYTES, MAX_RECEIVER_NAME_BYTES, MAX_REPORTED_RECEIVERS,
};
use fluxgate_core::{AgentId, AgentName, FailingReceiver, ReceiverHealth, Seq, UnixMillis};
use fluxgate_proto::v1;
use fluxgate_store::Store;
use tokio::sync::watch;
use tonic::Status;
use tracing::Instrument as _;

use crate::metric_names as names;

/// One stream's receiver health reports, on their way to the store.
pub struct HealthRecorder {
    latest: watch::Sender<Option<ReceiverHealth>>,
    /// What was last handed to the writer, to skip repeats.
    last_failing: Option<Vec<FailingReceiver>>,
}

impl HealthRecorder {
    /// Starts the writer task; it ends once this recorder is dropped and the last report
    /// is written.
    pub fn spawn(store: Arc<dyn Store>, agent: AgentId, name: AgentName) -> Self {
        let (latest, mut reports) = watch::channel::<Option<ReceiverHealth>>(None);
        let writer = async move {
            while reports.changed().await.is_ok() {
                let Some(report) = reports.borrow_and_update().clone() else {
                    continue;
                };
                match store.save_receiver_health(agent, &report).await {
                    Ok(()) => {
                        tracing::debug!(agent = %name, failing = report.failing.len(), "receiver health saved")
                    }
                    Err(err) => {
                        metrics::counter!(names::RECEIVER_HEALTH_SAVE_ERRORS).increment(1);
                        tracing::warn!(agent = %name, error = %err, "cannot save the agent's receiver health");
                    }
                }
            }
        };
        // In the stream's span, so that its lines carry the stream's fields.
        tokio::spawn(writer.instrument(tracing::Span::current()));
        Self {
            latest,
            last_failing: None,
        }
    }

    /// Validates `message` and hands it to the writer unless it repeats the last one.
    pub fn record(&mut self, agent: &AgentName, message: v1::ReceiverHealth) -> Result<(), Status> {
        let failing = failing_receivers(message)?;
        if self.last_failing.as_ref() == Some(&failing) {
            return Ok(());
        }
        let names: Vec<&str> = failing.iter().map(|f| f.receiver.as_str()).collect();
        if failing.is_empty() {
            tracing::info!(agent = %agent, "agent reports every receiver healthy");
        } else {
            tracing::warn!(agent = %agent, receivers = ?names, "agent reports failing receivers");
        }
        self.last_failing = Some(failing.clone());
        self.latest.send_replace(Some(ReceiverHealth {
            reported_at: UnixMillis::now(),
            failing,
        }));
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
