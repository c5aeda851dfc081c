//! Metric names of the fan-out, with their descriptions.

/// Gauge: agent streams registered with this replica's hub.
pub const STREAMS_OPEN: &str = "fluxgate_agent_streams";
/// Counter: streams closed because their queue was full.
pub const QUEUE_OVERFLOWS: &str = "fluxgate_stream_queue_overflows_total";
/// Gauge: the last log seq the hub dispatched.
pub const LOG_HEAD: &str = "fluxgate_log_head_seq";

/// The counters above (registered at zero at start-up, so a fresh broker lists them).
pub const COUNTERS: &[&str] = &[QUEUE_OVERFLOWS];
/// The histograms above (registered at start-up).
pub const HISTOGRAMS: &[&str] = &[];

/// Registers the descriptions with the installed recorder (once, at start-up).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(STREAMS_OPEN, "Agent streams open on this replica.");
    describe_counter!(
        QUEUE_OVERFLOWS,
        "Streams closed because the agent did not keep up."
    );
    describe_gauge!(LOG_HEAD, "The last log seq this replica has dispatched.");
}
