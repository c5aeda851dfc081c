//! The `fluxgate-agent` binary: flags, logging, configuration, then [`fluxgate_agent::run`].

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use fluxgate_agent::telemetry::{self, LogFormat};
use fluxgate_agent::{AgentConfig, shutdown};

/// Streams GitLab push events from a fluxgate broker and triggers Flux Receivers.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The agent's YAML configuration file.
    #[arg(long, env = "FLUXGATE_AGENT_CONFIG")]
    config: PathBuf,
    /// Log line format (level filter: RUST_LOG, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _logging = telemetry::init(cli.log_format)?;
    let config = AgentConfig::load(&cli.config)
        .with_context(|| format!("invalid configuration in {}", cli.config.display()))?;
    fluxgate_agent::run(config, shutdown::on_signal()).await?;
    Ok(())
}
