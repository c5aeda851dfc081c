//! Agent administration, shared by the CLI and the admin API: validation of what an
//! operator asks for, the store call, and the view of an agent both print.
//!
//! Each change is committed to the log and published through the [`Publisher`] (the one
//! way onto the bus; its docs say how a change reaches brokers in other processes).

use std::time::{Duration, UNIX_EPOCH};

use fluxgate_core::{AgentName, AgentToken, ApiError, FullPath, Grant, UnixMillis};
use fluxgate_replication::{OpenStream, RedisPresence};
use fluxgate_store::{AgentRecord, AgentUpdate, NewAgent, Publisher};
use serde::{Deserialize, Serialize};

/// Where the "connected" column comes from.
pub enum PresenceSource {
    /// Connected while a stream of the agent is open in the store (a stream that ends is
    /// marked closed within the cursor saver's interval, a second by default) and was
    /// heard of (opened, acked, keepalive) within `within`, by any replica: a stream whose
    /// replica died without closing it stops counting after `within`.
    LastSeen { within: Duration },
    /// Every replica's open streams, from Redis; the store's open streams (as for
    /// `LastSeen`) if Redis is unreachable.
    Redis {
        presence: RedisPresence,
        within: Duration,
    },
}

impl PresenceSource {
    /// Every open stream, if this source knows them.
    async fn connections(&self) -> Option<Vec<OpenStream>> {
        match self {
            PresenceSource::LastSeen { .. } => None,
            PresenceSource::Redis { presence, .. } => match presence.open_streams().await {
                Ok(connections) => Some(connections),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read presence from redis; using last-seen times");
                    None
                }
            },
        }
    }

    fn within(&self) -> Duration {
        match self {
            PresenceSource::LastSeen { within } | PresenceSource::Redis { within, .. } => *within,
        }
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
    /// Open streams on any replica (empty when presence is not shared through Redis).
    pub connections: Vec<ConnectionView>,
    pub last_seen_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The receivers the agent last reported failing; `None` if it never reported.
    pub receiver_health: Option<ReceiverHealthView>,
    /// The subscriptions of the agent's latest stream and whether each can match a push;
    /// `None` if it has not connected to a broker that records them.
    pub subscriptions: Option<SubscriptionsView>,
}

/// The agent's latest subscriptions, as the broker judged them.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionsView {
    /// When the broker worked the status out (a stream opened, its subscriptions or the
    /// routing state changed).
    pub reported_at: String,
    pub subscriptions: Vec<fluxgate_core::SubscriptionStatus>,
}

/// An agent's last receiver health report.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiverHealthView {
    pub reported_at: String,
    /// Empty: every receiver answered.
    pub failing: Vec<FailingReceiverView>,
}

/// A receiver the agent keeps retrying; its events stay unacked.
#[derive(Debug, Clone, Serialize)]
pub struct FailingReceiverView {
    pub receiver: String,
    pub failing_since: String,
    pub attempts: u64,
    pub last_error: String,
    /// 0: no answer at all.
    pub last_http_status: u16,
    pub oldest_unacked_seq: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GrantsView {
    pub projects: Vec<String>,
    pub groups: Vec<String>,
}

/// One open stream of an agent.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionView {
    pub replica: String,
    pub connected_since: String,
    pub last_ack_at: Option<String>,
    pub cluster_name: Option<String>,
    pub agent_version: String,
}

/// A view with the token, shown once on create and rotate.
#[derive(Debug, Clone, Serialize)]
pub struct AgentWithToken {
    #[serde(flatten)]
    pub agent: AgentView,
    pub token: String,
}

pub struct AgentAdmin {
    log: Publisher,
    presence: PresenceSource,
}

impl AgentAdmin {
    /// The store the admin works on (for read-only views such as `trace`).
    pub fn store(&self) -> &std::sync::Arc<dyn fluxgate_store::Store> {
        self.log.store()
    }

    pub fn new(log: Publisher, presence: PresenceSource) -> Self {
        Self { log, presence }
    }

    pub async fn create(&self, request: CreateAgentRequest) -> Result<AgentWithToken, ApiError> {
        let name = parse_name(&request.name)?;
        let config_project = parse_path("config_project", &request.config_project)?;
        let grants = parse_grants(&request.grant_projects, &request.grant_groups)?;
        let token = AgentToken::generate();
        let record = self
            .log
            .create_agent(NewAgent {
                name,
                config_project,
                grants,
                allow_internal: request.allow_internal,
                token_digest: token.digest(),
            })
            .await
            .map_err(|e| e.to_api_error())?;
        tracing::info!(agent = %record.policy.name, "agent created");
        Ok(AgentWithToken {
            agent: self.view(&record).await,
            token: token.reveal().to_owned(),
        })
    }

    pub async fn list(&self) -> Result<Vec<AgentView>, ApiError> {
        let agents = self
            .log
            .store()
            .list_agents()
            .await
            .map_err(|e| e.to_api_error())?;
        let connections = self.presence.connections().await;
        Ok(agents
            .iter()
            .map(|a| self.view_with(a, connections.as_deref()))
            .collect())
    }

    pub async fn show(&self, name: &str) -> Result<AgentView, ApiError> {
        let name = parse_name(name)?;
        let record = self
            .log
            .store()
            .agent(&name)
            .await
            .map_err(|e| e.to_api_error())?
            .ok_or_else(|| ApiError::not_found(format!("no agent named {name:?}")))?;
        Ok(self.view(&record).await)
    }

    pub async fn grant(&self, name: &str, request: GrantsRequest) -> Result<AgentView, ApiError> {
        let (grants, internal) = access_change("grant", &request)?;
        let update = AgentUpdate::Grant {
            grants,
            allow_internal: internal,
        };
        self.update(name, update).await
    }

    pub async fn revoke(&self, name: &str, request: GrantsRequest) -> Result<AgentView, ApiError> {
        let (grants, internal) = access_change("revoke", &request)?;
        self.update(name, AgentUpdate::Revoke { grants, internal })
            .await
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
        self.log
            .delete_agent(&name)
            .await
            .map_err(|e| e.to_api_error())?;
        tracing::info!(agent = %name, "agent deleted");
        Ok(())
    }

    async fn update(&self, name: &str, update: AgentUpdate) -> Result<AgentView, ApiError> {
        let name = parse_name(name)?;
        let record = self
            .log
            .update_agent(&name, update)
            .await
            .map_err(|e| e.to_api_error())?;
        tracing::info!(agent = %name, "agent changed");
        Ok(self.view(&record).await)
    }

    async fn view(&self, record: &AgentRecord) -> AgentView {
        let connections = self.presence.connections().await;
        self.view_with(record, connections.as_deref())
    }

    fn view_with(&self, record: &AgentRecord, all: Option<&[OpenStream]>) -> AgentView {
        let policy = &record.policy;
        let connections = all.map(|all| {
            all.iter()
                .filter(|c| c.agent_id == policy.id.0)
                .map(|c| ConnectionView {
                    replica: c.replica.clone(),
                    connected_since: rfc3339(c.connected_since),
                    last_ack_at: c.last_ack_at.map(rfc3339),
                    cluster_name: c.cluster_name.clone(),
                    agent_version: c.agent_version.clone(),
                })
                .collect::<Vec<_>>()
        });
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
            connected: match &connections {
                Some(open) => !open.is_empty(),
                None => has_live_stream(record, self.presence.within()),
            },
            connections: connections.unwrap_or_default(),
            last_seen_at: record.last_seen_at.map(rfc3339),
            created_at: rfc3339(record.created_at),
            updated_at: rfc3339(record.updated_at),
            receiver_health: record
                .receiver_health
                .as_ref()
                .map(|health| ReceiverHealthView {
                    reported_at: rfc3339(health.reported_at),
                    failing: health
                        .failing
                        .iter()
                        .map(|f| FailingReceiverView {
                            receiver: f.receiver.clone(),
                            failing_since: rfc3339(f.failing_since),
                            attempts: f.attempts,
                            last_error: f.last_error.clone(),
                            last_http_status: f.last_http_status,
                            oldest_unacked_seq: f.oldest_unacked_seq.map(|seq| seq.get()),
                        })
                        .collect(),
                }),
            subscriptions: record
                .subscription_status
                .as_ref()
                .map(|report| SubscriptionsView {
                    reported_at: rfc3339(report.reported_at),
                    subscriptions: report.subscriptions.clone(),
                }),
        }
    }
}

/// A stream of the agent is open in the store and was heard of within `within`.
fn has_live_stream(record: &AgentRecord, within: Duration) -> bool {
    record
        .open_stream_seen_at
        .is_some_and(|seen| seen >= UnixMillis::now().minus(within))
}

pub(crate) fn rfc3339(at: UnixMillis) -> String {
    let since_epoch = Duration::from_millis(u64::try_from(at.get()).unwrap_or(0));
    humantime::format_rfc3339_millis(UNIX_EPOCH + since_epoch).to_string()
}

fn parse_name(raw: &str) -> Result<AgentName, ApiError> {
    AgentName::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn parse_path(field: &str, raw: &str) -> Result<FullPath, ApiError> {
    FullPath::parse(raw).map_err(|e| ApiError::bad_request(format!("{field}: {e}")))
}

/// The grants a grant or revoke request names, and whether it touches internal projects;
/// a request that names nothing is refused.
fn access_change(verb: &str, request: &GrantsRequest) -> Result<(Vec<Grant>, bool), ApiError> {
    let grants = parse_grants(&request.projects, &request.groups)?;
    if grants.is_empty() && !request.internal {
        return Err(ApiError::bad_request(format!(
            "nothing to {verb}: give projects, groups or internal"
        )));
    }
    Ok((grants, request.internal))
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
