//! Decoding database values into domain types; a value that does not decode is corrupt.

use fluxgate_core::{FullPath, ProjectId, Seq, UnixMillis, Visibility};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::error::StoreError;

pub(super) fn int(row: &AnyRow, column: &str) -> Result<i64, StoreError> {
    Ok(row.try_get::<i64, _>(column)?)
}

pub(super) fn opt_int(row: &AnyRow, column: &str) -> Result<Option<i64>, StoreError> {
    Ok(row.try_get::<Option<i64>, _>(column)?)
}

pub(super) fn text(row: &AnyRow, column: &str) -> Result<String, StoreError> {
    Ok(row.try_get::<String, _>(column)?)
}

pub(super) fn seq(row: &AnyRow, column: &str) -> Result<Seq, StoreError> {
    let raw = int(row, column)?;
    u64::try_from(raw)
        .map(Seq)
        .map_err(|_| StoreError::Corrupt(format!("{column} = {raw} is negative")))
}

pub(super) fn millis(row: &AnyRow, column: &str) -> Result<UnixMillis, StoreError> {
    Ok(UnixMillis(int(row, column)?))
}

pub(super) fn path(row: &AnyRow, column: &str) -> Result<FullPath, StoreError> {
    let raw = text(row, column)?;
    FullPath::parse(&raw).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

pub(super) fn project_id(row: &AnyRow, column: &str) -> Result<ProjectId, StoreError> {
    let raw = int(row, column)?;
    ProjectId::new(raw)
        .ok_or_else(|| StoreError::Corrupt(format!("{column} = {raw} is not a project id")))
}

pub(super) fn visibility(row: &AnyRow, column: &str) -> Result<Option<Visibility>, StoreError> {
    match row.try_get::<Option<String>, _>(column)? {
        None => Ok(None),
        Some(raw) => Visibility::from_name(&raw)
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt(format!("{column} = {raw:?} is not a visibility"))),
    }
}

pub(super) fn json<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    column: &str,
) -> Result<T, StoreError> {
    let raw = text(row, column)?;
    serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

/// A nullable JSON column.
pub(super) fn opt_json<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    column: &str,
) -> Result<Option<T>, StoreError> {
    row.try_get::<Option<String>, _>(column)?
        .map(|raw| {
            serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
        })
        .transpose()
}

/// Seqs are stored as BIGINT; they never get near `i64::MAX`.
pub(super) fn seq_param(seq: Seq) -> i64 {
    i64::try_from(seq.get()).unwrap_or(i64::MAX)
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("domain types always serialize")
}
