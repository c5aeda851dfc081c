//! The Redis bus: committed entries travel between replicas on a Redis Stream.
//!
//! - Every batch committed by this replica goes to its own followers at once (through the
//!   local broadcast, so local agents never wait on Redis) and to a publisher task that
//!   appends it to the stream (`XADD … MAXLEN ~ <cap>`, pipelined per batch).
//! - A subscriber task reads the stream (`XREAD BLOCK`) from the last id it saw, after a
//!   reconnect too, and hands what it reads to the local broadcast. A replica's own
//!   entries come back this way as well; the follower skips what it already has.
//! - Redis is an accelerator, never the source of truth: a publish that fails is dropped
//!   (counted), and the follower reads whatever it misses from the database, by seq gap or
//!   after `poll_interval` of silence. A Redis outage costs latency, not events, and
//!   recovery needs no restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fluxgate_core::{Backoff, LogEntry};
use fluxgate_store::CommitListener;
use futures_util::future::BoxFuture;
use redis::AsyncCommands as _;
use redis::streams::{StreamMaxlen, StreamRangeReply, StreamReadOptions, StreamReadReply};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::stream_entry;
use super::{Batch, Bus};
use crate::metric_names as names;
/// How long one `XREAD` blocks.
const READ_BLOCK: Duration = Duration::from_secs(1);
/// Batches waiting for the publisher; beyond that they are dropped (followers catch up).
const OUTBOX: usize = 4096;
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct RedisBusConfig {
    pub url: String,
    /// Prefix of every key fluxgate writes (`<prefix>:log`, `<prefix>:presence:…`).
    pub key_prefix: String,
    /// The stream keeps about this many entries.
    pub stream_max_len: usize,
    /// Batches the local broadcast buffers for a slow follower.
    pub local_capacity: usize,
}

impl RedisBusConfig {
    pub fn stream_key(&self) -> String {
        format!("{}:log", self.key_prefix)
    }
}

pub struct RedisBus {
    local: broadcast::Sender<Batch>,
    outbox: mpsc::Sender<Batch>,
    connected: Arc<AtomicBool>,
}

impl RedisBus {
    /// Builds the bus and its two tasks, the publisher and the subscriber, for the caller
    /// to run (and supervise) until `shutdown`. They connect, and reconnect, on their own:
    /// a Redis that is down at start-up is not an error.
    pub fn start(
        config: RedisBusConfig,
        shutdown: CancellationToken,
    ) -> Result<(Self, [BoxFuture<'static, ()>; 2]), redis::RedisError> {
        let client = redis::Client::open(config.url.as_str())?;
        let (local, _) = broadcast::channel(config.local_capacity.max(1));
        let (outbox, queue) = mpsc::channel(OUTBOX);
        let connected = Arc::new(AtomicBool::new(false));
        let publisher = publish(client.clone(), config.clone(), queue, shutdown.clone());
        let subscriber = subscribe(client, config, local.clone(), connected.clone(), shutdown);
        let bus = Self {
            local,
            outbox,
            connected,
        };
        Ok((bus, [Box::pin(publisher), Box::pin(subscriber)]))
    }

    /// Whether the subscriber's last read from Redis succeeded.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}

impl CommitListener for RedisBus {
    fn committed(&self, entries: &[LogEntry]) {
        let batch: Batch = Arc::new(entries.to_vec());
        let _ = self.local.send(batch.clone());
        if self.outbox.try_send(batch).is_err() {
            metrics::counter!(names::REDIS_PUBLISH_DROPPED).increment(1);
        }
    }
}

impl Bus for RedisBus {
    fn subscribe(&self) -> broadcast::Receiver<Batch> {
        self.local.subscribe()
    }
}

/// A fresh reconnect schedule: doubling from `RECONNECT_MIN` to `RECONNECT_MAX`, no jitter.
fn reconnect_backoff() -> Backoff {
    Backoff::new(RECONNECT_MIN, RECONNECT_MAX).without_jitter()
}

/// Sleeps the next reconnect delay; false if shutdown came first.
async fn wait(backoff: &mut Backoff, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(backoff.next_delay()) => true,
    }
}

async fn publish(
    client: redis::Client,
    config: RedisBusConfig,
    mut queue: mpsc::Receiver<Batch>,
    shutdown: CancellationToken,
) {
    let key = config.stream_key();
    let mut backoff = reconnect_backoff();
    let mut connection = None;
    let mut batches = Vec::new();
    loop {
        batches.clear();
        tokio::select! {
            () = shutdown.cancelled() => return,
            received = queue.recv_many(&mut batches, 64) => if received == 0 { return },
        }
        if connection.is_none() {
            match client.get_multiplexed_async_connection().await {
                Ok(opened) => {
                    connection = Some(opened);
                    backoff.reset();
                }
                Err(err) => {
                    metrics::counter!(names::REDIS_PUBLISH_DROPPED).increment(batches.len() as u64);
                    tracing::debug!(error = %err, "redis unreachable; batches left to the database poll");
                    if !wait(&mut backoff, &shutdown).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let Some(conn) = connection.as_mut() else {
            continue;
        };
        let mut pipeline = redis::pipe();
        for entry in batches.iter().flat_map(|batch| batch.iter()) {
            pipeline
                .xadd_maxlen(
                    &key,
                    StreamMaxlen::Approx(config.stream_max_len),
                    "*",
                    &stream_entry::encode(entry),
                )
                .ignore();
        }
        if let Err(err) = pipeline.query_async::<()>(conn).await {
            metrics::counter!(names::REDIS_PUBLISH_DROPPED).increment(batches.len() as u64);
            tracing::warn!(error = %err, "cannot publish to redis; followers will read the database");
            connection = None;
        }
    }
}

async fn subscribe(
    client: redis::Client,
    config: RedisBusConfig,
    local: broadcast::Sender<Batch>,
    connected: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let key = config.stream_key();
    let mut backoff = reconnect_backoff();
    let mut last_id: Option<String> = None;
    let connection_config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(READ_BLOCK + Duration::from_secs(2)));
    loop {
        let result: redis::RedisResult<()> = async {
            let mut conn = client.get_multiplexed_async_connection_with_config(&connection_config).await?;
            // Where to read from: after the last entry seen, or after the newest one now.
            let start = match &last_id {
                Some(id) => id.clone(),
                None => newest_id(&mut conn, &key).await?,
            };
            last_id = Some(start);
            if !connected.swap(true, Ordering::AcqRel) {
                tracing::info!("connected to redis; following the shared log stream");
                metrics::gauge!(names::REDIS_CONNECTED).set(1.0);
            }
            backoff.reset();
            let options = StreamReadOptions::default()
                .block(READ_BLOCK.as_millis() as usize)
                .count(1000);
            loop {
                let from = [last_id.clone().unwrap_or_else(|| "0-0".to_owned())];
                let keys = [key.as_str()];
                let read = tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    read = conn.xread_options::<_, _, Option<StreamReadReply>>(&keys, &from, &options) => read?,
                };
                let Some(reply) = read else { continue };
                let mut batch = Vec::new();
                for stream in reply.keys {
                    for message in stream.ids {
                        last_id = Some(message.id.clone());
                        match stream_entry::decode(&message.map) {
                            Ok(entry) => batch.push(entry),
                            Err(err) => {
                                metrics::counter!(names::REDIS_DECODE_ERRORS, "reason" => err.label()).increment(1);
                                tracing::warn!(id = %message.id, error = &err as &dyn std::error::Error, "undecodable entry on the log stream; skipped (the follower reads it from the database)");
                            }
                        }
                    }
                }
                if !batch.is_empty() {
                    let _ = local.send(Arc::new(batch));
                }
            }
        }
        .await;
        if shutdown.is_cancelled() {
            return;
        }
        if let Err(err) = result {
            if connected.swap(false, Ordering::AcqRel) {
                tracing::warn!(error = %err, "lost redis; following the log from the database until it is back");
                metrics::gauge!(names::REDIS_CONNECTED).set(0.0);
            }
            if !wait(&mut backoff, &shutdown).await {
                return;
            }
        }
    }
}

/// The id of the newest entry, or `0-0` for an empty stream.
async fn newest_id(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
) -> redis::RedisResult<String> {
    let newest: StreamRangeReply = conn.xrevrange_count(key, "+", "-", 1).await?;
    Ok(newest
        .ids
        .first()
        .map_or_else(|| "0-0".to_owned(), |id| id.id.clone()))
}
