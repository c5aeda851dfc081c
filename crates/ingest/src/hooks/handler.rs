//! `POST /hooks/gitlab`: authenticate, read, parse, commit, answer.
//!
//! The answer is sent only after the hook's events are committed, and names their seqs.
//! Order of checks, cheapest first: token or signature headers (401), content type (415),
//! idempotency key (400), body size (413), signature over the body (401), payload (400),
//! commit (503 if the database is unavailable).
//!
//! Logs carry no raw client input: a committed hook is summarised (counts, first project,
//! seq range), and refusals are written at most once per source and reason per
//! `hook_refusal_log_interval`, with bounded messages; every refusal is counted in
//! `fluxgate_hook_refusals_total{reason}`.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use fluxgate_core::{ApiError, ErrorCode, UnixMillis};
use fluxgate_core::{HookBatch, NewRecord};
use fluxgate_store::AppendError;
use http::{HeaderMap, header};

use super::HookState;
use super::auth::{AuthRefusal, Authenticated, unix_seconds_now};
use super::response::{ErrorAnswer, HookAnswer};
use crate::log_field::bounded;
use fluxgate_gitlab::{self as gitlab, ParsedHook};

/// GitLab's header carrying a delivery id that is stable across retries and resends.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Longest error message sent back for a payload that does not parse.
const MAX_ERROR_MESSAGE_CHARS: usize = 1024;

/// A refused hook: the answer, and a fixed label for metrics and log rate limiting.
struct Refused {
    reason: &'static str,
    error: ApiError,
}

impl Refused {
    fn new(reason: &'static str, error: ApiError) -> Self {
        Self { reason, error }
    }
}

impl From<AuthRefusal> for Refused {
    fn from(refusal: AuthRefusal) -> Self {
        Self::new(refusal.reason(), refusal.to_api_error())
    }
}

pub async fn receive_hook(
    State(state): State<HookState>,
    request: Request,
) -> Result<HookAnswer, ErrorAnswer> {
    let started = Instant::now();
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let result = handle(&state, request).await;
    let outcome = match &result {
        Ok(answer) => answer.status,
        Err(refused) => refused.error.code.as_str(),
    };
    metrics::counter!("fluxgate_hooks_total", "outcome" => outcome).increment(1);
    metrics::histogram!("fluxgate_hook_seconds").record(started.elapsed().as_secs_f64());
    result.map_err(|refused| {
        log_refusal(&state, source, &refused);
        ErrorAnswer(refused.error)
    })
}

fn log_refusal(state: &HookState, source: Option<IpAddr>, refused: &Refused) {
    let reason = refused.reason;
    metrics::counter!("fluxgate_hook_refusals_total", "reason" => reason).increment(1);
    let Some(suppressed) = state.refusal_log.admit(source, reason, Instant::now()) else {
        return;
    };
    let source = source.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let err = &refused.error;
    // `detail`, not `message`: that field is the event's own text.
    let detail = bounded(&err.message);
    if matches!(err.code, ErrorCode::Internal | ErrorCode::Unavailable) {
        tracing::warn!(%source, reason, code = %err.code, %detail, suppressed, "hook refused");
    } else {
        tracing::info!(%source, reason, code = %err.code, %detail, suppressed, "hook refused");
    }
}

async fn handle(state: &HookState, request: Request) -> Result<HookAnswer, Refused> {
    let (parts, body) = request.into_parts();
    let header_check = state
        .auth
        .check_headers(&parts.headers, unix_seconds_now())?;
    check_content_type(&parts.headers)?;
    let idempotency_key = idempotency_key(&parts.headers)?;
    let body = read_body(body, &parts.headers, state.body_limit).await?;
    let authenticated = state.auth.check_body(header_check, &body)?;
    // A verified signature authenticates `webhook-id` (GitLab's Idempotency-Key); the
    // plain header does not, so the signed one is the dedup key when there is one.
    let (idempotency_key, authenticated_by) = match authenticated {
        Authenticated::Signature { webhook_id } => (Some(webhook_id), "signature"),
        Authenticated::Token => (idempotency_key, "token"),
    };
    let received_at = UnixMillis::now();
    let records = match gitlab::parse_hook(&body, received_at) {
        Ok(ParsedHook::Records(records)) => records,
        Ok(ParsedHook::Ignored { kind }) => {
            metrics::counter!("fluxgate_hooks_ignored_total", "kind" => ignored_kind_label(&kind))
                .increment(1);
            tracing::debug!(kind = %bounded(&kind), "hook of an unused kind ignored");
            return Ok(HookAnswer {
                status: "ignored",
                seqs: Vec::new(),
                duplicates: 0,
                kind: Some(kind),
            });
        }
        Err(err) => {
            // Serde quotes what it could not read, and keys can be long: bounded.
            let message = bounded(&err.message).with_max_chars(MAX_ERROR_MESSAGE_CHARS);
            return Err(Refused::new(
                "payload_invalid",
                ApiError::bad_request(message.to_string()),
            ));
        }
    };
    for record in &records {
        let kind = match record {
            NewRecord::Push(event) => event.kind.as_str(),
            NewRecord::Catalog(_) => "catalog",
        };
        metrics::counter!("fluxgate_hook_records_total", "kind" => kind).increment(1);
    }
    let summary = Summary::of(&records);
    let batch = HookBatch {
        idempotency_key,
        records,
    };
    let outcome = commit(state, batch).await?;
    let duplicates = outcome.records.iter().filter(|r| r.duplicate).count();
    let seqs = outcome.records.iter().map(|r| r.seq).collect::<Vec<_>>();
    let status = if outcome.all_duplicates() {
        "duplicate"
    } else {
        "accepted"
    };
    tracing::info!(
        status,
        authenticated_by,
        records = seqs.len(),
        pushes = summary.pushes,
        catalog_changes = summary.catalog_changes,
        projects = summary.projects,
        project = %bounded(&summary.first_project),
        first_seq = seqs.iter().min().map_or(0, |s| s.get()),
        last_seq = seqs.iter().max().map_or(0, |s| s.get()),
        duplicates,
        "hook committed"
    );
    Ok(HookAnswer {
        status,
        seqs,
        duplicates,
        kind: None,
    })
}

/// A bounded description of a hook's records for its log line: however many refs a
/// `repository_update` carries, the line stays short.
struct Summary {
    pushes: usize,
    catalog_changes: usize,
    /// Distinct projects named by pushes.
    projects: usize,
    /// The first project named, for grepping.
    first_project: String,
}

impl Summary {
    fn of(records: &[NewRecord]) -> Self {
        let mut projects = HashSet::new();
        let mut first_project = None;
        let mut catalog_changes = 0;
        for record in records {
            match record {
                NewRecord::Push(event) => {
                    projects.insert(event.project.id);
                    first_project.get_or_insert_with(|| event.project.path.to_string());
                }
                NewRecord::Catalog(_) => catalog_changes += 1,
            }
        }
        Self {
            pushes: records.len() - catalog_changes,
            catalog_changes,
            projects: projects.len(),
            first_project: first_project.unwrap_or_default(),
        }
    }
}

async fn commit(
    state: &HookState,
    batch: HookBatch,
) -> Result<fluxgate_store::HookOutcome, Refused> {
    match tokio::time::timeout(state.commit_timeout, state.appender.append(batch)).await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(AppendError::Store(err))) => {
            if err.code() == ErrorCode::Internal {
                tracing::error!(error = %err, "cannot commit a hook");
            }
            Err(Refused::new("commit_failed", err.to_api_error()))
        }
        Ok(Err(AppendError::Stopped)) => Err(Refused::new(
            "shutting_down",
            ApiError::unavailable("the broker is shutting down; retry"),
        )),
        Err(_) => Err(Refused::new(
            "commit_timeout",
            ApiError::unavailable(format!(
                "the commit did not finish within {}; the hook may or may not be stored, and resending it is safe \
                 (duplicates are detected)",
                humanize(state.commit_timeout)
            )),
        )),
    }
}

fn humanize(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
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
        Ok(())
    } else {
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
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Refused> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let refused = |message: String| Refused::new("idempotency_key", ApiError::bad_request(message));
    let key = value
        .to_str()
        .map_err(|_| refused("Idempotency-Key must be visible ASCII".to_owned()))?
        .trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(refused(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"
        )));
    }
    Ok(Some(key.to_owned()))
}

async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<axum::body::Bytes, Refused> {
    let too_large = || {
        Refused::new(
            "too_large",
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the body is larger than the {limit}-byte limit (--hook-body-limit)"),
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|err| {
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

/// Hook kinds are chosen by the sender; only GitLab's own become metric labels.
fn ignored_kind_label(kind: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "merge_request",
        "note",
        "issue",
        "pipeline",
        "build",
        "job",
        "deployment",
        "release",
        "wiki_page",
        "feature_flag",
        "emoji",
        "user_create",
        "user_destroy",
        "user_rename",
        "user_failed_login",
        "user_add_to_team",
        "user_remove_from_team",
        "user_update_for_team",
        "user_add_to_group",
        "user_remove_from_group",
        "user_update_for_group",
        "key_create",
        "key_destroy",
        "group_create",
        "group_destroy",
        "repository_update",
    ];
    KNOWN
        .iter()
        .find(|known| **known == kind)
        .copied()
        .unwrap_or("other")
}
