//! Names of the objects the agent owns, derived from the source's name.
//!
//! A Receiver's name is hashed into its webhook path, so it must be stable: the same
//! source always gives the same names. They are DNS-1123 labels (at most 63 characters of
//! `[a-z0-9-]`, starting and ending with an alphanumeric), which is stricter than the
//! subdomain rule Kubernetes checks, so they also work as label values.
//!
//! `fluxgate-<source>` and `fluxgate-<source>-token` are used as they are when they fit in
//! 62 characters and the source name has no `.` (a subdomain character, not a label one).
//! Otherwise the name is cut, dots become dashes, and `-` plus 10 hex digits of
//! SHA-256(source name) end it, making it exactly 63 characters. A name of 63 characters
//! is therefore always a hashed one and cannot equal a name used as is, and two different
//! long names collide only if 40 bits of their hashes do.

use sha2::{Digest, Sha256};

/// Longest DNS-1123 label.
pub const MAX_NAME_LEN: usize = 63;

/// Prefix of every object the agent names.
const PREFIX: &str = "fluxgate-";
/// Suffix of the Secret holding a Receiver's token.
const SECRET_SUFFIX: &str = "-token";
/// Hex digits of the hash that ends a shortened name.
const HASH_DIGITS: usize = 10;

/// The Receiver the agent owns for the source called `source`.
pub fn receiver_name(source: &str) -> String {
    derived_name(source, "")
}

/// The Secret holding the token of the Receiver the agent owns for `source`.
pub fn secret_name(source: &str) -> String {
    derived_name(source, SECRET_SUFFIX)
}

/// `fluxgate-<source><suffix>`, shortened and hashed when it would not be a short label.
fn derived_name(source: &str, suffix: &str) -> String {
    let plain = format!("{PREFIX}{source}{suffix}");
    if plain.len() < MAX_NAME_LEN && is_dns_label(&plain) {
        return plain;
    }
    let hash = hex::encode(Sha256::digest(source.as_bytes()));
    let hash = &hash[..HASH_DIGITS];
    let room = MAX_NAME_LEN - PREFIX.len() - suffix.len() - 1 - HASH_DIGITS;
    let cleaned: String = source
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(room)
        .collect();
    let cleaned = cleaned.trim_end_matches('-');
    let name = if cleaned.is_empty() {
        format!("{PREFIX}{hash}{suffix}")
    } else {
        format!("{PREFIX}{cleaned}-{hash}{suffix}")
    };
    // Keep the hashed form at exactly 63 characters so it can never equal a plain one.
    pad_to_max(name, suffix)
}

/// Pads a hashed name with extra hash-derived digits up to [`MAX_NAME_LEN`].
fn pad_to_max(name: String, suffix: &str) -> String {
    if name.len() >= MAX_NAME_LEN {
        return name;
    }
    let stem = name.strip_suffix(suffix).unwrap_or(&name);
    let filler = hex::encode(Sha256::digest(stem.as_bytes()));
    let missing = MAX_NAME_LEN - name.len();
    format!("{stem}{}{suffix}", &filler[..missing])
}

/// True for a DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn short_names_are_used_as_they_are() {
        assert_eq!(receiver_name("podinfo"), "fluxgate-podinfo");
        assert_eq!(secret_name("podinfo"), "fluxgate-podinfo-token");
    }

    #[test]
    fn long_or_dotted_names_are_hashed_to_exactly_63_valid_characters() {
        let long = "a".repeat(253);
        for source in [
            long.as_str(),
            "app.v2",
            "x".repeat(54).as_str(),
            "Upper",
            "a.b.c",
        ] {
            for name in [receiver_name(source), secret_name(source)] {
                assert!(is_dns_label(&name), "{name}");
                assert_eq!(name.len(), MAX_NAME_LEN, "{name}");
            }
        }
        assert!(secret_name(&long).ends_with("-token"));
        assert!(receiver_name("app.v2").starts_with("fluxgate-app-v2-"));
    }

    #[test]
    fn names_are_stable_and_distinct() {
        assert_eq!(receiver_name("app.v2"), receiver_name("app.v2"));
        // Same cleaned prefix, different sources.
        let a = "a".repeat(100) + "1";
        let b = "a".repeat(100) + "2";
        let names: HashSet<String> = [
            receiver_name(&a),
            receiver_name(&b),
            receiver_name("app.v2"),
            receiver_name("app-v2"),
            secret_name("app"),
            secret_name("app-token"),
        ]
        .into_iter()
        .collect();
        assert_eq!(names.len(), 6, "{names:?}");
        // A Receiver and a Secret may share a name: they are different kinds.
    }

    #[test]
    fn a_plain_name_is_never_63_characters() {
        // 62 characters in all: used as is.
        let fits = "b".repeat(62 - "fluxgate-".len());
        assert_eq!(receiver_name(&fits).len(), 62);
        // One more and it is hashed.
        let over = "b".repeat(63 - "fluxgate-".len());
        assert_ne!(receiver_name(&over), format!("fluxgate-{over}"));
    }
}
