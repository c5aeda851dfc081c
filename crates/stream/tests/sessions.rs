//! Agent streams in process: the real gRPC service, sessions, hub, follower and in-process
//! bus on a SQLite store, over a loopback socket, with a bare `fluxgate.v1` client. What
//! the end-to-end tests check with processes, in milliseconds.

use std::sync::Arc;
use std::time::Duration;

use fluxgate_core::{
    AgentName, AgentToken, EventKind, FullPath, GitRef, LogEntry, ProjectId, ProjectRef, PushEvent,
    Seq, Sha, UnixMillis, Visibility,
};
use fluxgate_core::{HookBatch, NewRecord};
use fluxgate_fanout::{Hub, HubLimits};
use fluxgate_proto::v1::agent_service_client::AgentServiceClient;
use fluxgate_proto::v1::{self, agent_message, broker_message};
use fluxgate_replication::{Bus, Follower, InProcessBus};
use fluxgate_routing::RoutingState;
use fluxgate_store::testing::TestDatabase;
use fluxgate_store::{AgentUpdate, CommitListener, NewAgent, Store};
use fluxgate_stream::{AgentReports, AgentStreams, CursorSaver, DeliveryRecorder, StreamContext};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, Streaming};

const PATIENCE: Duration = Duration::from_secs(10);
const PROJECT: &str = "oss/lib";

/// One replica's streaming side, serving on a loopback port.
struct Broker {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    bus: Arc<InProcessBus>,
    url: String,
    token: AgentToken,
    stop: CancellationToken,
    _database: TestDatabase,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Broker {
    async fn start() -> Self {
        Self::start_with(HubLimits::default(), 1000).await
    }

    /// A broker with these hub limits, closing a stream whose agent holds more than
    /// `max_unacked` events unacked.
    async fn start_with(limits: HubLimits, max_unacked: usize) -> Self {
        let database = TestDatabase::sqlite();
        let store: Arc<dyn Store> = Arc::new(database.store().await);
        let token = AgentToken::generate();
        store
            .create_agent(NewAgent {
                name: AgentName::parse("edge").unwrap(),
                config_project: FullPath::parse("edge/config").unwrap(),
                grants: Vec::new(),
                allow_internal: false,
                token_digest: token.digest(),
            })
            .await
            .unwrap();
        let snapshot = store.snapshot().await.unwrap();
        let routing = RoutingState::new([], [], snapshot.agents.iter().cloned());
        let hub = Arc::new(Hub::new(routing, snapshot.bounds.head, limits));
        let bus = Arc::new(InProcessBus::new(64));
        let stop = CancellationToken::new();
        let follower = Follower::new(
            store.clone(),
            hub.clone(),
            bus.subscribe(),
            Duration::from_secs(3600),
        );
        tokio::spawn(follower.run(stop.clone()));
        let (deliveries, writer) = DeliveryRecorder::new();
        tokio::spawn(writer.run(store.clone(), stop.clone()));
        let reports = Arc::new(AgentReports::default());
        tokio::spawn(reports.clone().run(store.clone(), stop.clone()));
        let context = Arc::new(StreamContext {
            hub: hub.clone(),
            store: store.clone(),
            cursors: Arc::new(CursorSaver::default()),
            broker_id: "replica-test".to_owned(),
            keepalive: Duration::from_millis(200),
            max_unacked,
            deliveries,
            reports,
            shutdown: stop.clone(),
        });
        let service = AgentStreams::new(context, PATIENCE).into_server();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = stop.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                    shutdown.cancelled().await;
                }),
        );
        Self {
            store,
            hub,
            bus,
            url,
            token,
            stop,
            _database: database,
        }
    }

    /// Commits `count` pushes to the project and publishes them, as the writer does.
    async fn push(&self, first_ref: u64, count: u64) -> Vec<u64> {
        let entries = self.commit(first_ref, count).await;
        self.bus.committed(&entries);
        push_seqs(&entries)
    }

    /// Commits `count` pushes without publishing them (the backlog of a new stream).
    async fn commit(&self, first_ref: u64, count: u64) -> Vec<LogEntry> {
        let records = (first_ref..first_ref + count)
            .map(|n| {
                NewRecord::Push(PushEvent {
                    event_id: uuid::Uuid::new_v4(),
                    project: ProjectRef {
                        id: ProjectId::new(1).unwrap(),
                        path: FullPath::parse(PROJECT).unwrap(),
                        visibility: Some(Visibility::Public),
                    },
                    git_ref: Some(GitRef::parse(&format!("refs/heads/b{n}")).unwrap()),
                    before: Sha::parse(&"0".repeat(40)).unwrap(),
                    after: Sha::parse(&format!("{:040x}", n + 1)).unwrap(),
                    kind: EventKind::Push,
                    artifact: None,
                    received_at: UnixMillis(0),
                })
            })
            .collect();
        let hook = HookBatch {
            idempotency_key: None,
            records,
        };
        self.store.append(&[hook]).await.unwrap().entries
    }

    async fn open(&self, projects: &[&str]) -> Result<AgentStream, Status> {
        self.open_accepting(projects, &[]).await
    }

    /// Commits one ref-less project push (GitLab's KAS notice) and, if `publish`, publishes it.
    async fn project_push(&self, publish: bool) -> u64 {
        let record = NewRecord::Push(PushEvent {
            event_id: uuid::Uuid::new_v4(),
            project: ProjectRef {
                id: ProjectId::new(1).unwrap(),
                path: FullPath::parse(PROJECT).unwrap(),
                visibility: Some(Visibility::Public),
            },
            git_ref: None,
            before: Sha::zero(),
            after: Sha::zero(),
            kind: EventKind::ProjectPush,
            artifact: None,
            received_at: UnixMillis(0),
        });
        let hook = HookBatch {
            idempotency_key: None,
            records: vec![record],
        };
        let entries = self.store.append(&[hook]).await.unwrap().entries;
        if publish {
            self.bus.committed(&entries);
        }
        push_seqs(&entries)[0]
    }

    /// Opens a stream whose Hello lists `kinds` as accepted beyond git pushes.
    async fn open_accepting(
        &self,
        projects: &[&str],
        kinds: &[v1::EventKind],
    ) -> Result<AgentStream, Status> {
        self.open_with(subscriptions(projects), kinds).await
    }

    /// Commits and publishes one push to project `id` at `path` with `visibility` (the
    /// catalog learns the project from it).
    async fn push_to(&self, id: i64, path: &str, visibility: Visibility) -> u64 {
        let record = NewRecord::Push(PushEvent {
            event_id: uuid::Uuid::new_v4(),
            project: ProjectRef {
                id: ProjectId::new(id).unwrap(),
                path: FullPath::parse(path).unwrap(),
                visibility: Some(visibility),
            },
            git_ref: Some(GitRef::parse("refs/heads/main").unwrap()),
            before: Sha::zero(),
            after: Sha::parse(&format!("{id:040x}")).unwrap(),
            kind: EventKind::Push,
            artifact: None,
            received_at: UnixMillis(0),
        });
        let hook = HookBatch {
            idempotency_key: None,
            records: vec![record],
        };
        let entries = self.store.append(&[hook]).await.unwrap().entries;
        self.bus.committed(&entries);
        push_seqs(&entries)[0]
    }

    /// Opens a stream with these subscriptions; its Welcome is kept in the stream.
    async fn open_with(
        &self,
        subscriptions: Vec<v1::Subscription>,
        kinds: &[v1::EventKind],
    ) -> Result<AgentStream, Status> {
        let mut client = AgentServiceClient::connect(self.url.clone())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (outbound, messages) = mpsc::channel(16);
        let hello = v1::Hello {
            agent_version: "test".to_owned(),
            cluster_name: String::new(),
            subscriptions,
            resume_after: None,
            accepted_kinds: kinds.iter().map(|&kind| kind as i32).collect(),
        };
        outbound
            .send(agent_message(agent_message::Message::Hello(hello)))
            .await
            .unwrap();
        let mut request = tonic::Request::new(ReceiverStream::new(messages));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token.reveal()).parse().unwrap(),
        );
        let mut inbound = client.subscribe(request).await?.into_inner();
        let welcome = match inbound.message().await?.and_then(|m| m.message) {
            Some(broker_message::Message::Welcome(welcome)) => welcome,
            other => panic!("expected a Welcome, got {other:?}"),
        };
        Ok(AgentStream {
            outbound,
            inbound,
            welcome,
        })
    }
}

fn push_seqs(entries: &[LogEntry]) -> Vec<u64> {
    entries
        .iter()
        .filter(|e| e.as_push().is_some())
        .map(|e| e.seq.get())
        .collect()
}

fn subscriptions(projects: &[&str]) -> Vec<v1::Subscription> {
    projects
        .iter()
        .map(|project| v1::Subscription {
            project: (*project).to_owned(),
            ref_pattern: String::new(),
        })
        .collect()
}

fn agent_message(message: agent_message::Message) -> v1::AgentMessage {
    v1::AgentMessage {
        message: Some(message),
    }
}

struct AgentStream {
    outbound: mpsc::Sender<v1::AgentMessage>,
    inbound: Streaming<v1::BrokerMessage>,
    welcome: v1::Welcome,
}

impl AgentStream {
    /// The seqs of the next `count` events (keepalives skipped).
    async fn events(&mut self, count: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        while seqs.len() < count {
            match self.next().await {
                Ok(broker_message::Message::Event(event)) => seqs.push(event.seq),
                Ok(_) => {}
                Err(status) => panic!("closed after {seqs:?}: {status:?}"),
            }
        }
        seqs
    }

    /// The next message, or the status the stream ended with.
    async fn next(&mut self) -> Result<broker_message::Message, Status> {
        let message = tokio::time::timeout(PATIENCE, self.inbound.message())
            .await
            .expect("a message in time")?;
        message
            .and_then(|m| m.message)
            .ok_or_else(|| Status::cancelled("ended without a status"))
    }

    /// The status the stream ends with, skipping what comes before it.
    async fn end(&mut self) -> Status {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stream did not end within {PATIENCE:?}"
            );
            if let Err(status) = self.next().await {
                return status;
            }
        }
    }

    /// The next subscription status update (other messages skipped), within `PATIENCE`.
    async fn status_update(&mut self) -> Vec<(String, String, v1::SubscriptionState)> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no subscription status update within {PATIENCE:?}"
            );
            match self.next().await {
                Ok(broker_message::Message::SubscriptionStatus(update)) => {
                    return states(&update.subscriptions);
                }
                Ok(_) => {}
                Err(status) => panic!("closed before a status update: {status:?}"),
            }
        }
    }

    /// Events until a keepalive shows the stream passed `seq`.
    async fn events_until_position(&mut self, seq: u64) -> Vec<u64> {
        let mut seqs = Vec::new();
        loop {
            match self.next().await {
                Ok(broker_message::Message::Event(event)) => seqs.push(event.seq),
                Ok(broker_message::Message::Keepalive(k)) if k.position >= seq => return seqs,
                Ok(_) => {}
                Err(status) => panic!("closed after {seqs:?}: {status:?}"),
            }
        }
    }
}

#[tokio::test]
async fn backlog_then_live_events_arrive_in_seq_order_once() {
    let broker = Broker::start().await;
    let backlog = push_seqs(&broker.commit(0, 5).await);
    let mut stream = broker.open(&[PROJECT]).await.unwrap();
    let live = broker.push(10, 5).await;
    let expected: Vec<u64> = backlog.iter().chain(&live).copied().collect();
    assert_eq!(stream.events(expected.len()).await, expected);
    let last = *expected.last().unwrap();
    assert_eq!(
        stream.events_until_position(last).await,
        Vec::<u64>::new(),
        "nothing twice"
    );
}

/// A ref-less project push reaches, from the backlog and live, only a stream whose Hello
/// accepts that kind; an older agent's stream skips it and still gets the git pushes.
#[tokio::test]
async fn project_pushes_reach_only_streams_that_accept_them() {
    let broker = Broker::start().await;
    let in_backlog = broker.project_push(false).await;
    let mut newer = broker
        .open_accepting(&[PROJECT], &[v1::EventKind::ProjectPush])
        .await
        .unwrap();
    let mut older = broker.open(&[PROJECT]).await.unwrap();
    let live = broker.project_push(true).await;
    let push = broker.push(0, 1).await;
    assert_eq!(newer.events(3).await, [in_backlog, live, push[0]]);
    assert_eq!(older.events_until_position(push[0]).await, push);
}

#[tokio::test]
async fn a_subscription_change_applies_to_the_open_stream() {
    let broker = Broker::start().await;
    let mut stream = broker.open(&["other/app"]).await.unwrap();
    let unseen = broker.push(0, 1).await;
    assert_eq!(
        stream.events_until_position(unseen[0]).await,
        Vec::<u64>::new()
    );
    let change = v1::SubscriptionChange {
        add: subscriptions(&[PROJECT]),
        remove: subscriptions(&["other/app"]),
    };
    stream
        .outbound
        .send(agent_message(agent_message::Message::SubscriptionChange(
            change,
        )))
        .await
        .unwrap();
    // The change and the pushes travel separately: push until one arrives.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut pushed = Vec::new();
    let first = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change never applied"
        );
        pushed.extend(broker.push(10 + pushed.len() as u64, 1).await);
        if let Ok(Ok(Some(message))) =
            tokio::time::timeout(Duration::from_millis(100), stream.inbound.message()).await
            && let Some(broker_message::Message::Event(event)) = message.message
        {
            break event.seq;
        }
    };
    assert!(
        pushed.contains(&first),
        "{first} was pushed after the change"
    );
    let later = broker.push(100, 2).await;
    let rest = stream.events_until_position(later[1]).await;
    assert!(rest.ends_with(&later), "{rest:?} ends with {later:?}");
}

#[tokio::test]
async fn a_rotated_token_closes_the_stream_as_unauthenticated() {
    let broker = Broker::start().await;
    let mut stream = broker.open(&[PROJECT]).await.unwrap();
    let (_, entry) = broker
        .store
        .update_agent(
            &AgentName::parse("edge").unwrap(),
            AgentUpdate::RotateToken {
                digest: AgentToken::generate().digest(),
            },
        )
        .await
        .unwrap();
    broker.bus.committed(&[entry]);
    let status = stream.end().await;
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::Unauthenticated,
            "the agent's token was rotated; use the new token"
        )
    );
    let refused = broker.open(&[PROJECT]).await.err().unwrap();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn shutdown_closes_open_streams_as_unavailable() {
    let broker = Broker::start().await;
    let mut stream = broker.open(&[PROJECT]).await.unwrap();
    broker.stop.cancel();
    let status = stream.end().await;
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::Unavailable,
            "the broker is shutting down; reconnect to another replica"
        )
    );
}

fn subscription(project: &str, ref_pattern: &str) -> v1::Subscription {
    v1::Subscription {
        project: project.to_owned(),
        ref_pattern: ref_pattern.to_owned(),
    }
}

/// (project, ref pattern, state) of each status.
fn states(statuses: &[v1::SubscriptionStatus]) -> Vec<(String, String, v1::SubscriptionState)> {
    statuses
        .iter()
        .map(|status| {
            let subscription = status.subscription.clone().unwrap_or_default();
            (
                subscription.project,
                subscription.ref_pattern,
                status.state(),
            )
        })
        .collect()
}

fn state(
    project: &str,
    ref_pattern: &str,
    state: v1::SubscriptionState,
) -> (String, String, v1::SubscriptionState) {
    (project.to_owned(), ref_pattern.to_owned(), state)
}

/// Waits until the hub has applied everything committed so far.
async fn settle(broker: &Broker, mut stream: AgentStream) -> AgentStream {
    let head = broker.store.log_bounds().await.unwrap().head.get();
    stream.events_until_position(head).await;
    stream
}

/// The Welcome says, per subscription in the Hello's order (repeats once), whether it can
/// match and why not, naming the rule.
#[tokio::test]
async fn the_welcome_states_whether_each_subscription_can_match() {
    use v1::SubscriptionState::{Matchable, NoSuchProject, NotAllowed, UnmatchableRef};
    let broker = Broker::start().await;
    broker.push_to(1, PROJECT, Visibility::Public).await;
    broker.push_to(2, "team/app", Visibility::Private).await;
    broker.push_to(3, "corp/tool", Visibility::Internal).await;
    settle(&broker, broker.open(&[]).await.unwrap()).await;

    let stream = broker
        .open_with(
            vec![
                subscription(PROJECT, "main"),
                subscription("team/app", ""),
                subscription("corp/tool", ""),
                subscription("oss/lbi", ""),
                subscription(PROJECT, "refs/heads/*.lock"),
                subscription(PROJECT, "main"),
            ],
            &[],
        )
        .await
        .unwrap();
    let statuses = &stream.welcome.subscription_status;
    assert_eq!(
        states(statuses),
        [
            state(PROJECT, "main", Matchable),
            state("team/app", "", NotAllowed),
            state("corp/tool", "", NotAllowed),
            state("oss/lbi", "", NoSuchProject),
            state(PROJECT, "refs/heads/*.lock", UnmatchableRef),
        ]
    );
    for (index, expected) in [
        "a public project",
        "neither the agent's configuration project nor granted",
        "does not allow internal projects",
        "no project oss/lbi is known to the broker",
        "a component ends with `.lock`",
    ]
    .iter()
    .enumerate()
    {
        assert!(
            statuses[index].reason.contains(expected),
            "{index}: {:?} does not say {expected:?}",
            statuses[index].reason
        );
    }
    assert_eq!(statuses[0].project_path, PROJECT);
    assert_eq!(statuses[3].project_path, "");
}

/// After a subscription change the broker answers with every subscription's status; a
/// grant and a new project each change it, and it reaches the store for `agent show`.
#[tokio::test]
async fn status_updates_follow_changes_and_the_routing_state() {
    use v1::SubscriptionState::{Matchable, NoSuchProject, NotAllowed};
    let broker = Broker::start().await;
    broker.push_to(2, "team/app", Visibility::Private).await;
    settle(&broker, broker.open(&[]).await.unwrap()).await;
    let mut stream = broker.open(&["team/app"]).await.unwrap();
    assert_eq!(
        states(&stream.welcome.subscription_status),
        [state("team/app", "", NotAllowed)]
    );

    let change = v1::SubscriptionChange {
        add: subscriptions(&["new/project"]),
        remove: Vec::new(),
    };
    stream
        .outbound
        .send(agent_message(agent_message::Message::SubscriptionChange(
            change,
        )))
        .await
        .unwrap();
    assert_eq!(
        stream.status_update().await,
        [
            state("team/app", "", NotAllowed),
            state("new/project", "", NoSuchProject)
        ],
        "the answer to the change"
    );

    let (_, granted) = broker
        .store
        .update_agent(
            &AgentName::parse("edge").unwrap(),
            AgentUpdate::Grant {
                grants: vec![fluxgate_core::Grant::Group(
                    FullPath::parse("team").unwrap(),
                )],
                allow_internal: false,
            },
        )
        .await
        .unwrap();
    broker.bus.committed(&[granted]);
    assert_eq!(
        stream.status_update().await,
        [
            state("team/app", "", Matchable),
            state("new/project", "", NoSuchProject)
        ],
        "after the grant"
    );

    broker.push_to(9, "new/project", Visibility::Public).await;
    let expected = [
        state("team/app", "", Matchable),
        state("new/project", "", Matchable),
    ];
    assert_eq!(
        stream.status_update().await,
        expected,
        "after the project appeared"
    );

    // The writer runs in the background: poll the store until the last report is there.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let stored = broker
            .store
            .agent(&AgentName::parse("edge").unwrap())
            .await
            .unwrap()
            .unwrap()
            .subscription_status;
        let found: Option<Vec<(String, fluxgate_core::SubscriptionState)>> = stored.map(|r| {
            r.subscriptions
                .into_iter()
                .map(|s| (s.project, s.state))
                .collect()
        });
        if found
            == Some(vec![
                (
                    "team/app".to_owned(),
                    fluxgate_core::SubscriptionState::Matchable,
                ),
                (
                    "new/project".to_owned(),
                    fluxgate_core::SubscriptionState::Matchable,
                ),
            ])
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store never got the last report: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the store holds `count` delivery records for `seq`.
async fn records(broker: &Broker, seq: u64, count: usize) -> Vec<fluxgate_core::DeliveryRecord> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let found = broker.store.delivery_records(Seq(seq)).await.unwrap();
        if found.len() >= count {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{count} records of seq {seq}, found {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sync_report(seq: u64, stage: v1::SyncStage, object: &str) -> v1::AgentMessage {
    agent_message(agent_message::Message::SyncReport(v1::SyncReport {
        seq,
        stage: stage as i32,
        object: object.to_owned(),
        revision: format!("main@sha1:{}", "a".repeat(40)),
        message: if stage == v1::SyncStage::Failed {
            "kustomize build failed".to_owned()
        } else {
            String::new()
        },
        observed_at: None,
        event_received_at: None,
    }))
}

/// Acks and sync reports become delivery records: the ack with when the event was sent
/// and each Receiver's answer, each sync stage with its object, revision and message; an
/// event sent but not acked when the stream ends is recorded as `sent`.
#[tokio::test]
async fn acks_sync_reports_and_unacked_sends_become_delivery_records() {
    use fluxgate_core::DeliveryStage;
    let broker = Broker::start().await;
    let mut stream = broker.open(&[PROJECT]).await.unwrap();
    let seqs = broker.push(0, 2).await;
    assert_eq!(stream.events(2).await, seqs);
    stream
        .outbound
        .send(agent_message(agent_message::Message::Ack(v1::Ack {
            seq: seqs[0],
            outcomes: vec![v1::ReceiverOutcome {
                receiver: "apps/podinfo".to_owned(),
                outcome: v1::Outcome::Delivered as i32,
                http_status: 200,
                attempts: 2,
                error: String::new(),
            }],
            handling_ms: 15,
        })))
        .await
        .unwrap();
    for (stage, object) in [
        (v1::SyncStage::Fetched, "GitRepository/apps/podinfo"),
        (v1::SyncStage::Applied, "Kustomization/apps/podinfo"),
        (v1::SyncStage::Failed, "Kustomization/apps/config"),
    ] {
        stream
            .outbound
            .send(sync_report(seqs[0], stage, object))
            .await
            .unwrap();
    }
    let found = records(&broker, seqs[0], 4).await;
    let acked = found
        .iter()
        .find(|r| r.stage == DeliveryStage::Acked)
        .expect("the ack");
    assert_eq!(acked.detail.handling_ms, Some(15));
    assert_eq!(acked.detail.replica, "replica-test");
    assert!(acked.detail.sent_at.is_some_and(|sent| sent <= acked.at));
    assert_eq!(acked.detail.receivers[0].receiver, "apps/podinfo");
    assert_eq!(acked.detail.receivers[0].outcome, "delivered");
    assert_eq!(acked.detail.receivers[0].attempts, 2);
    let failed = found
        .iter()
        .find(|r| r.stage == DeliveryStage::Failed)
        .expect("the failure");
    assert_eq!(failed.object, "Kustomization/apps/config");
    assert_eq!(failed.detail.message, "kustomize build failed");
    assert!(
        found
            .iter()
            .any(|r| r.stage == DeliveryStage::Fetched && r.object == "GitRepository/apps/podinfo")
    );
    // The second event was never acked: the stream's end records it as sent.
    drop(stream);
    let unacked = records(&broker, seqs[1], 1).await;
    assert_eq!(unacked[0].stage, DeliveryStage::Sent);
}

/// A report for no event of the log, of no known stage, or without its object is refused
/// with a message that names the field, and closes the stream.
#[tokio::test]
async fn a_malformed_sync_report_is_refused_naming_the_field() {
    let broker = Broker::start().await;
    let seq = broker.push(0, 1).await[0];
    let cases = [
        (
            sync_report(seq + 100, v1::SyncStage::Fetched, "GitRepository/a/b"),
            "sync_report.seq",
        ),
        (
            sync_report(seq, v1::SyncStage::Unspecified, "GitRepository/a/b"),
            "sync_report.stage",
        ),
        (
            sync_report(seq, v1::SyncStage::Applied, "Kustomization"),
            "sync_report.object",
        ),
    ];
    for (report, field) in cases {
        let mut stream = broker.open(&[PROJECT]).await.unwrap();
        stream.outbound.send(report).await.unwrap();
        let status = stream.end().await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(field), "{status:?}");
    }
}

/// Waits until this replica has no stream open.
async fn no_stream_open(broker: &Broker) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !broker.hub.open_streams().await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a stream is still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Live events go from the hub's queue to the socket without the session task: when the
/// agent holds too many of them unacked, the stream closes with a status that says so, the
/// session ends (it records the unacked events), and the agent resumes from its cursor.
#[tokio::test]
async fn a_live_event_beyond_the_unacked_cap_closes_the_stream_and_the_agent_resumes() {
    use fluxgate_core::DeliveryStage;
    const CAP: usize = 5;
    let broker = Broker::start_with(HubLimits::default(), CAP).await;
    let mut stream = broker.open(&[PROJECT]).await.unwrap();
    let seqs = broker.push(0, CAP as u64 + 1).await;
    assert_eq!(stream.events(CAP).await, seqs[..CAP]);
    let status = stream.end().await;
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::ResourceExhausted,
            "more than 5 events are unacknowledged; reconnect to resume from the cursor"
        )
    );
    no_stream_open(&broker).await;
    let unacked = records(&broker, seqs[0], 1).await;
    assert_eq!(unacked[0].stage, DeliveryStage::Sent);
    let mut again = broker.open(&[PROJECT]).await.unwrap();
    assert_eq!(again.welcome.resume_after, 0, "nothing was acked");
    assert_eq!(again.events(CAP).await, seqs[..CAP]);
}

/// An agent that stops reading fills its stream's queue; the hub closes the stream as
/// lagged, and the agent, reading again, gets what was sent and then that status.
#[tokio::test]
async fn an_agent_that_stops_reading_is_closed_as_lagged() {
    let limits = HubLimits {
        queue_capacity: 4,
        ..HubLimits::default()
    };
    let broker = Broker::start_with(limits, 100_000).await;
    let mut stream = broker.open(&[PROJECT]).await.unwrap();
    // Far more than the client's HTTP/2 window (64 KiB) holds: the body stops being
    // polled, and the queue fills.
    broker.push(0, 2_000).await;
    no_stream_open(&broker).await;
    let mut received = 0;
    let status = loop {
        match stream.next().await {
            Ok(broker_message::Message::Event(_)) => received += 1,
            Ok(_) => {}
            Err(status) => break status,
        }
    };
    assert!(received < 2_000, "all {received} events arrived");
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::ResourceExhausted,
            "the agent did not keep up with its events; reconnect to resume from the cursor"
        )
    );
}
