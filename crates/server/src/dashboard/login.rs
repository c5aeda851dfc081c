//! `POST /login` and `POST /logout`: the admin token, typed into the login form, opens a
//! session (see `session`); a wrong one answers 401 with the login page and a message.
//! Attempts are rate limited for the whole replica ([`LoginLimiter`]), so the token cannot
//! be guessed quickly; the bearer admin API is not affected.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use fluxgate_core::UnixMillis;
use fluxgate_core::token::secret_matches_any;
use http::{StatusCode, header};
use parking_lot::Mutex;

use super::{Dashboard, assets};
use std::sync::Arc;

/// Largest login form body.
pub const LOGIN_BODY_LIMIT: usize = 4 * 1024;
/// Attempts allowed at once.
pub const LOGIN_BURST: u32 = 10;
/// One more attempt allowed per this much time.
pub const LOGIN_REFILL: Duration = Duration::from_secs(6);

/// A token bucket of login attempts.
pub struct LoginLimiter {
    state: Mutex<(f64, Instant)>,
    burst: u32,
    refill: Duration,
}

impl LoginLimiter {
    pub fn new(burst: u32, refill: Duration) -> Self {
        Self {
            state: Mutex::new((f64::from(burst), Instant::now())),
            burst,
            refill,
        }
    }

    /// Takes one attempt, or says how long until the next one is allowed.
    pub fn take(&self) -> Result<(), Duration> {
        self.take_at(Instant::now())
    }

    fn take_at(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock();
        let (tokens, since) = &mut *state;
        let earned =
            now.saturating_duration_since(*since).as_secs_f64() / self.refill.as_secs_f64();
        *tokens = (*tokens + earned).min(f64::from(self.burst));
        *since = (*since).max(now);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(self.refill.mul_f64(1.0 - *tokens))
        }
    }
}

pub(super) async fn login(State(dashboard): State<Arc<Dashboard>>, body: Bytes) -> Response {
    if let Err(wait) = dashboard.limiter.take() {
        tracing::warn!("dashboard: login attempts over the rate limit");
        let mut response = assets::login(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "Too many login attempts; try again in {} s.",
                wait.as_secs() + 1
            ),
        );
        response.headers_mut().insert(
            header::RETRY_AFTER,
            (wait.as_secs() + 1).to_string().parse().expect("a number"),
        );
        return response;
    }
    let token = url::form_urlencoded::parse(&body)
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if token.is_empty() {
        return assets::login(StatusCode::UNAUTHORIZED, "Enter the admin token.");
    }
    if !secret_matches_any(token.as_bytes(), std::slice::from_ref(&dashboard.token)) {
        tracing::warn!("dashboard: login with a wrong admin token");
        return assets::login(
            StatusCode::UNAUTHORIZED,
            "That is not the admin token (the content of the broker's admin_token_file).",
        );
    }
    let value = dashboard.sessions.issue(UnixMillis::now());
    tracing::info!("dashboard: session opened");
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_owned()),
            (header::SET_COOKIE, dashboard.sessions.set_cookie(&value)),
        ],
    )
        .into_response()
}

pub(super) async fn logout(State(dashboard): State<Arc<Dashboard>>) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_owned()),
            (header::SET_COOKIE, dashboard.sessions.clear_cookie()),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_allows_a_burst_then_one_per_refill() {
        let limiter = LoginLimiter::new(3, Duration::from_millis(200));
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take_at(start).is_ok());
        }
        let wait = limiter.take_at(start).unwrap_err();
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        let later = start + Duration::from_millis(210);
        assert!(limiter.take_at(later).is_ok());
        assert!(limiter.take_at(later).is_err());
        // Never more than the burst, however long it was quiet.
        let much_later = start + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(limiter.take_at(much_later).is_ok());
        }
        assert!(limiter.take_at(much_later).is_err());
    }
}
