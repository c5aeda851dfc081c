//! Capped exponential backoff, the one retry schedule of fluxgate: the agent's reconnects
//! to the broker, its retries of failing Receivers, and the broker's reconnects to Redis.
//!
//! The base delay starts at the initial delay and doubles after each delay up to the cap;
//! [`Backoff::reset`] starts over after a success. With jitter (the default), each delay is
//! drawn uniformly from `[base / 2, base]` ("equal jitter"): half of it is random, so
//! clients that failed at the same moment do not come back in lockstep, and none retries
//! much sooner than planned. Without jitter, each delay is the base itself.
//!
//! The type only computes delays; callers sleep (and watch for shutdown) themselves, so
//! this crate stays free of I/O.

use std::time::Duration;

use rand::RngExt as _;

/// The delays of one retry sequence.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    base: Duration,
    jitter: Jitter,
}

/// How much of each delay is random.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[base / 2, base]`.
    Equal,
    /// Exactly the base.
    None,
}

impl Backoff {
    /// Starts at `initial` and never exceeds `max` (raised to `initial` if smaller), with
    /// equal jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            base: initial,
            jitter: Jitter::Equal,
        }
    }

    /// The same schedule with every delay exactly at its base.
    pub fn without_jitter(self) -> Self {
        Self {
            jitter: Jitter::None,
            ..self
        }
    }

    /// The next delay, then doubles the base up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.jittered(self.base);
        self.base = self.base.saturating_mul(2).min(self.max);
        delay
    }

    /// A delay at the cap, without changing the sequence.
    pub fn max_delay(&self) -> Duration {
        self.jittered(self.max)
    }

    /// Starts the sequence again from the initial delay.
    pub fn reset(&mut self) {
        self.base = self.initial;
    }

    fn jittered(&self, base: Duration) -> Duration {
        match self.jitter {
            Jitter::Equal => equal_jitter(base),
            Jitter::None => base,
        }
    }
}

/// A duration drawn uniformly from `[base / 2, base]`.
fn equal_jitter(base: Duration) -> Duration {
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
    fn jitter_spreads_the_delays() {
        let delays: std::collections::HashSet<Duration> = (0..32)
            .map(|_| Backoff::new(1000 * MS, 1000 * MS).next_delay())
            .collect();
        assert!(delays.len() > 1, "{delays:?}");
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
        assert_eq!(equal_jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn without_jitter_the_delays_are_the_bases() {
        let mut backoff = Backoff::new(100 * MS, 5_000 * MS).without_jitter();
        let delays: Vec<_> = (0..8).map(|_| backoff.next_delay()).collect();
        let expected: Vec<_> = [100, 200, 400, 800, 1600, 3200, 5000, 5000]
            .map(|ms| ms * MS)
            .into();
        assert_eq!(delays, expected);
        assert_eq!(backoff.max_delay(), 5_000 * MS);
        backoff.reset();
        assert_eq!(backoff.next_delay(), 100 * MS);
    }
}
