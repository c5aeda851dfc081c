//! Rate limit for "hook refused" (and "notification refused") log lines: at most one line
//! per source address and reason per interval. The next line for that pair says how many were suppressed in
//! between. (Every refusal is still counted in `fluxgate_hook_refusals_total`.)
//!
//! Memory is bounded: at most [`MAX_TRACKED`] pairs are remembered; beyond that, pairs
//! from new sources share one entry per reason.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use fluxgate_core::{ApiError, ErrorCode};
use parking_lot::Mutex;

use crate::log_field::bounded;

/// Source/reason pairs remembered at most.
pub const MAX_TRACKED: usize = 4096;

/// Default interval between two lines for one source and reason.
pub const DEFAULT_REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct RefusalLog {
    interval: Duration,
    windows: Mutex<HashMap<(Option<IpAddr>, &'static str), Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    logged_at: Instant,
    suppressed: u64,
}

impl RefusalLog {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Called for each refusal. `Some(suppressed)`: write a line now, mentioning the
    /// `suppressed` refusals of this pair since the previous line; `None`: stay quiet.
    pub fn admit(&self, source: Option<IpAddr>, reason: &'static str, now: Instant) -> Option<u64> {
        let mut windows = self.windows.lock();
        let mut key = (source, reason);
        if !windows.contains_key(&key) && windows.len() >= MAX_TRACKED {
            let interval = self.interval;
            windows.retain(|_, w| now.duration_since(w.logged_at) < interval);
            if windows.len() >= MAX_TRACKED {
                key = (None, reason);
            }
        }
        match windows.get_mut(&key) {
            Some(window) if now.duration_since(window.logged_at) < self.interval => {
                window.suppressed += 1;
                None
            }
            Some(window) => {
                let suppressed = window.suppressed;
                *window = Window {
                    logged_at: now,
                    suppressed: 0,
                };
                Some(suppressed)
            }
            None => {
                windows.insert(
                    key,
                    Window {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

/// Counts one refusal in `counter` (by reason) and logs it, rate limited through `log`:
/// a warning when the broker is at fault (internal, unavailable), else an info line
/// "`what` refused". What hooks and pipeline notifications share.
pub fn record_refusal(
    log: &RefusalLog,
    counter: &'static str,
    what: &'static str,
    source: Option<IpAddr>,
    reason: &'static str,
    err: &ApiError,
) {
    metrics::counter!(counter, crate::metric_names::REASON => reason).increment(1);
    let Some(suppressed) = log.admit(source, reason, Instant::now()) else {
        return;
    };
    let source = source.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    // `detail`, not `message`: that field is the event's own text.
    let detail = bounded(&err.message);
    if matches!(err.code, ErrorCode::Internal | ErrorCode::Unavailable) {
        tracing::warn!(%source, reason, code = %err.code, %detail, suppressed, "{what} refused");
    } else {
        tracing::info!(%source, reason, code = %err.code, %detail, suppressed, "{what} refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn one_line_per_source_and_reason_per_interval() {
        let log = RefusalLog::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(log.admit(ip(1), "token_wrong", t0), Some(0));
        for n in 1..=5 {
            assert_eq!(
                log.admit(ip(1), "token_wrong", t0 + Duration::from_secs(n)),
                None
            );
        }
        // Another reason, or another source, has its own window.
        assert_eq!(log.admit(ip(1), "token_missing", t0), Some(0));
        assert_eq!(log.admit(ip(2), "token_wrong", t0), Some(0));
        // After the interval, one line with the count of those in between.
        assert_eq!(
            log.admit(ip(1), "token_wrong", t0 + Duration::from_secs(60)),
            Some(5)
        );
        assert_eq!(
            log.admit(ip(1), "token_wrong", t0 + Duration::from_secs(61)),
            None
        );
    }

    #[test]
    fn memory_is_bounded_under_many_sources() {
        let log = RefusalLog::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let mut lines = 0;
        for n in 0..(MAX_TRACKED as u32 + 1000) {
            let source = Some(IpAddr::from(n.to_be_bytes()));
            if log.admit(source, "token_wrong", t0).is_some() {
                lines += 1;
            }
        }
        let tracked = log.windows.lock().len();
        assert!(tracked <= MAX_TRACKED + 1, "{tracked}");
        // Sources past the limit share one window: one more line, not a thousand.
        assert_eq!(lines, MAX_TRACKED + 1);
    }
}
