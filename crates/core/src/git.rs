//! Git refs, object ids and ref patterns.

use std::fmt;

mod ref_format;

pub use ref_format::{RefFormatError, check_ref_format};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest ref name accepted.
pub const MAX_REF_LEN: usize = 1024;

/// Why a ref, object id or ref pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitError {
    #[error("ref is empty")]
    EmptyRef,
    #[error("ref is longer than {MAX_REF_LEN} bytes")]
    RefTooLong,
    /// The ref breaks one of git's ref-name rules (`git check-ref-format`), or is not a
    /// full ref under `refs/`. `reference` is shortened to 80 characters.
    #[error("ref {reference:?} is invalid: {reason}")]
    BadRef {
        reference: String,
        reason: RefFormatError,
    },
    #[error("object id {0:?} is not 40 or 64 hexadecimal characters")]
    BadSha(String),
    #[error("ref pattern {pattern:?} is invalid: {reason}")]
    BadPattern { pattern: String, reason: String },
}

/// A full git ref such as `refs/heads/main` or `refs/tags/v1.0`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GitRef(String);

impl GitRef {
    /// A full ref as GitLab sends it: valid for `git check-ref-format` (see
    /// [`check_ref_format`]), under `refs/`, and with at least two components after it
    /// (`refs/heads/main`, `refs/tags/v1`), so `HEAD`, `main` and `refs/heads` are refused.
    pub fn parse(raw: &str) -> Result<Self, GitError> {
        Self::check_length(raw)?;
        let bad = |reason| GitError::BadRef {
            reference: raw.chars().take(80).collect(),
            reason,
        };
        check_ref_format(raw).map_err(bad)?;
        let under_refs = raw
            .strip_prefix("refs/")
            .is_some_and(|rest| rest.split('/').count() >= 2);
        if !under_refs {
            return Err(bad(RefFormatError::NotFullRef));
        }
        Ok(Self(raw.to_owned()))
    }

    /// A ref read back from the broker's own log or bus. Entries written before refs were
    /// checked against git's rules were checked only for emptiness, length, whitespace and
    /// control characters; they are read under those rules so that an old log stays
    /// readable. Everything arriving from outside goes through [`GitRef::parse`].
    fn parse_stored(raw: &str) -> Result<Self, GitError> {
        Self::check_length(raw)?;
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(GitError::BadRef {
                reference: raw.chars().take(80).collect(),
                reason: RefFormatError::ForbiddenCharacter,
            });
        }
        Ok(Self(raw.to_owned()))
    }

    fn check_length(raw: &str) -> Result<(), GitError> {
        if raw.is_empty() {
            return Err(GitError::EmptyRef);
        }
        if raw.len() > MAX_REF_LEN {
            return Err(GitError::RefTooLong);
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for `refs/tags/…`.
    pub fn is_tag(&self) -> bool {
        self.0.starts_with("refs/tags/")
    }
}

impl fmt::Display for GitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for GitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A git object id: 40 (SHA-1) or 64 (SHA-256) lower-case hex characters. All zeros means
/// "no object" (the ref was created, or deleted).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha(String);

impl Sha {
    pub fn parse(raw: &str) -> Result<Self, GitError> {
        let ok_len = raw.len() == 40 || raw.len() == 64;
        if !ok_len || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(GitError::BadSha(raw.chars().take(80).collect()));
        }
        Ok(Self(raw.to_ascii_lowercase()))
    }

    /// The SHA-1 null object id.
    pub fn zero() -> Self {
        Self("0".repeat(40))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_zero(&self) -> bool {
        self.0.bytes().all(|b| b == b'0')
    }
}

impl fmt::Display for Sha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Sha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

macro_rules! string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                <$ty>::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

impl Serialize for GitRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Deserialisation reads the broker's own records (the log, the bus), hence the lenient
/// [`GitRef::parse_stored`]; input from GitLab and agents is parsed with [`GitRef::parse`].
impl<'de> Deserialize<'de> for GitRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        GitRef::parse_stored(&raw).map_err(serde::de::Error::custom)
    }
}

string_serde!(Sha);

/// What a subscription or receiver matches on the ref: an exact ref, or a glob where `*`
/// matches any run of characters (slashes included) and `?` one character.
///
/// A pattern that does not start with `refs/` names a branch or a tag: `main` matches
/// `refs/heads/main` and `refs/tags/main`; `v*` matches every branch and tag starting
/// with `v`.
#[derive(Clone)]
pub struct RefPattern {
    source: String,
    matcher: globset::GlobMatcher,
}

impl RefPattern {
    pub fn parse(raw: &str) -> Result<Self, GitError> {
        // Only ASCII white space is trimmed; other white space is refused below, never
        // trimmed away (`main\u{202f}` must not turn into `main`).
        let raw = raw.trim_matches(|c: char| c.is_ascii_whitespace());
        let bad = |reason: &str| GitError::BadPattern {
            pattern: raw.to_owned(),
            reason: reason.to_owned(),
        };
        if raw.is_empty() {
            return Err(bad("empty"));
        }
        if raw.len() > MAX_REF_LEN {
            return Err(bad("too long"));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace"));
        }
        let full = if raw.starts_with("refs/") {
            raw.to_owned()
        } else {
            format!("refs/{{heads,tags}}/{raw}")
        };
        let glob = globset::GlobBuilder::new(&full)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| bad(&e.kind().to_string()))?;
        Ok(Self {
            source: raw.to_owned(),
            matcher: glob.compile_matcher(),
        })
    }

    pub fn matches(&self, git_ref: &GitRef) -> bool {
        self.matcher.is_match(git_ref.as_str())
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl PartialEq for RefPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for RefPattern {}

impl std::hash::Hash for RefPattern {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.source.hash(state);
    }
}

impl fmt::Debug for RefPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

impl fmt::Display for RefPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Serialize for RefPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for RefPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        RefPattern::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> GitRef {
        GitRef::parse(s).unwrap()
    }

    #[test]
    fn a_pattern_with_non_ascii_white_space_is_refused_not_trimmed() {
        // Trimming it would make `main\u{202f}` match `main`, a different branch.
        assert!(matches!(
            RefPattern::parse("main\u{202f}"),
            Err(GitError::BadPattern { .. })
        ));
        assert_eq!(RefPattern::parse("  main\t").unwrap().to_string(), "main");
    }

    #[test]
    fn sha_accepts_sha1_and_sha256_and_lowercases() {
        assert_eq!(
            Sha::parse(&"A".repeat(40)).unwrap().as_str(),
            "a".repeat(40)
        );
        assert!(Sha::parse(&"b".repeat(64)).is_ok());
        assert!(Sha::parse(&"b".repeat(41)).is_err());
        assert!(Sha::parse(&"g".repeat(40)).is_err());
        assert!(Sha::zero().is_zero());
    }

    #[test]
    fn refs_reject_whitespace() {
        assert!(GitRef::parse("refs/heads/a b").is_err());
        assert!(GitRef::parse("").is_err());
        assert!(r("refs/tags/v1").is_tag());
    }

    #[test]
    fn refs_must_be_full_and_well_formed() {
        for (raw, reason) in [
            ("refs/heads/../x", RefFormatError::DoubleDot),
            ("HEAD", RefFormatError::OneLevel),
            ("master", RefFormatError::OneLevel),
            ("refs/heads/", RefFormatError::EmptyComponent),
            ("refs/heads", RefFormatError::NotFullRef),
            ("heads/main", RefFormatError::NotFullRef),
            (
                "refs/heads/main.lock",
                RefFormatError::ComponentEndsWithLock,
            ),
            ("refs/heads/a@{u}", RefFormatError::AtBrace),
            ("refs/heads/feature*", RefFormatError::ForbiddenCharacter),
        ] {
            let err = GitRef::parse(raw).unwrap_err();
            assert_eq!(
                err,
                GitError::BadRef {
                    reference: raw.to_owned(),
                    reason
                },
                "{raw}"
            );
        }
        assert_eq!(
            GitRef::parse("refs/heads/../x").unwrap_err().to_string(),
            "ref \"refs/heads/../x\" is invalid: it contains `..`"
        );
        for raw in [
            "refs/heads/main",
            "refs/heads/feature/x-1",
            "refs/tags/v1.2.3",
            "refs/merge-requests/1/head",
            "refs/heads/fu\u{df}",
        ] {
            assert_eq!(r(raw).as_str(), raw);
        }
    }

    #[test]
    fn refs_from_the_log_are_read_under_the_rules_they_were_written_with() {
        let old: GitRef = serde_json::from_str("\"master\"").unwrap();
        assert_eq!(old.as_str(), "master");
        assert!(serde_json::from_str::<GitRef>("\"a b\"").is_err());
        assert!(serde_json::from_str::<GitRef>("\"\"").is_err());
    }

    #[test]
    fn exact_pattern_matches_only_that_ref() {
        let p = RefPattern::parse("refs/heads/main").unwrap();
        assert!(p.matches(&r("refs/heads/main")));
        assert!(!p.matches(&r("refs/heads/main2")));
        assert!(!p.matches(&r("refs/tags/main")));
    }

    #[test]
    fn glob_pattern_matches_tags() {
        let p = RefPattern::parse("refs/tags/v*").unwrap();
        assert!(p.matches(&r("refs/tags/v1.2.3")));
        assert!(!p.matches(&r("refs/heads/v1")));
        let nested = RefPattern::parse("refs/heads/release/*").unwrap();
        assert!(nested.matches(&r("refs/heads/release/2024/q1")));
    }

    #[test]
    fn short_names_match_branches_and_tags() {
        let p = RefPattern::parse("main").unwrap();
        assert!(p.matches(&r("refs/heads/main")));
        assert!(p.matches(&r("refs/tags/main")));
        assert!(!p.matches(&r("refs/heads/feature/main")));
    }

    #[test]
    fn bad_patterns_are_rejected() {
        assert!(RefPattern::parse("refs/heads/[").is_err());
        assert!(RefPattern::parse("").is_err());
    }
}
