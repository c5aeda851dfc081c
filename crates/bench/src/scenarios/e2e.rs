//! Scenario B, end-to-end latency: `agents` connected agent streams; pushes at a fixed rate
//! (open loop); most go to one agent's project, one in `public_every` (1 in 100 by
//! default) to a public project every agent subscribes to. Latency runs from just before the hook is sent to the event read on the
//! agent's stream: HTTP ingest, commit, bus, routing, gRPC.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fluxgate_e2e::harness::{Project, RawStream};
use tokio::sync::Mutex;

use crate::payload::{number_of, push_body};
use crate::report::{self, latency_histogram, percentiles, record};
use crate::{procfs, setup};

const PUBLIC_PROJECT: &str = "bench/public";

/// `public_every`: one push in this many goes to the public project (to every agent); 0
/// for none.
pub async fn run(agents: usize, rate: u64, seconds: u64, public_every: u64) -> anyhow::Result<()> {
    let share = if public_every == 0 {
        "none".to_owned()
    } else {
        format!("1 in {public_every}")
    };
    println!(
        "## B. End-to-end latency ({agents} agents, {rate} pushes/s for {seconds} s, {share} to all agents)"
    );
    let bench = setup::start_broker(&["--agent-queue-capacity", "4096"]).await?;
    let tokens = setup::create_agents(&bench.broker, agents).await?;
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let latency = Arc::new(Mutex::new(latency_histogram()));
    let delivered = Arc::new(AtomicU64::new(0));
    // Per fan-out push: when its first and its last delivery arrived after the hook.
    let fanouts: Arc<parking_lot::Mutex<HashMap<u64, (Duration, Duration)>>> = Arc::default();
    let agent_url = bench.broker.agent_url();
    for (i, token) in tokens.iter().enumerate() {
        let own = format!("bench/p{i}");
        let mut stream = RawStream::open(
            &agent_url,
            token,
            &[(own.as_str(), ""), (PUBLIC_PROJECT, "")],
            None,
        )
        .await
        .map_err(|status| anyhow::anyhow!("agent {i} could not connect: {status}"))?;
        let (sent, latency, delivered, fanouts) = (
            sent.clone(),
            latency.clone(),
            delivered.clone(),
            fanouts.clone(),
        );
        tokio::spawn(async move {
            while let Ok(Some(event)) = stream.next_event(Duration::from_secs(3600)).await {
                let received = Instant::now();
                if let Some((n, at)) =
                    number_of(&event.after).and_then(|n| Some((n, *sent.try_lock().ok()?.get(&n)?)))
                {
                    let after = received - at;
                    record(&mut *latency.lock().await, after);
                    if event.project_path == PUBLIC_PROJECT {
                        let mut fanouts = fanouts.lock();
                        let (first, last) = fanouts.entry(n).or_insert((after, after));
                        *first = (*first).min(after);
                        *last = (*last).max(after);
                    }
                }
                delivered.fetch_add(1, Ordering::Relaxed);
                stream.ack(event.seq).await;
            }
        });
    }

    let client = fluxgate_e2e::harness::http_client();
    let url = bench.broker.http_url("/hooks/gitlab");
    let secret = bench.broker.options.hook_secret.clone();
    let public = Project::new(1_000_000, PUBLIC_PROJECT, 20);
    let mut expected = 0u64;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let cpu_before = procfs::cpu_seconds(bench.pid)?;
    let threads_before = procfs::cpu_seconds_by_thread_name(bench.pid)?;
    let total = rate * seconds;
    for n in 0..total {
        ticker.tick().await;
        let (project, fan) = if public_every > 0 && n % public_every == public_every - 1 {
            (public.clone(), agents as u64)
        } else {
            let i = (n * 7919) % agents as u64;
            (Project::private(i as i64 + 1, &format!("bench/p{i}")), 1)
        };
        expected += fan;
        let body = push_body(&project, &format!("refs/heads/n{n}"), n);
        sent.lock().await.insert(n, Instant::now());
        let (client, url, secret) = (client.clone(), url.clone(), secret.clone());
        tokio::spawn(async move {
            let _ = client
                .post(&url)
                .header("X-Gitlab-Token", secret)
                .json(&body)
                .send()
                .await;
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = procfs::cpu_seconds(bench.pid)? - cpu_before;
    let threads_after = procfs::cpu_seconds_by_thread_name(bench.pid)?;
    let got = delivered.load(Ordering::Relaxed);
    println!("- deliveries: {got} of {expected} expected");
    println!(
        "- latency hook sent → event on the agent stream: {}",
        percentiles(&*latency.lock().await)
    );
    print_fanouts(&fanouts.lock());
    println!(
        "- broker CPU: {:.2} s for {total} pushes ({:.0} CPU-µs per push)",
        cpu,
        cpu * 1e6 / total as f64
    );
    println!(
        "  by thread: {}",
        report::cpu_by_thread(&threads_before, &threads_after)
    );
    // SQLite only: how long the log's writes waited for the writes before them (the
    // store's write gate), so a tail from waiting on the store shows here.
    let log_writes = bench
        .broker
        .metric("fluxgate_store_log_write_wait_seconds_count")
        .await;
    if log_writes > 0.0 {
        let waited = bench
            .broker
            .metric("fluxgate_store_log_write_wait_seconds_sum")
            .await;
        println!(
            "- log writes' wait for their turn (SQLite): mean {:.2} ms over {log_writes:.0}",
            waited * 1e3 / log_writes
        );
    }
    for (class, name) in [
        ("log", "fluxgate_store_log_write_hold_seconds"),
        (
            "bookkeeping",
            "fluxgate_store_bookkeeping_write_hold_seconds",
        ),
    ] {
        let holds = bench.broker.metric(&format!("{name}_count")).await;
        if holds > 0.0 {
            let held = bench.broker.metric(&format!("{name}_sum")).await;
            let within = bench
                .broker
                .metric(&format!("{name}_bucket{{le=\"0.05\"}}"))
                .await;
            println!(
                "- {class} writes' hold of SQLite's write turn: mean {:.2} ms over {holds:.0}, \
                 {:.0} longer than 50 ms",
                held * 1e3 / holds,
                holds - within
            );
        }
    }
    println!(
        "- improvement over Flux's 1-minute poll (30 s mean wait): {:.0}x at p99",
        30_000.0 / (latency.lock().await.value_at_quantile(0.99) as f64 / 1000.0)
    );
    anyhow::ensure!(got == expected, "deliveries were lost");
    Ok(())
}

/// Each fan-out push's first and last delivery after its hook, summarised over the pushes:
/// whether the tail is every fan-out being slow, or a few stalled ones.
fn print_fanouts(fanouts: &HashMap<u64, (Duration, Duration)>) {
    if fanouts.is_empty() {
        return;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut lasts: Vec<Duration> = fanouts.values().map(|(_, last)| *last).collect();
    let mut firsts: Vec<Duration> = fanouts.values().map(|(first, _)| *first).collect();
    lasts.sort();
    firsts.sort();
    let median = |sorted: &[Duration]| sorted[sorted.len() / 2];
    println!(
        "- {} fan-out pushes: first delivery median {:.1} ms; last delivery min {:.1} / median \
         {:.1} / max {:.1} ms",
        fanouts.len(),
        ms(median(&firsts)),
        ms(lasts[0]),
        ms(median(&lasts)),
        ms(lasts[lasts.len() - 1]),
    );
    let mut by_push: Vec<(&u64, &(Duration, Duration))> = fanouts.iter().collect();
    by_push.sort();
    let lasts_in_order: Vec<String> = by_push
        .iter()
        .map(|(_, (_, last))| format!("{:.0}", ms(*last)))
        .collect();
    println!(
        "  last delivery per fan-out push, in order (ms): {}",
        lasts_in_order.join(" ")
    );
}
