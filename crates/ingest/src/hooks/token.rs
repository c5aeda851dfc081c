//! `X-Gitlab-Token` authentication: the header must equal one of the configured secrets
//! (several, so a secret can be rotated without downtime). Compared in constant time.

use fluxgate_core::{ApiError, TokenDigest, token::secret_matches_any};
use http::HeaderMap;

pub const TOKEN_HEADER: &str = "x-gitlab-token";

/// The configured hook secrets, kept only as digests.
#[derive(Clone, Default)]
pub struct HookSecrets {
    digests: Vec<TokenDigest>,
}

impl HookSecrets {
    pub fn new<S: AsRef<[u8]>>(secrets: impl IntoIterator<Item = S>) -> Self {
        Self {
            digests: secrets
                .into_iter()
                .map(|s| TokenDigest::of(s.as_ref()))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let presented = headers
            .get(TOKEN_HEADER)
            .ok_or_else(|| ApiError::unauthenticated("missing X-Gitlab-Token header"))?;
        if secret_matches_any(presented.as_bytes(), &self.digests) {
            Ok(())
        } else {
            Err(ApiError::unauthenticated(
                "X-Gitlab-Token does not match any configured hook secret",
            ))
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

    #[test]
    fn any_configured_secret_is_accepted() {
        let secrets = HookSecrets::new(["old", "new"]);
        assert!(secrets.check(&headers(Some("old"))).is_ok());
        assert!(secrets.check(&headers(Some("new"))).is_ok());
        let wrong = secrets.check(&headers(Some("neww"))).unwrap_err();
        assert_eq!(
            wrong.message,
            "X-Gitlab-Token does not match any configured hook secret"
        );
        let missing = secrets.check(&headers(None)).unwrap_err();
        assert_eq!(missing.message, "missing X-Gitlab-Token header");
    }
}
