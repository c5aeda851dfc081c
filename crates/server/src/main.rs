//! `fluxgate`: the broker and its command line (`fluxgate --help`).
//!
//! Parses the command line, loads the configuration, sets up logging and the allocator,
//! then hands over to the `fluxgate_server` library.

use clap::Parser as _;
use fluxgate_server::cli::{Cli, Command};
use fluxgate_server::{Config, Listeners, commands, secrets, shutdown, telemetry};

/// jemalloc, with a background thread that returns freed pages to the system: after a
/// burst (thousands of streams with large Hellos) the broker shrinks back instead of
/// keeping its peak, as glibc's per-thread arenas did (see docs/benchmarks.md, E).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Notify(args) = &cli.command {
        // A CI job's command: no configuration, no store, no logging set-up.
        let line = fluxgate_server::notify_client::notify(args, |name| std::env::var(name).ok())
            .await
            .map_err(|err| anyhow::anyhow!("fluxgate notify: {err:#}"))?;
        println!("{line}");
        return Ok(());
    }
    let config = Config::load(cli.config.as_deref(), std::env::vars(), cli.overrides())?;
    // A command's output is its answer: the broker's info lines (such as "agent created")
    // are not part of it. Commands other than `serve` log warnings and errors only, unless
    // a level other than the default was asked for (or RUST_LOG is set).
    let level = match cli.command {
        Command::Serve(_) => config.log_level.as_str(),
        _ if config.log_level == Config::default().log_level => "warn",
        _ => config.log_level.as_str(),
    };
    let _logging = telemetry::init_logging(config.log_format, level)?;
    if let Err(err) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %err, "cannot start jemalloc's background thread; freed memory returns more slowly");
    }
    secrets::warn_about_command_line(&cli.secret_flags());
    match cli.command {
        Command::Serve(_) => {
            telemetry::prometheus()?;
            let listeners = Listeners::bind(&config).await?;
            fluxgate_server::run(config, listeners, shutdown::on_signal())?
                .wait()
                .await
        }
        Command::Migrate => commands::migrate(&config).await,
        Command::Agent(command) => commands::agent(&config, command).await,
        Command::Healthcheck { url } => commands::healthcheck(&url).await,
        Command::Trace(args) => commands::trace(&config, &args).await,
        // 0: it would get the push; 1: it would not; 2: no answer.
        Command::Explain(args) => match commands::explain(&config, &args).await {
            Ok(true) => Ok(()),
            Ok(false) => std::process::exit(1),
            Err(err) => {
                eprintln!("Error: {err:#}");
                std::process::exit(2);
            }
        },
        Command::Notify(_) => unreachable!("handled before the configuration is loaded"),
    }
}
