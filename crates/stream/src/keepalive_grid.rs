//! One clock grid for every periodic write on an agent connection.
//!
//! An idle agent stream costs the broker two periodic writes: the stream's keepalive
//! (every `keepalive`) and, on its connection, hyper's HTTP/2 PING (every keepalive since
//! the agent last sent anything). Left to their own clocks, each fires at its own
//! millisecond: 10,000 idle streams wake the broker thousands of times a second, and a
//! stream's keepalive and its PING leave in two socket writes.
//!
//! Both clocks read time through this grid instead: [`floor`] rounds an instant down to a
//! whole [`STEP`] counted from one process-wide origin, and periods that are whole steps
//! keep the deadlines on it. Deadlines then fall together: the runtime wakes once per step
//! for every stream due in it, and a stream's keepalive and its PING usually leave in the
//! same write. A deadline moves by less than one step, which none of these periods (15 s
//! by default) notices.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The grid's spacing.
pub const STEP: Duration = Duration::from_secs(1);

/// Where the grid starts: the first time anyone asked.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// `at`, rounded down to the grid (never below its origin).
pub fn floor(at: Instant) -> Instant {
    let origin = origin();
    let since = at.saturating_duration_since(origin);
    let steps = since.as_nanos() / STEP.as_nanos();
    let steps = u32::try_from(steps).unwrap_or(u32::MAX);
    origin + STEP * steps
}

/// Whether `period` keeps deadlines on the grid (a whole, non-zero number of steps).
pub fn fits(period: Duration) -> bool {
    !period.is_zero() && period.as_nanos().is_multiple_of(STEP.as_nanos())
}

/// An interval whose ticks fall every `period` on the grid, the first within one `period`
/// from now (at least `period - STEP`). A period that does not fit the grid ticks every
/// `period` from now, as `tokio::time::interval` after a reset. A late tick is skipped,
/// not bunched, so the ticks stay on the grid.
pub fn interval(period: Duration) -> tokio::time::Interval {
    let now = tokio::time::Instant::now();
    let first = if fits(period) {
        tokio::time::Instant::from_std(floor(now.into_std())) + period
    } else {
        now + period
    };
    let mut interval = tokio::time::interval_at(first, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    interval
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_in_one_step_share_a_floor_and_the_next_step_does_not() {
        let start = floor(Instant::now()) + STEP;
        assert_eq!(floor(start), start);
        assert_eq!(floor(start + STEP / 2), start);
        assert_eq!(floor(start + STEP - Duration::from_nanos(1)), start);
        assert_eq!(floor(start + STEP), start + STEP);
    }

    #[test]
    fn only_whole_steps_fit() {
        assert!(fits(Duration::from_secs(15)));
        assert!(fits(STEP));
        assert!(!fits(Duration::ZERO));
        assert!(!fits(Duration::from_millis(1500)));
        assert!(!fits(Duration::from_millis(100)));
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_land_on_the_grid_within_one_period() {
        let period = Duration::from_secs(15);
        let opened = tokio::time::Instant::now();
        let mut ticks = interval(period);
        let first = ticks.tick().await;
        assert_eq!(floor(first.into_std()), first.into_std(), "on the grid");
        assert!(
            first > opened && first <= opened + period,
            "{first:?} {opened:?}"
        );
        assert!(first + STEP > opened + period);
        let second = ticks.tick().await;
        assert_eq!(second, first + period);
    }

    #[tokio::test(start_paused = true)]
    async fn intervals_started_within_one_step_tick_together() {
        let period = Duration::from_secs(15);
        let step_start = tokio::time::Instant::from_std(floor(Instant::now())) + STEP;
        tokio::time::sleep_until(step_start).await;
        let mut early = interval(period);
        tokio::time::sleep(STEP * 2 / 5).await;
        let mut late = interval(period);
        let (early_tick, late_tick) = (early.tick().await, late.tick().await);
        assert_eq!(early_tick, late_tick);
        assert_eq!(early_tick, step_start + period);
    }

    #[tokio::test(start_paused = true)]
    async fn periods_off_the_grid_tick_from_now() {
        let period = Duration::from_millis(250);
        let opened = tokio::time::Instant::now();
        let mut ticks = interval(period);
        assert_eq!(ticks.tick().await, opened + period);
    }
}
