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
//!
//! Each hook runs in a `hook` span that every line it logs carries: the request id (set
//! by the server's request-id layer), then as they become known the idempotency key
//! (or verified `webhook-id`), the kind, and the seqs the commit assigned. Grepping the
//! request id or a seq finds the hook's lines.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use fluxgate_core::{ApiError, ErrorCode, HookBatch, NewRecord, Seq, UnixMillis};
use fluxgate_gitlab::ParsedHook;
use http::{HeaderMap, header};
use tracing::Instrument as _;
use tracing::field::{Empty, display};

use super::HookState;
use super::auth::{AuthRefusal, Authenticated, unix_seconds_now};
use super::response::{ErrorAnswer, HookAnswer, HookStatus};
use crate::hooks::record_refusal;
use crate::log_field::bounded;
use crate::metric_names as metric;

/// GitLab's header carrying a delivery id that is stable across retries and resends.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// The request id the server's request-id layer sets (or keeps, if the client sent one).
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Longest request id a hook's span repeats.
const MAX_REQUEST_ID_CHARS: usize = 128;
/// How many seqs a hook's span lists; `first_seq` and `last_seq` of the "hook committed"
/// line bound the rest.
const MAX_SPAN_SEQS: usize = 32;
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
    let span = hook_span(request.headers());
    receive_in_span(state, request).instrument(span).await
}

/// The span of one hook: the request id now, the rest recorded as it becomes known.
fn hook_span(headers: &HeaderMap) -> tracing::Span {
    let span = tracing::info_span!(
        "hook",
        request_id = Empty,
        idempotency_key = Empty,
        kind = Empty,
        seqs = Empty,
    );
    if let Some(request_id) = headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()) {
        span.record(
            "request_id",
            display(bounded(request_id).with_max_chars(MAX_REQUEST_ID_CHARS)),
        );
    }
    span
}

async fn receive_in_span(state: HookState, request: Request) -> Result<HookAnswer, ErrorAnswer> {
    let started = Instant::now();
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let result = handle(&state, request).await;
    let outcome = match &result {
        Ok(answer) => answer.status.as_str(),
        Err(refused) => refused.error.code.as_str(),
    };
    metrics::counter!(metric::HOOKS, metric::OUTCOME => outcome).increment(1);
    metrics::histogram!(metric::HOOK_SECONDS).record(started.elapsed().as_secs_f64());
    result.map_err(|refused| {
        log_refusal(&state, source, &refused);
        ErrorAnswer(refused.error)
    })
}

fn log_refusal(state: &HookState, source: Option<IpAddr>, refused: &Refused) {
    record_refusal(
        &state.refusal_log,
        metric::HOOK_REFUSALS,
        "hook",
        source,
        refused.reason,
        &refused.error,
    );
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
    let span = tracing::Span::current();
    if let Some(key) = &idempotency_key {
        span.record("idempotency_key", display(bounded(key)));
    }
    let received_at = UnixMillis::now();
    let records = match fluxgate_gitlab::parse_hook(&body, received_at) {
        Ok(ParsedHook::Records { kind, records }) => {
            span.record("kind", kind.as_str());
            records
        }
        Ok(ParsedHook::Ignored { kind }) => {
            span.record("kind", kind.as_str());
            metrics::counter!(metric::HOOKS_IGNORED, metric::KIND => kind.metric_label())
                .increment(1);
            tracing::debug!(%kind, "hook of an unused kind ignored");
            return Ok(HookAnswer {
                status: HookStatus::Ignored,
                seqs: Vec::new(),
                duplicates: 0,
                kind: Some(kind.to_string()),
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
            NewRecord::Catalog(_) => metric::CATALOG_RECORD,
        };
        metrics::counter!(metric::HOOK_RECORDS, metric::KIND => kind).increment(1);
    }
    let summary = Summary::of(&records);
    let batch = HookBatch {
        idempotency_key,
        records,
    };
    let outcome = commit(state, batch).await?;
    let duplicates = outcome.records.iter().filter(|r| r.duplicate).count();
    let seqs = outcome.records.iter().map(|r| r.seq).collect::<Vec<_>>();
    span.record("seqs", display(SpanSeqs(&seqs)));
    let status = if outcome.all_duplicates() {
        HookStatus::Duplicate
    } else {
        HookStatus::Accepted
    };
    tracing::info!(
        status = status.as_str(),
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
    crate::commit::commit(&state.appender, state.commit_timeout, batch, "a hook")
        .await
        .map_err(|failure| {
            Refused::new(
                failure.reason(),
                failure.to_api_error("the hook", "resending it is safe (duplicates are detected)"),
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

/// A hook's seqs for its span: comma-separated, the first [`MAX_SPAN_SEQS`] of them, then
/// how many there were in all.
struct SpanSeqs<'a>(&'a [Seq]);

impl std::fmt::Display for SpanSeqs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, seq) in self.0.iter().take(MAX_SPAN_SEQS).enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{seq}")?;
        }
        if self.0.len() > MAX_SPAN_SEQS {
            write!(f, ",…[{} seqs]", self.0.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(range: std::ops::RangeInclusive<u64>) -> Vec<Seq> {
        range.map(Seq).collect()
    }

    #[test]
    fn a_span_lists_a_few_seqs_and_counts_the_rest() {
        assert_eq!(SpanSeqs(&seqs(5..=7)).to_string(), "5,6,7");
        let many = SpanSeqs(&seqs(1..=40)).to_string();
        let listed = (1..=32)
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(many, format!("{listed},…[40 seqs]"));
    }
}
