//! Logging (tracing: text or JSON, on stderr so that stdout carries only command output)
//! and the Prometheus recorder, with every metric described.

use std::sync::Mutex;

use fluxgate_stream::metric_names as stream;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::LogFormat;

/// Installs the global tracing subscriber (see `fluxgate-logging`: never panics, never
/// blocks). `RUST_LOG` wins over `level` when set. Keep the guard until the process ends.
pub fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<fluxgate_logging::LogGuard> {
    let format = match format {
        LogFormat::Text => fluxgate_logging::Format::Text,
        LogFormat::Json => fluxgate_logging::Format::Json,
    };
    Ok(fluxgate_logging::init(format, level)?)
}

/// The process's Prometheus recorder, installed (and every metric described) on the
/// first call; later calls, such as a second broker in one test process, share it.
pub fn prometheus() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut handle = HANDLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(handle) = handle.as_ref() {
        return Ok(handle.clone());
    }
    let installed = install_prometheus()?;
    *handle = Some(installed.clone());
    Ok(installed)
}

fn install_prometheus() -> anyhow::Result<PrometheusHandle> {
    const LATENCY_BUCKETS: &[f64] = &[
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        300.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Suffix("_batch_size".to_owned()),
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
        )?
        .install_recorder()?;
    fluxgate_stream::metric_names::describe();
    crate::metric_names::describe();
    describe_hook_and_store_metrics();
    register_at_zero();
    Ok(handle)
}

/// Counters and histograms of every crate in the broker. Each is registered at zero when
/// the recorder is installed, so a fresh broker's `/metrics` lists it (with its
/// description) before it first counts; gauges get their first value when the broker
/// starts. A test scrapes a fresh broker for every metric name in the code.
const COUNTERS: &[&[&str]] = &[
    crate::metric_names::COUNTERS,
    &[
        HOOKS,
        HOOK_REFUSALS,
        HOOKS_IGNORED,
        HOOK_RECORDS,
        stream::STREAMS_OPENED,
        stream::STREAMS_CLOSED,
        stream::EVENTS_SENT,
        stream::BACKLOG_EVENTS_SENT,
        stream::QUEUE_OVERFLOWS,
        stream::ACKS,
        stream::RECEIVER_OUTCOMES,
        stream::FOLLOWER_GAP_READS,
        stream::FOLLOWER_POLLS,
        stream::FOLLOWER_ERRORS,
        stream::CURSOR_SAVE_ERRORS,
        stream::REDIS_PUBLISH_DROPPED,
        stream::PRESENCE_ERRORS,
        stream::RECEIVER_HEALTH_SAVE_ERRORS,
        stream::AGENT_MESSAGES_IGNORED,
    ],
];
const HISTOGRAMS: &[&str] = &[
    HOOK_SECONDS,
    STORE_APPEND_SECONDS,
    STORE_APPEND_BATCH_SIZE,
    stream::DELIVERY_LATENCY,
];

fn register_at_zero() {
    for name in COUNTERS.iter().flat_map(|names| names.iter()) {
        metrics::counter!(*name).absolute(0);
    }
    for name in HISTOGRAMS {
        // Registering is enough: an empty histogram renders with zero counts.
        let _ = metrics::histogram!(*name);
    }
}

/// Metric names the ingest and store crates record under.
const HOOKS: &str = "fluxgate_hooks_total";
const HOOK_REFUSALS: &str = "fluxgate_hook_refusals_total";
const HOOKS_IGNORED: &str = "fluxgate_hooks_ignored_total";
const HOOK_RECORDS: &str = "fluxgate_hook_records_total";
const HOOK_SECONDS: &str = "fluxgate_hook_seconds";
const STORE_APPEND_SECONDS: &str = "fluxgate_store_append_seconds";
const STORE_APPEND_BATCH_SIZE: &str = "fluxgate_store_append_batch_size";

/// Metrics of the ingest and store crates, which name them where they record them.
fn describe_hook_and_store_metrics() {
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
    describe_histogram!(
        HOOK_SECONDS,
        Unit::Seconds,
        "Time to answer a hook, commit included."
    );
    describe_histogram!(
        STORE_APPEND_SECONDS,
        Unit::Seconds,
        "Time of one group-commit transaction."
    );
    describe_histogram!(STORE_APPEND_BATCH_SIZE, "Hooks committed per transaction.");
}
