//! Conversions between the `fluxgate.v1` wire types and the agent's own types.
//!
//! Nothing past this module and the stream code handles protobuf messages.

use std::collections::BTreeMap;

use fluxgate_core::receiver_health::{
    MAX_RECEIVER_ERROR_BYTES, MAX_RECEIVER_NAME_BYTES, MAX_REPORTED_RECEIVERS, truncate_text,
};
use fluxgate_core::{
    Artifact, ArtifactError, EventKind, FailingReceiver, FullPath, GitError, GitRef, PathError,
};
use fluxgate_proto::prost_types;
use fluxgate_proto::v1 as proto;

use crate::dispatch::AckReport;
use crate::event::TriggerEvent;
use crate::receiver::Receiver;
use crate::receiver::retry::DeliveryOutcome;

/// What the agent says about itself in every Hello.
#[derive(Debug, Clone)]
pub struct Identity {
    pub agent_version: String,
    pub cluster_name: String,
}

impl Identity {
    pub fn new(cluster_name: &str) -> Self {
        Self {
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            cluster_name: cluster_name.to_owned(),
        }
    }
}

/// The distinct (project, ref pattern) pairs of `receivers`, in a stable order.
pub fn subscriptions(receivers: &[Receiver]) -> Vec<proto::Subscription> {
    let mut distinct = BTreeMap::new();
    for receiver in receivers {
        let pattern = receiver
            .ref_pattern
            .as_ref()
            .map_or("", |p| p.as_str())
            .to_owned();
        for project in receiver.projects() {
            distinct
                .entry((project.key().to_owned(), pattern.clone()))
                .or_insert_with(|| proto::Subscription {
                    project: project.as_str().to_owned(),
                    ref_pattern: pattern.clone(),
                });
        }
    }
    distinct.into_values().collect()
}

pub fn hello(
    identity: &Identity,
    subscriptions: Vec<proto::Subscription>,
    resume_after: Option<u64>,
) -> proto::AgentMessage {
    proto::AgentMessage {
        message: Some(proto::agent_message::Message::Hello(proto::Hello {
            agent_version: identity.agent_version.clone(),
            cluster_name: identity.cluster_name.clone(),
            subscriptions,
            resume_after,
            accepted_kinds: vec![
                proto::EventKind::Artifact as i32,
                proto::EventKind::ProjectPush as i32,
            ],
        })),
    }
}

/// The change from the subscriptions `old` to `new`, or `None` if they are the same.
/// Both must come from [`subscriptions`] (distinct, sorted by project key then pattern).
pub fn subscription_change(
    old: &[proto::Subscription],
    new: &[proto::Subscription],
) -> Option<proto::AgentMessage> {
    let key = |s: &proto::Subscription| (s.project.to_ascii_lowercase(), s.ref_pattern.clone());
    let old_keys: BTreeMap<_, _> = old.iter().map(|s| (key(s), s)).collect();
    let new_keys: BTreeMap<_, _> = new.iter().map(|s| (key(s), s)).collect();
    let add: Vec<proto::Subscription> = new_keys
        .iter()
        .filter(|(k, _)| !old_keys.contains_key(*k))
        .map(|(_, s)| (*s).clone())
        .collect();
    let remove: Vec<proto::Subscription> = old_keys
        .iter()
        .filter(|(k, _)| !new_keys.contains_key(*k))
        .map(|(_, s)| (*s).clone())
        .collect();
    if add.is_empty() && remove.is_empty() {
        return None;
    }
    Some(proto::AgentMessage {
        message: Some(proto::agent_message::Message::SubscriptionChange(
            proto::SubscriptionChange { add, remove },
        )),
    })
}

pub fn ack(report: &AckReport) -> proto::AgentMessage {
    let outcomes = report
        .outcomes
        .iter()
        .map(|o| proto::ReceiverOutcome {
            receiver: o.receiver.clone(),
            outcome: outcome(o.report.outcome) as i32,
            http_status: u32::from(o.report.http_status),
            attempts: o.report.attempts,
            error: o.report.error.clone(),
        })
        .collect();
    proto::AgentMessage {
        message: Some(proto::agent_message::Message::Ack(proto::Ack {
            seq: report.ticket.seq,
            outcomes,
            handling_ms: u64::try_from(report.handling.as_millis()).unwrap_or(u64::MAX),
        })),
    }
}

fn outcome(outcome: DeliveryOutcome) -> proto::Outcome {
    match outcome {
        DeliveryOutcome::Delivered => proto::Outcome::Delivered,
        DeliveryOutcome::Coalesced => proto::Outcome::Coalesced,
        DeliveryOutcome::Rejected => proto::Outcome::Rejected,
    }
}

/// The failing receivers, within the bounds the broker accepts: at most
/// [`MAX_REPORTED_RECEIVERS`] (the first by name), names and errors cut to size.
pub fn receiver_health(failing: &[FailingReceiver]) -> proto::AgentMessage {
    let failing = failing
        .iter()
        .take(MAX_REPORTED_RECEIVERS)
        .map(|f| {
            let millis = f.failing_since.get();
            proto::ReceiverStatus {
                receiver: truncate_text(&f.receiver, MAX_RECEIVER_NAME_BYTES),
                failing_since: Some(prost_types::Timestamp {
                    seconds: millis.div_euclid(1000),
                    nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
                }),
                attempts: f.attempts,
                last_error: truncate_text(&f.last_error, MAX_RECEIVER_ERROR_BYTES),
                last_http_status: u32::from(f.last_http_status),
                oldest_unacked_seq: f.oldest_unacked_seq.map(|seq| seq.get()),
            }
        })
        .collect();
    proto::AgentMessage {
        message: Some(proto::agent_message::Message::ReceiverHealth(
            proto::ReceiverHealth { failing },
        )),
    }
}

/// Why a broker event cannot be used. It is acked without outcomes, so it does not
/// hold the cursor back forever.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("seq 0 is not a valid event position")]
    ZeroSeq,
    #[error("project_path: {0}")]
    ProjectPath(PathError),
    #[error("ref: {0}")]
    Ref(GitError),
    #[error("artifact: {0}")]
    Artifact(ArtifactError),
    #[error("an artifact event has no artifact")]
    MissingArtifact,
}

impl TryFrom<proto::Event> for TriggerEvent {
    type Error = EventError;

    fn try_from(event: proto::Event) -> Result<Self, Self::Error> {
        if event.seq == 0 {
            return Err(EventError::ZeroSeq);
        }
        let project_path = FullPath::parse(&event.project_path).map_err(EventError::ProjectPath)?;
        let wire_kind = proto::EventKind::try_from(event.kind);
        // Only GitLab's project push has no ref.
        let git_ref = if wire_kind == Ok(proto::EventKind::ProjectPush) && event.r#ref.is_empty() {
            None
        } else {
            Some(GitRef::parse(&event.r#ref).map_err(EventError::Ref)?)
        };
        let kind = match (wire_kind, &git_ref) {
            (Ok(proto::EventKind::Push), _) => EventKind::Push,
            (Ok(proto::EventKind::TagPush), _) => EventKind::TagPush,
            (Ok(proto::EventKind::Artifact), _) => EventKind::Artifact,
            (Ok(proto::EventKind::ProjectPush), _) => EventKind::ProjectPush,
            (Ok(proto::EventKind::Unspecified) | Err(_), Some(git_ref)) => {
                EventKind::for_ref(git_ref)
            }
            (Ok(proto::EventKind::Unspecified) | Err(_), None) => EventKind::Push,
        };
        let artifact = match (kind, event.artifact) {
            (EventKind::Artifact, None) => return Err(EventError::MissingArtifact),
            (EventKind::Artifact, Some(artifact)) => Some(
                Artifact::new(
                    non_empty(artifact.url),
                    non_empty(artifact.tag),
                    non_empty(artifact.digest),
                    artifact.pipeline_id,
                    artifact.job_id,
                )
                .map_err(EventError::Artifact)?,
            ),
            _ => None,
        };
        // A matched path the agent cannot parse cannot equal any receiver's project.
        let matched_projects = event
            .matched_projects
            .iter()
            .filter_map(|p| FullPath::parse(p).ok())
            .collect();
        Ok(Self {
            seq: event.seq,
            event_id: event.event_id,
            project_id: event.project_id,
            project_path,
            matched_projects,
            git_ref,
            before: event.before,
            after: event.after,
            kind,
            artifact,
            received_at: event.received_at.map(|at| {
                fluxgate_core::UnixMillis(at.seconds * 1000 + i64::from(at.nanos / 1_000_000))
            }),
        })
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fluxgate_core::RefPattern;

    use super::*;
    use crate::dispatch::ReceiverOutcome;
    use crate::flux_path::WebhookUrl;
    use crate::receiver::ReceiverKind;
    use crate::receiver::retry::DeliveryReport;
    use crate::receiver::worker::Ticket;
    use crate::secret::Secret;

    fn receiver(name: &str, project: &str, pattern: Option<&str>) -> Receiver {
        Receiver {
            name: name.to_owned(),
            project: FullPath::parse(project).unwrap(),
            also_projects: Vec::new(),
            ref_pattern: pattern.map(|p| RefPattern::parse(p).unwrap()),
            accepts: crate::receiver::Accepts::Pushes,
            kind: ReceiverKind::Generic,
            url: WebhookUrl::parse("http://flux/hook/x").unwrap(),
            token: Secret::new(""),
            route: crate::receiver::Route::Direct,
            synced_source: None,
        }
    }

    #[test]
    fn subscriptions_are_distinct_project_and_pattern_pairs() {
        let receivers = [
            receiver("a", "Group/App", Some("main")),
            receiver("b", "group/app.git", Some("main")),
            receiver("c", "group/app", None),
            receiver("d", "group/lib", Some("refs/tags/v*")),
        ];
        let pairs: Vec<(String, String)> = subscriptions(&receivers)
            .into_iter()
            .map(|s| (s.project, s.ref_pattern))
            .collect();
        assert_eq!(
            pairs,
            [
                ("group/app".to_owned(), String::new()),
                ("Group/App".to_owned(), "main".to_owned()),
                ("group/lib".to_owned(), "refs/tags/v*".to_owned()),
            ]
        );
    }

    #[test]
    fn a_receiver_subscribes_under_each_of_its_projects() {
        let mut oci = receiver("oci", "g/sub/app/manifests", None);
        oci.also_projects = ["g/sub", "g/sub/app"]
            .iter()
            .map(|p| FullPath::parse(p).unwrap())
            .collect();
        let pairs: Vec<(String, String)> = subscriptions(&[oci, receiver("b", "g/sub/app", None)])
            .into_iter()
            .map(|s| (s.project, s.ref_pattern))
            .collect();
        assert_eq!(
            pairs,
            [
                ("g/sub".to_owned(), String::new()),
                ("g/sub/app".to_owned(), String::new()),
                ("g/sub/app/manifests".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn a_subscription_change_adds_and_removes_only_the_difference() {
        let old = subscriptions(&[
            receiver("a", "group/app", Some("main")),
            receiver("b", "group/lib", None),
        ]);
        let new = subscriptions(&[
            receiver("a", "Group/App", Some("main")),
            receiver("c", "group/new", Some("refs/tags/v*")),
        ]);
        let Some(proto::agent_message::Message::SubscriptionChange(change)) =
            subscription_change(&old, &new).and_then(|m| m.message)
        else {
            panic!("expected a change");
        };
        let pairs = |list: &[proto::Subscription]| -> Vec<(String, String)> {
            list.iter()
                .map(|s| (s.project.clone(), s.ref_pattern.clone()))
                .collect()
        };
        assert_eq!(
            pairs(&change.add),
            [("group/new".to_owned(), "refs/tags/v*".to_owned())]
        );
        assert_eq!(
            pairs(&change.remove),
            [("group/lib".to_owned(), String::new())]
        );
        assert!(subscription_change(&new, &new).is_none());
    }

    #[test]
    fn health_reports_are_cut_to_the_bounds() {
        let failing = FailingReceiver {
            receiver: "app".to_owned(),
            failing_since: fluxgate_core::UnixMillis(1_500),
            attempts: 9,
            last_error: "x".repeat(MAX_RECEIVER_ERROR_BYTES * 2),
            last_http_status: 503,
            oldest_unacked_seq: Some(fluxgate_core::Seq(4)),
        };
        let many = vec![failing; MAX_REPORTED_RECEIVERS + 3];
        let Some(proto::agent_message::Message::ReceiverHealth(report)) =
            receiver_health(&many).message
        else {
            panic!("not a health report");
        };
        assert_eq!(report.failing.len(), MAX_REPORTED_RECEIVERS);
        let first = &report.failing[0];
        assert!(first.last_error.len() <= MAX_RECEIVER_ERROR_BYTES);
        assert_eq!(
            first.failing_since,
            Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 500_000_000
            })
        );
        assert_eq!(
            (
                first.attempts,
                first.last_http_status,
                first.oldest_unacked_seq
            ),
            (9, 503, Some(4))
        );
    }

    #[test]
    fn events_convert_and_bad_ones_are_refused() {
        let event = proto::Event {
            seq: 5,
            event_id: "e".to_owned(),
            project_id: 9,
            project_path: "grp/app".to_owned(),
            r#ref: "refs/tags/v1".to_owned(),
            before: "0".repeat(40),
            after: "1".repeat(40),
            kind: 0,
            received_at: None,
            matched_projects: vec!["old/app".to_owned(), "not a path".to_owned()],
            artifact: None,
        };
        let converted = TriggerEvent::try_from(event.clone()).expect("valid");
        assert_eq!(converted.kind, EventKind::TagPush, "kind from the ref");
        assert_eq!(converted.matched_projects.len(), 1);
        let bad_ref = proto::Event {
            r#ref: String::new(),
            ..event.clone()
        };
        assert!(matches!(
            TriggerEvent::try_from(bad_ref),
            Err(EventError::Ref(_))
        ));
        let zero = proto::Event { seq: 0, ..event };
        assert_eq!(TriggerEvent::try_from(zero), Err(EventError::ZeroSeq));
    }

    #[test]
    fn project_pushes_have_no_ref_and_artifacts_are_validated() {
        let project_push = proto::Event {
            seq: 6,
            project_path: "grp/app".to_owned(),
            kind: proto::EventKind::ProjectPush as i32,
            ..Default::default()
        };
        let converted = TriggerEvent::try_from(project_push.clone()).expect("valid");
        assert_eq!(converted.kind, EventKind::ProjectPush);
        assert_eq!(converted.git_ref, None);
        let pattern = receiver("r", "grp/app", Some("refs/heads/main"));
        assert!(
            pattern.matches(&converted),
            "a project push matches every ref pattern"
        );

        let artifact = proto::Event {
            kind: proto::EventKind::Artifact as i32,
            r#ref: "refs/heads/main".to_owned(),
            artifact: Some(proto::Artifact {
                url: "oci://registry.example.com/grp/app".to_owned(),
                tag: "v1.0.0".to_owned(),
                digest: String::new(),
                pipeline_id: "10".to_owned(),
                job_id: "11".to_owned(),
            }),
            ..project_push.clone()
        };
        let converted = TriggerEvent::try_from(artifact.clone()).expect("valid");
        let described = converted.artifact.expect("artifact");
        assert_eq!(described.tag.as_deref(), Some("v1.0.0"));
        assert_eq!(described.digest, None, "an empty field is absent");

        let without = proto::Event {
            artifact: None,
            ..artifact.clone()
        };
        assert_eq!(
            TriggerEvent::try_from(without),
            Err(EventError::MissingArtifact)
        );
        let mut bad_tag = artifact;
        bad_tag.artifact.as_mut().unwrap().tag = "a/b".to_owned();
        assert!(matches!(
            TriggerEvent::try_from(bad_tag),
            Err(EventError::Artifact(_))
        ));
        let push_without_ref = proto::Event {
            kind: proto::EventKind::Push as i32,
            ..project_push
        };
        assert!(matches!(
            TriggerEvent::try_from(push_without_ref),
            Err(EventError::Ref(_))
        ));
    }

    #[test]
    fn acks_carry_every_outcome() {
        let report = AckReport {
            ticket: Ticket {
                generation: 1,
                seq: 12,
            },
            outcomes: vec![ReceiverOutcome {
                receiver: "app".to_owned(),
                report: DeliveryReport {
                    outcome: DeliveryOutcome::Coalesced,
                    http_status: 200,
                    attempts: 1,
                    error: "coalesced into seq 13".to_owned(),
                    elapsed: Duration::from_millis(3),
                },
            }],
            handling: Duration::from_millis(1500),
        };
        let Some(proto::agent_message::Message::Ack(ack)) = ack(&report).message else {
            panic!("not an ack");
        };
        assert_eq!(ack.seq, 12);
        assert_eq!(ack.handling_ms, 1500);
        assert_eq!(ack.outcomes[0].outcome, proto::Outcome::Coalesced as i32);
        assert_eq!(ack.outcomes[0].http_status, 200);
    }
}
