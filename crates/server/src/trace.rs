//! `fluxgate trace` and `GET /api/v1/events/{seq}`: one push's whole path across the
//! clusters, from the log entry, the agents' entitlement and the delivery records.
//!
//! For every agent: whether it is entitled to the push (the access rule, judged on the
//! current routing state) and why; then each stage it reached with its time after the
//! push (`acked` with the Receivers' answers, `fetched`, `applied`, `failed`,
//! `timed_out`), or where it stands without one: `pending` (its cursor is before the push),
//! `passed` (its cursor is past it and nothing was recorded: no subscription matched, or
//! the record was lost), `sent` (a stream sent it and closed before the ack).

use std::fmt::Write as _;

use fluxgate_core::{
    ApiError, DeliveryDetail, DeliveryRecord, DeliveryStage, FullPath, LogEntry, PushEvent, Seq,
};
use fluxgate_routing::RoutingState;
use fluxgate_store::{AgentRecord, Store};
use serde::Serialize;

use crate::admin::rfc3339;

/// Pushes of one project searched for a sha, newest first.
const SHA_SEARCH_LIMIT: u32 = 1_000;

/// A push's path, as the API answers and the CLI prints it.
#[derive(Debug, Clone, Serialize)]
pub struct TraceView {
    pub seq: u64,
    pub event_id: String,
    pub kind: String,
    pub project: String,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    pub before: String,
    pub after: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact: Option<fluxgate_core::Artifact>,
    pub received_at: String,
    pub committed_at: String,
    pub agents: Vec<AgentTrace>,
}

/// One agent's part of a push's path.
#[derive(Debug, Clone, Serialize)]
pub struct AgentTrace {
    pub agent: String,
    pub entitled: bool,
    /// The access rule's branch that decided.
    pub rule: String,
    /// Where it got to: `applied`, `failed`, `timed_out`, `fetched`, `acked`, `sent`,
    /// `pending`, `passed` or `not_entitled`.
    pub state: String,
    pub cursor: u64,
    pub stages: Vec<StageView>,
}

/// One stage reached.
#[derive(Debug, Clone, Serialize)]
pub struct StageView {
    pub stage: DeliveryStage,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub object: String,
    pub at: String,
    /// Milliseconds from the push's receipt.
    pub after_push_ms: i64,
    #[serde(flatten)]
    pub detail: DeliveryDetail,
}

/// The push at `seq`, traced; `NotFound` if the log no longer holds it or it is not a push.
pub async fn trace(store: &dyn Store, seq: Seq) -> Result<TraceView, ApiError> {
    let entry = store
        .read_entry(seq)
        .await
        .map_err(|e| e.to_api_error())?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "seq {seq} is not in the log (retention may have removed it)"
            ))
        })?;
    let Some(event) = entry.as_push() else {
        return Err(ApiError::not_found(format!(
            "seq {seq} is a routing change, not a push"
        )));
    };
    let records = store
        .delivery_records(seq)
        .await
        .map_err(|e| e.to_api_error())?;
    let snapshot = store.snapshot().await.map_err(|e| e.to_api_error())?;
    let routing = crate::broker::routing_state(&snapshot);
    let agents = store.list_agents().await.map_err(|e| e.to_api_error())?;
    Ok(view(&entry, event, &routing, &agents, &records))
}

/// The newest push to `project` whose new sha (or the pipeline's) starts with `sha`.
pub async fn find_push(store: &dyn Store, project: &FullPath, sha: &str) -> Result<Seq, ApiError> {
    let sha = sha.to_ascii_lowercase();
    if sha.len() < 7 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(format!(
            "{sha:?} is not a commit sha (at least 7 hex digits)"
        )));
    }
    let snapshot = store.snapshot().await.map_err(|e| e.to_api_error())?;
    let routing = crate::broker::routing_state(&snapshot);
    let id = routing
        .catalog()
        .resolve(project)
        .ok_or_else(|| ApiError::not_found(format!("no project {project} in the catalog")))?;
    for seq in store
        .recent_pushes_of(id, SHA_SEARCH_LIMIT)
        .await
        .map_err(|e| e.to_api_error())?
    {
        let Some(entry) = store.read_entry(seq).await.map_err(|e| e.to_api_error())? else {
            continue;
        };
        if entry
            .as_push()
            .is_some_and(|event| event.after.to_string().starts_with(&sha))
        {
            return Ok(seq);
        }
    }
    Err(ApiError::not_found(format!(
        "no push of {project} to {sha} among its last {SHA_SEARCH_LIMIT} events"
    )))
}

fn view(
    entry: &LogEntry,
    event: &PushEvent,
    routing: &RoutingState,
    agents: &[AgentRecord],
    records: &[DeliveryRecord],
) -> TraceView {
    let project = routing.catalog().view(&event.project);
    let received = event.received_at;
    let mut traces: Vec<AgentTrace> = agents
        .iter()
        .map(|agent| {
            let (entitled, rule) = entitlement(&agent.policy, &project);
            let stages: Vec<StageView> = records
                .iter()
                .filter(|record| record.agent == agent.policy.id)
                .map(|record| StageView {
                    stage: record.stage,
                    object: record.object.clone(),
                    at: rfc3339(record.at),
                    after_push_ms: record.at.get() - received.get(),
                    detail: record.detail.clone(),
                })
                .collect();
            let state = if !entitled {
                "not_entitled".to_owned()
            } else {
                summary(&stages, agent.cursor, entry.seq).to_owned()
            };
            AgentTrace {
                agent: agent.policy.name.to_string(),
                entitled,
                rule,
                state,
                cursor: agent.cursor.get(),
                stages,
            }
        })
        .collect();
    traces.sort_by(|a, b| b.entitled.cmp(&a.entitled).then(a.agent.cmp(&b.agent)));
    TraceView {
        seq: entry.seq.get(),
        event_id: event.event_id.to_string(),
        kind: event.kind.as_str().to_owned(),
        project: project.path.to_string(),
        git_ref: event.git_ref.as_ref().map(|r| r.as_str().to_owned()),
        before: sha_text(&event.before),
        after: sha_text(&event.after),
        artifact: event.artifact.clone(),
        received_at: rfc3339(received),
        committed_at: rfc3339(entry.recorded_at),
        agents: traces,
    }
}

fn sha_text(sha: &fluxgate_core::Sha) -> String {
    if sha.is_zero() {
        String::new()
    } else {
        sha.to_string()
    }
}

/// Where an entitled agent got to.
fn summary(stages: &[StageView], cursor: Seq, seq: Seq) -> &'static str {
    let reached = |stage| stages.iter().any(|s| s.stage == stage);
    for stage in [
        DeliveryStage::Failed,
        DeliveryStage::TimedOut,
        DeliveryStage::Applied,
        DeliveryStage::Fetched,
        DeliveryStage::Acked,
    ] {
        if reached(stage) {
            return stage.as_str();
        }
    }
    if cursor >= seq {
        "passed"
    } else if reached(DeliveryStage::Sent) {
        "sent"
    } else {
        "pending"
    }
}

/// May the agent see the project, and by which branch of the access rule.
fn entitlement(
    policy: &fluxgate_core::AgentPolicy,
    project: &fluxgate_routing::catalog::ProjectView,
) -> (bool, String) {
    let decision = fluxgate_routing::access::decide(policy, project);
    (decision.allowed(), decision.to_string())
}

/// The trace as text: the push, then each agent with its stages.
pub fn render(trace: &TraceView) -> String {
    let mut out = String::new();
    let what = match (&trace.git_ref, trace.after.is_empty()) {
        (Some(git_ref), false) => format!("{git_ref} {}", short(&trace.after)),
        (Some(git_ref), true) => git_ref.clone(),
        (None, _) => "(every ref)".to_owned(),
    };
    let _ = writeln!(
        out,
        "seq {}  {}  {}  {what}\n  received {}  committed {}",
        trace.seq, trace.kind, trace.project, trace.received_at, trace.committed_at
    );
    if let Some(artifact) = &trace.artifact {
        let _ = writeln!(
            out,
            "  artifact {} tag {} digest {}",
            artifact.url.as_deref().unwrap_or("-"),
            artifact.tag.as_deref().unwrap_or("-"),
            artifact.digest.as_deref().unwrap_or("-"),
        );
    }
    for agent in &trace.agents {
        let _ = writeln!(out);
        if !agent.entitled {
            let _ = writeln!(out, "agent {}: not entitled: {}", agent.agent, agent.rule);
            continue;
        }
        let _ = writeln!(
            out,
            "agent {}: {} (entitled: {}; cursor {})",
            agent.agent, agent.state, agent.rule, agent.cursor
        );
        for stage in &agent.stages {
            let mut line = format!(
                "  {:>+9.3}s  {:<9}",
                stage.after_push_ms as f64 / 1000.0,
                stage.stage.as_str()
            );
            if !stage.object.is_empty() {
                let _ = write!(line, "  {}", stage.object);
            }
            if !stage.detail.revision.is_empty() {
                let _ = write!(line, "  {}", stage.detail.revision);
            }
            for receiver in &stage.detail.receivers {
                let _ = write!(
                    line,
                    "  {} {} {} ({} attempt{})",
                    receiver.receiver,
                    receiver.outcome,
                    receiver.http_status,
                    receiver.attempts,
                    if receiver.attempts == 1 { "" } else { "s" }
                );
            }
            if !stage.detail.message.is_empty() {
                let _ = write!(line, "  {}", stage.detail.message);
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        match agent.state.as_str() {
            "pending" => {
                let _ = writeln!(
                    out,
                    "  not delivered yet: the agent's cursor ({}) is before this push",
                    agent.cursor
                );
            }
            "passed" => {
                let _ = writeln!(
                    out,
                    "  nothing recorded: no subscription of the agent matched this push"
                );
            }
            "sent" => {
                let _ = writeln!(
                    out,
                    "  sent, but the stream closed before the agent acknowledged it"
                );
            }
            _ => {}
        }
    }
    out
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}
