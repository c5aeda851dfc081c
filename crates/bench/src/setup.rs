//! Starting a broker for a benchmark: release build, its own data directory, the shipped
//! defaults (intervals, log filter), started on CPU 0 (so its runtime has one worker, as on
//! a one-core deployment) while this process (the load generator) runs on CPU 1.

use fluxgate_e2e::harness::{Broker, BrokerOptions};

use crate::procfs;

pub const ADMIN_TOKEN: &str = "benchmark-admin-token";
pub const SYSTEM_UNDER_TEST_CPU: usize = 0;
pub const LOAD_GENERATOR_CPU: usize = 1;

pub struct Bench {
    pub broker: Broker,
    pub pid: u32,
    _dir: tempfile::TempDir,
}

pub async fn start_broker(extra: &[&str]) -> anyhow::Result<Bench> {
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, ADMIN_TOKEN)?;
    let mut options = BrokerOptions::embedded(dir.path().join("data"));
    options.admin_token_file = Some(token_file);
    options.extra_args = extra.iter().map(|s| (*s).to_owned()).collect();
    options.shipped_defaults = true;
    options.cpu = Some(SYSTEM_UNDER_TEST_CPU);
    procfs::pin(std::process::id(), LOAD_GENERATOR_CPU);
    let broker = Broker::start(options).await;
    let pid = broker
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the broker is not running"))?;
    Ok(Bench {
        broker,
        pid,
        _dir: dir,
    })
}

/// Creates `count` agents through the admin API; agent `i` has configuration project
/// `bench/p<i>`. Returns their tokens.
pub async fn create_agents(broker: &Broker, count: usize) -> anyhow::Result<Vec<String>> {
    let client = fluxgate_e2e::harness::http_client();
    let url = broker.http_url("/api/v1/agents");
    let mut tokens = Vec::with_capacity(count);
    for i in 0..count {
        tokens.push(
            create_agent(&client, &url, &format!("agent-{i}"), &format!("bench/p{i}")).await?,
        );
    }
    Ok(tokens)
}

/// Creates one agent through the admin API at `url`; returns its token.
pub async fn create_agent(
    client: &reqwest::Client,
    url: &str,
    name: &str,
    config_project: &str,
) -> anyhow::Result<String> {
    let body = serde_json::json!({"name": name, "config_project": config_project});
    let created: serde_json::Value = client
        .post(url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    created["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no token in {created}"))
}
