//! Presence: which agents are connected, to which replica, since when.
//!
//! Each replica writes its open streams to one Redis hash, `<prefix>:presence:<replica>`,
//! with a TTL that it refreshes every few seconds and rewrites at once when a stream opens
//! or closes. A replica that dies stops refreshing, and its entries expire. Readers (the
//! admin API, the CLI, any replica) scan every replica's hash.
//!
//! Writes and reads go through one [`ConnectionManager`], opened on first use and
//! reconnected by itself after an error, not a new connection per write.

use std::sync::Arc;
use std::time::Duration;

use fluxgate_core::UnixMillis;
use fluxgate_fanout::Hub;
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::metric_names as names;

/// How long connecting and each command may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Connection attempts per request while Redis is unreachable, so that a reader (the CLI)
/// falls back on last-seen times quickly.
const CONNECT_RETRIES: usize = 1;
/// Presence is written at most this often when streams open or close.
const MIN_WRITE_GAP: Duration = Duration::from_secs(1);

/// One open agent stream, as presence records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenStream {
    pub agent_id: i64,
    pub agent: String,
    pub replica: String,
    pub connected_since: UnixMillis,
    pub last_ack_at: Option<UnixMillis>,
    pub cluster_name: Option<String>,
    pub agent_version: String,
}

/// This replica's presence writer, and every replica's presence reader.
#[derive(Clone)]
pub struct RedisPresence {
    connection: ConnectionManager,
    key_prefix: String,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence")
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisPresence {
    /// Presence in the Redis at `url`, under `key_prefix`. Connects on first use; must be
    /// called inside a Tokio runtime.
    pub fn new(url: &str, key_prefix: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(CONNECT_RETRIES);
        Ok(Self {
            connection: ConnectionManager::new_lazy_with_config(client, config)?,
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
        let mut written_at: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
                () = hub.streams_changed() => {
                    // Each write is the whole set: while thousands of streams open (a
                    // reconnect storm), write it at most once per MIN_WRITE_GAP, with
                    // every change made meanwhile.
                    if let Some(at) = written_at {
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep_until(at + MIN_WRITE_GAP) => {}
                        }
                    }
                }
            }
            written_at = Some(tokio::time::Instant::now());
            let streams: Vec<(String, String)> = hub
                .open_streams()
                .await
                .into_iter()
                .map(|(id, agent, info)| {
                    let stream = OpenStream {
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
                        serde_json::to_string(&stream).expect("presence serializes"),
                    )
                })
                .collect();
            if let Err(err) = self.write(&key, &streams, ttl).await {
                metrics::counter!(names::PRESENCE_ERRORS).increment(1);
                tracing::debug!(error = %err, "cannot write presence to redis");
            }
        }
        let _: Result<(), _> = self.connection.clone().del(&key).await;
    }

    async fn write(
        &self,
        key: &str,
        streams: &[(String, String)],
        ttl: Duration,
    ) -> redis::RedisResult<()> {
        let mut transaction = redis::pipe();
        transaction.atomic().del(key).ignore();
        if !streams.is_empty() {
            transaction
                .hset_multiple(key, streams)
                .ignore()
                .pexpire(key, i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
                .ignore();
        }
        transaction
            .query_async::<()>(&mut self.connection.clone())
            .await
    }

    /// Every agent stream open on any replica.
    pub async fn open_streams(&self) -> redis::RedisResult<Vec<OpenStream>> {
        let mut conn = self.connection.clone();
        let pattern = format!("{}:presence:*", self.key_prefix);
        let mut keys: Vec<String> = Vec::new();
        {
            let mut scan = conn.scan_match::<_, String>(&pattern).await?;
            while let Some(key) = futures_util::StreamExt::next(&mut scan).await {
                keys.push(key?);
            }
        }
        let mut streams = Vec::new();
        for key in keys {
            let fields: std::collections::HashMap<String, String> = conn.hgetall(&key).await?;
            streams.extend(
                fields
                    .values()
                    .filter_map(|json| serde_json::from_str(json).ok()),
            );
        }
        Ok(streams)
    }
}
