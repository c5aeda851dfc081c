//! Git's ref-name rules, as `git check-ref-format <refname>` applies them with no options
//! (git's `check_refname_format` in `refs.c`, flags 0).
//!
//! A ref name is one or more `/`-separated components. It is refused when:
//! - it is `@`, or ends with `.`;
//! - a component is empty (`//`, a leading or trailing `/`), starts with `.`, or ends with
//!   `.lock`;
//! - it contains `..` or `@{`;
//! - it contains a byte below 0x20, DEL (0x7f), space, `~`, `^`, `:`, `?`, `*`, `[` or `\`;
//! - it has a single component (git's default without `--allow-onelevel`).
//!
//! Bytes from 0x80 up are allowed, as git allows them (`heads/fuß` is valid).

/// Which rule a ref name breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefFormatError {
    #[error("it has an empty component (`//`, or a leading or trailing `/`)")]
    EmptyComponent,
    #[error("a component starts with `.`")]
    ComponentStartsWithDot,
    #[error("a component ends with `.lock`")]
    ComponentEndsWithLock,
    #[error("it contains `..`")]
    DoubleDot,
    #[error("it contains `@{{`")]
    AtBrace,
    #[error(
        "it contains a control character, a space, or one of `~`, `^`, `:`, `?`, `*`, `[`, `\\`"
    )]
    ForbiddenCharacter,
    #[error("it ends with `.`")]
    EndsWithDot,
    #[error("it is `@`")]
    SingleAt,
    #[error("it has a single component")]
    OneLevel,
    #[error("it is not a full ref under `refs/` (such as `refs/heads/main` or `refs/tags/v1`)")]
    NotFullRef,
}

/// How git treats each byte inside a component (git's `refname_disposition`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Disposition {
    Ordinary,
    /// `/`: ends the component.
    Slash,
    /// `.`: refused after another `.`.
    Dot,
    /// `{`: refused after `@`.
    Brace,
    /// Never allowed.
    Forbidden,
}

fn disposition(byte: u8) -> Disposition {
    match byte {
        b'/' => Disposition::Slash,
        b'.' => Disposition::Dot,
        b'{' => Disposition::Brace,
        0x00..=0x1f | 0x7f | b' ' | b'~' | b'^' | b':' | b'?' | b'*' | b'[' | b'\\' => {
            Disposition::Forbidden
        }
        _ => Disposition::Ordinary,
    }
}

/// Checks `name` as `git check-ref-format` does (no options).
pub fn check_ref_format(name: &str) -> Result<(), RefFormatError> {
    if name == "@" {
        return Err(RefFormatError::SingleAt);
    }
    let bytes = name.as_bytes();
    let mut start = 0;
    let mut components = 0;
    loop {
        let length = component_length(&bytes[start..])?;
        components += 1;
        let end = start + length;
        if end == bytes.len() {
            break;
        }
        start = end + 1;
    }
    if bytes.last() == Some(&b'.') {
        return Err(RefFormatError::EndsWithDot);
    }
    if components < 2 {
        return Err(RefFormatError::OneLevel);
    }
    Ok(())
}

/// The length of the component at the start of `rest` (up to the next `/` or the end),
/// or the rule it breaks.
fn component_length(rest: &[u8]) -> Result<usize, RefFormatError> {
    let mut last = 0u8;
    let mut length = rest.len();
    for (index, &byte) in rest.iter().enumerate() {
        match disposition(byte) {
            Disposition::Slash => {
                length = index;
                break;
            }
            Disposition::Dot if last == b'.' => return Err(RefFormatError::DoubleDot),
            Disposition::Brace if last == b'@' => return Err(RefFormatError::AtBrace),
            Disposition::Forbidden => return Err(RefFormatError::ForbiddenCharacter),
            _ => {}
        }
        last = byte;
    }
    let component = &rest[..length];
    if component.is_empty() {
        return Err(RefFormatError::EmptyComponent);
    }
    if component[0] == b'.' {
        return Err(RefFormatError::ComponentStartsWithDot);
    }
    if component.ends_with(b".lock") {
        return Err(RefFormatError::ComponentEndsWithLock);
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `git check-ref-format <name>` (no options) in git's own `t/t1402-check-ref-format.sh`:
    /// every case there that runs without options, with its expected outcome.
    const GIT_T1402: &[(&str, bool)] = &[
        ("", false),
        ("/", false),
        ("foo/bar/baz", true),
        ("refs///heads/foo", false),
        ("heads/foo/", false),
        ("/heads/foo", false),
        ("///heads/foo", false),
        ("./foo", false),
        ("./foo/bar", false),
        ("foo/./bar", false),
        ("foo/bar/.", false),
        (".refs/foo", false),
        ("refs/heads/foo.", false),
        ("heads/foo..bar", false),
        ("heads/foo?bar", false),
        ("foo./bar", true),
        ("heads/foo.lock", false),
        ("heads///foo.lock", false),
        ("foo.lock/bar", false),
        ("foo.lock///bar", false),
        ("heads/foo@bar", true),
        ("heads/v@{ation", false),
        ("heads/foo\\bar", false),
        ("heads/foo\t", false),
        ("heads/foo\u{7f}", false),
        ("heads/fu\u{df}", true),
        ("foo", false),
        ("foo/bar", true),
        ("foo/*", false),
        ("*/foo", false),
        ("foo/*/bar", false),
        ("*", false),
        ("/foo", false),
    ];

    #[test]
    fn agrees_with_git_t1402() {
        for (name, valid) in GIT_T1402 {
            assert_eq!(
                check_ref_format(name).is_ok(),
                *valid,
                "{name:?}: {:?}",
                check_ref_format(name)
            );
        }
    }

    #[test]
    fn names_the_rule_broken() {
        let cases = [
            ("@", RefFormatError::SingleAt),
            ("refs/heads/a//b", RefFormatError::EmptyComponent),
            ("refs/heads/.a", RefFormatError::ComponentStartsWithDot),
            ("refs/heads/a.lock/b", RefFormatError::ComponentEndsWithLock),
            ("refs/heads/../x", RefFormatError::DoubleDot),
            ("refs/heads/a@{1}", RefFormatError::AtBrace),
            ("refs/heads/a b", RefFormatError::ForbiddenCharacter),
            ("refs/heads/a~1", RefFormatError::ForbiddenCharacter),
            ("refs/heads/a^", RefFormatError::ForbiddenCharacter),
            ("refs/heads/a:b", RefFormatError::ForbiddenCharacter),
            ("refs/heads/[a", RefFormatError::ForbiddenCharacter),
            ("refs/heads/a\0", RefFormatError::ForbiddenCharacter),
            ("refs/heads/a.", RefFormatError::EndsWithDot),
            ("HEAD", RefFormatError::OneLevel),
        ];
        for (name, rule) in cases {
            assert_eq!(check_ref_format(name), Err(rule), "{name:?}");
        }
        // `@` is fine anywhere but alone or before `{`; a `.` inside a component too.
        assert!(check_ref_format("refs/heads/@").is_ok());
        assert!(check_ref_format("refs/tags/v1.2.3").is_ok());
        assert!(check_ref_format("refs/heads/a.lockb").is_ok());
    }
}
