//! Retention: periodically drop log entries older than the retention period.
//!
//! An agent whose cursor falls below the trimmed range is told so when it reconnects
//! (`cursor_expired`) and triggers all its receivers once.

use std::sync::Arc;
use std::time::Duration;

use fluxgate_core::UnixMillis;
use fluxgate_store::Store;
use tokio_util::sync::CancellationToken;

use crate::metric_names;

pub async fn run(
    store: Arc<dyn Store>,
    retention: Duration,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let before = store.log_bounds().await.map(|b| b.floor).ok();
        match store.trim(UnixMillis::now().minus(retention)).await {
            Ok(bounds) if Some(bounds.floor) != before => {
                metrics::gauge!(metric_names::LOG_FLOOR).set(bounds.floor.get() as f64);
                metrics::counter!(metric_names::LOG_TRIMMED).increment(1);
                tracing::info!(floor = %bounds.floor, head = %bounds.head, "retention removed old log entries");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "retention run failed; will retry"),
        }
    }
}
