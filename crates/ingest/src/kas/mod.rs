//! GitLab's own push notice, as GitLab Rails sends it to KAS:
//! `gitlab.agent.notifications.rpc.Notifications/GitPushEvent` on KAS's internal API
//! listener, authenticated by an HS256 JWT signed with the shared KAS secret.
//!
//! Pointing Rails' `gitlab_kas.internal_url` (and its secret) at fluxgate's `kas_listen`
//! makes every push on the instance a [`fluxgate_core::EventKind::ProjectPush`] in the
//! log: a project, no ref, no shas, matching every subscription of the project (see
//! `docs/kas-compat.md`).
//!
//! - [`secret`]: the Base64 of 32 bytes in a file, as Rails and KAS read it;
//! - [`jwt`]: the token, verified as KAS verifies it;
//! - [`service`]: the gRPC service: authenticate, validate, append, answer after commit.

pub mod jwt;
pub mod secret;
pub mod service;

pub use jwt::{AUDIENCE, JwtError, KasJwtVerifier, LEEWAY_SECONDS, VerifiedToken};
pub use secret::{KasSecret, KasSecretError, SECRET_LEN};
pub use service::{KasNotifications, MAX_MESSAGE_BYTES};
