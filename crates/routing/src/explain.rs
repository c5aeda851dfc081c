//! Why an agent would or would not get a push, in terms people can act on.
//!
//! - [`check_subscription`]: can this subscription ever match? Its ref pattern must be able
//!   to match some valid ref, its path must name a project of the catalog (now or
//!   formerly), and the access rule must let the agent see that project. The broker states
//!   the result per subscription in the Welcome and after every change.
//! - [`entitlement`]: the access rule's branch for an agent and a project, on the routing
//!   state (for `fluxgate trace`: agents that were not entitled, with the rule).
//! - [`explain`]: would this agent get a push to this project (and ref), and why or why not
//!   (`fluxgate explain`).
//!
//! The same rule, resolution and matching as [`crate::SubscriptionIndex::route`], so the
//! answers cannot drift from what routing does.

use fluxgate_core::{
    AgentPolicy, FullPath, GitRef, ProjectRef, RefPattern, SubscriptionState, SubscriptionStatus,
};

use crate::access::{AccessDecision, decide};
use crate::catalog::ProjectView;
use crate::state::RoutingState;
use crate::subscription::Subscription;

/// Why no valid ref can match `pattern`, if none can; `None` if some ref can (or if that
/// cannot be told without enumerating: only certain answers are given).
///
/// Each wildcard is tried with a few stand-ins (`x`, `/x`, nothing, `x/x`) and each
/// `{a,b}` alternative in turn; the pattern can match if one of these is a valid full ref
/// (`git check-ref-format`, under `refs/` with two components after) that it matches. A
/// pattern with a character class or an escape is assumed to be able to match.
pub fn ref_pattern_problem(pattern: &RefPattern) -> Option<String> {
    let raw = pattern.as_str();
    if raw.contains(['[', '\\']) {
        return None;
    }
    let full = if raw.starts_with("refs/") {
        raw.to_owned()
    } else {
        format!("refs/{{heads,tags}}/{raw}")
    };
    let mut first_error = None;
    for expanded in expand_braces(&full) {
        for stand_in in ["x", "/x", "", "x/x"] {
            // `?` is exactly one character.
            let candidate = expanded.replace('*', stand_in).replace('?', "x");
            match GitRef::parse(&candidate) {
                Ok(git_ref) if pattern.matches(&git_ref) => return None,
                Ok(_) => {}
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
    }
    let reason = match first_error {
        Some(fluxgate_core::GitError::BadRef { reason, .. }) => reason.to_string(),
        Some(other) => other.to_string(),
        None => "no ref it names is one it matches".to_owned(),
    };
    Some(format!(
        "ref pattern {raw:?} matches no valid git ref: every ref it could match is refused \
         by git ({reason})"
    ))
}

/// Every alternative of the `{a,b,…}` groups of a glob (not nested; at most 64).
fn expand_braces(glob: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut rest = glob;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}').map(|i| open + i) else {
            break;
        };
        let prefix = &rest[..open];
        let options: Vec<&str> = rest[open + 1..close].split(',').collect();
        out = out
            .iter()
            .flat_map(|done| options.iter().map(move |o| format!("{done}{prefix}{o}")))
            .take(64)
            .collect();
        rest = &rest[close + 1..];
    }
    for done in &mut out {
        done.push_str(rest);
    }
    out
}

/// What [`check_subscription`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionCheck {
    pub state: SubscriptionState,
    /// The project the subscription's path names now, if the catalog knows the path.
    pub project: Option<ProjectView>,
    /// The access rule's branch for that project.
    pub access: Option<AccessDecision>,
    /// For people: what allows it, or what stops it and how to fix that.
    pub reason: String,
}

impl SubscriptionCheck {
    /// The status as the broker reports and stores it.
    pub fn to_status(&self, subscription: &Subscription) -> SubscriptionStatus {
        SubscriptionStatus {
            project: subscription.label.to_string(),
            ref_pattern: subscription
                .refs
                .as_ref()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            state: self.state,
            reason: self.reason.clone(),
            project_path: self.project.as_ref().map(|p| p.path.to_string()),
        }
    }
}

/// Can `subscription` of the agent with `policy` ever match a push, on `state`? The first
/// thing that stops it, in order: its ref pattern, its path, the access rule.
pub fn check_subscription(
    state: &RoutingState,
    policy: &AgentPolicy,
    subscription: &Subscription,
) -> SubscriptionCheck {
    let resolved = resolve(state, &subscription.project);
    let access = resolved.as_ref().map(|view| decide(policy, view));
    let (state, reason) =
        if let Some(problem) = subscription.refs.as_ref().and_then(ref_pattern_problem) {
            (SubscriptionState::UnmatchableRef, problem)
        } else {
            match (&resolved, &access) {
                (None, _) | (_, None) => (
                    SubscriptionState::NoSuchProject,
                    no_such_project(&subscription.project),
                ),
                (Some(view), Some(access)) => {
                    let named = naming(&subscription.project, view);
                    if access.allowed() {
                        (
                            SubscriptionState::Matchable,
                            format!("{named} may be seen: {access}"),
                        )
                    } else {
                        (
                            SubscriptionState::NotAllowed,
                            format!("{named} may not be seen: {access}"),
                        )
                    }
                }
            }
        };
    SubscriptionCheck {
        state,
        project: resolved,
        access,
        reason,
    }
}

/// The status of each subscription, in the order given.
pub fn subscription_statuses<'a>(
    state: &RoutingState,
    policy: &AgentPolicy,
    subscriptions: impl IntoIterator<Item = &'a Subscription>,
) -> Vec<SubscriptionStatus> {
    subscriptions
        .into_iter()
        .map(|s| check_subscription(state, policy, s).to_status(s))
        .collect()
}

/// The access rule's branch for the agent and an event's project, on `state` (the
/// catalog's view of the project: its current path and visibility).
pub fn entitlement(
    state: &RoutingState,
    policy: &AgentPolicy,
    project: &ProjectRef,
) -> AccessDecision {
    decide(policy, &state.catalog().view(project))
}

fn resolve(state: &RoutingState, path: &FullPath) -> Option<ProjectView> {
    let id = state.catalog().resolve(path)?;
    Some(state.catalog().view(&ProjectRef {
        id,
        path: path.clone(),
        visibility: None,
    }))
}

fn no_such_project(path: &FullPath) -> String {
    format!(
        "no project {path} is known to the broker: is the path mistyped? (the broker learns \
         projects from GitLab's system hooks and from pushes; one it has not heard of yet \
         becomes matchable when it does)"
    )
}

/// `team/app (project 7)`, or `team/old (now team/new, project 7)` after a rename.
fn naming(asked: &FullPath, view: &ProjectView) -> String {
    if *asked == view.path {
        format!("{} (project {})", view.path, view.id.get())
    } else {
        format!(
            "{asked} (a former path of {}, project {})",
            view.path,
            view.id.get()
        )
    }
}

/// How one of the agent's subscriptions stands toward the project asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionMatch {
    /// The project as the agent wrote it.
    pub label: String,
    /// Its ref pattern; `None`: every ref.
    pub ref_pattern: Option<String>,
    /// True if its path is a former path of the project (a rename).
    pub via_former_path: bool,
    pub refs: RefMatch,
}

/// Whether a subscription's ref pattern lets a push through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefMatch {
    /// No pattern: every ref.
    Every,
    /// The ref asked about matches the pattern.
    Matches,
    /// The ref asked about does not match the pattern.
    DoesNotMatch,
    /// No ref was asked about; the pattern can match some ref.
    Possible,
    /// No valid ref matches the pattern (why).
    Impossible(String),
}

impl RefMatch {
    pub fn lets_through(&self) -> bool {
        matches!(self, Self::Every | Self::Matches | Self::Possible)
    }
}

/// Would an agent get a push to `project` (at `git_ref`, or some ref), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The path asked about.
    pub asked: FullPath,
    /// The project it names now, if the catalog knows it.
    pub project: Option<ProjectView>,
    /// Every path that names the project (current and former), lowercased.
    pub names: Vec<String>,
    /// The access rule's branch; `None` when the project is unknown.
    pub access: Option<AccessDecision>,
    pub git_ref: Option<GitRef>,
    /// The agent's subscriptions whose path names the project.
    pub subscriptions: Vec<SubscriptionMatch>,
    /// How many subscriptions the agent has in all.
    pub subscription_count: usize,
    pub would_receive: bool,
    /// One sentence: the first reason it would not, or what lets it through.
    pub verdict: String,
}

/// Would the agent with `policy` and these subscriptions get a push to `asked` (at
/// `git_ref`, or if not given, at some ref)? Decided as [`crate::route_one`] does: the
/// access rule on the catalog's view of the project, then the subscriptions whose path
/// names the project now or formerly, then their ref patterns.
pub fn explain(
    state: &RoutingState,
    policy: &AgentPolicy,
    subscriptions: &[Subscription],
    asked: &FullPath,
    git_ref: Option<&GitRef>,
) -> Explanation {
    let project = resolve(state, asked);
    let names = project
        .as_ref()
        .map(|view| state.catalog().names_of(view.id).to_vec())
        .unwrap_or_default();
    let access = project.as_ref().map(|view| decide(policy, view));
    let matching: Vec<SubscriptionMatch> = match &project {
        None => Vec::new(),
        Some(view) => subscriptions
            .iter()
            .filter(|s| state.catalog().resolve(&s.project) == Some(view.id))
            .map(|s| SubscriptionMatch {
                label: s.label.to_string(),
                ref_pattern: s.refs.as_ref().map(|p| p.as_str().to_owned()),
                via_former_path: s.project != view.path,
                refs: ref_match(s.refs.as_ref(), git_ref),
            })
            .collect(),
    };
    let through = matching.iter().find(|m| m.refs.lets_through());
    let at = git_ref.map_or_else(|| "any ref".to_owned(), |r| r.to_string());
    let (would_receive, verdict) = match (&project, &access) {
        (Some(view), Some(access)) if !access.allowed() => (
            false,
            format!("no: {} may not be seen: {access}", view.path),
        ),
        (Some(view), Some(access)) => match through {
            Some(m) => (
                true,
                format!(
                    "yes: {} may be seen ({access}), and subscription {} matches {at}",
                    view.path,
                    describe(m)
                ),
            ),
            None if matching.is_empty() => (
                false,
                format!(
                    "no: {} may be seen ({access}), but none of the agent's {} subscriptions \
                     names it",
                    view.path,
                    subscriptions.len()
                ),
            ),
            None => (
                false,
                format!(
                    "no: {} may be seen ({access}), but the ref patterns of its subscriptions \
                     do not match {at}",
                    view.path
                ),
            ),
        },
        _ => (false, format!("no: {}", no_such_project(asked))),
    };
    Explanation {
        asked: asked.clone(),
        project,
        names,
        access,
        git_ref: git_ref.cloned(),
        subscriptions: matching,
        subscription_count: subscriptions.len(),
        would_receive,
        verdict,
    }
}

fn ref_match(pattern: Option<&RefPattern>, git_ref: Option<&GitRef>) -> RefMatch {
    let Some(pattern) = pattern else {
        return RefMatch::Every;
    };
    if let Some(problem) = ref_pattern_problem(pattern) {
        return RefMatch::Impossible(problem);
    }
    match git_ref {
        Some(git_ref) if pattern.matches(git_ref) => RefMatch::Matches,
        Some(_) => RefMatch::DoesNotMatch,
        None => RefMatch::Possible,
    }
}

fn describe(m: &SubscriptionMatch) -> String {
    match &m.ref_pattern {
        Some(pattern) => format!("{} (refs {pattern})", m.label),
        None => format!("{} (every ref)", m.label),
    }
}

#[cfg(test)]
mod tests {
    use fluxgate_core::{AgentId, AgentName, Grant, ProjectId, Visibility};

    use super::*;

    fn p(s: &str) -> FullPath {
        FullPath::parse(s).unwrap()
    }

    fn id(n: i64) -> ProjectId {
        ProjectId::new(n).unwrap()
    }

    fn policy(grants: Vec<Grant>, allow_internal: bool) -> AgentPolicy {
        AgentPolicy {
            id: AgentId(1),
            name: AgentName::parse("agent").unwrap(),
            config_project: p("ops/config"),
            grants,
            allow_internal,
            token_generation: 0,
        }
    }

    fn state() -> RoutingState {
        RoutingState::new(
            [
                (id(1), p("ops/config"), Some(Visibility::Private)),
                (id(2), p("oss/lib"), Some(Visibility::Public)),
                (id(3), p("corp/app"), Some(Visibility::Internal)),
                (id(4), p("team/app"), Some(Visibility::Private)),
                (id(5), p("team/renamed"), Some(Visibility::Private)),
            ],
            [(p("team/old"), id(5))],
            [policy(vec![], false)],
        )
    }

    fn sub(project: &str, refs: Option<&str>) -> Subscription {
        Subscription {
            project: p(project),
            refs: refs.map(|r| RefPattern::parse(r).unwrap()),
            label: project.into(),
        }
    }

    fn r(s: &str) -> GitRef {
        GitRef::parse(s).unwrap()
    }

    /// Each state, with the rule named in the reason.
    #[test]
    fn each_subscription_state_names_its_cause() {
        let state = state();
        let cases: Vec<(AgentPolicy, Subscription, SubscriptionState, &str)> = vec![
            (
                policy(vec![], false),
                sub("ops/config", None),
                SubscriptionState::Matchable,
                "the agent's configuration project",
            ),
            (
                policy(vec![], false),
                sub("oss/lib", Some("main")),
                SubscriptionState::Matchable,
                "a public project",
            ),
            (
                policy(vec![], false),
                sub("corp/app", None),
                SubscriptionState::NotAllowed,
                "does not allow internal projects",
            ),
            (
                policy(vec![], true),
                sub("corp/app", None),
                SubscriptionState::Matchable,
                "the agent allows internal projects",
            ),
            (
                policy(vec![], false),
                sub("team/app", None),
                SubscriptionState::NotAllowed,
                "a private project that is neither the agent's configuration project nor granted",
            ),
            (
                policy(vec![Grant::Project(p("team/app"))], false),
                sub("team/app", None),
                SubscriptionState::Matchable,
                "granted project team/app",
            ),
            (
                policy(vec![Grant::Group(p("team"))], false),
                sub("team/app", None),
                SubscriptionState::Matchable,
                "in granted group team",
            ),
            (
                policy(vec![], false),
                sub("team/ap", None),
                SubscriptionState::NoSuchProject,
                "no project team/ap is known to the broker",
            ),
            (
                policy(vec![Grant::Group(p("team"))], false),
                sub("team/old", None),
                SubscriptionState::Matchable,
                "team/old (a former path of team/renamed, project 5)",
            ),
            (
                policy(vec![], false),
                sub("oss/lib", Some("main.lock")),
                SubscriptionState::UnmatchableRef,
                "a component ends with `.lock`",
            ),
            (
                policy(vec![], false),
                sub("oss/lib", Some("refs/heads/")),
                SubscriptionState::UnmatchableRef,
                "empty component",
            ),
        ];
        for (policy, subscription, expected, reason) in cases {
            let check = check_subscription(&state, &policy, &subscription);
            assert_eq!(check.state, expected, "{subscription:?}: {}", check.reason);
            assert!(
                check.reason.contains(reason),
                "{subscription:?}: {:?} does not say {reason:?}",
                check.reason
            );
            let status = check.to_status(&subscription);
            assert_eq!(status.project, *subscription.label);
            assert_eq!(status.state, expected);
        }
    }

    #[test]
    fn a_ref_problem_is_reported_only_when_no_ref_can_match() {
        for matchable in [
            "main",
            "refs/heads/*",
            "refs/tags/v*",
            "refs/heads*",
            "release-?",
            "refs/{heads,tags}/main",
            "refs/heads/[ab]",
            "refs/merge-requests/*/head",
            "*",
        ] {
            let pattern = RefPattern::parse(matchable).unwrap();
            assert_eq!(ref_pattern_problem(&pattern), None, "{matchable}");
        }
        for unmatchable in [
            "main.lock",
            "refs/heads/",
            "refs/heads/*.lock",
            "refs/heads/a..b",
            "refs/heads/.hidden*",
            "refs/heads/x.",
            "refs/heads/a//b",
            "refs/main",
            "refs/{heads,tags}/*/",
        ] {
            let pattern = RefPattern::parse(unmatchable).unwrap();
            let problem = ref_pattern_problem(&pattern);
            assert!(problem.is_some(), "{unmatchable} was judged matchable");
            assert!(problem.unwrap().contains(unmatchable), "names the pattern");
        }
    }

    #[test]
    fn entitlement_follows_the_catalog_view() {
        let state = state();
        // The event's stale path and visibility do not count: the catalog's do.
        let event_project = ProjectRef {
            id: id(4),
            path: p("team/app"),
            visibility: Some(Visibility::Public),
        };
        assert_eq!(
            entitlement(&state, &policy(vec![], false), &event_project),
            AccessDecision::NotGranted(Visibility::Private)
        );
        assert_eq!(
            entitlement(
                &state,
                &policy(vec![Grant::Group(p("team"))], false),
                &event_project
            ),
            AccessDecision::GrantedGroup(p("team"))
        );
    }

    #[test]
    fn explain_allowed_through_a_renamed_path_and_a_ref_pattern() {
        let state = state();
        let policy = policy(vec![Grant::Project(p("team/renamed"))], false);
        let subscriptions = vec![sub("team/old", Some("main")), sub("oss/lib", None)];
        let yes = explain(
            &state,
            &policy,
            &subscriptions,
            &p("team/renamed"),
            Some(&r("refs/heads/main")),
        );
        assert!(yes.would_receive, "{}", yes.verdict);
        assert_eq!(
            yes.access,
            Some(AccessDecision::GrantedProject(p("team/renamed")))
        );
        assert_eq!(yes.subscriptions.len(), 1);
        assert!(yes.subscriptions[0].via_former_path);
        assert_eq!(yes.subscriptions[0].refs, RefMatch::Matches);
        assert_eq!(yes.names, ["team/old", "team/renamed"]);

        let other_ref = explain(
            &state,
            &policy,
            &subscriptions,
            &p("team/renamed"),
            Some(&r("refs/heads/dev")),
        );
        assert!(!other_ref.would_receive);
        assert_eq!(other_ref.subscriptions[0].refs, RefMatch::DoesNotMatch);
        assert!(other_ref.verdict.contains("do not match refs/heads/dev"));

        let any_ref = explain(&state, &policy, &subscriptions, &p("team/old"), None);
        assert!(any_ref.would_receive);
        assert_eq!(any_ref.subscriptions[0].refs, RefMatch::Possible);
    }

    #[test]
    fn explain_denied_names_the_first_reason() {
        let state = state();
        let none = policy(vec![], false);
        let subscriptions = vec![sub("team/app", None), sub("oss/lib", Some("main.lock"))];

        let not_allowed = explain(&state, &none, &subscriptions, &p("team/app"), None);
        assert!(!not_allowed.would_receive);
        assert_eq!(
            not_allowed.access,
            Some(AccessDecision::NotGranted(Visibility::Private))
        );
        assert!(not_allowed.verdict.contains("may not be seen"));

        let unknown = explain(&state, &none, &subscriptions, &p("team/nope"), None);
        assert!(!unknown.would_receive);
        assert_eq!(unknown.access, None);
        assert!(unknown.verdict.contains("no project team/nope is known"));

        let unsubscribed = explain(&state, &none, &subscriptions, &p("ops/config"), None);
        assert!(!unsubscribed.would_receive);
        assert!(
            unsubscribed
                .verdict
                .contains("none of the agent's 2 subscriptions names it")
        );

        let bad_ref = explain(&state, &none, &subscriptions, &p("oss/lib"), None);
        assert!(!bad_ref.would_receive);
        assert!(matches!(
            bad_ref.subscriptions[0].refs,
            RefMatch::Impossible(_)
        ));
    }
}
