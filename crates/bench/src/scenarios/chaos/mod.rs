//! The fault run (`fluxgate-bench chaos`, `make chaos`): steady ingest into two replicas
//! with live agents while replicas are SIGKILLed, PostgreSQL is cut, Redis is killed, a
//! Receiver stalls and the listeners are flooded; then a check that every hook the
//! brokers acknowledged reached its Receiver. See docs/reliability.md.
//!
//! The run is bounded: the fault schedule takes `duration`, then failed hooks are retried
//! for at most [`RETRY_GRACE`] and deliveries awaited for at most `drain_timeout`; a hard
//! deadline over everything after the build of the binaries ends the run even if a step
//! hangs.

mod cluster;
mod faults;
mod load;
mod verdict;

use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;

use cluster::Cluster;
use faults::FaultLog;
use load::LoadGenerator;

/// How long failed hooks are still retried after the schedule ends.
const RETRY_GRACE: Duration = Duration::from_secs(30);
/// Set-up, restarts and tear-down on top of the schedule and the waits.
const OVERHEAD: Duration = Duration::from_secs(120);
/// Where process logs go when the run fails.
const LOG_DIR: &str = "target/chaos-logs";

/// The run's knobs (flags of `fluxgate-bench chaos`).
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Length of the fault schedule (ingest runs throughout).
    pub duration: Duration,
    /// How many times a replica is SIGKILLed (alternately a and b).
    pub kills: usize,
    /// Hooks per second.
    pub rate: f64,
    pub agents: usize,
    pub receivers_per_agent: usize,
    /// Idle TCP connections per port in the socket flood.
    pub idle_sockets: usize,
    /// How long the end waits for acknowledged hooks to be delivered.
    pub drain_timeout: Duration,
}

/// One step of the schedule.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Steady,
    KillReplica(usize),
    CutDatabase,
    KillRedis,
    StallReceiver,
    FloodIdleSockets,
    FloodSubscriptions,
}

impl Phase {
    fn name(self) -> String {
        match self {
            Phase::Steady => "steady ingest".to_owned(),
            Phase::KillReplica(index) => format!("SIGKILL replica {}", ["a", "b"][index]),
            Phase::CutDatabase => "PostgreSQL cut".to_owned(),
            Phase::KillRedis => "Redis killed".to_owned(),
            Phase::StallReceiver => "Receiver stalled (503)".to_owned(),
            Phase::FloodIdleSockets => "idle-socket flood".to_owned(),
            Phase::FloodSubscriptions => "subscription flood".to_owned(),
        }
    }
}

/// A finished phase, for the durations table.
struct PhaseTiming {
    name: String,
    started_at: Duration,
    /// From injection to recovery (ready again / fault lifted).
    fault: Duration,
    total: Duration,
    note: String,
}

pub async fn run(options: ChaosOptions) -> anyhow::Result<()> {
    anyhow::ensure!(options.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(
        options.agents > 0 && options.receivers_per_agent > 0,
        "--agents and --receivers-per-agent must be at least 1"
    );
    let hard_deadline = options.duration + RETRY_GRACE + options.drain_timeout + OVERHEAD;
    println!(
        "## Fault run ({} s schedule, {} replica kills, {} hooks/s, {} agents × {} receivers; ends within {} s)",
        options.duration.as_secs(),
        options.kills,
        options.rate,
        options.agents,
        options.receivers_per_agent,
        hard_deadline.as_secs()
    );
    // The harness builds the binaries on first use; that is not part of the bounded run.
    let build_started = Instant::now();
    tokio::task::spawn_blocking(|| {
        fluxgate_e2e::harness::binaries::binary("fluxgate");
        fluxgate_e2e::harness::binaries::binary("fluxgate-agent");
    })
    .await
    .context("building fluxgate and fluxgate-agent")?;
    println!(
        "- binaries built (same profile as this run) in {:.1} s",
        build_started.elapsed().as_secs_f64()
    );
    tokio::time::timeout(hard_deadline, run_bounded(options))
        .await
        .with_context(|| {
            format!("the fault run did not finish within its hard deadline of {hard_deadline:?}")
        })?
}

async fn run_bounded(options: ChaosOptions) -> anyhow::Result<()> {
    let setup_started = Instant::now();
    let mut cluster = Cluster::start(options.agents, options.receivers_per_agent).await?;
    println!(
        "- set-up: 2 replicas on PostgreSQL (via the chaos proxy) and Redis, {} agents connected, in {:.1} s",
        cluster.agents.len(),
        setup_started.elapsed().as_secs_f64()
    );

    let mut schedule = vec![Phase::Steady];
    schedule.extend((0..options.kills).map(|k| Phase::KillReplica(k % 2)));
    schedule.extend([
        Phase::CutDatabase,
        Phase::KillRedis,
        Phase::StallReceiver,
        Phase::FloodIdleSockets,
        Phase::FloodSubscriptions,
        Phase::Steady,
    ]);
    let slot = options.duration / u32::try_from(schedule.len()).unwrap_or(u32::MAX);
    let down = (slot / 3).max(Duration::from_secs(1));

    let run_started = Instant::now();
    let projects = cluster
        .receivers
        .iter()
        .map(|r| r.project.clone())
        .collect();
    let load = LoadGenerator::start(
        cluster.hook_clients(),
        projects,
        options.rate,
        run_started + options.duration + RETRY_GRACE,
    );
    let mut faults = FaultLog::default();
    let mut timings = Vec::new();
    for phase in schedule {
        let started = Instant::now();
        let note = inject(
            phase,
            &mut cluster,
            &mut faults,
            down,
            slot,
            &options,
            &load.quiet,
        )
        .await?;
        let fault = started.elapsed();
        // The rest of the slot is steady ingest, so each fault's effects settle.
        tokio::time::sleep(slot.saturating_sub(started.elapsed())).await;
        timings.push(PhaseTiming {
            name: phase.name(),
            started_at: started.duration_since(run_started),
            fault,
            total: started.elapsed(),
            note,
        });
    }
    let ingest_stopped = Instant::now();
    let ledger = load.stop().await?;
    let retries_done = ingest_stopped.elapsed();
    let hooks = ledger.hooks().clone();
    let verdict = verdict::judge(
        &hooks,
        &faults,
        &cluster.flux,
        &cluster.receivers,
        options.drain_timeout,
    )
    .await;

    println!();
    println!("### Phases");
    println!();
    println!(
        "| phase | started at | fault lasted (until recovered) | phase total | hooks first sent | to acknowledge, max | to reach the Receiver, p99 / max | notes |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|---|");
    let mut slow_hooks = Vec::new();
    for timing in &timings {
        let from = run_started + timing.started_at;
        let in_phase =
            |hook: &&load::HookRecord| hook.sent >= from && hook.sent < from + timing.total;
        let sent = hooks.iter().filter(in_phase).count();
        let slowest = hooks
            .iter()
            .enumerate()
            .filter(|(_, hook)| in_phase(hook))
            .filter_map(|(number, hook)| {
                Some((
                    hook.acknowledged.as_ref()?.at.duration_since(hook.sent),
                    number,
                ))
            })
            .max();
        let to_acknowledge = slowest.map(|(took, _)| took).unwrap_or_default();
        if let Some((took, number)) = slowest
            && took > Duration::from_secs(1)
        {
            slow_hooks.push(describe_attempts(&timing.name, number, &hooks[number]));
        }
        let mut to_receiver = crate::report::latency_histogram();
        for (hook, reached) in hooks.iter().zip(&verdict.reached_in) {
            if let Some(reached) = reached
                && in_phase(&hook)
            {
                crate::report::record(&mut to_receiver, *reached);
            }
        }
        println!(
            "| {} | {:.1} s | {:.1} s | {:.1} s | {} | {} | {} / {} | {} |",
            timing.name,
            timing.started_at.as_secs_f64(),
            timing.fault.as_secs_f64(),
            timing.total.as_secs_f64(),
            sent,
            milliseconds(to_acknowledge),
            milliseconds(Duration::from_micros(to_receiver.value_at_quantile(0.99))),
            milliseconds(Duration::from_micros(to_receiver.max())),
            timing.note
        );
    }
    println!(
        "| retries of unacknowledged hooks | {:.1} s | | {:.1} s | | | | |",
        ingest_stopped.duration_since(run_started).as_secs_f64(),
        retries_done.as_secs_f64()
    );
    println!(
        "| wait for deliveries | | | {:.1} s | | | | deadline {} s |",
        verdict.drained_in.as_secs_f64(),
        options.drain_timeout.as_secs()
    );
    println!();
    for slow in &slow_hooks {
        println!("- {slow}");
    }
    let mut to_acknowledge = crate::report::latency_histogram();
    for hook in &hooks {
        if let Some(ack) = &hook.acknowledged {
            crate::report::record(&mut to_acknowledge, ack.at.duration_since(hook.sent));
        }
    }
    println!();
    println!(
        "- time to acknowledge a hook (first send → 2xx, retries included): {}",
        crate::report::percentiles(&to_acknowledge)
    );
    println!(
        "- time to reach the Receiver (first send → its own successful call, delivered hooks): {}",
        crate::report::percentiles(&verdict.to_receiver)
    );
    println!();
    println!("### Hooks per Receiver");
    println!();
    verdict::print_table(&verdict);
    println!();
    for problem in &verdict.problems {
        println!("- PROBLEM: {problem}");
    }
    if verdict.passed() {
        println!(
            "- PASSED: every one of {} acknowledged hooks reached its Receiver; no hook failed outside an injected outage",
            verdict.totals.acknowledged
        );
        Ok(())
    } else {
        write_logs(&mut cluster);
        anyhow::bail!(
            "the fault run failed: {} acknowledged hooks lost, {} attempts failed outside an outage (logs in {LOG_DIR})",
            verdict.totals.lost,
            verdict.totals.unexplained_failed_attempts
        )
    }
}

/// Injects one phase's fault and waits for recovery; returns a note for the table.
async fn inject(
    phase: Phase,
    cluster: &mut Cluster,
    faults: &mut FaultLog,
    down: Duration,
    slot: Duration,
    options: &ChaosOptions,
    quiet: &std::sync::atomic::AtomicUsize,
) -> anyhow::Result<String> {
    Ok(match phase {
        Phase::Steady => String::new(),
        Phase::KillReplica(index) => {
            faults::kill_replica(cluster, faults, index, down).await?;
            format!(
                "down {:.1} s, then restarted until ready",
                down.as_secs_f64()
            )
        }
        Phase::CutDatabase => {
            faults::cut_database(cluster, faults, down).await?;
            format!(
                "cut {:.1} s, then until both replicas ready",
                down.as_secs_f64()
            )
        }
        Phase::KillRedis => {
            faults::kill_redis(cluster, faults, down).await?;
            format!(
                "down {:.1} s, then until both replicas follow it",
                down.as_secs_f64()
            )
        }
        Phase::StallReceiver => {
            let stalled = slot / 2;
            let name = faults::stall_receiver(cluster, faults, stalled, quiet).await?;
            format!(
                "{name} answered 503 for {:.1} s; no hooks for it from half-way through",
                stalled.as_secs_f64()
            )
        }
        Phase::FloodIdleSockets => {
            let report =
                faults::flood_idle_sockets(cluster, faults, options.idle_sockets, slot / 2).await;
            format!(
                "{} of {} sockets opened on HTTP, {} of {} on the agent port, of replica a",
                report.http_opened, report.per_port, report.agent_opened, report.per_port
            )
        }
        Phase::FloodSubscriptions => {
            let report = faults::flood_subscriptions(cluster, faults, slot / 2).await?;
            match report.closed_with {
                Some(status) => format!(
                    "{} changes sent, then the stream was closed: {status}",
                    report.changes_sent
                ),
                None if report.held_back => format!(
                    "{} changes sent, then flow control held the rest back until the end; stream still open",
                    report.changes_sent
                ),
                None => format!("{} changes sent, stream still open", report.changes_sent),
            }
        }
    })
}

/// `slowest in <phase>: hook 7 acknowledged after 1.01 s: a at +0 ms failed after 2 ms
/// (connection: …); b at +1.00 s took it`.
fn describe_attempts(phase: &str, number: usize, hook: &load::HookRecord) -> String {
    let replica = |index: usize| ["a", "b"][index];
    let mut text = format!("slowest acknowledgement in {phase}: hook {number}");
    if let Some(ack) = &hook.acknowledged {
        text.push_str(&format!(
            " after {}:",
            milliseconds(ack.at.duration_since(hook.sent))
        ));
    }
    for failure in &hook.failures {
        text.push_str(&format!(
            " {} at +{} failed after {} ({});",
            replica(failure.replica),
            milliseconds(failure.started.duration_since(hook.sent)),
            milliseconds(failure.ended.duration_since(failure.started)),
            failure.reason
        ));
    }
    if let Some(ack) = &hook.acknowledged {
        text.push_str(&format!(" {} took it", replica(ack.replica)));
    }
    text
}

/// `12 ms` below a second, `1.23 s` above.
fn milliseconds(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{:.2} s", duration.as_secs_f64())
    }
}

/// Writes every process's captured output to [`LOG_DIR`] for a post-mortem.
fn write_logs(cluster: &mut Cluster) {
    if std::fs::create_dir_all(LOG_DIR).is_err() {
        return;
    }
    for (name, lines) in cluster.logs() {
        let _ = std::fs::write(format!("{LOG_DIR}/{name}.log"), lines.join("\n"));
    }
}
