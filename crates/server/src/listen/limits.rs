//! What one client may hold on a listener: how many connections, how long it may take to
//! send a request, how long a connection may sit idle, how long the TLS handshake may take.
//!
//! The connection cap is enforced by not accepting: at the cap the accept loop waits for a
//! slot and new sockets wait in the kernel's backlog. A hook that arrives while idle or
//! slow sockets fill the listener is therefore answered as soon as one is reaped (within
//! `header_read_timeout` or `idle_timeout`), instead of being refused at once (GitLab
//! counts a refused hook as a failure and disables hooks that fail repeatedly).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// One listener's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; more wait in the backlog.
    pub max_connections: usize,
    /// HTTP/1: a request's head must arrive within this from when the connection starts
    /// waiting for it (hyper's `header_read_timeout`; it runs on accept and after every
    /// response, so it also bounds an idle keep-alive wait). HTTP/2: the client preface and
    /// the first request must arrive within this after the TLS handshake.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// The TLS handshake must finish within this after accept.
    pub tls_handshake_timeout: Duration,
}

/// What the watchdog of one connection knows: requests in flight (a request is in flight
/// until its response body is dropped, so a long gRPC stream counts), whether any request
/// came yet, and since when nothing has been in flight.
#[derive(Debug)]
pub struct Activity {
    state: Mutex<ActivityState>,
    /// Notified when the last request in flight ends.
    idle: Notify,
}

#[derive(Debug)]
struct ActivityState {
    in_flight: usize,
    any_request: bool,
    idle_since: Instant,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                any_request: false,
                idle_since: Instant::now(),
            }),
            idle: Notify::new(),
        })
    }

    fn state(&self) -> parking_lot::MutexGuard<'_, ActivityState> {
        self.state.lock()
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub fn begin_request(self: &Arc<Self>) -> InFlight {
        let mut state = self.state();
        state.any_request = true;
        state.in_flight += 1;
        InFlight {
            activity: self.clone(),
        }
    }

    /// When the connection is to be closed if nothing changes: `None` while a request is in
    /// flight. `first_request` applies until the first request arrives (HTTP/2), `idle`
    /// after that (and from the start where `first_request` is `None`).
    pub fn deadline(&self, first_request: Option<Duration>, idle: Duration) -> Option<Instant> {
        let state = self.state();
        if state.in_flight > 0 {
            return None;
        }
        match first_request {
            Some(limit) if !state.any_request => Some(state.idle_since + limit),
            _ => Some(state.idle_since + idle),
        }
    }

    /// Returns once no request is in flight any more (at once if that happened since the
    /// last call).
    pub async fn went_idle(&self) {
        self.idle.notified().await;
    }

    pub fn any_request(&self) -> bool {
        self.state().any_request
    }
}

/// A request in flight; dropping it ends it.
#[derive(Debug)]
pub struct InFlight {
    activity: Arc<Activity>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.activity.state();
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
            // `notify_one` keeps a permit when nobody waits yet, so the watchdog cannot
            // miss it between reading the state and starting to wait.
            self.activity.idle.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(60);
    const FIRST: Duration = Duration::from_secs(10);

    #[test]
    fn the_first_request_deadline_gives_way_to_the_idle_one() {
        let activity = Activity::new();
        let first = activity.deadline(Some(FIRST), IDLE).unwrap();
        let idle = activity.deadline(None, IDLE).unwrap();
        assert_eq!(idle - first, IDLE - FIRST, "both count from the start");

        let request = activity.begin_request();
        assert_eq!(activity.deadline(Some(FIRST), IDLE), None, "busy");
        let ended = Instant::now();
        drop(request);
        let next = activity.deadline(Some(FIRST), IDLE).unwrap();
        assert!(
            next >= ended + IDLE,
            "the idle limit, from the end of the last request"
        );
    }

    #[test]
    fn a_connection_is_busy_until_its_last_request_ends() {
        let activity = Activity::new();
        let first = activity.begin_request();
        let second = activity.begin_request();
        drop(first);
        assert_eq!(activity.deadline(None, IDLE), None);
        drop(second);
        assert!(activity.deadline(None, IDLE).is_some());
    }
}
