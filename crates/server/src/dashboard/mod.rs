//! The dashboard at `/` on the HTTP listener: agents, recent pushes with their timeline per
//! cluster, latency percentiles per stage, updated live. Behind the admin token: without a
//! session cookie `/` shows only the login page and every data route answers 401.
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | the routes and the session check |
//! | `session.rs` | the signed session cookie |
//! | `login.rs` | `POST /login` (rate limited), `POST /logout` |
//! | `live.rs` | one shared reading of the store per second; the event stream per page |
//! | `view.rs` | the snapshot the page shows, computed from store data |
//! | `assets.rs` | pages and static files built into the binary; security headers |
//!
//! | route | answers |
//! |---|---|
//! | `GET /` | the dashboard with a session, the login page without |
//! | `POST /login` | form field `token`: 303 to `/` with the session cookie, or 401 |
//! | `POST /logout` | 303 to `/`, the cookie cleared |
//! | `GET /dashboard/snapshot` | the current snapshot as JSON (401 without a session) |
//! | `GET /dashboard/events` | server-sent `snapshot` events (401 without a session) |
//! | `GET /dashboard/assets/{dashboard.js,dashboard.css}` | the page's script and style |

pub mod assets;
pub mod live;
pub mod login;
pub mod session;
pub mod view;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fluxgate_core::{ApiError, ErrorCode, TokenDigest, UnixMillis};
use fluxgate_fanout::Hub;
use http::{HeaderMap, StatusCode, header};
use tokio_util::sync::CancellationToken;

use crate::admin::AgentAdmin;
use crate::http::json::ErrorAnswer;
use live::Live;
use login::LoginLimiter;
use session::Sessions;

/// The dashboard of one replica.
pub struct Dashboard {
    token: TokenDigest,
    sessions: Sessions,
    limiter: LoginLimiter,
    live: Arc<Live>,
}

/// What the dashboard is built from.
pub struct DashboardOptions {
    pub admin: Arc<AgentAdmin>,
    pub admin_token: String,
    /// The HTTP listener has TLS: the cookie is `Secure`.
    pub secure_cookie: bool,
    /// This replica's hub and name, when presence is not shared through Redis.
    pub local_streams: Option<(Arc<Hub>, String)>,
    /// Ends the event streams (the HTTP listener's drain).
    pub shutdown: CancellationToken,
}

impl Dashboard {
    pub fn new(options: DashboardOptions) -> Self {
        Self {
            token: TokenDigest::of(options.admin_token.as_bytes()),
            sessions: Sessions::new(&options.admin_token, options.secure_cookie),
            limiter: LoginLimiter::new(login::LOGIN_BURST, login::LOGIN_REFILL),
            live: Arc::new(Live::new(
                options.admin,
                options.local_streams,
                options.shutdown,
            )),
        }
    }

    fn signed_in(&self, headers: &HeaderMap) -> bool {
        self.sessions
            .request_is_authenticated(headers, UnixMillis::now())
    }
}

/// The dashboard's routes.
pub fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/login",
            get(index)
                .post(login::login)
                .layer(DefaultBodyLimit::max(login::LOGIN_BODY_LIMIT)),
        )
        .route("/logout", post(login::logout))
        .route("/dashboard/snapshot", get(snapshot))
        .route("/dashboard/events", get(events))
        .route("/dashboard/assets/dashboard.js", get(script))
        .route("/dashboard/assets/dashboard.css", get(style))
        .layer(middleware::map_response(secure))
        .with_state(dashboard)
}

/// `/` without an admin token: a page that says how to turn the dashboard on.
pub fn disabled_router() -> Router {
    Router::new()
        .route("/", get(disabled))
        .route("/login", get(disabled).post(disabled))
        .route("/dashboard/{*rest}", get(disabled))
        .route("/dashboard/assets/dashboard.css", get(style_alone))
        .layer(middleware::map_response(secure))
}

async fn secure(response: Response) -> Response {
    assets::secured(response)
}

async fn disabled() -> Response {
    assets::disabled()
}

async fn index(State(dashboard): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    if dashboard.signed_in(&headers) {
        assets::index()
    } else {
        assets::login(StatusCode::OK, "")
    }
}

fn unauthenticated() -> Response {
    ErrorAnswer(ApiError::unauthenticated(
        "no dashboard session: log in at / with the admin token",
    ))
    .into_response()
}

async fn snapshot(State(dashboard): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    if !dashboard.signed_in(&headers) {
        return unauthenticated();
    }
    match dashboard.live.current().await {
        Ok(current) => (
            [(header::CONTENT_TYPE, "application/json")],
            current.json.to_string(),
        )
            .into_response(),
        Err(err) => ErrorAnswer(err).into_response(),
    }
}

async fn events(State(dashboard): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    if !dashboard.signed_in(&headers) {
        return unauthenticated();
    }
    let Some(permit) = dashboard.live.admit() else {
        return ErrorAnswer(ApiError::new(
            ErrorCode::Unavailable,
            format!(
                "{} dashboard pages are open on this replica already; close one",
                live::MAX_STREAMS
            ),
        ))
        .into_response();
    };
    dashboard.live.clone().stream(permit)
}

async fn script() -> Response {
    assets::file("text/javascript; charset=utf-8", assets::DASHBOARD_JS)
}

async fn style() -> Response {
    assets::file("text/css; charset=utf-8", assets::DASHBOARD_CSS)
}

async fn style_alone() -> Response {
    style().await
}
