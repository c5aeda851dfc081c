//! Logging (tracing: text or JSON, on stderr so that stdout carries only command output)
//! and the Prometheus recorder, with every metric described.

use parking_lot::Mutex;

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
    let mut handle = HANDLE.lock();
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
    fluxgate_fanout::metric_names::describe();
    fluxgate_replication::metric_names::describe();
    for crate_metrics in CRATES {
        (crate_metrics.describe)();
    }
    register_at_zero();
    Ok(handle)
}

/// One crate's metric names: its `metric_names` module.
struct CrateMetrics {
    describe: fn(),
    counters: &'static [&'static str],
    histograms: &'static [&'static str],
}

macro_rules! crate_metrics {
    ($($module:path),+ $(,)?) => {
        &[$({
            use $module as names;
            CrateMetrics {
                describe: names::describe,
                counters: names::COUNTERS,
                histograms: names::HISTOGRAMS,
            }
        }),+]
    };
}

/// Every crate of the broker that records metrics. Each describes its own; counters and
/// histograms are registered at zero when the recorder is installed, so a fresh broker's
/// `/metrics` lists them (with their descriptions) before they first count; gauges get
/// their first value when the broker starts. A test scrapes a fresh broker for every
/// metric name in the code.
const CRATES: &[CrateMetrics] = crate_metrics![
    fluxgate_ingest::metric_names,
    fluxgate_store::metric_names,
    fluxgate_fanout::metric_names,
    fluxgate_replication::metric_names,
    fluxgate_stream::metric_names,
    crate::metric_names,
];

fn register_at_zero() {
    for crate_metrics in CRATES {
        for name in crate_metrics.counters {
            metrics::counter!(*name).absolute(0);
        }
        for name in crate_metrics.histograms {
            // Registering is enough: an empty histogram renders with zero counts.
            let _ = metrics::histogram!(*name);
        }
    }
}
