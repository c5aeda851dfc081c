//! Metric names of the ingest crate, their labels, and their descriptions.
//!
//! Label values are snake_case words: an outcome (`accepted`, `duplicate`, `ignored`, or
//! the error code of a refusal such as `unauthenticated`), a refusal reason
//! (`token_wrong`, `too_large`, …), a hook kind (a GitLab kind name, or `other`) or a
//! record kind (`push`, `tag_push`, `catalog`).

/// Hooks received, by [`OUTCOME`].
pub const HOOKS: &str = "fluxgate_hooks_total";
/// Hooks refused, by [`REASON`].
pub const HOOK_REFUSALS: &str = "fluxgate_hook_refusals_total";
/// Hooks of kinds fluxgate does not use, by [`KIND`].
pub const HOOKS_IGNORED: &str = "fluxgate_hooks_ignored_total";
/// Records parsed from accepted hooks, by [`KIND`].
pub const HOOK_RECORDS: &str = "fluxgate_hook_records_total";
/// GitLab Rails' `GitPushEvent` calls on the KAS listener, by [`OUTCOME`] (`accepted`,
/// `duplicate`, `unauthenticated`, `invalid_argument`, `unavailable`).
pub const KAS_GIT_PUSH_EVENTS: &str = "fluxgate_kas_git_push_events_total";
/// Time to answer a hook.
pub const HOOK_SECONDS: &str = "fluxgate_hook_seconds";
/// Pipeline notifications (`POST /api/v1/notify`), by [`OUTCOME`].
pub const NOTIFICATIONS: &str = "fluxgate_notifications_total";
/// Pipeline notifications refused, by [`REASON`] (`expired`, `audience`, `unknown_kid`, …).
pub const NOTIFY_REFUSALS: &str = "fluxgate_notify_refusals_total";

/// Every metric of this crate.
pub const ALL: &[&str] = &[
    HOOKS,
    HOOK_REFUSALS,
    HOOKS_IGNORED,
    HOOK_RECORDS,
    HOOK_SECONDS,
    NOTIFICATIONS,
    NOTIFY_REFUSALS,
    KAS_GIT_PUSH_EVENTS,
];

/// Label of [`HOOKS`] and [`NOTIFICATIONS`]: the answer's status, or the refusal's error
/// code.
pub const OUTCOME: &str = "outcome";
/// Label of [`HOOK_REFUSALS`] and [`NOTIFY_REFUSALS`]: why it was refused.
pub const REASON: &str = "reason";
/// Label of [`HOOKS_IGNORED`] and [`HOOK_RECORDS`].
pub const KIND: &str = "kind";

/// The [`KIND`] of a record of [`HOOK_RECORDS`] that changes the catalog.
pub const CATALOG_RECORD: &str = "catalog";

/// The counters above (registered at zero at start-up, so a fresh broker lists them).
pub const COUNTERS: &[&str] = &[
    HOOKS,
    HOOK_REFUSALS,
    HOOKS_IGNORED,
    HOOK_RECORDS,
    NOTIFICATIONS,
    NOTIFY_REFUSALS,
    KAS_GIT_PUSH_EVENTS,
];
/// The histograms above (registered at start-up).
pub const HISTOGRAMS: &[&str] = &[HOOK_SECONDS];

/// Registers descriptions with the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(HOOKS, "Hooks received, by outcome.");
    describe_counter!(
        HOOK_REFUSALS,
        "Hooks refused, by reason (every one, also when its log line was rate limited)."
    );
    describe_counter!(
        HOOKS_IGNORED,
        "Hooks of kinds fluxgate does not use, by kind."
    );
    describe_counter!(HOOK_RECORDS, "Records parsed from accepted hooks, by kind.");
    describe_counter!(
        NOTIFICATIONS,
        "Pipeline notifications (POST /api/v1/notify), by outcome."
    );
    describe_counter!(
        NOTIFY_REFUSALS,
        "Pipeline notifications refused, by reason (every one, also when its log line was rate limited)."
    );
    describe_counter!(
        KAS_GIT_PUSH_EVENTS,
        "GitLab Rails' KAS GitPushEvent calls, by outcome."
    );
    describe_histogram!(
        HOOK_SECONDS,
        Unit::Seconds,
        "Time to answer a hook, commit included."
    );
}

/// The [`OUTCOME`] of a refused `GitPushEvent` call: its gRPC code in snake case.
pub fn kas_outcome(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::InvalidArgument => "invalid_argument",
        tonic::Code::Unavailable => "unavailable",
        _ => "internal",
    }
}
