//! Delivery records: what happened to each event at each agent (`delivery_records`).
//!
//! The first record of a stage for an object wins (`ON CONFLICT DO NOTHING`): an event
//! delivered again after a reconnect keeps the time it first reached each stage.

use fluxgate_core::{DeliveryRecord, DeliveryStage, LogEntry, ProjectId, Seq};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use super::compound::{Dialect, ROWS_PER_PART, Single};
use super::{log, rows};
use crate::error::StoreError;
use crate::model::{DeliveryWatermark, PushWithRecords, RecentPushes};

pub(super) async fn save(
    conn: &mut AnyConnection,
    records: &[DeliveryRecord],
) -> Result<(), StoreError> {
    let dialect = Dialect::of(conn);
    for chunk in records.chunks(ROWS_PER_PART) {
        Single::new(dialect, |part| {
            part.sql(
                "INSERT INTO delivery_records (seq, agent_id, stage, object, at, detail) VALUES ",
            )
            .rows(chunk, |row, record| {
                let detail = serde_json::to_string(&record.detail)
                    .expect("a delivery detail always serialises");
                row.bind(rows::seq_param(record.seq))
                    .bind(record.agent.0)
                    .bind(record.stage.as_str())
                    .bind(record.object.as_str())
                    .bind(record.at.get())
                    .bind(detail);
            })
            .sql(" ON CONFLICT (seq, agent_id, stage, object) DO NOTHING");
        })
        .execute(conn)
        .await?;
    }
    Ok(())
}

pub(super) async fn for_event(
    conn: &mut AnyConnection,
    seq: Seq,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let found = sqlx::query(
        "SELECT seq, agent_id, stage, object, at, detail FROM delivery_records \
         WHERE seq = $1 ORDER BY at, agent_id, stage, object",
    )
    .bind(rows::seq_param(seq))
    .fetch_all(&mut *conn)
    .await?;
    found.iter().map(record).collect()
}

fn record(row: &AnyRow) -> Result<DeliveryRecord, StoreError> {
    let stage = rows::text(row, "stage")?;
    Ok(DeliveryRecord {
        seq: rows::seq(row, "seq")?,
        agent: fluxgate_core::AgentId(rows::int(row, "agent_id")?),
        stage: stage
            .parse::<DeliveryStage>()
            .map_err(|e| StoreError::corrupt("stage", e))?,
        object: rows::text(row, "object")?,
        at: rows::millis(row, "at")?,
        detail: rows::json(row, "detail")?,
    })
}

/// The newest `limit` pushes and their records, in two queries: the entries (a backward
/// scan of the log's key, skipping routing changes), then every record in their seq range
/// (a range scan of the records' key), newest events first, at most `max_records`.
pub(super) async fn recent_pushes(
    conn: &mut AnyConnection,
    limit: u32,
    max_records: u32,
) -> Result<RecentPushes, StoreError> {
    let found = sqlx::query(
        "SELECT seq, recorded_at, body FROM log_entries WHERE project_id IS NOT NULL \
         ORDER BY seq DESC LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    let entries = found
        .iter()
        .map(log::entry)
        .collect::<Result<Vec<LogEntry>, _>>()?;
    let (Some(newest), Some(oldest)) = (entries.first(), entries.last()) else {
        return Ok(RecentPushes::default());
    };
    let found = sqlx::query(
        "SELECT seq, agent_id, stage, object, at, detail FROM delivery_records \
         WHERE seq >= $1 AND seq <= $2 ORDER BY seq DESC, at, agent_id, stage, object LIMIT $3",
    )
    .bind(rows::seq_param(oldest.seq))
    .bind(rows::seq_param(newest.seq))
    .bind(i64::from(max_records) + 1)
    .fetch_all(&mut *conn)
    .await?;
    let records_truncated = found.len() > max_records as usize;
    let mut records = found
        .iter()
        .take(max_records as usize)
        .map(record)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .peekable();
    let mut pushes = Vec::with_capacity(entries.len());
    for entry in entries {
        let mut own = Vec::new();
        // Records come newest event first, as the entries do; a record of a seq that is
        // not a push (there are none) is skipped.
        while let Some(next) = records.next_if(|r| r.seq >= entry.seq) {
            if next.seq == entry.seq {
                own.push(next);
            }
        }
        pushes.push(PushWithRecords {
            entry,
            records: own,
        });
    }
    Ok(RecentPushes {
        pushes,
        records_truncated,
    })
}

pub(super) async fn watermark(
    conn: &mut AnyConnection,
    from: Seq,
) -> Result<DeliveryWatermark, StoreError> {
    let head = log::bounds(&mut *conn).await?.head;
    let row = sqlx::query(
        "SELECT COUNT(*) AS records, MAX(at) AS latest_at FROM delivery_records WHERE seq >= $1",
    )
    .bind(rows::seq_param(from))
    .fetch_one(&mut *conn)
    .await?;
    Ok(DeliveryWatermark {
        head,
        records: u64::try_from(rows::int(&row, "records")?).unwrap_or(0),
        latest_at: rows::opt_int(&row, "latest_at")?.map(fluxgate_core::UnixMillis),
    })
}

/// Seqs of the newest push entries of `project`, newest first, at most `limit`.
pub(super) async fn recent_pushes_of(
    conn: &mut AnyConnection,
    project: ProjectId,
    limit: u32,
) -> Result<Vec<Seq>, StoreError> {
    let found =
        sqlx::query("SELECT seq FROM log_entries WHERE project_id = $1 ORDER BY seq DESC LIMIT $2")
            .bind(project.get())
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await?;
    found.iter().map(|row| rows::seq(row, "seq")).collect()
}
