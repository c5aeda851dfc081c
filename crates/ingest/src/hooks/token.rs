//! `X-Gitlab-Token` authentication: the header must equal one of the configured secrets
//! (several, so a secret can be rotated without downtime). Compared in constant time.
//!
//! A secret shorter than [`MIN_HOOK_SECRET_LEN`] bytes cannot be configured: an empty one
//! would let in every hook that sends an empty (or, for GitLab, no configured) token.

use fluxgate_core::{TokenDigest, token::secret_matches_any};
use http::HeaderMap;

use super::credentials::CredentialError;

pub const TOKEN_HEADER: &str = "x-gitlab-token";

/// Shortest hook secret accepted, in bytes (`openssl rand -hex 24` gives 48).
pub const MIN_HOOK_SECRET_LEN: usize = 16;

/// One configured hook secret, validated and kept only as a digest.
#[derive(Clone)]
pub struct HookSecret(TokenDigest);

impl HookSecret {
    /// Refuses an empty secret or one shorter than [`MIN_HOOK_SECRET_LEN`] bytes.
    pub fn new(secret: &str) -> Result<Self, CredentialError> {
        if secret.is_empty() {
            return Err(CredentialError::EmptySecret);
        }
        if secret.len() < MIN_HOOK_SECRET_LEN {
            return Err(CredentialError::ShortSecret { len: secret.len() });
        }
        Ok(Self(TokenDigest::of(secret.as_bytes())))
    }
}

impl std::fmt::Debug for HookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookSecret(<redacted>)")
    }
}

/// The configured hook secrets, kept only as digests.
#[derive(Clone, Default)]
pub struct HookSecrets {
    digests: Vec<TokenDigest>,
}

/// Why a hook's `X-Gitlab-Token` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    Missing,
    Wrong,
}

impl HookSecrets {
    pub fn new(secrets: impl IntoIterator<Item = HookSecret>) -> Self {
        Self {
            digests: secrets.into_iter().map(|s| s.0).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether the hook's `X-Gitlab-Token` is one of the secrets. No secret configured
    /// means no token matches.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), TokenRefusal> {
        let presented = headers.get(TOKEN_HEADER).ok_or(TokenRefusal::Missing)?;
        if secret_matches_any(presented.as_bytes(), &self.digests) {
            Ok(())
        } else {
            Err(TokenRefusal::Wrong)
        }
    }
}

impl std::fmt::Debug for HookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HookSecrets({} configured)", self.digests.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(token: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(token) = token {
            headers.insert(TOKEN_HEADER, token.parse().unwrap());
        }
        headers
    }

    fn secrets(values: &[&str]) -> HookSecrets {
        HookSecrets::new(values.iter().map(|v| HookSecret::new(v).unwrap()))
    }

    #[test]
    fn any_configured_secret_is_accepted() {
        let secrets = secrets(&["old-secret-0123456789", "new-secret-0123456789"]);
        assert!(
            secrets
                .check(&headers(Some("old-secret-0123456789")))
                .is_ok()
        );
        assert!(
            secrets
                .check(&headers(Some("new-secret-0123456789")))
                .is_ok()
        );
        assert_eq!(
            secrets.check(&headers(Some("new-secret-012345678"))),
            Err(TokenRefusal::Wrong)
        );
        assert_eq!(secrets.check(&headers(None)), Err(TokenRefusal::Missing));
    }

    #[test]
    fn empty_and_short_secrets_cannot_be_configured() {
        assert_eq!(
            HookSecret::new("").unwrap_err(),
            CredentialError::EmptySecret
        );
        assert_eq!(
            HookSecret::new("fifteen-bytes!!").unwrap_err(),
            CredentialError::ShortSecret { len: 15 }
        );
        assert!(HookSecret::new("sixteen-bytes!!!").is_ok());
    }

    #[test]
    fn an_empty_token_never_matches() {
        let secrets = secrets(&["a-long-enough-secret"]);
        assert_eq!(secrets.check(&headers(Some(""))), Err(TokenRefusal::Wrong));
        assert_eq!(
            HookSecrets::default().check(&headers(Some(""))),
            Err(TokenRefusal::Wrong)
        );
    }
}
