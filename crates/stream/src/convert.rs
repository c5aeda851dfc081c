//! Conversions between `fluxgate.v1` messages and domain types, with validation.
//!
//! Everything an agent sends is checked here; errors say which field was wrong and why.

use fluxgate_core::{
    DeliveryDetail, DeliveryRecord, DeliveryStage, EventKind, FullPath, LogEntry, PushEvent,
    ReceiverAnswer, RefPattern, Seq, UnixMillis,
};
use fluxgate_proto::outbound::SharedEvent;
use fluxgate_proto::prost_types::Timestamp;
use fluxgate_proto::v1;
use fluxgate_routing::{AcceptedKinds, Subscription};
use tonic::Status;

/// Most subscriptions one stream may hold.
pub const MAX_SUBSCRIPTIONS: usize = 1024;
const MAX_LABEL: usize = 256;

/// A validated Hello.
#[derive(Debug, Clone)]
pub struct AgentHello {
    pub agent_version: String,
    pub cluster_name: Option<String>,
    pub subscriptions: Vec<Subscription>,
    pub resume_after: Option<Seq>,
    /// The event kinds it understands; unknown values in the Hello are ignored (a newer
    /// agent may list kinds this broker never sends).
    pub accepted_kinds: AcceptedKinds,
}

pub fn hello(message: v1::Hello) -> Result<AgentHello, Status> {
    let agent_version = bounded_text("hello.agent_version", message.agent_version)?;
    let cluster_name = bounded_text("hello.cluster_name", message.cluster_name)?;
    let subscriptions = subscriptions("hello.subscriptions", message.subscriptions)?;
    Ok(AgentHello {
        agent_version,
        cluster_name: (!cluster_name.is_empty()).then_some(cluster_name),
        subscriptions,
        resume_after: message.resume_after.map(Seq),
        accepted_kinds: AcceptedKinds::with(
            message
                .accepted_kinds
                .iter()
                .filter_map(|&kind| domain_kind(v1::EventKind::try_from(kind).ok()?)),
        ),
    })
}

fn domain_kind(kind: v1::EventKind) -> Option<EventKind> {
    match kind {
        v1::EventKind::Unspecified => None,
        v1::EventKind::Push => Some(EventKind::Push),
        v1::EventKind::TagPush => Some(EventKind::TagPush),
        v1::EventKind::Artifact => Some(EventKind::Artifact),
        v1::EventKind::ProjectPush => Some(EventKind::ProjectPush),
    }
}

fn wire_kind(kind: EventKind) -> v1::EventKind {
    match kind {
        EventKind::Push => v1::EventKind::Push,
        EventKind::TagPush => v1::EventKind::TagPush,
        EventKind::Artifact => v1::EventKind::Artifact,
        EventKind::ProjectPush => v1::EventKind::ProjectPush,
    }
}

/// A validated subscription change: (add, remove).
pub fn subscription_change(
    message: v1::SubscriptionChange,
) -> Result<(Vec<Subscription>, Vec<Subscription>), Status> {
    Ok((
        subscriptions("subscription_change.add", message.add)?,
        subscriptions("subscription_change.remove", message.remove)?,
    ))
}

fn bounded_text(field: &str, value: String) -> Result<String, Status> {
    if value.len() > MAX_LABEL || value.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "{field} must be at most {MAX_LABEL} bytes without control characters"
        )));
    }
    Ok(value)
}

fn subscriptions(field: &str, raw: Vec<v1::Subscription>) -> Result<Vec<Subscription>, Status> {
    if raw.len() > MAX_SUBSCRIPTIONS {
        return Err(Status::invalid_argument(format!(
            "{field} has {} entries; at most {MAX_SUBSCRIPTIONS} are allowed",
            raw.len()
        )));
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, subscription)| {
            let label: std::sync::Arc<str> = subscription.project.trim().into();
            let project = FullPath::parse(&label)
                .map_err(|e| Status::invalid_argument(format!("{field}[{i}].project: {e}")))?;
            let refs = match subscription.ref_pattern.trim() {
                "" => None,
                pattern => Some(RefPattern::parse(pattern).map_err(|e| {
                    Status::invalid_argument(format!("{field}[{i}].ref_pattern: {e}"))
                })?),
            };
            Ok(Subscription {
                project,
                refs,
                label,
            })
        })
        .collect()
}

/// The event's wire fields every stream shares (all but `matched_projects`), encoded once
/// per event (`fluxgate_proto::outbound`).
pub fn shared_event_fields(
    entry: &LogEntry,
    event: &PushEvent,
) -> fluxgate_proto::prost::bytes::Bytes {
    SharedEvent::encode_fields(&self::event(entry, event, Vec::new()))
}

pub fn event(entry: &LogEntry, event: &PushEvent, matched: Vec<String>) -> v1::Event {
    let received_ms = event.received_at.get();
    v1::Event {
        seq: entry.seq.get(),
        event_id: event.event_id.to_string(),
        project_id: event.project.id.get(),
        project_path: event.project.path.to_string(),
        r#ref: event
            .git_ref
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        before: sha_field(event, &event.before),
        after: sha_field(event, &event.after),
        kind: wire_kind(event.kind) as i32,
        received_at: Some(Timestamp {
            seconds: received_ms.div_euclid(1000),
            nanos: i32::try_from(received_ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
        }),
        matched_projects: matched,
        artifact: event.artifact.as_ref().map(|artifact| v1::Artifact {
            url: artifact.url.clone().unwrap_or_default(),
            tag: artifact.tag.clone().unwrap_or_default(),
            digest: artifact.digest.clone().unwrap_or_default(),
            pipeline_id: artifact.pipeline_id.clone(),
            job_id: artifact.job_id.clone(),
        }),
    }
}

/// A git push always has both shas (zero for a created or deleted ref); the newer kinds
/// leave an unknown one empty rather than claim a deletion.
fn sha_field(event: &PushEvent, sha: &fluxgate_core::Sha) -> String {
    if sha.is_zero() && !event.kind.is_git_push() {
        String::new()
    } else {
        sha.to_string()
    }
}

/// A validated ack.
#[derive(Debug, Clone)]
pub struct AckReport {
    pub seq: Seq,
    pub outcomes: Vec<v1::Outcome>,
    pub handling_ms: u64,
    /// Each receiver's answer, names and errors cut to their bounds, for the delivery
    /// record.
    pub receivers: Vec<ReceiverAnswer>,
}

/// Longest receiver error kept in a delivery record, in bytes.
const MAX_ANSWER_ERROR: usize = 512;

pub fn ack(message: v1::Ack) -> Result<AckReport, Status> {
    if message.seq == 0 {
        return Err(Status::invalid_argument("ack.seq must be positive"));
    }
    if message.outcomes.len() > MAX_SUBSCRIPTIONS {
        return Err(Status::invalid_argument(format!(
            "ack.outcomes has {} entries; at most {MAX_SUBSCRIPTIONS} are allowed",
            message.outcomes.len()
        )));
    }
    let outcomes: Vec<v1::Outcome> = message
        .outcomes
        .iter()
        .map(|o| v1::Outcome::try_from(o.outcome).unwrap_or(v1::Outcome::Unspecified))
        .collect();
    let receivers = message
        .outcomes
        .into_iter()
        .zip(&outcomes)
        .map(|(answer, outcome)| ReceiverAnswer {
            receiver: cut(answer.receiver, MAX_LABEL),
            outcome: crate::metric_names::outcome_label(*outcome).to_owned(),
            http_status: u16::try_from(answer.http_status).unwrap_or(0),
            attempts: answer.attempts,
            error: cut(answer.error, MAX_ANSWER_ERROR),
        })
        .collect();
    Ok(AckReport {
        seq: Seq(message.seq),
        outcomes,
        handling_ms: message.handling_ms,
        receivers,
    })
}

/// `text` cut to at most `max` bytes on a character boundary, control characters removed.
fn cut(mut text: String, max: usize) -> String {
    text.retain(|c| !c.is_control());
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// A validated sync report: one stage an agent saw Flux reach for an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStageReport {
    pub seq: Seq,
    pub stage: DeliveryStage,
    pub object: String,
    pub revision: String,
    pub message: String,
    pub observed_at: Option<UnixMillis>,
    /// The event's `received_at` as the agent echoed it (broker clock).
    pub event_received_at: Option<UnixMillis>,
}

/// Validates a sync report for an event at or below `head` (the broker's log head).
pub fn sync_report(message: v1::SyncReport, head: Seq) -> Result<SyncStageReport, Status> {
    if message.seq == 0 || message.seq > head.get() {
        return Err(Status::invalid_argument(format!(
            "sync_report.seq {} is not an event of this log (head {head})",
            message.seq
        )));
    }
    let stage = match v1::SyncStage::try_from(message.stage) {
        Ok(v1::SyncStage::Fetched) => DeliveryStage::Fetched,
        Ok(v1::SyncStage::Applied) => DeliveryStage::Applied,
        Ok(v1::SyncStage::Failed) => DeliveryStage::Failed,
        Ok(v1::SyncStage::TimedOut) => DeliveryStage::TimedOut,
        Ok(v1::SyncStage::Unspecified) | Err(_) => {
            return Err(Status::invalid_argument(format!(
                "sync_report.stage {} is not a known stage",
                message.stage
            )));
        }
    };
    let record = DeliveryRecord {
        seq: Seq(message.seq),
        agent: fluxgate_core::AgentId(0),
        stage,
        object: message.object,
        at: UnixMillis(0),
        detail: DeliveryDetail {
            revision: message.revision,
            message: message.message,
            ..DeliveryDetail::default()
        },
    };
    record
        .validate()
        .map_err(|e| Status::invalid_argument(format!("sync_report.{e}")))?;
    Ok(SyncStageReport {
        seq: record.seq,
        stage,
        object: record.object,
        revision: record.detail.revision,
        message: record.detail.message,
        observed_at: message.observed_at.as_ref().map(timestamp_millis),
        event_received_at: message.event_received_at.as_ref().map(timestamp_millis),
    })
}

fn timestamp_millis(timestamp: &Timestamp) -> UnixMillis {
    UnixMillis(
        timestamp
            .seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(timestamp.nanos / 1_000_000)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(project: &str, ref_pattern: &str) -> v1::Subscription {
        v1::Subscription {
            project: project.to_owned(),
            ref_pattern: ref_pattern.to_owned(),
        }
    }

    #[test]
    fn hello_is_validated_field_by_field() {
        let ok = hello(v1::Hello {
            agent_version: "1.0".into(),
            cluster_name: String::new(),
            subscriptions: vec![sub(" Team/App.git ", ""), sub("team/app", "refs/tags/v*")],
            resume_after: Some(4),
            accepted_kinds: vec![v1::EventKind::ProjectPush as i32, 99],
        })
        .unwrap();
        assert!(ok.accepted_kinds.accepts(EventKind::ProjectPush));
        assert!(!ok.accepted_kinds.accepts(EventKind::Artifact));
        assert_eq!(ok.cluster_name, None);
        assert_eq!(&*ok.subscriptions[0].label, "Team/App.git");
        assert_eq!(ok.subscriptions[0].project.key(), "team/app");
        assert!(ok.subscriptions[0].refs.is_none());
        assert_eq!(ok.resume_after, Some(Seq(4)));

        let bad_path = hello(v1::Hello {
            subscriptions: vec![sub("team/app", ""), sub("a b", "")],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(bad_path.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            bad_path.message(),
            "hello.subscriptions[1].project: path \"a b\" has a forbidden character ' '"
        );
        let bad_ref = hello(v1::Hello {
            subscriptions: vec![sub("a/b", "refs/heads/[")],
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            bad_ref
                .message()
                .starts_with("hello.subscriptions[0].ref_pattern:"),
            "{}",
            bad_ref.message()
        );
        let too_many = hello(v1::Hello {
            subscriptions: vec![sub("a/b", ""); MAX_SUBSCRIPTIONS + 1],
            ..Default::default()
        })
        .unwrap_err();
        assert!(too_many.message().contains("at most 1024"));
    }

    #[test]
    fn acks_need_a_seq() {
        assert_eq!(
            ack(v1::Ack::default()).unwrap_err().message(),
            "ack.seq must be positive"
        );
    }
}
