//! Scenario D, memory per idle agent stream: the broker's resident memory before and after
//! opening `streams` idle streams (kernel socket memory, about 3.7 KB each, is not in it).

use std::time::Duration;

use fluxgate_e2e::harness::RawStream;

use crate::{procfs, setup};

/// How long CPU use is sampled once the streams are open and quiet.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

pub async fn run(counts: &[usize]) -> anyhow::Result<()> {
    println!("## D. Memory per idle agent stream");
    for &streams in counts {
        // One token for every stream (as many clusters sharing one agent): lift its cap.
        let bench = setup::start_broker(&["--max-streams-per-agent", "1000000"]).await?;
        let token = setup::create_agents(&bench.broker, 1).await?.remove(0);
        // One stream first, so the per-stream figure excludes one-off allocations.
        let mut open = vec![
            RawStream::open(&bench.broker.agent_url(), &token, &[("bench/p0", "")], None)
                .await
                .map_err(|s| anyhow::anyhow!("{s}"))?,
        ];
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = procfs::rss_bytes(bench.pid)?;
        for _ in 1..streams {
            let stream =
                RawStream::open(&bench.broker.agent_url(), &token, &[("bench/p0", "")], None)
                    .await
                    .map_err(|status| anyhow::anyhow!("could not connect: {status}"))?;
            open.push(stream);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = procfs::rss_bytes(bench.pid)?;
        let cpu_before = procfs::cpu_seconds(bench.pid)?;
        tokio::time::sleep(IDLE_WINDOW).await;
        let idle_cpu = (procfs::cpu_seconds(bench.pid)? - cpu_before) / IDLE_WINDOW.as_secs_f64();
        let per_stream = after.saturating_sub(before) as f64 / (streams - 1) as f64;
        println!(
            "- {streams} streams: broker RSS {:.1} MiB → {:.1} MiB, {:.1} KiB per stream; idle CPU {:.1}% of a core",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            per_stream / 1024.0,
            idle_cpu * 100.0
        );
        drop(open);
    }
    Ok(())
}
