//! Property: no event ever reaches an agent that is not allowed to see it, and every
//! allowed, subscribed agent gets it.
//!
//! Random catalogs (paths drawn from a small alphabet so that prefixes, case variants and
//! nested groups collide often), random agents with random grants, random subscriptions
//! (many to projects the agent may not see) and random events, some after projects moved.
//! The index's decisions are checked against an independent oracle that implements the
//! access rule on plain lower-cased strings.

use std::collections::BTreeSet;

use fluxgate_core::{
    AgentId, AgentName, AgentPolicy, EventKind, FullPath, GitRef, Grant, ProjectId, ProjectRef,
    PushEvent, Sha, StateCause, StateChange, StateEffect, UnixMillis, Visibility,
};
use fluxgate_routing::{AcceptedKinds, RoutingState, Subscription, SubscriptionIndex, route_one};
use proptest::prelude::*;

const SEGMENTS: &[&str] = &["a", "A", "b", "ab", "a_b"];

fn path_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(SEGMENTS), 1..4)
        .prop_map(|segments| segments.join("/"))
}

fn visibility_strategy() -> impl Strategy<Value = Option<Visibility>> {
    prop::option::of(prop::sample::select(vec![
        Visibility::Private,
        Visibility::Internal,
        Visibility::Public,
    ]))
}

#[derive(Debug, Clone)]
struct AgentSpec {
    config: String,
    project_grants: Vec<String>,
    group_grants: Vec<String>,
    allow_internal: bool,
    subscriptions: Vec<String>,
}

fn agent_strategy() -> impl Strategy<Value = AgentSpec> {
    (
        path_strategy(),
        prop::collection::vec(path_strategy(), 0..3),
        prop::collection::vec(path_strategy(), 0..2),
        any::<bool>(),
        prop::collection::vec(path_strategy(), 1..5),
    )
        .prop_map(
            |(config, project_grants, group_grants, allow_internal, subscriptions)| AgentSpec {
                config,
                project_grants,
                group_grants,
                allow_internal,
                subscriptions,
            },
        )
}

#[derive(Debug, Clone)]
struct World {
    projects: Vec<(String, Option<Visibility>)>,
    agents: Vec<AgentSpec>,
    /// (project index, new path) moves applied before the events.
    moves: Vec<(usize, String)>,
    events: Vec<usize>,
}

fn world_strategy() -> impl Strategy<Value = World> {
    prop::collection::vec((path_strategy(), visibility_strategy()), 1..8).prop_flat_map(
        |projects| {
            let n = projects.len();
            (
                Just(projects),
                prop::collection::vec(agent_strategy(), 1..6),
                prop::collection::vec((0..n, path_strategy()), 0..3),
                prop::collection::vec(0..n, 1..10),
            )
                .prop_map(|(projects, agents, moves, events)| World {
                    projects,
                    agents,
                    moves,
                    events,
                })
        },
    )
}

fn fp(s: &str) -> FullPath {
    FullPath::parse(s).unwrap()
}

/// The access rule on plain strings, written independently of the crate.
fn oracle_allows(agent: &AgentSpec, path: &str, visibility: Option<Visibility>) -> bool {
    let path = path.to_lowercase();
    let within = |group: &str| {
        let group = group.to_lowercase();
        path == group || path.starts_with(&format!("{group}/"))
    };
    agent.config.to_lowercase() == path
        || visibility == Some(Visibility::Public)
        || (visibility == Some(Visibility::Internal) && agent.allow_internal)
        || agent
            .project_grants
            .iter()
            .any(|g| g.to_lowercase() == path)
        || agent.group_grants.iter().any(|g| within(g))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn events_reach_exactly_the_allowed_subscribers(world in world_strategy()) {
        // Projects get ids 1..; a path taken by two generated projects belongs to the later.
        let mut state = RoutingState::default();
        let mut current: Vec<(String, Option<Visibility>)> = world.projects.clone();
        let mut effects: Vec<StateEffect> = world
            .projects
            .iter()
            .enumerate()
            .map(|(i, (path, visibility))| StateEffect::Project {
                id: ProjectId::new(i as i64 + 1).unwrap(),
                path: fp(path),
                visibility: *visibility,
            })
            .collect();
        let policies: Vec<AgentPolicy> = world
            .agents
            .iter()
            .enumerate()
            .map(|(i, spec)| AgentPolicy {
                id: AgentId(i as i64 + 1),
                name: AgentName::parse(&format!("agent-{i}")).unwrap(),
                config_project: fp(&spec.config),
                grants: spec
                    .project_grants
                    .iter()
                    .map(|g| Grant::Project(fp(g)))
                    .chain(spec.group_grants.iter().map(|g| Grant::Group(fp(g))))
                    .collect(),
                allow_internal: spec.allow_internal,
                token_generation: 0,
            })
            .collect();
        effects.extend(policies.iter().cloned().map(|policy| StateEffect::Agent { policy }));
        for (index, new_path) in &world.moves {
            effects.push(StateEffect::Project {
                id: ProjectId::new(*index as i64 + 1).unwrap(),
                path: fp(new_path),
                visibility: current[*index].1,
            });
            current[*index].0 = new_path.clone();
        }
        state.apply(&StateChange {
            cause: StateCause::Observed { project: ProjectId::new(1).unwrap() },
            effects,
        });

        let mut index = SubscriptionIndex::default();
        for (i, spec) in world.agents.iter().enumerate() {
            let subscriptions = spec
                .subscriptions
                .iter()
                .map(|s| Subscription { project: fp(s), refs: None, label: s.as_str().into() })
                .collect();
            index.insert(i as u64, AgentId(i as i64 + 1), AcceptedKinds::ALL, subscriptions);
        }

        for &project in &world.events {
            let (path, visibility) = &current[project];
            let id = ProjectId::new(project as i64 + 1).unwrap();
            let event = PushEvent {
                event_id: uuid::Uuid::nil(),
                project: ProjectRef { id, path: fp(path), visibility: *visibility },
                git_ref: Some(GitRef::parse("refs/heads/main").unwrap()),
                before: Sha::zero(),
                after: Sha::parse(&"1".repeat(40)).unwrap(),
                kind: EventKind::Push,
                artifact: None,
                received_at: UnixMillis(0),
            };
            let routed: BTreeSet<u64> = index.route(&state, &event).into_iter().map(|m| m.subscriber).collect();

            for (i, spec) in world.agents.iter().enumerate() {
                let allowed = oracle_allows(spec, path, *visibility);
                // Subscribed: a subscription path that names this project in the catalog.
                let subscribed = spec.subscriptions.iter().any(|s| {
                    state.catalog().resolve(&fp(s)) == Some(id) || s.to_lowercase() == path.to_lowercase()
                });
                let got = routed.contains(&(i as u64));
                prop_assert!(!got || allowed, "agent {i} got {path} without access: {spec:?}");
                prop_assert_eq!(got, allowed && subscribed, "agent {} project {}", i, path);
                let one = route_one(&state, AgentId(i as i64 + 1), AcceptedKinds::ALL, index.subscriptions(i as u64), &event).is_some();
                prop_assert_eq!(one, got, "route_one disagrees with the index for agent {}", i);
            }
        }
    }
}
