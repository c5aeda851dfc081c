//! Scenario D, idle agent streams beside a stock tonic server: `streams` idle streams to
//! the broker as shipped (one token, its per-agent stream cap lifted), then the same number
//! to the stock tonic peer (`peers::tonic_stock`), each server started on CPU 0 while this
//! process opens the streams from CPU 1. For each: resident memory per stream once the
//! streams are open and quiet (kernel socket memory, about 3.7 KB each, is not in it), and
//! CPU per stream per second while idle. Prints both and their ratio.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fluxgate_e2e::harness::RawStream;
use futures_util::StreamExt;
use tokio::io::AsyncBufReadExt;

use crate::peers::tonic_stock::PeerStream;
use crate::{procfs, setup};

/// Streams opened at once while connecting.
const OPENING_CONCURRENCY: usize = 64;
/// RSS counts as settled when it moved less than this over [`SETTLE_SAMPLES`] samples.
const SETTLE_TOLERANCE_BYTES: u64 = 64 * 1024;
const SETTLE_SAMPLES: usize = 4;
const SETTLE_POLL: Duration = Duration::from_millis(250);
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);

/// What one server costs with its streams open and quiet.
struct IdleFigures {
    rss_before: u64,
    rss_after: u64,
    bytes_per_stream: f64,
    cpu_micros_per_stream_second: f64,
}

impl IdleFigures {
    fn print(&self, name: &str, streams: usize, idle_window: Duration) {
        println!(
            "- {name}: RSS {:.1} MiB → {:.1} MiB with {streams} streams, {:.1} KiB per stream; \
             idle CPU {:.2} µs per stream per second (over {} s)",
            self.rss_before as f64 / 1_048_576.0,
            self.rss_after as f64 / 1_048_576.0,
            self.bytes_per_stream / 1024.0,
            self.cpu_micros_per_stream_second,
            idle_window.as_secs()
        );
    }
}

pub async fn run(counts: &[usize], idle_window: Duration) -> anyhow::Result<()> {
    println!(
        "## D. Idle agent streams: fluxgate as shipped vs a stock tonic 0.14 streaming server"
    );
    for &streams in counts {
        anyhow::ensure!(streams >= 2, "--streams must be at least 2");
        let fluxgate = measure_broker(streams, idle_window).await?;
        let peer = measure_peer(streams, idle_window).await?;
        fluxgate.print("fluxgate (as shipped)", streams, idle_window);
        peer.print(
            "stock tonic (default codec and settings)",
            streams,
            idle_window,
        );
        let cpu_ratio = if peer.cpu_micros_per_stream_second > 0.0 {
            format!(
                "{:.2}",
                fluxgate.cpu_micros_per_stream_second / peer.cpu_micros_per_stream_second
            )
        } else {
            "n/a (the peer used no measurable CPU)".to_owned()
        };
        println!(
            "- ratio fluxgate / stock tonic at {streams} streams: RSS per stream {:.2}, idle CPU per stream {cpu_ratio}",
            fluxgate.bytes_per_stream / peer.bytes_per_stream.max(1.0),
        );
    }
    Ok(())
}

async fn measure_broker(streams: usize, idle_window: Duration) -> anyhow::Result<IdleFigures> {
    // One token for every stream (as many clusters sharing one agent): lift its stream cap,
    // and the listener's connection cap (10,000 by default), so `streams` fit.
    let bench = setup::start_broker(&[
        "--max-streams-per-agent",
        "1000000",
        "--agent-max-connections",
        "1000000",
    ])
    .await?;
    let token = setup::create_agents(&bench.broker, 1).await?.remove(0);
    let url = bench.broker.agent_url();
    let open = |_| {
        let (url, token) = (url.clone(), token.clone());
        async move {
            RawStream::open(&url, &token, &[("bench/p0", "")], None)
                .await
                .map_err(|status| anyhow::anyhow!("could not connect: {status}"))
        }
    };
    let (figures, open_streams) = measure(bench.pid, streams, idle_window, open).await?;
    drop(open_streams);
    Ok(figures)
}

async fn measure_peer(streams: usize, idle_window: Duration) -> anyhow::Result<IdleFigures> {
    let mut peer = tokio::process::Command::new("taskset")
        .arg("--cpu-list")
        .arg(setup::SYSTEM_UNDER_TEST_CPU.to_string())
        .arg(std::env::current_exe()?)
        .arg("peer-server")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = peer
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no peer stdout"))?;
    let address: SocketAddr = tokio::io::BufReader::new(stdout)
        .lines()
        .next_line()
        .await?
        .ok_or_else(|| anyhow::anyhow!("the peer printed no address"))?
        .parse()?;
    // taskset execs the peer: the child's pid is the peer's.
    let pid = peer
        .id()
        .ok_or_else(|| anyhow::anyhow!("the peer is not running"))?;
    procfs::pin(std::process::id(), setup::LOAD_GENERATOR_CPU);
    let (figures, open_streams) =
        measure(pid, streams, idle_window, |_| PeerStream::open(address)).await?;
    drop(open_streams);
    peer.kill().await?;
    Ok(figures)
}

/// Opens one stream (so one-off allocations are not counted), lets RSS settle, opens the
/// other `streams - 1`, lets RSS settle again, then samples CPU over `idle_window`.
async fn measure<S, F, Fut>(
    pid: u32,
    streams: usize,
    idle_window: Duration,
    open: F,
) -> anyhow::Result<(IdleFigures, Vec<S>)>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<S>>,
{
    let mut open_streams = vec![open(0).await?];
    let rss_before = settled_rss(pid).await?;
    let more: Vec<anyhow::Result<S>> = futures_util::stream::iter(1..streams)
        .map(&open)
        .buffer_unordered(OPENING_CONCURRENCY)
        .collect()
        .await;
    for stream in more {
        open_streams.push(stream?);
    }
    let rss_after = settled_rss(pid).await?;
    let cpu_before = procfs::cpu_seconds(pid)?;
    tokio::time::sleep(idle_window).await;
    let idle_cpu = procfs::cpu_seconds(pid)? - cpu_before;
    let figures = IdleFigures {
        rss_before,
        rss_after,
        bytes_per_stream: rss_after.saturating_sub(rss_before) as f64 / (streams - 1) as f64,
        cpu_micros_per_stream_second: idle_cpu * 1e6 / idle_window.as_secs_f64() / streams as f64,
    };
    Ok((figures, open_streams))
}

/// The process's RSS once it stopped moving (or at the deadline).
async fn settled_rss(pid: u32) -> anyhow::Result<u64> {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    let mut samples = vec![procfs::rss_bytes(pid)?];
    loop {
        tokio::time::sleep(SETTLE_POLL).await;
        samples.push(procfs::rss_bytes(pid)?);
        let recent = &samples[samples.len().saturating_sub(SETTLE_SAMPLES)..];
        let spread = recent.iter().max().unwrap_or(&0) - recent.iter().min().unwrap_or(&0);
        if (recent.len() == SETTLE_SAMPLES && spread < SETTLE_TOLERANCE_BYTES)
            || Instant::now() > deadline
        {
            return Ok(*recent.last().unwrap_or(&0));
        }
    }
}
