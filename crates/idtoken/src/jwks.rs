//! A JSON Web Key Set (RFC 7517) to the RSA keys that may verify ID tokens, by `kid`.
//!
//! Kept: keys with `kty` `RSA`, a `kid`, `use` absent or `sig`, `alg` absent or `RS256`,
//! and a modulus of at least 2048 bits. Other keys (encryption keys, EC keys, keys without
//! an id) are skipped, not errors: GitLab may add kinds fluxgate does not use.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use crate::ALGORITHM;
use crate::error::KeysError;

/// Smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_MODULUS_BYTES: usize = 256;
/// Most keys kept from one set.
const MAX_KEYS: usize = 32;
/// Longest `kid` kept.
pub(crate) const MAX_KID_LEN: usize = 256;

#[derive(Deserialize)]
struct KeySet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

/// The verifying keys of one fetched set, by `kid`.
#[derive(Clone, Default)]
pub(crate) struct Keys {
    by_kid: HashMap<String, DecodingKey>,
}

impl Keys {
    pub(crate) fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.by_kid.get(kid)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_kid.len()
    }

    /// The `kid`s, sorted, for logs.
    pub(crate) fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.by_kid.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }
}

/// Parses a key set fetched from `url`; refuses one with no usable key.
pub(crate) fn parse(url: &str, body: &[u8]) -> Result<Keys, KeysError> {
    let set: KeySet = serde_json::from_slice(body).map_err(|err| KeysError::Invalid {
        url: url.to_owned(),
        what: "JSON Web Key Set",
        reason: err.to_string(),
    })?;
    let mut by_kid = HashMap::new();
    for jwk in set.keys {
        if by_kid.len() == MAX_KEYS {
            break;
        }
        if let Some((kid, key)) = usable(jwk) {
            by_kid.insert(kid, key);
        }
    }
    if by_kid.is_empty() {
        return Err(KeysError::NoKeys {
            url: url.to_owned(),
        });
    }
    Ok(Keys { by_kid })
}

fn usable(jwk: Jwk) -> Option<(String, DecodingKey)> {
    let signing = jwk.kty == "RSA"
        && jwk.usage.as_deref().is_none_or(|usage| usage == "sig")
        && jwk.alg.as_deref().is_none_or(|alg| alg == ALGORITHM);
    let kid = jwk
        .kid
        .filter(|kid| !kid.is_empty() && kid.len() <= MAX_KID_LEN)?;
    let (n, e) = (jwk.n?, jwk.e?);
    if !signing {
        return None;
    }
    let modulus = URL_SAFE_NO_PAD.decode(&n).ok()?;
    let significant = modulus.iter().skip_while(|b| **b == 0).count();
    if significant < MIN_MODULUS_BYTES {
        tracing::warn!(
            kid,
            bits = significant * 8,
            "GitLab key skipped: modulus under 2048 bits"
        );
        return None;
    }
    let key = DecodingKey::from_rsa_components(&n, &e).ok()?;
    Some((kid, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modulus(bytes: usize) -> String {
        let mut n = vec![0xc5; bytes];
        n[bytes - 1] = 0x01;
        URL_SAFE_NO_PAD.encode(n)
    }

    #[test]
    fn only_rsa_signing_keys_with_an_id_are_kept() {
        let n = modulus(256);
        let body = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "good", "use": "sig", "alg": "RS256", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "bare", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": n, "e": "AQAB"},
            {"kty": "RSA", "n": n, "e": "AQAB"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "small", "n": modulus(128), "e": "AQAB"},
        ]});
        let keys = parse("http://gitlab/keys", body.to_string().as_bytes()).unwrap();
        assert_eq!(keys.kids(), vec!["bare", "good"]);
    }

    #[test]
    fn a_set_without_a_usable_key_is_an_error() {
        let err = parse("http://gitlab/keys", br#"{"keys": []}"#)
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "http://gitlab/keys has no RS256 signing key"
        );
        let err = parse("http://gitlab/keys", b"<html>").err().unwrap();
        assert!(
            err.to_string()
                .starts_with("http://gitlab/keys is not a valid JSON Web Key Set"),
            "{err}"
        );
    }
}
