//! Metric names of the agent, with their descriptions.

/// Receivers failing for longer than `retry.report_after`.
pub const RECEIVERS_FAILING: &str = "fluxgate_agent_receivers_failing";
/// Failed Receiver calls (each is retried), by receiver and reason.
pub const RECEIVER_FAILED_ATTEMPTS: &str = "fluxgate_agent_receiver_failed_attempts_total";
/// Finished deliveries, by outcome.
pub const TRIGGERS: &str = "fluxgate_agent_triggers_total";
/// From the first call of a delivery to the Receiver's last answer.
pub const TRIGGER_DURATION: &str = "fluxgate_agent_trigger_duration_seconds";
/// Flux sources the Kubernetes mode sees, by kind and by what the agent makes of them.
pub const KUBERNETES_SOURCES: &str = "fluxgate_agent_kubernetes_sources";
/// Receivers found in the cluster that the agent calls (its own and brought ones).
pub const KUBERNETES_RECEIVERS_SERVED: &str = "fluxgate_agent_kubernetes_receivers_served";
/// Writes to the Kubernetes API, by kind and outcome.
pub const KUBERNETES_WRITES: &str = "fluxgate_agent_kubernetes_writes_total";
/// Sync stages the agent saw Flux reach after a trigger, by `stage`.
pub const SYNC_STAGES: &str = "fluxgate_agent_sync_stages_total";
/// Triggers whose sync the agent is following.
pub const SYNC_WATCH_TRACKED: &str = "fluxgate_agent_sync_watch_tracked";
/// Sync-watch work given up because a bounded queue was full, by `what` (`trigger`,
/// `tracking`, `report`).
pub const SYNC_WATCH_DROPPED: &str = "fluxgate_agent_sync_watch_dropped_total";
/// 1 while this replica holds the leader Lease (or elects no leader), else 0.
pub const LEADER: &str = "fluxgate_agent_leader";

/// Every counter, for tests that check each is described.
pub const COUNTERS: &[&str] = &[
    RECEIVER_FAILED_ATTEMPTS,
    TRIGGERS,
    KUBERNETES_WRITES,
    SYNC_STAGES,
    SYNC_WATCH_DROPPED,
];
/// Every histogram.
pub const HISTOGRAMS: &[&str] = &[TRIGGER_DURATION];

/// Registers descriptions with the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        SYNC_STAGES,
        "Sync stages seen after a trigger (fetched, applied, failed, timed_out)."
    );
    describe_gauge!(
        SYNC_WATCH_TRACKED,
        "Triggers whose sync the agent is following."
    );
    describe_counter!(
        SYNC_WATCH_DROPPED,
        "Sync-watch work given up because a bounded queue was full, by what."
    );
    describe_gauge!(
        RECEIVERS_FAILING,
        "Receivers failing for longer than retry.report_after (their events stay unacked)."
    );
    describe_counter!(
        RECEIVER_FAILED_ATTEMPTS,
        "Failed Receiver calls, by receiver and reason (http_<status>, connect, timeout, request)."
    );
    describe_counter!(
        TRIGGERS,
        "Finished Receiver deliveries, by outcome (delivered, coalesced, rejected)."
    );
    describe_histogram!(
        TRIGGER_DURATION,
        Unit::Seconds,
        "From the first call of a delivery to the Receiver's last answer, retries included."
    );
    describe_gauge!(
        KUBERNETES_SOURCES,
        "Flux sources seen, by kind (GitRepository, OCIRepository) and state (managed, other_host, opted_out, pinned, bad_ref)."
    );
    describe_gauge!(
        KUBERNETES_RECEIVERS_SERVED,
        "Ready Receivers in the cluster the agent calls: its own and brought ones."
    );
    describe_counter!(
        KUBERNETES_WRITES,
        "Writes to the Kubernetes API (Secrets, Receivers), by kind and outcome (ok, error)."
    );
    describe_gauge!(
        LEADER,
        "1 while this replica acts (holds the leader Lease, or elects none), else 0."
    );
}
