//! A stand-in for a GitLab instance's OpenID Connect side: discovery, the key set, and the
//! CI ID tokens it signs.
//!
//! # What it stands for
//!
//! GitLab (≥ 15.7; `sha` from 16.0) as `shared/reference/kubernetes.md` §6 describes it:
//!
//! - `GET <iss>/.well-known/openid-configuration`: a JSON document whose `issuer` is the
//!   instance URL (`iss` of every token) and whose `jwks_uri` is
//!   `<iss>/oauth/discovery/keys`.
//! - `GET <iss>/oauth/discovery/keys`: `{"keys": [...]}`, RSA public keys (`kty` RSA,
//!   `use` sig, `alg` RS256) named by their RFC 7638 thumbprint as `kid`, as GitLab names
//!   its signing key. Other methods get `405`, other paths `404`.
//! - ID tokens ([`GitLabOidc::mint`]): RS256 JWTs with header `{alg, kid, typ: JWT}` signed
//!   by the newest key, with GitLab's claims: every id a string, `ref` without `refs/`,
//!   `ref_type` `branch`|`tag`, `ref_protected` `"true"`/`"false"`, `nbf = iat - 5`,
//!   `exp = iat + 3600` (the job timeout), `sub` =
//!   `project_path:{path}:ref_type:{type}:ref:{name}`, a random `jti`, `aud` the job's.
//! - Key rotation: GitLab adds a key and signs with it ([`GitLabOidc::rotate`]); a key it
//!   no longer lists ([`GitLabOidc::retire`]) verifies nothing any more.
//!
//! Keys are real 2048-bit RSA keys, generated once per test process and shared (keygen
//! is the slow part), so a token from one stand-in would verify against another's key
//! set if both list the key: tests that care use distinct key indexes.
//!
//! # Test hooks GitLab does not have
//!
//! - Counters of discovery and key-set requests ([`GitLabOidc::jwks_fetches`]), to assert
//!   the broker's rate limiting.
//! - [`GitLabOidc::set_down`]: both endpoints answer `503`, like an instance under
//!   maintenance.
//! - [`GitLabOidc::set_advertised_issuer`]: the discovery document names another issuer
//!   (GitLab's `external_url` differing from the URL fluxgate was given).
//! - Hostile tokens GitLab never signs: [`GitLabOidc::mint_alg_none`],
//!   [`GitLabOidc::mint_hs256_with_public_key`], [`tamper`], [`GitLabOidc::mint_with_kid`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
use rsa::traits::PublicKeyParts as _;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::task::JoinHandle;

/// How many distinct keys a test process can use.
pub const KEY_COUNT: usize = 6;

/// The path GitLab serves its key set at.
pub const JWKS_PATH: &str = "/oauth/discovery/keys";

/// One RSA key pair, as GitLab would hold it and publish it.
pub struct TestKey {
    /// RFC 7638 thumbprint (base64url SHA-256 of `{"e","kty","n"}`), GitLab's `kid`.
    pub kid: String,
    /// Base64url modulus and exponent, as in the JWK.
    pub n: String,
    pub e: String,
    /// The public key as SPKI PEM (what a confused verifier might use as an HMAC secret).
    pub public_pem: String,
    encoding: EncodingKey,
}

impl TestKey {
    fn generate() -> Self {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
            .expect("generate a 2048-bit RSA key");
        let public = private.to_public_key();
        let n = URL_SAFE_NO_PAD.encode(public.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(public.e().to_bytes_be());
        let thumbprint_input = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint_input.as_bytes()));
        let der = private.to_pkcs1_der().expect("encode the private key");
        let public_pem = public
            .to_public_key_pem(LineEnding::LF)
            .expect("encode the public key");
        Self {
            kid,
            n,
            e,
            public_pem,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        }
    }

    /// The key as a JWK of GitLab's key set.
    pub fn jwk(&self) -> Value {
        json!({"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256", "n": self.n, "e": self.e})
    }
}

/// The process's test key number `index` (generated on first use).
///
/// # Panics
/// If `index >= KEY_COUNT`.
pub fn test_key(index: usize) -> &'static TestKey {
    static KEYS: [OnceLock<TestKey>; KEY_COUNT] = [const { OnceLock::new() }; KEY_COUNT];
    KEYS[index].get_or_init(TestKey::generate)
}

/// The claims of a GitLab CI ID token (kubernetes.md §6). Fields are public so tests can
/// bend them; [`IdTokenClaims::for_job`] fills them as GitLab does.
#[derive(Debug, Clone, Serialize)]
pub struct IdTokenClaims {
    pub namespace_id: String,
    pub namespace_path: String,
    pub project_id: String,
    pub project_path: String,
    pub user_id: String,
    pub user_login: String,
    pub user_email: String,
    pub pipeline_id: String,
    pub pipeline_source: String,
    pub job_id: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub ref_type: String,
    pub ref_protected: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    pub runner_id: String,
    pub runner_environment: String,
    pub jti: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub sub: String,
    pub iss: String,
    pub aud: String,
}

impl IdTokenClaims {
    /// A job of `project_path` (id `project_id`) on branch `branch` at `sha`, issued now
    /// for `aud` by `iss`.
    pub fn for_job(
        iss: &str,
        aud: &str,
        project_id: i64,
        project_path: &str,
        branch: &str,
        sha: &str,
    ) -> Self {
        let iat = unix_now();
        let namespace_path = project_path
            .rsplit_once('/')
            .map_or(project_path, |(namespace, _)| namespace)
            .to_owned();
        Self {
            namespace_id: "1".to_owned(),
            namespace_path,
            project_id: project_id.to_string(),
            project_path: project_path.to_owned(),
            user_id: "1".to_owned(),
            user_login: "root".to_owned(),
            user_email: "root@example.com".to_owned(),
            pipeline_id: "1212".to_owned(),
            pipeline_source: "push".to_owned(),
            job_id: "7010".to_owned(),
            git_ref: branch.to_owned(),
            ref_type: "branch".to_owned(),
            ref_protected: "true".to_owned(),
            sha: Some(sha.to_owned()),
            runner_id: "1".to_owned(),
            runner_environment: "self-hosted".to_owned(),
            jti: uuid::Uuid::new_v4().to_string(),
            iat,
            nbf: iat - 5,
            exp: iat + 3600,
            sub: format!("project_path:{project_path}:ref_type:branch:ref:{branch}"),
            iss: iss.to_owned(),
            aud: aud.to_owned(),
        }
    }

    /// The same job for tag `tag`.
    pub fn on_tag(mut self, tag: &str) -> Self {
        self.git_ref = tag.to_owned();
        self.ref_type = "tag".to_owned();
        self.sub = format!("project_path:{}:ref_type:tag:ref:{tag}", self.project_path);
        self
    }

    /// Issued at `iat` (seconds since the epoch): `nbf` and `exp` follow as GitLab sets
    /// them.
    pub fn issued_at(mut self, iat: u64) -> Self {
        self.iat = iat;
        self.nbf = iat - 5;
        self.exp = iat + 3600;
        self
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A running stand-in; the server stops when it is dropped.
pub struct GitLabOidc {
    address: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

struct Shared {
    issuer: String,
    /// Indexes of the listed keys, oldest first; the last one signs.
    listed: Mutex<Vec<usize>>,
    advertised_issuer: Mutex<Option<String>>,
    down: AtomicBool,
    discovery_fetches: AtomicU64,
    jwks_fetches: AtomicU64,
}

impl GitLabOidc {
    /// Serves on `127.0.0.1` on a free port, listing and signing with test key `key`.
    pub async fn start(key: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the GitLab OIDC stand-in");
        let address = listener.local_addr().expect("listener has an address");
        let shared = Arc::new(Shared {
            issuer: format!("http://{address}"),
            listed: Mutex::new(vec![key]),
            advertised_issuer: Mutex::new(None),
            down: AtomicBool::new(false),
            discovery_fetches: AtomicU64::new(0),
            jwks_fetches: AtomicU64::new(0),
        });
        test_key(key);
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route(JWKS_PATH, get(jwks))
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            address,
            shared,
            server,
        }
    }

    /// The instance URL: `iss` of its tokens, and what fluxgate's `gitlab_url` names.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Claims of a job of this instance for audience `aud` (see [`IdTokenClaims::for_job`]).
    pub fn claims(
        &self,
        aud: &str,
        project_id: i64,
        project_path: &str,
        branch: &str,
        sha: &str,
    ) -> IdTokenClaims {
        IdTokenClaims::for_job(self.issuer(), aud, project_id, project_path, branch, sha)
    }

    /// The `kid` that signs now.
    pub fn signing_kid(&self) -> String {
        let listed = self.shared.listed.lock();
        test_key(*listed.last().expect("a key is listed"))
            .kid
            .clone()
    }

    /// Signs `claims` as GitLab does: RS256 with the newest key, its `kid` in the header.
    pub fn mint(&self, claims: &IdTokenClaims) -> String {
        let index = *self.shared.listed.lock().last().expect("a key is listed");
        sign_rs256(test_key(index), &test_key(index).kid, claims)
    }

    /// Signs `claims` with test key `key`, naming `kid` (a key GitLab does not list, or a
    /// wrong name for a listed one).
    pub fn mint_with_kid(&self, key: usize, kid: &str, claims: &IdTokenClaims) -> String {
        sign_rs256(test_key(key), kid, claims)
    }

    /// An unsigned token: header `{"alg":"none","kid":…}` and an empty signature.
    pub fn mint_alg_none(&self, claims: &IdTokenClaims) -> String {
        let header = json!({"alg": "none", "typ": "JWT", "kid": self.signing_kid()});
        format!("{}.{}.", encode_json(&header), encode_json(claims))
    }

    /// The classic key-confusion forgery: HS256 with the signing key's public key as the
    /// HMAC secret: its SPKI PEM, or (with `pem` false) its JWK `n` as published.
    pub fn mint_hs256_with_public_key(&self, claims: &IdTokenClaims, pem: bool) -> String {
        let kid = self.signing_kid();
        let index = *self.shared.listed.lock().last().expect("a key is listed");
        let key = test_key(index);
        let secret = if pem {
            key.public_pem.as_bytes()
        } else {
            key.n.as_bytes()
        };
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
        let signing_input = format!("{}.{}", encode_json(&header), encode_json(claims));
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// Lists test key `key` too and signs with it from now on (GitLab's rotation); returns
    /// its `kid`.
    pub fn rotate(&self, key: usize) -> String {
        test_key(key);
        let mut listed = self.shared.listed.lock();
        listed.retain(|listed| *listed != key);
        listed.push(key);
        test_key(key).kid.clone()
    }

    /// Stops listing test key `key`.
    pub fn retire(&self, key: usize) {
        self.shared.listed.lock().retain(|listed| *listed != key);
    }

    /// While `down`, both endpoints answer 503.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// The discovery document names `issuer` instead of the instance URL.
    pub fn set_advertised_issuer(&self, issuer: Option<&str>) {
        *self.shared.advertised_issuer.lock() = issuer.map(str::to_owned);
    }

    /// Discovery documents served (503s included).
    pub fn discovery_fetches(&self) -> u64 {
        self.shared.discovery_fetches.load(Ordering::SeqCst)
    }

    /// Key sets served (503s included).
    pub fn jwks_fetches(&self) -> u64 {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }
}

impl Drop for GitLabOidc {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    shared.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    if shared.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let issuer = shared
        .advertised_issuer
        .lock()
        .clone()
        .unwrap_or_else(|| shared.issuer.clone());
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{}/oauth/authorize", shared.issuer),
        "token_endpoint": format!("{}/oauth/token", shared.issuer),
        "userinfo_endpoint": format!("{}/oauth/userinfo", shared.issuer),
        "jwks_uri": format!("{}{JWKS_PATH}", shared.issuer),
        "scopes_supported": ["openid", "profile", "email"],
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "sub_legacy", "name",
            "nickname", "email", "email_verified", "website", "profile", "picture",
            "groups", "groups_direct"],
    }))
    .into_response()
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if shared.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let keys: Vec<Value> = shared
        .listed
        .lock()
        .iter()
        .map(|index| test_key(*index).jwk())
        .collect();
    Json(json!({ "keys": keys })).into_response()
}

fn sign_rs256(key: &TestKey, kid: &str, claims: &IdTokenClaims) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    header.typ = Some("JWT".to_owned());
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign an ID token")
}

fn encode_json(value: &impl Serialize) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("claims serialize"))
}

/// `token` with its payload edited by `edit` and the original signature kept (what an
/// attacker who changes `project_id` in a real token gets).
pub fn tamper(token: &str, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let mut parts = token.split('.');
    let (header, payload, signature) = (
        parts.next().expect("header"),
        parts.next().expect("payload"),
        parts.next().expect("signature"),
    );
    let payload = URL_SAFE_NO_PAD.decode(payload).expect("base64url payload");
    let mut claims: serde_json::Map<String, Value> =
        serde_json::from_slice(&payload).expect("JSON payload");
    edit(&mut claims);
    format!("{header}.{}.{signature}", encode_json(&claims))
}
