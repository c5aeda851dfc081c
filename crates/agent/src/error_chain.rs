//! Errors on one line with their causes (transport errors say little on their own).

use std::error::Error;

/// `head: cause: cause of the cause…` for every source of `error`.
pub fn with_causes(head: &str, error: &dyn Error) -> String {
    let mut text = head.to_owned();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// The error's own message followed by its causes.
pub fn describe(error: &dyn Error) -> String {
    with_causes(&error.to_string(), error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_are_joined() {
        let error = Outer(std::io::Error::other("inner"));
        assert_eq!(describe(&error), "outer: inner");
        assert_eq!(
            with_causes("request failed", &error),
            "request failed: inner"
        );
    }
}
