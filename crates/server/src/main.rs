//! `fluxgate`: see `fluxgate --help`.

use clap::Parser as _;
use fluxgate_server::cli::{Cli, Command};
use fluxgate_server::config::Config;
use fluxgate_server::{broker, commands, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(
        cli.global.config.as_deref(),
        std::env::vars(),
        cli.overrides(),
    )?;
    telemetry::init_logging(config.log_format, &config.log_level);
    match cli.command {
        Command::Serve(_) => {
            let metrics = telemetry::init_metrics()?;
            let listeners = broker::Listeners::bind(&config).await?;
            broker::run(config, listeners, Some(metrics), shutdown::on_signal()).await
        }
        Command::Migrate => commands::migrate(&config).await,
        Command::Agent(command) => commands::agent(&config, command).await,
        Command::Healthcheck { url } => commands::healthcheck(&url).await,
    }
}
