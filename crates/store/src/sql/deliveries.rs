//! Delivery records: what happened to each event at each agent (`delivery_records`).
//!
//! The first record of a stage for an object wins (`ON CONFLICT DO NOTHING`): an event
//! delivered again after a reconnect keeps the time it first reached each stage.

use fluxgate_core::{DeliveryRecord, DeliveryStage, ProjectId, Seq};
use sqlx::AnyConnection;

use super::{bulk, rows};
use crate::error::StoreError;

pub(super) async fn save(
    conn: &mut AnyConnection,
    records: &[DeliveryRecord],
) -> Result<(), StoreError> {
    for chunk in records.chunks(bulk::CHUNK) {
        let sql = format!(
            "INSERT INTO delivery_records (seq, agent_id, stage, object, at, detail) VALUES {} \
             ON CONFLICT (seq, agent_id, stage, object) DO NOTHING",
            bulk::values(chunk.len(), 6)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for record in chunk {
            let detail =
                serde_json::to_string(&record.detail).expect("a delivery detail always serialises");
            query = query
                .bind(rows::seq_param(record.seq))
                .bind(record.agent.0)
                .bind(record.stage.as_str())
                .bind(record.object.clone())
                .bind(record.at.get())
                .bind(detail);
        }
        query.execute(&mut *conn).await?;
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
    found
        .iter()
        .map(|row| {
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
        })
        .collect()
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
