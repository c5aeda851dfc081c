//! GitLab CI ID tokens: verification into typed pipeline claims.
//!
//! A GitLab CI job that declares `id_tokens: { FLUXGATE_ID_TOKEN: { aud: … } }` receives
//! a JWT signed RS256 by the GitLab instance. The broker accepts such a token as proof
//! that a pipeline of the project it names is calling: the project, ref and sha come from
//! the signed claims, never from anything else the caller sends.
//!
//! - [`Verifier`] holds the instance's signing keys: discovered from
//!   `<gitlab_url>/.well-known/openid-configuration` (whose `issuer` must be the
//!   configured URL) and its `jwks_uri`, fetched with a timeout and a body limit, cached,
//!   refreshed in the background, and refreshed when a token names an unknown `kid` (at
//!   most once per [`VerifierConfig::refresh_min_interval`], one fetch at a time, so bad
//!   tokens cannot make the broker hammer GitLab). When GitLab cannot be reached at start,
//!   the verifier keeps retrying in the background and answers
//!   [`VerifyError::KeysUnavailable`] meanwhile: the broker starts regardless.
//! - Validation ([`verify`](Verifier::verify)): `alg` pinned to RS256 (so `none`, every
//!   HS* — also HS256 "signed" with the public key — and every other algorithm are
//!   refused before any key is looked at), `kid` required, signature, `iss` equal to the
//!   configured issuer, `aud` containing the configured audience, `exp` and `nbf` with a
//!   leeway, `jti` required.
//! - [`PipelineClaims`]: core types (`ProjectId`, `FullPath`, a full `GitRef`, `Sha`).
//!
//! Tokens are never logged, and no error message repeats one.

mod claims;
mod config;
mod error;
mod fetch;
mod jwks;
mod verifier;

pub use claims::{PipelineClaims, RefType};
pub use config::{ConfigError, Issuer, VerifierConfig};
pub use error::{KeysError, VerifyError};
pub use fetch::describe as describe_http_error;
pub use verifier::{KeysStatus, Verifier};

/// The one signature algorithm GitLab signs ID tokens with, and the only one accepted.
pub const ALGORITHM: &str = "RS256";
