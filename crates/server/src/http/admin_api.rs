//! The admin API under `/api/v1/agents`, guarded by the admin bearer token.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /api/v1/agents` | list agents |
//! | `POST /api/v1/agents` | create; the answer holds the token, shown once (201) |
//! | `GET /api/v1/agents/{name}` | show one |
//! | `DELETE /api/v1/agents/{name}` | delete (204) |
//! | `POST /api/v1/agents/{name}/grant` | add grants: `{"projects": [], "groups": [], "internal": false}` |
//! | `POST /api/v1/agents/{name}/revoke` | withdraw grants (same body) |
//! | `POST /api/v1/agents/{name}/rotate-token` | new token, shown once |
//! | `GET /api/v1/events/{seq}` | one push's path across the clusters (`fluxgate trace`) |

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fluxgate_core::bearer;
use fluxgate_core::token::secret_matches_any;
use fluxgate_core::{ApiError, TokenDigest};
use http::{StatusCode, header};

use super::json::{ADMIN_BODY_LIMIT, ApiJson, ErrorAnswer};
use crate::admin::{AgentAdmin, CreateAgentRequest, GrantsRequest};

#[derive(Clone)]
struct AdminState {
    admin: Arc<AgentAdmin>,
}

pub fn router(admin: Arc<AgentAdmin>, token: &str) -> Router {
    let digest = Arc::new(TokenDigest::of(token.as_bytes()));
    Router::new()
        .route("/api/v1/agents", get(list).post(create))
        .route("/api/v1/agents/{name}", get(show).delete(delete))
        .route("/api/v1/agents/{name}/grant", post(grant))
        .route("/api/v1/agents/{name}/revoke", post(revoke))
        .route("/api/v1/agents/{name}/rotate-token", post(rotate_token))
        .route("/api/v1/events/{seq}", get(trace))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let digest = digest.clone();
            async move { authorize(&digest, request, next).await }
        }))
        .layer(DefaultBodyLimit::max(ADMIN_BODY_LIMIT))
        .with_state(AdminState { admin })
}

async fn authorize(digest: &TokenDigest, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| bearer::parse(v).ok());
    match presented {
        Some(token) if secret_matches_any(token.as_bytes(), std::slice::from_ref(digest)) => {
            next.run(request).await
        }
        Some(_) => {
            ErrorAnswer(ApiError::unauthenticated("the admin token does not match")).into_response()
        }
        None => ErrorAnswer(ApiError::unauthenticated(
            "missing `Authorization: Bearer <admin token>` header",
        ))
        .into_response(),
    }
}

async fn list(State(state): State<AdminState>) -> Result<Response, ErrorAnswer> {
    Ok(Json(state.admin.list().await?).into_response())
}

async fn create(
    State(state): State<AdminState>,
    ApiJson(request): ApiJson<CreateAgentRequest>,
) -> Result<Response, ErrorAnswer> {
    let created = state.admin.create(request).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn show(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Response, ErrorAnswer> {
    Ok(Json(state.admin.show(&name).await?).into_response())
}

async fn trace(
    State(state): State<AdminState>,
    Path(seq): Path<String>,
) -> Result<Response, ErrorAnswer> {
    let seq = seq
        .parse::<u64>()
        .ok()
        .filter(|seq| *seq > 0)
        .ok_or_else(|| ApiError::bad_request(format!("{seq:?} is not a seq")))?;
    let view = crate::trace::trace(state.admin.store().as_ref(), fluxgate_core::Seq(seq)).await?;
    Ok(Json(view).into_response())
}

async fn delete(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Response, ErrorAnswer> {
    state.admin.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn grant(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<GrantsRequest>,
) -> Result<Response, ErrorAnswer> {
    Ok(Json(state.admin.grant(&name, request).await?).into_response())
}

async fn revoke(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<GrantsRequest>,
) -> Result<Response, ErrorAnswer> {
    Ok(Json(state.admin.revoke(&name, request).await?).into_response())
}

async fn rotate_token(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Response, ErrorAnswer> {
    Ok(Json(state.admin.rotate_token(&name).await?).into_response())
}
