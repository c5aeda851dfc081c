//! The access rule: may an agent receive events for a project?
//!
//! An agent may receive an event for project P if and only if
//! 1. P is its configuration project, or
//! 2. P is public, or
//! 3. P is internal and the agent allows internal projects, or
//! 4. P was granted to it, or
//! 5. P lies in a group granted to it, at any depth.
//!
//! Paths compare case-insensitively. A project whose visibility is unknown is private.
//! Grants follow renames because the store rewrites them when a project or group moves.

use fluxgate_core::{AgentPolicy, FullPath, Grant, Visibility};

use crate::catalog::ProjectView;

pub fn may_see(policy: &AgentPolicy, project: &ProjectView) -> bool {
    decide(policy, project).allowed()
}

/// Which branch of the rule decided, for people (`fluxgate trace`, `explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessDecision {
    ConfigProject,
    Public,
    InternalAllowed,
    GrantedProject(FullPath),
    GrantedGroup(FullPath),
    /// Internal, and the agent does not allow internal projects.
    InternalNotAllowed,
    /// Private (or of unknown visibility) and neither the config project nor granted.
    NotGranted(Visibility),
}

impl AccessDecision {
    pub fn allowed(&self) -> bool {
        !matches!(self, Self::InternalNotAllowed | Self::NotGranted(_))
    }
}

impl std::fmt::Display for AccessDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ConfigProject => f.write_str("the agent's configuration project"),
            Self::Public => f.write_str("a public project"),
            Self::InternalAllowed => {
                f.write_str("an internal project, and the agent allows internal projects")
            }
            Self::GrantedProject(path) => write!(f, "granted project {path}"),
            Self::GrantedGroup(group) => write!(f, "in granted group {group}"),
            Self::InternalNotAllowed => f.write_str(
                "an internal project, and the agent does not allow internal projects \
                 (fluxgate agent grant --internal)",
            ),
            Self::NotGranted(visibility) => write!(
                f,
                "a {} project that is neither the agent's configuration project nor granted \
                 to it (fluxgate agent grant --project or --group)",
                visibility.as_str()
            ),
        }
    }
}

/// The access rule, with the branch that decided.
pub fn decide(policy: &AgentPolicy, project: &ProjectView) -> AccessDecision {
    if policy.config_project == project.path {
        return AccessDecision::ConfigProject;
    }
    match project.visibility {
        Visibility::Public => return AccessDecision::Public,
        Visibility::Internal if policy.allow_internal => return AccessDecision::InternalAllowed,
        _ => {}
    }
    for grant in &policy.grants {
        match grant {
            Grant::Project(path) if *path == project.path => {
                return AccessDecision::GrantedProject(path.clone());
            }
            Grant::Group(group) if project.path.is_within(group) => {
                return AccessDecision::GrantedGroup(group.clone());
            }
            _ => {}
        }
    }
    if project.visibility == Visibility::Internal {
        AccessDecision::InternalNotAllowed
    } else {
        AccessDecision::NotGranted(project.visibility)
    }
}

#[cfg(test)]
mod tests {
    use fluxgate_core::{AgentId, AgentName, FullPath, ProjectId};

    use super::*;

    fn p(s: &str) -> FullPath {
        FullPath::parse(s).unwrap()
    }

    fn project(path: &str, visibility: Visibility) -> ProjectView {
        ProjectView {
            id: ProjectId::new(1).unwrap(),
            path: p(path),
            visibility,
        }
    }

    fn policy(grants: Vec<Grant>, allow_internal: bool) -> AgentPolicy {
        AgentPolicy {
            id: AgentId(1),
            name: AgentName::parse("agent").unwrap(),
            config_project: p("ops/cluster-config"),
            grants,
            allow_internal,
            token_generation: 0,
        }
    }

    /// Every case of the rule, each with the outcome and the reason.
    #[test]
    fn access_rule_table() {
        use Visibility::{Internal, Private, Public};
        let none = || policy(vec![], false);
        let cases: Vec<(&str, AgentPolicy, ProjectView, bool)> = vec![
            (
                "config project, private",
                none(),
                project("ops/cluster-config", Private),
                true,
            ),
            (
                "config project, other case",
                none(),
                project("OPS/Cluster-Config", Private),
                true,
            ),
            ("public project", none(), project("oss/lib", Public), true),
            (
                "internal, not allowed",
                none(),
                project("corp/app", Internal),
                false,
            ),
            (
                "internal, allowed",
                policy(vec![], true),
                project("corp/app", Internal),
                true,
            ),
            (
                "private, no grant",
                none(),
                project("team/app", Private),
                false,
            ),
            (
                "private, project granted",
                policy(vec![Grant::Project(p("team/app"))], false),
                project("team/app", Private),
                true,
            ),
            (
                "private, other project granted",
                policy(vec![Grant::Project(p("team/app2"))], false),
                project("team/app", Private),
                false,
            ),
            (
                "private, project grant is not a prefix",
                policy(vec![Grant::Project(p("team"))], false),
                project("team/app", Private),
                false,
            ),
            (
                "private, group granted",
                policy(vec![Grant::Group(p("team"))], false),
                project("team/app", Private),
                true,
            ),
            (
                "private, group granted, deep",
                policy(vec![Grant::Group(p("team"))], false),
                project("team/a/b/c/app", Private),
                true,
            ),
            (
                "private, subgroup granted, project above",
                policy(vec![Grant::Group(p("team/sub"))], false),
                project("team/app", Private),
                false,
            ),
            (
                "private, group name prefix only",
                policy(vec![Grant::Group(p("team"))], false),
                project("teamx/app", Private),
                false,
            ),
            (
                "internal project, group granted",
                policy(vec![Grant::Group(p("corp"))], false),
                project("corp/app", Internal),
                true,
            ),
            (
                "config project prefix is not a group",
                none(),
                project("ops/cluster-config/sub", Private),
                false,
            ),
        ];
        for (name, policy, project, expected) in cases {
            assert_eq!(may_see(&policy, &project), expected, "{name}");
        }
    }
}
