//! The verifier: GitLab's keys (discovered, cached, refreshed) and the checks of a token.
//!
//! Keys:
//! - A background task discovers the key set's URL and fetches it at start, retrying with
//!   backoff (1 s doubling to `retry_max`) while GitLab cannot be reached or answers
//!   nonsense; meanwhile every token gets [`VerifyError::KeysUnavailable`] (a 503, never a
//!   401: the token may be fine). Once loaded, the keys are fetched again every
//!   `refresh_interval`; a failed refresh keeps the keys it had.
//! - A token naming a `kid` the cache does not hold triggers one refresh, unless a token
//!   triggered one less than `refresh_min_interval` ago. Refreshes are single-flight: callers wait
//!   for the one running and then look again, so however many bad tokens arrive, GitLab
//!   gets at most one key-set request per interval from them.
//! - Requests to GitLab never come from a token before the keys first loaded: until then
//!   only the background task fetches.

use std::sync::Arc;
use std::sync::Weak;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::RwLock;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::ALGORITHM;
use crate::claims::{self, PipelineClaims};
use crate::config::VerifierConfig;
use crate::error::{KeysError, VerifyError, shorten};
use crate::fetch;
use crate::jwks::{self, Keys, MAX_KID_LEN};

/// Longest token accepted (GitLab's are about 1.5 KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// The first retry delay of the background task.
const RETRY_MIN: Duration = Duration::from_secs(1);

/// Whether the verifier holds GitLab's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysStatus {
    /// Loaded, with these `kid`s.
    Loaded { kids: Vec<String> },
    /// Not loaded yet: the last attempt's error, or that none finished yet.
    Unavailable { reason: String },
}

/// Verifies GitLab CI ID tokens. Cheap to clone; the background task that keeps the keys
/// ends when the last clone is dropped.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
    _task: Arc<TaskGuard>,
}

struct Inner {
    config: VerifierConfig,
    client: reqwest::Client,
    keys: RwLock<KeyState>,
    /// Held while a refresh runs (single-flight); remembers when the last one started.
    gate: tokio::sync::Mutex<Gate>,
}

#[derive(Default)]
struct KeyState {
    keys: Option<Keys>,
    jwks_uri: Option<String>,
    last_error: Option<String>,
}

#[derive(Default)]
struct Gate {
    /// When a token last made the verifier refresh. The background loads do not count:
    /// the first unknown `kid` after them (a rotation right after start) still refreshes.
    last_token_refresh: Option<Instant>,
}

/// Aborts the background task when the last [`Verifier`] clone goes.
struct TaskGuard(tokio::task::AbortHandle);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The JOSE header fields looked at before anything else.
#[derive(Deserialize)]
struct Header {
    alg: Option<Value>,
    kid: Option<Value>,
}

impl Verifier {
    /// Starts the verifier and its background key task (on the current Tokio runtime).
    /// Returns at once: the keys arrive when GitLab answers.
    pub fn start(config: VerifierConfig) -> Result<Self, KeysError> {
        // reqwest is built without a default TLS provider; the process may not have
        // installed one (a second install is refused, harmlessly).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(config.http_timeout)
            .connect_timeout(config.http_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("fluxgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| KeysError::Fetch {
                url: config.issuer.discovery_url(),
                reason: format!("cannot build the HTTP client: {err}"),
            })?;
        let inner = Arc::new(Inner {
            config,
            client,
            keys: RwLock::new(KeyState::default()),
            gate: tokio::sync::Mutex::new(Gate::default()),
        });
        let task = tokio::spawn(keep_keys(Arc::downgrade(&inner)));
        Ok(Self {
            inner,
            _task: Arc::new(TaskGuard(task.abort_handle())),
        })
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.inner.config
    }

    /// Whether the keys are loaded, and which.
    pub fn keys_status(&self) -> KeysStatus {
        let state = self.inner.keys.read();
        match &state.keys {
            Some(keys) => KeysStatus::Loaded {
                kids: keys.kids().into_iter().map(str::to_owned).collect(),
            },
            None => KeysStatus::Unavailable {
                reason: unavailable_reason(&state),
            },
        }
    }

    /// Verifies `token` now.
    pub async fn verify(&self, token: &str) -> Result<PipelineClaims, VerifyError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        self.verify_at(token, now).await
    }

    /// Verifies `token` as of `now` (seconds since the epoch): header (RS256, `kid`), key,
    /// signature, then claims.
    pub async fn verify_at(&self, token: &str, now: u64) -> Result<PipelineClaims, VerifyError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(VerifyError::Malformed(format!(
                "longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let kid = check_header(token)?;
        let key = self.inner.key_for(&kid).await?;
        let payload = verify_signature(token, &key)?;
        claims::check(&payload, &self.inner.config, now)
    }
}

/// Reads the header: `alg` must be RS256 (checked before any key is looked up, so no
/// HS* or `none` token reaches a key), and `kid` present.
fn check_header(token: &str) -> Result<String, VerifyError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed(
            "expected three dot-separated parts".to_owned(),
        ));
    };
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| VerifyError::Malformed("the header is not base64url".to_owned()))?;
    let header: Header = serde_json::from_slice(&header)
        .map_err(|_| VerifyError::Malformed("the header is not a JSON object".to_owned()))?;
    match header.alg {
        Some(Value::String(alg)) if alg == ALGORITHM => {}
        Some(Value::String(alg)) => {
            return Err(VerifyError::AlgorithmNotAllowed {
                alg: shorten(&alg, 32),
            });
        }
        Some(other) => {
            return Err(VerifyError::AlgorithmNotAllowed {
                alg: shorten(&other.to_string(), 32),
            });
        }
        None => {
            return Err(VerifyError::AlgorithmNotAllowed {
                alg: "(none given)".to_owned(),
            });
        }
    }
    match header.kid {
        Some(Value::String(kid)) if !kid.is_empty() && kid.len() <= MAX_KID_LEN => Ok(kid),
        Some(Value::String(kid)) if !kid.is_empty() => Err(VerifyError::UnknownKid {
            kid: shorten(&kid, 64),
        }),
        _ => Err(VerifyError::MissingKid),
    }
}

/// Checks the RS256 signature with `key`, and returns the payload's claims. Nothing else
/// is checked here: the claims are checked by [`claims::check`], with precise messages.
fn verify_signature(token: &str, key: &DecodingKey) -> Result<Map<String, Value>, VerifyError> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    match jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation) {
        Ok(data) => Ok(data.claims),
        Err(err) => Err(match err.kind() {
            ErrorKind::InvalidSignature => VerifyError::BadSignature,
            ErrorKind::InvalidAlgorithm => VerifyError::AlgorithmNotAllowed {
                alg: "(not RS256)".to_owned(),
            },
            ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                VerifyError::Malformed("the payload or signature does not decode".to_owned())
            }
            _ => VerifyError::Malformed(err.to_string()),
        }),
    }
}

fn unavailable_reason(state: &KeyState) -> String {
    state
        .last_error
        .clone()
        .unwrap_or_else(|| "the first fetch has not finished".to_owned())
}

impl Inner {
    fn lookup(&self, kid: &str) -> Result<Option<DecodingKey>, VerifyError> {
        let state = self.keys.read();
        match &state.keys {
            Some(keys) => Ok(keys.get(kid).cloned()),
            None => Err(VerifyError::KeysUnavailable {
                reason: unavailable_reason(&state),
            }),
        }
    }

    /// The key named `kid`, refreshing the set once if it is unknown and the last refresh
    /// is older than `refresh_min_interval`.
    async fn key_for(&self, kid: &str) -> Result<DecodingKey, VerifyError> {
        if let Some(key) = self.lookup(kid)? {
            return Ok(key);
        }
        let unknown = || VerifyError::UnknownKid {
            kid: shorten(kid, 64),
        };
        let mut gate = self.gate.lock().await;
        // The refresh this caller waited for may have brought the key.
        if let Some(key) = self.lookup(kid)? {
            return Ok(key);
        }
        let recent = gate
            .last_token_refresh
            .is_some_and(|at| at.elapsed() < self.config.refresh_min_interval);
        if recent {
            return Err(unknown());
        }
        tracing::info!(kid = %shorten(kid, 64), "an ID token names an unknown key; refreshing GitLab's keys");
        gate.last_token_refresh = Some(Instant::now());
        if let Err(err) = self.refresh(&mut gate).await {
            tracing::warn!(error = %err, "cannot refresh GitLab's keys; keeping the ones loaded");
        }
        drop(gate);
        self.lookup(kid)?.ok_or_else(unknown)
    }

    /// Fetches the key set (discovering its URL first if needed) and replaces the cache.
    /// Taking the gate proves the caller holds it: refreshes are single-flight.
    async fn refresh(&self, _gate: &mut Gate) -> Result<(), KeysError> {
        let result = self.fetch_keys().await;
        let mut state = self.keys.write();
        match result {
            Ok((jwks_uri, keys)) => {
                tracing::info!(jwks_uri, kids = ?keys.kids(), keys = keys.len(), "GitLab's ID token keys loaded");
                state.jwks_uri = Some(jwks_uri);
                state.keys = Some(keys);
                state.last_error = None;
                Ok(())
            }
            Err(err) => {
                state.last_error = Some(err.to_string());
                // Discover again next time: the key set may have moved.
                state.jwks_uri = None;
                Err(err)
            }
        }
    }

    async fn fetch_keys(&self) -> Result<(String, Keys), KeysError> {
        let known = self.keys.read().jwks_uri.clone();
        let jwks_uri = match known {
            Some(uri) => uri,
            None => fetch::discover(&self.client, &self.config.issuer).await?,
        };
        let body = fetch::get(&self.client, &jwks_uri, fetch::JWKS_LIMIT).await?;
        let keys = jwks::parse(&jwks_uri, &body)?;
        Ok((jwks_uri, keys))
    }
}

/// The background task: load the keys (retrying with backoff), then refresh them every
/// `refresh_interval`. Ends when the verifier is dropped.
async fn keep_keys(inner: Weak<Inner>) {
    let mut delay = RETRY_MIN;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let result = {
            let mut gate = strong.gate.lock().await;
            strong.refresh(&mut gate).await
        };
        let loaded = strong.keys.read().keys.is_some();
        let wait = match result {
            Ok(()) => {
                delay = RETRY_MIN;
                strong.config.refresh_interval
            }
            Err(err) => {
                let wait = if loaded {
                    strong.config.refresh_min_interval.max(RETRY_MIN)
                } else {
                    delay
                };
                delay = (delay * 2).min(strong.config.retry_max.max(RETRY_MIN));
                if loaded {
                    tracing::warn!(error = %err, retry_in = ?wait, "cannot refresh GitLab's ID token keys; keeping the ones loaded");
                } else {
                    tracing::error!(error = %err, retry_in = ?wait, "cannot load GitLab's ID token keys; pipeline notifications answer 503 until they load");
                }
                wait
            }
        };
        drop(strong);
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(header: &str) -> String {
        format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(header))
    }

    #[test]
    fn the_header_pins_rs256_and_needs_a_kid() {
        assert_eq!(
            check_header(&token(r#"{"alg":"RS256","kid":"k1"}"#)).unwrap(),
            "k1"
        );
        for (header, alg) in [
            (r#"{"alg":"none","kid":"k1"}"#, "none"),
            (r#"{"alg":"HS256","kid":"k1"}"#, "HS256"),
            (r#"{"alg":"RS512","kid":"k1"}"#, "RS512"),
            (r#"{"alg":"rs256","kid":"k1"}"#, "rs256"),
            (r#"{"kid":"k1"}"#, "(none given)"),
        ] {
            assert_eq!(
                check_header(&token(header)).unwrap_err(),
                VerifyError::AlgorithmNotAllowed {
                    alg: alg.to_owned()
                },
                "{header}"
            );
        }
        assert_eq!(
            check_header(&token(r#"{"alg":"RS256"}"#)).unwrap_err(),
            VerifyError::MissingKid
        );
        assert!(matches!(
            check_header("a.b").unwrap_err(),
            VerifyError::Malformed(_)
        ));
        assert!(matches!(
            check_header("!!.b.c").unwrap_err(),
            VerifyError::Malformed(_)
        ));
    }
}
