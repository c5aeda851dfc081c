//! Decoding database values into domain types; a value that does not decode is corrupt.

use fluxgate_core::{FullPath, ProjectId, Seq, Sha, UnixMillis, Visibility};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::error::{CorruptValue, StoreError};

pub(super) fn int(row: &AnyRow, column: &'static str) -> Result<i64, StoreError> {
    Ok(row.try_get::<i64, _>(column)?)
}

pub(super) fn opt_int(row: &AnyRow, column: &'static str) -> Result<Option<i64>, StoreError> {
    Ok(row.try_get::<Option<i64>, _>(column)?)
}

pub(super) fn text(row: &AnyRow, column: &'static str) -> Result<String, StoreError> {
    Ok(row.try_get::<String, _>(column)?)
}

pub(super) fn seq(row: &AnyRow, column: &'static str) -> Result<Seq, StoreError> {
    let raw = int(row, column)?;
    u64::try_from(raw)
        .map(Seq)
        .map_err(|_| StoreError::corrupt(column, CorruptValue::Negative(raw)))
}

pub(super) fn millis(row: &AnyRow, column: &'static str) -> Result<UnixMillis, StoreError> {
    Ok(UnixMillis(int(row, column)?))
}

pub(super) fn path(row: &AnyRow, column: &'static str) -> Result<FullPath, StoreError> {
    let raw = text(row, column)?;
    FullPath::parse(&raw).map_err(|e| StoreError::corrupt(column, e))
}

pub(super) fn sha(row: &AnyRow, column: &'static str) -> Result<Sha, StoreError> {
    let raw = text(row, column)?;
    Sha::parse(&raw).map_err(|e| StoreError::corrupt(column, e))
}

pub(super) fn project_id(row: &AnyRow, column: &'static str) -> Result<ProjectId, StoreError> {
    let raw = int(row, column)?;
    ProjectId::new(raw).ok_or_else(|| StoreError::corrupt(column, CorruptValue::NotAProjectId(raw)))
}

pub(super) fn visibility(
    row: &AnyRow,
    column: &'static str,
) -> Result<Option<Visibility>, StoreError> {
    match row.try_get::<Option<String>, _>(column)? {
        None => Ok(None),
        Some(raw) => Visibility::from_name(&raw)
            .map(Some)
            .ok_or_else(|| StoreError::corrupt(column, CorruptValue::NotAVisibility(raw))),
    }
}

pub(super) fn json<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    column: &'static str,
) -> Result<T, StoreError> {
    let raw = text(row, column)?;
    serde_json::from_str(&raw).map_err(|e| StoreError::corrupt(column, e))
}

/// A nullable JSON column.
pub(super) fn opt_json<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    column: &'static str,
) -> Result<Option<T>, StoreError> {
    row.try_get::<Option<String>, _>(column)?
        .map(|raw| serde_json::from_str(&raw).map_err(|e| StoreError::corrupt(column, e)))
        .transpose()
}

/// Seqs are stored as BIGINT; they never get near `i64::MAX`.
pub(super) fn seq_param(seq: Seq) -> i64 {
    i64::try_from(seq.get()).unwrap_or(i64::MAX)
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("domain types always serialize")
}
