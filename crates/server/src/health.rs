//! Liveness and readiness.
//!
//! Ready means: not shutting down, no essential task has failed, and the database accepted
//! a write in its last check (run every second with a short timeout; a database that
//! answers reads but refuses writes, such as a read-only replica after a failover, is not
//! good enough). A load balancer stops sending hooks and agents to a replica that is not
//! ready.

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
    redis: parking_lot::Mutex<RedisLink>,
    /// Set after the first check, so the first result is not reported as a change.
    checked: AtomicBool,
    /// The essential task whose end made this replica unable to work, and how it ended.
    failed: parking_lot::Mutex<Option<String>>,
}

/// The Redis bus as readiness sees it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum RedisLink {
    /// No Redis is configured (or it was not checked yet).
    #[default]
    Absent,
    Disconnected,
    Connected,
}

impl RedisLink {
    /// For the report: absent without Redis.
    fn connected(self) -> Option<bool> {
        match self {
            Self::Absent => None,
            Self::Disconnected => Some(false),
            Self::Connected => Some(true),
        }
    }
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
    /// Why the broker cannot work any more (it is draining and will exit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

impl Readiness {
    pub fn report(&self) -> ReadinessReport {
        let database = self.database_ok.load(Ordering::Acquire);
        let shutting_down = self.shutting_down.load(Ordering::Acquire);
        let redis = self.redis.lock().connected();
        let failed = self.failed.lock().clone();
        ReadinessReport {
            ready: database && !shutting_down && failed.is_none(),
            database,
            redis,
            shutting_down,
            failed,
        }
    }

    /// An essential task ended: not ready from now on.
    pub fn fail(&self, reason: String) {
        let mut failed = self.failed.lock();
        failed.get_or_insert(reason);
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub fn set_database(&self, ok: bool) {
        let was = self.database_ok.swap(ok, Ordering::AcqRel);
        let first = !self.checked.swap(true, Ordering::AcqRel);
        if first && !ok {
            tracing::warn!("database unreachable or refusing writes; not ready");
        } else if !first && was != ok {
            if ok {
                tracing::info!("database accepts writes again; ready");
            } else {
                tracing::warn!("database unreachable or refusing writes; not ready");
            }
        }
    }

    fn set_redis(&self, connected: bool) {
        *self.redis.lock() = if connected {
            RedisLink::Connected
        } else {
            RedisLink::Disconnected
        };
    }

    /// Checks the database once, with `timeout`, and records the result (and the Redis
    /// bus's state, when there is one).
    pub async fn check(
        &self,
        store: &dyn Store,
        redis_connected: Option<&impl Fn() -> bool>,
        timeout: Duration,
    ) {
        let ok = matches!(
            tokio::time::timeout(timeout, store.check_writable()).await,
            Ok(Ok(()))
        );
        self.set_database(ok);
        if let Some(connected) = redis_connected {
            self.set_redis(connected());
        }
    }

    /// Checks again every `interval` until shutdown. Start-up runs the first
    /// [`Readiness::check`], so a broker that has started answers `/readyz` from a real
    /// check, not from "not checked yet".
    pub async fn watch(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        redis_connected: Option<impl Fn() -> bool>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            self.check(store.as_ref(), redis_connected.as_ref(), interval)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_is_reported_only_once_checked_and_never_decides_readiness() {
        let readiness = Readiness::default();
        readiness.set_database(true);
        assert_eq!(readiness.report().redis, None);
        readiness.set_redis(false);
        let report = readiness.report();
        assert_eq!((report.redis, report.ready), (Some(false), true));
        readiness.set_redis(true);
        assert_eq!(readiness.report().redis, Some(true));
        readiness.fail("log writer ended".to_owned());
        readiness.fail("a later reason".to_owned());
        let report = readiness.report();
        assert!(!report.ready);
        assert_eq!(report.failed.as_deref(), Some("log writer ended"));
    }
}
