//! Semver ranges as Flux reads them: the constraint syntax of Masterminds/semver v3, which
//! Flux's source-controller uses for `OCIRepository` `spec.ref.semver`.
//!
//! A range is alternatives separated by `||`; each alternative is comparators that must all
//! hold, separated by commas or spaces (`>=1.0.0 <2.0.0`, `>= 1.0, < 2`). A comparator is
//! an operator (`=` or none, `!=`, `>`, `<`, `>=`/`=>`, `<=`/`=<`, `~`/`~>`, `^`) and a
//! version that may be partial (`1`, `1.2`) or carry wildcards (`1.x`, `1.2.*`, `*`), with
//! an optional leading `v`; `a - b` is `>=a <=b`. Masterminds' meaning of a partial
//! version is kept: `1.2` and `=1.2` are `1.2.x`, `>1.2` is `>=1.3.0`, `<=1.2` is
//! `<1.3.0`, `<1.2` is `<1.2.0`, `~1` is `1.x`, `~1.2.3` is `>=1.2.3 <1.3.0`, `^1.2` is
//! `>=1.2.0 <2.0.0`, `^0.2.3` is `>=0.2.3 <0.3.0`, `^0.0.3` is `=0.0.3`.
//!
//! Pre-releases: as in Masterminds v3, a version with a pre-release satisfies a comparator
//! only if that comparator's version has a pre-release too (`>=1.0.0-rc.1` admits
//! `1.0.0-rc.2`; `>=1.0.0` does not admit `1.1.0-rc.1`). Build metadata is ignored.
//!
//! Tags are read as Flux does (`fluxcd/pkg/version.ParseVersion`): strict semver
//! (`MAJOR.MINOR.PATCH[-pre][+build]`) with an optional leading `v`; any other tag
//! (`latest`, `1.2`) is not a version and satisfies no range. Versions are compared with
//! the `semver` crate's precedence (numeric and alphanumeric pre-release identifiers).

use std::cmp::Ordering;

use semver::{Prerelease, Version};

/// Longest range accepted, in bytes.
pub const MAX_RANGE_LEN: usize = 1024;

/// Why a range cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("the range is empty")]
    Empty,
    #[error("the range is longer than {MAX_RANGE_LEN} bytes")]
    TooLong,
    #[error("{0:?} is not a comparator (operator and version, such as >=1.2.0)")]
    Comparator(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equal,
    NotEqual,
    Greater,
    Less,
    GreaterOrEqual,
    LessOrEqual,
    Tilde,
    Caret,
}

/// One comparator: its operator and (possibly partial) version.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Comparator {
    op: Op,
    major: u64,
    minor: u64,
    patch: u64,
    pre: Prerelease,
    /// `*` / `x` alone: any version.
    any: bool,
    /// The minor part was missing or a wildcard (`1`, `1.x`).
    minor_dirty: bool,
    /// The patch part was missing or a wildcard (`1.2`, `1.2.x`).
    patch_dirty: bool,
}

/// A parsed range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemverRange {
    /// Alternatives (`||`), each a conjunction of comparators.
    alternatives: Vec<Vec<Comparator>>,
}

impl SemverRange {
    /// Parses `text` with Masterminds v3's syntax.
    pub fn parse(text: &str) -> Result<Self, RangeError> {
        if text.len() > MAX_RANGE_LEN {
            return Err(RangeError::TooLong);
        }
        if text.trim().is_empty() {
            return Err(RangeError::Empty);
        }
        let alternatives = text
            .split("||")
            .map(parse_conjunction)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { alternatives })
    }

    /// True if `version` satisfies the range.
    pub fn matches(&self, version: &Version) -> bool {
        self.alternatives
            .iter()
            .any(|all| all.iter().all(|c| c.matches(version)))
    }

    /// True if `tag` is a version (see [`parse_tag`]) that satisfies the range.
    pub fn matches_tag(&self, tag: &str) -> bool {
        parse_tag(tag).is_some_and(|version| self.matches(&version))
    }
}

/// A tag as a version, the way Flux reads OCI and Git tags: strict semver with an optional
/// leading `v`.
pub fn parse_tag(tag: &str) -> Option<Version> {
    Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

/// Operators, longest first so `>=` is not read as `>`.
const OPERATORS: [(&str, Op); 12] = [
    (">=", Op::GreaterOrEqual),
    ("=>", Op::GreaterOrEqual),
    ("<=", Op::LessOrEqual),
    ("=<", Op::LessOrEqual),
    ("!=", Op::NotEqual),
    ("~>", Op::Tilde),
    (">", Op::Greater),
    ("<", Op::Less),
    ("=", Op::Equal),
    ("~", Op::Tilde),
    ("^", Op::Caret),
    ("", Op::Equal),
];

fn parse_conjunction(text: &str) -> Result<Vec<Comparator>, RangeError> {
    // Tokens split on commas and whitespace; an operator standing alone joins the next
    // token (`>= 1.2`); `a - b` is a hyphen range.
    let raw: Vec<&str> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .collect();
    if raw.is_empty() {
        return Err(RangeError::Empty);
    }
    let mut tokens: Vec<String> = Vec::with_capacity(raw.len());
    let mut index = 0;
    while index < raw.len() {
        let token = raw[index];
        let is_operator = OPERATORS
            .iter()
            .any(|(op, _)| !op.is_empty() && *op == token);
        if is_operator {
            let next = raw
                .get(index + 1)
                .ok_or_else(|| RangeError::Comparator(token.to_owned()))?;
            tokens.push(format!("{token}{next}"));
            index += 2;
        } else {
            tokens.push(token.to_owned());
            index += 1;
        }
    }
    let mut comparators = Vec::new();
    let mut index = 0;
    while index < tokens.len() {
        if tokens.get(index + 1).is_some_and(|t| t == "-") {
            let high = tokens
                .get(index + 2)
                .ok_or_else(|| RangeError::Comparator(tokens[index..].join(" ")))?;
            comparators.push(comparator(&format!(">={}", tokens[index]))?);
            comparators.push(comparator(&format!("<={high}"))?);
            index += 3;
        } else {
            comparators.push(comparator(&tokens[index])?);
            index += 1;
        }
    }
    Ok(comparators)
}

fn comparator(token: &str) -> Result<Comparator, RangeError> {
    let bad = || RangeError::Comparator(token.to_owned());
    let (op, rest) = OPERATORS
        .iter()
        .find_map(|(text, op)| token.strip_prefix(text).map(|rest| (*op, rest)))
        .ok_or_else(bad)?;
    let rest = rest.strip_prefix('v').unwrap_or(rest);
    // Build metadata never counts.
    let rest = rest.split_once('+').map_or(rest, |(version, _)| version);
    let (numbers, pre) = match rest.split_once('-') {
        Some((numbers, pre)) => (numbers, Prerelease::new(pre).map_err(|_| bad())?),
        None => (rest, Prerelease::EMPTY),
    };
    let parts: Vec<&str> = numbers.split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return Err(bad());
    }
    let wildcard = |part: &str| matches!(part, "x" | "X" | "*");
    let number = |part: &str| -> Result<u64, RangeError> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    let mut values = [0u64; 3];
    let mut dirty_from = parts.len();
    for (position, part) in parts.iter().enumerate() {
        if wildcard(part) {
            dirty_from = dirty_from.min(position);
        } else if position > dirty_from {
            // `1.x.3`: a number after a wildcard.
            return Err(bad());
        } else {
            values[position] = number(part)?;
        }
    }
    if dirty_from < 3 && !pre.is_empty() {
        return Err(bad());
    }
    Ok(Comparator {
        op,
        major: values[0],
        minor: values[1],
        patch: values[2],
        pre,
        any: dirty_from == 0,
        minor_dirty: dirty_from <= 1,
        patch_dirty: dirty_from <= 2,
    })
}

impl Comparator {
    /// The comparator's version with missing parts as zero.
    fn floor(&self) -> Version {
        Version {
            major: self.major,
            minor: self.minor,
            patch: self.patch,
            pre: self.pre.clone(),
            build: semver::BuildMetadata::EMPTY,
        }
    }

    fn dirty(&self) -> bool {
        self.minor_dirty || self.patch_dirty
    }

    fn matches(&self, v: &Version) -> bool {
        if !v.pre.is_empty() && self.pre.is_empty() {
            return false;
        }
        let floor = self.floor();
        let compared = precedence(v, &floor);
        match self.op {
            Op::Equal if self.any => true,
            Op::NotEqual if self.any => false,
            Op::Equal => {
                if self.dirty() {
                    self.within_wildcard(v)
                } else {
                    compared == Ordering::Equal
                }
            }
            Op::NotEqual => {
                if self.dirty() {
                    !self.within_wildcard(v)
                } else {
                    compared != Ordering::Equal
                }
            }
            Op::Greater => {
                if !self.dirty() {
                    compared == Ordering::Greater
                } else if v.major != self.major {
                    v.major > self.major
                } else if self.minor_dirty {
                    false
                } else {
                    v.minor > self.minor
                }
            }
            Op::Less => compared == Ordering::Less,
            Op::GreaterOrEqual => compared != Ordering::Less,
            Op::LessOrEqual => {
                if !self.dirty() {
                    compared != Ordering::Greater
                } else if v.major != self.major {
                    v.major < self.major
                } else if self.minor_dirty {
                    true
                } else {
                    v.minor <= self.minor
                }
            }
            Op::Tilde => {
                if compared == Ordering::Less {
                    return false;
                }
                if self.major == 0 && self.minor == 0 && self.patch == 0 && !self.dirty() {
                    return true;
                }
                v.major == self.major && (self.minor_dirty || v.minor == self.minor)
            }
            Op::Caret => {
                if compared == Ordering::Less {
                    return false;
                }
                if self.major > 0 || self.minor_dirty {
                    v.major == self.major
                } else if self.minor > 0 || self.patch_dirty {
                    v.major == 0 && v.minor == self.minor
                } else {
                    v.major == 0 && v.minor == 0 && v.patch == self.patch
                }
            }
        }
    }

    /// `1.2.x`: the parts given are equal.
    fn within_wildcard(&self, v: &Version) -> bool {
        v.major == self.major && (self.minor_dirty || v.minor == self.minor)
    }
}

/// Semver precedence: build metadata ignored.
fn precedence(a: &Version, b: &Version) -> Ordering {
    (a.major, a.minor, a.patch, &a.pre).cmp(&(b.major, b.minor, b.patch, &b.pre))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (range, tag, satisfied)
    const CASES: &[(&str, &str, bool)] = &[
        // Plain comparators, AND by space or comma.
        (">=1.0.0 <2.0.0", "1.0.0", true),
        (">=1.0.0 <2.0.0", "1.9.9", true),
        (">=1.0.0 <2.0.0", "2.0.0", false),
        (">=1.0.0 <2.0.0", "0.9.0", false),
        (">=1.0.0, <2.0.0", "1.5.0", true),
        (">= 1.0, < 2", "1.5.0", true),
        (">= 1.0, < 2", "2.0.0", false),
        ("=>1.2.3", "1.2.3", true),
        ("=<1.2.3", "1.2.4", false),
        ("!=1.2.3", "1.2.3", false),
        ("!=1.2.3", "1.2.4", true),
        ("!=1.2", "1.2.9", false),
        ("!=1.2", "1.3.0", true),
        (">1.2.3", "1.2.3", false),
        (">1.2.3", "1.2.4", true),
        // Partial versions, Masterminds' way.
        (">1.2", "1.2.9", false),
        (">1.2", "1.3.0", true),
        (">1", "1.9.0", false),
        (">1", "2.0.0", true),
        ("<1.2", "1.1.9", true),
        ("<1.2", "1.2.0", false),
        ("<=1.2", "1.2.9", true),
        ("<=1.2", "1.3.0", false),
        ("<=1", "1.9.0", true),
        ("1.2", "1.2.7", true),
        ("1.2", "1.3.0", false),
        ("=1.2.3", "1.2.3", true),
        ("1.2.3", "1.2.4", false),
        // Wildcards.
        ("*", "9.9.9", true),
        ("x", "0.0.1", true),
        ("1.x", "1.4.0", true),
        ("1.x", "2.0.0", false),
        ("1.2.*", "1.2.5", true),
        ("1.2.X", "1.3.0", false),
        // Tilde.
        ("~1.2.3", "1.2.3", true),
        ("~1.2.3", "1.2.9", true),
        ("~1.2.3", "1.3.0", false),
        ("~1.2.3", "1.2.2", false),
        ("~1.2", "1.2.0", true),
        ("~1.2", "1.3.0", false),
        ("~1", "1.9.9", true),
        ("~1", "2.0.0", false),
        ("~>1.2", "1.2.5", true),
        ("~0.0.0", "3.0.0", true),
        // Caret.
        ("^1.0", "1.9.0", true),
        ("^1.0", "2.0.0", false),
        ("^1.2.3", "1.2.2", false),
        ("^0.2.3", "0.2.9", true),
        ("^0.2.3", "0.3.0", false),
        ("^0.2.3", "1.2.3", false),
        ("^0.0.3", "0.0.3", true),
        ("^0.0.3", "0.0.4", false),
        ("^0.0", "0.0.9", true),
        ("^0.0", "0.1.0", false),
        // OR.
        ("<1.0.0 || >=3.0.0", "0.5.0", true),
        ("<1.0.0 || >=3.0.0", "2.0.0", false),
        ("<1.0.0 || >=3.0.0", "3.1.0", true),
        ("1.x || 3.x, !=3.1.0", "3.1.0", false),
        // Hyphen ranges.
        ("1.2 - 1.4.5", "1.2.0", true),
        ("1.2 - 1.4.5", "1.4.5", true),
        ("1.2 - 1.4.5", "1.4.6", false),
        ("1.2 - 1.4", "1.4.9", true),
        // Leading v on either side.
        ("v1.x", "1.0.0", true),
        (">=1.0.0", "v1.2.0", true),
        // Pre-releases only for comparators that name one.
        (">=1.0.0", "1.1.0-rc.1", false),
        ("*", "1.0.0-alpha", false),
        (">=1.0.0-rc.1", "1.0.0-rc.2", true),
        (">=1.0.0-rc.1", "1.0.0-rc.0", false),
        (">=1.0.0-rc.1", "1.0.0", true),
        (">=1.0.0-rc.10", "1.0.0-rc.9", false),
        // Build metadata is ignored.
        ("=1.0.0", "1.0.0+build.5", true),
        ("=1.0.0+other", "1.0.0", true),
        // Tags that are not strict versions satisfy nothing.
        ("*", "latest", false),
        ("*", "1.2", false),
        ("*", "V1.2.3", false),
        ("*", "01.2.3", false),
    ];

    #[test]
    fn flux_ranges_match_tags_like_masterminds() {
        for (range, tag, expected) in CASES {
            let parsed = SemverRange::parse(range).unwrap_or_else(|e| panic!("{range}: {e}"));
            assert_eq!(parsed.matches_tag(tag), *expected, "{range} vs {tag}");
        }
    }

    #[test]
    fn malformed_ranges_are_refused() {
        for range in [
            "", "   ", "||", ">=", "1.2.3.4", "a.b", ">=1.0 ||", "1.x.3", "1.x-rc", "1 -", "~>",
            "1.-2", ">=>1",
        ] {
            assert!(SemverRange::parse(range).is_err(), "{range:?}");
        }
        assert_eq!(
            SemverRange::parse(&"1".repeat(MAX_RANGE_LEN + 1)),
            Err(RangeError::TooLong)
        );
    }

    #[test]
    fn tags_parse_strictly_with_an_optional_v() {
        assert_eq!(parse_tag("v1.2.3"), Some(Version::new(1, 2, 3)));
        assert_eq!(parse_tag("1.2.3"), Some(Version::new(1, 2, 3)));
        assert!(parse_tag("1.2").is_none());
        assert!(parse_tag("vv1.2.3").is_none());
        assert!(parse_tag("latest").is_none());
    }
}
