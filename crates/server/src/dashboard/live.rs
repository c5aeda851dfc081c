//! The dashboard's data, kept current for every open page: one shared reading of the store
//! per second at most (however many pages are open), and a server-sent event stream per
//! page that sends the snapshot whenever it changed.
//!
//! Everything comes from the store (and presence), never from this replica's memory of
//! events, so every replica shows the same. Each refresh first reads a cheap watermark
//! (log head, count and newest time of recent delivery records); the recent pushes are
//! read again only when it moved. Agents (cursor, last seen, connections) are read each
//! time. Streams are capped ([`MAX_STREAMS`]), send a keepalive comment every
//! [`KEEPALIVE`], and end when the HTTP listener shuts down.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::IntoResponse as _;
use axum::response::sse::{Event, KeepAlive, Sse};
use fluxgate_core::{ApiError, Seq};
use fluxgate_fanout::Hub;
use fluxgate_store::{DeliveryWatermark, RecentPushes};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::view::{self, Snapshot};
use crate::admin::{AgentAdmin, AgentView, ConnectionView, rfc3339};

/// Pushes shown.
pub const RECENT_PUSHES: u32 = 50;
/// Delivery records read for them, at most.
pub const MAX_RECORDS: u32 = 5_000;
/// Open event streams per replica, at most.
pub const MAX_STREAMS: usize = 32;
/// How often a page's stream looks for a change.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// A reading younger than this is shared instead of read again.
const FRESH_FOR: Duration = Duration::from_millis(900);
/// A comment line on an idle stream, so that proxies keep it open.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// A snapshot and its version (bumped whenever its content changes).
#[derive(Debug, Clone)]
pub struct Versioned {
    pub version: u64,
    pub json: Arc<str>,
}

struct Cache {
    read_at: Option<Instant>,
    /// The watermark read before the pushes were, and the seq it was read from.
    watermark: Option<(Seq, DeliveryWatermark)>,
    recent: Arc<RecentPushes>,
    snapshot: Option<Snapshot>,
    current: Versioned,
}

/// The shared reader.
pub struct Live {
    admin: Arc<AgentAdmin>,
    /// This replica's hub, when presence is not shared through Redis (one replica): its
    /// open streams say at once when an agent connects or goes.
    local: Option<(Arc<Hub>, String)>,
    cache: Mutex<Cache>,
    streams: Arc<Semaphore>,
    shutdown: CancellationToken,
}

impl Live {
    pub fn new(
        admin: Arc<AgentAdmin>,
        local: Option<(Arc<Hub>, String)>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            admin,
            local,
            cache: Mutex::new(Cache {
                read_at: None,
                watermark: None,
                recent: Arc::new(RecentPushes::default()),
                snapshot: None,
                current: Versioned {
                    version: 0,
                    json: Arc::from("{}"),
                },
            }),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            shutdown,
        }
    }

    /// The current snapshot, read again if the last reading is older than a second.
    pub async fn current(&self) -> Result<Versioned, ApiError> {
        let mut cache = self.cache.lock().await;
        if cache.read_at.is_some_and(|at| at.elapsed() < FRESH_FOR) {
            return Ok(cache.current.clone());
        }
        let store = self.admin.store().clone();
        let agents = self.agents().await?;
        // The records of the pushes shown: from the oldest one on. The watermark is read
        // before the pushes, so a record written in between moves the next one.
        let from = cache
            .recent
            .pushes
            .last()
            .map_or(Seq(0), |push| push.entry.seq);
        let watermark = store
            .delivery_watermark(from)
            .await
            .map_err(|e| e.to_api_error())?;
        if cache.watermark != Some((from, watermark)) {
            cache.recent = Arc::new(
                store
                    .recent_pushes(RECENT_PUSHES, MAX_RECORDS)
                    .await
                    .map_err(|e| e.to_api_error())?,
            );
            // A new push moves `from`, so the next reading reads the pushes once more.
            cache.watermark = Some((from, watermark));
        }
        let snapshot = view::build(watermark.head, &agents, &cache.recent);
        if cache.snapshot.as_ref() != Some(&snapshot) {
            let json = serde_json::to_string(&snapshot).expect("a snapshot always serialises");
            cache.current = Versioned {
                version: cache.current.version + 1,
                json: Arc::from(json),
            };
            cache.snapshot = Some(snapshot);
        }
        cache.read_at = Some(Instant::now());
        Ok(cache.current.clone())
    }

    /// Agents as the admin API shows them, with this replica's open streams when presence
    /// is not shared.
    async fn agents(&self) -> Result<Vec<AgentView>, ApiError> {
        let mut agents = self.admin.list().await?;
        if let Some((hub, replica)) = &self.local {
            let open = hub.open_streams().await;
            for agent in &mut agents {
                agent.connections = open
                    .iter()
                    .filter(|(_, id, _)| id.0 == agent.id)
                    .map(|(_, _, info)| ConnectionView {
                        replica: replica.clone(),
                        connected_since: rfc3339(info.connected_since),
                        last_ack_at: info.last_ack_at.map(rfc3339),
                        cluster_name: info.cluster_name.clone(),
                        agent_version: info.agent_version.clone(),
                    })
                    .collect();
                agent.connected = !agent.connections.is_empty();
            }
        }
        Ok(agents)
    }

    /// A place for one more event stream, or `None` at [`MAX_STREAMS`].
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.streams.clone().try_acquire_owned().ok()
    }

    /// The event stream of one page: a `snapshot` event now and after every change, until
    /// the page goes or the listener shuts down.
    pub fn stream(self: Arc<Self>, permit: OwnedSemaphorePermit) -> axum::response::Response {
        let (sender, receiver) = mpsc::channel::<Result<Event, Infallible>>(2);
        tokio::spawn(async move {
            let _permit = permit;
            let mut sent = None;
            let mut ticker = tokio::time::interval(POLL_INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = self.shutdown.cancelled() => break,
                    () = sender.closed() => break,
                    _ = ticker.tick() => {}
                }
                let event = match self.current().await {
                    Ok(current) if sent != Some(current.version) => {
                        sent = Some(current.version);
                        Event::default()
                            .event("snapshot")
                            .id(current.version.to_string())
                            .data(current.json.as_ref())
                    }
                    Ok(_) => continue,
                    Err(err) => {
                        tracing::warn!(error = %err.message, "dashboard: cannot read the store");
                        Event::default().event("problem").data(err.message)
                    }
                };
                if sender.send(Ok(event)).await.is_err() {
                    break;
                }
            }
        });
        Sse::new(ReceiverStream::new(receiver))
            .keep_alive(KeepAlive::new().interval(KEEPALIVE))
            .into_response()
    }
}
