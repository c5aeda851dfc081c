//! One writer at a time on SQLite, log writes first.
//!
//! SQLite has one write lock per database. A connection that finds it taken runs SQLite's
//! busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms between
//! tries whatever the holder does: an append that arrived while a fan-out's cursor saves
//! held the lock for 3 ms slept 53 ms or more, and those sleeps were the end-to-end tail
//! (`docs/benchmarks.md`, A'''). So every SQLite write transaction takes this gate first,
//! and a write waits in the process, woken the moment the previous one commits.
//!
//! Waiters are served by [`WriteClass`]: anything that writes the log (appends, agent
//! changes, the floor) goes before bookkeeping (cursors, delivery records, agents'
//! reports, trimming old rows), so a hook waits for at most the one write in progress,
//! not for every background write queued before it. Within a class, first come first
//! served. Bookkeeping cannot starve: its writers batch, and the log's own writer takes
//! the gate once per batch of hooks.
//!
//! How long log writes waited is the histogram
//! [`LOG_WRITE_WAIT_SECONDS`](metric_names::LOG_WRITE_WAIT_SECONDS); how long each write
//! held its turn (what the writes after it waited for), per class,
//! [`LOG_WRITE_HOLD_SECONDS`](metric_names::LOG_WRITE_HOLD_SECONDS) and
//! [`BOOKKEEPING_WRITE_HOLD_SECONDS`](metric_names::BOOKKEEPING_WRITE_HOLD_SECONDS).
//!
//! PostgreSQL locks rows, not the database, and needs no gate ([`WriteGate::open`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::error::StoreError;
use crate::metric_names;

/// What a write is, for the order in which waiting writes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriteClass {
    /// Writes the log or what routing reads: hooks wait on it.
    Log,
    /// Records what happened: cursors, delivery records, reports, trimming.
    Bookkeeping,
}

/// Lets one write through at a time, [`WriteClass::Log`] first (see the module docs).
#[derive(Clone)]
pub(super) struct WriteGate {
    /// `None` when writes need no gate (PostgreSQL).
    shared: Option<Arc<Shared>>,
    /// How long a write waits for its turn before it fails.
    timeout: Duration,
}

struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    held: bool,
    log: VecDeque<oneshot::Sender<WritePermit>>,
    bookkeeping: VecDeque<oneshot::Sender<WritePermit>>,
}

/// The turn of one write; the next waiting write goes when it is dropped.
#[must_use = "the write's turn ends when the permit is dropped"]
pub(super) struct WritePermit {
    shared: Option<Arc<Shared>>,
    class: WriteClass,
    /// When the turn began, for the hold histograms.
    granted: Instant,
}

impl WritePermit {
    fn new(shared: Option<Arc<Shared>>, class: WriteClass) -> Self {
        Self {
            shared,
            class,
            granted: Instant::now(),
        }
    }
}

impl WriteGate {
    /// A gate that serialises writes, failing a write that waited `timeout` for its turn.
    pub(super) fn serialising(timeout: Duration) -> Self {
        Self {
            shared: Some(Arc::new(Shared {
                state: Mutex::new(State::default()),
            })),
            timeout,
        }
    }

    /// A gate every write passes at once.
    pub(super) fn open() -> Self {
        Self {
            shared: None,
            timeout: Duration::ZERO,
        }
    }

    /// Waits for this write's turn. [`StoreError::WriterBusy`] if it did not come within
    /// the gate's timeout.
    pub(super) async fn enter(&self, class: WriteClass) -> Result<WritePermit, StoreError> {
        let Some(shared) = &self.shared else {
            return Ok(WritePermit::new(None, class));
        };
        let asked = Instant::now();
        let permit = self.wait_for_turn(shared, class).await;
        if class == WriteClass::Log {
            metrics::histogram!(metric_names::LOG_WRITE_WAIT_SECONDS)
                .record(asked.elapsed().as_secs_f64());
        }
        permit
    }

    async fn wait_for_turn(
        &self,
        shared: &Arc<Shared>,
        class: WriteClass,
    ) -> Result<WritePermit, StoreError> {
        let turn = {
            let mut state = shared.state.lock();
            if !state.held {
                state.held = true;
                return Ok(WritePermit::new(Some(shared.clone()), class));
            }
            let (sender, turn) = oneshot::channel();
            match class {
                WriteClass::Log => state.log.push_back(sender),
                WriteClass::Bookkeeping => state.bookkeeping.push_back(sender),
            }
            turn
        };
        // A permit handed over after this wait gave up is dropped with the channel, which
        // passes the turn on.
        match tokio::time::timeout(self.timeout, turn).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => unreachable!("the gate keeps every waiter's sender until it sends"),
            Err(_) => Err(StoreError::WriterBusy {
                waited: self.timeout,
            }),
        }
    }
}

impl Drop for WritePermit {
    fn drop(&mut self) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let held = match self.class {
            WriteClass::Log => metric_names::LOG_WRITE_HOLD_SECONDS,
            WriteClass::Bookkeeping => metric_names::BOOKKEEPING_WRITE_HOLD_SECONDS,
        };
        metrics::histogram!(held).record(self.granted.elapsed().as_secs_f64());
        let mut state = shared.state.lock();
        loop {
            let (next, class) = match state.log.pop_front() {
                Some(next) => (next, WriteClass::Log),
                None => match state.bookkeeping.pop_front() {
                    Some(next) => (next, WriteClass::Bookkeeping),
                    None => {
                        state.held = false;
                        return;
                    }
                },
            };
            let permit = WritePermit::new(Some(shared.clone()), class);
            match next.send(permit) {
                Ok(()) => return,
                // That waiter gave up: its permit must not pass the turn on (the gate's
                // lock is held here), so it is disarmed and the next waiter is tried.
                Err(mut unwanted) => unwanted.shared = None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(5);

    /// Polls `future` once: whether it finished.
    async fn ready_now<F: std::future::Future + Unpin>(future: &mut F) -> Option<F::Output> {
        tokio::time::timeout(Duration::from_millis(20), future)
            .await
            .ok()
    }

    #[tokio::test]
    async fn one_write_at_a_time_and_the_next_goes_when_it_ends() {
        let gate = WriteGate::serialising(LONG);
        let first = gate.enter(WriteClass::Bookkeeping).await.unwrap();
        let mut second = Box::pin(gate.enter(WriteClass::Bookkeeping));
        assert!(
            ready_now(&mut second).await.is_none(),
            "waits for the first"
        );
        drop(first);
        let _second = ready_now(&mut second)
            .await
            .expect("goes when the first ends")
            .unwrap();
    }

    #[tokio::test]
    async fn a_waiting_log_write_goes_before_bookkeeping_that_waited_longer() {
        let gate = WriteGate::serialising(LONG);
        let holder = gate.enter(WriteClass::Bookkeeping).await.unwrap();
        let mut bookkeeping = Box::pin(gate.enter(WriteClass::Bookkeeping));
        assert!(ready_now(&mut bookkeeping).await.is_none());
        let mut log = Box::pin(gate.enter(WriteClass::Log));
        assert!(ready_now(&mut log).await.is_none());

        drop(holder);
        let log_permit = ready_now(&mut log).await.expect("the log write goes next");
        assert!(
            ready_now(&mut bookkeeping).await.is_none(),
            "bookkeeping still waits"
        );
        drop(log_permit);
        let _turn = ready_now(&mut bookkeeping)
            .await
            .expect("then bookkeeping")
            .unwrap();
    }

    #[tokio::test]
    async fn a_write_that_waits_too_long_fails_and_does_not_keep_the_turn() {
        let gate = WriteGate::serialising(Duration::from_millis(50));
        let holder = gate.enter(WriteClass::Log).await.unwrap();
        let refused = gate.enter(WriteClass::Log).await;
        assert!(
            matches!(refused, Err(StoreError::WriterBusy { .. })),
            "{:?}",
            refused.err()
        );
        drop(holder);
        let _next = ready_now(&mut Box::pin(gate.enter(WriteClass::Log)))
            .await
            .expect("the gate is free again")
            .unwrap();
    }

    /// Whether the write after one that gave up gets the turn, when the write gave up
    /// before the turn was handed to it (`gave_up_first`) or after.
    async fn next_write_goes_after_one_gave_up(gave_up_first: bool) {
        let gate = WriteGate::serialising(LONG);
        let holder = gate.enter(WriteClass::Log).await.unwrap();
        let mut abandoned = Box::pin(gate.enter(WriteClass::Log));
        assert!(ready_now(&mut abandoned).await.is_none());
        let mut next = Box::pin(gate.enter(WriteClass::Bookkeeping));
        assert!(ready_now(&mut next).await.is_none());
        if gave_up_first {
            drop(abandoned);
            drop(holder);
        } else {
            drop(holder);
            drop(abandoned);
        }
        let _turn = ready_now(&mut next)
            .await
            .expect("the turn passes on to the next write")
            .unwrap();
    }

    #[tokio::test]
    async fn a_turn_handed_to_a_write_that_gave_up_passes_on() {
        next_write_goes_after_one_gave_up(true).await;
    }

    #[tokio::test]
    async fn a_turn_handed_to_a_write_that_then_gave_up_passes_on() {
        next_write_goes_after_one_gave_up(false).await;
    }

    #[tokio::test]
    async fn an_open_gate_lets_every_write_through_at_once() {
        let gate = WriteGate::open();
        let _first = gate.enter(WriteClass::Log).await.unwrap();
        let _second = gate.enter(WriteClass::Log).await.unwrap();
    }

    /// The value of `name` in a Prometheus rendering, if it is there.
    fn rendered(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// How long each write held its turn is recorded under its class: what the writes after
    /// it waited for, so a long hold (a slow fsync, a checkpoint) shows.
    #[tokio::test]
    async fn how_long_each_write_held_its_turn_is_recorded_by_class() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let gate = WriteGate::serialising(LONG);
        let log = gate.enter(WriteClass::Log).await.expect("free");
        let mut bookkeeping = Box::pin(gate.enter(WriteClass::Bookkeeping));
        assert!(
            ready_now(&mut bookkeeping).await.is_none(),
            "the log write holds it"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
        metrics::with_local_recorder(&recorder, || drop(log));
        let bookkeeping = bookkeeping.await.expect("handed the turn");
        metrics::with_local_recorder(&recorder, || drop(bookkeeping));

        let text = handle.render();
        let log_hold = "fluxgate_store_log_write_hold_seconds";
        let bookkeeping_hold = "fluxgate_store_bookkeeping_write_hold_seconds";
        assert_eq!(
            rendered(&text, &format!("{log_hold}_count")),
            Some(1.0),
            "{text}"
        );
        let held = rendered(&text, &format!("{log_hold}_sum")).expect("a sum");
        assert!(
            held >= 0.03,
            "the log write held its turn {held} s, at least 0.03"
        );
        assert_eq!(
            rendered(&text, &format!("{bookkeeping_hold}_count")),
            Some(1.0),
            "{text}"
        );
    }
}
