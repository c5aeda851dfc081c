//! The NATS side of the fan-out benchmark: `nats-server` on the broker's core, one
//! subscriber connection per fluxgate stream (all on one subject), one publisher; the same
//! rounds as the fluxgate side, with payloads of the size of a fluxgate Event.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Plan;
use super::nats::{Connection, NatsServer};
use super::record::{Deliveries, RoundFigures, SideFigures, print_round};
use crate::{procfs, setup};

const SUBJECT: &str = "fanout";
/// Subscriber connections being opened at once.
const OPENING_AT_ONCE: usize = 32;

pub async fn run(plan: &Plan, payload_bytes: usize) -> anyhow::Result<SideFigures> {
    let streams = plan.streams;
    println!(
        "### NATS: nats-server on CPU {}, {streams} subscriber connections, {payload_bytes}-byte payloads",
        setup::SYSTEM_UNDER_TEST_CPU
    );
    procfs::pin(std::process::id(), setup::LOAD_GENERATOR_CPU);
    let server = NatsServer::start(setup::SYSTEM_UNDER_TEST_CPU).await?;
    let deliveries = Arc::new(Deliveries::new(streams));
    let opened = Instant::now();
    let mut readers = subscribe(&server, &deliveries).await?;
    println!(
        "- {streams} subscriptions registered in {:.1} s",
        opened.elapsed().as_secs_f64()
    );
    let mut publisher = Connection::open(server.address, &[]).await?;
    let pid = server.pid;
    let payload = |n: u64| {
        let mut payload = vec![b'x'; payload_bytes.max(8)];
        payload[..8].copy_from_slice(&n.to_le_bytes());
        payload
    };

    // A first message, as on the fluxgate side.
    let cpu_before = procfs::cpu_seconds(pid)?;
    let started = Instant::now();
    publisher.publish(SUBJECT, &payload(0)).await?;
    let warm_up = RoundFigures::finish(
        &deliveries,
        pid,
        cpu_before,
        started,
        &[(0, started)],
        vec![],
    )
    .await?;
    warm_up.deliveries.ensure_complete("NATS, first message")?;

    let mut singles = Vec::with_capacity(plan.singles);
    for (i, n) in (1..=plan.singles as u64).enumerate() {
        let message = payload(n);
        let cpu_before = procfs::cpu_seconds(pid)?;
        let started = Instant::now();
        publisher.publish(SUBJECT, &message).await?;
        let round = RoundFigures::finish(
            &deliveries,
            pid,
            cpu_before,
            started,
            &[(n, started)],
            vec![],
        )
        .await?;
        print_round(&format!("single message {}", i + 1), &round);
        round.deliveries.ensure_complete("NATS, single message")?;
        singles.push(round);
    }

    // A burst: every message written as soon as the previous one is, no flush between.
    let first = 1_000;
    let messages: Vec<(u64, Vec<u8>)> = (first..first + plan.burst as u64)
        .map(|n| (n, payload(n)))
        .collect();
    let mut sent = Vec::with_capacity(messages.len());
    let cpu_before = procfs::cpu_seconds(pid)?;
    let started = Instant::now();
    for (n, message) in &messages {
        sent.push((*n, Instant::now()));
        publisher.publish(SUBJECT, message).await?;
    }
    let burst = RoundFigures::finish(&deliveries, pid, cpu_before, started, &sent, vec![]).await?;
    print_round(&format!("burst of {} messages", plan.burst), &burst);
    burst.deliveries.ensure_complete("NATS, burst")?;
    // The publisher's connection is still healthy (no -ERR after the burst).
    publisher.round_trip().await?;

    readers.abort_all();
    while readers.join_next().await.is_some() {}
    drop(server);
    Ok(SideFigures {
        singles,
        burst,
        concurrent_burst: None,
    })
}

/// Opens one subscriber connection per stream, each registered (PING/PONG) before this
/// returns, and each read by its own task.
async fn subscribe(
    server: &NatsServer,
    deliveries: &Arc<Deliveries>,
) -> anyhow::Result<JoinSet<()>> {
    let permits = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let mut opening = JoinSet::new();
    for index in 0..deliveries.streams() {
        let (address, permits) = (server.address, permits.clone());
        opening.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let connection = Connection::open(address, &[(SUBJECT, 1)])
                .await
                .map_err(|e| anyhow::anyhow!("subscriber {index} could not connect: {e}"))?;
            anyhow::Ok((index, connection))
        });
    }
    let mut readers = JoinSet::new();
    while let Some(opened) = opening.join_next().await {
        let (index, connection) = opened??;
        let deliveries = deliveries.clone();
        readers.spawn(async move {
            let _ = connection
                .read_messages(|payload| {
                    if let Some(number) = payload.get(..8) {
                        let mut bytes = [0u8; 8];
                        bytes.copy_from_slice(number);
                        deliveries.record(index, u64::from_le_bytes(bytes));
                    }
                })
                .await;
        });
    }
    Ok(readers)
}
