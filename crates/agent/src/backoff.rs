//! Capped exponential backoff with jitter, for receiver retries and broker reconnects.
//!
//! Each delay is drawn uniformly from `[base / 2, base]` ("equal jitter"), where `base`
//! starts at the initial delay and doubles up to the cap. Half of the delay is random, so
//! agents that lost the broker at the same moment do not come back in lockstep, and none
//! retries much sooner than planned.

use std::time::Duration;

use rand::RngExt as _;

/// The delays of one retry sequence.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    base: Duration,
}

impl Backoff {
    /// Starts at `initial` and never exceeds `max` (raised to `initial` if smaller).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            base: initial,
        }
    }

    /// The next delay, then doubles the base up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = jittered(self.base);
        self.base = self.base.saturating_mul(2).min(self.max);
        delay
    }

    /// A delay at the cap, without changing the sequence.
    pub fn max_delay(&self) -> Duration {
        jittered(self.max)
    }

    /// Starts the sequence again from the initial delay.
    pub fn reset(&mut self) {
        self.base = self.initial;
    }
}

/// A duration drawn uniformly from `[base / 2, base]`.
fn jittered(base: Duration) -> Duration {
    let half = base / 2;
    let spread = u64::try_from((base - half).as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(rand::rng().random_range(0..=spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_up_to_the_cap_within_the_jitter_band() {
        let mut backoff = Backoff::new(500 * MS, 30_000 * MS);
        let bases = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000];
        for base in bases {
            let delay = backoff.next_delay();
            assert!(
                delay >= base * MS / 2 && delay <= base * MS,
                "{delay:?} vs {base}"
            );
        }
    }

    #[test]
    fn reset_starts_over_and_max_delay_is_at_the_cap() {
        let mut backoff = Backoff::new(10 * MS, 100 * MS);
        for _ in 0..10 {
            backoff.next_delay();
        }
        backoff.reset();
        assert!(backoff.next_delay() <= 10 * MS);
        let max = backoff.max_delay();
        assert!(max >= 50 * MS && max <= 100 * MS);
    }

    #[test]
    fn a_cap_below_the_initial_delay_is_raised() {
        let mut backoff = Backoff::new(10 * MS, MS);
        assert!(backoff.next_delay() >= 5 * MS);
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }
}
