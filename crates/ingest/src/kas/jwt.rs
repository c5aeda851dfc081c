//! The JWT GitLab Rails sends with every call to KAS, verified as KAS verifies it
//! (`grpctool.JWTAuther`): HMAC-SHA2 (`HS256`, `HS384` or `HS512`; any other algorithm,
//! `none` included, is refused), signed with the shared [`KasSecret`], audience containing
//! `gitlab-kas`, issuer not checked (Rails sends its host name), `exp` required and
//! enforced, `nbf` enforced when present, both with [`LEEWAY_SECONDS`] of clock skew.
//!
//! The signature is checked before any claim is read. Errors name what was wrong and never
//! repeat the token.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;

use super::secret::KasSecret;

/// The audience KAS requires (`kasName`).
pub const AUDIENCE: &str = "gitlab-kas";
/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: i64 = 10;
/// Longest token read (Rails' are about 300 bytes).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Longest `jti` kept as an idempotency key.
const MAX_JTI_LEN: usize = 128;

/// Why a token is refused. Each message is sent to the caller after
/// "JWT validation failed: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("the token is not a JWT (three base64url parts separated by '.')")]
    NotAJwt,
    #[error("the JWT header is not base64url-encoded JSON with an \"alg\"")]
    BadHeader,
    #[error("the JWT algorithm {0:?} is not allowed (HS256, HS384 or HS512)")]
    Algorithm(String),
    #[error("the JWT signature does not match the KAS secret")]
    Signature,
    #[error("the JWT claims are not base64url-encoded JSON")]
    BadClaims,
    #[error("the JWT claim {0:?} is not a number")]
    NotANumber(&'static str),
    #[error("the JWT has no \"exp\" claim")]
    MissingExpiry,
    #[error("the JWT expired at {exp} (unix seconds; now {now})")]
    Expired { exp: i64, now: i64 },
    #[error("the JWT is not valid before {nbf} (unix seconds; now {now})")]
    NotYetValid { nbf: i64, now: i64 },
    #[error("the JWT audience does not contain {AUDIENCE:?}")]
    Audience,
}

/// What a verified token says that the broker uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The token's id (Rails: a random UUID per call), if it has a short one.
    pub jti: Option<String>,
}

/// Verifies Rails' KAS JWTs with the shared secret.
#[derive(Debug, Clone)]
pub struct KasJwtVerifier {
    secret: KasSecret,
}

/// Whether `signature` is the HMAC of `signed` with `key`, compared in constant time.
macro_rules! verify_mac {
    ($digest:ty, $key:expr, $signed:expr, $signature:expr) => {{
        match <Hmac<$digest> as KeyInit>::new_from_slice($key) {
            Ok(mut mac) => {
                mac.update($signed.as_bytes());
                mac.verify_slice($signature).is_ok()
            }
            Err(_) => false,
        }
    }};
}

enum Algorithm {
    Hs256,
    Hs384,
    Hs512,
}

impl KasJwtVerifier {
    pub fn new(secret: KasSecret) -> Self {
        Self { secret }
    }

    /// Verifies `token` at `now` (unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<VerifiedToken, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::TooLong);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::NotAJwt);
        };
        let header: Value = decode_json(header).ok_or(JwtError::BadHeader)?;
        let algorithm = match header.get("alg").and_then(Value::as_str) {
            Some("HS256") => Algorithm::Hs256,
            Some("HS384") => Algorithm::Hs384,
            Some("HS512") => Algorithm::Hs512,
            Some(other) => return Err(JwtError::Algorithm(bounded(other))),
            None => return Err(JwtError::BadHeader),
        };
        let signature = base64url(signature).ok_or(JwtError::Signature)?;
        let signed = &token[..header_and_claims_len(token)];
        let key = self.secret.key();
        let valid = match algorithm {
            Algorithm::Hs256 => verify_mac!(sha2::Sha256, key, signed, &signature),
            Algorithm::Hs384 => verify_mac!(sha2::Sha384, key, signed, &signature),
            Algorithm::Hs512 => verify_mac!(sha2::Sha512, key, signed, &signature),
        };
        if !valid {
            return Err(JwtError::Signature);
        }
        let claims: Value = decode_json(claims).ok_or(JwtError::BadClaims)?;
        let Value::Object(claims) = claims else {
            return Err(JwtError::BadClaims);
        };
        let exp = numeric(&claims, "exp")?.ok_or(JwtError::MissingExpiry)?;
        if now > exp.saturating_add(LEEWAY_SECONDS) {
            return Err(JwtError::Expired { exp, now });
        }
        if let Some(nbf) = numeric(&claims, "nbf")?
            && now < nbf.saturating_sub(LEEWAY_SECONDS)
        {
            return Err(JwtError::NotYetValid { nbf, now });
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(aud)) => aud == AUDIENCE,
            Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(AUDIENCE)),
            _ => false,
        };
        if !audience_ok {
            return Err(JwtError::Audience);
        }
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .filter(|jti| !jti.is_empty() && jti.len() <= MAX_JTI_LEN)
            .filter(|jti| jti.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned);
        Ok(VerifiedToken { jti })
    }
}

/// The length of `header.claims`, the signed part of a token known to have three parts.
fn header_and_claims_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

fn base64url(part: &str) -> Option<Vec<u8>> {
    // JWTs are unpadded; a padded part is tolerated, as golang-jwt does not refuse it.
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()
}

fn decode_json(part: &str) -> Option<Value> {
    serde_json::from_slice(&base64url(part)?).ok()
}

/// A NumericDate claim (seconds, possibly fractional), truncated; `None` if absent.
fn numeric(
    claims: &serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) => number
            .as_i64()
            .or_else(|| number.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or(JwtError::NotANumber(name)),
        Some(_) => Err(JwtError::NotANumber(name)),
    }
}

/// A header value for an error message: short, printable.
fn bounded(text: &str) -> String {
    text.chars()
        .take(32)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn secret() -> KasSecret {
        KasSecret::from_bytes([42; 32])
    }

    fn encode(value: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    fn sign(header: &Value, claims: &Value, key: &[u8]) -> String {
        let signed = format!("{}.{}", encode(header), encode(claims));
        let mut mac = <Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(key).unwrap();
        mac.update(signed.as_bytes());
        let signature =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signed}.{signature}")
    }

    /// Claims as Rails mints them (`JSONWebToken::HMACToken`).
    fn rails_claims() -> Value {
        json!({
            "jti": "0b1f7b7e-5a4b-4c55-9b8b-2f3f1c6d7e8f",
            "aud": "gitlab-kas",
            "iss": "gitlab.example.com",
            "iat": NOW,
            "nbf": NOW - 5,
            "exp": NOW + 60,
        })
    }

    fn hs256() -> Value {
        json!({"alg": "HS256", "typ": "JWT"})
    }

    fn verify(token: &str) -> Result<VerifiedToken, JwtError> {
        KasJwtVerifier::new(secret()).verify(token, NOW)
    }

    #[test]
    fn a_rails_token_is_accepted_and_its_jti_kept() {
        let token = sign(&hs256(), &rails_claims(), &[42; 32]);
        assert_eq!(
            verify(&token),
            Ok(VerifiedToken {
                jti: Some("0b1f7b7e-5a4b-4c55-9b8b-2f3f1c6d7e8f".to_owned())
            })
        );
    }

    #[test]
    fn hs384_and_hs512_and_an_audience_list_are_accepted() {
        let mut claims = rails_claims();
        claims["aud"] = json!(["other", "gitlab-kas"]);
        for (alg, tag) in [("HS384", 48), ("HS512", 64)] {
            let header = json!({"alg": alg});
            let signed = format!("{}.{}", encode(&header), encode(&claims));
            let signature = if tag == 48 {
                let mut mac =
                    <Hmac<sha2::Sha384> as hmac::KeyInit>::new_from_slice(&[42; 32]).unwrap();
                mac.update(signed.as_bytes());
                mac.finalize().into_bytes().to_vec()
            } else {
                let mut mac =
                    <Hmac<sha2::Sha512> as hmac::KeyInit>::new_from_slice(&[42; 32]).unwrap();
                mac.update(signed.as_bytes());
                mac.finalize().into_bytes().to_vec()
            };
            let token = format!(
                "{signed}.{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature)
            );
            assert!(verify(&token).is_ok(), "{alg}");
        }
    }

    #[test]
    fn each_refusal_names_its_reason() {
        let with = |change: &dyn Fn(&mut Value)| {
            let mut claims = rails_claims();
            change(&mut claims);
            sign(&hs256(), &claims, &[42; 32])
        };
        let cases = [
            (
                with(&|c| c["exp"] = json!(NOW - 60)),
                JwtError::Expired {
                    exp: NOW - 60,
                    now: NOW,
                },
            ),
            (
                with(&|c| c["nbf"] = json!(NOW + 60)),
                JwtError::NotYetValid {
                    nbf: NOW + 60,
                    now: NOW,
                },
            ),
            (with(&|c| c["aud"] = json!("gitlab")), JwtError::Audience),
            (
                with(&|c| {
                    c.as_object_mut().unwrap().remove("aud");
                }),
                JwtError::Audience,
            ),
            (
                with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
                JwtError::MissingExpiry,
            ),
            (
                with(&|c| c["exp"] = json!("tomorrow")),
                JwtError::NotANumber("exp"),
            ),
            (
                sign(&hs256(), &rails_claims(), &[43; 32]),
                JwtError::Signature,
            ),
            (
                sign(
                    &json!({"alg": "RS256", "typ": "JWT"}),
                    &rails_claims(),
                    &[42; 32],
                ),
                JwtError::Algorithm("RS256".to_owned()),
            ),
            (
                format!(
                    "{}.{}.",
                    encode(&json!({"alg": "none"})),
                    encode(&rails_claims())
                ),
                JwtError::Algorithm("none".to_owned()),
            ),
            (
                sign(&json!({"typ": "JWT"}), &rails_claims(), &[42; 32]),
                JwtError::BadHeader,
            ),
            ("abc.def".to_owned(), JwtError::NotAJwt),
            ("a.b.c.d".to_owned(), JwtError::NotAJwt),
            ("x".repeat(MAX_TOKEN_LEN + 1), JwtError::TooLong),
        ];
        for (token, expected) in cases {
            assert_eq!(verify(&token), Err(expected.clone()), "{expected}");
        }
    }

    #[test]
    fn tampered_claims_fail_the_signature() {
        let token = sign(&hs256(), &rails_claims(), &[42; 32]);
        let mut parts: Vec<&str> = token.split('.').collect();
        let mut claims = rails_claims();
        claims["aud"] = json!("gitlab-kas");
        claims["exp"] = json!(NOW + 3600);
        let forged = encode(&claims);
        parts[1] = &forged;
        assert_eq!(verify(&parts.join(".")), Err(JwtError::Signature));
    }

    #[test]
    fn the_leeway_is_small_and_both_ways() {
        let mut claims = rails_claims();
        claims["exp"] = json!(NOW - LEEWAY_SECONDS + 1);
        assert!(verify(&sign(&hs256(), &claims, &[42; 32])).is_ok());
        claims["exp"] = json!(NOW - LEEWAY_SECONDS - 1);
        assert!(verify(&sign(&hs256(), &claims, &[42; 32])).is_err());
        let mut claims = rails_claims();
        claims["nbf"] = json!(NOW + LEEWAY_SECONDS - 1);
        assert!(verify(&sign(&hs256(), &claims, &[42; 32])).is_ok());
    }

    #[test]
    fn errors_never_repeat_the_token() {
        let token = sign(&hs256(), &rails_claims(), &[43; 32]);
        let message = verify(&token).unwrap_err().to_string();
        for part in token.split('.') {
            assert!(!message.contains(part), "{message}");
        }
    }
}
