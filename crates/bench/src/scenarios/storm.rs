//! Scenario G, reconnect storm: two replicas on a fresh PostgreSQL database and the local
//! Redis (a key prefix of the run's own), both started on CPU 0 while this process (the
//! agents and the hooks) runs on CPU 1. `agents` agents, each its own token and
//! configuration project, created through the admin API; half stream to each replica, all
//! subscribed to one public project. Pushes to that project go to replica a at a steady
//! rate; replica b is SIGKILLed; its agents reconnect to a (jittered backoff, resuming
//! after the last seq they acked). Measures the time from the kill until every agent is
//! connected again and until every agent has acked the head as it was at the kill, and
//! checks that every agent got every push (all pushes come after every first stream
//! opened): any loss exits non-zero.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fluxgate_e2e::harness::{Broker, BrokerOptions, Project};
use fluxgate_store::testing::TestDatabase;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::agent_client::AgentStream;
use crate::payload::push_body;
use crate::{procfs, setup};

const PUBLIC_PROJECT: &str = "storm/public";
const REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Agents created (admin API calls) and first streams opened at once.
const SETUP_CONCURRENCY: usize = 32;
/// File descriptors kept free for everything but the agents' sockets.
const SPARE_DESCRIPTORS: u64 = 1024;
/// Pushes before the kill, so the agents are in their steady state.
const BEFORE_KILL: Duration = Duration::from_secs(3);
/// Pushes after everyone caught up, to see that the survivor keeps delivering.
const AFTER_CATCH_UP: Duration = Duration::from_secs(2);
/// How long the agents may take to connect, to reconnect and catch up, and to drain.
const CONNECT_DEADLINE: Duration = Duration::from_secs(1800);
const STORM_DEADLINE: Duration = Duration::from_secs(900);
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);
const MONITOR_POLL: Duration = Duration::from_millis(10);
/// Reconnect backoff: `BACKOFF_BASE · 2^failures`, at most `BACKOFF_MAX`, jittered down to
/// half.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The goal: all back and caught up within this.
const GOAL: Duration = Duration::from_secs(10);
/// No open stream.
const NOWHERE: usize = usize::MAX;

/// One agent as the run sees it.
struct AgentState {
    /// The replica (0 or 1) its current stream is on, or [`NOWHERE`].
    replica: AtomicUsize,
    last_acked: AtomicU64,
    streams_opened: AtomicU64,
    received: Mutex<Vec<u64>>,
}

impl AgentState {
    fn new() -> Self {
        Self {
            replica: AtomicUsize::new(NOWHERE),
            last_acked: AtomicU64::new(0),
            streams_opened: AtomicU64::new(0),
            received: Mutex::new(Vec::new()),
        }
    }
}

pub async fn run(requested_agents: usize, rate: f64) -> anyhow::Result<()> {
    let agents = feasible_agents(requested_agents)?;
    println!(
        "## G. Reconnect storm: {agents} agents on two replicas (PostgreSQL + Redis), {rate} pushes/s to a public project, one replica SIGKILLed"
    );
    anyhow::ensure!(
        agents >= 2 && rate > 0.0,
        "need 2 agents and a rate above 0"
    );

    let database = TestDatabase::postgres().await;
    let dirs = tempfile::tempdir()?;
    let token_file = dirs.path().join("admin-token");
    std::fs::write(&token_file, setup::ADMIN_TOKEN)?;
    let prefix = format!(
        "bench-storm-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let replica = |name: &str| {
        let mut options =
            BrokerOptions::replica(dirs.path().join(name), database.url(), REDIS_URL, &prefix);
        options.admin_token_file = Some(token_file.clone());
        options.shipped_defaults = true;
        options.cpu = Some(setup::SYSTEM_UNDER_TEST_CPU);
        // The survivor must take every agent: lift the listener's cap (10,000 by default).
        options.extra_args = vec![
            "--broker-id".to_owned(),
            format!("replica-{name}"),
            "--agent-max-connections".to_owned(),
            "1000000".to_owned(),
        ];
        options
    };
    let mut replicas = [
        Broker::start(replica("a")).await,
        Broker::start(replica("b")).await,
    ];
    procfs::pin(std::process::id(), setup::LOAD_GENERATOR_CPU);
    let pids = [
        replicas[0]
            .pid()
            .ok_or_else(|| anyhow::anyhow!("a is not running"))?,
        replicas[1]
            .pid()
            .ok_or_else(|| anyhow::anyhow!("b is not running"))?,
    ];
    let result = storm(&replicas, pids, agents, rate).await;
    for replica in &mut replicas {
        replica.kill().await;
    }
    drop(replicas);
    drop(database);
    remove_redis_keys(&prefix).await;
    result
}

async fn storm(
    replicas: &[Broker; 2],
    pids: [u32; 2],
    agents: usize,
    rate: f64,
) -> anyhow::Result<()> {
    let hooks = replicas[0].hooks();
    let public = Project::new(1_000_000, PUBLIC_PROJECT, 20);
    // The project's first push puts it in the catalog before anyone subscribes.
    let first = hooks
        .post(&push_body(&public, "refs/heads/first", 0), &[])
        .await?;
    anyhow::ensure!(first.status == 200, "hook refused: {:?}", first.body);

    let created = Instant::now();
    let tokens = create_agents(&replicas[0], agents).await?;
    println!(
        "- {agents} agents created through the admin API in {:.1} s",
        created.elapsed().as_secs_f64()
    );

    let urls = Arc::new([replicas[0].agent_url(), replicas[1].agent_url()]);
    let states: Arc<Vec<AgentState>> = Arc::new((0..agents).map(|_| AgentState::new()).collect());
    let stop = CancellationToken::new();
    let first_opens = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let cpu_before_connect = [procfs::cpu_seconds(pids[0])?, procfs::cpu_seconds(pids[1])?];
    let connecting = Instant::now();
    let mut tasks = Vec::with_capacity(agents);
    for (index, token) in tokens.into_iter().enumerate() {
        tasks.push(tokio::spawn(agent_loop(
            index,
            token,
            urls.clone(),
            states.clone(),
            first_opens.clone(),
            stop.clone(),
        )));
    }
    let connected = wait_until(CONNECT_DEADLINE, || {
        states
            .iter()
            .all(|s| s.replica.load(Ordering::Relaxed) != NOWHERE)
    })
    .await;
    let connect_elapsed = connecting.elapsed();
    let connect_cpu = procfs::cpu_seconds(pids[0])? - cpu_before_connect[0]
        + procfs::cpu_seconds(pids[1])?
        - cpu_before_connect[1];
    let on_b = states
        .iter()
        .filter(|s| s.replica.load(Ordering::Relaxed) == 1)
        .count();
    println!(
        "- first streams: {} of {agents} open in {:.1} s ({on_b} on replica b), {:.1} ms of broker CPU per stream",
        agents - count_nowhere(&states),
        connect_elapsed.as_secs_f64(),
        connect_cpu * 1000.0 / agents as f64
    );
    if !connected {
        stop.cancel();
        anyhow::bail!("not every agent could open its first stream");
    }

    // Steady pushes to replica a until the end of the run.
    let accepted: Arc<Mutex<Vec<u64>>> = Arc::default();
    let refused = Arc::new(AtomicU64::new(0));
    let pushing = CancellationToken::new();
    let pusher = tokio::spawn(push_steadily(
        hooks.clone(),
        public.clone(),
        rate,
        accepted.clone(),
        refused.clone(),
        pushing.clone(),
    ));
    tokio::time::sleep(BEFORE_KILL).await;

    let target = accepted.lock().iter().copied().max().unwrap_or(0);
    let cpu_a_before = procfs::cpu_seconds(pids[0])?;
    let killed = Instant::now();
    // SIGKILL: replica b gets no chance to close its streams.
    std::process::Command::new("kill")
        .args(["-KILL", &pids[1].to_string()])
        .status()?;
    let mut all_back = None;
    let mut caught_up = None;
    let storm_deadline = killed + STORM_DEADLINE;
    while caught_up.is_none() && Instant::now() < storm_deadline {
        let back = states
            .iter()
            .all(|s| s.replica.load(Ordering::Relaxed) == 0);
        if back && all_back.is_none() {
            all_back = Some(killed.elapsed());
        }
        if back
            && states
                .iter()
                .all(|s| s.last_acked.load(Ordering::Relaxed) >= target)
        {
            caught_up = Some(killed.elapsed());
        }
        tokio::time::sleep(MONITOR_POLL).await;
    }
    let storm_cpu = procfs::cpu_seconds(pids[0])? - cpu_a_before;
    let reconnects: u64 = states
        .iter()
        .map(|s| s.streams_opened.load(Ordering::Relaxed).saturating_sub(1))
        .sum();

    if caught_up.is_some() {
        tokio::time::sleep(AFTER_CATCH_UP).await;
    }
    pushing.cancel();
    pusher.await?;
    let mut pushes = std::mem::take(&mut *accepted.lock());
    pushes.sort_unstable();
    let head = pushes.last().copied().unwrap_or(0);
    let drained = wait_until(DRAIN_DEADLINE, || {
        states
            .iter()
            .all(|s| s.last_acked.load(Ordering::Relaxed) >= head)
    })
    .await;
    stop.cancel();
    for task in tasks {
        task.await?;
    }

    let (mut lost, mut duplicates, mut agents_with_loss) = (0u64, 0u64, 0usize);
    for state in states.iter() {
        let mut received = std::mem::take(&mut *state.received.lock());
        let total = received.len();
        received.sort_unstable();
        received.dedup();
        duplicates += (total - received.len()) as u64;
        let missing = pushes
            .iter()
            .filter(|seq| received.binary_search(seq).is_err())
            .count() as u64;
        lost += missing;
        agents_with_loss += usize::from(missing > 0);
    }

    let seconds = |at: Option<Duration>| {
        at.map_or_else(
            || format!("not within {} s", STORM_DEADLINE.as_secs()),
            |at| format!("{:.2} s", at.as_secs_f64()),
        )
    };
    println!(
        "- {} pushes accepted ({} refused) at {rate}/s; replica b SIGKILLed {} s in, head then seq {target}",
        pushes.len(),
        refused.load(Ordering::Relaxed),
        BEFORE_KILL.as_secs()
    );
    println!(
        "- after the kill: every agent connected to a again after {}, every agent acked seq {target} after {}; {reconnects} reconnects",
        seconds(all_back),
        seconds(caught_up)
    );
    println!("- replica a CPU from the kill to caught up: {storm_cpu:.2} s");
    // Until every agent reached the final head, a missing delivery may still be on its way.
    let missing = if drained {
        "lost"
    } else {
        "not delivered by the end of the run (the agents never caught up)"
    };
    println!(
        "- deliveries: {} expected ({} pushes × {agents} agents), {lost} {missing} ({agents_with_loss} agents), {duplicates} duplicates; drained to seq {head}: {drained}",
        pushes.len() as u64 * agents as u64,
        pushes.len()
    );
    if let Some(at) = caught_up {
        println!(
            "- ratio to the issue's goal (all back and caught up ≤ {} s): {:.2}",
            GOAL.as_secs(),
            at.as_secs_f64() / GOAL.as_secs_f64()
        );
    }
    anyhow::ensure!(lost == 0, "{lost} deliveries {missing}");
    anyhow::ensure!(
        caught_up.is_some(),
        "the agents did not all reconnect and catch up"
    );
    anyhow::ensure!(drained, "the agents did not all reach the final head");
    Ok(())
}

/// The number of agents this process can hold open: one socket each, plus spare
/// descriptors, within the soft `RLIMIT_NOFILE`.
fn feasible_agents(requested: usize) -> anyhow::Result<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    let fits = usize::try_from(soft.saturating_sub(SPARE_DESCRIPTORS)).unwrap_or(usize::MAX);
    if requested > fits {
        println!(
            "- {requested} agents do not fit: the open-file limit is {soft} and each agent holds a socket here and one on the survivor; running {fits}"
        );
        return Ok(fits);
    }
    Ok(requested)
}

/// Agent `i`: `storm-<i>`, configuration project `storm/agent<i>`; returns the tokens.
async fn create_agents(broker: &Broker, count: usize) -> anyhow::Result<Vec<String>> {
    let url = broker.http_url("/api/v1/agents");
    let client = broker.client().clone();
    let created: Vec<anyhow::Result<String>> = futures_util::stream::iter(0..count)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                setup::create_agent(
                    &client,
                    &url,
                    &format!("storm-{i}"),
                    &format!("storm/agent{i}"),
                )
                .await
            }
        })
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
    created.into_iter().collect()
}

/// One agent: streams from its home replica (`index % 2`); when a stream ends or a
/// connection fails, waits a jittered backoff and tries again, switching replica after a
/// failed connection, resuming after the last seq it acked.
async fn agent_loop(
    index: usize,
    token: String,
    urls: Arc<[String; 2]>,
    states: Arc<Vec<AgentState>>,
    first_opens: Arc<Semaphore>,
    stop: CancellationToken,
) {
    let state = &states[index];
    let mut replica = index % 2;
    let mut failures = 0u32;
    let mut jitter = Jitter::new(index as u64);
    let mut first_permit = first_opens.acquire_owned().await.ok();
    loop {
        let resume_after = (state.streams_opened.load(Ordering::Relaxed) > 0)
            .then(|| state.last_acked.load(Ordering::Relaxed));
        let opened = tokio::select! {
            () = stop.cancelled() => return,
            opened = AgentStream::open(&urls[replica], &token, &[PUBLIC_PROJECT], resume_after) => opened,
        };
        drop(first_permit.take());
        match opened {
            Ok(mut stream) => {
                failures = 0;
                state.streams_opened.fetch_add(1, Ordering::Relaxed);
                state.replica.store(replica, Ordering::Relaxed);
                loop {
                    let event = tokio::select! {
                        () = stop.cancelled() => return,
                        event = stream.next_event() => event,
                    };
                    let Ok(event) = event else { break };
                    stream.ack(event.seq);
                    state.received.lock().push(event.seq);
                    state.last_acked.fetch_max(event.seq, Ordering::Relaxed);
                }
                state.replica.store(NOWHERE, Ordering::Relaxed);
            }
            Err(_) => replica ^= 1,
        }
        failures = failures.saturating_add(1);
        let ceiling = BACKOFF_BASE
            .saturating_mul(1 << failures.min(6))
            .min(BACKOFF_MAX);
        let pause = ceiling.mul_f64(0.5 + 0.5 * jitter.next_unit());
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Posts a push (a ref of its own) to `public` every `1 / rate` s until `stop`; records
/// the seqs of accepted hooks and counts refusals.
async fn push_steadily(
    hooks: fluxgate_e2e::harness::HookClient,
    public: Project,
    rate: f64,
    accepted: Arc<Mutex<Vec<u64>>>,
    refused: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut in_flight = Vec::new();
    for n in 1u64.. {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let body = push_body(&public, &format!("refs/heads/s{n}"), n);
        let (hooks, accepted, refused) = (hooks.clone(), accepted.clone(), refused.clone());
        in_flight.push(tokio::spawn(async move {
            match hooks.post(&body, &[]).await {
                Ok(response) if response.status == 200 => {
                    accepted.lock().extend(response.seqs());
                }
                _ => {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for hook in in_flight {
        let _ = hook.await;
    }
}

fn count_nowhere(states: &[AgentState]) -> usize {
    states
        .iter()
        .filter(|s| s.replica.load(Ordering::Relaxed) == NOWHERE)
        .count()
}

/// Polls `done` until it holds or `deadline` passes; whether it held.
async fn wait_until(deadline: Duration, done: impl Fn() -> bool) -> bool {
    let until = Instant::now() + deadline;
    while !done() {
        if Instant::now() > until {
            return false;
        }
        tokio::time::sleep(MONITOR_POLL).await;
    }
    true
}

/// Removes the run's keys from the shared Redis (best effort, with `redis-cli`).
async fn remove_redis_keys(prefix: &str) {
    let Ok(output) = tokio::process::Command::new("redis-cli")
        .args(["--scan", "--pattern", &format!("{prefix}*")])
        .output()
        .await
    else {
        return;
    };
    let keys: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    if !keys.is_empty() {
        let _ = tokio::process::Command::new("redis-cli")
            .arg("del")
            .args(&keys)
            .output()
            .await;
    }
}

/// A small xorshift generator: jitter that differs per agent, without a dependency.
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [0, 1).
    fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}
