//! Agent administration, shared by the CLI and the admin API: validation of what an
//! operator asks for, the store call, and the view of an agent both print.
//!
//! Each change is committed to the log by the store; here it is also handed to the bus,
//! so a broker in this process applies it at once (other processes pick it up from the
//! log within their poll interval).

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use fluxgate_core::{AgentName, AgentToken, ApiError, FullPath, Grant, UnixMillis};
use fluxgate_store::{AgentRecord, AgentUpdate, CommitListener, NewAgent, Store};
use serde::{Deserialize, Serialize};

/// Decides whether an agent counts as connected.
pub trait Presence: Send + Sync {
    fn is_connected(&self, agent: &AgentRecord) -> bool;
}

/// Connected if seen (connect, ack or keepalive) recently, by any replica.
pub struct LastSeen {
    pub within: Duration,
}

impl Presence for LastSeen {
    fn is_connected(&self, agent: &AgentRecord) -> bool {
        agent
            .last_seen_at
            .is_some_and(|seen| seen >= UnixMillis::now().minus(self.within))
    }
}

/// What an operator sends to create an agent (CLI flags or JSON).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAgentRequest {
    pub name: String,
    pub config_project: String,
    #[serde(default)]
    pub grant_projects: Vec<String>,
    #[serde(default)]
    pub grant_groups: Vec<String>,
    #[serde(default)]
    pub allow_internal: bool,
}

/// Grants to add or withdraw.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsRequest {
    #[serde(default)]
    pub projects: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Grant: also see internal projects. Revoke: no longer see them.
    #[serde(default)]
    pub internal: bool,
}

/// An agent as the CLI and the API show it. Never includes the token or its hash.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub name: String,
    pub id: i64,
    pub config_project: String,
    pub grants: GrantsView,
    pub allow_internal: bool,
    pub cursor: u64,
    pub connected: bool,
    pub last_seen_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GrantsView {
    pub projects: Vec<String>,
    pub groups: Vec<String>,
}

/// A view with the token, shown once on create and rotate.
#[derive(Debug, Clone, Serialize)]
pub struct AgentWithToken {
    #[serde(flatten)]
    pub agent: AgentView,
    pub token: String,
}

pub struct AgentAdmin {
    store: Arc<dyn Store>,
    listener: Arc<dyn CommitListener>,
    presence: Arc<dyn Presence>,
}

impl AgentAdmin {
    pub fn new(
        store: Arc<dyn Store>,
        listener: Arc<dyn CommitListener>,
        presence: Arc<dyn Presence>,
    ) -> Self {
        Self {
            store,
            listener,
            presence,
        }
    }

    pub async fn create(&self, request: CreateAgentRequest) -> Result<AgentWithToken, ApiError> {
        let name = parse_name(&request.name)?;
        let config_project = parse_path("config_project", &request.config_project)?;
        let grants = parse_grants(&request.grant_projects, &request.grant_groups)?;
        let token = AgentToken::generate();
        let (record, entry) = self
            .store
            .create_agent(NewAgent {
                name,
                config_project,
                grants,
                allow_internal: request.allow_internal,
                token_digest: token.digest(),
            })
            .await
            .map_err(|e| e.to_api_error())?;
        self.listener.committed(std::slice::from_ref(&entry));
        tracing::info!(agent = %record.policy.name, "agent created");
        Ok(AgentWithToken {
            agent: self.view(&record),
            token: token.reveal().to_owned(),
        })
    }

    pub async fn list(&self) -> Result<Vec<AgentView>, ApiError> {
        let agents = self
            .store
            .list_agents()
            .await
            .map_err(|e| e.to_api_error())?;
        Ok(agents.iter().map(|a| self.view(a)).collect())
    }

    pub async fn show(&self, name: &str) -> Result<AgentView, ApiError> {
        let name = parse_name(name)?;
        let record = self
            .store
            .agent(&name)
            .await
            .map_err(|e| e.to_api_error())?
            .ok_or_else(|| ApiError::not_found(format!("no agent named {name:?}")))?;
        Ok(self.view(&record))
    }

    pub async fn grant(&self, name: &str, request: GrantsRequest) -> Result<AgentView, ApiError> {
        let grants = parse_grants(&request.projects, &request.groups)?;
        if grants.is_empty() && !request.internal {
            return Err(ApiError::bad_request(
                "nothing to grant: give projects, groups or internal",
            ));
        }
        let update = AgentUpdate::Grant {
            grants,
            allow_internal: request.internal,
        };
        self.update(name, update).await
    }

    pub async fn revoke(&self, name: &str, request: GrantsRequest) -> Result<AgentView, ApiError> {
        let grants = parse_grants(&request.projects, &request.groups)?;
        if grants.is_empty() && !request.internal {
            return Err(ApiError::bad_request(
                "nothing to revoke: give projects, groups or internal",
            ));
        }
        let update = AgentUpdate::Revoke {
            grants,
            internal: request.internal,
        };
        self.update(name, update).await
    }

    pub async fn rotate_token(&self, name: &str) -> Result<AgentWithToken, ApiError> {
        let token = AgentToken::generate();
        let agent = self
            .update(
                name,
                AgentUpdate::RotateToken {
                    digest: token.digest(),
                },
            )
            .await?;
        Ok(AgentWithToken {
            agent,
            token: token.reveal().to_owned(),
        })
    }

    pub async fn delete(&self, name: &str) -> Result<(), ApiError> {
        let name = parse_name(name)?;
        let entry = self
            .store
            .delete_agent(&name)
            .await
            .map_err(|e| e.to_api_error())?;
        self.listener.committed(std::slice::from_ref(&entry));
        tracing::info!(agent = %name, "agent deleted");
        Ok(())
    }

    async fn update(&self, name: &str, update: AgentUpdate) -> Result<AgentView, ApiError> {
        let name = parse_name(name)?;
        let (record, entry) = self
            .store
            .update_agent(&name, update)
            .await
            .map_err(|e| e.to_api_error())?;
        self.listener.committed(std::slice::from_ref(&entry));
        tracing::info!(agent = %name, "agent changed");
        Ok(self.view(&record))
    }

    fn view(&self, record: &AgentRecord) -> AgentView {
        let policy = &record.policy;
        let (mut projects, mut groups) = (Vec::new(), Vec::new());
        for grant in &policy.grants {
            match grant {
                Grant::Project(path) => projects.push(path.to_string()),
                Grant::Group(path) => groups.push(path.to_string()),
            }
        }
        AgentView {
            name: policy.name.to_string(),
            id: policy.id.0,
            config_project: policy.config_project.to_string(),
            grants: GrantsView { projects, groups },
            allow_internal: policy.allow_internal,
            cursor: record.cursor.get(),
            connected: self.presence.is_connected(record),
            last_seen_at: record.last_seen_at.map(rfc3339),
            created_at: rfc3339(record.created_at),
            updated_at: rfc3339(record.updated_at),
        }
    }
}

fn rfc3339(at: UnixMillis) -> String {
    let since_epoch = Duration::from_millis(u64::try_from(at.get()).unwrap_or(0));
    humantime::format_rfc3339_millis(UNIX_EPOCH + since_epoch).to_string()
}

fn parse_name(raw: &str) -> Result<AgentName, ApiError> {
    AgentName::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn parse_path(field: &str, raw: &str) -> Result<FullPath, ApiError> {
    FullPath::parse(raw).map_err(|e| ApiError::bad_request(format!("{field}: {e}")))
}

fn parse_grants(projects: &[String], groups: &[String]) -> Result<Vec<Grant>, ApiError> {
    let projects = projects
        .iter()
        .map(|p| parse_path("project", p).map(Grant::Project));
    let groups = groups
        .iter()
        .map(|g| parse_path("group", g).map(Grant::Group));
    projects.chain(groups).collect()
}
