//! Scenario C, fan-out: one event to `streams` agent streams, `events` times; deliveries per
//! second and per CPU-second of the broker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fluxgate_e2e::harness::{Project, RawStream};

use crate::payload::push_body;
use crate::{procfs, setup};

pub async fn run(streams: usize, events: u64) -> anyhow::Result<()> {
    println!("## C. Fan-out ({streams} streams, {events} events each to all)");
    // One token for every stream (as many clusters sharing one agent): lift its cap.
    let bench = setup::start_broker(&[
        "--agent-queue-capacity",
        "4096",
        "--max-streams-per-agent",
        "1000000",
    ])
    .await?;
    let token = setup::create_agents(&bench.broker, 1).await?.remove(0);
    let delivered = Arc::new(AtomicU64::new(0));
    for _ in 0..streams {
        let mut stream = RawStream::open(
            &bench.broker.agent_url(),
            &token,
            &[("bench/public", "")],
            None,
        )
        .await
        .map_err(|status| anyhow::anyhow!("could not connect: {status}"))?;
        let delivered = delivered.clone();
        tokio::spawn(async move {
            while let Ok(Some(event)) = stream.next_event(Duration::from_secs(3600)).await {
                delivered.fetch_add(1, Ordering::Relaxed);
                stream.ack(event.seq).await;
            }
        });
    }
    let public = Project::new(1_000_000, "bench/public", 20);
    let expected = streams as u64 * events;
    let cpu_before = procfs::cpu_seconds(bench.pid)?;
    let started = Instant::now();
    for n in 0..events {
        let response = bench
            .broker
            .post_hook(&push_body(&public, &format!("refs/heads/n{n}"), n), &[])
            .await;
        anyhow::ensure!(response.status == 200, "hook refused: {:?}", response.body);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let cpu = procfs::cpu_seconds(bench.pid)? - cpu_before;
    let got = delivered.load(Ordering::Relaxed);
    println!(
        "- {got} deliveries in {:.2} s: {:.0} deliveries/s, {:.0} deliveries per broker CPU-second",
        elapsed.as_secs_f64(),
        got as f64 / elapsed.as_secs_f64(),
        got as f64 / cpu.max(0.001)
    );
    anyhow::ensure!(got == expected, "deliveries were lost: {got} of {expected}");
    Ok(())
}
