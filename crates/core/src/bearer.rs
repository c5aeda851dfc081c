//! The `Authorization: Bearer <token>` credential (RFC 6750), read and written in one
//! place: the admin API's header, the agent stream's gRPC metadata, and the agent that
//! sends it.
//!
//! The rule is strict so that a credential is either plainly right or refused: the scheme
//! is `Bearer` in any case, then exactly one space, then a token of visible ASCII
//! characters (no white space, no control characters, nothing outside ASCII). Nothing is
//! trimmed. The token alphabet is wider than RFC 6750's `token68` because the admin token
//! is chosen by the operator; agent tokens (`fgat_` + base64url) fit either.

/// The scheme, as written on the wire.
pub const SCHEME: &str = "Bearer";

/// Why a credential is not a usable bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    #[error("the credential is not `Bearer <token>`")]
    NotBearer,
    #[error("the bearer token is empty")]
    Empty,
    #[error("the bearer token has characters other than visible ASCII")]
    InvalidToken,
}

/// The token of an `Authorization` value `Bearer <token>`.
pub fn parse(value: &str) -> Result<&str, BearerError> {
    let (scheme, token) = value.split_once(' ').ok_or(BearerError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return Err(BearerError::NotBearer);
    }
    check_token(token)?;
    Ok(token)
}

/// Whether `token` can be sent, and read back, as a bearer token.
pub fn check_token(token: &str) -> Result<(), BearerError> {
    if token.is_empty() {
        return Err(BearerError::Empty);
    }
    if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(BearerError::InvalidToken);
    }
    Ok(())
}

/// The `Authorization` value that carries `token`.
pub fn header_value(token: &str) -> String {
    format!("{SCHEME} {token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_case_insensitive() {
        for value in ["Bearer fgat_abc", "bearer fgat_abc", "BEARER fgat_abc"] {
            assert_eq!(parse(value), Ok("fgat_abc"), "{value}");
        }
    }

    #[test]
    fn tokens_keep_every_visible_character() {
        assert_eq!(
            parse("Bearer a-b.c_d~e+f/g=h!@#$%^&*()"),
            Ok("a-b.c_d~e+f/g=h!@#$%^&*()")
        );
        assert_eq!(parse("Bearer x"), Ok("x"));
    }

    #[test]
    fn other_schemes_and_missing_separators_are_refused() {
        for value in [
            "",
            "Bearer",
            "fgat_abc",
            "Basic fgat_abc",
            "Bearerfgat_abc",
            "Bearer:fgat_abc",
            "Bearer\tfgat_abc",
            " Bearer fgat_abc",
            "Bear fgat_abc",
            "Bearers fgat_abc",
        ] {
            assert_eq!(parse(value), Err(BearerError::NotBearer), "{value:?}");
        }
    }

    #[test]
    fn empty_tokens_are_refused() {
        assert_eq!(parse("Bearer "), Err(BearerError::Empty));
        assert_eq!(check_token(""), Err(BearerError::Empty));
    }

    #[test]
    fn exactly_one_space_and_nothing_trimmed() {
        for value in [
            "Bearer  fgat_abc",
            "Bearer fgat_abc ",
            "Bearer   ",
            "Bearer fgat abc",
            "Bearer fgat_abc\n",
            "Bearer fgat\u{0}abc",
            "Bearer fgat_\u{e9}",
            "Bearer \u{a0}fgat_abc",
        ] {
            assert_eq!(parse(value), Err(BearerError::InvalidToken), "{value:?}");
        }
    }

    #[test]
    fn what_is_written_is_read_back() {
        let token = "fgat_0123456789-_abcXYZ";
        assert_eq!(header_value(token), "Bearer fgat_0123456789-_abcXYZ");
        assert_eq!(parse(&header_value(token)), Ok(token));
    }
}
