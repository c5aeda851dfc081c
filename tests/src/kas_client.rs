//! A GitLab Rails stand-in for the calls Rails makes to KAS: it mints its JWT exactly as
//! `Gitlab::Kas::Client` does (`JSONWebToken::HMACToken`: HS256, header `typ: JWT`, `jti` a
//! random UUID, `aud: gitlab-kas`, `iss` the GitLab host, `iat` now, `nbf` now − 5 s, `exp`
//! now + 60 s, signed with the 32 bytes the shared secret file holds in Base64) and sends
//! it as `authorization: bearer <jwt>` with `Notifications/GitPushEvent`.
//!
//! For the refusal tests it can also send tokens Rails never sends: other claims, another
//! key, another algorithm, or none at all.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use fluxgate_proto::gitlab::agent::event::{GitPushEvent, Project};
use fluxgate_proto::gitlab::agent::notifications::rpc::GitPushEventRequest;
use fluxgate_proto::gitlab::agent::notifications::rpc::notifications_client::NotificationsClient;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use tonic::Status;
use tonic::transport::Channel;

/// Rails' `Gitlab::Kas::JWT_AUDIENCE`.
pub const AUDIENCE: &str = "gitlab-kas";

/// A KAS secret: 32 random-looking bytes and the file content Rails writes for them.
#[derive(Debug, Clone)]
pub struct KasSecret {
    pub bytes: [u8; 32],
}

impl KasSecret {
    /// A secret derived from `seed` (tests need no real randomness).
    pub fn from_seed(seed: u8) -> Self {
        let mut bytes = [0u8; 32];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = seed.wrapping_mul(31).wrapping_add(index as u8 * 7 + 1);
        }
        Self { bytes }
    }

    /// What `.gitlab_kas_secret` holds: `Base64.strict_encode64` of the bytes.
    pub fn file_content(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.bytes)
    }

    /// Writes the secret file (0600) into `dir` and returns its path.
    pub fn write_file(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join(".gitlab_kas_secret");
        std::fs::write(&path, self.file_content()).expect("write the KAS secret file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("chmod the KAS secret file");
        }
        path
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn encode(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(value).expect("JSON serialises"))
}

/// The claims Rails puts in a KAS JWT at this moment, for `gitlab_host`.
pub fn rails_claims(gitlab_host: &str) -> Value {
    let now = now();
    json!({
        "jti": uuid::Uuid::new_v4().to_string(),
        "aud": AUDIENCE,
        "iss": gitlab_host,
        "iat": now,
        "nbf": now - 5,
        "exp": now + 60,
    })
}

/// An HS256 JWT with `header` and `claims`, signed with `key`.
pub fn sign_hs256(header: &Value, claims: &Value, key: &[u8]) -> String {
    let signed = format!("{}.{}", encode(header), encode(claims));
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(signed.as_bytes());
    let signature =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signed}.{signature}")
}

/// A token as Rails mints it.
pub fn rails_token(secret: &KasSecret, gitlab_host: &str) -> String {
    sign_hs256(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &rails_claims(gitlab_host),
        &secret.bytes,
    )
}

/// An unsigned token (`alg: none`), as an attacker would send it.
pub fn unsigned_token(claims: &Value) -> String {
    format!(
        "{}.{}.",
        encode(&json!({"alg": "none", "typ": "JWT"})),
        encode(claims)
    )
}

/// The GitLab Rails side of `Notifications/GitPushEvent`.
pub struct RailsKasClient {
    client: NotificationsClient<Channel>,
    secret: KasSecret,
    gitlab_host: String,
}

impl RailsKasClient {
    /// Connects to `gitlab_kas.internal_url` (`grpc://<address>`).
    pub async fn connect(address: SocketAddr, secret: KasSecret, gitlab_host: &str) -> Self {
        let channel = Channel::from_shared(format!("http://{address}"))
            .expect("a URI")
            .connect()
            .await
            .expect("connect to the KAS listener");
        Self {
            client: NotificationsClient::new(channel),
            secret,
            gitlab_host: gitlab_host.to_owned(),
        }
    }

    /// `send_git_push_event(project:)` as Rails calls it: a fresh token per call.
    pub async fn send_git_push_event(&mut self, id: i64, full_path: &str) -> Result<(), Status> {
        let token = rails_token(&self.secret, &self.gitlab_host);
        self.call(Some(&format!("bearer {token}")), id, full_path)
            .await
    }

    /// The call with any `authorization` value (or none).
    pub async fn call(
        &mut self,
        authorization: Option<&str>,
        id: i64,
        full_path: &str,
    ) -> Result<(), Status> {
        let mut request = tonic::Request::new(GitPushEventRequest {
            event: Some(GitPushEvent {
                project: Some(Project {
                    id,
                    full_path: full_path.to_owned(),
                }),
            }),
        });
        request.set_timeout(std::time::Duration::from_secs(5));
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().expect("ASCII metadata"));
        }
        self.client.git_push_event(request).await.map(|_| ())
    }
}
