//! Metric names of the agent, with their descriptions.

/// Receivers failing for longer than `retry.report_after`.
pub const RECEIVERS_FAILING: &str = "fluxgate_agent_receivers_failing";
/// Failed Receiver calls (each is retried), by receiver and reason.
pub const RECEIVER_FAILED_ATTEMPTS: &str = "fluxgate_agent_receiver_failed_attempts_total";

/// Registers descriptions with the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        RECEIVERS_FAILING,
        "Receivers failing for longer than retry.report_after (their events stay unacked)."
    );
    describe_counter!(
        RECEIVER_FAILED_ATTEMPTS,
        "Failed Receiver calls, by receiver and reason (http_<status>, connect, timeout, request)."
    );
}
