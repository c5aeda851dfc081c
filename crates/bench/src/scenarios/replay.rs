//! Scenario F, backlog replay: the broker as shipped; `backlog` hooks ingested first (16
//! connections, a distinct ref each) while the one agent is away; then one stream opens
//! from cursor 0 and acks every event in its own message as it reads it. Measures the time
//! from the open to the last event read and to the stored cursor reaching the head, the
//! broker's CPU, events per second; checks that every seq arrives once and in order.
//!
//! `--sparse`: only one of the `backlog` events is for the agent; measures one reconnect
//! that has to find it (time to the event, broker CPU).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fluxgate_e2e::harness::Project;

use crate::agent_client::AgentStream;
use crate::payload::push_body;
use crate::{procfs, setup};

/// Hooks in flight while the backlog is ingested.
const INGEST_CONNECTIONS: u64 = 16;
/// A replay that sends nothing for this long has stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the stored cursor may take to reach the head once everything was read.
const CURSOR_DEADLINE: Duration = Duration::from_secs(30);
const CURSOR_POLL: Duration = Duration::from_millis(20);
/// The agent (created first: `agent-0`, configuration project `bench/p0`).
const AGENT_NAME: &str = "agent-0";
const AGENT_PROJECT: &str = "bench/p0";

pub async fn run(backlog: u64, sparse: bool) -> anyhow::Result<()> {
    let shape = if sparse {
        "1 of them for the agent"
    } else {
        "all for the agent"
    };
    println!("## F. Replay of a {backlog}-event backlog ({shape}) to one stream from cursor 0");
    anyhow::ensure!(backlog >= 1, "--backlog must be at least 1");
    let bench = setup::start_broker(&[]).await?;
    let token = setup::create_agents(&bench.broker, 1).await?.remove(0);

    let mine = Project::private(1, AGENT_PROJECT);
    let other = Project::private(2, "bench/other");
    // With --sparse, the agent's one event is among the last: finding it means reading
    // the whole backlog.
    let own_event = backlog - 1;
    let ingest_started = Instant::now();
    let mut seqs = ingest(&bench, backlog, move |n| {
        if !sparse || n == own_event {
            mine.clone()
        } else {
            other.clone()
        }
    })
    .await?;
    let ingest_elapsed = ingest_started.elapsed();
    seqs.sort_unstable();
    println!(
        "- ingested {backlog} hooks in {:.1} s ({:.0}/s, {INGEST_CONNECTIONS} connections); {} for the agent",
        ingest_elapsed.as_secs_f64(),
        backlog as f64 / ingest_elapsed.as_secs_f64(),
        seqs.len()
    );
    let head = *seqs
        .last()
        .ok_or_else(|| anyhow::anyhow!("no hook for the agent was accepted"))?;

    let cpu_before = procfs::cpu_seconds(bench.pid)?;
    let opened = Instant::now();
    let mut stream =
        AgentStream::open(&bench.broker.agent_url(), &token, &[AGENT_PROJECT], Some(0))
            .await
            .map_err(|status| anyhow::anyhow!("could not open the stream: {status}"))?;
    let welcomed = opened.elapsed();
    println!(
        "- Welcome: resume after {}, head {}",
        stream.welcome.resume_after, stream.welcome.head_seq
    );
    let mut received = 0usize;
    let mut out_of_order = 0u64;
    let mut failure = None;
    let mut last_event_at = welcomed;
    while received < seqs.len() {
        match tokio::time::timeout(STALL_TIMEOUT, stream.next_event()).await {
            Err(_) => {
                failure = Some(format!(
                    "the replay stalled: nothing for {} s",
                    STALL_TIMEOUT.as_secs()
                ));
                break;
            }
            Ok(Err(status)) => {
                failure = Some(format!("the broker closed the stream: {status}"));
                break;
            }
            Ok(Ok(event)) => {
                stream.ack(event.seq);
                if seqs.get(received) != Some(&event.seq) {
                    out_of_order += 1;
                }
                received += 1;
                last_event_at = opened.elapsed();
            }
        }
    }
    let cpu_at_last_event = procfs::cpu_seconds(bench.pid)? - cpu_before;
    let cursor_at_head = if failure.is_none() {
        wait_for_cursor(&bench, head, opened).await?
    } else {
        None
    };
    let cpu = procfs::cpu_seconds(bench.pid)? - cpu_before;

    println!(
        "- Welcome after {:.1} ms; {received} of {} events read, last after {:.3} s ({:.0} events/s)",
        welcomed.as_secs_f64() * 1000.0,
        seqs.len(),
        last_event_at.as_secs_f64(),
        received as f64 / last_event_at.as_secs_f64().max(1e-9)
    );
    match cursor_at_head {
        Some(at) => println!(
            "- stored cursor reached the head ({head}) {:.3} s after the open",
            at.as_secs_f64()
        ),
        None => println!(
            "- stored cursor did not reach the head ({head}) within {} s of the last event",
            CURSOR_DEADLINE.as_secs()
        ),
    }
    println!(
        "- broker CPU: {cpu_at_last_event:.3} s to the last event, {cpu:.3} s to the cursor at the head ({:.1} µs per event)",
        cpu * 1e6 / received.max(1) as f64
    );
    if sparse {
        println!(
            "- one reconnect that finds 1 event in {backlog}: {:.3} s, {cpu_at_last_event:.3} s of broker CPU",
            last_event_at.as_secs_f64(),
        );
    } else {
        println!(
            "- ratio to the issue's goal (100 k events in ≤ 2 s): {:.2}",
            last_event_at.as_secs_f64() / (2.0 * backlog as f64 / 100_000.0)
        );
    }
    if let Some(failure) = failure {
        anyhow::bail!(
            "events were lost: {failure} after {received} of {}",
            seqs.len()
        );
    }
    anyhow::ensure!(
        out_of_order == 0,
        "{out_of_order} events arrived out of order or more than once"
    );
    Ok(())
}

/// POSTs `count` hooks (hook `n` to `project_of(n)` on `refs/heads/r<n>`) over
/// [`INGEST_CONNECTIONS`] connections; returns the seqs of those for the agent's project.
async fn ingest(
    bench: &setup::Bench,
    count: u64,
    project_of: impl Fn(u64) -> Project + Clone + Send + Sync + 'static,
) -> anyhow::Result<Vec<u64>> {
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..INGEST_CONNECTIONS {
        let (hooks, next, project_of) = (bench.broker.hooks(), next.clone(), project_of.clone());
        workers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return anyhow::Ok(seqs);
                }
                let project = project_of(n);
                let body = push_body(&project, &format!("refs/heads/r{n}"), n);
                let response = hooks.post(&body, &[]).await?;
                anyhow::ensure!(response.status == 200, "hook refused: {:?}", response.body);
                if project.path == AGENT_PROJECT {
                    seqs.extend(response.seqs());
                }
            }
        }));
    }
    let mut seqs = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for worker in workers {
        seqs.extend(worker.await??);
    }
    Ok(seqs)
}

/// When (after `opened`) the agent's stored cursor reached `head`, polling the admin API;
/// `None` if it did not within [`CURSOR_DEADLINE`].
async fn wait_for_cursor(
    bench: &setup::Bench,
    head: u64,
    opened: Instant,
) -> anyhow::Result<Option<Duration>> {
    let url = bench
        .broker
        .http_url(&format!("/api/v1/agents/{AGENT_NAME}"));
    let deadline = Instant::now() + CURSOR_DEADLINE;
    while Instant::now() < deadline {
        let shown: serde_json::Value = bench
            .broker
            .client()
            .get(&url)
            .bearer_auth(setup::ADMIN_TOKEN)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if shown["cursor"].as_u64().unwrap_or(0) >= head {
            return Ok(Some(opened.elapsed()));
        }
        tokio::time::sleep(CURSOR_POLL).await;
    }
    Ok(None)
}
