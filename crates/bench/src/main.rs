//! `fluxgate-bench`: benchmarks of the real broker, started in release mode and pinned to
//! CPU 0 while the load generator runs on CPU 1 (docs/benchmarks.md), and the fault run
//! `chaos`, which pins nothing (docs/reliability.md).

mod agent_client;
mod database_hop;
mod payload;
mod peers;
mod procfs;
mod report;
mod scenarios;
mod setup;

use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "fluxgate-bench", about = "Benchmarks of the fluxgate broker")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// A. Ingest throughput and latency, against a bare HTTP baseline.
    Ingest {
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Run the broker on this (empty) database instead of the embedded SQLite.
        #[arg(long)]
        database_url: Option<String>,
        /// Reach the database through one more TCP hop (a forwarder in this process), so
        /// that each round trip costs about what it does over a network.
        #[arg(long, requires = "database_url")]
        database_hop: bool,
    },
    /// B. End-to-end latency from hook to agent stream.
    E2e {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        #[arg(long, default_value_t = 200)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// One push in this many goes to every agent; 0 for none.
        #[arg(long, default_value_t = 100)]
        public_every: u64,
    },
    /// C. Fan-out of one push to many agent streams (single pushes and bursts), beside
    /// the same fan-out through a local nats-server.
    Fanout {
        /// Agent streams (and NATS subscriber connections), each its own connection.
        #[arg(long, default_value_t = 10_000)]
        streams: usize,
        /// Single pushes, each measured alone (figures are their medians).
        #[arg(long, default_value_t = 5)]
        singles: usize,
        /// Pushes in a burst, each hook sent once the previous one is answered.
        #[arg(long, default_value_t = 100)]
        burst: usize,
        /// Also a burst sent by this many concurrent hook senders.
        #[arg(long)]
        concurrent_hooks: Option<usize>,
        /// The peer run in the same invocation.
        #[arg(long, value_enum, default_value = "nats")]
        peer: scenarios::fanout::Peer,
        /// Run only the peer, with payloads of this many bytes (normally the encoded size
        /// of an Event measured on the fluxgate side).
        #[arg(long)]
        peer_only_payload_bytes: Option<usize>,
    },
    /// D. Memory and CPU per idle agent stream, beside a stock tonic streaming server.
    Idle {
        #[arg(long, value_delimiter = ',', default_value = "10000")]
        streams: Vec<usize>,
        /// Seconds CPU is sampled once the streams are quiet (two keepalive intervals).
        #[arg(long, default_value_t = 30)]
        idle_seconds: u64,
    },
    /// E. Memory returned after a burst of streams with large Hellos.
    Memory {
        #[arg(long, default_value_t = 2000)]
        streams: usize,
        #[arg(long, default_value_t = 1000)]
        subscriptions: usize,
    },
    /// F. Replay of a backlog to one agent stream that acks every event in its own message.
    Replay {
        #[arg(long, default_value_t = 100_000)]
        backlog: u64,
        /// Only one event of the backlog is for the agent: the cost of finding it.
        #[arg(long)]
        sparse: bool,
    },
    /// G. Reconnect storm: one of two replicas (PostgreSQL + Redis) SIGKILLed under
    /// `agents` agents; time until all are back and caught up, lost deliveries. Not part
    /// of `all` (it needs PostgreSQL and Redis on 127.0.0.1).
    Storm {
        #[arg(long, default_value_t = 10_000)]
        agents: usize,
        /// Pushes per second to the public project every agent subscribes to.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
    },
    /// The fault run: replicas killed, PostgreSQL cut, Redis killed, a Receiver stalled,
    /// floods; fails if an acknowledged hook is lost (see docs/reliability.md). Not part of
    /// `all`.
    Chaos {
        /// Length of the fault schedule in seconds (ingest runs throughout).
        #[arg(long, default_value_t = 180)]
        duration: u64,
        /// How many times a replica is SIGKILLed and restarted (alternately a and b).
        #[arg(long, default_value_t = 3)]
        kills: usize,
        /// Hooks per second.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        #[arg(long, default_value_t = 4)]
        agents: usize,
        #[arg(long, default_value_t = 2)]
        receivers_per_agent: usize,
        /// Idle TCP connections per port in the socket flood.
        #[arg(long, default_value_t = 2000)]
        idle_sockets: usize,
        /// Seconds the end waits for acknowledged hooks to reach their Receivers.
        #[arg(long, default_value_t = 60)]
        drain_timeout: u64,
    },
    /// Every scenario with its defaults.
    All,
    /// Internal: the baseline HTTP server for scenario A.
    #[command(hide = true)]
    BaselineServer,
    /// Internal: the stock tonic streaming server for scenario D.
    #[command(hide = true)]
    PeerServer,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().scenario {
        Scenario::Ingest {
            connections,
            seconds,
            database_url,
            database_hop,
        } => {
            scenarios::ingest::run(connections, seconds, database_url.as_deref(), database_hop)
                .await
        }
        Scenario::E2e {
            agents,
            rate,
            seconds,
            public_every,
        } => scenarios::e2e::run(agents, rate, seconds, public_every).await,
        Scenario::Fanout {
            streams,
            singles,
            burst,
            concurrent_hooks,
            peer,
            peer_only_payload_bytes,
        } => {
            scenarios::fanout::run(scenarios::fanout::Plan {
                streams,
                singles,
                burst,
                concurrent_hooks,
                peer,
                peer_only_payload_bytes,
            })
            .await
        }
        Scenario::Idle {
            streams,
            idle_seconds,
        } => scenarios::idle::run(&streams, Duration::from_secs(idle_seconds)).await,
        Scenario::Replay { backlog, sparse } => scenarios::replay::run(backlog, sparse).await,
        Scenario::Storm { agents, rate } => scenarios::storm::run(agents, rate).await,
        Scenario::Memory {
            streams,
            subscriptions,
        } => scenarios::memory::run(streams, subscriptions).await,
        Scenario::Chaos {
            duration,
            kills,
            rate,
            agents,
            receivers_per_agent,
            idle_sockets,
            drain_timeout,
        } => {
            scenarios::chaos::run(scenarios::chaos::ChaosOptions {
                duration: Duration::from_secs(duration),
                kills,
                rate,
                agents,
                receivers_per_agent,
                idle_sockets,
                drain_timeout: Duration::from_secs(drain_timeout),
            })
            .await
        }
        Scenario::All => {
            scenarios::ingest::run(16, 10, None, false).await?;
            scenarios::e2e::run(1000, 200, 10, 100).await?;
            scenarios::fanout::run(scenarios::fanout::Plan::default()).await?;
            scenarios::idle::run(&[10_000], Duration::from_secs(30)).await?;
            scenarios::memory::run(2000, 1000).await?;
            scenarios::replay::run(100_000, false).await?;
            scenarios::replay::run(100_000, true).await
        }
        Scenario::BaselineServer => scenarios::baseline::serve().await,
        Scenario::PeerServer => peers::tonic_stock::serve().await,
    }
}
