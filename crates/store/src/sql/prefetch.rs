//! What one append transaction reads before it applies its hooks, in one statement.
//!
//! The log's bounds, the idempotency keys and ref heads the batch names (what dedup checks
//! against) and the projects its pushes name come back as rows of one shape, each tagged
//! with what it is, from one `UNION ALL` ([`Compound`]). The transaction took the log lock
//! in its `BEGIN` ([`super::log::LOCKING_BEGIN`] on PostgreSQL; on SQLite `BEGIN
//! IMMEDIATE`, sent with this read), so these rows are current: no other writer can change
//! them before it commits.
//!
//! The shape: `what`, three integers `n1..n3` and three texts `t1..t3`.
//!
//! | `what` | n1 | n2 | n3 | t1 | t2 | t3 |
//! |---|---|---|---|---|---|---|
//! | `log` | head seq | floor seq | | | | |
//! | `key` | | | | key | seqs (JSON) | |
//! | `head` | project id | seq | received at | ref | before | after |
//! | `project` | id | | | path | visibility | |

use std::collections::HashMap;

use fluxgate_core::{HookBatch, UnixMillis};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use super::batch::{self, DeliveryHistory, RefHead, RefKey};
use super::catalog::{self, ProjectCache};
use super::compound::{Compound, Dialect, Form};
use super::rows;
use crate::error::{CorruptValue, StoreError};
use crate::model::{CatalogProject, LogBounds};

/// What an append transaction knows before it applies its hooks.
pub(super) struct Prefetched {
    pub(super) bounds: LogBounds,
    pub(super) history: DeliveryHistory,
    pub(super) projects: ProjectCache,
}

/// Reads the bounds, and what `hooks` name, as of the (locked) transaction on `conn`.
/// Keys older than `dedup_since` are not read: they no longer count. `begin`, on SQLite,
/// is the statement that opens and locks the transaction, run in the same hop as the read.
pub(super) async fn prefetch(
    conn: &mut AnyConnection,
    hooks: &[HookBatch],
    dedup_since: UnixMillis,
    begin: Option<&'static str>,
) -> Result<Prefetched, StoreError> {
    let mut reads = Compound::new(Dialect::of(conn), Form::UnionAll);
    if let Some(begin) = begin {
        reads.open_with(begin);
    }
    reads.part(0, |part| {
        part.sql(
            "SELECT 'log' AS what, head_seq AS n1, floor_seq AS n2, CAST(NULL AS BIGINT) AS n3, \
             CAST(NULL AS TEXT) AS t1, CAST(NULL AS TEXT) AS t2, CAST(NULL AS TEXT) AS t3 \
             FROM log_state WHERE id = 1",
        );
    });
    // Every part names and types its columns: any of them may be the first of a statement.
    // One part per key, ref and project, each an equality on the table's primary key: a
    // prepared statement may settle on a generic plan, made while the tables were nearly
    // empty, and keep it as they grow. For one key that plan is an index lookup; for a
    // list of ten (ten `OR`ed pairs) a sequential scan looked as cheap, and kept scanning
    // the whole table as it grew (docs/benchmarks.md, A4).
    for key in batch::keys_named(hooks) {
        reads.part(2, |part| {
            part.sql(
                "SELECT 'key' AS what, CAST(NULL AS BIGINT) AS n1, CAST(NULL AS BIGINT) AS n2, \
                 CAST(NULL AS BIGINT) AS n3, key AS t1, seqs AS t2, CAST(NULL AS TEXT) AS t3 \
                 FROM idempotency_keys WHERE key = ",
            )
            .bind(key)
            .sql(" AND created_at >= ")
            .bind(dedup_since.get());
        });
    }
    let refs = batch::refs_named(hooks);
    for (project, git_ref) in &refs {
        reads.part(2, |part| {
            part.sql(
                "SELECT 'head' AS what, project_id AS n1, seq AS n2, received_at AS n3, \
                 ref AS t1, before_sha AS t2, after_sha AS t3 FROM ref_heads WHERE project_id = ",
            )
            .bind(project.get())
            .sql(" AND ref = ")
            .bind(git_ref.as_str());
        });
    }
    let projects = catalog::projects_named(hooks);
    for id in &projects {
        reads.part(1, |part| {
            part.sql(
                "SELECT 'project' AS what, id AS n1, CAST(NULL AS BIGINT) AS n2, \
                 CAST(NULL AS BIGINT) AS n3, path AS t1, visibility AS t2, \
                 CAST(NULL AS TEXT) AS t3 FROM projects WHERE id = ",
            )
            .bind(id.get());
        });
    }

    // Each head row answers one of the refs asked for: take the typed key from the request
    // rather than parsing the stored ref again.
    let asked: HashMap<(i64, &str), &RefKey> = refs
        .iter()
        .map(|key| ((key.0.get(), key.1.as_str()), key))
        .collect();
    let mut bounds = None;
    let mut history = DeliveryHistory::default();
    let mut cache = ProjectCache::default();
    // Every project asked for is known, present or not: a miss is not read again.
    for id in &projects {
        cache.forget(*id);
    }
    for row in reads.fetch_all(conn).await? {
        match rows::text(&row, "what")?.as_str() {
            "log" => {
                bounds = Some(LogBounds {
                    head: rows::seq(&row, "n1")?,
                    floor: rows::seq(&row, "n2")?,
                });
            }
            "key" => history.remember_key(rows::text(&row, "t1")?, rows::json(&row, "t2")?),
            "head" => {
                let (project, git_ref) = (rows::int(&row, "n1")?, rows::text(&row, "t1")?);
                let Some(&key) = asked.get(&(project, git_ref.as_str())) else {
                    continue;
                };
                history.remember_head(key.clone(), head_from(&row)?);
            }
            "project" => cache.remember(CatalogProject {
                id: rows::project_id(&row, "n1")?,
                path: rows::path(&row, "t1")?,
                visibility: rows::visibility(&row, "t2")?,
            }),
            other => {
                return Err(StoreError::corrupt(
                    "what",
                    CorruptValue::UnknownRowKind(other.to_owned()),
                ));
            }
        }
    }
    // The migrations insert the one row of `log_state`; without it there is no log.
    let bounds = bounds.ok_or(sqlx::Error::RowNotFound)?;
    Ok(Prefetched {
        bounds,
        history,
        projects: cache,
    })
}

fn head_from(row: &AnyRow) -> Result<RefHead, StoreError> {
    Ok(RefHead {
        before: rows::sha(row, "t2")?,
        after: rows::sha(row, "t3")?,
        seq: rows::seq(row, "n2")?,
        received_at: rows::millis(row, "n3")?,
    })
}
