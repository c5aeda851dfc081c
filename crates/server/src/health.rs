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
    /// 0: no Redis, 1: disconnected, 2: connected.
    redis: std::sync::atomic::AtomicU8,
    /// Set after the first check, so the first result is not reported as a change.
    checked: AtomicBool,
}

#[derive(Debug, Serialize)]
pub struct ReadinessReport {
    pub ready: bool,
    pub database: bool,
    /// Whether the Redis bus is connected (absent without Redis). It does not decide
    /// readiness: without Redis, events still flow through the database, only slower.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<bool>,
    pub shutting_down: bool,
}

impl Readiness {
    pub fn report(&self) -> ReadinessReport {
        let database = self.database_ok.load(Ordering::Acquire);
        let shutting_down = self.shutting_down.load(Ordering::Acquire);
        let redis = match self.redis.load(Ordering::Acquire) {
            0 => None,
            state => Some(state == 2),
        };
        ReadinessReport {
            ready: database && !shutting_down,
            database,
            redis,
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

    /// Checks the database (and reads the Redis bus's state) every `interval` until
    /// shutdown.
    pub async fn watch(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        redis_connected: Option<impl Fn() -> bool>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            let ok = matches!(
                tokio::time::timeout(interval, store.ping()).await,
                Ok(Ok(()))
            );
            self.set_database(ok);
            if let Some(connected) = &redis_connected {
                self.redis
                    .store(if connected() { 2 } else { 1 }, Ordering::Release);
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}
