//! hyper's timer for HTTP/2 connections, reading the time on the streams' keepalive grid
//! (`fluxgate_stream::keepalive_grid`).
//!
//! hyper schedules its keepalive PING at "last read + interval", with "last read" from
//! [`Timer::now`]. Read on the grid, a whole-second interval puts the PING on the same
//! grid points as the stream's own keepalive, so an idle connection's PING and keepalive
//! fall due together and usually leave in one write. The price: a PING's timeout is
//! counted from the grid point before it was sent, so it may expire up to one grid step
//! early; the agent listener's timeout (10 s) leaves room for that.

use std::pin::Pin;
use std::time::{Duration, Instant};

use fluxgate_stream::keepalive_grid;
use hyper::rt::{Sleep, Timer};
use hyper_util::rt::TokioTimer;

/// [`TokioTimer`], with [`Timer::now`] rounded down to the keepalive grid.
#[derive(Clone, Debug, Default)]
pub(super) struct GridTimer(TokioTimer);

impl Timer for GridTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.0.sleep(duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        self.0.sleep_until(deadline)
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        self.0.reset(sleep, new_deadline);
    }

    fn now(&self) -> Instant {
        keepalive_grid::floor(self.0.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_the_grid_point_at_or_before_the_real_time() {
        let timer = GridTimer::default();
        let before = Instant::now();
        let now = timer.now();
        assert_eq!(keepalive_grid::floor(now), now, "on the grid");
        assert!(now <= Instant::now());
        assert!(now + keepalive_grid::STEP > before, "{now:?} {before:?}");
    }
}
