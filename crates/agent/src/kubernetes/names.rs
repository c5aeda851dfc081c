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
//!
//! An `OCIRepository` and a `GitRepository` often share a name in one namespace, so the
//! objects of an `OCIRepository` are named differently: always hashed, from
//! `fluxgate-oci-` and SHA-256(`OCIRepository/<source name>`), so they are 63 characters
//! and cannot equal a `GitRepository`'s plain name, nor (but for a hash collision) a
//! hashed one.

use sha2::{Digest, Sha256};

use super::source::SourceKind;

/// Longest DNS-1123 label.
pub const MAX_NAME_LEN: usize = 63;

/// Prefix of every object the agent names.
const PREFIX: &str = "fluxgate-";
/// Prefix of the objects of `OCIRepository` sources.
const OCI_PREFIX: &str = "fluxgate-oci-";
/// Suffix of the Secret holding a Receiver's token.
const SECRET_SUFFIX: &str = "-token";
/// Hex digits of the hash that ends a shortened name.
const HASH_DIGITS: usize = 10;

/// The Receiver the agent owns for the source of `kind` called `source`.
pub fn receiver_name(kind: SourceKind, source: &str) -> String {
    derived_name(kind, source, "")
}

/// The Secret holding the token of the Receiver the agent owns for `source`.
pub fn secret_name(kind: SourceKind, source: &str) -> String {
    derived_name(kind, source, SECRET_SUFFIX)
}

/// `fluxgate-<source><suffix>`, shortened and hashed when it would not be a short label;
/// always hashed for an `OCIRepository`.
fn derived_name(kind: SourceKind, source: &str, suffix: &str) -> String {
    match kind {
        SourceKind::GitRepository => {
            let plain = format!("{PREFIX}{source}{suffix}");
            if plain.len() < MAX_NAME_LEN && is_dns_label(&plain) {
                return plain;
            }
            hashed_name(PREFIX, source, source, suffix)
        }
        SourceKind::OciRepository => hashed_name(
            OCI_PREFIX,
            &format!("{}/{source}", kind.as_str()),
            source,
            suffix,
        ),
    }
}

/// `<prefix><source, cleaned and cut>-<10 hex digits of SHA-256(hash_input)><suffix>`,
/// padded to exactly [`MAX_NAME_LEN`].
fn hashed_name(prefix: &str, hash_input: &str, source: &str, suffix: &str) -> String {
    let hash = hex::encode(Sha256::digest(hash_input.as_bytes()));
    let hash = &hash[..HASH_DIGITS];
    let room = MAX_NAME_LEN - prefix.len() - suffix.len() - 1 - HASH_DIGITS;
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
        format!("{prefix}{hash}{suffix}")
    } else {
        format!("{prefix}{cleaned}-{hash}{suffix}")
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

    fn git_receiver(source: &str) -> String {
        receiver_name(SourceKind::GitRepository, source)
    }

    fn git_secret(source: &str) -> String {
        secret_name(SourceKind::GitRepository, source)
    }

    #[test]
    fn short_names_are_used_as_they_are() {
        assert_eq!(git_receiver("podinfo"), "fluxgate-podinfo");
        assert_eq!(git_secret("podinfo"), "fluxgate-podinfo-token");
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
            for name in [git_receiver(source), git_secret(source)] {
                assert!(is_dns_label(&name), "{name}");
                assert_eq!(name.len(), MAX_NAME_LEN, "{name}");
            }
        }
        assert!(git_secret(&long).ends_with("-token"));
        assert!(git_receiver("app.v2").starts_with("fluxgate-app-v2-"));
    }

    #[test]
    fn names_are_stable_and_distinct() {
        assert_eq!(git_receiver("app.v2"), git_receiver("app.v2"));
        // Same cleaned prefix, different sources.
        let a = "a".repeat(100) + "1";
        let b = "a".repeat(100) + "2";
        let names: HashSet<String> = [
            git_receiver(&a),
            git_receiver(&b),
            git_receiver("app.v2"),
            git_receiver("app-v2"),
            git_secret("app"),
            git_secret("app-token"),
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
        assert_eq!(git_receiver(&fits).len(), 62);
        // One more and it is hashed.
        let over = "b".repeat(63 - "fluxgate-".len());
        assert_ne!(git_receiver(&over), format!("fluxgate-{over}"));
    }

    #[test]
    fn oci_sources_get_hashed_names_apart_from_git_sources_of_the_same_name() {
        let oci = receiver_name(SourceKind::OciRepository, "podinfo");
        let oci_secret = secret_name(SourceKind::OciRepository, "podinfo");
        assert!(oci.starts_with("fluxgate-oci-podinfo-"), "{oci}");
        assert!(oci_secret.starts_with("fluxgate-oci-podinfo-") && oci_secret.ends_with("-token"));
        for name in [&oci, &oci_secret] {
            assert!(is_dns_label(name), "{name}");
            assert_eq!(name.len(), MAX_NAME_LEN, "{name}");
        }
        assert_ne!(oci, git_receiver("podinfo"));
        // A GitRepository named like the OCI prefix still gets a different name.
        assert_ne!(git_receiver("oci-podinfo"), oci);
        assert_eq!(oci, receiver_name(SourceKind::OciRepository, "podinfo"));
        let long = "o".repeat(253);
        assert!(is_dns_label(&receiver_name(
            SourceKind::OciRepository,
            &long
        )));
        assert_ne!(
            receiver_name(SourceKind::OciRepository, &long),
            git_receiver(&long)
        );
    }
}
