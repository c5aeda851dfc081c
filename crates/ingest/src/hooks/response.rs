//! What GitLab gets back: JSON bodies for every outcome; and [`ErrorAnswer`], the one
//! error-to-response path, which the broker's other HTTP APIs (the admin API, unknown
//! routes, timeouts) answer with too.

use axum::Json;
use axum::response::{IntoResponse, Response};
use fluxgate_core::{ApiError, Seq};
use http::StatusCode;
use serde::Serialize;

/// What became of a hook that was not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookStatus {
    /// At least one new event.
    Accepted,
    /// Every event was seen before.
    Duplicate,
    /// A kind fluxgate does not use.
    Ignored,
}

impl HookStatus {
    /// As in the JSON body and the `outcome` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
        }
    }

    /// 202 for an ignored hook (nothing was stored), 200 otherwise.
    pub fn http_status(self) -> StatusCode {
        match self {
            Self::Ignored => StatusCode::ACCEPTED,
            Self::Accepted | Self::Duplicate => StatusCode::OK,
        }
    }
}

/// The body of a 2xx answer.
#[derive(Debug, Serialize)]
pub struct HookAnswer {
    pub status: HookStatus,
    /// The seq of each event of the hook, in payload order (the original's for a duplicate).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seqs: Vec<Seq>,
    /// How many of them were duplicates.
    #[serde(skip_serializing_if = "is_zero")]
    pub duplicates: usize,
    /// The hook's kind, for an ignored one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl IntoResponse for HookAnswer {
    fn into_response(self) -> Response {
        (self.status.http_status(), Json(self)).into_response()
    }
}

/// An error answer: the code's HTTP status and `{"code", "message"}`.
#[derive(Debug)]
pub struct ErrorAnswer(pub ApiError);

impl IntoResponse for ErrorAnswer {
    fn into_response(self) -> Response {
        (self.0.code.http_status(), Json(self.0)).into_response()
    }
}

impl From<ApiError> for ErrorAnswer {
    fn from(err: ApiError) -> Self {
        Self(err)
    }
}
