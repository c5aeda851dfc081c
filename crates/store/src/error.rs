//! Store errors, each mapped to the client-visible [`ErrorCode`].

use fluxgate_core::{ApiError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or timed out; the operation wrote nothing.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A request the store refuses (a revoke of a grant the agent does not have).
    #[error("{0}")]
    Invalid(String),
    /// A row that does not decode: a bug or a hand-edited database.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::Unavailable(_) => ErrorCode::Unavailable,
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            StoreError::Invalid(_) => ErrorCode::BadRequest,
            StoreError::Corrupt(_) | StoreError::Database(_) | StoreError::Migrate(_) => {
                ErrorCode::Internal
            }
        }
    }

    /// The error as a client should see it: internal details stay in the logs.
    pub fn to_api_error(&self) -> ApiError {
        match self.code() {
            ErrorCode::Internal => ApiError::internal(),
            ErrorCode::Unavailable => ApiError::unavailable(
                "the database is unavailable; nothing was stored, retry later",
            ),
            code => ApiError::new(code, self.to_string()),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err.to_string()),
            sqlx::Error::Database(ref db) if is_transient(db.code().as_deref()) => {
                StoreError::Unavailable(err.to_string())
            }
            other => StoreError::Database(other),
        }
    }
}

/// Database error codes that mean "try again": SQLite busy/locked/read-only, PostgreSQL
/// connection and shutdown classes, too many connections, and a read-only transaction (a
/// standby after a failover, or `default_transaction_read_only`): the database is there
/// but cannot take writes now, which is an outage, not a bug.
fn is_transient(code: Option<&str>) -> bool {
    match code {
        // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY and their extended codes.
        Some(
            "5" | "6" | "261" | "517" | "8" | "264" | "520" | "776" | "1032" | "1288" | "1544",
        ) => true,
        Some(code) => {
            code.starts_with("08") || code.starts_with("57P") || code == "53300" || code == "25006"
        }
        None => false,
    }
}
