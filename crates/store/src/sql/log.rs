//! The log: locking, appending hooks with dedup, reading, trimming.

use std::time::Duration;

use fluxgate_core::{HookBatch, NewRecord};
use fluxgate_core::{LogEntry, LogRecord, PushEvent, Seq, StateCause, StateChange, UnixMillis};
use sqlx::AnyConnection;

use super::catalog::{self, ProjectCache};
use super::compound::{Compound, Dialect, Form, ROWS_PER_PART};
use super::prefetch::{Prefetched, prefetch};
use super::rows;
use crate::error::StoreError;
use crate::model::{AppendResult, HookOutcome, LogBounds, PushPage, RecordOutcome};

/// The `BEGIN` of an append transaction, which takes the log lock in the same round trip.
/// Every statement after it sees every earlier commit (on PostgreSQL each statement of a
/// READ COMMITTED transaction takes its snapshot when it starts, so the lock must be taken
/// by an earlier statement than the reads). A failure can leave the connection inside the
/// transaction: the caller must not return it to the pool.
pub(super) const LOCKING_BEGIN: &str =
    "BEGIN; UPDATE log_state SET head_seq = head_seq WHERE id = 1";

/// Who opens and commits an append's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AppendTransaction {
    /// The caller began it with [`LOCKING_BEGIN`], and commits it.
    Begun,
    /// SQLite: the append's read begins it (`BEGIN IMMEDIATE`, which takes the database's
    /// write lock at once) and its write commits it, each in the same hop to the
    /// connection's thread, so a transaction costs two hops instead of four. The caller
    /// must close the connection if the append fails or is dropped: it may be left inside
    /// a transaction sqlx does not know of.
    Inline,
}

/// SQLite's `BEGIN` that takes the write lock at once: the reads after it are current.
const SQLITE_LOCKING_BEGIN: &str = "BEGIN IMMEDIATE";

/// Takes the log lock (the first statement of every write transaction) and returns the
/// bounds as of this transaction.
pub(super) async fn lock(conn: &mut AnyConnection) -> Result<LogBounds, StoreError> {
    let row = sqlx::query(
        "UPDATE log_state SET head_seq = head_seq WHERE id = 1 RETURNING head_seq, floor_seq",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(LogBounds {
        head: rows::seq(&row, "head_seq")?,
        floor: rows::seq(&row, "floor_seq")?,
    })
}

pub(super) async fn bounds(conn: &mut AnyConnection) -> Result<LogBounds, StoreError> {
    let row = sqlx::query("SELECT head_seq, floor_seq FROM log_state WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    Ok(LogBounds {
        head: rows::seq(&row, "head_seq")?,
        floor: rows::seq(&row, "floor_seq")?,
    })
}

/// Assigns seqs inside one locked transaction, and writes the entries at its end.
pub(super) struct LogWriter {
    head: Seq,
    start: Seq,
    now: UnixMillis,
    entries: Vec<LogEntry>,
}

impl LogWriter {
    /// Locks the log and starts writing after its head; entries are recorded at `now`.
    pub(super) async fn begin(
        conn: &mut AnyConnection,
        now: UnixMillis,
    ) -> Result<Self, StoreError> {
        let bounds = lock(conn).await?;
        Ok(Self::after(bounds.head, now))
    }

    /// Starts writing after `head`, read under the log lock this transaction holds.
    pub(super) fn after(head: Seq, now: UnixMillis) -> Self {
        Self {
            head,
            start: head,
            now,
            entries: Vec::new(),
        }
    }

    pub(super) fn now(&self) -> UnixMillis {
        self.now
    }

    /// The last seq assigned so far (the log head before this transaction, at first).
    pub(super) fn head(&self) -> Seq {
        self.head
    }

    /// Assigns the next seq to `record`; [`LogWriter::finish`] writes it.
    pub(super) fn write(&mut self, record: LogRecord) -> Seq {
        let seq = self.head.next();
        self.head = seq;
        self.entries.push(LogEntry {
            seq,
            recorded_at: self.now,
            record,
        });
        seq
    }

    /// Inserts the entries and records the new head; the caller then commits. Returns the
    /// entries written.
    pub(super) async fn finish(
        self,
        conn: &mut AnyConnection,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let mut writes = Compound::new(Dialect::of(conn), Form::Sequence);
        let entries = self.add_writes(&mut writes);
        writes.execute(conn).await?;
        Ok(entries)
    }

    /// Adds the insert of the entries and the update of the head to `writes`; returns the
    /// entries.
    pub(super) fn add_writes(self, writes: &mut Compound) -> Vec<LogEntry> {
        for chunk in self.entries.chunks(ROWS_PER_PART) {
            writes.part(chunk.len() * 5, |part| {
                part.sql(
                    "INSERT INTO log_entries (seq, recorded_at, kind, project_id, body) VALUES ",
                )
                .rows(chunk, |row, entry| {
                    let project_id = entry.as_push().map(|event| event.project.id.get());
                    row.bind(rows::seq_param(entry.seq))
                        .bind(entry.recorded_at.get())
                        .bind(entry.record.kind())
                        .bind(project_id)
                        .bind(rows::to_json(&entry.record));
                });
            });
        }
        if self.head != self.start {
            writes.part(1, |part| {
                part.sql("UPDATE log_state SET head_seq = ")
                    .bind(rows::seq_param(self.head))
                    .sql(" WHERE id = 1");
            });
        }
        self.entries
    }
}

/// Appends a batch of hooks, each deduplicated: by its `Idempotency-Key`, and each push by
/// the last change recorded for its ref, in the transaction `transaction` says. The usual
/// batch costs two statements: one read ([`prefetch`]) and one write (a [`Compound`]);
/// only what it changes in the catalog costs more.
pub(super) async fn append(
    conn: &mut AnyConnection,
    hooks: &[HookBatch],
    dedup_window: Duration,
    now: UnixMillis,
    transaction: AppendTransaction,
) -> Result<AppendResult, StoreError> {
    let inline = transaction == AppendTransaction::Inline;
    let dedup_since = now.minus(dedup_window);
    let Prefetched {
        bounds,
        mut history,
        mut projects,
    } = prefetch(
        conn,
        hooks,
        dedup_since,
        inline.then_some(SQLITE_LOCKING_BEGIN),
    )
    .await?;
    let mut writer = LogWriter::after(bounds.head, now);
    let mut outcomes = Vec::with_capacity(hooks.len());
    for hook in hooks {
        if let Some(seqs) = hook
            .idempotency_key
            .as_deref()
            .and_then(|key| history.seen_key(key))
        {
            let records = seqs
                .into_iter()
                .map(|seq| RecordOutcome {
                    seq,
                    duplicate: true,
                })
                .collect();
            outcomes.push(HookOutcome { records });
            continue;
        }
        let mut records = Vec::with_capacity(hook.records.len());
        for record in &hook.records {
            let outcome = match record {
                NewRecord::Push(event) => match history.repeat_of(event, dedup_since) {
                    Some(seq) => RecordOutcome {
                        seq,
                        duplicate: true,
                    },
                    None => {
                        let seq = append_push(conn, &mut writer, &mut projects, event).await?;
                        history.record_push(event, seq, now);
                        RecordOutcome {
                            seq,
                            duplicate: false,
                        }
                    }
                },
                NewRecord::Catalog(change) => {
                    let effects = catalog::apply(conn, &mut projects, change, now).await?;
                    let cause = StateCause::Gitlab {
                        change: change.clone(),
                    };
                    let seq = writer.write(LogRecord::State(StateChange { cause, effects }));
                    RecordOutcome {
                        seq,
                        duplicate: false,
                    }
                }
            };
            records.push(outcome);
        }
        if let Some(key) = &hook.idempotency_key {
            history.record_key(key, records.iter().map(|r| r.seq).collect());
        }
        outcomes.push(HookOutcome { records });
    }
    let mut writes = Compound::new(Dialect::of(conn), Form::Sequence);
    history.add_writes(&mut writes, now);
    let entries = writer.add_writes(&mut writes);
    if inline {
        writes.close_with("COMMIT");
    }
    writes.execute(conn).await?;
    Ok(AppendResult { outcomes, entries })
}

/// Appends one new push. A push that shows the catalog something new (a project, a move,
/// a visibility) is preceded by a state entry recording what changed.
async fn append_push(
    conn: &mut AnyConnection,
    writer: &mut LogWriter,
    projects: &mut ProjectCache,
    event: &PushEvent,
) -> Result<Seq, StoreError> {
    let effects = catalog::observe(conn, projects, &event.project, writer.now()).await?;
    if !effects.is_empty() {
        let cause = StateCause::Observed {
            project: event.project.id,
        };
        writer.write(LogRecord::State(StateChange { cause, effects }));
    }
    Ok(writer.write(LogRecord::Push(event.clone())))
}

pub(super) async fn read(
    conn: &mut AnyConnection,
    after: Seq,
    limit: u32,
) -> Result<Vec<LogEntry>, StoreError> {
    let found = sqlx::query(
        "SELECT seq, recorded_at, body FROM log_entries WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(rows::seq_param(after))
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    found.iter().map(entry).collect()
}

/// The pushes in (`after`, `up_to`], at most `limit` ([`crate::Store::read_pushes`]).
pub(super) async fn read_pushes(
    conn: &mut AnyConnection,
    after: Seq,
    up_to: Seq,
    limit: u32,
) -> Result<PushPage, StoreError> {
    let found = sqlx::query(
        "SELECT seq, recorded_at, body FROM log_entries \
         WHERE seq > $1 AND seq <= $2 AND kind <> $3 ORDER BY seq LIMIT $4",
    )
    .bind(rows::seq_param(after))
    .bind(rows::seq_param(up_to))
    .bind(STATE_KIND)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    let entries = found.iter().map(entry).collect::<Result<Vec<_>, _>>()?;
    let covered_to = match entries.last() {
        Some(last) if entries.len() >= usize::try_from(limit).unwrap_or(usize::MAX) => last.seq,
        _ => up_to.max(after),
    };
    Ok(PushPage {
        entries,
        covered_to,
    })
}

/// The `kind` column of state changes ([`LogRecord::kind`]).
const STATE_KIND: &str = "state";

/// A log entry from a row with `seq`, `recorded_at` and `body`.
pub(super) fn entry(row: &sqlx::any::AnyRow) -> Result<LogEntry, StoreError> {
    Ok(LogEntry {
        seq: rows::seq(row, "seq")?,
        recorded_at: rows::millis(row, "recorded_at")?,
        record: rows::json(row, "body")?,
    })
}

/// Rows one retention statement removes at most: each chunk is its own short transaction,
/// so ingest (which needs the database's write lock on SQLite) waits for one chunk at most.
pub(super) const TRIM_CHUNK: i64 = 2_000;

/// Moves the floor above the entries recorded before `older_than`, under the log lock:
/// from now on they are gone as far as readers of the bounds know. The rows themselves are
/// removed afterwards, in chunks ([`TRIM_STATEMENTS`]).
pub(super) async fn move_floor(
    conn: &mut AnyConnection,
    older_than: UnixMillis,
) -> Result<LogBounds, StoreError> {
    let bounds = lock(conn).await?;
    let cut = sqlx::query("SELECT MAX(seq) AS cut FROM log_entries WHERE recorded_at < $1")
        .bind(older_than.get())
        .fetch_one(&mut *conn)
        .await?;
    let cut = rows::opt_int(&cut, "cut")?.map(|raw| Seq(u64::try_from(raw).unwrap_or(0)));
    let mut floor = bounds.floor;
    if let Some(cut) = cut.filter(|cut| *cut > bounds.floor) {
        sqlx::query("UPDATE log_state SET floor_seq = $1 WHERE id = 1")
            .bind(rows::seq_param(cut))
            .execute(&mut *conn)
            .await?;
        floor = cut;
    }
    Ok(LogBounds {
        head: bounds.head,
        floor,
    })
}

/// What retention removes, one chunk per statement: `$1` is the floor (for the log and the
/// delivery records) or the dedup cutoff, `$2` the chunk size. Each runs until it removes
/// nothing, so rows left by an interrupted run go at the next.
pub(super) const TRIM_STATEMENTS: [(&str, TrimBound); 4] = [
    (
        "DELETE FROM log_entries WHERE seq IN \
         (SELECT seq FROM log_entries WHERE seq <= $1 ORDER BY seq LIMIT $2)",
        TrimBound::Floor,
    ),
    (
        "DELETE FROM delivery_records WHERE seq IN \
         (SELECT seq FROM delivery_records WHERE seq <= $1 ORDER BY seq LIMIT $2)",
        TrimBound::Floor,
    ),
    (
        "DELETE FROM idempotency_keys WHERE key IN \
         (SELECT key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)",
        TrimBound::DedupCutoff,
    ),
    (
        "DELETE FROM ref_heads WHERE (project_id, ref) IN \
         (SELECT project_id, ref FROM ref_heads WHERE received_at < $1 LIMIT $2)",
        TrimBound::DedupCutoff,
    ),
];

/// Which bound a retention statement removes below.
#[derive(Debug, Clone, Copy)]
pub(super) enum TrimBound {
    Floor,
    DedupCutoff,
}

/// Runs one retention statement once; how many rows it removed.
pub(super) async fn trim_chunk(
    conn: &mut AnyConnection,
    statement: &'static str,
    bound: i64,
) -> Result<u64, StoreError> {
    let done = sqlx::query(statement)
        .bind(bound)
        .bind(TRIM_CHUNK)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}
