//! Tests of `fluxgate_gitlab::parse_hook`: GitLab's own sample bodies (shared and
//! ours), malformed bodies with their exact messages, and property tests that it never
//! panics.

#[path = "parse/support.rs"]
mod support;

#[path = "parse/shared_fixtures.rs"]
mod shared_fixtures;

#[path = "parse/own_fixtures.rs"]
mod own_fixtures;

#[path = "parse/variants.rs"]
mod variants;

#[path = "parse/malformed.rs"]
mod malformed;

#[path = "parse/never_panics.rs"]
mod never_panics;
