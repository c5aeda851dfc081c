//! Scenario E, memory after load: the broker's resident memory before, during and after
//! `streams` agent streams whose Hellos carry `subscriptions` subscriptions each. After
//! the streams close, the memory they used must go back to the system (an allocator that
//! keeps freed pages makes a replica that once saw a burst look, and be, much bigger).

use std::time::Duration;

use fluxgate_e2e::harness::RawStream;

use crate::{procfs, setup};

pub async fn run(streams: usize, subscriptions: usize) -> anyhow::Result<()> {
    println!("## E. Memory returned after a burst of large Hellos");
    let bench = setup::start_broker(&[
        "--max-streams-per-agent",
        "1000000",
        "--max-subscriptions-per-agent",
        "1000000000",
        "--max-subscriptions-per-stream",
        "100000",
    ])
    .await?;
    let token = setup::create_agents(&bench.broker, 1).await?.remove(0);
    let paths: Vec<String> = (0..subscriptions)
        .map(|n| format!("bench-group/some-subgroup/project-with-a-long-name-{n}"))
        .collect();
    let subs: Vec<(&str, &str)> = paths.iter().map(|p| (p.as_str(), "")).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = procfs::rss_bytes(bench.pid)?;
    let mut open = Vec::with_capacity(streams);
    for _ in 0..streams {
        let stream = RawStream::open(&bench.broker.agent_url(), &token, &subs, None)
            .await
            .map_err(|status| anyhow::anyhow!("could not connect: {status}"))?;
        open.push(stream);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = procfs::rss_bytes(bench.pid)?;
    drop(open);
    // Closed streams are unregistered at once; give the allocator time to return pages.
    let mut after = loaded;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = procfs::rss_bytes(bench.pid)?;
    }
    let mib = |bytes: u64| bytes as f64 / 1_048_576.0;
    println!(
        "- {streams} streams × {subscriptions} subscriptions: broker RSS {:.1} MiB before, \
         {:.1} MiB with them open, {:.1} MiB 10 s after they closed ({:.0}% of the growth kept)",
        mib(before),
        mib(loaded),
        mib(after),
        100.0 * after.saturating_sub(before) as f64 / loaded.saturating_sub(before).max(1) as f64
    );
    Ok(())
}
