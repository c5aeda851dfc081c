//! Where discovered Receivers are called: `flux.webhook_receiver_url`.
//!
//! Either the URL of Flux's `webhook-receiver` Service (the default,
//! `http://webhook-receiver.flux-system.svc.cluster.local`), called directly, or a
//! kube-apiserver service-proxy path, `…/api/v1/namespaces/<ns>/services/<svc>/proxy`
//! (kubernetes.md §1), for an agent running outside the cluster: such calls go to the API
//! server of the agent's kubeconfig, with its credentials, whatever host the URL names.

use reqwest::Url;

/// Why a webhook base URL is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookBaseError {
    #[error("not a URL: {0}")]
    Invalid(String),
    #[error("scheme must be http or https, not {0:?}")]
    Scheme(String),
    #[error("must not have a query string or fragment: Flux matches the hook path exactly")]
    Query,
}

/// `flux.webhook_receiver_url`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookBase {
    /// Receivers are called at this URL plus their webhook path.
    Direct(String),
    /// Receivers are called through the API server at this path (no trailing slash) plus
    /// their webhook path.
    ServiceProxy { path: String },
}

impl WebhookBase {
    pub fn parse(raw: &str) -> Result<Self, WebhookBaseError> {
        let url = Url::parse(raw.trim()).map_err(|e| WebhookBaseError::Invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebhookBaseError::Scheme(url.scheme().to_owned()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(WebhookBaseError::Query);
        }
        let path = url.path().trim_end_matches('/');
        if is_service_proxy_path(path) {
            return Ok(Self::ServiceProxy {
                path: path.to_owned(),
            });
        }
        Ok(Self::Direct(raw.trim().trim_end_matches('/').to_owned()))
    }
}

/// `/api/v1/namespaces/<ns>/services/<svc>/proxy`, each name one non-empty segment.
fn is_service_proxy_path(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    matches!(
        segments.as_slice(),
        ["", "api", "v1", "namespaces", namespace, "services", service, "proxy"]
            if !namespace.is_empty() && !service.is_empty()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_url_is_called_directly() {
        let base = WebhookBase::parse("http://webhook-receiver.flux-system.svc.cluster.local/");
        assert_eq!(
            base,
            Ok(WebhookBase::Direct(
                "http://webhook-receiver.flux-system.svc.cluster.local".to_owned()
            ))
        );
    }

    #[test]
    fn a_service_proxy_path_goes_through_the_api_server() {
        let base = WebhookBase::parse(
            "https://api.example.com:6443/api/v1/namespaces/flux-system/services/webhook-receiver:80/proxy/",
        );
        assert_eq!(
            base,
            Ok(WebhookBase::ServiceProxy {
                path: "/api/v1/namespaces/flux-system/services/webhook-receiver:80/proxy"
                    .to_owned()
            })
        );
        // Anything else under /api stays a plain URL.
        let other = WebhookBase::parse("https://h/api/v1/namespaces/x/pods/y/proxy").unwrap();
        assert!(matches!(other, WebhookBase::Direct(_)));
    }

    #[test]
    fn queries_and_other_schemes_are_refused() {
        assert_eq!(
            WebhookBase::parse("http://h/x?y=1"),
            Err(WebhookBaseError::Query)
        );
        assert!(matches!(
            WebhookBase::parse("ftp://h"),
            Err(WebhookBaseError::Scheme(_))
        ));
    }
}
