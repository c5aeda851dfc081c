//! The secret GitLab Rails and KAS share (`gitlab_kas.secret_file` in Rails,
//! `api.listen.authentication_secret_file` in KAS): a file holding the Base64 of exactly
//! 32 random bytes. The decoded bytes are the HMAC key of Rails' JWTs.

use std::path::{Path, PathBuf};

use base64::Engine as _;

/// The length Rails requires (`Gitlab::Kas::SECRET_LENGTH`).
pub const SECRET_LEN: usize = 32;
/// Largest file read: the Base64 of 32 bytes is 44 characters.
const MAX_FILE_LEN: u64 = 1024;

/// Why the KAS secret cannot be used; each stops the broker at start.
#[derive(Debug, thiserror::Error)]
pub enum KasSecretError {
    #[error("cannot read the KAS secret file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the KAS secret file {path} is larger than {MAX_FILE_LEN} bytes; it must hold the Base64 of 32 bytes"
    )]
    TooLarge { path: PathBuf },
    #[error(
        "the KAS secret file {path} is not Base64 (standard alphabet): {source}; it must hold the Base64 of 32 bytes, as GitLab's .gitlab_kas_secret does"
    )]
    NotBase64 {
        path: PathBuf,
        source: base64::DecodeError,
    },
    #[error(
        "the KAS secret file {path} decodes to {len} bytes; it must be the Base64 of exactly {SECRET_LEN} bytes, as GitLab's .gitlab_kas_secret is"
    )]
    WrongLength { path: PathBuf, len: usize },
}

/// The 32-byte shared secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct KasSecret([u8; SECRET_LEN]);

impl std::fmt::Debug for KasSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KasSecret(…)")
    }
}

impl KasSecret {
    /// The secret from its bytes (tests, and the Rails-like client).
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Self(bytes)
    }

    /// Reads `path`: Base64 (standard alphabet, padded) of exactly 32 bytes; white space
    /// around it is ignored. Warns if the file is readable by its group or others.
    pub fn load(path: &Path) -> Result<Self, KasSecretError> {
        let read_error = |source| KasSecretError::Read {
            path: path.to_owned(),
            source,
        };
        let metadata = std::fs::metadata(path).map_err(read_error)?;
        if metadata.len() > MAX_FILE_LEN {
            return Err(KasSecretError::TooLarge {
                path: path.to_owned(),
            });
        }
        warn_if_readable_by_others(path, &metadata);
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Self::parse(text.trim()).map_err(|err| match err {
            ParseError::NotBase64(source) => KasSecretError::NotBase64 {
                path: path.to_owned(),
                source,
            },
            ParseError::WrongLength(len) => KasSecretError::WrongLength {
                path: path.to_owned(),
                len,
            },
        })
    }

    fn parse(encoded: &str) -> Result<Self, ParseError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(ParseError::NotBase64)?;
        let bytes: [u8; SECRET_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| ParseError::WrongLength(bytes.len()))?;
        Ok(Self(bytes))
    }

    /// The HMAC key.
    pub(crate) fn key(&self) -> &[u8] {
        &self.0
    }
}

enum ParseError {
    NotBase64(base64::DecodeError),
    WrongLength(usize),
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path, metadata: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:o}"),
            "the KAS secret file is readable by its group or others; make it 0600"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path, _metadata: &std::fs::Metadata) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), content).unwrap();
        file
    }

    #[test]
    fn the_base64_of_32_bytes_with_a_newline_loads() {
        let encoded = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let secret = KasSecret::load(file(&format!("{encoded}\n")).path()).unwrap();
        assert_eq!(secret.key(), &[7u8; 32]);
        assert_eq!(format!("{secret:?}"), "KasSecret(…)");
    }

    #[test]
    fn other_lengths_and_text_are_refused_with_the_reason() {
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let err = KasSecret::load(file(&short).path()).unwrap_err();
        assert!(
            matches!(err, KasSecretError::WrongLength { len: 16, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("decodes to 16 bytes"), "{err}");
        let err = KasSecret::load(file("not base64 at all!").path()).unwrap_err();
        assert!(matches!(err, KasSecretError::NotBase64 { .. }), "{err}");
        let err = KasSecret::load(Path::new("/nonexistent/kas-secret")).unwrap_err();
        assert!(matches!(err, KasSecretError::Read { .. }), "{err}");
        let err = KasSecret::load(file(&"A".repeat(2000)).path()).unwrap_err();
        assert!(matches!(err, KasSecretError::TooLarge { .. }), "{err}");
    }
}
