//! Liveness and readiness.
//!
//! Ready means: not shutting down, and the database answered its last check (run every
//! second with a short timeout). A load balancer stops sending hooks and agents to a
//! replica that is not ready.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fluxgate_store::Store;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct Readiness {
    shutting_down: AtomicBool,
    database_ok: AtomicBool,
    /// Set after the first check, so the first result is not reported as a change.
    checked: AtomicBool,
}

#[derive(Debug, Serialize)]
pub struct ReadinessReport {
    pub ready: bool,
    pub database: bool,
    pub shutting_down: bool,
}

impl Readiness {
    pub fn report(&self) -> ReadinessReport {
        let database = self.database_ok.load(Ordering::Acquire);
        let shutting_down = self.shutting_down.load(Ordering::Acquire);
        ReadinessReport {
            ready: database && !shutting_down,
            database,
            shutting_down,
        }
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub fn set_database(&self, ok: bool) {
        let was = self.database_ok.swap(ok, Ordering::AcqRel);
        let first = !self.checked.swap(true, Ordering::AcqRel);
        if first && !ok {
            tracing::warn!("database unreachable; not ready");
        } else if !first && was != ok {
            if ok {
                tracing::info!("database reachable again; ready");
            } else {
                tracing::warn!("database unreachable; not ready");
            }
        }
    }

    /// Checks the database every `interval` until shutdown.
    pub async fn watch_database(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            let ok = matches!(
                tokio::time::timeout(interval, store.ping()).await,
                Ok(Ok(()))
            );
            self.set_database(ok);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}
