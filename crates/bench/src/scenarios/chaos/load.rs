//! Steady ingest for the fault run: hooks at a fixed rate, hook `n` to receiver
//! `n % receivers` on a ref of its own (`refs/heads/h<n>`), alternating between the replicas
//! as a load balancer would. A hook that gets no 2xx is sent again a second later to the
//! other replica, as GitLab retries failed hooks, until it is acknowledged or the retry
//! deadline passes. Every attempt is recorded in the [`Ledger`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fluxgate_e2e::harness::{HookClient, Project};
use parking_lot::{Mutex, MutexGuard};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::payload::push_body;

/// How long one attempt may take before it counts as failed. Longer than the broker's
/// header-read timeout (10 s), so a hook queued behind an idle-socket flood is not cut short.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// The pause before a failed hook is sent again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The broker's answer to one hook, once it was 2xx.
#[derive(Debug, Clone)]
pub struct Acknowledged {
    /// The seq the broker named (`None` if a 2xx named none: reported as an anomaly).
    pub seq: Option<u64>,
    pub replica: usize,
    pub at: Instant,
}

/// One attempt that got no 2xx.
#[derive(Debug, Clone)]
pub struct FailedAttempt {
    pub replica: usize,
    pub started: Instant,
    pub ended: Instant,
    /// `HTTP 503: {...}`, `connection: ...` or `timed out`.
    pub reason: String,
}

/// Everything that happened to one hook.
#[derive(Debug, Clone)]
pub struct HookRecord {
    pub receiver: usize,
    pub sent: Instant,
    pub acknowledged: Option<Acknowledged>,
    pub failures: Vec<FailedAttempt>,
}

/// Every hook of the run, by number.
#[derive(Default)]
pub struct Ledger {
    hooks: Mutex<Vec<HookRecord>>,
}

impl Ledger {
    pub fn hooks(&self) -> MutexGuard<'_, Vec<HookRecord>> {
        self.hooks.lock()
    }
}

/// No Receiver is kept quiet.
pub const NOBODY_QUIET: usize = usize::MAX;

/// The running load generator.
pub struct LoadGenerator {
    pub ledger: Arc<Ledger>,
    /// A Receiver (by index) that gets no more hooks once set; [`NOBODY_QUIET`] for none.
    pub quiet: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl LoadGenerator {
    /// Starts sending `rate` hooks a second; failed hooks are retried until `retry_deadline`.
    pub fn start(
        replicas: [HookClient; 2],
        projects: Vec<Project>,
        rate: f64,
        retry_deadline: Instant,
    ) -> Self {
        let ledger = Arc::new(Ledger::default());
        let stop = Arc::new(AtomicBool::new(false));
        let quiet = Arc::new(std::sync::atomic::AtomicUsize::new(NOBODY_QUIET));
        let task = tokio::spawn(generate(
            Arc::new(replicas),
            projects,
            rate,
            retry_deadline,
            ledger.clone(),
            stop.clone(),
            quiet.clone(),
        ));
        Self {
            ledger,
            quiet,
            stop,
            task,
        }
    }

    /// Stops sending new hooks and waits for those still being retried (they give up at
    /// the retry deadline).
    pub async fn stop(self) -> anyhow::Result<Arc<Ledger>> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?;
        Ok(self.ledger)
    }
}

async fn generate(
    replicas: Arc<[HookClient; 2]>,
    projects: Vec<Project>,
    rate: f64,
    retry_deadline: Instant,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    quiet: Arc<std::sync::atomic::AtomicUsize>,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    // A stalled generator must not burst afterwards: the rate stays modest.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = JoinSet::new();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        while in_flight.try_join_next().is_some() {}
        let receiver = usize::try_from(n).unwrap_or(usize::MAX) % projects.len();
        if receiver == quiet.load(Ordering::Relaxed) {
            n += 1;
            continue;
        }
        let body = push_body(&projects[receiver], &format!("refs/heads/h{n}"), n);
        let index = {
            let mut hooks = ledger.hooks();
            hooks.push(HookRecord {
                receiver,
                sent: Instant::now(),
                acknowledged: None,
                failures: Vec::new(),
            });
            hooks.len() - 1
        };
        in_flight.spawn(deliver(
            replicas.clone(),
            body,
            index,
            retry_deadline,
            ledger.clone(),
        ));
        n += 1;
    }
    while in_flight.join_next().await.is_some() {}
}

/// Sends one hook until a replica answers 2xx, starting with replica `index % 2`.
async fn deliver(
    replicas: Arc<[HookClient; 2]>,
    body: serde_json::Value,
    index: usize,
    retry_deadline: Instant,
    ledger: Arc<Ledger>,
) {
    for attempt in 0.. {
        let replica = (index + attempt) % 2;
        let started = Instant::now();
        let reason =
            match tokio::time::timeout(ATTEMPT_TIMEOUT, replicas[replica].post(&body, &[])).await {
                Ok(Ok(response)) if (200..300).contains(&response.status) => {
                    ledger.hooks()[index].acknowledged = Some(Acknowledged {
                        seq: response.seqs().first().copied(),
                        replica,
                        at: Instant::now(),
                    });
                    return;
                }
                Ok(Ok(response)) => format!("HTTP {}: {}", response.status, response.body),
                Ok(Err(error)) => format!("connection: {error}"),
                Err(_) => format!("timed out after {ATTEMPT_TIMEOUT:?}"),
            };
        ledger.hooks()[index].failures.push(FailedAttempt {
            replica,
            started,
            ended: Instant::now(),
            reason,
        });
        if Instant::now() + RETRY_AFTER > retry_deadline {
            return;
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}
