//! What the verifier is told: the GitLab instance (its URL is the tokens' issuer), the
//! audience, and the limits of checking and fetching.

use std::fmt;
use std::time::Duration;

/// Longest audience accepted in the configuration.
const MAX_AUDIENCE_LEN: usize = 1024;

/// Why a [`VerifierConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("gitlab_url {url:?} is not a URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("gitlab_url {url:?} must be http:// or https://, without user, query or fragment")]
    UnsupportedUrl { url: String },
    #[error("ci_audience must be 1 to {MAX_AUDIENCE_LEN} characters, with no control characters")]
    BadAudience,
}

/// A GitLab instance's URL as the `iss` of its ID tokens: `http(s)://host[:port][/root]`,
/// without a trailing slash (GitLab writes `iss` without one; a configured
/// `https://gitlab.example.com/` means the same instance).
#[derive(Clone, PartialEq, Eq)]
pub struct Issuer(String);

impl Issuer {
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        let trimmed = raw.trim();
        let url = url::Url::parse(trimmed).map_err(|err| ConfigError::BadUrl {
            url: trimmed.to_owned(),
            reason: err.to_string(),
        })?;
        let plain = matches!(url.scheme(), "http" | "https")
            && url.host_str().is_some()
            && url.username().is_empty()
            && url.password().is_none()
            && url.query().is_none()
            && url.fragment().is_none();
        if !plain {
            return Err(ConfigError::UnsupportedUrl {
                url: trimmed.to_owned(),
            });
        }
        Ok(Self(url.as_str().trim_end_matches('/').to_owned()))
    }

    /// Compares an `issuer` or `iss` as GitLab writes it (a trailing slash ignored).
    pub fn matches(&self, other: &str) -> bool {
        other.trim_end_matches('/') == self.0
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<issuer>/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.0)
    }
}

impl fmt::Display for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Everything the [`Verifier`](crate::Verifier) needs.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// The GitLab instance: discovery is read from it and tokens must name it as `iss`.
    pub issuer: Issuer,
    /// The `aud` the pipeline's `id_tokens:` entry names (`--ci-audience`).
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`, both ways.
    pub leeway: Duration,
    /// An unknown `kid` refreshes the keys at most once per this (single-flight): a flood
    /// of tokens naming made-up keys costs GitLab one fetch per interval.
    pub refresh_min_interval: Duration,
    /// Keys are fetched again in the background this often (so a key GitLab retired stops
    /// verifying).
    pub refresh_interval: Duration,
    /// Each discovery or JWKS request must finish within this.
    pub http_timeout: Duration,
    /// While discovery fails, the background task retries after 1 s, doubling up to this.
    pub retry_max: Duration,
}

/// Defaults of [`VerifierConfig`]'s limits.
impl VerifierConfig {
    pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
    pub const DEFAULT_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(30);
    pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(3600);
    pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(60);

    /// A configuration with the default limits.
    pub fn new(issuer: Issuer, audience: &str) -> Result<Self, ConfigError> {
        let audience_ok = !audience.is_empty()
            && audience.len() <= MAX_AUDIENCE_LEN
            && !audience.chars().any(char::is_control);
        if !audience_ok {
            return Err(ConfigError::BadAudience);
        }
        Ok(Self {
            issuer,
            audience: audience.to_owned(),
            leeway: Self::DEFAULT_LEEWAY,
            refresh_min_interval: Self::DEFAULT_REFRESH_MIN_INTERVAL,
            refresh_interval: Self::DEFAULT_REFRESH_INTERVAL,
            http_timeout: Self::DEFAULT_HTTP_TIMEOUT,
            retry_max: Self::DEFAULT_RETRY_MAX,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issuer_is_normalised_without_a_trailing_slash() {
        let issuer = Issuer::parse("https://gitlab.example.com/").unwrap();
        assert_eq!(issuer.as_str(), "https://gitlab.example.com");
        assert!(issuer.matches("https://gitlab.example.com"));
        assert!(issuer.matches("https://gitlab.example.com/"));
        assert!(!issuer.matches("https://gitlab.example.org"));
        assert_eq!(
            issuer.discovery_url(),
            "https://gitlab.example.com/.well-known/openid-configuration"
        );
        let rooted = Issuer::parse("https://example.com/gitlab/").unwrap();
        assert_eq!(rooted.as_str(), "https://example.com/gitlab");
    }

    #[test]
    fn only_plain_http_urls_are_issuers() {
        for bad in [
            "gitlab.example.com",
            "ftp://gitlab.example.com",
            "https://user:pw@gitlab.example.com",
            "https://gitlab.example.com/?x=1",
            "https://gitlab.example.com/#top",
        ] {
            assert!(Issuer::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_audience_must_be_plain_text() {
        let issuer = Issuer::parse("https://gitlab.example.com").unwrap();
        assert!(VerifierConfig::new(issuer.clone(), "https://fluxgate.example.com").is_ok());
        assert_eq!(
            VerifierConfig::new(issuer.clone(), "").unwrap_err(),
            ConfigError::BadAudience
        );
        assert!(VerifierConfig::new(issuer, "a\nb").is_err());
    }
}
