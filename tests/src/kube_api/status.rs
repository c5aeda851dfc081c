//! API errors as the API server reports them: a `Status` object with a code and a reason.

use serde_json::{Value, json};

/// A failed request: the HTTP status and the `Status` object that goes with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `BadRequest`, `Expired`, …
    pub reason: &'static str,
    pub message: String,
    /// `Status.details`, e.g. the `causes` of an `Invalid` or a conflict.
    pub details: Option<Value>,
}

/// One cause of an `Invalid` (422) answer: a field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, …
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// `<plural>.<group> "<name>" not found`, or a bare 404 for an unknown path.
    pub fn not_found(what: &str, name: &str) -> Self {
        if name.is_empty() {
            Self::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        } else {
            Self::new(404, "NotFound", format!("{what} \"{name}\" not found"))
        }
    }

    pub fn already_exists(what: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{what} \"{name}\" already exists"),
        )
    }

    /// The optimistic-concurrency failure of a write with a stale `resourceVersion`.
    pub fn conflict(what: &str, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {what} \"{name}\": the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
        )
    }

    /// 422 with one cause per problem.
    pub fn invalid(kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let summary: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let causes: Vec<Value> = causes
            .into_iter()
            .map(|c| json!({"reason": c.reason, "field": c.field, "message": c.message}))
            .collect();
        Self {
            code: 422,
            reason: "Invalid",
            message: format!("{kind} \"{name}\" is invalid: {}", summary.join(", ")),
            details: Some(json!({"name": name, "kind": kind, "causes": causes})),
        }
    }

    /// The 410 a watch gets when its `resourceVersion` is older than the kept history.
    pub fn expired(resource_version: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {resource_version}"),
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {content_type:?}"
            ),
        )
    }

    /// An apply without `fieldManager`, refused as `PatchOptions` validation refuses it.
    pub fn invalid_field_manager() -> Self {
        let cause = Cause {
            reason: "FieldValueRequired",
            field: "fieldManager".to_owned(),
            message: "Required value: is required for apply patch".to_owned(),
        };
        let mut error = Self::invalid("PatchOptions.meta.k8s.io", "", vec![cause]);
        error.message = "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".to_owned();
        error
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}
