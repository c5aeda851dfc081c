//! The two GitLab requests: the OIDC discovery document and the key set, each with a
//! timeout (the client's) and a body limit.

use serde::Deserialize;

use crate::config::Issuer;
use crate::error::{KeysError, shorten};

/// Largest discovery document read (GitLab's is about 2 KiB).
pub(crate) const DISCOVERY_LIMIT: usize = 64 * 1024;
/// Largest key set read (GitLab's holds one or two 2048-bit keys, under 2 KiB).
pub(crate) const JWKS_LIMIT: usize = 256 * 1024;

/// The fields of the discovery document fluxgate uses.
#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// Reads `<issuer>/.well-known/openid-configuration`: its `issuer` must be `issuer`
/// (a trailing slash aside), and its `jwks_uri` an http(s) URL, which is returned.
pub(crate) async fn discover(
    client: &reqwest::Client,
    issuer: &Issuer,
) -> Result<String, KeysError> {
    let url = issuer.discovery_url();
    let body = get(client, &url, DISCOVERY_LIMIT).await?;
    let invalid = |reason: String| KeysError::Invalid {
        url: url.clone(),
        what: "OpenID discovery document",
        reason,
    };
    let discovery: Discovery =
        serde_json::from_slice(&body).map_err(|err| invalid(err.to_string()))?;
    if !issuer.matches(&discovery.issuer) {
        return Err(KeysError::IssuerMismatch {
            found: shorten(&discovery.issuer, 256),
            expected: issuer.to_string(),
        });
    }
    let jwks_uri =
        url::Url::parse(&discovery.jwks_uri).map_err(|err| invalid(format!("jwks_uri: {err}")))?;
    if !matches!(jwks_uri.scheme(), "http" | "https") {
        return Err(invalid("jwks_uri is not http(s)".to_owned()));
    }
    Ok(jwks_uri.into())
}

/// GETs `url` and returns its body, refusing a non-2xx status or more than `limit` bytes.
pub(crate) async fn get(
    client: &reqwest::Client,
    url: &str,
    limit: usize,
) -> Result<Vec<u8>, KeysError> {
    let failed = |err: reqwest::Error| KeysError::Fetch {
        url: url.to_owned(),
        reason: describe(&err),
    };
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(failed)?;
    let status = response.status();
    if !status.is_success() {
        return Err(KeysError::Status {
            url: url.to_owned(),
            status: status.as_u16(),
        });
    }
    let too_large = || KeysError::TooLarge {
        url: url.to_owned(),
        limit,
    };
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error with its causes (its own text says little: "error sending request").
pub fn describe(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "timed out".to_owned()
    } else {
        err.to_string()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
