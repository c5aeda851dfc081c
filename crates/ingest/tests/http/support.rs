//! A router on a fresh SQLite store, requests as GitLab sends them, and Standard Webhooks
//! signatures computed here with the hmac and base64 crates (not with the code under test).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fluxgate_ingest::hooks::{
    self, HookAuth, HookSecret, HookSecrets, HookState, RefusalLog, SignaturePolicy, SigningKey,
};
use fluxgate_store::testing::TestDatabase;
use fluxgate_store::{Appender, NoListener};
use hmac::{Hmac, KeyInit, Mac};
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use sha2::Sha256;
use tower::ServiceExt as _;

pub const SECRET: &str = "router-test-hook-secret";
pub const SIGNING_KEY: [u8; 32] = *b"0123456789abcdef0123456789abcdef";

/// `whsec_` + base64 of the key, as GitLab shows a signing token.
pub fn signing_token(key: &[u8]) -> String {
    format!("whsec_{}", STANDARD.encode(key))
}

/// Which credentials the broker has.
pub struct Setup {
    pub secrets: bool,
    pub signing: bool,
    pub required: bool,
    pub log_interval: Duration,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            secrets: true,
            signing: false,
            required: false,
            log_interval: Duration::from_secs(60),
        }
    }
}

pub struct Hooks {
    router: Router,
    _database: TestDatabase,
}

pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Hooks {
    pub async fn start(setup: Setup) -> Self {
        let database = TestDatabase::sqlite();
        let store = Arc::new(database.store().await);
        let (appender, _writer) = Appender::spawn(store, Arc::new(NoListener), 16);
        let secrets = if setup.secrets {
            HookSecrets::new([HookSecret::new(SECRET).unwrap()])
        } else {
            HookSecrets::default()
        };
        let keys = if setup.signing {
            vec![SigningKey::parse(&signing_token(&SIGNING_KEY)).unwrap()]
        } else {
            Vec::new()
        };
        let policy = SignaturePolicy {
            required: setup.required,
            ..SignaturePolicy::default()
        };
        let state = HookState {
            appender,
            auth: Arc::new(HookAuth::new(secrets, keys, policy).unwrap()),
            body_limit: 32 * 1024 * 1024,
            commit_timeout: Duration::from_secs(10),
            refusal_log: Arc::new(RefusalLog::new(setup.log_interval)),
        };
        Self {
            router: hooks::router(state),
            _database: database,
        }
    }

    /// POSTs `body` with `headers`, from `source`.
    pub async fn post_from(
        &self,
        source: [u8; 4],
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Answer {
        let mut request = Request::post("/hooks/gitlab").header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let mut request = request.body(Body::from(body)).unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((source, 40000))));
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    pub async fn post(&self, body: Vec<u8>, headers: &[(&str, String)]) -> Answer {
        self.post_from([10, 0, 0, 1], body, headers).await
    }
}

pub fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The three Standard Webhooks headers for `body`, signed with `key` at `timestamp`.
pub fn signed(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature(key, id, timestamp, body)),
    ]
}

pub fn token(value: &str) -> (&'static str, String) {
    ("x-gitlab-token", value.to_owned())
}

/// A push to `git_ref` of project 7 `team/app`.
pub fn push(git_ref: &str, after: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object_kind": "push",
        "event_name": "push",
        "before": "0".repeat(40),
        "after": format!("{after:040x}"),
        "ref": git_ref,
        "project_id": 7,
        "project": {"id": 7, "path_with_namespace": "team/app", "visibility_level": 0},
        "commits": [],
    }))
    .unwrap()
}

/// A `repository_update` of project 9 `team/big` changing `refs` branches.
pub fn repository_update(refs: usize) -> Vec<u8> {
    let changes: Vec<Value> = (0..refs)
        .map(|n| {
            json!({
                "before": "0".repeat(40),
                "after": format!("{:040x}", n + 1),
                "ref": format!("refs/heads/branch-with-a-long-name-{n:08}"),
            })
        })
        .collect();
    let names: Vec<Value> = changes.iter().map(|c| c["ref"].clone()).collect();
    serde_json::to_vec(&json!({
        "event_name": "repository_update",
        "project_id": 9,
        "project": {"id": 9, "path_with_namespace": "team/big", "visibility_level": 0},
        "changes": changes,
        "refs": names,
    }))
    .unwrap()
}
