//! `fluxgate explain --agent NAME --project PATH [--ref REF]`: would this agent get a push
//! to this project (and ref), and why or why not.
//!
//! Reads the store (the broker may be running): the routing state as every replica folds
//! it from the log, the agent's policy, and the subscriptions its latest stream sent (kept
//! with their status, see `stream::session::subscription_status`). The decision is
//! `routing::explain`, the same rule and matching the hub applies to pushes.

use fluxgate_core::{AgentName, FullPath, GitRef, SubscriptionReport};
use fluxgate_routing::Subscription;
use fluxgate_routing::explain::{Explanation, RefMatch, explain};
use fluxgate_store::Store;
use serde::Serialize;

/// What `fluxgate explain --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainView {
    pub agent: String,
    /// The path asked about.
    pub project: String,
    /// The ref asked about; `None`: any ref.
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub would_receive: bool,
    /// One sentence: what lets it through, or the first thing that stops it.
    pub verdict: String,
    /// The project the path names in the broker's catalog; `None` if it knows no such
    /// project.
    pub resolved: Option<ResolvedProject>,
    /// The access rule's branch for the agent and the project.
    pub access: Option<AccessView>,
    /// When the broker last stored the agent's subscriptions; `None` if it never connected.
    pub subscriptions_reported_at: Option<String>,
    /// How many subscriptions the agent has in all.
    pub subscription_count: usize,
    /// The agent's subscriptions whose path names the project (now or formerly).
    pub subscriptions: Vec<SubscriptionMatchView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResolvedProject {
    pub id: i64,
    /// Its current path.
    pub path: String,
    pub visibility: &'static str,
    /// Every path that names it, current and former (lowercased).
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AccessView {
    pub allowed: bool,
    /// The rule's branch, for people.
    pub rule: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionMatchView {
    /// The project as the agent wrote it.
    pub project: String,
    /// `None`: every ref.
    pub ref_pattern: Option<String>,
    /// True if the subscription's path is a former path of the project.
    pub via_former_path: bool,
    /// `every_ref`, `matches`, `does_not_match`, `possible` (no ref asked) or `impossible`.
    pub ref_match: &'static str,
    /// Why no ref can match, for `impossible`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ref_problem: Option<String>,
}

/// Why `fluxgate explain` could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("{0:?} is not an agent name: {1}")]
    AgentName(String, String),
    #[error("{0:?} is not a project path: {1}")]
    Project(String, String),
    #[error("{0:?} is not a full git ref (such as refs/heads/main): {1}")]
    Ref(String, String),
    #[error("no agent named {0}")]
    NoSuchAgent(String),
    #[error("cannot read the store: {0}")]
    Store(#[from] fluxgate_store::StoreError),
}

/// Works the answer out from the store.
pub async fn explain_with(
    store: &dyn Store,
    agent: &str,
    project: &str,
    git_ref: Option<&str>,
) -> Result<ExplainView, ExplainError> {
    let name = AgentName::parse(agent)
        .map_err(|e| ExplainError::AgentName(agent.to_owned(), e.to_string()))?;
    let asked = FullPath::parse(project)
        .map_err(|e| ExplainError::Project(project.to_owned(), e.to_string()))?;
    let git_ref = git_ref
        .map(|raw| GitRef::parse(raw).map_err(|e| ExplainError::Ref(raw.to_owned(), e.to_string())))
        .transpose()?;
    let record = store
        .agent(&name)
        .await?
        .ok_or_else(|| ExplainError::NoSuchAgent(agent.to_owned()))?;
    let snapshot = store.snapshot().await?;
    let routing = crate::broker::routing_state(&snapshot);
    let policy = routing
        .policy(record.policy.id)
        .cloned()
        .unwrap_or(record.policy);
    let subscriptions = stored_subscriptions(record.subscription_status.as_ref());
    let explanation = explain(&routing, &policy, &subscriptions, &asked, git_ref.as_ref());
    Ok(view(
        agent,
        &explanation,
        record.subscription_status.as_ref(),
    ))
}

/// The subscriptions of the agent's latest report, as the broker would parse them (any
/// the broker refused are not there: it never stored them).
fn stored_subscriptions(report: Option<&SubscriptionReport>) -> Vec<Subscription> {
    report
        .map(|report| {
            report
                .subscriptions
                .iter()
                .filter_map(|s| {
                    let project = FullPath::parse(&s.project).ok()?;
                    let refs = match s.ref_pattern.as_str() {
                        "" => None,
                        pattern => Some(fluxgate_core::RefPattern::parse(pattern).ok()?),
                    };
                    Some(Subscription {
                        project,
                        refs,
                        label: s.project.as_str().into(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn view(agent: &str, e: &Explanation, report: Option<&SubscriptionReport>) -> ExplainView {
    ExplainView {
        agent: agent.to_owned(),
        project: e.asked.to_string(),
        git_ref: e.git_ref.as_ref().map(ToString::to_string),
        would_receive: e.would_receive,
        verdict: e.verdict.clone(),
        resolved: e.project.as_ref().map(|p| ResolvedProject {
            id: p.id.get(),
            path: p.path.to_string(),
            visibility: p.visibility.as_str(),
            names: e.names.clone(),
        }),
        access: e.access.as_ref().map(|a| AccessView {
            allowed: a.allowed(),
            rule: a.to_string(),
        }),
        subscriptions_reported_at: report.map(|r| crate::admin::rfc3339(r.reported_at)),
        subscription_count: e.subscription_count,
        subscriptions: e
            .subscriptions
            .iter()
            .map(|m| SubscriptionMatchView {
                project: m.label.to_string(),
                ref_pattern: m.ref_pattern.clone(),
                via_former_path: m.via_former_path,
                ref_match: match m.refs {
                    RefMatch::Every => "every_ref",
                    RefMatch::Matches => "matches",
                    RefMatch::DoesNotMatch => "does_not_match",
                    RefMatch::Possible => "possible",
                    RefMatch::Impossible(_) => "impossible",
                },
                ref_problem: match &m.refs {
                    RefMatch::Impossible(problem) => Some(problem.clone()),
                    _ => None,
                },
            })
            .collect(),
    }
}

/// The text `fluxgate explain` prints.
pub fn render(view: &ExplainView) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let at = view.git_ref.as_deref().unwrap_or("any ref");
    let _ = writeln!(
        out,
        "would agent {} get a push to {} ({at})? {}",
        view.agent,
        view.project,
        if view.would_receive { "yes" } else { "no" }
    );
    let because = view
        .verdict
        .strip_prefix("yes: ")
        .or_else(|| view.verdict.strip_prefix("no: "))
        .unwrap_or(&view.verdict);
    let _ = writeln!(out, "  {because}");
    match &view.resolved {
        Some(project) => {
            let _ = writeln!(
                out,
                "project:       {} (id {}, {}); named by {}",
                project.path,
                project.id,
                project.visibility,
                project.names.join(", ")
            );
        }
        None => {
            let _ = writeln!(out, "project:       not in the broker's catalog");
        }
    }
    if let Some(access) = &view.access {
        let _ = writeln!(
            out,
            "access rule:   {}: {}",
            if access.allowed { "allowed" } else { "refused" },
            access.rule
        );
    }
    match &view.subscriptions_reported_at {
        None => {
            let _ = writeln!(
                out,
                "subscriptions: none known (the agent has not connected to a broker of this version)"
            );
        }
        Some(at) => {
            let _ = writeln!(
                out,
                "subscriptions: {} naming the project, of {} (as of {at})",
                view.subscriptions.len(),
                view.subscription_count
            );
        }
    }
    for s in &view.subscriptions {
        let refs = s
            .ref_pattern
            .as_deref()
            .map_or_else(|| "every ref".to_owned(), |p| format!("refs {p}"));
        let former = if s.via_former_path {
            " (a former path)"
        } else {
            ""
        };
        let verdict = match (s.ref_match, &s.ref_problem) {
            (_, Some(problem)) => format!("can never match: {problem}"),
            ("every_ref", _) => "any ref passes".to_owned(),
            ("matches", _) => format!("matches {at}"),
            ("does_not_match", _) => format!("does not match {at}"),
            _ => "can match some ref".to_owned(),
        };
        let _ = writeln!(out, "  {}{former} ({refs}): {verdict}", s.project);
    }
    out
}
