//! The newer event kinds: a ref-less project push matches every ref pattern, and the
//! kinds beyond git pushes reach only subscribers that accept them — through the index
//! and through `route_one` (the backlog's path) alike.

use fluxgate_core::{
    AgentId, AgentName, AgentPolicy, Artifact, EventKind, FullPath, GitRef, ProjectId, ProjectRef,
    PushEvent, RefPattern, Sha, UnixMillis, Visibility,
};
use fluxgate_routing::{AcceptedKinds, RoutingState, Subscription, SubscriptionIndex, route_one};

const PROJECT: &str = "group/app";

fn state() -> RoutingState {
    let policy = AgentPolicy {
        id: AgentId(1),
        name: AgentName::parse("one").unwrap(),
        config_project: FullPath::parse("group/config").unwrap(),
        grants: Vec::new(),
        allow_internal: false,
        token_generation: 0,
    };
    RoutingState::new(
        [(
            ProjectId::new(7).unwrap(),
            FullPath::parse(PROJECT).unwrap(),
            Some(Visibility::Public),
        )],
        [],
        [policy],
    )
}

fn subscription(pattern: &str) -> Subscription {
    Subscription {
        project: FullPath::parse(PROJECT).unwrap(),
        refs: Some(RefPattern::parse(pattern).unwrap()),
        label: PROJECT.into(),
    }
}

fn event(kind: EventKind, git_ref: Option<&str>) -> PushEvent {
    PushEvent {
        event_id: uuid::Uuid::nil(),
        project: ProjectRef {
            id: ProjectId::new(7).unwrap(),
            path: FullPath::parse(PROJECT).unwrap(),
            visibility: Some(Visibility::Public),
        },
        git_ref: git_ref.map(|r| GitRef::parse(r).unwrap()),
        before: Sha::zero(),
        after: Sha::zero(),
        kind,
        artifact: (kind == EventKind::Artifact).then(|| {
            Artifact::new(None, Some("v1.0.0".into()), None, "1".into(), "2".into()).unwrap()
        }),
        received_at: UnixMillis(0),
    }
}

/// Subscriber 1 accepts every kind, subscriber 2 git pushes only; both want `main` only,
/// subscriber 3 (every kind) wants tags only.
fn index() -> SubscriptionIndex {
    let mut index = SubscriptionIndex::default();
    index.insert(
        1,
        AgentId(1),
        AcceptedKinds::ALL,
        vec![subscription("refs/heads/main")],
    );
    index.insert(
        2,
        AgentId(1),
        AcceptedKinds::GIT_PUSHES,
        vec![subscription("refs/heads/main")],
    );
    index.insert(
        3,
        AgentId(1),
        AcceptedKinds::ALL,
        vec![subscription("refs/tags/*")],
    );
    index
}

fn routed(index: &SubscriptionIndex, state: &RoutingState, event: &PushEvent) -> Vec<u64> {
    let mut ids: Vec<u64> = index
        .route(state, event)
        .into_iter()
        .map(|m| m.subscriber)
        .collect();
    ids.sort();
    for id in 1..=3 {
        let one = route_one(
            state,
            AgentId(1),
            index.accepts(id),
            index.subscriptions(id),
            event,
        );
        assert_eq!(
            one.is_some(),
            ids.contains(&id),
            "route_one disagrees for subscriber {id}"
        );
    }
    ids
}

#[test]
fn a_project_push_without_a_ref_matches_every_ref_pattern_of_accepting_subscribers() {
    let (state, index) = (state(), index());
    assert_eq!(
        routed(&index, &state, &event(EventKind::ProjectPush, None)),
        [1, 3]
    );
}

#[test]
fn an_artifact_matches_by_its_pipeline_ref_and_only_accepting_subscribers() {
    let (state, index) = (state(), index());
    let main = event(EventKind::Artifact, Some("refs/heads/main"));
    assert_eq!(routed(&index, &state, &main), [1]);
    let tag = event(EventKind::Artifact, Some("refs/tags/v1.0.0"));
    assert_eq!(routed(&index, &state, &tag), [3]);
}

#[test]
fn git_pushes_reach_every_subscriber_whatever_it_accepts() {
    let (state, index) = (state(), index());
    let push = event(EventKind::Push, Some("refs/heads/main"));
    assert_eq!(routed(&index, &state, &push), [1, 2]);
}

#[test]
fn accepted_kinds_are_git_pushes_plus_what_is_listed() {
    let accepts = AcceptedKinds::with([EventKind::Artifact]);
    assert!(accepts.accepts(EventKind::Push) && accepts.accepts(EventKind::TagPush));
    assert!(accepts.accepts(EventKind::Artifact));
    assert!(!accepts.accepts(EventKind::ProjectPush));
}
