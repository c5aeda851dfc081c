//! What one hook delivery amounts to once parsed: the records to append, and the key that
//! makes a redelivery a duplicate.
//!
//! The GitLab parser (`fluxgate-gitlab`) produces these; the store appends them. They
//! live here so that neither depends on the other.

use crate::log::{CatalogChange, PushEvent};

/// One record to append, as a hook produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewRecord {
    Push(PushEvent),
    Catalog(CatalogChange),
}

/// Everything one hook delivery carries: appended atomically, deduplicated together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookBatch {
    /// GitLab's `Idempotency-Key`: a delivery seen before with the same key is a duplicate.
    pub idempotency_key: Option<String>,
    pub records: Vec<NewRecord>,
}
