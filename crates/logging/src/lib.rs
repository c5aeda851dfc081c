//! Logging for fluxgate's binaries: text or one JSON object per line on stderr, filtered by
//! `RUST_LOG` (or a default directive).
//!
//! Logging must never take the process down or stall it. A broker whose stderr is a closed
//! pipe once panicked in a worker (the subscriber reports a failed write with `eprintln!`,
//! which panics) and then ignored SIGTERM. So:
//!
//! - lines go through a bounded, lossy queue to one writer thread
//!   ([`tracing_appender::non_blocking`]): a stderr nobody reads costs dropped lines, never
//!   a blocked task;
//! - that thread ignores write errors ([`QuietStderr`]), and the subscriber does not report
//!   them either;
//! - no line is longer than [`MAX_LINE`] bytes: a longer one is cut, and says so;
//! - panics are logged as ordinary error lines (with where they happened), through the same
//!   path, instead of the standard hook's direct write to stderr.

use std::io::{self, Write};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Longest line written; the rest of a longer one is replaced by a marker.
pub const MAX_LINE: usize = 16 * 1024;

/// Lines queued for the writer thread before new ones are dropped.
const QUEUE_LINES: usize = 64 * 1024;

/// How lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// A global subscriber was already installed, or the filter is invalid.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the log subscriber: {0}")]
pub struct LoggingError(String);

/// Keeps the writer thread alive; dropping it flushes what is queued (at exit).
#[must_use = "logging stops when the guard is dropped"]
pub struct LogGuard {
    _worker: WorkerGuard,
}

/// Installs the global subscriber and the panic hook. `RUST_LOG` wins over
/// `default_directive` when it is set and valid.
pub fn init(format: Format, default_directive: &str) -> Result<LogGuard, LoggingError> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_directive))
        .map_err(|e| LoggingError(e.to_string()))?;
    let (writer, worker) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE_LINES)
        .thread_name("fluxgate-log-writer")
        .finish(QuietStderr);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .log_internal_errors(false)
        .with_writer(writer);
    let installed = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| LoggingError(e.to_string()))?;
    std::panic::set_hook(Box::new(log_panic));
    Ok(LogGuard { _worker: worker })
}

fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let message = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    let location = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()))
        .unwrap_or_default();
    let thread = std::thread::current();
    tracing::error!(
        panic = %message,
        location = %location,
        thread = thread.name().unwrap_or("unnamed"),
        "panic"
    );
}

/// stderr that never fails: a write error (a closed pipe, a full disk) drops the line.
/// Lines longer than [`MAX_LINE`] are cut and marked.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuietStderr;

impl Write for QuietStderr {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut stderr = io::stderr().lock();
        let _ = write_bounded(&mut stderr, line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().lock().flush();
        Ok(())
    }
}

/// Writes `line`, or its first [`MAX_LINE`] bytes followed by a marker and a newline.
fn write_bounded(out: &mut impl Write, line: &[u8]) -> io::Result<()> {
    if line.len() <= MAX_LINE {
        return out.write_all(line);
    }
    out.write_all(&line[..MAX_LINE])?;
    writeln!(
        out,
        " …[log line cut: {} more bytes]",
        line.len() - MAX_LINE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_and_say_so() {
        let mut out = Vec::new();
        write_bounded(&mut out, &vec![b'x'; MAX_LINE + 500]).unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.len() < MAX_LINE + 100, "{}", text.len());
        assert!(
            text.ends_with("…[log line cut: 500 more bytes]\n"),
            "{}",
            &text[MAX_LINE..]
        );
    }

    #[test]
    fn short_lines_pass_unchanged() {
        let mut out = Vec::new();
        write_bounded(&mut out, b"{\"message\":\"ok\"}\n").unwrap();
        assert_eq!(out, b"{\"message\":\"ok\"}\n");
    }
}
