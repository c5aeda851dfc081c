//! What one append transaction checks its hooks against, and writes back at the end.
//!
//! The [`DeliveryHistory`] the batch is checked against (the idempotency keys it carries,
//! the last change of each ref it touches) is read when the transaction starts (by
//! [`super::prefetch`]), kept current in memory while the hooks are applied, and written
//! back with the log's own writes, in one statement, before the commit. The log lock held
//! by the transaction guarantees no other writer changes these rows meanwhile.

use std::collections::{BTreeSet, HashMap};

use fluxgate_core::{GitRef, HookBatch, NewRecord, ProjectId, PushEvent, Seq, Sha, UnixMillis};

use super::compound::{Compound, ROWS_PER_PART};
use super::rows;

/// The last change recorded for one (project, ref).
#[derive(Debug, Clone)]
pub(super) struct RefHead {
    pub(super) before: Sha,
    pub(super) after: Sha,
    pub(super) seq: Seq,
    pub(super) received_at: UnixMillis,
}

/// One ref of one project: the key of [`RefHead`].
pub(super) type RefKey = (ProjectId, GitRef);

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

/// The idempotency keys `hooks` carry.
pub(super) fn keys_named(hooks: &[HookBatch]) -> Vec<&str> {
    hooks
        .iter()
        .filter_map(|h| h.idempotency_key.as_deref())
        .collect()
}

/// The refs whose last change the pushes of `hooks` are checked against, each once.
pub(super) fn refs_named(hooks: &[HookBatch]) -> Vec<RefKey> {
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
    refs
}

impl DeliveryHistory {
    /// Remembers a key read from the store (still inside the window) and its seqs.
    pub(super) fn remember_key(&mut self, key: String, seqs: Vec<Seq>) {
        self.keys.insert(key, seqs);
    }

    /// Remembers the last change of a ref, read from the store.
    pub(super) fn remember_head(&mut self, key: RefKey, head: RefHead) {
        self.heads.insert(key, head);
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

    /// Adds the writes of the keys and ref heads this batch added or changed.
    pub(super) fn add_writes(self, writes: &mut Compound, now: UnixMillis) {
        for chunk in self.new_keys.chunks(ROWS_PER_PART) {
            writes.part(chunk.len() * 3, |part| {
                part.sql("INSERT INTO idempotency_keys (key, seqs, created_at) VALUES ")
                    .rows(chunk, |row, (key, seqs)| {
                        row.bind(key.as_str())
                            .bind(rows::to_json(seqs))
                            .bind(now.get());
                    })
                    .sql(
                        " ON CONFLICT (key) DO UPDATE SET seqs = excluded.seqs, \
                         created_at = excluded.created_at",
                    );
            });
        }
        let changed: Vec<RefKey> = self.changed_heads.into_iter().collect();
        for chunk in changed.chunks(ROWS_PER_PART) {
            writes.part(chunk.len() * 6, |part| {
                part.sql(
                    "INSERT INTO ref_heads (project_id, ref, before_sha, after_sha, seq, received_at) VALUES ",
                )
                .rows(chunk, |row, key| {
                    let head = &self.heads[key];
                    row.bind(key.0.get())
                        .bind(key.1.as_str())
                        .bind(head.before.as_str())
                        .bind(head.after.as_str())
                        .bind(rows::seq_param(head.seq))
                        .bind(head.received_at.get());
                })
                .sql(
                    " ON CONFLICT (project_id, ref) DO UPDATE SET before_sha = excluded.before_sha, \
                     after_sha = excluded.after_sha, seq = excluded.seq, received_at = excluded.received_at",
                );
            });
        }
    }
}
