//! Where the store reads the time: the system clock, or a clock a test moves by hand.
//!
//! The store stamps entries (`recorded_at`) and judges the dedup window with it, so a test
//! of the window moves a [`ManualClock`] past it instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use fluxgate_core::UnixMillis;

/// The store's source of "now".
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The wall clock ([`UnixMillis::now`]).
    #[default]
    System,
    /// A clock that moves only when told (tests).
    Manual(ManualClock),
}

impl Clock {
    pub fn now(&self) -> UnixMillis {
        match self {
            Clock::System => UnixMillis::now(),
            Clock::Manual(clock) => clock.now(),
        }
    }
}

/// A clock that stands still until advanced; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    millis: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn starting_at(start: UnixMillis) -> Self {
        Self {
            millis: Arc::new(AtomicI64::new(start.get())),
        }
    }

    pub fn now(&self) -> UnixMillis {
        UnixMillis(self.millis.load(Ordering::SeqCst))
    }

    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.millis.fetch_add(ms, Ordering::SeqCst);
    }
}

impl From<ManualClock> for Clock {
    fn from(clock: ManualClock) -> Self {
        Clock::Manual(clock)
    }
}
