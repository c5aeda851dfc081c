//! Logging (tracing: text or JSON, on stderr so that stdout carries only command output)
//! and the Prometheus recorder.

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

/// Installs the global metrics recorder and returns the handle `/metrics` renders.
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
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
    fluxgate_fanout::metric_names::describe();
    fluxgate_replication::metric_names::describe();
    fluxgate_stream::metric_names::describe();
    describe_server_metrics();
    crate::listen::metric::describe();
    Ok(handle)
}

fn describe_server_metrics() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!("fluxgate_hooks_total", "Hooks received, by outcome.");
    describe_counter!(
        "fluxgate_hook_refusals_total",
        "Hooks refused, by reason (every one, also when its log line was rate limited)."
    );
    describe_counter!(
        "fluxgate_hooks_ignored_total",
        "Hooks of kinds fluxgate does not use, by kind."
    );
    describe_counter!(
        "fluxgate_hook_records_total",
        "Records parsed from accepted hooks, by kind."
    );
    describe_histogram!(
        "fluxgate_hook_seconds",
        Unit::Seconds,
        "Time to answer a hook, commit included."
    );
    describe_histogram!(
        "fluxgate_store_append_seconds",
        Unit::Seconds,
        "Time of one group-commit transaction."
    );
    describe_histogram!(
        "fluxgate_store_append_batch_size",
        "Hooks committed per transaction."
    );
    describe_counter!(
        "fluxgate_log_trimmed_total",
        "Retention runs that moved the log floor."
    );
}
