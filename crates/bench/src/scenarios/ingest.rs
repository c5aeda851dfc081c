//! Scenario A, ingest ceiling: closed-loop POSTs of a 3 KB push on keep-alive connections,
//! against the broker and against the bare HTTP baseline on the same stack and core.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxgate_e2e::harness::Project;
use hdrhistogram::Histogram;
use tokio::io::AsyncBufReadExt;
use tokio::sync::Mutex;

use crate::database_hop::DatabaseHop;
use crate::payload::push_body;
use crate::report::{latency_histogram, percentiles, record};
use crate::{procfs, setup};

pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub cpu_seconds: f64,
    pub latency: Histogram<u64>,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn cpu_micros_per_request(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.requests.max(1) as f64
    }
}

/// `connections` workers POST as fast as answers come back, for `duration`.
pub async fn load(
    url: &str,
    token: &str,
    pid: u32,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let client = fluxgate_e2e::harness::http_client();
    let project = Project::private(1, "bench/ingest");
    let latency = Arc::new(Mutex::new(latency_histogram()));
    let cpu_before = procfs::cpu_seconds(pid)?;
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::new();
    for worker in 0..connections {
        let (client, url, token, project, latency) = (
            client.clone(),
            url.to_owned(),
            token.to_owned(),
            project.clone(),
            latency.clone(),
        );
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            let mut local = latency_histogram();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let body = push_body(&project, &format!("refs/heads/w{worker}-{n}"), n);
                n += 1;
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("X-Gitlab-Token", &token)
                    .json(&body)
                    .send()
                    .await;
                match response {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.bytes().await;
                        record(&mut local, sent.elapsed());
                        ok += 1;
                    }
                    _ => failed += 1,
                }
            }
            let _ = latency.lock().await.add(&local);
            (ok, failed)
        }));
    }
    let (mut requests, mut errors) = (0, 0);
    for worker in workers {
        let (ok, failed) = worker.await?;
        requests += ok;
        errors += failed;
    }
    let elapsed = started.elapsed();
    let cpu_seconds = procfs::cpu_seconds(pid)? - cpu_before;
    let latency = Arc::try_unwrap(latency)
        .map(Mutex::into_inner)
        .unwrap_or_else(|_| latency_histogram());
    Ok(LoadResult {
        requests,
        errors,
        elapsed,
        cpu_seconds,
        latency,
    })
}

/// `database_url`: run the broker on this (empty) database instead of the embedded SQLite;
/// `database_hop`: reach it through one more TCP hop ([`DatabaseHop`]).
pub async fn run(
    connections: usize,
    seconds: u64,
    database_url: Option<&str>,
    database_hop: bool,
) -> anyhow::Result<()> {
    let duration = Duration::from_secs(seconds);
    let store = match (database_url, database_hop) {
        (None, _) => "SQLite",
        (Some(_), false) => "PostgreSQL",
        (Some(_), true) => "PostgreSQL, one more TCP hop away",
    };
    println!(
        "## A. Ingest ({connections} keep-alive connections, {seconds} s, 3 KB push, closed loop, {store})"
    );

    let mut baseline = tokio::process::Command::new(std::env::current_exe()?)
        .arg("baseline-server")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = baseline
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no baseline stdout"))?;
    let address = tokio::io::BufReader::new(stdout)
        .lines()
        .next_line()
        .await?
        .ok_or_else(|| anyhow::anyhow!("the baseline printed no address"))?;
    let baseline_pid = baseline
        .id()
        .ok_or_else(|| anyhow::anyhow!("the baseline is not running"))?;
    procfs::pin(baseline_pid, setup::SYSTEM_UNDER_TEST_CPU);
    procfs::pin(std::process::id(), setup::LOAD_GENERATOR_CPU);
    let floor = load(
        &format!("http://{address}/hooks/gitlab"),
        "-",
        baseline_pid,
        connections,
        duration,
    )
    .await?;
    baseline.kill().await?;

    let hop = match database_url {
        Some(url) if database_hop => Some(DatabaseHop::start(url).await?),
        _ => None,
    };
    let database_url = match (&hop, database_url) {
        (Some(hop), Some(url)) => Some(hop.url(url)?),
        (_, url) => url.map(str::to_owned),
    };
    let database_args: Vec<&str> = database_url
        .as_deref()
        .map(|url| vec!["--database-url", url])
        .unwrap_or_default();
    let bench = setup::start_broker(&database_args).await?;
    let url = bench.broker.http_url("/hooks/gitlab");
    // Warm up (first sighting of the project, connection pools, page cache).
    load(
        &url,
        &bench.broker.options.hook_secret,
        bench.pid,
        connections,
        Duration::from_secs(1),
    )
    .await?;
    let broker = load(
        &url,
        &bench.broker.options.hook_secret,
        bench.pid,
        connections,
        duration,
    )
    .await?;
    let batch = bench
        .broker
        .metric("fluxgate_store_append_batch_size_sum")
        .await
        / bench
            .broker
            .metric("fluxgate_store_append_batch_size_count")
            .await
            .max(1.0);

    let transactions = bench
        .broker
        .metric("fluxgate_store_append_seconds_count")
        .await;
    let transaction_ms = 1e3
        * bench
            .broker
            .metric("fluxgate_store_append_seconds_sum")
            .await
        / transactions.max(1.0);

    let fluxgate = format!("fluxgate ({store}, durable commit per batch)");
    for (name, result) in [
        ("baseline (axum, read body, answer)", &floor),
        (fluxgate.as_str(), &broker),
    ] {
        println!(
            "- {name}: {:.0} req/s, {}, {:.0} CPU-µs/request, {} errors",
            result.rate(),
            percentiles(&result.latency),
            result.cpu_micros_per_request(),
            result.errors
        );
    }
    println!(
        "- ratio fluxgate / baseline (R_A): {:.2}",
        broker.rate() / floor.rate()
    );
    println!("- mean hooks per commit (group commit): {batch:.1}");
    // One writer appends one transaction at a time: its length bounds the rate at a given
    // batch size, and is what the store's round trips cost.
    println!(
        "- mean append transaction (warm-up included): {transaction_ms:.2} ms over {transactions:.0}"
    );
    Ok(())
}
