//! The routing state of one replica: the catalog and every agent's policy, folded from the
//! log in seq order.

use fluxgate_core::{
    AgentId, AgentPolicy, FullPath, ProjectId, StateChange, StateEffect, Visibility,
};

use crate::catalog::Catalog;

/// What applying a state change did to agents, for the hub to act on open streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEffect {
    /// The policy changed (grants take effect at once); streams opened with an older token
    /// generation must close.
    Updated {
        id: AgentId,
        token_generation: u32,
    },
    Removed {
        id: AgentId,
    },
}

#[derive(Debug, Default, Clone)]
pub struct RoutingState {
    catalog: Catalog,
    agents: foldhash::HashMap<AgentId, AgentPolicy>,
}

impl RoutingState {
    /// Builds the state from a store snapshot's parts.
    pub fn new(
        projects: impl IntoIterator<Item = (ProjectId, FullPath, Option<Visibility>)>,
        aliases: impl IntoIterator<Item = (FullPath, ProjectId)>,
        agents: impl IntoIterator<Item = AgentPolicy>,
    ) -> Self {
        let mut catalog = Catalog::default();
        for (path, id) in aliases {
            catalog.set_alias(&path, id);
        }
        for (id, path, visibility) in projects {
            catalog.set_project(id, path, visibility);
        }
        Self {
            catalog,
            agents: agents
                .into_iter()
                .map(|policy| (policy.id, policy))
                .collect(),
        }
    }

    /// Applies a logged state change; returns what changed for agents.
    pub fn apply(&mut self, change: &StateChange) -> Vec<AgentEffect> {
        let mut agent_effects = Vec::new();
        for effect in &change.effects {
            match effect {
                StateEffect::Project {
                    id,
                    path,
                    visibility,
                } => {
                    self.catalog.set_project(*id, path.clone(), *visibility);
                }
                StateEffect::Alias { path, project } => self.catalog.set_alias(path, *project),
                StateEffect::ProjectRemoved { id } => self.catalog.remove_project(*id),
                StateEffect::Agent { policy } => {
                    agent_effects.push(AgentEffect::Updated {
                        id: policy.id,
                        token_generation: policy.token_generation,
                    });
                    self.agents.insert(policy.id, policy.clone());
                }
                StateEffect::AgentRemoved { id } => {
                    self.agents.remove(id);
                    agent_effects.push(AgentEffect::Removed { id: *id });
                }
            }
        }
        agent_effects
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn policy(&self, id: AgentId) -> Option<&AgentPolicy> {
        self.agents.get(&id)
    }
}
