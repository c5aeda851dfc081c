//! Measures the store's hot paths through sqlx's `Any` driver and through the native
//! `SqlitePool` / `PgPool`, running the same SQL, to decide which driver the store uses
//! (docs/decisions/0001-store-sql-driver.md).
//!
//! ```sh
//! TMPDIR=/dev/shm cargo run --release -p fluxgate-store --example driver_bench
//! TMPDIR=/dev/shm cargo run --release -p fluxgate-store --example driver_bench -- sqlite
//! ```
//!
//! Each workload runs on a fresh database per driver, in alternating rounds (Any, native,
//! Any, native, …) so that a noisy neighbour hits both; the median round is reported.
//! The drivers differ in CPU, not in I/O, so commits skip the disk flush: PostgreSQL with
//! `synchronous_commit = off` (set here), SQLite by running with `TMPDIR=/dev/shm`.
//! The statements are the store's own (`src/sql/log.rs`, `batch.rs`, `agents.rs`),
//! written once below and compiled for each driver. `SqlStore` itself (on `Any`) is
//! measured beside them, to show the copied statements are the real cost.

use std::time::{Duration, Instant};

use fluxgate_core::{
    AgentId, EventKind, GitRef, LogEntry, LogRecord, ProjectId, ProjectRef, PushEvent, Seq, Sha,
    UnixMillis, Visibility,
};
use fluxgate_core::{HookBatch, NewRecord};
use fluxgate_store::testing::TestDatabase;
use fluxgate_store::{CursorUpdate, SqlStore, Store as _};

const ROUNDS: usize = 9;
/// Hooks per group-commit transaction.
const BATCH_SIZES: [usize; 2] = [1, 32];
const TRANSACTIONS_PER_ROUND: usize = 200;
const REPLAY_ENTRIES: usize = 10_000;
const AGENTS: usize = 16;
const CURSOR_SAVES_PER_ROUND: usize = 200;

fn push_event(n: usize) -> PushEvent {
    let sha = |n: usize| Sha::parse(&format!("{n:040x}")).unwrap();
    let git_ref = GitRef::parse(&format!("refs/heads/branch-{n}")).unwrap();
    PushEvent {
        event_id: uuid::Uuid::now_v7(),
        project: ProjectRef {
            id: ProjectId::new(1).unwrap(),
            path: fluxgate_core::FullPath::parse("team/app").unwrap(),
            visibility: Some(Visibility::Private),
        },
        kind: EventKind::for_ref(&git_ref),
        git_ref: Some(git_ref),
        artifact: None,
        before: sha(n),
        after: sha(n + 1),
        received_at: UnixMillis::now(),
    }
}

fn cursor_update(agent: usize, cursor: u64) -> CursorUpdate {
    CursorUpdate {
        agent: AgentId(i64::try_from(agent).unwrap() + 1),
        stream: format!("stream-{agent}"),
        subscriptions: "digest".to_owned(),
        started_after: Seq(0),
        opened_at: UnixMillis(1),
        cursor: Seq(cursor),
        seen_at: UnixMillis::now(),
        closed_at: None,
    }
}

fn values(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| {
            let params: Vec<String> = (1..=columns)
                .map(|c| format!("${}", row * columns + c))
                .collect();
            format!("({})", params.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_from(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The workloads, compiled once per driver: `$db` is `sqlx::Any`, `Sqlite` or `Postgres`.
macro_rules! workloads {
    ($module:ident, $db:ty) => {
        mod $module {
            use super::*;
            use sqlx::Row as _;

            pub type Pool = sqlx::Pool<$db>;

            /// One group commit of `hooks`, statement for statement as `log::append` runs it
            /// for pushes to a known project: lock, prefetch keys, ref heads and projects,
            /// write keys, ref heads and entries, move the head.
            pub async fn append(pool: &Pool, hooks: &[(String, PushEvent)]) {
                let now = UnixMillis::now().get();
                let mut tx = pool.begin().await.unwrap();
                let row = sqlx::query(
                    "UPDATE log_state SET head_seq = head_seq WHERE id = 1 RETURNING head_seq, floor_seq",
                )
                .fetch_one(&mut *tx)
                .await
                .unwrap();
                let head: i64 = row.try_get("head_seq").unwrap();

                let sql = format!(
                    "SELECT key, seqs FROM idempotency_keys WHERE created_at >= $1 AND key IN ({})",
                    list_from(2, hooks.len())
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now - 86_400_000);
                for (key, _) in hooks {
                    query = query.bind(key.as_str());
                }
                for row in query.fetch_all(&mut *tx).await.unwrap() {
                    let _: String = row.try_get("seqs").unwrap();
                }

                let conditions: Vec<String> = (0..hooks.len())
                    .map(|i| format!("(project_id = ${} AND ref = ${})", 2 * i + 1, 2 * i + 2))
                    .collect();
                let sql = format!(
                    "SELECT project_id, ref, before_sha, after_sha, seq, received_at FROM ref_heads WHERE {}",
                    conditions.join(" OR ")
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (_, event) in hooks {
                    query = query.bind(event.project.id.get()).bind(event.git_ref.as_ref().map_or("", |r| r.as_str()));
                }
                for row in query.fetch_all(&mut *tx).await.unwrap() {
                    let _: String = row.try_get("after_sha").unwrap();
                }

                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT id, path, visibility FROM projects WHERE id IN ({})",
                    list_from(1, 1)
                )))
                .bind(1_i64)
                .fetch_all(&mut *tx)
                .await
                .unwrap();
                assert_eq!(row.len(), 1);

                let seqs: Vec<i64> = (1..=hooks.len() as i64).map(|i| head + i).collect();
                let sql = format!(
                    "INSERT INTO idempotency_keys (key, seqs, created_at) VALUES {} \
                     ON CONFLICT (key) DO UPDATE SET seqs = excluded.seqs, created_at = excluded.created_at",
                    values(hooks.len(), 3)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for ((key, _), seq) in hooks.iter().zip(&seqs) {
                    query = query.bind(key.as_str()).bind(format!("[{seq}]")).bind(now);
                }
                query.execute(&mut *tx).await.unwrap();

                let sql = format!(
                    "INSERT INTO ref_heads (project_id, ref, before_sha, after_sha, seq, received_at) VALUES {} \
                     ON CONFLICT (project_id, ref) DO UPDATE SET before_sha = excluded.before_sha, \
                     after_sha = excluded.after_sha, seq = excluded.seq, received_at = excluded.received_at",
                    values(hooks.len(), 6)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for ((_, event), seq) in hooks.iter().zip(&seqs) {
                    query = query
                        .bind(event.project.id.get())
                        .bind(event.git_ref.as_ref().map_or("", |r| r.as_str()))
                        .bind(event.before.as_str())
                        .bind(event.after.as_str())
                        .bind(*seq)
                        .bind(now);
                }
                query.execute(&mut *tx).await.unwrap();

                let sql = format!(
                    "INSERT INTO log_entries (seq, recorded_at, kind, project_id, body) VALUES {}",
                    values(hooks.len(), 5)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for ((_, event), seq) in hooks.iter().zip(&seqs) {
                    let record = LogRecord::Push(event.clone());
                    query = query
                        .bind(*seq)
                        .bind(now)
                        .bind(record.kind())
                        .bind(Some(event.project.id.get()))
                        .bind(serde_json::to_string(&record).unwrap());
                }
                query.execute(&mut *tx).await.unwrap();

                sqlx::query("UPDATE log_state SET head_seq = $1 WHERE id = 1")
                    .bind(head + hooks.len() as i64)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }

            /// `log::read`: one page of `limit` entries, decoded.
            pub async fn replay(pool: &Pool, limit: usize) -> Vec<LogEntry> {
                let mut conn = pool.acquire().await.unwrap();
                let found = sqlx::query(
                    "SELECT seq, recorded_at, body FROM log_entries WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(0_i64)
                .bind(limit as i64)
                .fetch_all(&mut *conn)
                .await
                .unwrap();
                found
                    .iter()
                    .map(|row| LogEntry {
                        seq: Seq(row.try_get::<i64, _>("seq").unwrap() as u64),
                        recorded_at: UnixMillis(row.try_get("recorded_at").unwrap()),
                        record: serde_json::from_str(&row.try_get::<String, _>("body").unwrap())
                            .unwrap(),
                    })
                    .collect()
            }

            /// `agents::save_cursors` for one chunk: upsert the streams, release taken-over
            /// holds, prune old holds, move the agents' cursors.
            pub async fn save_cursors(pool: &Pool, updates: &[CursorUpdate]) {
                let stale_before = UnixMillis::now().get() - 60_000;
                let mut tx = pool.begin().await.unwrap();
                let sql = format!(
                    "INSERT INTO agent_stream_cursors \
                     (agent_id, stream_id, subscriptions, started_seq, cursor_seq, opened_at, updated_at, \
                     closed_at) \
                     VALUES {} ON CONFLICT (agent_id, stream_id) DO UPDATE SET \
                     subscriptions = excluded.subscriptions, \
                     started_seq = CASE WHEN agent_stream_cursors.started_seq < excluded.started_seq \
                     THEN excluded.started_seq ELSE agent_stream_cursors.started_seq END, \
                     cursor_seq = CASE WHEN agent_stream_cursors.cursor_seq < excluded.cursor_seq \
                     THEN excluded.cursor_seq ELSE agent_stream_cursors.cursor_seq END, \
                     updated_at = CASE WHEN agent_stream_cursors.updated_at < excluded.updated_at \
                     THEN excluded.updated_at ELSE agent_stream_cursors.updated_at END, \
                     closed_at = COALESCE(agent_stream_cursors.closed_at, excluded.closed_at)",
                    values(updates.len(), 8)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for update in updates {
                    query = query
                        .bind(update.agent.0)
                        .bind(update.stream.as_str())
                        .bind(update.subscriptions.as_str())
                        .bind(update.started_after.get() as i64)
                        .bind(update.cursor.get() as i64)
                        .bind(update.opened_at.get())
                        .bind(update.seen_at.get())
                        .bind(update.closed_at.map(UnixMillis::get));
                }
                query.execute(&mut *tx).await.unwrap();

                let agents: Vec<i64> = updates.iter().map(|u| u.agent.0).collect();
                let release = format!(
                    "DELETE FROM agent_stream_cursors \
                     WHERE agent_id IN ({agents}) \
                     AND COALESCE(closed_at, CASE WHEN updated_at < $1 THEN updated_at END) IS NOT NULL \
                     AND EXISTS (SELECT 1 FROM agent_stream_cursors later \
                       WHERE later.agent_id = agent_stream_cursors.agent_id \
                       AND later.stream_id <> agent_stream_cursors.stream_id \
                       AND later.subscriptions = agent_stream_cursors.subscriptions \
                       AND later.opened_at > COALESCE(agent_stream_cursors.closed_at, agent_stream_cursors.updated_at) \
                       AND later.started_seq <= agent_stream_cursors.cursor_seq \
                       AND later.cursor_seq >= agent_stream_cursors.cursor_seq)",
                    agents = list_from(2, agents.len())
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(release)).bind(stale_before);
                for agent in &agents {
                    query = query.bind(*agent);
                }
                query.execute(&mut *tx).await.unwrap();

                let prune = format!(
                    "DELETE FROM agent_stream_cursors WHERE closed_at IS NOT NULL AND stream_id IN \
                     (SELECT stream_id FROM (SELECT stream_id, ROW_NUMBER() OVER \
                     (PARTITION BY agent_id ORDER BY closed_at DESC) AS newest \
                     FROM agent_stream_cursors WHERE closed_at IS NOT NULL AND agent_id IN ({agents})) \
                     AS ranked WHERE newest > 64)",
                    agents = list_from(1, agents.len())
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(prune));
                for agent in &agents {
                    query = query.bind(*agent);
                }
                query.execute(&mut *tx).await.unwrap();

                let sql = format!(
                    "UPDATE agents SET \
                     cursor_seq = COALESCE((SELECT MIN(c.cursor_seq) FROM agent_stream_cursors c \
                     WHERE c.agent_id = agents.id), agents.cursor_seq), \
                     last_seen_at = CASE WHEN last_seen_at IS NULL OR last_seen_at < v.column2 \
                     THEN v.column2 ELSE last_seen_at END \
                     FROM (VALUES {}) AS v WHERE agents.id = v.column1",
                    values(updates.len(), 2)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for update in updates {
                    query = query.bind(update.agent.0).bind(update.seen_at.get());
                }
                query.execute(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
            }
        }
    };
}

workloads!(any, sqlx::Any);
workloads!(sqlite, sqlx::Sqlite);
workloads!(postgres, sqlx::Postgres);

/// A fresh, migrated database with one project and `AGENTS` agents, and a `SqlStore` on it.
async fn fresh(postgres: bool) -> (TestDatabase, SqlStore) {
    let db = if postgres {
        TestDatabase::postgres().await
    } else {
        TestDatabase::sqlite()
    };
    if let Some(name) = db.postgres_name() {
        db.execute_as_admin(&format!(
            "ALTER DATABASE {name} SET synchronous_commit = off"
        ))
        .await;
    }
    let store = db.store().await;
    store
        .append(&[HookBatch {
            idempotency_key: None,
            records: vec![NewRecord::Push(push_event(0))],
        }])
        .await
        .unwrap();
    for i in 0..AGENTS {
        let token = fluxgate_core::AgentToken::generate();
        store
            .create_agent(fluxgate_store::NewAgent {
                name: fluxgate_core::AgentName::parse(&format!("agent-{i}")).unwrap(),
                config_project: fluxgate_core::FullPath::parse("team/app").unwrap(),
                grants: Vec::new(),
                allow_internal: false,
                token_digest: token.digest(),
            })
            .await
            .unwrap();
    }
    (db, store)
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Per-round results of one driver, for one workload.
#[derive(Default)]
struct Samples(Vec<f64>);

impl Samples {
    fn add(&mut self, value: f64) {
        self.0.push(value);
    }
    fn median(&self) -> f64 {
        median(self.0.clone())
    }
}

/// CPU time this process has used (every thread, SQLite's included), in clock ticks of
/// 10 ms, from `/proc/self/stat`.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Runs `ROUNDS` rounds of the three variants in turn and prints the median throughput of
/// each, and the CPU time per operation of each over all rounds (the drivers differ in
/// CPU: on a shared machine, throughput mostly measures the neighbours).
macro_rules! compare {
    ($label:expr, $ops_per_round:expr, $any:expr, $native:expr, $store:expr) => {{
        let (mut any, mut native, mut store) =
            (Samples::default(), Samples::default(), Samples::default());
        let mut cpu = [0_u64; 3];
        for _ in 0..ROUNDS {
            let start = cpu_ticks();
            any.add($any.await);
            let after_any = cpu_ticks();
            native.add($native.await);
            let after_native = cpu_ticks();
            store.add($store.await);
            cpu[0] += after_any - start;
            cpu[1] += after_native - after_any;
            cpu[2] += cpu_ticks() - after_native;
        }
        let ops = ($ops_per_round * ROUNDS) as f64;
        let micros = cpu.map(|ticks| ticks as f64 * 10_000.0 / ops);
        let (a, n, s) = (any.median(), native.median(), store.median());
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:+.0}% |",
            $label,
            a,
            n,
            s,
            micros[0],
            micros[1],
            micros[2],
            (micros[1] / micros[0] - 1.0) * 100.0,
        );
    }};
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

async fn run(postgres: bool) {
    let backend = if postgres { "PostgreSQL" } else { "SQLite" };
    // One database per variant: each keeps its own log.
    let (_any_db, any_store) = fresh(postgres).await;
    let (native_db, _) = fresh(postgres).await;
    let (_store_db, store) = fresh(postgres).await;
    let any_pool = sqlx::AnyPool::connect(_any_db.url()).await.unwrap();
    let native_sqlite = if postgres {
        None
    } else {
        Some(sqlx::SqlitePool::connect(native_db.url()).await.unwrap())
    };
    let native_pg = if postgres {
        Some(sqlx::PgPool::connect(native_db.url()).await.unwrap())
    } else {
        None
    };
    drop(any_store);
    println!("\n### {backend}\n");
    println!(
        "| workload | per s, Any | per s, native | per s, SqlStore | CPU-µs/op, Any | CPU-µs/op, native | CPU-µs/op, SqlStore | CPU native vs Any |"
    );
    println!("|---|---|---|---|---|---|---|---|");

    let mut next = 1_000_000;
    let mut batch = |size: usize| -> Vec<(String, PushEvent)> {
        (0..size)
            .map(|_| {
                next += 1;
                (format!("key-{next}"), push_event(next))
            })
            .collect()
    };
    for size in BATCH_SIZES {
        let batches: Vec<Vec<Vec<(String, PushEvent)>>> = (0..3 * ROUNDS)
            .map(|_| (0..TRANSACTIONS_PER_ROUND).map(|_| batch(size)).collect())
            .collect();
        let mut rounds = batches.into_iter();
        let hooks = size * TRANSACTIONS_PER_ROUND;
        compare!(
            format!("append, {size} hook(s) per commit (op: hook)"),
            hooks,
            async {
                let round = rounds.next().unwrap();
                let started = Instant::now();
                for hooks in &round {
                    any::append(&any_pool, hooks).await;
                }
                per_second(hooks, started.elapsed())
            },
            async {
                let round = rounds.next().unwrap();
                let started = Instant::now();
                for hooks in &round {
                    match (&native_sqlite, &native_pg) {
                        (Some(pool), _) => sqlite::append(pool, hooks).await,
                        (_, Some(pool)) => postgres::append(pool, hooks).await,
                        _ => unreachable!(),
                    }
                }
                per_second(hooks, started.elapsed())
            },
            async {
                let round: Vec<Vec<HookBatch>> = rounds
                    .next()
                    .unwrap()
                    .into_iter()
                    .map(|hooks| {
                        hooks
                            .into_iter()
                            .map(|(key, event)| HookBatch {
                                idempotency_key: Some(key),
                                records: vec![NewRecord::Push(event)],
                            })
                            .collect()
                    })
                    .collect();
                let started = Instant::now();
                for hooks in &round {
                    store.append(hooks).await.unwrap();
                }
                per_second(hooks, started.elapsed())
            }
        );
    }

    // Every log now holds more than REPLAY_ENTRIES entries.
    compare!(
        format!("replay read of {REPLAY_ENTRIES} entries (op: entry)"),
        REPLAY_ENTRIES,
        async {
            let started = Instant::now();
            assert_eq!(
                any::replay(&any_pool, REPLAY_ENTRIES).await.len(),
                REPLAY_ENTRIES
            );
            per_second(REPLAY_ENTRIES, started.elapsed())
        },
        async {
            let started = Instant::now();
            let read = match (&native_sqlite, &native_pg) {
                (Some(pool), _) => sqlite::replay(pool, REPLAY_ENTRIES).await,
                (_, Some(pool)) => postgres::replay(pool, REPLAY_ENTRIES).await,
                _ => unreachable!(),
            };
            assert_eq!(read.len(), REPLAY_ENTRIES);
            per_second(REPLAY_ENTRIES, started.elapsed())
        },
        async {
            let started = Instant::now();
            let read = store
                .read_log(Seq::ZERO, REPLAY_ENTRIES as u32)
                .await
                .unwrap();
            assert_eq!(read.len(), REPLAY_ENTRIES);
            per_second(REPLAY_ENTRIES, started.elapsed())
        }
    );

    let mut cursor = 0;
    let mut updates = || {
        cursor += 1;
        (0..AGENTS)
            .map(|agent| cursor_update(agent, cursor))
            .collect::<Vec<_>>()
    };
    let rounds: Vec<Vec<Vec<CursorUpdate>>> = (0..3 * ROUNDS)
        .map(|_| (0..CURSOR_SAVES_PER_ROUND).map(|_| updates()).collect())
        .collect();
    let mut rounds = rounds.into_iter();
    compare!(
        format!("cursor save, {AGENTS} streams per save (op: save)"),
        CURSOR_SAVES_PER_ROUND,
        async {
            let round = rounds.next().unwrap();
            let started = Instant::now();
            for updates in &round {
                any::save_cursors(&any_pool, updates).await;
            }
            per_second(round.len(), started.elapsed())
        },
        async {
            let round = rounds.next().unwrap();
            let started = Instant::now();
            for updates in &round {
                match (&native_sqlite, &native_pg) {
                    (Some(pool), _) => sqlite::save_cursors(pool, updates).await,
                    (_, Some(pool)) => postgres::save_cursors(pool, updates).await,
                    _ => unreachable!(),
                }
            }
            per_second(round.len(), started.elapsed())
        },
        async {
            let round = rounds.next().unwrap();
            let started = Instant::now();
            for updates in &round {
                store.save_cursors(updates, UnixMillis(0)).await.unwrap();
            }
            per_second(round.len(), started.elapsed())
        }
    );
    any_pool.close().await;
    if let Some(pool) = native_sqlite {
        pool.close().await;
    }
    if let Some(pool) = native_pg {
        pool.close().await;
    }
    store.close().await;
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    sqlx::any::install_default_drivers();
    let only = std::env::args().nth(1);
    if only.as_deref() != Some("postgres") {
        run(false).await;
    }
    if only.as_deref() != Some("sqlite") {
        run(true).await;
    }
}
