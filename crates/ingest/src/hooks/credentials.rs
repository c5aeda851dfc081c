//! Why a configured hook credential (a hook secret or a signing token) was refused at
//! start-up. The messages never contain the credential itself.

use super::signature::{MAX_SIGNING_KEY_LEN, MIN_SIGNING_KEY_LEN, SIGNING_TOKEN_PREFIX};
use super::token::MIN_HOOK_SECRET_LEN;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "a hook secret is empty; an empty secret would accept hooks with an empty X-Gitlab-Token"
    )]
    EmptySecret,
    #[error(
        "a hook secret is {len} bytes long; at least {MIN_HOOK_SECRET_LEN} are required \
         (generate one with `openssl rand -hex 24`)"
    )]
    ShortSecret { len: usize },
    #[error("a signing token does not start with `{SIGNING_TOKEN_PREFIX}`")]
    SigningTokenPrefix,
    #[error("a signing token is not base64 after `{SIGNING_TOKEN_PREFIX}`: {reason}")]
    SigningTokenEncoding { reason: String },
    #[error(
        "a signing token's key is {len} bytes; it must be {MIN_SIGNING_KEY_LEN} to \
         {MAX_SIGNING_KEY_LEN} (GitLab's are 32)"
    )]
    SigningKeyLength { len: usize },
    #[error(
        "signatures are required (hook_signature_required) but no signing token is configured \
         (hook_signing_token or hook_signing_token_file)"
    )]
    RequiredWithoutSigningToken,
    #[error("no hook credential is configured: set a hook secret or a signing token, or both")]
    NoCredentials,
}
