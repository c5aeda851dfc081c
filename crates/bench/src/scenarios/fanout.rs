//! Scenario C, fan-out: one push to `streams` agent streams (each its own connection),
//! single pushes and bursts, and the same fan-out through a local `nats-server` in the same
//! run (one subscriber connection per stream), with the ratio fluxgate/NATS per figure
//! (issue 11). Fails if any stream misses any push.

mod broker;
mod nats;
mod peer;
mod record;

use std::time::Duration;

use record::{SideFigures, median, ms, us};

/// The peer the fluxgate figures are compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// Debian's nats-server, run in the same invocation.
    Nats,
    /// fluxgate alone.
    None,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub streams: usize,
    /// Single pushes, each measured alone.
    pub singles: usize,
    /// Pushes in a burst.
    pub burst: usize,
    /// Also a burst sent by this many concurrent hook senders.
    pub concurrent_hooks: Option<usize>,
    pub peer: Peer,
    /// Only the peer, with payloads of this size (no fluxgate run to measure an Event).
    pub peer_only_payload_bytes: Option<usize>,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            streams: 10_000,
            singles: 5,
            burst: 100,
            concurrent_hooks: None,
            peer: Peer::Nats,
            peer_only_payload_bytes: None,
        }
    }
}

pub async fn run(plan: Plan) -> anyhow::Result<()> {
    println!(
        "## C. Fan-out ({} streams: {} single pushes, a burst of {}{}; peer: {:?})",
        plan.streams,
        plan.singles,
        plan.burst,
        plan.concurrent_hooks
            .map(|k| format!(", a burst from {k} concurrent hooks"))
            .unwrap_or_default(),
        plan.peer
    );
    anyhow::ensure!(
        plan.streams > 0 && plan.singles > 0 && plan.burst > 0,
        "streams, singles and burst must be at least 1"
    );
    let (fluxgate, payload_bytes) = match plan.peer_only_payload_bytes {
        Some(bytes) => (None, bytes),
        None => {
            let run = broker::run(&plan).await?;
            (Some(run.figures), run.event_bytes)
        }
    };
    let nats = match plan.peer {
        Peer::Nats => Some(peer::run(&plan, payload_bytes).await?),
        Peer::None => None,
    };
    print_summary(&plan, fluxgate.as_ref(), nats.as_ref());
    Ok(())
}

/// Open file descriptors of this process.
fn open_files() -> anyhow::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count())
}

/// One row of the summary: a figure of each side (lower is better for all).
struct Row {
    figure: String,
    fluxgate: Option<Duration>,
    nats: Option<Duration>,
    format: fn(Duration) -> String,
}

fn print_summary(plan: &Plan, fluxgate: Option<&SideFigures>, nats: Option<&SideFigures>) {
    let n = plan.streams;
    let singles = plan.singles;
    let burst = plan.burst;
    let both = |pick: fn(&SideFigures) -> Duration| (fluxgate.map(pick), nats.map(pick));
    let mut rows = Vec::new();
    let mut row = |figure: String,
                   (fluxgate, nats): (Option<Duration>, Option<Duration>),
                   format: fn(Duration) -> String| {
        rows.push(Row {
            figure,
            fluxgate,
            nats,
            format,
        });
    };
    row(
        format!("one push to {n}: time to last delivery (median of {singles})"),
        both(SideFigures::single_time_to_last),
        ms,
    );
    row(
        format!("one push to {n}: delivery p50 (median of {singles})"),
        both(SideFigures::single_p50),
        ms,
    );
    row(
        format!("one push to {n}: delivery p99 (median of {singles})"),
        both(SideFigures::single_p99),
        ms,
    );
    row(
        format!("one push to {n}: server CPU per delivery ({singles} pushes)"),
        both(SideFigures::single_cpu_per_delivery),
        us,
    );
    row(
        format!("burst of {burst} to {n} (sequential hooks): time to last delivery"),
        both(|side| side.burst.deliveries.time_to_last),
        ms,
    );
    row(
        format!("burst of {burst} to {n} (sequential hooks): delivery p99"),
        both(|side| side.burst.deliveries.p99),
        ms,
    );
    row(
        format!("burst of {burst} to {n} (sequential hooks): server CPU per delivery"),
        both(|side| side.burst.cpu_per_delivery()),
        us,
    );
    if let Some(k) = plan.concurrent_hooks {
        let concurrent = fluxgate.and_then(|side| side.concurrent_burst.as_ref());
        row(
            format!(
                "burst of {burst} to {n} ({k} concurrent hooks; NATS: its burst): time to last delivery"
            ),
            (
                concurrent.map(|round| round.deliveries.time_to_last),
                nats.map(|side| side.burst.deliveries.time_to_last),
            ),
            ms,
        );
        row(
            format!(
                "burst of {burst} to {n} ({k} concurrent hooks; NATS: its burst): server CPU per delivery"
            ),
            (
                concurrent.map(|round| round.cpu_per_delivery()),
                nats.map(|side| side.burst.cpu_per_delivery()),
            ),
            us,
        );
    }
    row(
        format!("hook answer while fanning out to {n}, single push (median)"),
        (
            fluxgate.map(|side| {
                median(
                    side.singles
                        .iter()
                        .flat_map(|r| r.answers.clone())
                        .collect(),
                )
            }),
            None,
        ),
        ms,
    );
    row(
        format!("hook answer in the burst of {burst} (mean)"),
        (fluxgate.and_then(|side| side.burst.mean_answer()), None),
        ms,
    );

    println!();
    println!("| figure | fluxgate | NATS, same run | fluxgate/NATS |");
    println!("|---|---|---|---|");
    for row in rows {
        let cell =
            |value: Option<Duration>| value.map(row.format).unwrap_or_else(|| "—".to_owned());
        let ratio = match (row.fluxgate, row.nats) {
            (Some(fluxgate), Some(nats)) if !nats.is_zero() => {
                format!("{:.2}×", fluxgate.as_secs_f64() / nats.as_secs_f64())
            }
            _ => "—".to_owned(),
        };
        println!(
            "| {} | {} | {} | {ratio} |",
            row.figure,
            cell(row.fluxgate),
            cell(row.nats)
        );
    }
    println!(
        "\nServer CPU is utime + stime of the server process (/proc/<pid>/stat, 10 ms ticks) from just before the first send of a round until the process has used no CPU for 100 ms after the round's last delivery (at most 2 s): fluxgate's count includes reading the agents' acks."
    );
}
