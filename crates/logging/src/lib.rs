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
//! - that thread writes lines in batches ([`LineBatcher`]): what is queued goes out in one
//!   write, and after a batch of several lines the thread lingers for [`LINGER`] before it
//!   waits for the next line, so a busy broker (a line per hook) wakes it a few hundred
//!   times a second, not once per line. (Lingering after every batch, single lines
//!   included, raised the end-to-end benchmark's p99 from ~30 to ~45 ms:
//!   docs/benchmarks.md, A''');
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

/// How long the writer thread waits after a batch of several lines before it sleeps until
/// the next line: while lines come faster than it writes them (a line per hook at
/// thousands of hooks a second), those logged meanwhile join the next batch without
/// waking it. A batch of one line means lines are sparse: then it does not wait.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

/// Bytes gathered before they are written even though more lines are queued (a pipe's
/// buffer).
const BATCH_BYTES: usize = 64 * 1024;

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
        .finish(LineBatcher::new(QuietStderr));
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

/// The writer thread's side: gathers the lines it is handed (each cut to [`MAX_LINE`]) and
/// writes them to `out` in one write when the thread has drained its queue (`flush`:
/// [`tracing_appender`]'s thread calls it once per drained queue), or sooner once
/// [`BATCH_BYTES`] are gathered; after a batch of more than one line, `flush` sleeps for
/// [`LINGER`].
#[derive(Debug)]
pub struct LineBatcher<W: Write> {
    out: W,
    pending: Vec<u8>,
    /// Lines in the batch being gathered.
    lines: usize,
}

impl<W: Write> LineBatcher<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            pending: Vec::new(),
            lines: 0,
        }
    }

    fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = self.out.write_all(&self.pending);
        self.pending.clear();
        written
    }
}

impl<W: Write> Write for LineBatcher<W> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        // Writing into a `Vec` cannot fail.
        let _ = write_bounded(&mut self.pending, line);
        self.lines += 1;
        if self.pending.len() >= BATCH_BYTES {
            self.write_pending()?;
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let linger = linger_after(std::mem::take(&mut self.lines));
        let written = self.write_pending().and_then(|()| self.out.flush());
        if let Some(linger) = linger {
            #[expect(
                clippy::disallowed_methods,
                reason = "runs on the log writer's own thread, never on a runtime worker"
            )]
            std::thread::sleep(linger);
        }
        written
    }
}

/// How long to wait after writing a batch of `lines`: [`LINGER`] when lines came faster
/// than they were written, nothing after a single line.
fn linger_after(lines: usize) -> Option<std::time::Duration> {
    (lines > 1).then_some(LINGER)
}

/// stderr that never fails: a write error (a closed pipe, a full disk) drops what was
/// being written.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuietStderr;

impl Write for QuietStderr {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().lock().write_all(bytes);
        Ok(bytes.len())
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

    /// A sink that records each write it is asked for.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Write for Writes {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.push(bytes.to_vec());
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_drained_together_leave_in_one_write() {
        let mut batcher = LineBatcher::new(Writes::default());
        batcher.write_all(b"one\n").unwrap();
        batcher.write_all(b"two\n").unwrap();
        batcher.write_all(b"three\n").unwrap();
        assert!(
            batcher.out.0.is_empty(),
            "nothing is written before the flush"
        );
        batcher.flush().unwrap();
        assert_eq!(batcher.out.0, vec![b"one\ntwo\nthree\n".to_vec()]);
        batcher.flush().unwrap();
        assert_eq!(batcher.out.0.len(), 1, "an empty batch is not written");
    }

    #[test]
    fn a_batch_is_written_once_it_fills_without_waiting_for_the_flush() {
        let mut batcher = LineBatcher::new(Writes::default());
        let line = [b'x'; 1024];
        for _ in 0..BATCH_BYTES / line.len() {
            batcher.write_all(&line).unwrap();
        }
        assert_eq!(batcher.out.0.len(), 1);
        assert_eq!(batcher.out.0[0].len(), BATCH_BYTES);
        batcher.write_all(b"next\n").unwrap();
        batcher.flush().unwrap();
        assert_eq!(batcher.out.0[1], b"next\n");
    }

    #[test]
    fn a_long_line_is_cut_in_the_batch() {
        let mut batcher = LineBatcher::new(Writes::default());
        batcher.write_all(&vec![b'x'; MAX_LINE + 10]).unwrap();
        batcher.flush().unwrap();
        let written = String::from_utf8_lossy(&batcher.out.0[0]).into_owned();
        assert!(
            written.ends_with("…[log line cut: 10 more bytes]\n"),
            "{written}"
        );
    }

    #[test]
    fn the_writer_lingers_only_after_a_batch_of_several_lines() {
        assert_eq!(linger_after(0), None);
        assert_eq!(linger_after(1), None, "a single line: lines are sparse");
        assert_eq!(linger_after(2), Some(LINGER));
        assert_eq!(linger_after(500), Some(LINGER));
    }

    #[test]
    fn short_lines_pass_unchanged() {
        let mut out = Vec::new();
        write_bounded(&mut out, b"{\"message\":\"ok\"}\n").unwrap();
        assert_eq!(out, b"{\"message\":\"ok\"}\n");
    }
}
