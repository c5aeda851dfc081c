//! A bare `fluxgate.v1` client: opens a stream, reads what the broker sends, acks.
//! Tests the broker's delivery contract without the agent in between.

use std::time::Duration;

use fluxgate_proto::v1::agent_service_client::AgentServiceClient;
use fluxgate_proto::v1::{self, agent_message, broker_message};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;
use tonic::{Status, Streaming};

/// (project, ref pattern); an empty pattern means every ref.
pub type Sub<'a> = (&'a str, &'a str);

pub struct RawStream {
    outbound: mpsc::Sender<v1::AgentMessage>,
    inbound: Streaming<v1::BrokerMessage>,
    pub welcome: v1::Welcome,
}

fn subscriptions(subs: &[Sub<'_>]) -> Vec<v1::Subscription> {
    subs.iter()
        .map(|(project, ref_pattern)| v1::Subscription {
            project: (*project).to_owned(),
            ref_pattern: (*ref_pattern).to_owned(),
        })
        .collect()
}

impl RawStream {
    /// Connects, sends Hello, and waits for the Welcome.
    pub async fn open(
        url: &str,
        token: &str,
        subs: &[Sub<'_>],
        resume_after: Option<u64>,
    ) -> Result<Self, Status> {
        let hello = v1::Hello {
            agent_version: "e2e".to_owned(),
            cluster_name: "e2e".to_owned(),
            subscriptions: subscriptions(subs),
            resume_after,
            // Like an agent from before the newer event kinds: git pushes only.
            accepted_kinds: Vec::new(),
        };
        Self::open_with_first(url, token, agent_message::Message::Hello(hello)).await
    }

    /// Like [`RawStream::open`], with HTTP/2 receive windows of `window` bytes: a client
    /// that does not read then stops the broker from sending after that much.
    pub async fn open_with_window(
        url: &str,
        token: &str,
        subs: &[Sub<'_>],
        window: u32,
    ) -> Result<Self, Status> {
        let hello = v1::Hello {
            agent_version: "e2e".to_owned(),
            cluster_name: "e2e".to_owned(),
            subscriptions: subscriptions(subs),
            resume_after: None,
            accepted_kinds: Vec::new(),
        };
        Self::connect(
            url,
            token,
            agent_message::Message::Hello(hello),
            Some(window),
        )
        .await
    }

    /// Connects and sends `first` as the first message (to test what the broker refuses).
    pub async fn open_with_first(
        url: &str,
        token: &str,
        first: agent_message::Message,
    ) -> Result<Self, Status> {
        Self::connect(url, token, first, None).await
    }

    async fn connect(
        url: &str,
        token: &str,
        first: agent_message::Message,
        window: Option<u32>,
    ) -> Result<Self, Status> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let endpoint = match window {
            Some(window) => endpoint
                .initial_stream_window_size(window)
                .initial_connection_window_size(window),
            None => endpoint,
        };
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut client = AgentServiceClient::new(channel);
        let (outbound, receiver) = mpsc::channel(1024);
        outbound
            .send(v1::AgentMessage {
                message: Some(first),
            })
            .await
            .map_err(|_| Status::internal("outbound closed"))?;
        let mut request = tonic::Request::new(ReceiverStream::new(receiver));
        let bearer: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::invalid_argument("token is not valid metadata"))?;
        request.metadata_mut().insert("authorization", bearer);
        let mut inbound = client.subscribe(request).await?.into_inner();
        let welcome = match inbound.message().await? {
            Some(v1::BrokerMessage {
                message: Some(broker_message::Message::Welcome(welcome)),
            }) => welcome,
            other => {
                return Err(Status::internal(format!(
                    "expected a Welcome, got {other:?}"
                )));
            }
        };
        Ok(Self {
            outbound,
            inbound,
            welcome,
        })
    }

    /// The next message, or `Ok(None)` if none arrives within `timeout`. An error is the
    /// status the broker closed the stream with.
    pub async fn next_message(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<broker_message::Message>, Status> {
        match tokio::time::timeout(timeout, self.inbound.message()).await {
            Err(_) => Ok(None),
            Ok(Ok(Some(message))) => Ok(message.message),
            Ok(Ok(None)) => Err(Status::cancelled("stream ended without a status")),
            Ok(Err(status)) => Err(status),
        }
    }

    /// The next event, skipping keepalives; `Ok(None)` if none within `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<Option<v1::Event>, Status> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_message(left).await? {
                Some(broker_message::Message::Event(event)) => return Ok(Some(event)),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }

    /// Reads until a keepalive reports a position of at least `seq`, collecting the events
    /// seen on the way. Proves the broker has passed `seq` for this stream.
    pub async fn events_until_position(
        &mut self,
        seq: u64,
        timeout: Duration,
    ) -> Result<Vec<v1::Event>, Status> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_message(left).await? {
                Some(broker_message::Message::Event(event)) => events.push(event),
                Some(broker_message::Message::Keepalive(keepalive))
                    if keepalive.position >= seq =>
                {
                    return Ok(events);
                }
                Some(_) => {}
                None => {
                    return Err(Status::deadline_exceeded(format!(
                        "the stream did not pass {seq} in time"
                    )));
                }
            }
        }
    }

    pub async fn ack(&self, seq: u64) {
        let ack = v1::Ack {
            seq,
            outcomes: vec![v1::ReceiverOutcome {
                receiver: "e2e".to_owned(),
                outcome: v1::Outcome::Delivered as i32,
                http_status: 200,
                attempts: 1,
                error: String::new(),
            }],
            handling_ms: 1,
        };
        let _ = self
            .outbound
            .send(v1::AgentMessage {
                message: Some(agent_message::Message::Ack(ack)),
            })
            .await;
    }

    /// Sends any agent message; `None` is what a kind unknown to the broker decodes to.
    pub async fn send(&self, message: Option<agent_message::Message>) {
        let _ = self.outbound.send(v1::AgentMessage { message }).await;
    }

    pub async fn change_subscriptions(&self, add: &[Sub<'_>], remove: &[Sub<'_>]) {
        let change = v1::SubscriptionChange {
            add: subscriptions(add),
            remove: subscriptions(remove),
        };
        let _ = self
            .outbound
            .send(v1::AgentMessage {
                message: Some(agent_message::Message::SubscriptionChange(change)),
            })
            .await;
    }
}
