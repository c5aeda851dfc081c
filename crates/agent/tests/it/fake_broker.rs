//! A fake broker: the generated `AgentService` server on `127.0.0.1:0`, driven by the
//! test. Each stream the agent opens is handed to the test as a [`FakeStream`] once its
//! Hello has arrived; the test sends broker messages and reads the agent's acks.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use fluxgate_proto::v1 as proto;
use fluxgate_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use parking_lot::Mutex;
use proto::agent_message::Message as AgentMessage;
use proto::broker_message::Message;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::support::PATIENCE;

type Outbound = mpsc::UnboundedSender<Result<proto::BrokerMessage, Status>>;

pub struct FakeBroker {
    address: SocketAddr,
    streams: mpsc::UnboundedReceiver<FakeStream>,
    rejections: Arc<Mutex<VecDeque<Status>>>,
    attempts: Arc<AtomicUsize>,
    server: JoinHandle<()>,
}

impl FakeBroker {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake broker");
        let address = listener.local_addr().expect("address");
        let (stream_sender, streams) = mpsc::unbounded_channel();
        let service = Service {
            streams: stream_sender,
            rejections: Arc::default(),
            attempts: Arc::default(),
        };
        let rejections = Arc::clone(&service.rejections);
        let attempts = Arc::clone(&service.attempts);
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AgentServiceServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        Self {
            address,
            streams,
            rejections,
            attempts,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The next stream the agent opens, once its Hello has arrived.
    pub async fn next_stream(&mut self) -> FakeStream {
        tokio::time::timeout(PATIENCE, self.streams.recv())
            .await
            .expect("the agent opens a stream in time")
            .expect("the fake broker is running")
    }

    /// Refuses the next Subscribe call with `status`.
    pub fn reject_next(&self, status: Status) {
        self.rejections.lock().push_back(status);
    }

    /// How many Subscribe calls arrived, refused ones included.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One stream, seen from the broker's side.
pub struct FakeStream {
    pub hello: proto::Hello,
    /// The `authorization` metadata the agent sent.
    pub authorization: Option<String>,
    outbound: Outbound,
    inbound: mpsc::UnboundedReceiver<proto::AgentMessage>,
    /// Health reports that arrived while a test waited for an ack.
    health: VecDeque<proto::ReceiverHealth>,
}

impl FakeStream {
    pub fn send(&self, message: Message) {
        self.outbound
            .send(Ok(proto::BrokerMessage {
                message: Some(message),
            }))
            .expect("the stream is open");
    }

    /// A Welcome from a broker that predates receiver health reports.
    pub fn welcome(&self, resume_after: u64, cursor_expired: bool) {
        self.send_welcome(resume_after, cursor_expired, false);
    }

    /// A Welcome from a broker that accepts receiver health reports.
    pub fn welcome_with_health(&self, resume_after: u64) {
        self.send_welcome(resume_after, false, true);
    }

    /// A Welcome that promises a keepalive every `seconds`.
    pub fn welcome_with_keepalive(&self, seconds: u32) {
        self.send(Message::Welcome(proto::Welcome {
            keepalive_seconds: seconds,
            ..welcome(0, false, false)
        }));
    }

    fn send_welcome(&self, resume_after: u64, cursor_expired: bool, accepts_health: bool) {
        self.send(Message::Welcome(welcome(
            resume_after,
            cursor_expired,
            accepts_health,
        )));
    }

    /// A push (tag push for `refs/tags/…`) to `project`, matched through `matched`.
    pub fn event(&self, seq: u64, project: &str, git_ref: &str, matched: &[&str]) {
        let kind = if git_ref.starts_with("refs/tags/") {
            proto::EventKind::TagPush
        } else {
            proto::EventKind::Push
        };
        self.send(Message::Event(proto::Event {
            seq,
            event_id: format!("event-{seq}"),
            project_id: 42,
            project_path: project.to_owned(),
            r#ref: git_ref.to_owned(),
            before: "0".repeat(40),
            after: format!("{seq:040}"),
            kind: kind as i32,
            received_at: None,
            matched_projects: matched.iter().map(|p| (*p).to_owned()).collect(),
            artifact: None,
        }));
    }

    pub fn keepalive(&self, position: u64) {
        self.send(Message::Keepalive(proto::Keepalive { position }));
    }

    /// The next ack from the agent. Health reports that arrive first are kept for
    /// [`FakeStream::next_health`].
    pub async fn next_ack(&mut self) -> proto::Ack {
        loop {
            match self.next_message("an ack").await {
                AgentMessage::Ack(ack) => return ack,
                AgentMessage::ReceiverHealth(report) => self.health.push_back(report),
                other => panic!("expected an ack, got {other:?}"),
            }
        }
    }

    /// The next subscription change from the agent; health reports that arrive first
    /// are kept for [`FakeStream::next_health`].
    pub async fn next_subscription_change(&mut self) -> proto::SubscriptionChange {
        loop {
            match self.next_message("a subscription change").await {
                AgentMessage::SubscriptionChange(change) => return change,
                AgentMessage::ReceiverHealth(report) => self.health.push_back(report),
                other => panic!("expected a subscription change, got {other:?}"),
            }
        }
    }

    /// The next receiver health report; acks that arrive first are checked to be absent
    /// (a test asks for a report only when no ack may come).
    pub async fn next_health(&mut self) -> proto::ReceiverHealth {
        if let Some(report) = self.health.pop_front() {
            return report;
        }
        match self.next_message("a health report").await {
            AgentMessage::ReceiverHealth(report) => report,
            other => panic!("expected a health report, got {other:?}"),
        }
    }

    /// True if a message from the agent is waiting, without waiting for one.
    pub fn has_pending_message(&self) -> bool {
        !self.inbound.is_empty()
    }

    async fn next_message(&mut self, what: &str) -> AgentMessage {
        let message = tokio::time::timeout(PATIENCE, self.inbound.recv())
            .await
            .unwrap_or_else(|_| panic!("{what} arrives in time"))
            .expect("the agent keeps the stream open");
        message.message.expect("the agent sends no empty message")
    }

    /// Ends the stream cleanly (status OK), as a broker that closes it would.
    pub fn close(self) {}

    /// Fails the stream with `status`.
    pub fn fail(self, status: Status) {
        let _ = self.outbound.send(Err(status));
    }
}

struct Service {
    streams: mpsc::UnboundedSender<FakeStream>,
    rejections: Arc<Mutex<VecDeque<Status>>>,
    attempts: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl AgentService for Service {
    type SubscribeStream = UnboundedReceiverStream<Result<proto::BrokerMessage, Status>>;

    async fn subscribe(
        &self,
        request: Request<Streaming<proto::AgentMessage>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if let Some(status) = self.rejections.lock().pop_front() {
            return Err(status);
        }
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut from_agent = request.into_inner();
        let (outbound, to_agent) = mpsc::unbounded_channel();
        let streams = self.streams.clone();
        tokio::spawn(async move {
            let Ok(Some(first)) = from_agent.message().await else {
                return;
            };
            let Some(proto::agent_message::Message::Hello(hello)) = first.message else {
                let _ = outbound.send(Err(Status::invalid_argument("Hello first")));
                return;
            };
            let (inbound_sender, inbound) = mpsc::unbounded_channel();
            let stream = FakeStream {
                hello,
                authorization,
                outbound,
                inbound,
                health: VecDeque::new(),
            };
            if streams.send(stream).is_err() {
                return;
            }
            while let Ok(Some(message)) = from_agent.message().await {
                if inbound_sender.send(message).is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(UnboundedReceiverStream::new(to_agent)))
    }
}

fn welcome(resume_after: u64, cursor_expired: bool, accepts_health: bool) -> proto::Welcome {
    proto::Welcome {
        agent_name: "test-agent".to_owned(),
        broker_id: "fake".to_owned(),
        resume_after,
        cursor_expired,
        head_seq: 100,
        keepalive_seconds: 15,
        accepts_receiver_health: accepts_health,
        accepts_sync_reports: false,
        subscription_status: Vec::new(),
    }
}
