//! `POST /hooks/gitlab`: authenticate, read, parse, commit, answer.
//!
//! The answer is sent only after the hook's events are committed, and names their seqs.
//! Order of checks, cheapest first: token (401), content type (415), idempotency key (400),
//! body size (413), payload (400), commit (503 if the database is unavailable).

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use fluxgate_core::{ApiError, ErrorCode, UnixMillis};
use fluxgate_store::{AppendError, HookBatch, NewRecord};
use http::{HeaderMap, header};

use super::HookState;
use super::response::{ErrorAnswer, HookAnswer};
use crate::gitlab::{self, ParsedHook};

/// GitLab's header carrying a delivery id that is stable across retries and resends.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

pub async fn receive_hook(
    State(state): State<HookState>,
    request: Request,
) -> Result<HookAnswer, ErrorAnswer> {
    let started = Instant::now();
    let result = handle(&state, request).await;
    let outcome = match &result {
        Ok(answer) => answer.status,
        Err(ErrorAnswer(err)) => err.code.as_str(),
    };
    metrics::counter!("fluxgate_hooks_total", "outcome" => outcome).increment(1);
    metrics::histogram!("fluxgate_hook_seconds").record(started.elapsed().as_secs_f64());
    if let Err(ErrorAnswer(err)) = &result {
        tracing::info!(code = %err.code, message = %err.message, "hook refused");
    }
    result
}

async fn handle(state: &HookState, request: Request) -> Result<HookAnswer, ErrorAnswer> {
    let (parts, body) = request.into_parts();
    state.secrets.check(&parts.headers)?;
    check_content_type(&parts.headers)?;
    let idempotency_key = idempotency_key(&parts.headers)?;
    let body = read_body(body, &parts.headers, state.body_limit).await?;
    let received_at = UnixMillis::now();
    let records = match gitlab::parse_hook(&body, received_at) {
        Ok(ParsedHook::Records(records)) => records,
        Ok(ParsedHook::Ignored { kind }) => {
            metrics::counter!("fluxgate_hooks_ignored_total", "kind" => ignored_kind_label(&kind))
                .increment(1);
            tracing::debug!(kind = %kind, "hook of an unused kind ignored");
            return Ok(HookAnswer {
                status: "ignored",
                seqs: Vec::new(),
                duplicates: 0,
                kind: Some(kind),
            });
        }
        Err(err) => return Err(ApiError::bad_request(err.message).into()),
    };
    for record in &records {
        let kind = match record {
            NewRecord::Push(event) => event.kind.as_str(),
            NewRecord::Catalog(_) => "catalog",
        };
        metrics::counter!("fluxgate_hook_records_total", "kind" => kind).increment(1);
    }
    let summary = summarize(&records);
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
    tracing::info!(status, seqs = ?seqs, duplicates, events = %summary, "hook committed");
    Ok(HookAnswer {
        status,
        seqs,
        duplicates,
        kind: None,
    })
}

async fn commit(
    state: &HookState,
    batch: HookBatch,
) -> Result<fluxgate_store::HookOutcome, ErrorAnswer> {
    match tokio::time::timeout(state.commit_timeout, state.appender.append(batch)).await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(AppendError::Store(err))) => {
            if err.code() == ErrorCode::Internal {
                tracing::error!(error = %err, "cannot commit a hook");
            }
            Err(err.to_api_error().into())
        }
        Ok(Err(AppendError::Stopped)) => Err(ApiError::unavailable("the broker is shutting down; retry").into()),
        Err(_) => Err(ApiError::unavailable(format!(
            "the commit did not finish within {}; the hook may or may not be stored, and resending it is safe \
             (duplicates are detected)",
            humanize(state.commit_timeout)
        ))
        .into()),
    }
}

fn humanize(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ErrorAnswer> {
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
        Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("Content-Type must be application/json, not {essence:?}"),
        )
        .into())
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ErrorAnswer> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?
        .trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(ApiError::bad_request(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"
        ))
        .into());
    }
    Ok(Some(key.to_owned()))
}

async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<axum::body::Bytes, ErrorAnswer> {
    let too_large = || {
        ErrorAnswer(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than the {limit}-byte limit (--hook-body-limit)"),
        ))
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
            ErrorAnswer(ApiError::bad_request(format!(
                "cannot read the body: {err}"
            )))
        }
    })
}

/// A short description of a hook's records for the log line.
fn summarize(records: &[NewRecord]) -> String {
    records
        .iter()
        .map(|record| match record {
            NewRecord::Push(event) => format!(
                "{} {} {}",
                event.kind.as_str(),
                event.project.path,
                event.git_ref
            ),
            NewRecord::Catalog(change) => format!("{change:?}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
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
