//! Metric names of replication (bus, follower, presence), with their descriptions.

/// Counter: ranges the follower read from the store to fill a seq gap.
pub const FOLLOWER_GAP_READS: &str = "fluxgate_follower_gap_reads_total";
/// Counter: store reads by the follower after the bus was quiet for `poll_interval`.
pub const FOLLOWER_POLLS: &str = "fluxgate_follower_polls_total";
/// Counter: store errors while following the log (retried).
pub const FOLLOWER_ERRORS: &str = "fluxgate_follower_errors_total";
/// Gauge: 1 while the Redis bus subscriber is connected.
pub const REDIS_CONNECTED: &str = "fluxgate_redis_connected";
/// Counter: batches not published to Redis.
pub const REDIS_PUBLISH_DROPPED: &str = "fluxgate_redis_publish_dropped_total";
/// Counter: entries read from the Redis stream that could not be decoded, by `reason`
/// (see [`crate::bus::DecodeError::label`]).
pub const REDIS_DECODE_ERRORS: &str = "fluxgate_redis_decode_errors_total";
/// Counter: failed writes of this replica's presence.
pub const PRESENCE_ERRORS: &str = "fluxgate_presence_errors_total";

/// The counters above (registered at zero at start-up, so a fresh broker lists them).
pub const COUNTERS: &[&str] = &[
    FOLLOWER_GAP_READS,
    FOLLOWER_POLLS,
    FOLLOWER_ERRORS,
    REDIS_PUBLISH_DROPPED,
    REDIS_DECODE_ERRORS,
    PRESENCE_ERRORS,
];
/// The histograms above (registered at start-up).
pub const HISTOGRAMS: &[&str] = &[];

/// Registers the descriptions with the installed recorder (once, at start-up).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        FOLLOWER_GAP_READS,
        "Ranges the follower read from the store to fill a gap."
    );
    describe_counter!(
        FOLLOWER_POLLS,
        "Store polls by the follower after the bus was quiet."
    );
    describe_counter!(FOLLOWER_ERRORS, "Store errors while following the log.");
    describe_gauge!(
        REDIS_CONNECTED,
        "1 while the Redis bus subscriber is connected."
    );
    describe_counter!(
        REDIS_PUBLISH_DROPPED,
        "Batches not published to Redis (followers read them from the database)."
    );
    describe_counter!(
        REDIS_DECODE_ERRORS,
        "Entries on the Redis log stream that could not be decoded and were skipped (followers read them from the database), by reason."
    );
    describe_counter!(
        PRESENCE_ERRORS,
        "Failed writes of this replica's presence to Redis."
    );
}
