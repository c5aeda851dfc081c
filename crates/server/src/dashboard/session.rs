//! Dashboard sessions: a cookie holding an expiry and a nonce signed with HMAC-SHA256 under
//! a key derived from the admin token, never the token itself.
//!
//! Every replica derives the same key from the same admin token, so a session opened on
//! one replica is valid on all of them; changing the admin token ends every session. The
//! signature is checked in constant time, and an expiry further ahead than
//! [`SESSION_LIFETIME`] is refused. Logging out clears the cookie in the browser; the
//! cookie is `HttpOnly`, so no script can have copied it.

use std::time::Duration;

use fluxgate_core::UnixMillis;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngExt as _;
use sha2::{Digest as _, Sha256};

/// The cookie's name.
pub const COOKIE_NAME: &str = "fluxgate-session";
/// How long a session lasts after login.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Longest cookie value looked at (`<expiry>.<nonce>.<mac>` is about 100 bytes).
const MAX_VALUE_BYTES: usize = 256;
/// Domain separation for the key and the signed message.
const KEY_CONTEXT: &[u8] = b"fluxgate dashboard session key v1\0";
const MESSAGE_CONTEXT: &str = "fluxgate-dashboard-session-v1";

/// Issues and checks session cookies.
pub struct Sessions {
    key: [u8; 32],
    /// Adds `Secure` (the HTTP listener has TLS).
    secure: bool,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    pub fn new(admin_token: &str, secure: bool) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(KEY_CONTEXT);
        hasher.update(admin_token.as_bytes());
        Self {
            key: hasher.finalize().into(),
            secure,
        }
    }

    /// A new session's cookie value, valid until `now + SESSION_LIFETIME`.
    pub fn issue(&self, now: UnixMillis) -> String {
        let expiry = now.plus(SESSION_LIFETIME).get();
        let nonce: [u8; 16] = rand::rng().random();
        let nonce = hex::encode(nonce);
        let mac = hex::encode(self.mac(expiry, &nonce).finalize().into_bytes());
        format!("{expiry}.{nonce}.{mac}")
    }

    /// True if `value` is a cookie this key signed, not expired and not further ahead than
    /// a session can last.
    pub fn is_valid(&self, value: &str, now: UnixMillis) -> bool {
        if value.len() > MAX_VALUE_BYTES {
            return false;
        }
        let mut parts = value.split('.');
        let (Some(expiry), Some(nonce), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(expiry) = expiry.parse::<i64>() else {
            return false;
        };
        let Ok(mac) = hex::decode(mac) else {
            return false;
        };
        if expiry <= now.get() || expiry > now.plus(SESSION_LIFETIME).get() {
            return false;
        }
        self.mac(expiry, nonce).verify_slice(&mac).is_ok()
    }

    /// The `Set-Cookie` value for a new session.
    pub fn set_cookie(&self, value: &str) -> String {
        format!(
            "{COOKIE_NAME}={value}; Max-Age={}; Path=/; HttpOnly; SameSite=Strict{}",
            SESSION_LIFETIME.as_secs(),
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that ends the session in the browser.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{COOKIE_NAME}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict{}",
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// True if the request's `Cookie` headers hold a valid session.
    pub fn request_is_authenticated(&self, headers: &http::HeaderMap, now: UnixMillis) -> bool {
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == COOKIE_NAME)
            .any(|(_, value)| self.is_valid(value, now))
    }

    fn mac(&self, expiry: i64, nonce: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC accepts keys of any length");
        mac.update(format!("{MESSAGE_CONTEXT}|{expiry}|{nonce}").as_bytes());
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    #[test]
    fn an_issued_session_is_valid_until_it_expires() {
        let sessions = Sessions::new("admin-token-0123456789", false);
        let value = sessions.issue(NOW);
        assert!(sessions.is_valid(&value, NOW));
        assert!(sessions.is_valid(&value, NOW.plus(SESSION_LIFETIME - Duration::from_secs(1))));
        assert!(!sessions.is_valid(&value, NOW.plus(SESSION_LIFETIME)));
        assert!(
            !value.contains("admin-token"),
            "the cookie never holds the token"
        );
    }

    #[test]
    fn a_forged_or_foreign_session_is_refused() {
        let sessions = Sessions::new("admin-token-0123456789", false);
        let value = sessions.issue(NOW);
        // Another admin token (rotated) signs with another key.
        assert!(!Sessions::new("another-token-0123456789", false).is_valid(&value, NOW));
        // A later expiry with the old signature.
        let (expiry, rest) = value.split_once('.').unwrap();
        let later = format!("{}.{rest}", expiry.parse::<i64>().unwrap() + 1);
        assert!(!sessions.is_valid(&later, NOW));
        // A signature cut short, garbage, nothing.
        assert!(!sessions.is_valid(&value[..value.len() - 2], NOW));
        assert!(!sessions.is_valid("x.y.z", NOW));
        assert!(!sessions.is_valid("", NOW));
        // An expiry further ahead than a session lasts, even if signed (a clock gone back).
        let future = sessions.issue(NOW.plus(Duration::from_secs(3600)));
        assert!(!sessions.is_valid(&future, NOW));
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_with_tls() {
        let plain = Sessions::new("admin-token-0123456789", false).set_cookie("v");
        assert_eq!(
            plain,
            "fluxgate-session=v; Max-Age=43200; Path=/; HttpOnly; SameSite=Strict"
        );
        let tls = Sessions::new("admin-token-0123456789", true);
        assert!(tls.set_cookie("v").ends_with("; Secure"));
        assert!(tls.clear_cookie().contains("Max-Age=0"));
    }

    #[test]
    fn the_session_is_found_among_other_cookies() {
        let sessions = Sessions::new("admin-token-0123456789", false);
        let value = sessions.issue(NOW);
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::COOKIE, "a=1".parse().unwrap());
        assert!(!sessions.request_is_authenticated(&headers, NOW));
        headers.append(
            http::header::COOKIE,
            format!("b=2; {COOKIE_NAME}={value}").parse().unwrap(),
        );
        assert!(sessions.request_is_authenticated(&headers, NOW));
    }
}
