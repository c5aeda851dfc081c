//! JSON in for the admin API. Errors go out as [`ErrorAnswer`], the one error-to-response
//! path of every HTTP API of the broker (hooks, admin API, fallbacks).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use fluxgate_core::{ApiError, ErrorCode};
pub use fluxgate_ingest::hooks::ErrorAnswer;
use serde::de::DeserializeOwned;

/// Largest admin request body.
pub const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// A JSON request body; errors name the field that is wrong.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ErrorAnswer;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let code = if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                    ErrorCode::PayloadTooLarge
                } else {
                    ErrorCode::BadRequest
                };
                ErrorAnswer(ApiError::new(code, rejection.body_text()))
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
                ErrorAnswer(ApiError::bad_request(message))
            })
    }
}
