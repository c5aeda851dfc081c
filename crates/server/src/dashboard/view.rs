//! What the dashboard shows, computed from the store alone (so every replica shows the
//! same): agents with their connections, cursor lag and last sync; the recent pushes with
//! a timeline per cluster (delivered → triggered → fetched → applied, failures with
//! Flux's message); latency percentiles per stage over those pushes.
//!
//! Pure: [`build`] takes what `live` read and returns the JSON the page renders.

use std::collections::{BTreeMap, HashMap};

use fluxgate_core::{DeliveryRecord, DeliveryStage, PushEvent, Seq};
use fluxgate_store::RecentPushes;
use serde::Serialize;

use crate::admin::{AgentView, rfc3339};

/// The stages of a timeline, in order.
pub const STAGES: [&str; 4] = ["delivered", "triggered", "fetched", "applied"];

/// Everything the page shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub head: u64,
    pub agents: Vec<AgentRow>,
    pub pushes: Vec<PushRow>,
    pub latency: Vec<StageLatency>,
    /// Some delivery records of the oldest pushes were left out (a bound on the read).
    pub records_truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentRow {
    pub name: String,
    pub connected: bool,
    /// Cluster names the agent's open streams gave in their Hello.
    pub clusters: Vec<String>,
    pub replicas: Vec<String>,
    /// The oldest open stream's start.
    pub connected_since: Option<String>,
    pub last_seen_at: Option<String>,
    pub cursor: u64,
    /// Log entries after the agent's cursor.
    pub lag: u64,
    /// The newest final stage (applied, failed, timed out) among the recent pushes.
    pub last_sync: Option<LastSync>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastSync {
    pub seq: u64,
    pub stage: DeliveryStage,
    pub object: String,
    pub at: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PushRow {
    pub seq: u64,
    pub kind: String,
    pub project: String,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// The new sha, short; empty when unknown.
    pub after: String,
    pub received_at: String,
    /// One timeline per agent that recorded anything for this push, by agent name.
    pub clusters: Vec<Timeline>,
}

/// One push at one agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    pub agent: String,
    /// In [`STAGES`] order.
    pub stages: Vec<StageCell>,
    /// What stopped it: a failed or timed-out workload, or Receivers that did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageCell {
    pub stage: &'static str,
    /// `done`, `failed` or `none` (not reached, or nothing to do: no Receiver matched).
    pub state: &'static str,
    /// Milliseconds after the push was received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_push_ms: Option<i64>,
    /// A short note: the Receivers' answers, the objects applied.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub stage: DeliveryStage,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub object: String,
    pub message: String,
}

/// Percentiles of one stage's time after the push, over the recent pushes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageLatency {
    pub stage: &'static str,
    pub samples: usize,
    pub p50_ms: Option<i64>,
    pub p90_ms: Option<i64>,
    pub p99_ms: Option<i64>,
}

/// The snapshot of `recent` pushes and `agents` at log head `head`.
pub fn build(head: Seq, agents: &[AgentView], recent: &RecentPushes) -> Snapshot {
    let names: HashMap<i64, &str> = agents.iter().map(|a| (a.id, a.name.as_str())).collect();
    let mut samples: BTreeMap<&'static str, Vec<i64>> = BTreeMap::new();
    let mut last_sync: HashMap<i64, &DeliveryRecord> = HashMap::new();
    let mut pushes = Vec::with_capacity(recent.pushes.len());
    for push in &recent.pushes {
        let Some(event) = push.entry.as_push() else {
            continue;
        };
        let mut by_agent: BTreeMap<&str, Vec<&DeliveryRecord>> = BTreeMap::new();
        for record in &push.records {
            if record.stage.is_final() {
                let newest = last_sync.entry(record.agent.0).or_insert(record);
                if record.at > newest.at {
                    *newest = record;
                }
            }
            // Records of a deleted agent have no name any more; they are left out.
            if let Some(name) = names.get(&record.agent.0) {
                by_agent.entry(name).or_default().push(record);
            }
        }
        let clusters = by_agent
            .into_iter()
            .map(|(agent, records)| {
                let timeline = timeline(agent, event, &records);
                for cell in &timeline.stages {
                    if let (Some(ms), "done") = (cell.after_push_ms, cell.state) {
                        samples.entry(cell.stage).or_default().push(ms);
                    }
                }
                timeline
            })
            .collect();
        pushes.push(PushRow {
            seq: push.entry.seq.get(),
            kind: event.kind.as_str().to_owned(),
            project: event.project.path.to_string(),
            git_ref: event.git_ref.as_ref().map(|r| r.as_str().to_owned()),
            after: if event.after.is_zero() {
                String::new()
            } else {
                event.after.to_string().chars().take(12).collect()
            },
            received_at: rfc3339(event.received_at),
            clusters,
        });
    }
    let agents = agents
        .iter()
        .map(|agent| agent_row(agent, head, last_sync.get(&agent.id).copied()))
        .collect();
    let latency = STAGES
        .iter()
        .map(|stage| latency(stage, samples.remove(stage).unwrap_or_default()))
        .collect();
    Snapshot {
        head: head.get(),
        agents,
        pushes,
        latency,
        records_truncated: recent.records_truncated,
    }
}

fn agent_row(agent: &AgentView, head: Seq, last: Option<&DeliveryRecord>) -> AgentRow {
    let mut clusters: Vec<String> = agent
        .connections
        .iter()
        .filter_map(|c| c.cluster_name.clone())
        .collect();
    clusters.sort();
    clusters.dedup();
    let mut replicas: Vec<String> = agent
        .connections
        .iter()
        .map(|c| c.replica.clone())
        .collect();
    replicas.sort();
    replicas.dedup();
    AgentRow {
        name: agent.name.clone(),
        connected: agent.connected,
        clusters,
        replicas,
        connected_since: agent
            .connections
            .iter()
            .map(|c| c.connected_since.clone())
            .min(),
        last_seen_at: agent.last_seen_at.clone(),
        cursor: agent.cursor,
        lag: head.get().saturating_sub(agent.cursor),
        last_sync: last.map(|record| LastSync {
            seq: record.seq.get(),
            stage: record.stage,
            object: record.object.clone(),
            at: rfc3339(record.at),
            message: record.detail.message.clone(),
        }),
    }
}

/// One agent's stages for one push, from its records (oldest first).
fn timeline(agent: &str, event: &PushEvent, records: &[&DeliveryRecord]) -> Timeline {
    let after = |at: fluxgate_core::UnixMillis| at.get() - event.received_at.get();
    let first = |stage: DeliveryStage| records.iter().find(|r| r.stage == stage).copied();
    let acked = first(DeliveryStage::Acked);
    let sent = first(DeliveryStage::Sent);
    let mut failure = None;

    let sent_at = acked
        .and_then(|r| r.detail.sent_at)
        .or_else(|| sent.and_then(|r| r.detail.sent_at));
    let delivered = match (sent_at, acked.or(sent)) {
        (Some(at), _) => cell("delivered", "done", Some(after(at)), String::new()),
        (None, Some(record)) => cell("delivered", "done", Some(after(record.at)), String::new()),
        (None, None) => cell("delivered", "none", None, String::new()),
    };

    let triggered = match acked {
        None if sent.is_some() => cell(
            "triggered",
            "none",
            None,
            "the stream closed before the agent acknowledged it".to_owned(),
        ),
        None => cell("triggered", "none", None, String::new()),
        Some(record) if record.detail.receivers.is_empty() => cell(
            "triggered",
            "none",
            Some(after(record.at)),
            "no Receiver matched".to_owned(),
        ),
        Some(record) => {
            let note = record
                .detail
                .receivers
                .iter()
                .map(|r| format!("{} {} {}", r.receiver, r.outcome, r.http_status))
                .collect::<Vec<_>>()
                .join(", ");
            let answered = record
                .detail
                .receivers
                .iter()
                .any(|r| matches!(r.outcome.as_str(), "delivered" | "coalesced"));
            if answered {
                cell("triggered", "done", Some(after(record.at)), note)
            } else {
                let errors = record
                    .detail
                    .receivers
                    .iter()
                    .map(|r| {
                        if r.error.is_empty() {
                            format!("{}: {} {}", r.receiver, r.outcome, r.http_status)
                        } else {
                            format!("{}: {}", r.receiver, r.error)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                failure = Some(Failure {
                    stage: DeliveryStage::Acked,
                    object: String::new(),
                    message: errors,
                });
                cell("triggered", "failed", Some(after(record.at)), note)
            }
        }
    };

    let fetched = match first(DeliveryStage::Fetched) {
        Some(record) => cell(
            "fetched",
            "done",
            Some(after(record.at)),
            record.detail.revision.clone(),
        ),
        None => cell("fetched", "none", None, String::new()),
    };

    let stopped = records
        .iter()
        .find(|r| matches!(r.stage, DeliveryStage::Failed | DeliveryStage::TimedOut));
    let applied_records: Vec<&&DeliveryRecord> = records
        .iter()
        .filter(|r| r.stage == DeliveryStage::Applied)
        .collect();
    let applied = if let Some(record) = stopped {
        failure = Some(Failure {
            stage: record.stage,
            object: record.object.clone(),
            message: if record.detail.message.is_empty() {
                record.stage.as_str().to_owned()
            } else {
                record.detail.message.clone()
            },
        });
        cell(
            "applied",
            "failed",
            Some(after(record.at)),
            record.object.clone(),
        )
    } else if let Some(last) = applied_records.iter().max_by_key(|r| r.at) {
        let objects = applied_records
            .iter()
            .map(|r| r.object.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        cell("applied", "done", Some(after(last.at)), objects)
    } else {
        cell("applied", "none", None, String::new())
    };

    Timeline {
        agent: agent.to_owned(),
        stages: vec![delivered, triggered, fetched, applied],
        failure,
    }
}

fn cell(
    stage: &'static str,
    state: &'static str,
    after_push_ms: Option<i64>,
    note: String,
) -> StageCell {
    StageCell {
        stage,
        state,
        after_push_ms,
        note,
    }
}

/// Nearest-rank percentiles.
fn latency(stage: &'static str, mut samples: Vec<i64>) -> StageLatency {
    samples.sort_unstable();
    let rank = |p: usize| -> Option<i64> {
        if samples.is_empty() {
            return None;
        }
        let index = (p * samples.len()).div_ceil(100).max(1) - 1;
        samples.get(index.min(samples.len() - 1)).copied()
    };
    StageLatency {
        stage,
        samples: samples.len(),
        p50_ms: rank(50),
        p90_ms: rank(90),
        p99_ms: rank(99),
    }
}

#[cfg(test)]
mod tests {
    use fluxgate_core::{
        AgentId, DeliveryDetail, EventKind, GitRef, LogEntry, LogRecord, ProjectId, ProjectRef,
        ReceiverAnswer, Sha, UnixMillis,
    };
    use fluxgate_store::PushWithRecords;

    use super::*;
    use crate::admin::{ConnectionView, GrantsView};

    const RECEIVED: i64 = 1_800_000_000_000;

    fn agent(id: i64, name: &str, cursor: u64, cluster: Option<&str>) -> AgentView {
        AgentView {
            name: name.to_owned(),
            id,
            config_project: "a/config".to_owned(),
            grants: GrantsView {
                projects: vec![],
                groups: vec![],
            },
            allow_internal: false,
            subscriptions: None,
            cursor,
            connected: cluster.is_some(),
            connections: cluster
                .map(|cluster| ConnectionView {
                    replica: "r1".to_owned(),
                    connected_since: "2027-01-15T08:00:00.000Z".to_owned(),
                    last_ack_at: None,
                    cluster_name: Some(cluster.to_owned()),
                    agent_version: "1".to_owned(),
                })
                .into_iter()
                .collect(),
            last_seen_at: None,
            created_at: String::new(),
            updated_at: String::new(),
            receiver_health: None,
        }
    }

    fn push(seq: u64, records: Vec<DeliveryRecord>) -> PushWithRecords {
        PushWithRecords {
            entry: LogEntry {
                seq: Seq(seq),
                recorded_at: UnixMillis(RECEIVED + 1),
                record: LogRecord::Push(PushEvent {
                    event_id: uuid::Uuid::nil(),
                    project: ProjectRef {
                        id: ProjectId::new(1).unwrap(),
                        path: fluxgate_core::FullPath::parse("a/b").unwrap(),
                        visibility: None,
                    },
                    git_ref: Some(GitRef::parse("refs/heads/main").unwrap()),
                    before: Sha::zero(),
                    after: Sha::parse(&"ab".repeat(20)).unwrap(),
                    kind: EventKind::Push,
                    artifact: None,
                    received_at: UnixMillis(RECEIVED),
                }),
            },
            records,
        }
    }

    fn record(seq: u64, agent: i64, stage: DeliveryStage, after: i64) -> DeliveryRecord {
        DeliveryRecord {
            seq: Seq(seq),
            agent: AgentId(agent),
            stage,
            object: if matches!(stage, DeliveryStage::Acked | DeliveryStage::Sent) {
                String::new()
            } else {
                "Kustomization/apps/podinfo".to_owned()
            },
            at: UnixMillis(RECEIVED + after),
            detail: DeliveryDetail::default(),
        }
    }

    fn acked(seq: u64, agent: i64, after: i64, outcome: &str, status: u16) -> DeliveryRecord {
        let mut record = record(seq, agent, DeliveryStage::Acked, after);
        record.detail.sent_at = Some(UnixMillis(RECEIVED + 5));
        record.detail.receivers = vec![ReceiverAnswer {
            receiver: "apps/podinfo".to_owned(),
            outcome: outcome.to_owned(),
            http_status: status,
            attempts: 1,
            error: if status == 0 {
                "connection refused".to_owned()
            } else {
                String::new()
            },
        }];
        record
    }

    #[test]
    fn a_push_applied_at_one_cluster_and_failed_at_another() {
        let mut failed = record(7, 2, DeliveryStage::Failed, 90);
        failed.detail.message = "kustomize build failed: missing resource".to_owned();
        let recent = RecentPushes {
            pushes: vec![push(
                7,
                vec![
                    acked(7, 1, 20, "delivered", 200),
                    acked(7, 2, 25, "delivered", 200),
                    record(7, 1, DeliveryStage::Fetched, 40),
                    record(7, 2, DeliveryStage::Fetched, 45),
                    record(7, 1, DeliveryStage::Applied, 80),
                    failed,
                    // A deleted agent's records are left out.
                    acked(7, 9, 30, "delivered", 200),
                ],
            )],
            records_truncated: false,
        };
        let agents = [
            agent(1, "east", 7, Some("prod-east")),
            agent(2, "west", 3, None),
        ];
        let snapshot = build(Seq(10), &agents, &recent);
        let push = &snapshot.pushes[0];
        assert_eq!((push.seq, push.after.as_str()), (7, "abababababab"));
        let east = &push.clusters[0];
        assert_eq!(east.agent, "east");
        let states: Vec<_> = east
            .stages
            .iter()
            .map(|c| (c.stage, c.state, c.after_push_ms))
            .collect();
        assert_eq!(
            states,
            vec![
                ("delivered", "done", Some(5)),
                ("triggered", "done", Some(20)),
                ("fetched", "done", Some(40)),
                ("applied", "done", Some(80)),
            ]
        );
        assert_eq!(east.failure, None);
        let west = &push.clusters[1];
        assert_eq!(west.stages[3].state, "failed");
        let failure = west.failure.as_ref().unwrap();
        assert_eq!(failure.stage, DeliveryStage::Failed);
        assert_eq!(failure.message, "kustomize build failed: missing resource");
        assert_eq!(push.clusters.len(), 2);

        assert_eq!(snapshot.agents[0].clusters, vec!["prod-east".to_owned()]);
        assert_eq!(snapshot.agents[0].lag, 3);
        assert_eq!(snapshot.agents[1].lag, 7);
        assert_eq!(
            snapshot.agents[0].last_sync.as_ref().unwrap().stage,
            DeliveryStage::Applied
        );
        assert_eq!(
            snapshot.agents[1].last_sync.as_ref().unwrap().message,
            "kustomize build failed: missing resource"
        );
        // Only stages reached count towards the percentiles.
        let applied = &snapshot.latency[3];
        assert_eq!((applied.stage, applied.samples), ("applied", 1));
        assert_eq!(snapshot.latency[2].samples, 2);
    }

    #[test]
    fn receivers_that_did_not_answer_are_the_failure() {
        let recent = RecentPushes {
            pushes: vec![push(3, vec![acked(3, 1, 20, "rejected", 0)])],
            records_truncated: false,
        };
        let snapshot = build(Seq(3), &[agent(1, "east", 3, None)], &recent);
        let timeline = &snapshot.pushes[0].clusters[0];
        assert_eq!(timeline.stages[1].state, "failed");
        assert_eq!(
            timeline.failure.as_ref().unwrap().message,
            "apps/podinfo: connection refused"
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<i64> = (1..=100).collect();
        let latency = latency("fetched", samples);
        assert_eq!(
            (latency.p50_ms, latency.p90_ms, latency.p99_ms),
            (Some(50), Some(90), Some(99))
        );
        let one = super::latency("fetched", vec![7]);
        assert_eq!((one.p50_ms, one.p99_ms), (Some(7), Some(7)));
        assert_eq!(super::latency("fetched", vec![]).p50_ms, None);
    }
}
