//! Metric names of the store, with their descriptions ([`describe`], at start-up).

/// Histogram: time of one group-commit transaction.
pub const APPEND_SECONDS: &str = "fluxgate_store_append_seconds";
/// Histogram: hooks committed per transaction.
pub const APPEND_BATCH_SIZE: &str = "fluxgate_store_append_batch_size";
/// Histogram: time a SQLite write of the log (an append, an agent change) waited for the
/// write before it to commit.
pub const LOG_WRITE_WAIT_SECONDS: &str = "fluxgate_store_log_write_wait_seconds";
/// Histogram: time a SQLite write of the log held the database's one write turn (what
/// the writes after it waited for).
pub const LOG_WRITE_HOLD_SECONDS: &str = "fluxgate_store_log_write_hold_seconds";
/// Histogram: time a SQLite bookkeeping write (cursors, delivery records, reports,
/// trimming) held the database's one write turn.
pub const BOOKKEEPING_WRITE_HOLD_SECONDS: &str = "fluxgate_store_bookkeeping_write_hold_seconds";

/// The counters of the store (none yet).
pub const COUNTERS: &[&str] = &[];
/// The histograms above (registered at start-up).
pub const HISTOGRAMS: &[&str] = &[
    APPEND_SECONDS,
    APPEND_BATCH_SIZE,
    LOG_WRITE_WAIT_SECONDS,
    LOG_WRITE_HOLD_SECONDS,
    BOOKKEEPING_WRITE_HOLD_SECONDS,
];

/// Registers the descriptions with the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_histogram};
    describe_histogram!(
        APPEND_SECONDS,
        Unit::Seconds,
        "Time of one group-commit transaction."
    );
    describe_histogram!(APPEND_BATCH_SIZE, "Hooks committed per transaction.");
    describe_histogram!(
        LOG_WRITE_WAIT_SECONDS,
        Unit::Seconds,
        "Time a SQLite write of the log waited for the write before it (SQLite only)."
    );
    describe_histogram!(
        LOG_WRITE_HOLD_SECONDS,
        Unit::Seconds,
        "Time a SQLite write of the log held the write turn (SQLite only)."
    );
    describe_histogram!(
        BOOKKEEPING_WRITE_HOLD_SECONDS,
        Unit::Seconds,
        "Time a SQLite bookkeeping write held the write turn (SQLite only)."
    );
}
