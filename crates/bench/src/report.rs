//! Latency histograms and how results are printed.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies in microseconds, 1 µs to 60 s, three significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, 60_000_000);
    let _ = histogram.record(micros);
}

/// `p50 1.23 ms  p99 4.56 ms  p99.9 7.89 ms  max 9.99 ms`
pub fn percentiles(histogram: &Histogram<u64>) -> String {
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1000.0
    )
}

/// `fluxgate-stream 1.21 s, sqlx-sqlite-wor 0.90 s, …`: CPU seconds each thread name
/// used between two readings, largest first (names used less than 10 ms left out).
pub fn cpu_by_thread(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> String {
    let mut used: Vec<(&str, f64)> = after
        .iter()
        .map(|(name, seconds)| {
            let earlier = before.get(name).copied().unwrap_or(0.0);
            (name.as_str(), seconds - earlier)
        })
        .filter(|(_, seconds)| *seconds >= 0.01)
        .collect();
    used.sort_by(|a, b| b.1.total_cmp(&a.1));
    used.iter()
        .map(|(name, seconds)| format!("{name} {seconds:.2} s"))
        .collect::<Vec<_>>()
        .join(", ")
}
