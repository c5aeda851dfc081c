//! Metric names of the server crate, with their descriptions ([`describe`], at start-up).
//!
//! Every other crate names and describes its own in a `metric_names` module of the same
//! shape; [`crate::telemetry`] lists them.

/// Essential tasks that ended on their own, by task.
pub const TASK_FAILURES: &str = "fluxgate_task_failures_total";
/// Retention runs that moved the log floor.
pub const LOG_TRIMMED: &str = "fluxgate_log_trimmed_total";
/// The log's floor after the last retention run that moved it.
pub const LOG_FLOOR: &str = "fluxgate_log_floor_seq";
/// Connections open, by listener.
pub const LISTENER_CONNECTIONS: &str = "fluxgate_listener_connections";
/// Connections the broker closed, by listener and reason.
pub const LISTENER_CONNECTIONS_REAPED: &str = "fluxgate_listener_connections_reaped_total";
/// Times a listener reached its connection cap, by listener.
pub const LISTENER_AT_CAPACITY: &str = "fluxgate_listener_at_capacity_total";
/// Failed TLS handshakes, by listener and reason.
pub const LISTENER_TLS_FAILURES: &str = "fluxgate_listener_tls_failures_total";

/// The counters above (registered at zero at start-up, see [`crate::telemetry`]).
pub const COUNTERS: &[&str] = &[
    TASK_FAILURES,
    LOG_TRIMMED,
    LISTENER_CONNECTIONS_REAPED,
    LISTENER_AT_CAPACITY,
    LISTENER_TLS_FAILURES,
];
/// The server's histograms (none).
pub const HISTOGRAMS: &[&str] = &[];

/// Registers the descriptions with the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        TASK_FAILURES,
        "Essential tasks that ended on their own (the broker then drains and exits), by task."
    );
    describe_counter!(LOG_TRIMMED, "Retention runs that moved the log floor.");
    describe_gauge!(
        LOG_FLOOR,
        "The lowest seq the log still holds, after the last retention run that moved it."
    );
    describe_gauge!(LISTENER_CONNECTIONS, "Connections open, by listener.");
    describe_counter!(
        LISTENER_CONNECTIONS_REAPED,
        "Connections closed by the broker for a timeout or a failed TLS handshake, by \
         listener and reason."
    );
    describe_counter!(
        LISTENER_AT_CAPACITY,
        "Times a listener reached its connection cap (new connections then wait in the \
         backlog), by listener."
    );
    describe_counter!(
        LISTENER_TLS_FAILURES,
        "Failed TLS handshakes, by listener and reason."
    );
}
