//! Who may post hooks: the policy over `X-Gitlab-Token` ([`super::token`]) and Standard
//! Webhooks signatures ([`super::signature`]).
//!
//! - A hook with a `webhook-signature` header, when signing tokens are configured, is
//!   judged by its signature alone: a valid, fresh one passes; anything else is refused,
//!   even with a valid `X-Gitlab-Token` (a signature that fails is an attack or a
//!   misconfiguration, never something to paper over).
//! - A hook without one passes on a valid `X-Gitlab-Token`, unless signatures are
//!   required or no hook secret is configured.
//! - With no signing token configured, signature headers are ignored and the token
//!   decides (the broker cannot check what it has no key for).
//!
//! The signature covers the body, so it is verified after the body is read; the
//! timestamp and the token are checked before.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fluxgate_core::ApiError;
use http::HeaderMap;

use super::credentials::CredentialError;
use super::signature::{SignatureRefusal, SignedHeaders, SigningKey};
use super::token::{HookSecrets, TokenRefusal};

/// Default distance between `webhook-timestamp` and now accepted, either way.
pub const DEFAULT_SIGNATURE_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// How signatures are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignaturePolicy {
    /// Refuse hooks without a valid signature (retires `X-Gitlab-Token`).
    pub required: bool,
    /// Largest distance between `webhook-timestamp` and the broker's clock.
    pub tolerance: Duration,
}

impl Default for SignaturePolicy {
    fn default() -> Self {
        Self {
            required: false,
            tolerance: DEFAULT_SIGNATURE_TOLERANCE,
        }
    }
}

/// The configured hook credentials and the policy over them.
#[derive(Debug)]
pub struct HookAuth {
    secrets: HookSecrets,
    signing_keys: Vec<SigningKey>,
    policy: SignaturePolicy,
}

/// What the headers decided, before the body is read.
#[derive(Debug)]
pub enum HeaderCheck {
    /// `X-Gitlab-Token` matched.
    Token,
    /// Signed, well formed and fresh: verify it against the body.
    Signature(SignedHeaders),
}

/// How a hook was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticated {
    Token,
    /// By signature; carries the authentic `webhook-id`.
    Signature {
        webhook_id: String,
    },
}

/// Why a hook was refused (401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRefusal {
    Token(TokenRefusal),
    /// Unsigned, where only signed hooks are accepted.
    SignatureRequired,
    Signature(SignatureRefusal),
}

impl AuthRefusal {
    /// A fixed label for metrics and log rate limiting.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Token(TokenRefusal::Missing) => "token_missing",
            Self::Token(TokenRefusal::Wrong) => "token_wrong",
            Self::SignatureRequired => "signature_required",
            Self::Signature(SignatureRefusal::Malformed(_)) => "signature_malformed",
            Self::Signature(SignatureRefusal::Stale { .. }) => "signature_stale",
            Self::Signature(SignatureRefusal::Mismatch) => "signature_mismatch",
        }
    }

    pub fn to_api_error(&self) -> ApiError {
        let message = match self {
            Self::Token(TokenRefusal::Missing) => "missing X-Gitlab-Token header".to_owned(),
            Self::Token(TokenRefusal::Wrong) => {
                "X-Gitlab-Token does not match any configured hook secret".to_owned()
            }
            Self::SignatureRequired => {
                "this broker accepts only signed hooks: webhook-signature is missing \
                 (X-Gitlab-Token alone is not accepted)"
                    .to_owned()
            }
            Self::Signature(refusal) => refusal.to_string(),
        };
        ApiError::unauthenticated(message)
    }
}

impl HookAuth {
    /// Refuses a configuration that would accept nothing, or that requires signatures
    /// without a key to check them.
    pub fn new(
        secrets: HookSecrets,
        signing_keys: Vec<SigningKey>,
        policy: SignaturePolicy,
    ) -> Result<Self, CredentialError> {
        if policy.required && signing_keys.is_empty() {
            return Err(CredentialError::RequiredWithoutSigningToken);
        }
        if secrets.is_empty() && signing_keys.is_empty() {
            return Err(CredentialError::NoCredentials);
        }
        Ok(Self {
            secrets,
            signing_keys,
            policy,
        })
    }

    /// Whether hooks without a signature can pass.
    fn tokens_accepted(&self) -> bool {
        !self.policy.required && !self.secrets.is_empty()
    }

    /// The checks the headers allow, at `now_seconds` (Unix time).
    pub fn check_headers(
        &self,
        headers: &HeaderMap,
        now_seconds: i64,
    ) -> Result<HeaderCheck, AuthRefusal> {
        let signed = if self.signing_keys.is_empty() {
            None
        } else {
            SignedHeaders::read(headers).map_err(AuthRefusal::Signature)?
        };
        match signed {
            Some(signed) => {
                signed
                    .check_time(now_seconds, self.policy.tolerance)
                    .map_err(AuthRefusal::Signature)?;
                Ok(HeaderCheck::Signature(signed))
            }
            None if !self.tokens_accepted() => Err(AuthRefusal::SignatureRequired),
            None => self
                .secrets
                .check(headers)
                .map(|()| HeaderCheck::Token)
                .map_err(AuthRefusal::Token),
        }
    }

    /// Completes the check once the body is read.
    pub fn check_body(
        &self,
        check: HeaderCheck,
        body: &[u8],
    ) -> Result<Authenticated, AuthRefusal> {
        match check {
            HeaderCheck::Token => Ok(Authenticated::Token),
            HeaderCheck::Signature(signed) => {
                signed
                    .verify(&self.signing_keys, body)
                    .map_err(AuthRefusal::Signature)?;
                Ok(Authenticated::Signature {
                    webhook_id: signed.id().to_owned(),
                })
            }
        }
    }
}

/// The wall clock in Unix seconds.
pub fn unix_seconds_now() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;

    use super::*;
    use crate::hooks::signature::{
        WEBHOOK_ID_HEADER, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER,
    };
    use crate::hooks::token::{HookSecret, TOKEN_HEADER};

    const SECRET: &str = "a-hook-secret-of-some-length";
    const KEY: [u8; 32] = [42; 32];
    const NOW: i64 = 1_750_000_000;
    const BODY: &[u8] = br#"{"object_kind":"push"}"#;

    /// `v1,<base64>` computed here with the hmac crate, independently of the verifier.
    fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    fn auth(secrets: bool, keys: bool, required: bool) -> Result<HookAuth, CredentialError> {
        let secrets = if secrets {
            HookSecrets::new([HookSecret::new(SECRET).unwrap()])
        } else {
            HookSecrets::default()
        };
        let keys = if keys {
            vec![SigningKey::parse(&format!("whsec_{}", STANDARD.encode(KEY))).unwrap()]
        } else {
            Vec::new()
        };
        HookAuth::new(
            secrets,
            keys,
            SignaturePolicy {
                required,
                ..SignaturePolicy::default()
            },
        )
    }

    fn headers(token: Option<&str>, signature: Option<(i64, String)>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(token) = token {
            headers.insert(TOKEN_HEADER, token.parse().unwrap());
        }
        if let Some((timestamp, signature)) = signature {
            headers.insert(WEBHOOK_ID_HEADER, "delivery-1".parse().unwrap());
            headers.insert(WEBHOOK_TIMESTAMP_HEADER, timestamp.into());
            headers.insert(WEBHOOK_SIGNATURE_HEADER, signature.parse().unwrap());
        }
        headers
    }

    fn run(auth: &HookAuth, headers: &HeaderMap) -> Result<Authenticated, AuthRefusal> {
        let check = auth.check_headers(headers, NOW)?;
        auth.check_body(check, BODY)
    }

    fn good() -> Option<(i64, String)> {
        Some((NOW - 10, sign(&KEY, "delivery-1", NOW - 10, BODY)))
    }

    fn bad() -> Option<(i64, String)> {
        Some((NOW - 10, sign(&[1; 32], "delivery-1", NOW - 10, BODY)))
    }

    #[test]
    fn configurations_that_accept_nothing_are_refused() {
        assert_eq!(
            auth(false, false, false).unwrap_err(),
            CredentialError::NoCredentials
        );
        assert_eq!(
            auth(true, false, true).unwrap_err(),
            CredentialError::RequiredWithoutSigningToken
        );
    }

    #[test]
    fn signature_or_token_when_both_are_configured() {
        let auth = auth(true, true, false).unwrap();
        let signed = Ok(Authenticated::Signature {
            webhook_id: "delivery-1".to_owned(),
        });
        assert_eq!(run(&auth, &headers(None, good())), signed);
        assert_eq!(run(&auth, &headers(Some("wrong"), good())), signed);
        assert_eq!(
            run(&auth, &headers(Some(SECRET), None)),
            Ok(Authenticated::Token)
        );
        assert_eq!(
            run(&auth, &headers(Some(SECRET), bad())),
            Err(AuthRefusal::Signature(SignatureRefusal::Mismatch)),
            "a bad signature is refused even with a valid token"
        );
        let stale = Some((NOW - 301, sign(&KEY, "delivery-1", NOW - 301, BODY)));
        assert_eq!(
            run(&auth, &headers(Some(SECRET), stale))
                .unwrap_err()
                .reason(),
            "signature_stale"
        );
        assert_eq!(
            run(&auth, &headers(Some("wrong"), None)),
            Err(AuthRefusal::Token(TokenRefusal::Wrong))
        );
    }

    #[test]
    fn required_signatures_retire_the_token() {
        let auth = auth(true, true, true).unwrap();
        assert_eq!(
            run(&auth, &headers(Some(SECRET), None)),
            Err(AuthRefusal::SignatureRequired)
        );
        assert!(run(&auth, &headers(None, good())).is_ok());
        let only_keys = super::tests::auth(false, true, false).unwrap();
        assert_eq!(
            run(&only_keys, &headers(Some(SECRET), None)),
            Err(AuthRefusal::SignatureRequired)
        );
    }

    #[test]
    fn without_signing_tokens_signatures_are_ignored() {
        let auth = auth(true, false, false).unwrap();
        assert_eq!(
            run(&auth, &headers(Some(SECRET), bad())),
            Ok(Authenticated::Token)
        );
        assert_eq!(
            run(&auth, &headers(None, good())),
            Err(AuthRefusal::Token(TokenRefusal::Missing))
        );
    }
}
