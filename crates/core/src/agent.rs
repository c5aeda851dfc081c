//! Agents: identity and the access policy the broker enforces for them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::path::FullPath;

/// The store's numeric id for an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentId(pub i64);

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a string is not an agent name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "agent name {0:?} is invalid: use 1 to 63 lower-case letters, digits, '-', '_' or '.', starting with a letter or digit"
)]
pub struct AgentNameError(pub String);

/// An agent's unique name, as GitLab names agents: `[a-z0-9][a-z0-9._-]{0,62}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentName(String);

impl AgentName {
    pub fn parse(raw: &str) -> Result<Self, AgentNameError> {
        let valid_first = raw
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let valid_rest = raw.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
        if valid_first && valid_rest && raw.len() <= 63 {
            Ok(Self(raw.to_owned()))
        } else {
            Err(AgentNameError(raw.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::str::FromStr for AgentName {
    type Err = AgentNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for AgentName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AgentName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        AgentName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Extra access granted to an agent beyond its configuration project and public projects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "path", rename_all = "lowercase")]
pub enum Grant {
    /// One project.
    Project(FullPath),
    /// Every project in a group and its subgroups, at any depth.
    Group(FullPath),
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grant::Project(path) => write!(f, "project {path}"),
            Grant::Group(path) => write!(f, "group {path}"),
        }
    }
}

/// Everything the broker needs to decide what an agent may see. Carried in the log
/// whenever it changes, so every replica applies the change in the same order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPolicy {
    pub id: AgentId,
    pub name: AgentName,
    pub config_project: FullPath,
    #[serde(default)]
    pub grants: Vec<Grant>,
    #[serde(default)]
    pub allow_internal: bool,
    /// Bumped on every token rotation; streams opened with an older token are closed.
    #[serde(default)]
    pub token_generation: u32,
}

impl AgentPolicy {
    /// Grants follow a project that moved from `old` to `new` (rename or transfer).
    /// Returns true if anything changed.
    pub fn follow_project_move(&mut self, old: &FullPath, new: &FullPath) -> bool {
        self.rewrite(|path, is_group| (!is_group && path == old).then(|| new.clone()))
    }

    /// Grants follow a group that moved from `old` to `new`: the group itself, its
    /// subgroups and every project below it. Returns true if anything changed.
    pub fn follow_group_move(&mut self, old: &FullPath, new: &FullPath) -> bool {
        self.rewrite(|path, _| path.rebase(old, new))
    }

    fn rewrite(&mut self, mut moved: impl FnMut(&FullPath, bool) -> Option<FullPath>) -> bool {
        let mut changed = false;
        if let Some(path) = moved(&self.config_project, false) {
            changed |= path.as_str() != self.config_project.as_str();
            self.config_project = path;
        }
        for grant in &mut self.grants {
            let (path, is_group) = match grant {
                Grant::Project(path) => (path, false),
                Grant::Group(path) => (path, true),
            };
            if let Some(new_path) = moved(path, is_group) {
                changed |= new_path.as_str() != path.as_str();
                *path = new_path;
            }
        }
        if changed {
            self.grants.sort();
            self.grants.dedup();
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_follow_gitlab_rules() {
        assert!(AgentName::parse("prod-eu.1").is_ok());
        assert!(AgentName::parse("").is_err());
        assert!(AgentName::parse("-x").is_err());
        assert!(AgentName::parse("Prod").is_err());
        assert!(AgentName::parse(&"a".repeat(64)).is_err());
    }

    #[test]
    fn grants_serialize_with_kind_and_path() {
        let grant = Grant::Group(FullPath::parse("platform/apps").unwrap());
        let json = serde_json::to_string(&grant).unwrap();
        assert_eq!(json, r#"{"kind":"group","path":"platform/apps"}"#);
        assert_eq!(serde_json::from_str::<Grant>(&json).unwrap(), grant);
    }

    fn policy(config: &str, grants: Vec<Grant>) -> AgentPolicy {
        AgentPolicy {
            id: AgentId(1),
            name: AgentName::parse("a").unwrap(),
            config_project: FullPath::parse(config).unwrap(),
            grants,
            allow_internal: false,
            token_generation: 0,
        }
    }

    fn p(s: &str) -> FullPath {
        FullPath::parse(s).unwrap()
    }

    #[test]
    fn grants_follow_a_project_move() {
        let mut policy = policy(
            "ops/cfg",
            vec![Grant::Project(p("team/app")), Grant::Group(p("team/app"))],
        );
        assert!(policy.follow_project_move(&p("Team/App"), &p("team/app2")));
        assert_eq!(
            policy.grants,
            vec![Grant::Project(p("team/app2")), Grant::Group(p("team/app"))]
        );
        assert!(policy.follow_project_move(&p("ops/cfg"), &p("ops/config")));
        assert_eq!(policy.config_project.as_str(), "ops/config");
        assert!(!policy.follow_project_move(&p("other/x"), &p("other/y")));
    }

    #[test]
    fn grants_follow_a_group_move() {
        let mut policy = policy(
            "old/cfg",
            vec![
                Grant::Group(p("old/sub")),
                Grant::Project(p("old/app")),
                Grant::Project(p("older/app")),
            ],
        );
        assert!(policy.follow_group_move(&p("old"), &p("new")));
        assert_eq!(policy.config_project.as_str(), "new/cfg");
        assert_eq!(
            policy.grants,
            vec![
                Grant::Project(p("new/app")),
                Grant::Project(p("older/app")),
                Grant::Group(p("new/sub"))
            ]
        );
    }
}
