//! The service proxy: `/api/v1/namespaces/<ns>/services/<[scheme:]name[:port]>/proxy/<path>`
//! forwards the request to the address a test registered for that Service, and answers
//! with the upstream's status, headers and body.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::status::ApiError;

/// Headers the proxy does not pass on: the caller's credentials and hop-by-hop headers.
fn dropped(name: &header::HeaderName) -> bool {
    [
        header::AUTHORIZATION,
        header::HOST,
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
    ]
    .contains(name)
}

/// `[scheme:]name[:port]` → `name`.
pub fn service_name(segment: &str) -> &str {
    let mut parts: Vec<&str> = segment.split(':').collect();
    if parts.len() == 3 || (parts.len() == 2 && matches!(parts[0], "http" | "https")) {
        parts.remove(0);
    }
    parts[0]
}

/// Forwards one request to `upstream`.
pub async fn forward(
    client: &reqwest::Client,
    upstream: SocketAddr,
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let url = format!("http://{upstream}{path_and_query}");
    let method = reqwest::Method::from_bytes(method.as_str().as_bytes())
        .map_err(|_| ApiError::bad_request("unsupported method"))?;
    let mut request = client.request(method, &url).body(body);
    for (name, value) in headers {
        if !dropped(name) {
            request = request.header(name.clone(), value.clone());
        }
    }
    let response = request.send().await.map_err(|error| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("error trying to reach service: {error}"),
        )
    })?;
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.bytes().await.map_err(|error| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("error reading from service: {error}"),
        )
    })?;
    let mut answer = (status, body).into_response();
    if let Some(content_type) = content_type
        && let Ok(value) = content_type.parse()
    {
        answer.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    Ok(answer)
}
