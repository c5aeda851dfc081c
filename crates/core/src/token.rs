//! Agent tokens: generated once, shown once, stored only as a SHA-256 digest.
//!
//! Tokens carry 256 random bits, so a fast digest is enough (nothing to brute-force), and
//! digests are compared in constant time. A token never appears in `Debug` output.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of every agent token, so secret scanners can recognise them.
pub const TOKEN_PREFIX: &str = "fgat_";

/// A plaintext agent token. Only exists between generation and printing, and while the
/// broker checks a presented token.
#[derive(Clone)]
pub struct AgentToken(String);

impl AgentToken {
    /// A fresh random token.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::rng().random();
        Self(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Wraps a token presented by a client.
    pub fn from_presented(raw: &str) -> Self {
        Self(raw.trim().to_owned())
    }

    /// The plaintext, to print once to the operator.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    pub fn digest(&self) -> TokenDigest {
        TokenDigest::of(self.0.as_bytes())
    }
}

impl fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentToken(<redacted>)")
    }
}

/// The SHA-256 digest of a secret, hex-encoded: what the store keeps.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenDigest(String);

impl TokenDigest {
    pub fn of(secret: &[u8]) -> Self {
        Self(hex::encode(Sha256::digest(secret)))
    }

    /// Wraps a digest read back from the store.
    pub fn from_hex(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_hex(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison.
    pub fn matches(&self, other: &TokenDigest) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenDigest({}…)", &self.0[..self.0.len().min(8)])
    }
}

/// Checks a presented secret against a set of configured ones in constant time: both sides
/// are hashed first, so neither content nor length leaks, and every candidate is compared.
pub fn secret_matches_any(presented: &[u8], configured: &[TokenDigest]) -> bool {
    let presented = TokenDigest::of(presented);
    configured
        .iter()
        .fold(subtle::Choice::from(0), |found, candidate| {
            found | presented.0.as_bytes().ct_eq(candidate.0.as_bytes())
        })
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_unique_prefixed_and_hidden_from_debug() {
        let a = AgentToken::generate();
        let b = AgentToken::generate();
        assert_ne!(a.reveal(), b.reveal());
        assert!(a.reveal().starts_with(TOKEN_PREFIX));
        assert_eq!(a.reveal().len(), TOKEN_PREFIX.len() + 43);
        assert!(!format!("{a:?}").contains(&a.reveal()[6..]));
    }

    #[test]
    fn digests_match_only_the_same_token() {
        let token = AgentToken::generate();
        let digest = token.digest();
        assert!(
            digest.matches(&AgentToken::from_presented(&format!("{}\n", token.reveal())).digest())
        );
        assert!(!digest.matches(&AgentToken::generate().digest()));
    }

    #[test]
    fn secret_matches_any_of_several() {
        let configured = vec![
            TokenDigest::of(b"old-secret"),
            TokenDigest::of(b"new-secret"),
        ];
        assert!(secret_matches_any(b"new-secret", &configured));
        assert!(secret_matches_any(b"old-secret", &configured));
        assert!(!secret_matches_any(b"new-secre", &configured));
        assert!(!secret_matches_any(b"", &configured));
        assert!(!secret_matches_any(b"x", &[]));
    }
}
