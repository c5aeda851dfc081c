//! The fluxgate side of the fan-out benchmark: the broker as shipped (setup::start_broker),
//! `streams` agent streams on one agent token, each subscribed to one public project and
//! acking every event; pushes to that project through the hook endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fluxgate_e2e::harness::{HookClient, Project, RawStream};
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::record::{Deliveries, RoundFigures, SideFigures, print_round};
use super::{Plan, open_files};
use crate::payload::{number_of, push_body};
use crate::{procfs, setup};

const PUBLIC_PROJECT: &str = "bench/public";
/// Streams being opened at once (each is its own HTTP/2 connection).
const OPENING_AT_ONCE: usize = 32;
/// The broker's default `agent_max_connections`.
const DEFAULT_AGENT_MAX_CONNECTIONS: usize = 10_000;

/// What the fluxgate side measured, and the encoded size of one event an agent received
/// (the NATS side sends payloads of that size).
pub struct BrokerRun {
    pub figures: SideFigures,
    pub event_bytes: usize,
}

pub async fn run(plan: &Plan) -> anyhow::Result<BrokerRun> {
    let streams = plan.streams;
    println!("### fluxgate: {streams} agent streams on one agent token");
    let open_files_before = open_files()?;
    // One token for every stream (as many clusters sharing one agent): its cap is lifted.
    // Every other setting is the shipped default.
    let streams_flag = streams.to_string();
    let mut flags = vec!["--max-streams-per-agent", streams_flag.as_str()];
    println!(
        "- non-default flags: --max-streams-per-agent {streams} (all streams share one agent token; the default cap is 16)"
    );
    if streams > DEFAULT_AGENT_MAX_CONNECTIONS {
        flags.extend(["--agent-max-connections", streams_flag.as_str()]);
        println!(
            "- non-default flags: --agent-max-connections {streams} (one connection per stream; the default cap is {DEFAULT_AGENT_MAX_CONNECTIONS})"
        );
    }
    let bench = setup::start_broker(&flags).await?;
    let token = setup::create_agents(&bench.broker, 1).await?.remove(0);

    let deliveries = Arc::new(Deliveries::new(streams));
    let event_bytes = Arc::new(AtomicUsize::new(0));
    let opened = Instant::now();
    let mut readers =
        open_streams(&bench.broker.agent_url(), &token, &deliveries, &event_bytes).await?;
    println!(
        "- {streams} streams open in {:.1} s",
        opened.elapsed().as_secs_f64()
    );

    let hooks = bench.broker.hooks();
    let public = Project::new(1_000_000, PUBLIC_PROJECT, 20);
    // Every stream gets a first push before anything is measured: all are subscribed.
    let cpu_before = procfs::cpu_seconds(bench.pid)?;
    let started = Instant::now();
    post(&hooks, &public, 0).await?;
    let warm_up = RoundFigures::finish(
        &deliveries,
        bench.pid,
        cpu_before,
        started,
        &[(0, started)],
        vec![],
    )
    .await?;
    warm_up.deliveries.ensure_complete("fluxgate, first push")?;
    let event_bytes = event_bytes.load(Ordering::Relaxed);
    println!(
        "- first push reached all {streams} streams in {:.2} ms; an encoded Event is {event_bytes} bytes",
        warm_up.deliveries.time_to_last.as_secs_f64() * 1e3
    );

    let mut singles = Vec::with_capacity(plan.singles);
    for (i, n) in (1..=plan.singles as u64).enumerate() {
        let cpu_before = procfs::cpu_seconds(bench.pid)?;
        let started = Instant::now();
        let answer = post(&hooks, &public, n).await?;
        let round = RoundFigures::finish(
            &deliveries,
            bench.pid,
            cpu_before,
            started,
            &[(n, started)],
            vec![answer],
        )
        .await?;
        print_round(&format!("single push {}", i + 1), &round);
        round.deliveries.ensure_complete("fluxgate, single push")?;
        singles.push(round);
    }

    let first = 1_000;
    let burst =
        sequential_burst(&hooks, &public, &deliveries, bench.pid, first, plan.burst).await?;
    print_round(
        &format!("burst of {} pushes (sequential hooks)", plan.burst),
        &burst,
    );
    burst.deliveries.ensure_complete("fluxgate, burst")?;

    let concurrent_burst = match plan.concurrent_hooks {
        Some(concurrency) => {
            let first = 2_000;
            let round = concurrent_burst(
                &hooks,
                &public,
                &deliveries,
                bench.pid,
                first..first + plan.burst as u64,
                concurrency,
            )
            .await?;
            print_round(
                &format!(
                    "burst of {} pushes ({concurrency} concurrent hooks)",
                    plan.burst
                ),
                &round,
            );
            round
                .deliveries
                .ensure_complete("fluxgate, concurrent burst")?;
            Some(round)
        }
        None => None,
    };

    println!(
        "- hooks answered 503 and sent again: {}",
        RESENT_HOOKS.load(Ordering::Relaxed)
    );

    // Close every stream and stop the broker: the NATS side needs the file descriptors.
    readers.abort_all();
    while readers.join_next().await.is_some() {}
    drop(bench);
    wait_for_open_files(open_files_before + 64, Duration::from_secs(30)).await;
    Ok(BrokerRun {
        figures: SideFigures {
            singles,
            burst,
            concurrent_burst,
        },
        event_bytes,
    })
}

/// Opens `deliveries.streams()` streams, `OPENING_AT_ONCE` at a time, each read by its own
/// task that records and acks every event.
async fn open_streams(
    url: &str,
    token: &str,
    deliveries: &Arc<Deliveries>,
    event_bytes: &Arc<AtomicUsize>,
) -> anyhow::Result<JoinSet<()>> {
    let permits = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let mut opening = JoinSet::new();
    for index in 0..deliveries.streams() {
        let (url, token, permits) = (url.to_owned(), token.to_owned(), permits.clone());
        opening.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let stream = RawStream::open(&url, &token, &[(PUBLIC_PROJECT, "")], None)
                .await
                .map_err(|status| anyhow::anyhow!("stream {index} could not open: {status}"))?;
            anyhow::Ok((index, stream))
        });
    }
    let mut readers = JoinSet::new();
    while let Some(opened) = opening.join_next().await {
        let (index, stream) = opened??;
        readers.spawn(read_and_ack(
            index,
            stream,
            deliveries.clone(),
            event_bytes.clone(),
        ));
    }
    Ok(readers)
}

async fn read_and_ack(
    index: usize,
    mut stream: RawStream,
    deliveries: Arc<Deliveries>,
    event_bytes: Arc<AtomicUsize>,
) {
    while let Ok(Some(event)) = stream.next_event(Duration::from_secs(3600)).await {
        if let Some(push) = number_of(&event.after) {
            deliveries.record(index, push);
        }
        if index == 0 {
            event_bytes.store(prost::Message::encoded_len(&event), Ordering::Relaxed);
        }
        stream.ack(event.seq).await;
    }
}

/// How often a hook answered 503 is sent again, as GitLab resends (the broker says
/// resending is safe: duplicates are detected).
const HOOK_ATTEMPTS: usize = 5;

/// Hooks answered 503 and sent again, over the whole run.
static RESENT_HOOKS: AtomicUsize = AtomicUsize::new(0);

/// POSTs push `n` to `project` until it is accepted; returns the time from the first
/// attempt to the accepting answer.
async fn post(hooks: &HookClient, project: &Project, n: u64) -> anyhow::Result<Duration> {
    let body = push_body(project, &format!("refs/heads/n{n}"), n);
    let started = Instant::now();
    for attempt in 1..=HOOK_ATTEMPTS {
        let response = hooks.post(&body, &[]).await?;
        if response.status == 503 && attempt < HOOK_ATTEMPTS {
            RESENT_HOOKS.fetch_add(1, Ordering::Relaxed);
            println!(
                "- push {n}: hook answered 503 after {} ms ({}); sent again",
                started.elapsed().as_millis(),
                response.body["message"].as_str().unwrap_or_default()
            );
            continue;
        }
        anyhow::ensure!(
            response.status == 200,
            "hook refused: {} {:?}",
            response.status,
            response.body
        );
        break;
    }
    Ok(started.elapsed())
}

/// `count` pushes, each POSTed once the previous one was answered.
async fn sequential_burst(
    hooks: &HookClient,
    project: &Project,
    deliveries: &Deliveries,
    pid: u32,
    first: u64,
    count: usize,
) -> anyhow::Result<RoundFigures> {
    let mut sent = Vec::with_capacity(count);
    let mut answers = Vec::with_capacity(count);
    let cpu_before = procfs::cpu_seconds(pid)?;
    let started = Instant::now();
    for n in first..first + count as u64 {
        sent.push((n, Instant::now()));
        answers.push(post(hooks, project, n).await?);
    }
    RoundFigures::finish(deliveries, pid, cpu_before, started, &sent, answers).await
}

/// The pushes `numbers`, POSTed by `concurrency` senders at once.
async fn concurrent_burst(
    hooks: &HookClient,
    project: &Project,
    deliveries: &Deliveries,
    pid: u32,
    numbers: std::ops::Range<u64>,
    concurrency: usize,
) -> anyhow::Result<RoundFigures> {
    let next = Arc::new(AtomicU64::new(numbers.start));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let cpu_before = procfs::cpu_seconds(pid)?;
    let started = Instant::now();
    let mut senders = JoinSet::new();
    for _ in 0..concurrency {
        let (hooks, project, next, sent, answers, end) = (
            hooks.clone(),
            project.clone(),
            next.clone(),
            sent.clone(),
            answers.clone(),
            numbers.end,
        );
        senders.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= end {
                    return anyhow::Ok(());
                }
                sent.lock().push((n, Instant::now()));
                let answer = post(&hooks, &project, n).await?;
                answers.lock().push(answer);
            }
        });
    }
    while let Some(sender) = senders.join_next().await {
        sender??;
    }
    let sent = std::mem::take(&mut *sent.lock());
    let answers = std::mem::take(&mut *answers.lock());
    RoundFigures::finish(deliveries, pid, cpu_before, started, &sent, answers).await
}

/// Polls until this process has at most `limit` open files, or `timeout` passes.
async fn wait_for_open_files(limit: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        match open_files() {
            Ok(open) if open <= limit => return,
            Ok(open) if Instant::now() >= deadline => {
                eprintln!("warning: {open} files are still open after the fluxgate side");
                return;
            }
            Err(_) => return,
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
