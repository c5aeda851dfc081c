//! The faults the run injects, each with its recovery, and the log of when each was in
//! effect (to tell an outage's refused hooks from unexplained ones).

use std::time::Duration;

use anyhow::Context as _;
use fluxgate_e2e::harness::{Broker, RawStream};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::cluster::{Cluster, GROUP};

/// A failed hook attempt that ended this soon after an outage ended is still its fault
/// (a connection that was opened during the outage, or a reply that was on its way).
const GRACE: Duration = Duration::from_secs(2);
/// How long the run waits for a component to be ready again after a fault.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(60);
/// How long one idle socket may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL of replica 0 (`a`) or 1 (`b`), until it is ready again.
    ReplicaKilled(usize),
    /// Every connection to PostgreSQL cut and new ones refused.
    DatabaseCut,
    /// `redis-server` killed.
    RedisDown,
    /// One Receiver answering 503.
    ReceiverStalled,
    /// Thousands of silent TCP connections on the HTTP and agent ports.
    IdleSocketFlood,
    /// One agent stream sending SubscriptionChange messages without pause.
    SubscriptionFlood,
}

impl Fault {
    /// Whether a hook sent to `replica` may fail because of this fault. Only a dead
    /// replica and a lost database are outages for ingest; Redis, a stalled Receiver and
    /// the floods must not cost a hook.
    fn refuses_hooks_to(self, replica: usize) -> bool {
        match self {
            Fault::ReplicaKilled(killed) => killed == replica,
            Fault::DatabaseCut => true,
            Fault::RedisDown
            | Fault::ReceiverStalled
            | Fault::IdleSocketFlood
            | Fault::SubscriptionFlood => false,
        }
    }
}

/// When a fault was injected and when the system had recovered from it.
#[derive(Debug, Clone)]
pub struct FaultWindow {
    pub fault: Fault,
    pub injected: Instant,
    pub recovered: Instant,
}

/// Every fault of the run.
#[derive(Default)]
pub struct FaultLog {
    pub windows: Vec<FaultWindow>,
}

impl FaultLog {
    /// Whether an attempt to `replica` between `started` and `ended` overlapped an outage
    /// that refuses hooks to it.
    pub fn explains(&self, replica: usize, started: Instant, ended: Instant) -> bool {
        self.windows.iter().any(|window| {
            window.fault.refuses_hooks_to(replica)
                && started <= window.recovered + GRACE
                && ended >= window.injected
        })
    }

    fn record(&mut self, fault: Fault, injected: Instant) {
        self.windows.push(FaultWindow {
            fault,
            injected,
            recovered: Instant::now(),
        });
    }
}

/// SIGKILLs replica `index`, keeps it down for `down`, restarts it on the same ports and
/// waits until it is ready.
pub async fn kill_replica(
    cluster: &mut Cluster,
    log: &mut FaultLog,
    index: usize,
    down: Duration,
) -> anyhow::Result<()> {
    let injected = Instant::now();
    cluster.replicas[index].kill().await;
    tokio::time::sleep(down).await;
    cluster.replicas[index].restart().await;
    wait_until_ready(&cluster.replicas[index], |_| true).await?;
    log.record(Fault::ReplicaKilled(index), injected);
    Ok(())
}

/// Cuts PostgreSQL for `down`, then waits until both replicas report it back.
pub async fn cut_database(
    cluster: &mut Cluster,
    log: &mut FaultLog,
    down: Duration,
) -> anyhow::Result<()> {
    let injected = Instant::now();
    cluster.proxy.cut();
    tokio::time::sleep(down).await;
    cluster.proxy.restore().await;
    for replica in &cluster.replicas {
        wait_until_ready(replica, |report| report["database"] == true).await?;
    }
    log.record(Fault::DatabaseCut, injected);
    Ok(())
}

/// Kills `redis-server` for `down`, restarts it (empty) and waits until both replicas
/// follow it again.
pub async fn kill_redis(
    cluster: &mut Cluster,
    log: &mut FaultLog,
    down: Duration,
) -> anyhow::Result<()> {
    let injected = Instant::now();
    cluster.redis.stop().await;
    tokio::time::sleep(down).await;
    cluster.redis.resume().await;
    for replica in &cluster.replicas {
        wait_until_ready(replica, |report| report["redis"] == true).await?;
    }
    log.record(Fault::RedisDown, injected);
    Ok(())
}

/// Makes the first Receiver answer 503 (not Ready) for `down`, then Ready again. Halfway
/// through, its hooks stop for the rest of the run (`quiet`): its last events are then
/// covered by no later push, so only the agent retrying them after the stall delivers
/// them (an agent that gives up on a failing Receiver loses them).
pub async fn stall_receiver(
    cluster: &mut Cluster,
    log: &mut FaultLog,
    down: Duration,
    quiet: &std::sync::atomic::AtomicUsize,
) -> anyhow::Result<String> {
    let name = cluster
        .receivers
        .first()
        .context("the run has no receivers")?
        .name
        .clone();
    let injected = Instant::now();
    cluster.flux.set_ready(&name, false);
    tokio::time::sleep(down / 2).await;
    quiet.store(0, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(down - down / 2).await;
    cluster.flux.set_ready(&name, true);
    log.record(Fault::ReceiverStalled, injected);
    Ok(name)
}

/// What an idle-socket flood managed to open.
pub struct IdleFloodReport {
    pub http_opened: usize,
    pub agent_opened: usize,
    pub per_port: usize,
}

/// Opens `per_port` TCP connections that send nothing to replica `a`'s HTTP and agent
/// ports, holds them for `hold`, then closes them.
pub async fn flood_idle_sockets(
    cluster: &mut Cluster,
    log: &mut FaultLog,
    per_port: usize,
    hold: Duration,
) -> IdleFloodReport {
    let injected = Instant::now();
    let target = &cluster.replicas[0];
    let (http, agent) = tokio::join!(
        open_idle(target.http, per_port),
        open_idle(target.agent, per_port)
    );
    let report = IdleFloodReport {
        http_opened: http.len(),
        agent_opened: agent.len(),
        per_port,
    };
    tokio::time::sleep(hold.saturating_sub(injected.elapsed())).await;
    drop((http, agent));
    log.record(Fault::IdleSocketFlood, injected);
    report
}

async fn open_idle(address: std::net::SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut sockets = Vec::with_capacity(count);
    let mut connecting = JoinSet::new();
    for _ in 0..count {
        connecting.spawn(tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect(address),
        ));
    }
    while let Some(result) = connecting.join_next().await {
        if let Ok(Ok(Ok(socket))) = result {
            sockets.push(socket);
        }
    }
    sockets
}

/// What a subscription flood did.
pub struct SubscriptionFloodReport {
    pub changes_sent: u64,
    /// Sending blocked until the end: the broker took the changes more slowly than they
    /// were sent, and HTTP/2 flow control held the rest back.
    pub held_back: bool,
    /// The status the broker closed the stream with, if it did.
    pub closed_with: Option<String>,
}

/// Opens one agent stream on replica `b` and, for `hold`, sends SubscriptionChange
/// messages as fast as the stream takes them: each adds two projects and removes one, so
/// the stream's subscriptions keep growing.
pub async fn flood_subscriptions(
    cluster: &mut Cluster,
    log: &mut FaultLog,
    hold: Duration,
) -> anyhow::Result<SubscriptionFloodReport> {
    let injected = Instant::now();
    let first = format!("{GROUP}/flood-0");
    let mut stream = RawStream::open(
        &cluster.replicas[1].agent_url(),
        &cluster.flood_token,
        &[(first.as_str(), "")],
        None,
    )
    .await
    .map_err(|status| anyhow::anyhow!("the flood stream could not open: {status}"))?;
    let mut changes_sent = 0u64;
    let mut closed_with = None;
    let mut held_back = false;
    'flood: while injected.elapsed() < hold {
        for _ in 0..100 {
            let added = [
                format!("{GROUP}/flood-{}", 2 * changes_sent + 1),
                format!("{GROUP}/flood-{}", 2 * changes_sent + 2),
            ];
            let removed = format!("{GROUP}/flood-{changes_sent}");
            let sent = tokio::time::timeout(
                hold.saturating_sub(injected.elapsed()),
                stream.change_subscriptions(
                    &[(added[0].as_str(), ""), (added[1].as_str(), "")],
                    &[(removed.as_str(), "")],
                ),
            )
            .await;
            if sent.is_err() {
                // The broker reads this stream more slowly than it is written: back-pressure.
                held_back = true;
                break 'flood;
            }
            changes_sent += 1;
        }
        if let Err(status) = stream.next_message(Duration::from_millis(1)).await {
            closed_with = Some(format!("{:?}: {}", status.code(), status.message()));
            break 'flood;
        }
    }
    drop(stream);
    log.record(Fault::SubscriptionFlood, injected);
    Ok(SubscriptionFloodReport {
        changes_sent,
        held_back,
        closed_with,
    })
}

/// Polls `/readyz` until it answers 200 and `check` accepts its report.
async fn wait_until_ready(
    broker: &Broker,
    check: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    loop {
        let response = broker
            .client()
            .get(broker.metrics_url("/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if let Ok(response) = response
            && response.status().is_success()
            && let Ok(report) = response.json::<serde_json::Value>().await
            && check(&report)
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "replica on {} was not ready again within {RECOVERY_DEADLINE:?}",
            broker.http
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(fault: Fault, injected: Instant, recovered: Instant) -> FaultLog {
        FaultLog {
            windows: vec![FaultWindow {
                fault,
                injected,
                recovered,
            }],
        }
    }

    #[test]
    fn a_killed_replica_explains_failures_of_hooks_sent_to_it_and_no_other() {
        let t = Instant::now();
        let s = Duration::from_secs(1);
        let log = log_with(Fault::ReplicaKilled(0), t + 10 * s, t + 15 * s);
        assert!(log.explains(0, t + 11 * s, t + 12 * s), "during the outage");
        assert!(
            log.explains(0, t + 9 * s, t + 10 * s),
            "in flight at the kill"
        );
        assert!(log.explains(0, t + 16 * s, t + 16 * s), "within the grace");
        assert!(!log.explains(0, t + 18 * s, t + 18 * s), "after the grace");
        assert!(!log.explains(0, t, t + 9 * s), "before the kill");
        assert!(
            !log.explains(1, t + 11 * s, t + 12 * s),
            "the other replica"
        );
    }

    #[test]
    fn a_database_cut_explains_both_replicas_and_redis_or_floods_explain_nothing() {
        let t = Instant::now();
        let s = Duration::from_secs(1);
        let cut = log_with(Fault::DatabaseCut, t, t + 5 * s);
        assert!(cut.explains(0, t + s, t + 2 * s));
        assert!(cut.explains(1, t + s, t + 2 * s));
        for fault in [
            Fault::RedisDown,
            Fault::ReceiverStalled,
            Fault::IdleSocketFlood,
            Fault::SubscriptionFlood,
        ] {
            let log = log_with(fault, t, t + 5 * s);
            assert!(!log.explains(0, t + s, t + 2 * s), "{fault:?}");
        }
    }
}
