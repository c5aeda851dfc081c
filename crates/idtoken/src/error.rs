//! Why a token was refused, and why GitLab's keys could not be had.
//!
//! Messages name the reason precisely (which claim, which time, which value) but never
//! repeat the token; values taken from a token are cut to a few dozen characters.

/// Why a token is refused. Every variant but [`VerifyError::KeysUnavailable`] is the
/// caller's fault (HTTP 401); that one is the broker's (503: GitLab's keys are not loaded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the token is not a JWT: {0}")]
    Malformed(String),
    #[error("algorithm {alg} is not allowed (GitLab ID tokens are RS256)")]
    AlgorithmNotAllowed { alg: String },
    #[error("the token's header has no kid (key id)")]
    MissingKid,
    #[error("GitLab's signing keys are not available yet ({reason}); retry later")]
    KeysUnavailable { reason: String },
    #[error("unknown kid {kid:?} after refreshing GitLab's keys")]
    UnknownKid { kid: String },
    #[error("bad signature")]
    BadSignature,
    #[error("the token expired at {at} (leeway {leeway_secs}s)")]
    Expired { at: String, leeway_secs: u64 },
    #[error("the token is not valid before {at} (leeway {leeway_secs}s)")]
    NotYetValid { at: String, leeway_secs: u64 },
    #[error("audience {found} is not {expected:?}")]
    WrongAudience { found: String, expected: String },
    #[error("issuer {found:?} is not {expected:?}")]
    WrongIssuer { found: String, expected: String },
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
    #[error("claim {claim} is invalid: {reason}")]
    InvalidClaim { claim: &'static str, reason: String },
}

impl VerifyError {
    /// A fixed label per variant, for metrics and log rate limiting.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::AlgorithmNotAllowed { .. } => "algorithm",
            Self::MissingKid => "missing_kid",
            Self::KeysUnavailable { .. } => "keys_unavailable",
            Self::UnknownKid { .. } => "unknown_kid",
            Self::BadSignature => "bad_signature",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::WrongAudience { .. } => "audience",
            Self::WrongIssuer { .. } => "issuer",
            Self::MissingClaim(_) => "missing_claim",
            Self::InvalidClaim { .. } => "invalid_claim",
        }
    }

    /// True when the broker, not the token, is at fault (the keys are not loaded).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::KeysUnavailable { .. })
    }
}

/// Why GitLab's discovery document or key set could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} sent more than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url} is not a valid {what}: {reason}")]
    Invalid {
        url: String,
        what: &'static str,
        reason: String,
    },
    /// The discovery document names another issuer: the configured `gitlab_url` is not
    /// the URL GitLab calls itself (`external_url`), so every token would be refused.
    #[error(
        "GitLab's discovery document says its issuer is {found:?}, but gitlab_url is {expected:?}; \
         set gitlab_url to GitLab's external URL"
    )]
    IssuerMismatch { found: String, expected: String },
    #[error("{url} has no RS256 signing key")]
    NoKeys { url: String },
}

/// `value` cut to `max` characters, control characters dropped: for token-supplied text in
/// messages.
pub(crate) fn shorten(value: &str, max: usize) -> String {
    let mut out: String = value
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect();
    if value.chars().count() > max {
        out.push('…');
    }
    out
}
