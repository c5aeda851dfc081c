//! The system under test for the fault run: two broker replicas on a fresh PostgreSQL
//! database (reached through a [`ChaosProxy`], so the run can cut it) and a `redis-server`
//! of the run's own (so the run can kill it), real `fluxgate-agent` processes that know both
//! replicas, and the Flux Receiver stand-in they trigger. Everything listens on 127.0.0.1.

use std::net::SocketAddr;

use fluxgate_e2e::flux_receiver::{FluxReceiverStandIn, Receiver, ReceiverType};
use fluxgate_e2e::harness::{
    AgentProcess, Broker, BrokerOptions, ChaosProxy, HookClient, PATIENCE, Project, ReceiverConfig,
    RedisServer,
};
use fluxgate_store::testing::TestDatabase;

/// Every project of the run lives in this group; agents are granted the whole group.
pub const GROUP: &str = "chaos";
/// The HMAC token every Receiver of the run checks.
const RECEIVER_TOKEN: &str = "chaos-receiver-token";

/// One Flux Receiver of the run: it watches one project, so every hook to that project
/// (each on a ref of its own) triggers exactly this Receiver.
#[derive(Debug, Clone)]
pub struct ReceiverSlot {
    pub name: String,
    pub agent: usize,
    pub project: Project,
}

pub struct Cluster {
    /// Replicas `a` and `b`; hooks and agents use both.
    pub replicas: [Broker; 2],
    pub proxy: ChaosProxy,
    pub redis: RedisServer,
    pub flux: FluxReceiverStandIn,
    pub agents: Vec<AgentProcess>,
    pub receivers: Vec<ReceiverSlot>,
    /// An agent identity with no process, for the subscription flood.
    pub flood_token: String,
    // Dropped last: the database goes when the brokers are gone.
    _dirs: tempfile::TempDir,
    _database: TestDatabase,
}

impl Cluster {
    /// Starts everything and waits until every agent is connected.
    pub async fn start(agents: usize, receivers_per_agent: usize) -> anyhow::Result<Self> {
        let database = TestDatabase::postgres().await;
        let url = url::Url::parse(database.url())?;
        let upstream: SocketAddr = format!(
            "{}:{}",
            url.host_str().unwrap_or("127.0.0.1"),
            url.port().unwrap_or(5432)
        )
        .parse()?;
        let proxy = ChaosProxy::start(upstream).await;
        let mut through_proxy = url.clone();
        through_proxy
            .set_port(Some(proxy.address().port()))
            .map_err(|()| anyhow::anyhow!("cannot set the proxy's port"))?;
        let redis = RedisServer::start().await;
        let dirs = tempfile::tempdir()?;
        let replica = |name: &str| {
            let mut options = BrokerOptions::replica(
                dirs.path().join(name),
                through_proxy.as_str(),
                &redis.url(),
                "chaos",
            );
            options.extra_args = vec!["--broker-id".to_owned(), format!("replica-{name}")];
            options
        };
        let replicas = [
            Broker::start(replica("a")).await,
            Broker::start(replica("b")).await,
        ];

        let receivers: Vec<ReceiverSlot> = (0..agents)
            .flat_map(|agent| {
                (0..receivers_per_agent).map(move |j| {
                    let index = agent * receivers_per_agent + j;
                    ReceiverSlot {
                        name: format!("agent{agent}-r{j}"),
                        agent,
                        project: Project::private(
                            i64::try_from(index).unwrap_or(i64::MAX) + 1,
                            &format!("{GROUP}/p{index}"),
                        ),
                    }
                })
            })
            .collect();
        let flux = FluxReceiverStandIn::start(
            receivers
                .iter()
                .map(|r| Receiver::new(&r.name, ReceiverType::GenericHmac, RECEIVER_TOKEN)),
        )
        .await;

        let urls = [replicas[0].agent_url(), replicas[1].agent_url()];
        let mut processes = Vec::with_capacity(agents);
        for agent in 0..agents {
            let token = replicas[agent % 2]
                .create_agent(
                    &format!("agent{agent}"),
                    &format!("{GROUP}/agent{agent}-config"),
                    &["--grant-group", GROUP],
                )
                .await;
            let configs: Vec<ReceiverConfig> = receivers
                .iter()
                .filter(|r| r.agent == agent)
                .map(|r| {
                    ReceiverConfig::flux(
                        &r.name,
                        &r.project.path,
                        "generic-hmac",
                        RECEIVER_TOKEN,
                        &flux.base_url(),
                    )
                })
                .collect();
            // Half the agents list replica b first, so both replicas serve streams.
            let order = if agent % 2 == 0 {
                [urls[0].as_str(), urls[1].as_str()]
            } else {
                [urls[1].as_str(), urls[0].as_str()]
            };
            let mut process = AgentProcess::start_with_brokers(&order, &token, &configs).await;
            process
                .process()
                .wait_for_log("connected to the broker", PATIENCE)
                .await;
            processes.push(process);
        }
        let flood_token = replicas[0]
            .create_agent(
                "flooder",
                &format!("{GROUP}/flooder-config"),
                &["--grant-group", GROUP],
            )
            .await;
        Ok(Self {
            replicas,
            proxy,
            redis,
            flux,
            agents: processes,
            receivers,
            flood_token,
            _dirs: dirs,
            _database: database,
        })
    }

    /// Hook clients for both replicas; they keep working across restarts (same ports).
    pub fn hook_clients(&self) -> [HookClient; 2] {
        [self.replicas[0].hooks(), self.replicas[1].hooks()]
    }

    /// Every process's captured output, by name, for a post-mortem.
    pub fn logs(&mut self) -> Vec<(String, Vec<String>)> {
        let mut logs = Vec::new();
        for (name, replica) in ["replica-a", "replica-b"].iter().zip(&mut self.replicas) {
            logs.push(((*name).to_owned(), replica.process().lines()));
        }
        for (index, agent) in self.agents.iter_mut().enumerate() {
            logs.push((format!("agent{index}"), agent.process().lines()));
        }
        logs
    }
}
