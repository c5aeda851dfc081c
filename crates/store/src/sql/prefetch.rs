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
use super::compound::{Compound, Dialect, Form, ROWS_PER_PART};
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
    // The tables it looks up grow with traffic, from empty: a cached generic plan made
    // early would scan them whole.
    reads.plan_each_time();
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
    for chunk in batch::keys_named(hooks).chunks(ROWS_PER_PART) {
        reads.part(chunk.len() + 1, |part| {
            part.sql(
                "SELECT 'key', NULL, NULL, NULL, key, seqs, NULL FROM idempotency_keys \
                 WHERE created_at >= ",
            )
            .bind(dedup_since.get())
            .sql(" AND key IN (")
            .list(chunk.iter().copied())
            .sql(")");
        });
    }
    let refs = batch::refs_named(hooks);
    for chunk in refs.chunks(ROWS_PER_PART) {
        reads.part(chunk.len() * 2, |part| {
            part.sql(
                "SELECT 'head', project_id, seq, received_at, ref, before_sha, after_sha \
                 FROM ref_heads WHERE ",
            );
            for (i, (project, git_ref)) in chunk.iter().enumerate() {
                part.sql(if i == 0 {
                    "(project_id = "
                } else {
                    " OR (project_id = "
                })
                .bind(project.get())
                .sql(" AND ref = ")
                .bind(git_ref.as_str())
                .sql(")");
            }
        });
    }
    let projects = catalog::projects_named(hooks);
    for chunk in projects.chunks(ROWS_PER_PART) {
        reads.part(chunk.len(), |part| {
            part.sql(
                "SELECT 'project', id, NULL, NULL, path, visibility, NULL FROM projects \
                 WHERE id IN (",
            )
            .list(chunk.iter().map(|id| id.get()))
            .sql(")");
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
