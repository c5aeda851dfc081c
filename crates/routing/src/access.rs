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

use fluxgate_core::{AgentPolicy, Grant, Visibility};

use crate::catalog::ProjectView;

pub fn may_see(policy: &AgentPolicy, project: &ProjectView) -> bool {
    policy.config_project == project.path
        || project.visibility == Visibility::Public
        || (project.visibility == Visibility::Internal && policy.allow_internal)
        || policy.grants.iter().any(|grant| match grant {
            Grant::Project(path) => *path == project.path,
            Grant::Group(group) => project.path.is_within(group),
        })
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
