//! The dashboard's pages and static files, built into the binary (no CDN: the machines
//! have no internet), with the headers every dashboard answer carries: a Content Security
//! Policy of `default-src 'self'` (no inline script, nothing from elsewhere), no framing,
//! no caching, no sniffing.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

const INDEX_HTML: &str = include_str!("assets/index.html");
const LOGIN_HTML: &str = include_str!("assets/login.html");
const DISABLED_HTML: &str = include_str!("assets/disabled.html");
pub const DASHBOARD_JS: &str = include_str!("assets/dashboard.js");
pub const DASHBOARD_CSS: &str = include_str!("assets/dashboard.css");

/// The policy on every dashboard answer.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// Adds the dashboard's security headers.
pub fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The dashboard page (its data comes from `/dashboard/events`).
pub fn index() -> Response {
    html(StatusCode::OK, INDEX_HTML.to_owned())
}

/// The login page, with a message (escaped) if there is one.
pub fn login(status: StatusCode, message: &str) -> Response {
    let message = if message.is_empty() {
        String::new()
    } else {
        format!(
            r#"<p class="error" id="login-error">{}</p>"#,
            escape(message)
        )
    };
    html(status, LOGIN_HTML.replace("{{message}}", &message))
}

/// What `/` says when no admin token is configured.
pub fn disabled() -> Response {
    html(StatusCode::NOT_FOUND, DISABLED_HTML.to_owned())
}

/// A static file.
pub fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_load_nothing_inline_or_from_elsewhere() {
        for page in [INDEX_HTML, LOGIN_HTML, DISABLED_HTML] {
            assert!(!page.contains("<script>"), "no inline script");
            assert!(!page.contains(" style="), "no inline style");
            assert!(!page.contains("http://") && !page.contains("https://"));
            for handler in ["onload=", "onclick=", "onsubmit=", "javascript:"] {
                assert!(!page.contains(handler), "no handler attributes");
            }
        }
        assert!(INDEX_HTML.contains(r#"<script src="/dashboard/assets/dashboard.js""#));
        assert!(!DASHBOARD_JS.contains("innerHTML"), "data goes in as text");
    }

    #[test]
    fn the_login_message_is_escaped() {
        let page = login(StatusCode::UNAUTHORIZED, "<b>no</b>");
        assert_eq!(page.status(), StatusCode::UNAUTHORIZED);
        assert!(LOGIN_HTML.contains("{{message}}"));
        assert_eq!(escape("<b>\"x\"</b>"), "&lt;b&gt;&quot;x&quot;&lt;/b&gt;");
    }
}
