//! JSON in and out for the admin API, with the same error bodies as everywhere else.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use fluxgate_core::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;

/// Largest admin request body.
pub const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// A JSON request body; errors name the field that is wrong.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ErrorResponse;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let code = if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                    ErrorCode::PayloadTooLarge
                } else {
                    ErrorCode::BadRequest
                };
                ErrorResponse(ApiError::new(code, rejection.body_text()))
            })?;
        let deserializer = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(deserializer)
            .map(ApiJson)
            .map_err(|err| {
                let path = err.path().to_string();
                let message = if path == "." {
                    format!("invalid JSON body: {}", err.inner())
                } else {
                    format!("invalid JSON body at `{path}`: {}", err.inner())
                };
                ErrorResponse(ApiError::bad_request(message))
            })
    }
}

/// An error as an HTTP response: the code's status and `{"code", "message"}`.
#[derive(Debug)]
pub struct ErrorResponse(pub ApiError);

impl From<ApiError> for ErrorResponse {
    fn from(err: ApiError) -> Self {
        Self(err)
    }
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        (self.0.code.http_status(), Json(self.0)).into_response()
    }
}
