//! The SQL implementation of [`Store`], for SQLite (the embedded default) and PostgreSQL.
//!
//! Both run the same queries through sqlx's `Any` driver: the SQL is written in the common
//! dialect (`$N` parameters, `ON CONFLICT`, `RETURNING`), and otherwise only the migrations
//! differ per database, and how several statements are sent as one ([`compound`]: SQLite
//! numbers its parameters `?`, and takes writes as a list where PostgreSQL takes CTEs).
//! Every write transaction takes the log lock before anything is read (an update of the
//! `log_state` row, PostgreSQL's row lock; on SQLite that or `BEGIN IMMEDIATE`, the
//! database's write lock): writers are serialised, so seqs are gapless and in commit
//! order, and reads inside the transaction see every earlier commit. Appending a batch of
//! hooks, the hot path, costs four round trips on PostgreSQL: the `BEGIN` that takes the
//! lock, one read ([`prefetch`]), one write, the commit. On SQLite, where a round trip is
//! a hop to the thread sqlx runs the connection on, it costs two: `BEGIN IMMEDIATE` goes
//! with the read and `COMMIT` with the write. Either way the connection is kept from one
//! append to the next ([`writer_connection`]), so the pool's check of a connection it
//! hands out and takes back adds none.

mod agents;
mod batch;
mod catalog;
mod compound;
mod deliveries;
mod log;
mod prefetch;
pub mod private_file;
mod rows;
mod write_gate;
mod writer_connection;

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fluxgate_core::HookBatch;
use fluxgate_core::{
    AgentId, AgentName, DeliveryRecord, LogEntry, ProjectId, ReceiverHealth, Seq, TokenDigest,
    UnixMillis,
};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection as _, Executor as _};

use crate::api::{Backend, Store};
use crate::clock::Clock;
use crate::error::{InvalidRequest, StoreError};
use crate::model::{
    AgentRecord, AgentUpdate, AppendResult, CursorUpdate, DeliveryWatermark, LogBounds, NewAgent,
    PushPage, RecentPushes, Snapshot,
};
use write_gate::{WriteClass, WriteGate};
use writer_connection::WriterConnection;

/// Tuning for a [`SqlStore`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long a hook's `Idempotency-Key` and each ref's last change are remembered for
    /// dedup.
    pub dedup_window: Duration,
    pub max_connections: u32,
    /// How long to wait for a connection before answering "unavailable".
    pub acquire_timeout: Duration,
    /// When entries are recorded, and what the dedup window is measured against.
    pub clock: Clock,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            dedup_window: Duration::from_secs(24 * 3600),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(3),
            clock: Clock::System,
        }
    }
}

/// A [`Store`] on SQLite or PostgreSQL.
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    /// The connection appends run on, kept between them.
    writer: Arc<WriterConnection>,
    /// SQLite's one writer at a time, log writes first.
    gate: WriteGate,
    backend: Backend,
    options: StoreOptions,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl SqlStore {
    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://…`). Does not migrate.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        if backend == Backend::Sqlite {
            private_file::make_private(url)?;
        }
        let connect_options = AnyConnectOptions::from_str(url)
            .map_err(|e| StoreError::Invalid(InvalidRequest::DatabaseUrl(e)))?;
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    if compound::Dialect::of(conn) == compound::Dialect::Sqlite {
                        // A statement that changes many rows keeps the pages it changed in
                        // a statement journal (to undo just that statement); SQLite spills
                        // it to a temporary file once it outgrows 64 KiB, which a batch of
                        // hooks did: a file created, written and deleted per append.
                        conn.execute("PRAGMA temp_store = MEMORY").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect_options)
            .await?;
        if backend == Backend::Sqlite {
            // Persistent once set: readers never block the writer, and commits stay durable
            // with the default `synchronous = FULL`.
            pool.execute("PRAGMA journal_mode = WAL").await?;
        }
        Ok(Self {
            pool,
            writer: Arc::new(WriterConnection::new(options.max_connections)),
            gate: match backend {
                Backend::Sqlite => WriteGate::serialising(options.acquire_timeout),
                Backend::Postgres => WriteGate::open(),
            },
            backend,
            options,
        })
    }

    /// Connects to a database that already exists and has every migration of this build:
    /// what the CLI opens, so that a mistyped data directory or URL is refused instead of
    /// silently becoming a new, empty database. A SQLite file that does not exist is
    /// [`InvalidRequest::NoDatabaseFile`] (and is not created); a database without all
    /// migrations is [`InvalidRequest::NotMigrated`].
    pub async fn connect_existing(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        if backend_of(url)? == Backend::Sqlite
            && let Some(path) = private_file::database_file(url)?
            && !path.exists()
        {
            return Err(StoreError::Invalid(InvalidRequest::NoDatabaseFile { path }));
        }
        let store = Self::connect(url, options).await?;
        if let Err(err) = store.check_migrated().await {
            store.close().await;
            return Err(err);
        }
        Ok(store)
    }

    /// Applies the migrations for this backend that have not run yet.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrator(self.backend).run(&self.pool).await?;
        Ok(())
    }

    /// Fails with [`InvalidRequest::NotMigrated`] unless every migration of this build has
    /// been applied. Writes nothing.
    pub async fn check_migrated(&self) -> Result<(), StoreError> {
        let table_count = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' \
                 AND name = '_sqlx_migrations'"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'"
            }
        };
        let tables: i64 = sqlx::query_scalar(table_count)
            .fetch_one(&self.pool)
            .await?;
        let applied: Vec<i64> = if tables == 0 {
            Vec::new()
        } else {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await?
        };
        let migrator = migrator(self.backend);
        let missing: Vec<_> = migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
            .collect();
        match missing.first() {
            None => Ok(()),
            Some(first) => Err(StoreError::Invalid(InvalidRequest::NotMigrated {
                missing: missing.len(),
                known: migrator.iter().count(),
                first: format!("{} {}", first.version, first.description),
            })),
        }
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// This build's migrations for `backend`.
fn migrator(backend: Backend) -> sqlx::migrate::Migrator {
    match backend {
        Backend::Sqlite => sqlx::migrate!("../../migrations/sqlite"),
        Backend::Postgres => sqlx::migrate!("../../migrations/postgres"),
    }
}

fn backend_of(url: &str) -> Result<Backend, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(StoreError::Invalid(InvalidRequest::UnsupportedUrl {
            scheme: url.split(':').next().unwrap_or_default().to_owned(),
        }))
    }
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> Backend {
        self.backend
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pool.execute("SELECT 1").await?;
        Ok(())
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        match self.backend {
            // A read-only PostgreSQL (a standby, or `default_transaction_read_only`) refuses
            // `FOR UPDATE` before taking any lock; `SKIP LOCKED` never waits for the writer.
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT head_seq FROM log_state FOR UPDATE SKIP LOCKED")
                    .execute(&mut *tx)
                    .await?;
                tx.rollback().await?;
            }
            // SQLite refuses writes only when its files are read-only, which the writer
            // reports as unavailable; answering is what can be checked without the lock.
            Backend::Sqlite => {
                self.pool.execute("SELECT 1").await?;
            }
        }
        Ok(())
    }

    async fn append(&self, hooks: &[HookBatch]) -> Result<AppendResult, StoreError> {
        let _turn = self.gate.enter(WriteClass::Log).await?;
        // A failed append's connection goes back to the pool (dropped), which checks it.
        let mut writing = self.writer.take(&self.pool).await?;
        let now = self.options.clock.now();
        let dedup_window = self.options.dedup_window;
        let appended = match self.backend {
            // Two hops to the connection's thread: `BEGIN IMMEDIATE` with the read, the
            // write with `COMMIT`.
            Backend::Sqlite => {
                let mut unsettled = writing.unsettled();
                let result = log::append(
                    unsettled.conn(),
                    hooks,
                    dedup_window,
                    now,
                    log::AppendTransaction::Inline,
                )
                .await;
                if result.is_ok() {
                    unsettled.settled();
                }
                result
            }
            Backend::Postgres => {
                let begun = match writing.conn.begin_with(log::LOCKING_BEGIN).await {
                    Ok(mut tx) => {
                        let result = log::append(
                            &mut tx,
                            hooks,
                            dedup_window,
                            now,
                            log::AppendTransaction::Begun,
                        )
                        .await?;
                        tx.commit().await?;
                        Ok(result)
                    }
                    Err(begin_failed) => Err(begin_failed),
                };
                begun.map_err(|begin_failed| {
                    // The `BEGIN` may have run and the lock not: the connection may be
                    // inside a transaction sqlx does not know of. Close it rather than
                    // pool it.
                    writing.conn.close_on_drop();
                    StoreError::from(begin_failed)
                })
            }
        };
        if appended.is_ok() {
            self.writer.keep(writing);
        }
        appended
    }

    async fn read_log(&self, after: Seq, limit: u32) -> Result<Vec<LogEntry>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        log::read(&mut conn, after, limit).await
    }

    async fn read_pushes(
        &self,
        after: Seq,
        up_to: Seq,
        limit: u32,
    ) -> Result<PushPage, StoreError> {
        let mut conn = self.pool.acquire().await?;
        log::read_pushes(&mut conn, after, up_to, limit).await
    }

    async fn log_bounds(&self) -> Result<LogBounds, StoreError> {
        let mut conn = self.pool.acquire().await?;
        log::bounds(&mut conn).await
    }

    async fn trim(&self, older_than: UnixMillis) -> Result<LogBounds, StoreError> {
        // The floor moves under the log lock in one short transaction; the rows below it
        // (and expired dedup state) go afterwards in small chunks, without the log lock,
        // so ingest never waits behind a large delete.
        let bounds = {
            let _turn = self.gate.enter(WriteClass::Log).await?;
            let mut tx = self.pool.begin().await?;
            let bounds = log::move_floor(&mut tx, older_than).await?;
            tx.commit().await?;
            bounds
        };
        let dedup_cutoff = self.options.clock.now().minus(self.options.dedup_window);
        let mut conn = self.pool.acquire().await?;
        for (statement, bound) in log::TRIM_STATEMENTS {
            let bound = match bound {
                log::TrimBound::Floor => rows::seq_param(bounds.floor),
                log::TrimBound::DedupCutoff => dedup_cutoff.get(),
            };
            loop {
                let _turn = self.gate.enter(WriteClass::Bookkeeping).await?;
                if log::trim_chunk(&mut conn, statement, bound).await? == 0 {
                    break;
                }
            }
        }
        Ok(bounds)
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        // Taking the log lock makes the reads consistent with one log position.
        let _turn = self.gate.enter(WriteClass::Log).await?;
        let mut tx = self.pool.begin().await?;
        let bounds = log::lock(&mut tx).await?;
        let (projects, aliases) = catalog::load_all(&mut tx).await?;
        let agents = agents::load_all(&mut tx).await?;
        tx.commit().await?;
        Ok(Snapshot {
            bounds,
            projects,
            aliases,
            agents: agents.into_iter().map(|a| a.policy).collect(),
        })
    }

    async fn create_agent(&self, agent: NewAgent) -> Result<(AgentRecord, LogEntry), StoreError> {
        let _turn = self.gate.enter(WriteClass::Log).await?;
        let mut tx = self.pool.begin().await?;
        let result = agents::create(&mut tx, agent, self.options.clock.now()).await?;
        tx.commit().await?;
        Ok(result)
    }

    async fn update_agent(
        &self,
        name: &AgentName,
        update: AgentUpdate,
    ) -> Result<(AgentRecord, LogEntry), StoreError> {
        let _turn = self.gate.enter(WriteClass::Log).await?;
        let mut tx = self.pool.begin().await?;
        let result = agents::update(&mut tx, name, update, self.options.clock.now()).await?;
        tx.commit().await?;
        Ok(result)
    }

    async fn delete_agent(&self, name: &AgentName) -> Result<LogEntry, StoreError> {
        let _turn = self.gate.enter(WriteClass::Log).await?;
        let mut tx = self.pool.begin().await?;
        let entry = agents::delete(&mut tx, name, self.options.clock.now()).await?;
        tx.commit().await?;
        Ok(entry)
    }

    async fn agent(&self, name: &AgentName) -> Result<Option<AgentRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        agents::by_name(&mut conn, name).await
    }

    async fn agent_by_token(
        &self,
        digest: &TokenDigest,
    ) -> Result<Option<AgentRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let found = agents::by_token(&mut conn, digest).await?;
        Ok(found.filter(|agent| agent.token_digest.matches(digest)))
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        agents::load_all(&mut conn).await
    }

    async fn save_subscription_status(
        &self,
        agent: AgentId,
        report: &fluxgate_core::SubscriptionReport,
    ) -> Result<(), StoreError> {
        let _turn = self.gate.enter(WriteClass::Bookkeeping).await?;
        let mut conn = self.pool.acquire().await?;
        agents::save_subscription_status(&mut conn, agent, report).await
    }

    async fn save_cursors(
        &self,
        updates: &[CursorUpdate],
        stale_before: UnixMillis,
    ) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        let _turn = self.gate.enter(WriteClass::Bookkeeping).await?;
        let mut tx = self.pool.begin().await?;
        agents::save_cursors(&mut tx, updates, stale_before).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn save_receiver_health(
        &self,
        agent: AgentId,
        health: &ReceiverHealth,
    ) -> Result<(), StoreError> {
        let _turn = self.gate.enter(WriteClass::Bookkeeping).await?;
        let mut conn = self.pool.acquire().await?;
        agents::save_receiver_health(&mut conn, agent, health).await
    }

    async fn save_delivery_records(&self, records: &[DeliveryRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        for record in records {
            record
                .validate()
                .map_err(|e| StoreError::Invalid(InvalidRequest::DeliveryRecord(e)))?;
        }
        let _turn = self.gate.enter(WriteClass::Bookkeeping).await?;
        let mut tx = self.pool.begin().await?;
        deliveries::save(&mut tx, records).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delivery_records(&self, seq: Seq) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        deliveries::for_event(&mut conn, seq).await
    }

    async fn read_entry(&self, seq: Seq) -> Result<Option<LogEntry>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let before = Seq(seq.get().saturating_sub(1));
        let mut found = log::read(&mut conn, before, 1).await?;
        Ok(found.pop().filter(|entry| entry.seq == seq))
    }

    async fn recent_pushes_of(
        &self,
        project: ProjectId,
        limit: u32,
    ) -> Result<Vec<Seq>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        deliveries::recent_pushes_of(&mut conn, project, limit).await
    }

    async fn recent_pushes(
        &self,
        limit: u32,
        max_records: u32,
    ) -> Result<RecentPushes, StoreError> {
        let mut conn = self.pool.acquire().await?;
        deliveries::recent_pushes(&mut conn, limit, max_records).await
    }

    async fn delivery_watermark(&self, from: Seq) -> Result<DeliveryWatermark, StoreError> {
        let mut conn = self.pool.acquire().await?;
        deliveries::watermark(&mut conn, from).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_connections_keep_statement_journals_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = SqlStore::connect(&url, StoreOptions::default())
            .await
            .unwrap();
        let temp_store: i64 = sqlx::query_scalar("PRAGMA temp_store")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(temp_store, 2, "PRAGMA temp_store = MEMORY");
    }
}
