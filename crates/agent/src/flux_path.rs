//! Where a Flux Receiver listens: its webhook path and the URL the agent calls.
//!
//! Flux computes `status.webhookPath` as `"/hook/" + lowercase_hex(sha256(token + name +
//! namespace))` over the raw bytes, with no separator and no trimming
//! (`shared/reference/flux-and-hooks.md` A.2). A token read from a file that ends in a
//! newline therefore gives a different path than the same token without it; the agent
//! hashes exactly the bytes it was given, as Flux hashes exactly the Secret's bytes.
//!
//! The path is a bearer secret for `generic` Receivers, so [`WebhookUrl`] never prints it
//! whole.

use std::fmt;

use reqwest::Url;
use sha2::{Digest, Sha256};

/// The in-cluster URL of Flux's `webhook-receiver` Service in a standard install.
pub const DEFAULT_WEBHOOK_RECEIVER_URL: &str =
    "http://webhook-receiver.flux-system.svc.cluster.local";

/// The namespace of a standard Flux install.
pub const DEFAULT_NAMESPACE: &str = "flux-system";

/// The prefix of every Receiver webhook path.
pub const WEBHOOK_PATH_PREFIX: &str = "/hook/";

/// How many characters of the last path segment [`WebhookUrl`] shows in logs.
const SHOWN_SECRET_CHARS: usize = 8;

/// The webhook path Flux gives a Receiver: `/hook/` + 64 lower-case hex characters.
pub fn webhook_path(token: &[u8], name: &str, namespace: &str) -> String {
    let digest = Sha256::new()
        .chain_update(token)
        .chain_update(name.as_bytes())
        .chain_update(namespace.as_bytes())
        .finalize();
    format!("{WEBHOOK_PATH_PREFIX}{}", hex::encode(digest))
}

/// Why a URL cannot be a Receiver URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookUrlError {
    #[error("not a valid URL: {0}")]
    Invalid(String),
    #[error("scheme must be http or https, not {0:?}")]
    Scheme(String),
}

/// The full URL of a Receiver hook. `Display` and `Debug` shorten the last path segment,
/// so logs show which Receiver was called without revealing its path.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    /// A URL given whole in the configuration.
    pub fn parse(raw: &str) -> Result<Self, WebhookUrlError> {
        let url = Url::parse(raw.trim()).map_err(|e| WebhookUrlError::Invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebhookUrlError::Scheme(url.scheme().to_owned()));
        }
        Ok(Self(url))
    }

    /// `base` (the `webhook-receiver` Service URL, possibly with a path such as a
    /// kube-apiserver service proxy) followed by `path`, exactly: no trailing slash and no
    /// query string, since Flux matches the request URI exactly.
    pub fn join(base: &str, path: &str) -> Result<Self, WebhookUrlError> {
        let base = base.trim().trim_end_matches('/');
        let url = Self::parse(&format!("{base}{path}"))?;
        if url.0.query().is_some() {
            return Err(WebhookUrlError::Invalid(
                "the base URL must not have a query string".to_owned(),
            ));
        }
        Ok(url)
    }

    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// The URL with the last path segment cut to its first few characters.
    pub fn redacted(&self) -> String {
        let origin = self.0.origin().ascii_serialization();
        let path = self.0.path();
        let (dir, last) = path.rsplit_once('/').unwrap_or(("", path));
        let shown: String = last.chars().take(SHOWN_SECRET_CHARS).collect();
        let ellipsis = if shown.len() < last.len() { "…" } else { "" };
        format!("{origin}{dir}/{shown}{ellipsis}")
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({})", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of `shared/reference/flux-and-hooks.md` A.2.
    #[test]
    fn paths_match_the_reference_vectors() {
        let vectors: [(&[u8], &str, &str); 4] = [
            (
                b"my-token",
                "my-receiver",
                "8a1182bb8ba88eae305b69af2c1839590333ebddd73eccbbe482c0c93d147305",
            ),
            (
                b"",
                "my-receiver",
                "7ee308e8ba2149f30a12e7dff0aeaf8d226f3df02db9c04721a1a69e20c386cd",
            ),
            (
                b"my-token\n",
                "my-receiver",
                "baf942a6b8038e8231291d524f1d8e54720d7b65c3bd1aa84057c41c317d5732",
            ),
            (
                b"s3cr3t",
                "gitlab-receiver",
                "b98046fdfce6b4f7d6974d236a32ef16a5cb3bc0de15093af5866cb749e393fc",
            ),
        ];
        for (token, name, hex) in vectors {
            assert_eq!(
                webhook_path(token, name, DEFAULT_NAMESPACE),
                format!("/hook/{hex}")
            );
        }
    }

    #[test]
    fn join_keeps_the_base_path_and_drops_a_trailing_slash() {
        let url = WebhookUrl::join("http://proxy:8001/api/v1/svc/proxy/", "/hook/abc").unwrap();
        assert_eq!(
            url.as_url().as_str(),
            "http://proxy:8001/api/v1/svc/proxy/hook/abc"
        );
        let url = WebhookUrl::join(DEFAULT_WEBHOOK_RECEIVER_URL, "/hook/abc").unwrap();
        assert_eq!(
            url.as_url().as_str(),
            "http://webhook-receiver.flux-system.svc.cluster.local/hook/abc"
        );
    }

    #[test]
    fn bad_urls_are_rejected() {
        assert!(matches!(
            WebhookUrl::parse("ftp://x/hook/a"),
            Err(WebhookUrlError::Scheme(_))
        ));
        assert!(matches!(
            WebhookUrl::parse("not a url"),
            Err(WebhookUrlError::Invalid(_))
        ));
        assert!(WebhookUrl::join("http://x?a=1", "/hook/a").is_err());
    }

    #[test]
    fn display_hides_most_of_the_secret_segment() {
        let path = webhook_path(b"my-token", "my-receiver", DEFAULT_NAMESPACE);
        let url = WebhookUrl::join("http://127.0.0.1:9292", &path).unwrap();
        assert_eq!(url.to_string(), "http://127.0.0.1:9292/hook/8a1182bb…");
        assert!(!format!("{url:?}").contains(&path));
    }
}
