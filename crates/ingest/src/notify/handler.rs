//! The notification handler: credential (401/503), content type (415), body size (413),
//! token verification (401/503), body (401 for a project, 400 otherwise), commit (503),
//! answer.

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use fluxgate_core::{
    ApiError, Artifact, ErrorCode, EventKind, GitRef, HookBatch, NewRecord, PushEvent, Seq, Sha,
    UnixMillis, bearer,
};
use fluxgate_idtoken::{PipelineClaims, VerifyError};
use http::{HeaderMap, StatusCode, header};
use serde::Serialize;
use tracing::Instrument as _;
use tracing::field::{Empty, display};

use super::body::{BodyError, NotifyBody};
use super::{JTI_KEY_PREFIX, NOTIFY_BODY_LIMIT, NotifyState};
use crate::hooks::record_refusal;
use crate::hooks::{ErrorAnswer, REQUEST_ID_HEADER};
use crate::log_field::bounded;
use crate::metric_names as metric;

/// The body of a 200 answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotifyAnswer {
    /// `accepted`, or `duplicate` for a token seen before.
    pub status: &'static str,
    /// The event's seq (the original's for a duplicate).
    pub seq: Seq,
    /// The project and ref the token named (what the event carries).
    pub project: String,
    #[serde(rename = "ref")]
    pub git_ref: GitRef,
}

impl IntoResponse for NotifyAnswer {
    fn into_response(self) -> Response {
        (StatusCode::OK, Json(self)).into_response()
    }
}

/// A refusal: the answer, and a fixed label for metrics and log rate limiting.
struct Refused {
    reason: &'static str,
    error: ApiError,
}

impl Refused {
    fn new(reason: &'static str, error: ApiError) -> Self {
        Self { reason, error }
    }
}

impl From<VerifyError> for Refused {
    fn from(err: VerifyError) -> Self {
        let error = if err.is_unavailable() {
            ApiError::unavailable(format!("cannot verify ID tokens now: {err}"))
        } else {
            ApiError::unauthenticated(format!("ID token refused: {err}"))
        };
        Self::new(err.reason(), error)
    }
}

pub(super) async fn receive(
    State(state): State<NotifyState>,
    request: Request,
) -> Result<NotifyAnswer, ErrorAnswer> {
    let span = tracing::info_span!(
        "notify",
        request_id = Empty,
        jti = Empty,
        project = Empty,
        seq = Empty,
    );
    if let Some(id) = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        span.record("request_id", display(bounded(id).with_max_chars(128)));
    }
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    async move {
        let result = handle(&state, request).await;
        let outcome = match &result {
            Ok(answer) => answer.status,
            Err(refused) => refused.error.code.as_str(),
        };
        metrics::counter!(metric::NOTIFICATIONS, metric::OUTCOME => outcome).increment(1);
        result.map_err(|refused| {
            log_refusal(&state, source, &refused);
            ErrorAnswer(refused.error)
        })
    }
    .instrument(span)
    .await
}

fn log_refusal(state: &NotifyState, source: Option<IpAddr>, refused: &Refused) {
    record_refusal(
        &state.refusal_log,
        metric::NOTIFY_REFUSALS,
        "notification",
        source,
        refused.reason,
        &refused.error,
    );
}

async fn handle(state: &NotifyState, request: Request) -> Result<NotifyAnswer, Refused> {
    let (parts, body) = request.into_parts();
    let token = bearer_token(&parts.headers)?;
    check_content_type(&parts.headers)?;
    let body = read_body(body, &parts.headers).await?;
    let claims = state.verifier.verify(token).await?;
    let span = tracing::Span::current();
    span.record("jti", display(bounded(&claims.jti)));
    span.record("project", display(&claims.project_path));
    let body = NotifyBody::parse(&body).map_err(|err| match err {
        BodyError::NamesProject(field) => Refused::new(
            "body_names_project",
            ApiError::unauthenticated(format!(
                "the body names a {field:?}: a pipeline notifies only for its own project, \
                 ref and sha, which come from its ID token ({} at {})",
                claims.project_path, claims.git_ref
            )),
        ),
        BodyError::Invalid(message) => Refused::new(
            "body_invalid",
            ApiError::bad_request(bounded(&message).with_max_chars(512).to_string()),
        ),
    })?;
    let event = artifact_event(&claims, body)?;
    let batch = HookBatch {
        idempotency_key: Some(format!("{JTI_KEY_PREFIX}{}", claims.jti)),
        records: vec![NewRecord::Push(event)],
    };
    let outcome = commit(state, batch).await?;
    let record = outcome.records.first().ok_or_else(|| {
        tracing::error!("the store answered a notification with no record");
        Refused::new("commit_failed", ApiError::internal())
    })?;
    span.record("seq", record.seq.get());
    let status = if record.duplicate {
        "duplicate"
    } else {
        "accepted"
    };
    tracing::info!(
        status,
        seq = record.seq.get(),
        project_id = claims.project_id.get(),
        project = %claims.project_path,
        git_ref = %claims.git_ref,
        pipeline_id = %claims.pipeline_id,
        job_id = %claims.job_id,
        "pipeline notification committed"
    );
    Ok(NotifyAnswer {
        status,
        seq: record.seq,
        project: claims.project_path.to_string(),
        git_ref: claims.git_ref,
    })
}

/// The log event: project, ref and sha from the claims, the artifact from the body.
fn artifact_event(claims: &PipelineClaims, body: NotifyBody) -> Result<PushEvent, Refused> {
    let artifact = Artifact::new(
        body.artifact,
        body.tag,
        body.digest,
        claims.pipeline_id.clone(),
        claims.job_id.clone(),
    )
    .map_err(|err| Refused::new("artifact_invalid", ApiError::bad_request(err.to_string())))?;
    Ok(PushEvent {
        event_id: uuid::Uuid::now_v7(),
        project: claims.project(),
        git_ref: Some(claims.git_ref.clone()),
        before: Sha::zero(),
        after: claims.sha.clone().unwrap_or_else(Sha::zero),
        kind: EventKind::Artifact,
        artifact: Some(artifact),
        received_at: UnixMillis::now(),
    })
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, Refused> {
    let missing = || {
        Refused::new(
            "token_missing",
            ApiError::unauthenticated(
                "missing \"Authorization: Bearer <ID token>\" (a GitLab CI ID token, see docs/pipeline-notify.md)",
            ),
        )
    };
    let value = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| {
        Refused::new(
            "token_malformed",
            ApiError::unauthenticated("the Authorization header is not visible ASCII"),
        )
    })?;
    bearer::parse(value).map_err(|err| {
        Refused::new(
            "token_malformed",
            ApiError::unauthenticated(format!("Authorization: {err}")),
        )
    })
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Refused> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if essence.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(Refused::new(
        "content_type",
        ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "Content-Type must be application/json, not \"{}\"",
                bounded(essence).with_max_chars(64)
            ),
        ),
    ))
}

async fn read_body(body: Body, headers: &HeaderMap) -> Result<Bytes, Refused> {
    let too_large = || {
        Refused::new(
            "too_large",
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the body is larger than {NOTIFY_BODY_LIMIT} bytes"),
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > NOTIFY_BODY_LIMIT as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, NOTIFY_BODY_LIMIT)
        .await
        .map_err(|err| {
            let over_limit = std::error::Error::source(&err)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if over_limit {
                too_large()
            } else {
                Refused::new(
                    "body_unreadable",
                    ApiError::bad_request(format!("cannot read the body: {err}")),
                )
            }
        })
}

async fn commit(
    state: &NotifyState,
    batch: HookBatch,
) -> Result<fluxgate_store::HookOutcome, Refused> {
    crate::commit::commit(
        &state.appender,
        state.commit_timeout,
        batch,
        "a pipeline notification",
    )
    .await
    .map_err(|failure| {
        Refused::new(
            failure.reason(),
            failure.to_api_error(
                "the notification",
                "sending it again with the same token is safe (its jti makes it a duplicate)",
            ),
        )
    })
}
