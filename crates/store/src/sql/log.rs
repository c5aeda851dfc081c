//! The log: locking, appending hooks with dedup, reading, trimming.

use std::time::Duration;

use fluxgate_core::{LogEntry, LogRecord, PushEvent, Seq, StateCause, StateChange, UnixMillis};
use sqlx::AnyConnection;

use super::{catalog, rows};
use crate::error::StoreError;
use crate::model::{AppendResult, HookBatch, HookOutcome, LogBounds, NewRecord, RecordOutcome};

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

/// Assigns seqs and writes entries inside one locked transaction.
pub(super) struct LogWriter {
    head: Seq,
    start: Seq,
    now: UnixMillis,
    entries: Vec<LogEntry>,
}

impl LogWriter {
    /// Locks the log and starts writing after its head.
    pub(super) async fn begin(conn: &mut AnyConnection) -> Result<Self, StoreError> {
        let bounds = lock(conn).await?;
        Ok(Self {
            head: bounds.head,
            start: bounds.head,
            now: UnixMillis::now(),
            entries: Vec::new(),
        })
    }

    pub(super) fn now(&self) -> UnixMillis {
        self.now
    }

    /// The last seq written so far (the log head before this transaction, at first).
    pub(super) fn head(&self) -> Seq {
        self.head
    }

    pub(super) async fn write(
        &mut self,
        conn: &mut AnyConnection,
        record: LogRecord,
    ) -> Result<Seq, StoreError> {
        let seq = self.head.next();
        let project_id = match &record {
            LogRecord::Push(event) => Some(event.project.id.get()),
            LogRecord::State(_) => None,
        };
        sqlx::query(
            "INSERT INTO log_entries (seq, recorded_at, kind, project_id, body) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(rows::seq_param(seq))
        .bind(self.now.get())
        .bind(record.kind())
        .bind(project_id)
        .bind(rows::to_json(&record))
        .execute(&mut *conn)
        .await?;
        self.head = seq;
        self.entries.push(LogEntry {
            seq,
            recorded_at: self.now,
            record,
        });
        Ok(seq)
    }

    /// Records the new head; the caller then commits. Returns the entries written.
    pub(super) async fn finish(
        self,
        conn: &mut AnyConnection,
    ) -> Result<Vec<LogEntry>, StoreError> {
        if self.head != self.start {
            sqlx::query("UPDATE log_state SET head_seq = $1 WHERE id = 1")
                .bind(rows::seq_param(self.head))
                .execute(&mut *conn)
                .await?;
        }
        Ok(self.entries)
    }
}

pub(super) async fn append(
    conn: &mut AnyConnection,
    hooks: &[HookBatch],
    dedup_window: Duration,
) -> Result<AppendResult, StoreError> {
    let mut writer = LogWriter::begin(conn).await?;
    let dedup_since = writer.now().minus(dedup_window);
    let mut outcomes = Vec::with_capacity(hooks.len());
    for hook in hooks {
        if let Some(key) = &hook.idempotency_key
            && let Some(seqs) = find_idempotency_key(conn, key, dedup_since).await?
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
                NewRecord::Push(event) => {
                    append_push(conn, &mut writer, event, dedup_since).await?
                }
                NewRecord::Catalog(change) => {
                    let effects = catalog::apply(conn, change, writer.now()).await?;
                    let cause = StateCause::Gitlab {
                        change: change.clone(),
                    };
                    let seq = writer
                        .write(conn, LogRecord::State(StateChange { cause, effects }))
                        .await?;
                    RecordOutcome {
                        seq,
                        duplicate: false,
                    }
                }
            };
            records.push(outcome);
        }
        if let Some(key) = &hook.idempotency_key {
            remember_idempotency_key(conn, key, &records, writer.now()).await?;
        }
        outcomes.push(HookOutcome { records });
    }
    let entries = writer.finish(conn).await?;
    Ok(AppendResult { outcomes, entries })
}

/// Appends one push unless it repeats the last change seen for its ref within the window.
/// A push that shows the catalog something new (a project, a move, a visibility) is
/// preceded by a state entry recording what changed.
async fn append_push(
    conn: &mut AnyConnection,
    writer: &mut LogWriter,
    event: &PushEvent,
    dedup_since: UnixMillis,
) -> Result<RecordOutcome, StoreError> {
    let last = sqlx::query(
        "SELECT before_sha, after_sha, seq, received_at FROM ref_heads WHERE project_id = $1 AND ref = $2",
    )
    .bind(event.project.id.get())
    .bind(event.git_ref.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(last) = last {
        let same_change = rows::text(&last, "before_sha")? == event.before.as_str()
            && rows::text(&last, "after_sha")? == event.after.as_str();
        if same_change && rows::millis(&last, "received_at")? >= dedup_since {
            let seq = rows::seq(&last, "seq")?;
            return Ok(RecordOutcome {
                seq,
                duplicate: true,
            });
        }
    }

    let effects = catalog::observe(conn, &event.project, writer.now()).await?;
    if !effects.is_empty() {
        let cause = StateCause::Observed {
            project: event.project.id,
        };
        writer
            .write(conn, LogRecord::State(StateChange { cause, effects }))
            .await?;
    }
    let seq = writer.write(conn, LogRecord::Push(event.clone())).await?;
    sqlx::query(
        "INSERT INTO ref_heads (project_id, ref, before_sha, after_sha, seq, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (project_id, ref) DO UPDATE SET before_sha = excluded.before_sha, \
         after_sha = excluded.after_sha, seq = excluded.seq, received_at = excluded.received_at",
    )
    .bind(event.project.id.get())
    .bind(event.git_ref.as_str())
    .bind(event.before.as_str())
    .bind(event.after.as_str())
    .bind(rows::seq_param(seq))
    .bind(writer.now().get())
    .execute(&mut *conn)
    .await?;
    Ok(RecordOutcome {
        seq,
        duplicate: false,
    })
}

async fn find_idempotency_key(
    conn: &mut AnyConnection,
    key: &str,
    since: UnixMillis,
) -> Result<Option<Vec<Seq>>, StoreError> {
    let row = sqlx::query("SELECT seqs FROM idempotency_keys WHERE key = $1 AND created_at >= $2")
        .bind(key)
        .bind(since.get())
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|row| rows::json::<Vec<Seq>>(&row, "seqs"))
        .transpose()
}

async fn remember_idempotency_key(
    conn: &mut AnyConnection,
    key: &str,
    records: &[RecordOutcome],
    now: UnixMillis,
) -> Result<(), StoreError> {
    let seqs: Vec<Seq> = records.iter().map(|r| r.seq).collect();
    sqlx::query(
        "INSERT INTO idempotency_keys (key, seqs, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (key) DO UPDATE SET seqs = excluded.seqs, created_at = excluded.created_at",
    )
    .bind(key)
    .bind(rows::to_json(&seqs))
    .bind(now.get())
    .execute(&mut *conn)
    .await?;
    Ok(())
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
    found
        .iter()
        .map(|row| {
            Ok(LogEntry {
                seq: rows::seq(row, "seq")?,
                recorded_at: rows::millis(row, "recorded_at")?,
                record: rows::json(row, "body")?,
            })
        })
        .collect()
}

/// Removes entries recorded before `older_than` (moving the floor) and dedup state
/// recorded before `dedup_cutoff`.
pub(super) async fn trim(
    conn: &mut AnyConnection,
    older_than: UnixMillis,
    dedup_cutoff: UnixMillis,
) -> Result<LogBounds, StoreError> {
    let bounds = lock(conn).await?;
    let cut = sqlx::query("SELECT MAX(seq) AS cut FROM log_entries WHERE recorded_at < $1")
        .bind(older_than.get())
        .fetch_one(&mut *conn)
        .await?;
    let cut = rows::opt_int(&cut, "cut")?.map(|raw| Seq(u64::try_from(raw).unwrap_or(0)));
    let mut floor = bounds.floor;
    if let Some(cut) = cut.filter(|cut| *cut > bounds.floor) {
        sqlx::query("DELETE FROM log_entries WHERE seq <= $1")
            .bind(rows::seq_param(cut))
            .execute(&mut *conn)
            .await?;
        sqlx::query("UPDATE log_state SET floor_seq = $1 WHERE id = 1")
            .bind(rows::seq_param(cut))
            .execute(&mut *conn)
            .await?;
        floor = cut;
    }
    sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
        .bind(dedup_cutoff.get())
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM ref_heads WHERE received_at < $1")
        .bind(dedup_cutoff.get())
        .execute(&mut *conn)
        .await?;
    Ok(LogBounds {
        head: bounds.head,
        floor,
    })
}
