//! The one error-code type: every error a client can see carries one of these codes, and
//! each code maps to exactly one HTTP status and one gRPC code.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A client-visible error category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or misses something required.
    BadRequest,
    /// No credentials, or wrong ones.
    Unauthenticated,
    /// Valid credentials that do not allow this.
    PermissionDenied,
    NotFound,
    /// The path exists, but not with this method.
    MethodNotAllowed,
    AlreadyExists,
    /// The body is larger than the configured limit.
    PayloadTooLarge,
    /// The content type is not one we accept.
    UnsupportedMediaType,
    /// The client is too slow or sends too much; retry later.
    ResourceExhausted,
    /// The request is valid but the state does not allow it (such as an expired cursor).
    FailedPrecondition,
    /// A dependency (the database) is down; retry later.
    Unavailable,
    /// A bug or an unexpected failure; details are only logged.
    Internal,
}

impl ErrorCode {
    pub fn http_status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Self::BadRequest => S::BAD_REQUEST,
            Self::Unauthenticated => S::UNAUTHORIZED,
            Self::PermissionDenied => S::FORBIDDEN,
            Self::NotFound => S::NOT_FOUND,
            Self::MethodNotAllowed => S::METHOD_NOT_ALLOWED,
            Self::AlreadyExists => S::CONFLICT,
            Self::PayloadTooLarge => S::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => S::UNSUPPORTED_MEDIA_TYPE,
            Self::ResourceExhausted => S::TOO_MANY_REQUESTS,
            Self::FailedPrecondition => S::PRECONDITION_FAILED,
            Self::Unavailable => S::SERVICE_UNAVAILABLE,
            Self::Internal => S::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(self) -> tonic::Code {
        use tonic::Code as C;
        match self {
            Self::BadRequest | Self::UnsupportedMediaType => C::InvalidArgument,
            Self::Unauthenticated => C::Unauthenticated,
            Self::PermissionDenied => C::PermissionDenied,
            Self::NotFound => C::NotFound,
            Self::MethodNotAllowed => C::Unimplemented,
            Self::AlreadyExists => C::AlreadyExists,
            Self::PayloadTooLarge | Self::ResourceExhausted => C::ResourceExhausted,
            Self::FailedPrecondition => C::FailedPrecondition,
            Self::Unavailable => C::Unavailable,
            Self::Internal => C::Internal,
        }
    }

    /// The snake_case name used in JSON error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::AlreadyExists => "already_exists",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::ResourceExhausted => "resource_exhausted",
            Self::FailedPrecondition => "failed_precondition",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as a client sees it: a code and a message that says exactly what was wrong.
/// Serializes to the JSON error body `{"code": …, "message": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// An internal error: the message is generic; log the cause before calling this.
    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error; see the broker's logs")
    }

    pub fn to_grpc_status(&self) -> tonic::Status {
        tonic::Status::new(self.code.grpc_code(), self.message.clone())
    }
}

impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        err.to_grpc_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_have_code_and_message() {
        let json = serde_json::to_string(&ApiError::bad_request("field `ref` is missing")).unwrap();
        assert_eq!(
            json,
            r#"{"code":"bad_request","message":"field `ref` is missing"}"#
        );
    }

    #[test]
    fn every_code_maps_consistently() {
        let all = [
            ErrorCode::BadRequest,
            ErrorCode::Unauthenticated,
            ErrorCode::PermissionDenied,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::AlreadyExists,
            ErrorCode::PayloadTooLarge,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::ResourceExhausted,
            ErrorCode::FailedPrecondition,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ];
        for code in all {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let server_side = matches!(
                code.grpc_code(),
                tonic::Code::Unavailable | tonic::Code::Internal
            );
            assert_eq!(code.http_status().is_server_error(), server_side, "{code}");
        }
    }
}
