//! `fluxgate`: the broker and its command line (`fluxgate --help`).
//!
//! Configuration, wiring, admin API and CLI, health and metrics, graceful shutdown. The
//! other crates do the work; this one puts them together.

mod admin;
mod broker;
mod cli;
mod commands;
mod config;
mod data_dir;
mod health;
mod http;
mod retention;
mod secrets;
mod shutdown;
mod telemetry;

use clap::Parser as _;

use crate::cli::{Cli, Command};
use crate::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(
        cli.global.config.as_deref(),
        std::env::vars(),
        cli.overrides(),
    )?;
    telemetry::init_logging(config.log_format, &config.log_level);
    secrets::warn_about_command_line(&cli.secret_flags());
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
