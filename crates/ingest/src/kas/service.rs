//! `Notifications/GitPushEvent`: authenticate (metadata `authorization: bearer <JWT>`),
//! validate the event (`project` present, `id` > 0, `full_path` a GitLab path: the rules
//! KAS checks with protoc-gen-validate), append a [`EventKind::ProjectPush`] through the
//! same [`Appender`] as hooks, and answer once it is committed.
//!
//! Answers as KAS does: `Unauthenticated` for any token failure ("JWT validation failed:
//! <why>"), `InvalidArgument` for an invalid event, `Unavailable` ("Failed to publish
//! received git push event: <why>") when it cannot be committed. Each call runs in a
//! `kas_git_push` span and is counted in `fluxgate_kas_git_push_events_total{outcome}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxgate_core::{
    EventKind, FullPath, HookBatch, NewRecord, ProjectId, ProjectRef, PushEvent, Sha, UnixMillis,
    bearer,
};
use fluxgate_proto::gitlab::agent::notifications::rpc::notifications_server::{
    Notifications, NotificationsServer,
};
use fluxgate_proto::gitlab::agent::notifications::rpc::{
    GitPushEventRequest, GitPushEventResponse,
};
use fluxgate_store::Appender;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;
use tracing::field::{Empty, display};

use super::jwt::KasJwtVerifier;
use crate::commit::CommitFailure;
use crate::hooks::RefusalLog;
use crate::log_field::bounded;
use crate::metric_names as metric;

/// Largest request message accepted: an event is a project id and a path (at most
/// 1 KiB), so 16 KiB is generous.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// The `Notifications` service of KAS's internal API.
#[derive(Clone)]
pub struct KasNotifications {
    appender: Appender,
    verifier: Arc<KasJwtVerifier>,
    commit_timeout: Duration,
    refusal_log: Arc<RefusalLog>,
}

impl KasNotifications {
    pub fn new(
        appender: Appender,
        verifier: KasJwtVerifier,
        commit_timeout: Duration,
        refusal_log: Arc<RefusalLog>,
    ) -> Self {
        Self {
            appender,
            verifier: Arc::new(verifier),
            commit_timeout,
            refusal_log,
        }
    }

    /// The tonic service, with its message size limit.
    pub fn into_server(self) -> NotificationsServer<Self> {
        NotificationsServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn authenticate(
        &self,
        request: &Request<GitPushEventRequest>,
    ) -> Result<Option<String>, Refused> {
        let missing = || {
            Refused::new(
                "token_missing",
                Status::unauthenticated(
                    "JWT validation failed: missing `authorization: bearer <JWT>` metadata",
                ),
            )
        };
        let value = request
            .metadata()
            .get("authorization")
            .ok_or_else(missing)?;
        let value = value.to_str().map_err(|_| missing())?;
        let token = bearer::parse(value).map_err(|_| missing())?;
        let now = UnixMillis::now().get() / 1000;
        match self.verifier.verify(token, now) {
            Ok(verified) => Ok(verified.jti),
            Err(err) => Err(Refused::new(
                "token_invalid",
                Status::unauthenticated(format!("JWT validation failed: {err}")),
            )),
        }
    }

    async fn handle(
        &self,
        request: Request<GitPushEventRequest>,
    ) -> Result<(&'static str, fluxgate_core::Seq), Refused> {
        let jti = self.authenticate(&request)?;
        let project = validate(request.into_inner())?;
        let span = tracing::Span::current();
        span.record("project", display(bounded(project.path.as_str())));
        span.record("project_id", project.id.get());
        let event = PushEvent {
            event_id: uuid::Uuid::now_v7(),
            project,
            git_ref: None,
            before: Sha::zero(),
            after: Sha::zero(),
            kind: EventKind::ProjectPush,
            artifact: None,
            received_at: UnixMillis::now(),
        };
        let batch = HookBatch {
            // A replayed token is a duplicate; Rails mints a new one for every call.
            idempotency_key: jti.map(|jti| format!("kas-jti:{jti}")),
            records: vec![NewRecord::Push(event)],
        };
        let outcome = crate::commit::commit(
            &self.appender,
            self.commit_timeout,
            batch,
            "a KAS git push event",
        )
        .await
        .map_err(|failure| {
            let reason = failure.reason();
            let detail = match failure {
                CommitFailure::Store(err) => err.to_string(),
                CommitFailure::Stopped => "the broker is shutting down".to_owned(),
                CommitFailure::Timeout(timeout) => format!(
                    "the commit did not finish within {:.1}s",
                    timeout.as_secs_f64()
                ),
            };
            unavailable(reason, &detail)
        })?;
        let record = outcome.records.first().copied().ok_or_else(|| {
            unavailable(
                "commit_failed",
                "the store returned no outcome for the event",
            )
        })?;
        span.record("seq", record.seq.get());
        Ok((
            if record.duplicate {
                "duplicate"
            } else {
                "accepted"
            },
            record.seq,
        ))
    }
}

/// A refused call: the status, and a fixed label for metrics and log rate limiting.
struct Refused {
    reason: &'static str,
    status: Status,
}

impl Refused {
    fn new(reason: &'static str, status: Status) -> Self {
        Self { reason, status }
    }
}

fn unavailable(reason: &'static str, why: &str) -> Refused {
    Refused::new(
        reason,
        Status::unavailable(format!("Failed to publish received git push event: {why}")),
    )
}

/// The event's project, validated as KAS's protoc-gen-validate rules do (and as a path
/// fluxgate can route).
fn validate(request: GitPushEventRequest) -> Result<ProjectRef, Refused> {
    let invalid = |message: String| Refused::new("invalid", Status::invalid_argument(message));
    let project = request
        .event
        .ok_or_else(|| invalid("event is required".to_owned()))?
        .project
        .ok_or_else(|| invalid("event.project is required".to_owned()))?;
    let id = ProjectId::new(project.id).ok_or_else(|| {
        invalid(format!(
            "event.project.id must be greater than 0, not {}",
            project.id
        ))
    })?;
    if project.full_path.is_empty() {
        return Err(invalid(
            "event.project.full_path must not be empty".to_owned(),
        ));
    }
    let path = FullPath::parse(&project.full_path).map_err(|err| {
        invalid(format!(
            "event.project.full_path is not a GitLab path: {}",
            bounded(&err.to_string())
        ))
    })?;
    Ok(ProjectRef {
        id,
        path,
        visibility: None,
    })
}

#[tonic::async_trait]
impl Notifications for KasNotifications {
    async fn git_push_event(
        &self,
        request: Request<GitPushEventRequest>,
    ) -> Result<Response<GitPushEventResponse>, Status> {
        let span = tracing::info_span!(
            "kas_git_push",
            project = Empty,
            project_id = Empty,
            seq = Empty
        );
        let started = Instant::now();
        let result = self.handle(request).instrument(span.clone()).await;
        let outcome = match &result {
            Ok((outcome, _)) => *outcome,
            Err(refused) => metric::kas_outcome(refused.status.code()),
        };
        metrics::counter!(metric::KAS_GIT_PUSH_EVENTS, metric::OUTCOME => outcome).increment(1);
        let _entered = span.enter();
        match result {
            Ok((outcome, seq)) => {
                tracing::info!(
                    outcome,
                    %seq,
                    elapsed_ms = started.elapsed().as_millis(),
                    "KAS git push event committed"
                );
                Ok(Response::new(GitPushEventResponse {}))
            }
            Err(refused) => {
                let reason = refused.reason;
                if let Some(suppressed) =
                    self.refusal_log
                        .admit(None, reason, std::time::Instant::now())
                {
                    let detail = bounded(refused.status.message());
                    tracing::info!(reason, code = ?refused.status.code(), %detail, suppressed, "KAS git push event refused");
                }
                Err(refused.status)
            }
        }
    }
}
