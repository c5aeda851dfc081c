//! Logging setup: human-readable text or one JSON object per line, filtered by `RUST_LOG`
//! (default `info`). The writing itself (never panicking, never blocking) is
//! `fluxgate-logging`'s.

pub use fluxgate_logging::{LogGuard, LoggingError as TelemetryError};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber; keep the guard until the process ends.
pub fn init(format: LogFormat) -> Result<LogGuard, TelemetryError> {
    let format = match format {
        LogFormat::Text => fluxgate_logging::Format::Text,
        LogFormat::Json => fluxgate_logging::Format::Json,
    };
    fluxgate_logging::init(format, "info")
}
