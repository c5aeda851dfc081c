//! Presence: which agents are connected, to which replica, since when.
//!
//! Each replica writes its open streams to one Redis hash, `<prefix>:presence:<replica>`,
//! with a TTL that it refreshes every few seconds and rewrites at once when a stream opens
//! or closes. A replica that dies stops refreshing, and its entries expire. Readers (the
//! admin API, the CLI, any replica) scan every replica's hash.

use std::sync::Arc;
use std::time::Duration;

use fluxgate_core::UnixMillis;
use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::metric_names as names;

/// One open agent stream, as presence records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub agent_id: i64,
    pub agent: String,
    pub replica: String,
    pub connected_since: UnixMillis,
    pub last_ack_at: Option<UnixMillis>,
    pub cluster_name: Option<String>,
    pub agent_version: String,
}

#[derive(Debug, Clone)]
pub struct RedisPresence {
    client: redis::Client,
    key_prefix: String,
}

impl RedisPresence {
    pub fn new(url: &str, key_prefix: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            key_prefix: key_prefix.to_owned(),
        })
    }

    fn key(&self, replica: &str) -> String {
        format!("{}:presence:{replica}", self.key_prefix)
    }

    /// Keeps this replica's entry current until shutdown, then removes it.
    pub async fn publish(
        self,
        hub: Arc<Hub>,
        replica: String,
        refresh: Duration,
        shutdown: CancellationToken,
    ) {
        let key = self.key(&replica);
        let ttl = refresh * 3;
        let mut ticker = tokio::time::interval(refresh);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
                () = hub.sessions_changed() => {}
            }
            let connections: Vec<(String, String)> = hub
                .sessions()
                .await
                .into_iter()
                .map(|(id, agent, info)| {
                    let connection = Connection {
                        agent_id: agent.0,
                        agent: info.agent_name,
                        replica: replica.clone(),
                        connected_since: info.connected_since,
                        last_ack_at: info.last_ack_at,
                        cluster_name: info.cluster_name,
                        agent_version: info.agent_version,
                    };
                    (
                        id.to_string(),
                        serde_json::to_string(&connection).expect("presence serializes"),
                    )
                })
                .collect();
            if let Err(err) = self.write(&key, &connections, ttl).await {
                metrics::counter!(names::PRESENCE_ERRORS).increment(1);
                tracing::debug!(error = %err, "cannot write presence to redis");
            }
        }
        if let Ok(mut conn) = self.client.get_multiplexed_async_connection().await {
            let _: Result<(), _> = conn.del(&key).await;
        }
    }

    async fn write(
        &self,
        key: &str,
        connections: &[(String, String)],
        ttl: Duration,
    ) -> redis::RedisResult<()> {
        let mut conn = self.client.get_multiplexed_async_connection().await?;
        let mut transaction = redis::pipe();
        transaction.atomic().del(key).ignore();
        if !connections.is_empty() {
            transaction
                .hset_multiple(key, connections)
                .ignore()
                .pexpire(key, i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
                .ignore();
        }
        transaction.query_async::<()>(&mut conn).await
    }

    /// Every agent stream open on any replica.
    pub async fn connections(&self) -> redis::RedisResult<Vec<Connection>> {
        let mut conn = self.client.get_multiplexed_async_connection().await?;
        let pattern = format!("{}:presence:*", self.key_prefix);
        let mut keys: Vec<String> = Vec::new();
        {
            let mut scan = conn.scan_match::<_, String>(&pattern).await?;
            while let Some(key) = futures_util::StreamExt::next(&mut scan).await {
                keys.push(key?);
            }
        }
        let mut connections = Vec::new();
        for key in keys {
            let fields: std::collections::HashMap<String, String> = conn.hgetall(&key).await?;
            connections.extend(
                fields
                    .values()
                    .filter_map(|json| serde_json::from_str(json).ok()),
            );
        }
        Ok(connections)
    }
}
