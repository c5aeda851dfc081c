//! What GitLab gets back: JSON bodies for every outcome; and [`ErrorAnswer`], the one
//! error-to-response path, which the broker's other HTTP APIs (the admin API, unknown
//! routes, timeouts) answer with too.

use axum::Json;
use axum::response::{IntoResponse, Response};
use fluxgate_core::{ApiError, Seq};
use http::StatusCode;
use serde::Serialize;

/// The body of a 2xx answer.
#[derive(Debug, Serialize)]
pub struct HookAnswer {
    /// `accepted`: at least one new event; `duplicate`: all seen before; `ignored`: a kind
    /// fluxgate does not use.
    pub status: &'static str,
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
        let status = if self.status == "ignored" {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        };
        (status, Json(self)).into_response()
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
