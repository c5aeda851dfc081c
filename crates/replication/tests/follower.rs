//! The follower against a real SQLite store and the in-process bus: whatever the bus
//! delivers, drops, repeats or delays, the hub gets the log in seq order, once, without
//! gaps. Each test's poll interval is an hour unless the poll is what it tests, so only
//! the mechanism under test can explain what arrives.

use std::sync::Arc;
use std::time::Duration;

use fluxgate_core::{
    AgentId, AgentName, AgentToken, EventKind, FullPath, GitRef, LogEntry, ProjectId, ProjectRef,
    PushEvent, Seq, Sha, UnixMillis, Visibility,
};
use fluxgate_core::{HookBatch, NewRecord};
use fluxgate_fanout::{Hub, HubLimits, Registration, StreamInfo};
use fluxgate_replication::{Bus, Follower, InProcessBus};
use fluxgate_routing::{AcceptedKinds, RoutingState, Subscription};
use fluxgate_store::testing::TestDatabase;
use fluxgate_store::{CommitListener, NewAgent, Store};
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(10);
const NEVER: Duration = Duration::from_secs(3600);
const PROJECT: &str = "oss/lib";

struct Setup {
    store: Arc<dyn Store>,
    bus: Arc<InProcessBus>,
    hub: Arc<Hub>,
    stream: Registration,
    stop: CancellationToken,
    _database: TestDatabase,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A store with one agent, a hub at the store's head with one stream of that agent
/// subscribed to a public project, and a follower of `bus_capacity` batches.
async fn setup(bus_capacity: usize, poll_interval: Duration) -> Setup {
    let database = TestDatabase::sqlite();
    let store: Arc<dyn Store> = Arc::new(database.store().await);
    let (agent, _) = store
        .create_agent(NewAgent {
            name: AgentName::parse("edge").unwrap(),
            config_project: FullPath::parse("edge/config").unwrap(),
            grants: Vec::new(),
            allow_internal: false,
            token_digest: AgentToken::generate().digest(),
        })
        .await
        .unwrap();
    let snapshot = store.snapshot().await.unwrap();
    let routing = RoutingState::new([], [], snapshot.agents.iter().cloned());
    let hub = Arc::new(Hub::new(
        routing,
        snapshot.bounds.head,
        HubLimits::default(),
    ));
    let stream = register(&hub, agent.policy.id).await;
    let bus = Arc::new(InProcessBus::new(bus_capacity));
    let stop = CancellationToken::new();
    let follower = Follower::new(store.clone(), hub.clone(), bus.subscribe(), poll_interval);
    tokio::spawn(follower.run(stop.clone()));
    Setup {
        store,
        bus,
        hub,
        stream,
        stop,
        _database: database,
    }
}

async fn register(hub: &Hub, agent: AgentId) -> Registration {
    let info = StreamInfo {
        agent_name: "edge".to_owned(),
        cluster_name: None,
        agent_version: "test".to_owned(),
        connected_since: UnixMillis(0),
        last_ack_at: None,
    };
    let subscription = Subscription {
        project: FullPath::parse(PROJECT).unwrap(),
        refs: None,
        label: PROJECT.into(),
    };
    hub.register(agent, 0, info, AcceptedKinds::ALL, vec![subscription])
        .await
        .unwrap()
}

/// Commits one hook with `count` pushes (on distinct refs) to the store only; returns
/// every entry it committed (the first hook also teaches the catalog the project).
async fn commit(store: &dyn Store, first_ref: u64, count: u64) -> Vec<LogEntry> {
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
    store.append(&[hook]).await.unwrap().entries
}

fn push_seqs(entries: &[LogEntry]) -> Vec<u64> {
    entries
        .iter()
        .filter(|e| e.as_push().is_some())
        .map(|e| e.seq.get())
        .collect()
}

/// Reads `count` deliveries from the stream's queue, in the order the hub queued them.
async fn delivered(stream: &mut Registration, count: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.len() < count {
        let delivery = tokio::time::timeout(PATIENCE, stream.queue.recv())
            .await
            .unwrap_or_else(|_| panic!("only {seqs:?} of {count} deliveries arrived"))
            .expect("the stream stays registered");
        seqs.push(delivery.entry.seq.get());
    }
    seqs
}

/// Nothing more is queued once the hub reached `head`.
async fn nothing_more_after(setup: &mut Setup, head: Seq) {
    assert!(
        setup.hub.caught_up_to(head, PATIENCE).await,
        "hub at {head}"
    );
    assert!(
        setup.stream.queue.try_recv().is_err(),
        "an entry was delivered twice"
    );
}

#[tokio::test]
async fn batches_from_the_bus_reach_the_hub_in_order() {
    let mut setup = setup(16, NEVER).await;
    let mut expected = Vec::new();
    for n in 0..3 {
        let entries = commit(setup.store.as_ref(), n * 10, 3).await;
        setup.bus.committed(&entries);
        expected.extend(push_seqs(&entries));
    }
    assert_eq!(delivered(&mut setup.stream, expected.len()).await, expected);
}

#[tokio::test]
async fn a_gap_on_the_bus_is_filled_from_the_store_first() {
    let mut setup = setup(16, NEVER).await;
    let mut expected = Vec::new();
    let mut last = Vec::new();
    for n in 0..3 {
        last = commit(setup.store.as_ref(), n * 10, 2).await;
        expected.extend(push_seqs(&last));
    }
    // Only the last batch travels on the bus: the two before it were lost.
    setup.bus.committed(&last);
    assert_eq!(delivered(&mut setup.stream, expected.len()).await, expected);
}

#[tokio::test]
async fn repeated_and_late_batches_are_skipped() {
    let mut setup = setup(16, NEVER).await;
    let first = commit(setup.store.as_ref(), 0, 2).await;
    let second = commit(setup.store.as_ref(), 10, 2).await;
    setup.bus.committed(&first);
    setup.bus.committed(&second);
    setup.bus.committed(&first);
    setup.bus.committed(&second[..1]);
    let expected: Vec<u64> = push_seqs(&first)
        .into_iter()
        .chain(push_seqs(&second))
        .collect();
    assert_eq!(delivered(&mut setup.stream, expected.len()).await, expected);
    let head = second.last().unwrap().seq;
    nothing_more_after(&mut setup, head).await;
}

#[tokio::test]
async fn a_follower_that_lagged_behind_the_bus_reads_the_store() {
    // The bus keeps one batch, and all are published before the follower runs again (the
    // test runtime has one thread): it misses all but the last and is told so.
    let mut setup = setup(1, NEVER).await;
    let mut batches = Vec::new();
    for n in 0..20 {
        batches.push(commit(setup.store.as_ref(), n * 10, 1).await);
    }
    let mut expected = Vec::new();
    for entries in &batches {
        setup.bus.committed(entries);
        expected.extend(push_seqs(entries));
    }
    assert_eq!(delivered(&mut setup.stream, expected.len()).await, expected);
}

#[tokio::test]
async fn a_quiet_bus_is_followed_from_the_store_by_polling() {
    // Another process (the CLI, a replica without Redis) committed; nothing on the bus.
    let mut setup = setup(16, Duration::from_millis(50)).await;
    let entries = commit(setup.store.as_ref(), 0, 3).await;
    let expected = push_seqs(&entries);
    assert_eq!(delivered(&mut setup.stream, expected.len()).await, expected);
    // And again after a quiet while: it keeps polling.
    let entries = commit(setup.store.as_ref(), 10, 2).await;
    let expected = push_seqs(&entries);
    assert_eq!(delivered(&mut setup.stream, expected.len()).await, expected);
}

#[tokio::test]
async fn a_stream_that_needs_the_hub_current_gets_a_store_read_at_once() {
    let setup = setup(16, NEVER).await;
    let entries = commit(setup.store.as_ref(), 0, 3).await;
    let head = entries.last().unwrap().seq;
    assert!(setup.hub.head() < head);
    assert!(
        setup.hub.caught_up_to(head, PATIENCE).await,
        "without a poll or a bus message"
    );
}
