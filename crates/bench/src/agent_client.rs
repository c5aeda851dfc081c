//! A bare agent-stream client for the replay and storm scenarios: it never blocks on its
//! own acks (they go through an unbounded queue, one `Ack` message per event), so what the
//! scenarios measure is the broker's pacing, not the client's.

use std::time::Duration;

use fluxgate_proto::v1::agent_service_client::AgentServiceClient;
use fluxgate_proto::v1::{self, agent_message, broker_message};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;
use tonic::{Status, Streaming};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AgentStream {
    outbound: mpsc::UnboundedSender<v1::AgentMessage>,
    inbound: Streaming<v1::BrokerMessage>,
    pub welcome: v1::Welcome,
}

impl AgentStream {
    /// Connects (its own connection, `TCP_NODELAY`), sends a Hello subscribing to every ref
    /// of `projects`, and waits for the Welcome.
    pub async fn open(
        url: &str,
        token: &str,
        projects: &[&str],
        resume_after: Option<u64>,
    ) -> Result<Self, Status> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut client = AgentServiceClient::new(channel);
        let (outbound, queue) = mpsc::unbounded_channel();
        let hello = v1::Hello {
            agent_version: "fluxgate-bench".to_owned(),
            cluster_name: "bench".to_owned(),
            subscriptions: projects
                .iter()
                .map(|project| v1::Subscription {
                    project: (*project).to_owned(),
                    ref_pattern: String::new(),
                })
                .collect(),
            resume_after,
            accepted_kinds: Vec::new(),
        };
        outbound
            .send(v1::AgentMessage {
                message: Some(agent_message::Message::Hello(hello)),
            })
            .map_err(|_| Status::internal("outbound closed"))?;
        let mut request = tonic::Request::new(UnboundedReceiverStream::new(queue));
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

    /// The next event, skipping other messages. An error is the status the broker closed
    /// the stream with (or the connection's end).
    pub async fn next_event(&mut self) -> Result<v1::Event, Status> {
        loop {
            match self.inbound.message().await? {
                Some(v1::BrokerMessage {
                    message: Some(broker_message::Message::Event(event)),
                }) => return Ok(event),
                Some(_) => {}
                None => return Err(Status::cancelled("the stream ended without a status")),
            }
        }
    }

    /// Acks `seq` in its own message; never waits.
    pub fn ack(&self, seq: u64) {
        let ack = v1::Ack {
            seq,
            outcomes: vec![v1::ReceiverOutcome {
                receiver: "bench".to_owned(),
                outcome: v1::Outcome::Delivered as i32,
                http_status: 200,
                attempts: 1,
                error: String::new(),
            }],
            handling_ms: 0,
        };
        let _ = self.outbound.send(v1::AgentMessage {
            message: Some(agent_message::Message::Ack(ack)),
        });
    }
}
