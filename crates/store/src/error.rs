//! Store errors, each mapped to the client-visible [`ErrorCode`].
//!
//! Each variant keeps what went wrong as a value: the `sqlx::Error` of an outage or a
//! failed query, the agent that was not found, the column that did not decode and why.
//! Messages name their cause inline too (`database unavailable: pool timed out`), because
//! the broker logs a store error with `%err`; the cause is also its [`source`], for code
//! that inspects it.
//!
//! [`source`]: std::error::Error::source

use std::path::PathBuf;
use std::time::Duration;

use fluxgate_core::{
    AgentId, AgentName, AgentNameError, ApiError, ErrorCode, GitError, Grant, PathError,
    ReceiverHealthError,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refuses work for now; the operation wrote nothing.
    #[error("database unavailable: {source}")]
    Unavailable {
        #[source]
        source: sqlx::Error,
    },
    /// The database did not answer in time; the transaction was abandoned (rolled back).
    #[error("database unavailable: the database did not answer within {waited:?}")]
    NoAnswer { waited: Duration },
    /// A SQLite write waited this long for the writes before it; it wrote nothing.
    #[error("database unavailable: other writes held SQLite's write lock for {waited:?}")]
    WriterBusy { waited: Duration },
    #[error(transparent)]
    NotFound(MissingEntity),
    #[error(transparent)]
    AlreadyExists(ExistingEntity),
    /// A request the store refuses.
    #[error(transparent)]
    Invalid(InvalidRequest),
    /// A row that does not decode: a bug or a hand-edited database.
    #[error("corrupt row: {column}: {source}")]
    Corrupt {
        column: &'static str,
        #[source]
        source: CorruptValue,
    },
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// An append answered with a different number of outcomes than hooks it was given: a
    /// bug in the store. The hooks without an outcome get this error, never silence.
    #[error("the store answered {outcomes} outcomes for {hooks} hooks")]
    OutcomeCountMismatch { hooks: usize, outcomes: usize },
}

/// What was looked for and not found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MissingEntity {
    #[error("no agent named {0:?}")]
    AgentNamed(AgentName),
    #[error("no agent with id {}", .0.0)]
    AgentWithId(AgentId),
}

/// What already exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExistingEntity {
    #[error("an agent named {0:?} already exists")]
    AgentNamed(AgentName),
}

/// Why the store refuses a request or a configuration.
#[derive(Debug, thiserror::Error)]
pub enum InvalidRequest {
    /// A revoke of a grant the agent does not have.
    #[error("agent {agent:?} has no grant for {grant}")]
    NoSuchGrant { agent: AgentName, grant: Grant },
    /// A receiver health report over the bounds of `ReceiverHealth::validate`.
    #[error("receiver health: {0}")]
    ReceiverHealth(#[source] ReceiverHealthError),
    /// A delivery record over the bounds of `DeliveryRecord::validate`.
    #[error("delivery record: {0}")]
    DeliveryRecord(#[source] fluxgate_core::DeliveryRecordError),
    /// A subscription status report over the bounds of `SubscriptionReport::validate`.
    #[error("subscription status: {0}")]
    SubscriptionStatus(#[source] fluxgate_core::SubscriptionReportError),
    #[error("invalid database URL: {0}")]
    DatabaseUrl(#[source] sqlx::Error),
    /// `scheme` is what precedes the first `:` of the URL (never its credentials).
    #[error("unsupported database URL {scheme:?}: use sqlite://… or postgres://…")]
    UnsupportedUrl { scheme: String },
    /// The SQLite database file does not exist (and was not created: see
    /// `SqlStore::connect_existing`).
    #[error("no database file at {}", path.display())]
    NoDatabaseFile { path: PathBuf },
    /// The database lacks migrations this build has (`first` names the first of them).
    #[error(
        "the database is not migrated: {missing} of {known} migrations not applied, from {first}"
    )]
    NotMigrated {
        missing: usize,
        known: usize,
        first: String,
    },
    /// The SQLite database's files cannot be created or made private.
    #[error("cannot {action} {}: {source}", path.display())]
    DatabaseFile {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a stored value does not decode.
#[derive(Debug, thiserror::Error)]
pub enum CorruptValue {
    #[error("{0} is negative")]
    Negative(i64),
    #[error("{0} is out of range")]
    OutOfRange(i64),
    #[error("{0} is not a project id")]
    NotAProjectId(i64),
    #[error("{0:?} is not a visibility")]
    NotAVisibility(String),
    #[error("{0:?} is not a kind of row the query returns")]
    UnknownRowKind(String),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    AgentName(#[from] AgentNameError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Stage(#[from] fluxgate_core::delivery::UnknownStage),
}

impl StoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::Unavailable { .. }
            | StoreError::NoAnswer { .. }
            | StoreError::WriterBusy { .. } => ErrorCode::Unavailable,
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            StoreError::Invalid(_) => ErrorCode::BadRequest,
            StoreError::Corrupt { .. }
            | StoreError::Database(_)
            | StoreError::Migrate(_)
            | StoreError::OutcomeCountMismatch { .. } => ErrorCode::Internal,
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

    pub(crate) fn corrupt(column: &'static str, value: impl Into<CorruptValue>) -> Self {
        StoreError::Corrupt {
            column,
            source: value.into(),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        let transient = match &err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => is_transient(db.code().as_deref()),
            _ => false,
        };
        if transient {
            StoreError::Unavailable { source: err }
        } else {
            StoreError::Database(err)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages clients see for refusals are part of the API: they stay as they were
    /// when the variants held strings.
    #[test]
    fn client_messages_name_the_agent_and_the_cause() {
        let name = AgentName::parse("prod").unwrap();
        let cases = [
            (
                StoreError::NotFound(MissingEntity::AgentNamed(name.clone())),
                ErrorCode::NotFound,
                r#"no agent named "prod""#,
            ),
            (
                StoreError::NotFound(MissingEntity::AgentWithId(AgentId(7))),
                ErrorCode::NotFound,
                "no agent with id 7",
            ),
            (
                StoreError::AlreadyExists(ExistingEntity::AgentNamed(name.clone())),
                ErrorCode::AlreadyExists,
                r#"an agent named "prod" already exists"#,
            ),
            (
                StoreError::Invalid(InvalidRequest::NoSuchGrant {
                    agent: name,
                    grant: Grant::Project(fluxgate_core::FullPath::parse("team/app").unwrap()),
                }),
                ErrorCode::BadRequest,
                r#"agent "prod" has no grant for project team/app"#,
            ),
        ];
        for (err, code, message) in cases {
            let api = err.to_api_error();
            assert_eq!((api.code, api.message.as_str()), (code, message), "{err:?}");
        }
    }

    #[test]
    fn a_refused_health_report_names_the_field_and_keeps_its_cause() {
        let cause = ReceiverHealthError {
            field: "failing".to_owned(),
            reason: "300 receivers; at most 256 are allowed".to_owned(),
        };
        let err = StoreError::Invalid(InvalidRequest::ReceiverHealth(cause.clone()));
        let api = err.to_api_error();
        assert_eq!(api.code, ErrorCode::BadRequest);
        assert_eq!(
            api.message,
            "receiver health: failing: 300 receivers; at most 256 are allowed"
        );
        let source = std::error::Error::source(&err).expect("the cause is kept");
        assert_eq!(source.to_string(), cause.to_string());
    }

    #[test]
    fn outages_are_unavailable_with_their_sqlx_cause_and_a_fixed_client_message() {
        let err = StoreError::from(sqlx::Error::PoolTimedOut);
        assert!(matches!(
            err,
            StoreError::Unavailable {
                source: sqlx::Error::PoolTimedOut
            }
        ));
        assert_eq!(err.code(), ErrorCode::Unavailable);
        assert!(
            err.to_string().starts_with("database unavailable: "),
            "{err}"
        );
        assert_eq!(
            err.to_api_error().message,
            "the database is unavailable; nothing was stored, retry later"
        );
        let timed_out = StoreError::NoAnswer {
            waited: Duration::from_secs(10),
        };
        assert_eq!(timed_out.code(), ErrorCode::Unavailable);
    }

    #[test]
    fn corrupt_rows_name_the_column_and_stay_internal() {
        let err = StoreError::corrupt("visibility", CorruptValue::NotAVisibility("x".into()));
        assert_eq!(
            err.to_string(),
            r#"corrupt row: visibility: "x" is not a visibility"#
        );
        assert_eq!(err.code(), ErrorCode::Internal);
        assert_eq!(err.to_api_error().message, ApiError::internal().message);
    }
}
