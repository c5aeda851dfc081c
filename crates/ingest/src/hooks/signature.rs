//! Standard Webhooks signatures, as GitLab sends them on project, group and system hooks
//! when a signing token is set.
//!
//! Headers: `webhook-id` (GitLab puts its `Idempotency-Key` there), `webhook-timestamp`
//! (Unix seconds) and `webhook-signature`: space-separated `v1,<base64 HMAC-SHA256>`
//! entries over `"{webhook-id}.{webhook-timestamp}.{body}"`. The key is the base64 text
//! after `whsec_` in the signing token, decoded. Any configured key and any `v1` entry may
//! match (rotation on both sides); every pair is compared, in constant time.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::credentials::CredentialError;

pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";
/// How a signing token starts (`whsec_<base64 key>`).
pub const SIGNING_TOKEN_PREFIX: &str = "whsec_";
/// Key sizes the Standard Webhooks specification allows.
pub const MIN_SIGNING_KEY_LEN: usize = 24;
pub const MAX_SIGNING_KEY_LEN: usize = 64;
/// Signatures read from one `webhook-signature` header at most.
pub const MAX_SIGNATURES: usize = 16;
/// Longest `webhook-id` accepted (as for `Idempotency-Key`).
pub const MAX_WEBHOOK_ID_LEN: usize = 255;

const SIGNATURE_LEN: usize = 32;
/// Base64 with or without padding: the specification does not say which senders use.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One HMAC key, from a `whsec_…` signing token. Never printed.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    pub fn parse(token: &str) -> Result<Self, CredentialError> {
        let encoded = token
            .strip_prefix(SIGNING_TOKEN_PREFIX)
            .ok_or(CredentialError::SigningTokenPrefix)?;
        let key = BASE64
            .decode(encoded)
            .map_err(|e| CredentialError::SigningTokenEncoding {
                reason: e.to_string(),
            })?;
        if !(MIN_SIGNING_KEY_LEN..=MAX_SIGNING_KEY_LEN).contains(&key.len()) {
            return Err(CredentialError::SigningKeyLength { len: key.len() });
        }
        Ok(Self(key))
    }

    fn tag(&self, id: &str, timestamp: &str, body: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// Why a signed hook was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureRefusal {
    /// The headers are incomplete or not in the specified form.
    Malformed(String),
    /// `webhook-timestamp` is further from now than the tolerance (`skew` > 0: in the past).
    Stale {
        skew_seconds: i64,
        tolerance: Duration,
    },
    /// No `v1` signature matches the body with any configured key.
    Mismatch,
}

impl std::fmt::Display for SignatureRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(message) => f.write_str(message),
            Self::Stale {
                skew_seconds,
                tolerance,
            } => {
                let direction = if *skew_seconds >= 0 {
                    "in the past"
                } else {
                    "in the future"
                };
                write!(
                    f,
                    "webhook-timestamp is {} s {direction}; at most {} s either way is accepted \
                     (replay protection; check the clocks or hook_signature_tolerance)",
                    skew_seconds.unsigned_abs(),
                    tolerance.as_secs()
                )
            }
            Self::Mismatch => f.write_str(
                "webhook-signature does not match the body with any configured signing token",
            ),
        }
    }
}

/// A hook's Standard Webhooks headers, well formed but not yet verified.
#[derive(Debug, Clone)]
pub struct SignedHeaders {
    id: String,
    timestamp: String,
    timestamp_seconds: i64,
    /// Decoded `v1` signatures; entries that cannot be one (bad base64, wrong length) are
    /// kept out, so they simply match nothing.
    signatures: Vec<[u8; SIGNATURE_LEN]>,
}

impl SignedHeaders {
    /// `None` if the hook has no `webhook-signature` header (it is not signed).
    pub fn read(headers: &HeaderMap) -> Result<Option<Self>, SignatureRefusal> {
        let Some(signature) = headers.get(WEBHOOK_SIGNATURE_HEADER) else {
            return Ok(None);
        };
        let malformed = |m: &str| SignatureRefusal::Malformed(m.to_owned());
        let text = |name: &'static str| {
            let value = headers.get(name).ok_or_else(|| {
                SignatureRefusal::Malformed(format!(
                    "webhook-signature is present but {name} is missing"
                ))
            })?;
            value
                .to_str()
                .map(str::trim)
                .map_err(|_| SignatureRefusal::Malformed(format!("{name} must be visible ASCII")))
        };
        let id = text(WEBHOOK_ID_HEADER)?;
        if id.is_empty() || id.len() > MAX_WEBHOOK_ID_LEN {
            return Err(SignatureRefusal::Malformed(format!(
                "webhook-id must be 1 to {MAX_WEBHOOK_ID_LEN} characters"
            )));
        }
        let timestamp = text(WEBHOOK_TIMESTAMP_HEADER)?;
        let timestamp_seconds = timestamp
            .parse::<i64>()
            .ok()
            .filter(|_| !timestamp.is_empty() && timestamp.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| malformed("webhook-timestamp must be Unix seconds (digits only)"))?;
        let signature = signature
            .to_str()
            .map_err(|_| malformed("webhook-signature must be visible ASCII"))?;
        let entries: Vec<&str> = signature.split_ascii_whitespace().collect();
        if entries.len() > MAX_SIGNATURES {
            return Err(SignatureRefusal::Malformed(format!(
                "webhook-signature carries {} signatures; at most {MAX_SIGNATURES} are read",
                entries.len()
            )));
        }
        let v1: Vec<&str> = entries
            .iter()
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .collect();
        if v1.is_empty() {
            return Err(malformed(
                "webhook-signature has no `v1,<base64>` signature",
            ));
        }
        let signatures = v1
            .iter()
            .filter_map(|encoded| BASE64.decode(encoded).ok())
            .filter_map(|bytes| <[u8; SIGNATURE_LEN]>::try_from(bytes).ok())
            .collect();
        Ok(Some(Self {
            id: id.to_owned(),
            timestamp: timestamp.to_owned(),
            timestamp_seconds,
            signatures,
        }))
    }

    /// The `webhook-id` (authentic once [`SignedHeaders::verify`] passed).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Refuses a timestamp more than `tolerance` away from `now_seconds`, either way.
    pub fn check_time(
        &self,
        now_seconds: i64,
        tolerance: Duration,
    ) -> Result<(), SignatureRefusal> {
        let skew_seconds = now_seconds.saturating_sub(self.timestamp_seconds);
        let limit = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
        if skew_seconds.unsigned_abs() > limit.unsigned_abs() {
            return Err(SignatureRefusal::Stale {
                skew_seconds,
                tolerance,
            });
        }
        Ok(())
    }

    /// Whether any `v1` signature is the HMAC of this hook with any of `keys`. Every pair
    /// is compared, in constant time, whatever matched first.
    pub fn verify(&self, keys: &[SigningKey], body: &[u8]) -> Result<(), SignatureRefusal> {
        let mut matched = subtle::Choice::from(0);
        for key in keys {
            let expected = key.tag(&self.id, &self.timestamp, body);
            for presented in &self.signatures {
                matched |= expected.ct_eq(presented);
            }
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(SignatureRefusal::Mismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose;

    use super::*;

    /// `whsec_` + base64 of `key`: a signing token, as GitLab shows one.
    fn signing_token_for(key: &[u8]) -> String {
        format!(
            "{SIGNING_TOKEN_PREFIX}{}",
            general_purpose::STANDARD.encode(key)
        )
    }

    /// The example in the Standard Webhooks specification (webhooks.md), checked with
    /// Python's `hmac` module, not with this code.
    const SPEC_TOKEN: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: &str = "1614265330";
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers(id: Option<&str>, timestamp: Option<&str>, signature: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            (WEBHOOK_ID_HEADER, id),
            (WEBHOOK_TIMESTAMP_HEADER, timestamp),
            (WEBHOOK_SIGNATURE_HEADER, signature),
        ] {
            if let Some(value) = value {
                headers.insert(name, value.parse().unwrap());
            }
        }
        headers
    }

    fn spec_headers(signature: &str) -> SignedHeaders {
        SignedHeaders::read(&headers(
            Some(SPEC_ID),
            Some(SPEC_TIMESTAMP),
            Some(signature),
        ))
        .unwrap()
        .unwrap()
    }

    #[test]
    fn the_specifications_example_verifies() {
        let key = SigningKey::parse(SPEC_TOKEN).unwrap();
        let signed = spec_headers(SPEC_SIGNATURE);
        assert_eq!(
            signed.verify(std::slice::from_ref(&key), SPEC_BODY.as_bytes()),
            Ok(())
        );
        assert_eq!(
            signed.verify(&[key], b"{\"test\": 2432232315}"),
            Err(SignatureRefusal::Mismatch)
        );
    }

    #[test]
    fn any_key_and_any_v1_signature_may_match() {
        let other = SigningKey::parse(&signing_token_for(&[7; 32])).unwrap();
        let key = SigningKey::parse(SPEC_TOKEN).unwrap();
        let several = format!("v1a,ignored v1,AAAA v1,{} {SPEC_SIGNATURE}", "B".repeat(44));
        let signed = spec_headers(&several);
        assert_eq!(
            signed.verify(&[other.clone(), key], SPEC_BODY.as_bytes()),
            Ok(())
        );
        assert_eq!(
            signed.verify(&[other], SPEC_BODY.as_bytes()),
            Err(SignatureRefusal::Mismatch)
        );
    }

    #[test]
    fn signing_tokens_are_checked() {
        assert_eq!(
            SigningKey::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            CredentialError::SigningTokenPrefix
        );
        assert!(matches!(
            SigningKey::parse("whsec_not base64!").unwrap_err(),
            CredentialError::SigningTokenEncoding { .. }
        ));
        assert_eq!(
            SigningKey::parse(&signing_token_for(&[1; 16])).unwrap_err(),
            CredentialError::SigningKeyLength { len: 16 }
        );
        assert!(SigningKey::parse(&signing_token_for(&[1; 32])).is_ok());
        assert!(!format!("{:?}", SigningKey::parse(SPEC_TOKEN).unwrap()).contains("MfKQ"));
    }

    #[test]
    fn unsigned_and_malformed_headers() {
        assert!(
            SignedHeaders::read(&headers(Some("a"), Some("1"), None))
                .unwrap()
                .is_none()
        );
        let refusal = |h: HeaderMap| match SignedHeaders::read(&h) {
            Err(SignatureRefusal::Malformed(message)) => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            refusal(headers(None, Some("1"), Some(SPEC_SIGNATURE))),
            "webhook-signature is present but webhook-id is missing"
        );
        assert_eq!(
            refusal(headers(Some("a"), None, Some(SPEC_SIGNATURE))),
            "webhook-signature is present but webhook-timestamp is missing"
        );
        assert_eq!(
            refusal(headers(Some("a"), Some("-5"), Some(SPEC_SIGNATURE))),
            "webhook-timestamp must be Unix seconds (digits only)"
        );
        assert_eq!(
            refusal(headers(Some("a"), Some("1"), Some("v2,abc"))),
            "webhook-signature has no `v1,<base64>` signature"
        );
        let many = vec![SPEC_SIGNATURE; MAX_SIGNATURES + 1].join(" ");
        assert!(refusal(headers(Some("a"), Some("1"), Some(&many))).contains("at most 16"));
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_refused_both_ways() {
        let signed = spec_headers(SPEC_SIGNATURE);
        let at: i64 = SPEC_TIMESTAMP.parse().unwrap();
        let five_minutes = Duration::from_secs(300);
        assert!(signed.check_time(at + 300, five_minutes).is_ok());
        assert!(signed.check_time(at - 300, five_minutes).is_ok());
        let late = signed.check_time(at + 301, five_minutes).unwrap_err();
        assert_eq!(
            late.to_string(),
            "webhook-timestamp is 301 s in the past; at most 300 s either way is accepted \
             (replay protection; check the clocks or hook_signature_tolerance)"
        );
        let early = signed.check_time(at - 301, five_minutes).unwrap_err();
        assert!(
            early
                .to_string()
                .starts_with("webhook-timestamp is 301 s in the future")
        );
    }
}
