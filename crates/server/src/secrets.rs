//! Secrets from files: hook secrets and the admin token. Never logged.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use rand::RngExt as _;

use crate::config::Config;

/// Shortest admin token accepted.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Where the broker keeps a hook secret it generated.
pub fn generated_hook_secret_path(config: &Config) -> PathBuf {
    config.data_dir.join("hook-secret")
}

/// The hook secrets: configured ones, those in `hook_secret_file`, or, on the embedded
/// default with none configured, one generated once in the data directory.
pub fn hook_secrets(config: &Config) -> anyhow::Result<Vec<String>> {
    let mut secrets = config.hook_secret.clone();
    if let Some(file) = &config.hook_secret_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the hook secret file {}", file.display()))?;
        secrets.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    if !secrets.is_empty() {
        return Ok(secrets);
    }
    if !config.uses_embedded_database() {
        bail!(
            "no hook secret: with a shared database every replica needs the same --hook-secret or --hook-secret-file"
        );
    }
    let path = generated_hook_secret_path(config);
    if path.exists() {
        let secret = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return Ok(vec![secret.trim().to_owned()]);
    }
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let bytes: [u8; 24] = rand::rng().random();
    let secret = hex::encode(bytes);
    write_private(&path, &secret)?;
    tracing::warn!(path = %path.display(), "no hook secret configured; generated one (use it as the GitLab hook's secret token)");
    Ok(vec![secret])
}

/// The admin API token, if a token file is configured.
pub fn admin_token(config: &Config) -> anyhow::Result<Option<String>> {
    let Some(file) = &config.admin_token_file else {
        return Ok(None);
    };
    let token = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the admin token file {}", file.display()))?
        .trim()
        .to_owned();
    if token.len() < MIN_ADMIN_TOKEN_LEN {
        bail!(
            "the admin token in {} is shorter than {MIN_ADMIN_TOKEN_LEN} characters",
            file.display()
        );
    }
    Ok(Some(token))
}

/// Creates `path` readable by its owner only.
fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{content}").with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(dir: &Path) -> Config {
        Config {
            data_dir: dir.to_owned(),
            ..Config::default()
        }
    }

    #[test]
    fn a_hook_secret_is_generated_once_on_the_embedded_default() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(&dir.path().join("not-yet-created"));
        let first = hook_secrets(&config).unwrap();
        let second = hook_secrets(&config).unwrap();
        assert_eq!(first, second);
        assert_eq!(first[0].len(), 48);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(generated_hook_secret_path(&config))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn configured_secrets_and_files_are_combined() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets");
        std::fs::write(&file, "one\n\n two \n").unwrap();
        let config = Config {
            hook_secret: vec!["flag".into()],
            hook_secret_file: Some(file),
            ..config_in(dir.path())
        };
        assert_eq!(hook_secrets(&config).unwrap(), vec!["flag", "one", "two"]);
        assert!(!generated_hook_secret_path(&config).exists());
    }

    #[test]
    fn a_shared_database_needs_explicit_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            database_url: Some("postgres://db/fluxgate".into()),
            ..config_in(dir.path())
        };
        let err = hook_secrets(&config).unwrap_err().to_string();
        assert!(err.contains("every replica needs the same"), "{err}");
    }

    #[test]
    fn short_admin_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin");
        std::fs::write(&file, "short\n").unwrap();
        let config = Config {
            admin_token_file: Some(file),
            ..config_in(dir.path())
        };
        assert!(
            admin_token(&config)
                .unwrap_err()
                .to_string()
                .contains("shorter than 16")
        );
    }
}
