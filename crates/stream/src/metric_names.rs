//! Metric names of the stream crate, with their descriptions.

pub const STREAMS_OPEN: &str = "fluxgate_agent_streams";
pub const STREAMS_OPENED: &str = "fluxgate_agent_streams_opened_total";
pub const STREAMS_CLOSED: &str = "fluxgate_agent_streams_closed_total";
pub const EVENTS_SENT: &str = "fluxgate_events_sent_total";
pub const BACKLOG_EVENTS_SENT: &str = "fluxgate_backlog_events_sent_total";
pub const QUEUE_OVERFLOWS: &str = "fluxgate_stream_queue_overflows_total";
pub const ACKS: &str = "fluxgate_acks_total";
pub const RECEIVER_OUTCOMES: &str = "fluxgate_receiver_outcomes_total";
pub const DELIVERY_LATENCY: &str = "fluxgate_delivery_latency_seconds";
pub const LOG_HEAD: &str = "fluxgate_log_head_seq";
pub const FOLLOWER_GAP_READS: &str = "fluxgate_follower_gap_reads_total";
pub const FOLLOWER_POLLS: &str = "fluxgate_follower_polls_total";
pub const FOLLOWER_ERRORS: &str = "fluxgate_follower_errors_total";
pub const CURSOR_SAVE_ERRORS: &str = "fluxgate_cursor_save_errors_total";
pub const REDIS_CONNECTED: &str = "fluxgate_redis_connected";
pub const REDIS_PUBLISH_DROPPED: &str = "fluxgate_redis_publish_dropped_total";
pub const PRESENCE_ERRORS: &str = "fluxgate_presence_errors_total";
pub const RECEIVER_HEALTH_SAVE_ERRORS: &str = "fluxgate_receiver_health_save_errors_total";
pub const AGENT_MESSAGES_IGNORED: &str = "fluxgate_agent_messages_ignored_total";

/// Registers descriptions with the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(STREAMS_OPEN, "Agent streams open on this replica.");
    describe_counter!(STREAMS_OPENED, "Agent streams opened.");
    describe_counter!(STREAMS_CLOSED, "Agent streams closed, by reason.");
    describe_counter!(EVENTS_SENT, "Events sent to agents (live and backlog).");
    describe_counter!(
        BACKLOG_EVENTS_SENT,
        "Events sent to agents from the backlog on connect."
    );
    describe_counter!(
        QUEUE_OVERFLOWS,
        "Streams closed because the agent did not keep up."
    );
    describe_counter!(ACKS, "Acks received from agents.");
    describe_counter!(
        RECEIVER_OUTCOMES,
        "Receiver outcomes reported in acks, by outcome."
    );
    describe_histogram!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "From hook receipt to the last receiver finishing, as reported in acks."
    );
    describe_gauge!(LOG_HEAD, "The last log seq this replica has dispatched.");
    describe_counter!(
        FOLLOWER_GAP_READS,
        "Ranges the follower read from the store to fill a gap."
    );
    describe_counter!(
        FOLLOWER_POLLS,
        "Store polls by the follower after the bus was quiet."
    );
    describe_counter!(FOLLOWER_ERRORS, "Store errors while following the log.");
    describe_counter!(CURSOR_SAVE_ERRORS, "Failed cursor saves (retried).");
    describe_gauge!(
        REDIS_CONNECTED,
        "1 while the Redis bus subscriber is connected."
    );
    describe_counter!(
        REDIS_PUBLISH_DROPPED,
        "Batches not published to Redis (followers read them from the database)."
    );
    describe_counter!(
        PRESENCE_ERRORS,
        "Failed writes of this replica's presence to Redis."
    );
    describe_counter!(
        RECEIVER_HEALTH_SAVE_ERRORS,
        "Failed writes of an agent's receiver health report."
    );
    describe_counter!(
        AGENT_MESSAGES_IGNORED,
        "Agent messages of a kind this broker does not know, ignored."
    );
}
