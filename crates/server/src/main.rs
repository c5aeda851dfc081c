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
mod listen;
mod retention;
mod secrets;
mod shutdown;
mod supervisor;
mod telemetry;

use clap::Parser as _;

/// jemalloc, with a background thread that returns freed pages to the system: after a
/// burst (thousands of streams with large Hellos) the broker shrinks back instead of
/// keeping its peak, as glibc's per-thread arenas did (see docs/benchmarks.md, E).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    let _logging = telemetry::init_logging(config.log_format, &config.log_level)?;
    if let Err(err) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %err, "cannot start jemalloc's background thread; freed memory returns more slowly");
    }
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
