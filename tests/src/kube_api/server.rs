//! HTTP routing: authenticates the bearer token, maps each path to discovery, a
//! collection (list, watch, create), an object (get, replace, patch, delete), its status
//! subresource, or the service proxy, and answers errors as `Status` objects.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Shared;
use super::discovery;
use super::proxy;
use super::resources::ResourceType;
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{RequestRecord, Target};
use super::watch::{self, WatchRequest};

type Params = HashMap<String, String>;

/// The one handler: every path and method comes here.
pub async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or_default().to_owned();
    let params: Params = Query::try_from_uri(&uri).map(|q| q.0).unwrap_or_default();
    let response = match authenticate(&shared, &headers) {
        Ok(()) => route(&shared, &method, &path, &query, &params, &headers, body)
            .await
            .unwrap_or_else(|error| status_response(&error)),
        Err(error) => status_response(&error),
    };
    let mut state = shared.state.lock();
    state.requests.push(RequestRecord {
        method: method.to_string(),
        path,
        query,
        status: response.status().as_u16(),
    });
    state.notify();
    response
}

fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let expected = format!("Bearer {}", shared.token);
    match headers.get(header::AUTHORIZATION) {
        Some(value) if value.as_bytes() == expected.as_bytes() => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
}

pub fn status_response(error: &ApiError) -> Response {
    let status = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &error.to_status())
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).expect("JSON values serialise");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn ok(value: &Value) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, value))
}

async fn route(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: &str,
    params: &Params,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let types = || shared.state.lock().types().to_vec();
    let read_only = |response: Result<Value, ApiError>| {
        if *method == Method::GET {
            response.and_then(|v| ok(&v))
        } else {
            Err(method_not_allowed(method))
        }
    };
    match segments.as_slice() {
        ["version"] => read_only(Ok(discovery::version())),
        ["api"] => read_only(Ok(discovery::core_versions(&shared.address.to_string()))),
        ["api", "v1"] => read_only(discovery::resource_list(&types(), "", "v1")),
        ["apis"] => read_only(Ok(discovery::group_list(&types()))),
        ["apis", group] => read_only(discovery::group(&types(), group)),
        ["apis", group, version] => read_only(discovery::resource_list(&types(), group, version)),
        [
            "api",
            "v1",
            "namespaces",
            namespace,
            "services",
            service,
            "proxy",
            tail @ ..,
        ] => {
            let mut target = format!("/{}", tail.join("/"));
            if !query.is_empty() {
                target = format!("{target}?{query}");
            }
            proxy_request(shared, method, namespace, service, &target, headers, body).await
        }
        ["api", "v1", rest @ ..] => {
            resource_route(shared, method, "", "v1", rest, params, headers, body)
        }
        ["apis", group, version, rest @ ..] => {
            resource_route(shared, method, group, version, rest, params, headers, body)
        }
        _ => Err(ApiError::not_found("", "")),
    }
}

fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::new(
        405,
        "MethodNotAllowed",
        format!("the server does not allow this method on the requested resource: {method}"),
    )
}

/// `[namespaces/<ns>/]<plural>[/<name>[/status]]` under one group version.
#[allow(clippy::too_many_arguments)]
fn resource_route(
    shared: &Arc<Shared>,
    method: &Method,
    group: &str,
    version: &str,
    rest: &[&str],
    params: &Params,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if discovery::is_crd_path(group, version, rest.first().copied().unwrap_or_default()) {
        if *method != Method::GET || rest.len() > 2 {
            return Err(method_not_allowed(method));
        }
        return ok(&discovery::crds(
            shared.state.lock().types(),
            rest.get(1).copied(),
        )?);
    }
    let (namespace, plural, tail) = match rest {
        ["namespaces", namespace, plural, tail @ ..] => (Some(*namespace), *plural, tail),
        [plural, tail @ ..] => (None, *plural, tail),
        [] => return Err(ApiError::not_found("", "")),
    };
    let resource = shared.state.lock().served(group, version, plural)?;
    if namespace.is_some() && !resource.namespaced {
        return Err(ApiError::not_found("", ""));
    }
    let request = Request {
        shared,
        resource,
        version,
        namespace,
        params,
        headers,
    };
    match tail {
        [] => request.collection(method, body),
        [name] => request.object(method, name, Target::Main, body),
        [name, "status"] if request.resource.status_subresource => {
            request.object(method, name, Target::Status, body)
        }
        _ => Err(ApiError::not_found("", "")),
    }
}

/// One request on a resource type.
struct Request<'a> {
    shared: &'a Arc<Shared>,
    resource: ResourceType,
    version: &'a str,
    namespace: Option<&'a str>,
    params: &'a Params,
    headers: &'a HeaderMap,
}

impl Request<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The `fieldManager`, or the client's program name as the API server derives it
    /// from `User-Agent`.
    fn manager(&self) -> String {
        self.param("fieldManager").map_or_else(
            || {
                let agent = self
                    .headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("unknown");
                agent.split('/').next().unwrap_or("unknown").to_owned()
            },
            str::to_owned,
        )
    }

    fn require_namespace(&self) -> Result<&str, ApiError> {
        match (self.resource.namespaced, self.namespace) {
            (true, Some(namespace)) => Ok(namespace),
            (true, None) => Err(ApiError::not_found("", "")),
            (false, _) => Ok(""),
        }
    }

    fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
        serde_json::from_slice(body).map_err(|error| {
            ApiError::bad_request(format!(
                "the body of the request could not be decoded as JSON: {error}"
            ))
        })
    }

    fn collection(&self, method: &Method, body: Bytes) -> Result<Response, ApiError> {
        if *method == Method::GET {
            {
                let labels = LabelSelector::parse(self.param("labelSelector").unwrap_or_default())?;
                let fields = FieldSelector::parse(self.param("fieldSelector").unwrap_or_default())?;
                if matches!(self.param("watch"), Some("true" | "1")) {
                    return self.watch(labels, fields);
                }
                let state = self.shared.state.lock();
                let items = state.list(
                    &self.resource,
                    self.version,
                    self.namespace,
                    &labels,
                    &fields,
                );
                ok(&json!({
                    "apiVersion": self.resource.api_version(self.version),
                    "kind": format!("{}List", self.resource.kind),
                    "metadata": {"resourceVersion": state.resource_version().to_string()},
                    "items": items,
                }))
            }
        } else if *method == Method::POST {
            {
                let namespace = self.require_namespace()?;
                let object = Self::parse_body(&body)?;
                let created = self.shared.state.lock().create(
                    &self.resource,
                    self.version,
                    namespace,
                    object,
                    &self.manager(),
                )?;
                Ok(json_response(StatusCode::CREATED, &created))
            }
        } else {
            Err(method_not_allowed(method))
        }
    }

    fn watch(&self, labels: LabelSelector, fields: FieldSelector) -> Result<Response, ApiError> {
        let cap = self.shared.options.max_watch_timeout;
        let timeout = self
            .param("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map_or(cap, |seconds| Duration::from_secs(seconds).min(cap));
        let request = WatchRequest {
            resource: self.resource.clone(),
            version: self.version.to_owned(),
            namespace: self.namespace.map(str::to_owned),
            labels,
            fields,
            resource_version: self.param("resourceVersion").map(str::to_owned),
            bookmarks: self.param("allowWatchBookmarks") == Some("true"),
            timeout,
        };
        let body: Body = watch::serve(Arc::clone(self.shared), request)?;
        Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response())
    }

    fn object(
        &self,
        method: &Method,
        name: &str,
        target: Target,
        body: Bytes,
    ) -> Result<Response, ApiError> {
        let namespace = self.require_namespace()?;
        let manager = self.manager();
        let resource = &self.resource;
        if *method == Method::GET {
            let found = self
                .shared
                .state
                .lock()
                .get(resource, self.version, namespace, name);
            match found {
                Ok(object) => ok(&object),
                // Namespaces are implicit: every name exists and is Active.
                Err(_) if resource.kind == "Namespace" => ok(&json!({
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": name},
                    "status": {"phase": "Active"},
                })),
                Err(error) => Err(error),
            }
        } else if *method == Method::PUT {
            let object = Self::parse_body(&body)?;
            let replaced = self.shared.state.lock().replace(
                resource,
                self.version,
                namespace,
                name,
                object,
                target,
                &manager,
            )?;
            ok(&replaced)
        } else if *method == Method::DELETE && target == Target::Main {
            let deleted =
                self.shared
                    .state
                    .lock()
                    .delete(resource, self.version, namespace, name)?;
            ok(&deleted)
        } else if *method == Method::PATCH {
            self.patch(namespace, name, target, &manager, body)
        } else {
            Err(method_not_allowed(method))
        }
    }

    fn patch(
        &self,
        namespace: &str,
        name: &str,
        target: Target,
        manager: &str,
        body: Bytes,
    ) -> Result<Response, ApiError> {
        let content_type = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        let resource = &self.resource;
        let patch = Self::parse_body(&body)?;
        let mut state = self.shared.state.lock();
        let patched = match media_type {
            "application/merge-patch+json" => state.merge_patch(
                resource,
                self.version,
                namespace,
                name,
                &patch,
                target,
                manager,
            )?,
            // Built-in types take strategic merge patches; for the fields the agent touches
            // (maps, and lists it replaces whole) that is a merge patch.
            "application/strategic-merge-patch+json" if !resource.custom => state.merge_patch(
                resource,
                self.version,
                namespace,
                name,
                &patch,
                target,
                manager,
            )?,
            "application/apply-patch+yaml" => {
                let Some(manager) = self.param("fieldManager").filter(|m| !m.is_empty()) else {
                    return Err(ApiError::invalid_field_manager());
                };
                let force = self.param("force") == Some("true");
                state.apply(
                    resource,
                    self.version,
                    namespace,
                    name,
                    &patch,
                    target,
                    manager,
                    force,
                )?
            }
            other => return Err(ApiError::unsupported_media_type(other)),
        };
        drop(state);
        ok(&patched)
    }
}

/// Forwards to the address registered for the Service; 404 without the Service object,
/// 503 without a registered address (no endpoints).
async fn proxy_request(
    shared: &Arc<Shared>,
    method: &Method,
    namespace: &str,
    service: &str,
    target: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = proxy::service_name(service);
    let upstream = {
        let state = shared.state.lock();
        let services = state.served("", "v1", "services")?;
        state.get(&services, "v1", namespace, name)?;
        state
            .services
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied()
            .ok_or_else(|| {
                ApiError::new(
                    503,
                    "ServiceUnavailable",
                    format!("no endpoints available for service \"{name}\""),
                )
            })?
    };
    proxy::forward(
        &shared.http,
        upstream,
        method.clone(),
        target,
        headers,
        body,
    )
    .await
}
