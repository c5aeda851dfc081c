//! What one append transaction reads up front and writes at the end.
//!
//! The [`DeliveryHistory`] the batch is checked against (the idempotency keys it carries,
//! the last change of each ref it touches) is read in one query each when the transaction starts, kept current
//! in memory while the hooks are applied, and written back in one statement each before
//! the commit. The log lock held by the transaction guarantees no other writer changes
//! these rows meanwhile.

use std::collections::{BTreeSet, HashMap};

use fluxgate_core::{GitRef, HookBatch, NewRecord, ProjectId, PushEvent, Seq, Sha, UnixMillis};
use sqlx::AnyConnection;

use super::{bulk, rows};
use crate::error::StoreError;

/// The last change recorded for one (project, ref).
#[derive(Debug, Clone)]
struct RefHead {
    before: Sha,
    after: Sha,
    seq: Seq,
    received_at: UnixMillis,
}

/// One ref of one project: the key of [`RefHead`].
type RefKey = (ProjectId, GitRef);

/// The ref whose last change `event` is checked against: only git pushes have one. An
/// artifact notification is deduplicated by its token's `jti` (the hook batch's
/// idempotency key) and a ref-less project push not at all.
fn ref_key(event: &PushEvent) -> Option<RefKey> {
    if !event.kind.is_git_push() {
        return None;
    }
    Some((event.project.id, event.git_ref.clone()?))
}

/// What earlier deliveries left behind that tells a repeat from a new delivery: the
/// idempotency keys seen within the window (with the seqs they got) and the last change of
/// each ref. Read for one batch, updated as it is applied, written back before the commit.
#[derive(Default)]
pub(super) struct DeliveryHistory {
    keys: HashMap<String, Vec<Seq>>,
    heads: HashMap<RefKey, RefHead>,
    new_keys: Vec<(String, Vec<Seq>)>,
    changed_heads: BTreeSet<RefKey>,
}

impl DeliveryHistory {
    /// Reads the keys (still inside the window) and ref heads the batch refers to.
    pub(super) async fn prefetch(
        conn: &mut AnyConnection,
        hooks: &[HookBatch],
        since: UnixMillis,
    ) -> Result<Self, StoreError> {
        let mut state = Self::default();
        let keys: Vec<&str> = hooks
            .iter()
            .filter_map(|h| h.idempotency_key.as_deref())
            .collect();
        for chunk in keys.chunks(bulk::CHUNK) {
            let sql = format!(
                "SELECT key, seqs FROM idempotency_keys WHERE created_at >= $1 AND key IN ({})",
                bulk::list_from(2, chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(since.get());
            for key in chunk {
                query = query.bind(*key);
            }
            for row in query.fetch_all(&mut *conn).await? {
                state
                    .keys
                    .insert(rows::text(&row, "key")?, rows::json(&row, "seqs")?);
            }
        }
        let mut refs: Vec<RefKey> = hooks
            .iter()
            .flat_map(|h| &h.records)
            .filter_map(|record| match record {
                NewRecord::Push(event) => ref_key(event),
                NewRecord::Catalog(_) => None,
            })
            .collect();
        refs.sort();
        refs.dedup();
        for chunk in refs.chunks(bulk::CHUNK) {
            let conditions: Vec<String> = (0..chunk.len())
                .map(|i| format!("(project_id = ${} AND ref = ${})", 2 * i + 1, 2 * i + 2))
                .collect();
            let sql = format!(
                "SELECT project_id, ref, before_sha, after_sha, seq, received_at FROM ref_heads WHERE {}",
                conditions.join(" OR ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (project, git_ref) in chunk {
                query = query.bind(project.get()).bind(git_ref.as_str());
            }
            // Each row answers one of the keys asked for: take the typed key from the
            // request rather than parsing the stored ref again.
            let asked: HashMap<(i64, &str), &RefKey> = chunk
                .iter()
                .map(|key| ((key.0.get(), key.1.as_str()), key))
                .collect();
            for row in query.fetch_all(&mut *conn).await? {
                let (project, git_ref) = (rows::int(&row, "project_id")?, rows::text(&row, "ref")?);
                let Some(&key) = asked.get(&(project, git_ref.as_str())) else {
                    continue;
                };
                let head = RefHead {
                    before: rows::sha(&row, "before_sha")?,
                    after: rows::sha(&row, "after_sha")?,
                    seq: rows::seq(&row, "seq")?,
                    received_at: rows::millis(&row, "received_at")?,
                };
                state.heads.insert(key.clone(), head);
            }
        }
        Ok(state)
    }

    /// The seqs of an earlier delivery with this key, if there was one.
    pub(super) fn seen_key(&self, key: &str) -> Option<Vec<Seq>> {
        self.keys.get(key).cloned()
    }

    /// The seq of the original if `event` repeats the last change of its ref within the
    /// window.
    pub(super) fn repeat_of(&self, event: &PushEvent, since: UnixMillis) -> Option<Seq> {
        let head = self.heads.get(&ref_key(event)?)?;
        let same = head.before == event.before && head.after == event.after;
        (same && head.received_at >= since).then_some(head.seq)
    }

    pub(super) fn record_push(&mut self, event: &PushEvent, seq: Seq, now: UnixMillis) {
        let Some(key) = ref_key(event) else {
            return;
        };
        let head = RefHead {
            before: event.before.clone(),
            after: event.after.clone(),
            seq,
            received_at: now,
        };
        self.heads.insert(key.clone(), head);
        self.changed_heads.insert(key);
    }

    pub(super) fn record_key(&mut self, key: &str, seqs: Vec<Seq>) {
        self.keys.insert(key.to_owned(), seqs.clone());
        self.new_keys.push((key.to_owned(), seqs));
    }

    /// Writes the keys and ref heads this batch added or changed.
    pub(super) async fn write(
        self,
        conn: &mut AnyConnection,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        for chunk in self.new_keys.chunks(bulk::CHUNK) {
            let sql = format!(
                "INSERT INTO idempotency_keys (key, seqs, created_at) VALUES {} \
                 ON CONFLICT (key) DO UPDATE SET seqs = excluded.seqs, created_at = excluded.created_at",
                bulk::values(conn, chunk.len(), 3)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (key, seqs) in chunk {
                query = query
                    .bind(key.as_str())
                    .bind(rows::to_json(seqs))
                    .bind(now.get());
            }
            query.execute(&mut *conn).await?;
        }
        let changed: Vec<RefKey> = self.changed_heads.into_iter().collect();
        for chunk in changed.chunks(bulk::CHUNK) {
            let sql = format!(
                "INSERT INTO ref_heads (project_id, ref, before_sha, after_sha, seq, received_at) VALUES {} \
                 ON CONFLICT (project_id, ref) DO UPDATE SET before_sha = excluded.before_sha, \
                 after_sha = excluded.after_sha, seq = excluded.seq, received_at = excluded.received_at",
                bulk::values(conn, chunk.len(), 6)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for key in chunk {
                let head = &self.heads[key];
                query = query
                    .bind(key.0.get())
                    .bind(key.1.as_str())
                    .bind(head.before.as_str())
                    .bind(head.after.as_str())
                    .bind(rows::seq_param(head.seq))
                    .bind(head.received_at.get());
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }
}
