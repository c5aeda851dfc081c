//! The behavioural suite of the bus contract, run over the in-process bus and over Redis
//! (127.0.0.1:6379, a key prefix of its own per test), the way the store's suite runs over
//! SQLite and PostgreSQL.
//!
//! The contract, seen from a follower: every entry committed on any replica after it
//! subscribed reaches it, first in seq order per committing replica (an entry may come a
//! second time: a replica's own entries come back through Redis; the follower skips
//! them); a receiver that falls behind is told it lagged, never silently skipped.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use fluxgate_core::{
    AdminAction, AgentName, LogEntry, LogRecord, Seq, StateCause, StateChange, UnixMillis,
};
use fluxgate_replication::{Batch, Bus, InProcessBus, RedisBus, RedisBusConfig};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(10);
const REDIS_URL: &str = "redis://127.0.0.1:6379";

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Medium::in_process()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Medium::redis()).await;
                }
            )*
        }
    };
}

suite!(
    entries_reach_every_replica_in_order,
    a_large_batch_arrives_whole_and_in_order,
    a_receiver_that_falls_behind_is_told_it_lagged,
);

/// What the replicas of one test share: one process-wide bus, or one Redis stream.
enum Medium {
    InProcess(Arc<InProcessBus>),
    Redis {
        config: RedisBusConfig,
        stop: CancellationToken,
    },
}

impl Medium {
    fn in_process() -> Self {
        Medium::InProcess(Arc::new(InProcessBus::new(4096)))
    }

    fn redis() -> Self {
        Medium::Redis {
            config: RedisBusConfig {
                url: REDIS_URL.to_owned(),
                key_prefix: format!("fluxgate-test-{}", uuid::Uuid::new_v4().simple()),
                stream_max_len: 100_000,
                local_capacity: 4096,
            },
            stop: CancellationToken::new(),
        }
    }

    /// This medium with buses that buffer `capacity` batches for a slow receiver.
    fn with_capacity(self, capacity: usize) -> Self {
        match self {
            Medium::InProcess(_) => Medium::InProcess(Arc::new(InProcessBus::new(capacity))),
            Medium::Redis { mut config, stop } => {
                config.local_capacity = capacity;
                Medium::Redis { config, stop }
            }
        }
    }

    /// One replica's bus, following the medium (for Redis: once its subscriber reads).
    async fn replica(&self) -> Arc<dyn Bus> {
        match self {
            Medium::InProcess(bus) => bus.clone(),
            Medium::Redis { config, stop } => {
                let (bus, tasks) = RedisBus::start(config.clone(), stop.clone()).unwrap();
                for task in tasks {
                    tokio::spawn(task);
                }
                let deadline = tokio::time::Instant::now() + PATIENCE;
                while !bus.is_connected() {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the bus did not connect to {REDIS_URL}"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Arc::new(bus)
            }
        }
    }

    /// Stops the buses and removes what the test wrote to Redis.
    async fn finish(self) {
        if let Medium::Redis { config, stop } = self {
            stop.cancel();
            let client = ::redis::Client::open(REDIS_URL).unwrap();
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            let _: () = ::redis::cmd("DEL")
                .arg(config.stream_key())
                .query_async(&mut connection)
                .await
                .unwrap();
        }
    }
}

fn entry(seq: u64) -> LogEntry {
    LogEntry {
        seq: Seq(seq),
        recorded_at: UnixMillis(0),
        record: LogRecord::State(StateChange {
            cause: StateCause::Admin {
                action: AdminAction::Create,
                agent: AgentName::parse("edge").unwrap(),
            },
            effects: Vec::new(),
        }),
    }
}

fn entries(seqs: std::ops::RangeInclusive<u64>) -> Vec<LogEntry> {
    seqs.map(entry).collect()
}

/// One replica's follower, as far as the bus is concerned: what it received, in the order
/// of first arrival (a repeat is skipped, as the follower skips it).
struct Receiver {
    batches: broadcast::Receiver<Batch>,
    seen: BTreeSet<u64>,
}

impl Receiver {
    fn of(bus: &dyn Bus) -> Self {
        Self {
            batches: bus.subscribe(),
            seen: BTreeSet::new(),
        }
    }

    /// The seqs received for the first time until every one of `expected` was.
    async fn first_arrivals(&mut self, expected: &[u64]) -> Vec<u64> {
        let mut order = Vec::new();
        while !expected.iter().all(|seq| self.seen.contains(seq)) {
            let batch = tokio::time::timeout(PATIENCE, self.batches.recv())
                .await
                .unwrap_or_else(|_| panic!("only {order:?} of {expected:?} arrived"))
                .expect("no lag, no close");
            for entry in batch.iter() {
                if self.seen.insert(entry.seq.get()) {
                    order.push(entry.seq.get());
                }
            }
        }
        order
    }
}

async fn entries_reach_every_replica_in_order(medium: Medium) {
    let (a, b) = (medium.replica().await, medium.replica().await);
    let mut on_a = Receiver::of(a.as_ref());
    let mut on_b = Receiver::of(b.as_ref());
    a.committed(&entries(1..=2));
    a.committed(&entries(3..=3));
    a.committed(&entries(4..=6));
    let expected: Vec<u64> = (1..=6).collect();
    assert_eq!(on_a.first_arrivals(&expected).await, expected, "on a");
    assert_eq!(on_b.first_arrivals(&expected).await, expected, "on b");
    // And the other way round.
    b.committed(&entries(7..=8));
    let expected = [7, 8];
    assert_eq!(on_a.first_arrivals(&expected).await, expected, "on a");
    assert_eq!(on_b.first_arrivals(&expected).await, expected, "on b");
    medium.finish().await;
}

async fn a_large_batch_arrives_whole_and_in_order(medium: Medium) {
    let (a, b) = (medium.replica().await, medium.replica().await);
    let mut on_b = Receiver::of(b.as_ref());
    // More than one read of the Redis stream takes.
    a.committed(&entries(1..=2500));
    let expected: Vec<u64> = (1..=2500).collect();
    assert_eq!(on_b.first_arrivals(&expected).await, expected);
    medium.finish().await;
}

async fn a_receiver_that_falls_behind_is_told_it_lagged(medium: Medium) {
    let medium = medium.with_capacity(2);
    let a = medium.replica().await;
    let mut slow = a.subscribe();
    for seq in 1..=10 {
        a.committed(&entries(seq..=seq));
    }
    match tokio::time::timeout(PATIENCE, slow.recv()).await {
        Ok(Err(RecvError::Lagged(missed))) => assert!(missed > 0),
        other => panic!("expected to be told it lagged, got {other:?}"),
    }
    medium.finish().await;
}
