//! Metric names of the agent streams, with their descriptions.

use fluxgate_proto::v1;

/// Counter: agent streams opened.
pub const STREAMS_OPENED: &str = "fluxgate_agent_streams_opened_total";
/// Counter: agent streams closed, by `reason` ([`close_label`]).
pub const STREAMS_CLOSED: &str = "fluxgate_agent_streams_closed_total";
/// Counter: events sent to agents, live and backlog.
pub const EVENTS_SENT: &str = "fluxgate_events_sent_total";
/// Counter: events sent from the backlog.
pub const BACKLOG_EVENTS_SENT: &str = "fluxgate_backlog_events_sent_total";
/// Counter: acks received.
pub const ACKS: &str = "fluxgate_acks_total";
/// Counter: receiver outcomes reported in acks, by `outcome` ([`outcome_label`]).
pub const RECEIVER_OUTCOMES: &str = "fluxgate_receiver_outcomes_total";
/// Histogram: from hook receipt to the ack.
pub const DELIVERY_LATENCY: &str = "fluxgate_delivery_latency_seconds";
/// Counter: failed cursor saves.
pub const CURSOR_SAVE_ERRORS: &str = "fluxgate_cursor_save_errors_total";
/// Counter: failed writes of receiver health reports.
pub const RECEIVER_HEALTH_SAVE_ERRORS: &str = "fluxgate_receiver_health_save_errors_total";
/// Counter: delivery records handed to the writer, by `stage`.
pub const DELIVERY_RECORDS: &str = "fluxgate_delivery_records_total";
/// Counter: delivery records dropped (queue full, or a batch that could not be saved).
pub const DELIVERY_RECORDS_DROPPED: &str = "fluxgate_delivery_records_dropped_total";
/// Counter: failed writes of a batch of delivery records.
pub const DELIVERY_RECORD_SAVE_ERRORS: &str = "fluxgate_delivery_record_save_errors_total";
/// Histogram: from commit to the event being sent on a stream, per stream.
pub const STAGE_COMMITTED_TO_SENT: &str = "fluxgate_stage_committed_to_sent_seconds";
/// Histogram: from the event being sent to the agent's ack (its Receivers answered).
pub const STAGE_SENT_TO_ACKED: &str = "fluxgate_stage_sent_to_acked_seconds";
/// Histogram: from hook receipt to Flux's source having fetched the revision.
pub const STAGE_PUSH_TO_FETCHED: &str = "fluxgate_stage_push_to_fetched_seconds";
/// Histogram: from hook receipt to a Kustomization or HelmRelease having applied it.
pub const STAGE_PUSH_TO_APPLIED: &str = "fluxgate_stage_push_to_applied_seconds";
/// Gauge: open streams of each agent (label `agent`) on this replica; summed over the
/// replicas, 0 means the agent is disconnected.
pub const AGENT_STREAMS: &str = "fluxgate_agent_open_streams";
/// Gauge: how many seqs each agent's stream (label `agent`) is behind this replica's log
/// head, as of its last keepalive or ack.
pub const AGENT_CURSOR_LAG: &str = "fluxgate_agent_cursor_lag";
/// Counter: sync stages agents reported, by `stage` (`fetched`, `applied`, `failed`,
/// `timed_out`).
pub const SYNC_REPORTS: &str = "fluxgate_sync_reports_total";
/// Counter: failed writes of subscription status reports.
pub const SUBSCRIPTION_STATUS_SAVE_ERRORS: &str = "fluxgate_subscription_status_save_errors_total";
/// Counter: agent messages of an unknown kind.
pub const AGENT_MESSAGES_IGNORED: &str = "fluxgate_agent_messages_ignored_total";
/// Counter: GitLab flux (`ReconcileProjects`) streams opened.
pub const FLUX_STREAMS_OPENED: &str = "fluxgate_gitlab_flux_streams_opened_total";
/// Counter: GitLab flux streams closed, by `reason` ([`close_label`], or `closed`).
pub const FLUX_STREAMS_CLOSED: &str = "fluxgate_gitlab_flux_streams_closed_total";
/// Counter: `ReconcileProjectsResponse`s sent (one per path a client sent per event).
pub const FLUX_NOTIFICATIONS_SENT: &str = "fluxgate_gitlab_flux_notifications_total";

/// The `reason` label of [`STREAMS_CLOSED`] for a stream that ended with `code`.
pub fn close_label(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::ResourceExhausted => "overflow",
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::InvalidArgument => "invalid_argument",
        _ => "error",
    }
}

/// The `outcome` label of [`RECEIVER_OUTCOMES`]: `delivered`, not `OUTCOME_DELIVERED`.
pub fn outcome_label(outcome: v1::Outcome) -> &'static str {
    match outcome {
        v1::Outcome::Unspecified => "unspecified",
        v1::Outcome::Delivered => "delivered",
        v1::Outcome::Coalesced => "coalesced",
        v1::Outcome::Rejected => "rejected",
        v1::Outcome::Failed => "failed",
    }
}

/// The counters above (registered at zero at start-up, so a fresh broker lists them).
pub const COUNTERS: &[&str] = &[
    STREAMS_OPENED,
    STREAMS_CLOSED,
    EVENTS_SENT,
    BACKLOG_EVENTS_SENT,
    ACKS,
    RECEIVER_OUTCOMES,
    CURSOR_SAVE_ERRORS,
    RECEIVER_HEALTH_SAVE_ERRORS,
    SUBSCRIPTION_STATUS_SAVE_ERRORS,
    AGENT_MESSAGES_IGNORED,
    DELIVERY_RECORDS,
    DELIVERY_RECORDS_DROPPED,
    DELIVERY_RECORD_SAVE_ERRORS,
    SYNC_REPORTS,
    FLUX_STREAMS_OPENED,
    FLUX_STREAMS_CLOSED,
    FLUX_NOTIFICATIONS_SENT,
];
/// The gauges above labelled by agent: they exist once an agent connected (a series
/// without the label would stand for an agent named "").
pub const PER_AGENT_GAUGES: &[&str] = &[AGENT_STREAMS, AGENT_CURSOR_LAG];
/// The histograms above (registered at start-up).
pub const HISTOGRAMS: &[&str] = &[
    DELIVERY_LATENCY,
    STAGE_COMMITTED_TO_SENT,
    STAGE_SENT_TO_ACKED,
    STAGE_PUSH_TO_FETCHED,
    STAGE_PUSH_TO_APPLIED,
];

/// Registers the descriptions with the installed recorder (once, at start-up).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(STREAMS_OPENED, "Agent streams opened.");
    describe_counter!(STREAMS_CLOSED, "Agent streams closed, by reason.");
    describe_counter!(EVENTS_SENT, "Events sent to agents (live and backlog).");
    describe_counter!(
        BACKLOG_EVENTS_SENT,
        "Events sent to agents from the backlog on connect."
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
    describe_counter!(CURSOR_SAVE_ERRORS, "Failed cursor saves (retried).");
    describe_counter!(
        DELIVERY_RECORDS,
        "Delivery records (fluxgate trace) handed to the writer, by stage."
    );
    describe_counter!(
        DELIVERY_RECORDS_DROPPED,
        "Delivery records dropped because the database was slower than the agents."
    );
    describe_counter!(
        DELIVERY_RECORD_SAVE_ERRORS,
        "Failed writes of a batch of delivery records."
    );
    describe_counter!(SYNC_REPORTS, "Sync stages reported by agents, by stage.");
    metrics::describe_gauge!(
        AGENT_STREAMS,
        "Open streams of each agent on this replica (0 on every replica: disconnected)."
    );
    metrics::describe_gauge!(
        AGENT_CURSOR_LAG,
        "Seqs each agent's stream is behind this replica's log head."
    );
    describe_histogram!(
        STAGE_COMMITTED_TO_SENT,
        Unit::Seconds,
        "From an event's commit to its sending on an agent stream."
    );
    describe_histogram!(
        STAGE_SENT_TO_ACKED,
        Unit::Seconds,
        "From an event's sending to the agent's ack (its Receivers answered)."
    );
    describe_histogram!(
        STAGE_PUSH_TO_FETCHED,
        Unit::Seconds,
        "From hook receipt to Flux's source having fetched the revision."
    );
    describe_histogram!(
        STAGE_PUSH_TO_APPLIED,
        Unit::Seconds,
        "From hook receipt to a Kustomization or HelmRelease having applied the revision."
    );
    describe_counter!(
        RECEIVER_HEALTH_SAVE_ERRORS,
        "Failed writes of an agent's receiver health report."
    );
    describe_counter!(
        SUBSCRIPTION_STATUS_SAVE_ERRORS,
        "Failed writes of an agent's subscription status report."
    );
    describe_counter!(
        AGENT_MESSAGES_IGNORED,
        "Agent messages of a kind this broker does not know, ignored."
    );
    describe_counter!(
        FLUX_STREAMS_OPENED,
        "GitLab flux (KAS ReconcileProjects) streams opened."
    );
    describe_counter!(
        FLUX_STREAMS_CLOSED,
        "GitLab flux (KAS ReconcileProjects) streams closed, by reason."
    );
    describe_counter!(
        FLUX_NOTIFICATIONS_SENT,
        "ReconcileProjectsResponse messages sent to GitLab flux clients."
    );
}
