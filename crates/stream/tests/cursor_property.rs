//! Property: an agent's stored cursor never passes an event that one of its streams was
//! entitled to and that no stream with the same subscriptions has acked.
//!
//! Random agent processes (each with its own subscriptions, sharing one agent token) open
//! and close streams, receive pushes (live and replayed), ack some of them, and the real
//! [`CursorTracker`], [`CursorSaver`] and SQLite store keep the cursors. The oracle is
//! independent of how cursors are computed: it only remembers, per subscription set, which
//! events were owed and which were acked, and checks the stored cursor against them.

use std::collections::{BTreeMap, BTreeSet};

use fluxgate_core::{AgentName, AgentToken, FullPath, Seq};
use fluxgate_routing::Subscription;
use fluxgate_store::testing::TestDatabase;
use fluxgate_store::{NewAgent, Store};
use fluxgate_stream::cursor_saver::{
    CursorSaver, StreamCursor, StreamCursorHandle, new_stream_id, subscriptions_digest,
};
use fluxgate_stream::session::cursor::CursorTracker;
use proptest::prelude::*;

const PROJECTS: u8 = 3;

#[derive(Debug, Clone)]
enum Op {
    Push { project: u8 },
    Ack { process: usize, pick: usize },
    Keepalive { process: usize },
    Disconnect { process: usize },
    Connect { process: usize },
    Flush,
}

fn op(processes: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..PROJECTS).prop_map(|project| Op::Push { project }),
        4 => (0..processes, any::<usize>()).prop_map(|(process, pick)| Op::Ack { process, pick }),
        1 => (0..processes).prop_map(|process| Op::Keepalive { process }),
        2 => (0..processes).prop_map(|process| Op::Disconnect { process }),
        2 => (0..processes).prop_map(|process| Op::Connect { process }),
        2 => Just(Op::Flush),
    ]
}

struct Stream {
    tracker: CursorTracker,
    cursor: StreamCursorHandle,
    unacked: Vec<Seq>,
}

struct Process {
    projects: BTreeSet<u8>,
    subscriptions: Vec<Subscription>,
    stream: Option<Stream>,
    /// The agent's own cursor from its last stream (sent as `resume_after`).
    claim: Option<Seq>,
}

/// What is owed per subscription set (processes with the same set are interchangeable).
#[derive(Default)]
struct Oracle {
    /// Subscription set → the first position a stream of that set started from.
    first_start: BTreeMap<BTreeSet<u8>, Seq>,
    /// Subscription set → events a stream of that set acked.
    acked: BTreeMap<BTreeSet<u8>, BTreeSet<Seq>>,
}

fn subscriptions(projects: &BTreeSet<u8>) -> Vec<Subscription> {
    projects
        .iter()
        .map(|p| {
            let path = format!("group/project-{p}");
            Subscription {
                project: FullPath::parse(&path).unwrap(),
                refs: None,
                label: path.into(),
            }
        })
        .collect()
}

async fn run(sets: Vec<BTreeSet<u8>>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let db = TestDatabase::sqlite();
    let store = db.store().await;
    let token = AgentToken::generate();
    let (record, _) = store
        .create_agent(NewAgent {
            name: AgentName::parse("many-streams").unwrap(),
            config_project: FullPath::parse("group/config").unwrap(),
            grants: Vec::new(),
            allow_internal: false,
            token_digest: token.digest(),
        })
        .await
        .unwrap();
    let agent = record.policy.id;
    let saver = CursorSaver::default();
    let mut head = record.cursor;
    let mut events: BTreeMap<Seq, u8> = BTreeMap::new();
    let mut processes: Vec<Process> = sets
        .into_iter()
        .map(|projects| Process {
            subscriptions: subscriptions(&projects),
            projects,
            stream: None,
            claim: None,
        })
        .collect();
    let mut oracle = Oracle::default();

    for op in ops {
        match op {
            Op::Push { project } => {
                head = Seq(head.get() + 1);
                events.insert(head, project);
                for process in &mut processes {
                    if let Some(stream) = &mut process.stream {
                        if process.projects.contains(&project) {
                            stream.tracker.sent(
                                head,
                                fluxgate_core::UnixMillis(0),
                                fluxgate_core::UnixMillis(0),
                            );
                            stream.unacked.push(head);
                        } else {
                            stream.tracker.pass(head);
                        }
                    }
                }
            }
            Op::Ack { process, pick } => {
                let process = &mut processes[process];
                if let Some(stream) = &mut process.stream
                    && !stream.unacked.is_empty()
                {
                    let seq = stream.unacked.remove(pick % stream.unacked.len());
                    stream.tracker.acked(seq);
                    oracle
                        .acked
                        .entry(process.projects.clone())
                        .or_default()
                        .insert(seq);
                    stream.cursor.moved(stream.tracker.cursor());
                }
            }
            Op::Keepalive { process } => {
                if let Some(stream) = &processes[process].stream {
                    stream.cursor.moved(stream.tracker.cursor());
                }
            }
            Op::Disconnect { process } => {
                let process = &mut processes[process];
                if let Some(stream) = process.stream.take() {
                    process.claim = Some(stream.tracker.cursor());
                    stream.cursor.close(stream.tracker.cursor());
                }
            }
            Op::Connect { process } => {
                let process = &mut processes[process];
                if process.stream.is_some() {
                    continue;
                }
                // As the session does: the later of the agent's claim and the stored cursor.
                let stored = stored_cursor(&store, agent).await;
                let start = process.claim.unwrap_or(Seq::ZERO).min(head).max(stored);
                let identity = StreamCursor::open(
                    agent,
                    new_stream_id(),
                    subscriptions_digest(&process.subscriptions),
                    start,
                );
                let mut stream = Stream {
                    tracker: CursorTracker::new(start),
                    cursor: saver.open(identity, start),
                    unacked: Vec::new(),
                };
                for (&seq, project) in events.range(Seq(start.get() + 1)..) {
                    if process.projects.contains(project) {
                        stream.tracker.sent(
                            seq,
                            fluxgate_core::UnixMillis(0),
                            fluxgate_core::UnixMillis(0),
                        );
                        stream.unacked.push(seq);
                    } else {
                        stream.tracker.pass(seq);
                    }
                }
                stream.tracker.pass(head);
                oracle
                    .first_start
                    .entry(process.projects.clone())
                    .or_insert(start);
                process.stream = Some(stream);
            }
            Op::Flush => {
                saver.flush(&store).await;
                let stored = stored_cursor(&store, agent).await;
                for (set, first_start) in &oracle.first_start {
                    let acked = oracle.acked.get(set);
                    let owed = events
                        .range(Seq(first_start.get() + 1)..)
                        .find(|(seq, project)| {
                            set.contains(project) && !acked.is_some_and(|a| a.contains(seq))
                        });
                    if let Some((seq, project)) = owed {
                        prop_assert!(
                            stored < *seq,
                            "stored cursor {stored} passed event {seq} (project {project}), \
                             owed to subscriptions {set:?} and never acked by them"
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

async fn stored_cursor(store: &impl Store, agent: fluxgate_core::AgentId) -> Seq {
    store
        .list_agents()
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.policy.id == agent)
        .unwrap()
        .cursor
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_stored_cursor_never_passes_an_owed_unacked_event(
        sets in prop::collection::vec(
            prop::collection::btree_set(0..PROJECTS, 1..=PROJECTS as usize), 1..=3),
        ops in prop::collection::vec(op(3), 1..80),
    ) {
        let processes = sets.len();
        let ops: Vec<Op> = ops
            .into_iter()
            .filter(|op| match op {
                Op::Ack { process, .. }
                | Op::Keepalive { process }
                | Op::Disconnect { process }
                | Op::Connect { process } => *process < processes,
                Op::Push { .. } | Op::Flush => true,
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(sets, ops))?;
    }
}
