//! What both sides of the fan-out benchmark record and how a round is summarised: every
//! delivery as (stream, push number, instant), counted per stream so that a missing or
//! duplicated delivery is found, and the CPU a server process used for the round.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::procfs;
use crate::report::{latency_histogram, record};

/// One delivery seen by a client.
#[derive(Clone, Copy)]
struct Delivery {
    stream: u32,
    push: u64,
    at: Instant,
}

/// Deliveries seen by `streams` clients, shared by their reader tasks.
pub struct Deliveries {
    streams: usize,
    seen: Mutex<Vec<Delivery>>,
    count: AtomicU64,
}

impl Deliveries {
    pub fn new(streams: usize) -> Self {
        Self {
            streams,
            seen: Mutex::new(Vec::with_capacity(streams)),
            count: AtomicU64::new(0),
        }
    }

    pub fn streams(&self) -> usize {
        self.streams
    }

    /// Called by a reader task for every message it gets.
    pub fn record(&self, stream: usize, push: u64) {
        let at = Instant::now();
        self.seen.lock().push(Delivery {
            stream: u32::try_from(stream).unwrap_or(u32::MAX),
            push,
            at,
        });
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Polls until `total` deliveries have been seen since the last [`Deliveries::take`]
    /// or `timeout` passes; returns whether they all came.
    pub async fn wait_for(&self, total: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.count.load(Ordering::Relaxed) >= total {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }

    /// Everything seen so far, and a fresh count.
    fn take(&self) -> Vec<Delivery> {
        let mut seen = self.seen.lock();
        self.count.store(0, Ordering::Relaxed);
        std::mem::take(&mut *seen)
    }

    /// Summarises a round of pushes sent at `sent` (push number, instant just before it was
    /// sent); `started` is when the round began. Deliveries of other pushes are ignored.
    pub fn summarise(&self, started: Instant, sent: &[(u64, Instant)]) -> RoundDeliveries {
        let seen = self.take();
        let mut per_stream_and_push = vec![0u32; self.streams * sent.len()];
        let mut latency = latency_histogram();
        let mut last = started;
        let index_of: HashMap<u64, usize> = sent
            .iter()
            .enumerate()
            .map(|(index, (push, _))| (*push, index))
            .collect();
        for delivery in &seen {
            let Some(&index) = index_of.get(&delivery.push) else {
                continue;
            };
            let stream = delivery.stream as usize;
            if stream >= self.streams {
                continue;
            }
            per_stream_and_push[stream * sent.len() + index] += 1;
            record(
                &mut latency,
                delivery.at.saturating_duration_since(sent[index].1),
            );
            last = last.max(delivery.at);
        }
        let missing = per_stream_and_push.iter().filter(|&&n| n == 0).count();
        let duplicated = per_stream_and_push
            .iter()
            .map(|&n| n.saturating_sub(1) as usize)
            .sum();
        let micros = |q: f64| Duration::from_micros(latency.value_at_quantile(q));
        RoundDeliveries {
            expected: self.streams * sent.len(),
            missing,
            duplicated,
            p50: micros(0.5),
            p99: micros(0.99),
            max: Duration::from_micros(latency.max()),
            time_to_last: last.saturating_duration_since(started),
        }
    }
}

/// How one round's deliveries went.
#[derive(Clone, Copy, Debug)]
pub struct RoundDeliveries {
    pub expected: usize,
    pub missing: usize,
    pub duplicated: usize,
    /// Latency from just before a push was sent to each of its deliveries.
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// From the start of the round to its last delivery.
    pub time_to_last: Duration,
}

impl RoundDeliveries {
    pub fn ensure_complete(&self, what: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.missing == 0,
            "{what}: {} of {} deliveries are missing",
            self.missing,
            self.expected
        );
        Ok(())
    }
}

/// How long a server process must go without using CPU before a round's CPU count ends.
const QUIET_FOR: Duration = Duration::from_millis(100);
/// The longest a round's CPU count waits for the process to go quiet.
const QUIET_WITHIN: Duration = Duration::from_secs(2);

/// CPU seconds `pid` has used, read once it has used none for [`QUIET_FOR`] (or after
/// [`QUIET_WITHIN`]): a round's count then includes the work that follows its last delivery
/// (fluxgate's acks, NATS's flushes), and nothing of the next round.
pub async fn cpu_seconds_once_quiet(pid: u32) -> anyhow::Result<f64> {
    let deadline = Instant::now() + QUIET_WITHIN;
    let mut last = procfs::cpu_seconds(pid)?;
    let mut unchanged_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = procfs::cpu_seconds(pid)?;
        if now != last {
            last = now;
            unchanged_since = Instant::now();
        }
        if unchanged_since.elapsed() >= QUIET_FOR || Instant::now() >= deadline {
            return Ok(now);
        }
    }
}

/// The median of some durations (the lower one of the middle two for an even count).
pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values
        .get(values.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

/// One round: its deliveries, the server's CPU and the senders' answer times (hooks only).
pub struct RoundFigures {
    pub deliveries: RoundDeliveries,
    pub cpu_seconds: f64,
    pub answers: Vec<Duration>,
}

impl RoundFigures {
    /// Waits (up to `timeout`) for every stream to get every push in `sent`, then for the
    /// server to go quiet, and summarises the round.
    pub async fn finish(
        deliveries: &Deliveries,
        pid: u32,
        cpu_before: f64,
        started: Instant,
        sent: &[(u64, Instant)],
        answers: Vec<Duration>,
    ) -> anyhow::Result<Self> {
        let total = (deliveries.streams() * sent.len()) as u64;
        deliveries.wait_for(total, ROUND_TIMEOUT).await;
        let cpu_seconds = cpu_seconds_once_quiet(pid).await? - cpu_before;
        Ok(Self {
            deliveries: deliveries.summarise(started, sent),
            cpu_seconds,
            answers,
        })
    }

    /// Server CPU per delivery.
    pub fn cpu_per_delivery(&self) -> Duration {
        Duration::from_secs_f64(self.cpu_seconds / self.deliveries.expected.max(1) as f64)
    }

    pub fn mean_answer(&self) -> Option<Duration> {
        let count = u32::try_from(self.answers.len()).ok().filter(|&n| n > 0)?;
        Some(self.answers.iter().sum::<Duration>() / count)
    }
}

/// How long a round may take before its missing deliveries count as lost.
const ROUND_TIMEOUT: Duration = Duration::from_secs(180);

/// CPU per delivery over several rounds together (CPU ticks are 10 ms: one short round
/// alone is too coarse).
pub fn cpu_per_delivery(rounds: &[RoundFigures]) -> Duration {
    let cpu: f64 = rounds.iter().map(|round| round.cpu_seconds).sum();
    let deliveries: usize = rounds.iter().map(|round| round.deliveries.expected).sum();
    Duration::from_secs_f64(cpu / deliveries.max(1) as f64)
}

/// A side's figures: single pushes, a burst of sequential pushes, and optionally a burst
/// sent with concurrency.
pub struct SideFigures {
    pub singles: Vec<RoundFigures>,
    pub burst: RoundFigures,
    pub concurrent_burst: Option<RoundFigures>,
}

impl SideFigures {
    pub fn single_time_to_last(&self) -> Duration {
        median(
            self.singles
                .iter()
                .map(|r| r.deliveries.time_to_last)
                .collect(),
        )
    }

    pub fn single_p50(&self) -> Duration {
        median(self.singles.iter().map(|r| r.deliveries.p50).collect())
    }

    pub fn single_p99(&self) -> Duration {
        median(self.singles.iter().map(|r| r.deliveries.p99).collect())
    }

    pub fn single_cpu_per_delivery(&self) -> Duration {
        cpu_per_delivery(&self.singles)
    }
}

/// `12.34 ms`
pub fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

/// `12.3 µs`
pub fn us(duration: Duration) -> String {
    format!("{:.1} µs", duration.as_secs_f64() * 1e6)
}

/// Prints one round's line.
pub fn print_round(label: &str, round: &RoundFigures) {
    let d = &round.deliveries;
    let answer = round
        .mean_answer()
        .map(|a| format!(", hook answer {} (mean)", ms(a)))
        .unwrap_or_default();
    println!(
        "- {label}: last delivery {}; per delivery p50 {} p99 {} max {}; server CPU {:.3} s = {} per delivery{answer}{}",
        ms(d.time_to_last),
        ms(d.p50),
        ms(d.p99),
        ms(d.max),
        round.cpu_seconds,
        us(round.cpu_per_delivery()),
        if d.missing + d.duplicated > 0 {
            format!("; MISSING {} DUPLICATED {}", d.missing, d.duplicated)
        } else {
            String::new()
        }
    );
}
