//! Log fields that carry client input, bounded: a hook's kind, a refusal message that
//! quotes the body, a request path. Each is cut to a fixed number of characters with a
//! marker saying how long it was, and control characters are escaped, so that no client
//! can make one log line long or split it in two.

use std::fmt;

/// Characters of client input kept in one log field.
pub const MAX_LOG_FIELD_CHARS: usize = 256;

/// `text` for a log field: at most [`MAX_LOG_FIELD_CHARS`] characters (control characters
/// escaped), then `…[N bytes]` if it was longer.
pub fn bounded(text: &str) -> Bounded<'_> {
    Bounded {
        text,
        max_chars: MAX_LOG_FIELD_CHARS,
    }
}

/// A bounded view of client input; see [`bounded`].
#[derive(Debug, Clone, Copy)]
pub struct Bounded<'a> {
    text: &'a str,
    max_chars: usize,
}

impl Bounded<'_> {
    pub fn with_max_chars(self, max_chars: usize) -> Self {
        Self { max_chars, ..self }
    }
}

impl fmt::Display for Bounded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (written, c) in self.text.chars().enumerate() {
            if written >= self.max_chars {
                return write!(f, "…[{} bytes]", self.text.len());
            }
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept() {
        assert_eq!(bounded("refs/heads/main").to_string(), "refs/heads/main");
    }

    #[test]
    fn long_text_is_cut_with_its_length() {
        let long = "é".repeat(1000);
        let shown = bounded(&long).to_string();
        assert_eq!(
            shown,
            format!("{}…[2000 bytes]", "é".repeat(MAX_LOG_FIELD_CHARS))
        );
        assert_eq!(
            bounded("abcdef").with_max_chars(3).to_string(),
            "abc…[6 bytes]"
        );
    }

    #[test]
    fn control_characters_cannot_split_a_line() {
        assert_eq!(bounded("a\nb\r\u{1b}").to_string(), "a\\nb\\r\\u{1b}");
    }
}
