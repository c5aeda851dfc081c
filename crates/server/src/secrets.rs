//! Hook credentials (secrets and signing tokens) and the admin token, from the
//! configuration and files. Each is validated at start-up; none is ever logged.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use fluxgate_core::bearer;
use fluxgate_ingest::hooks::{
    CredentialError, HookAuth, HookSecret, HookSecrets, SignaturePolicy, SigningKey,
};
use rand::RngExt as _;

use crate::config::Config;
use crate::data_dir;

/// Shortest admin token accepted.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Where the broker keeps a hook secret it generated.
pub fn generated_hook_secret_path(config: &Config) -> PathBuf {
    config.data_dir.join("hook-secret")
}

/// Warns about each secret given as a command-line flag: any local user can read it
/// with `ps`, and it lands in shell histories.
pub fn warn_about_command_line(flags: &[&str]) {
    for flag in flags {
        let key = flag.trim_start_matches('-').replace('-', "_");
        tracing::warn!(
            flag,
            "a secret was given on the command line, where other local users can read it \
             (ps, /proc); use --{}-file or FLUXGATE_{} instead",
            flag.trim_start_matches('-'),
            key.to_uppercase()
        );
    }
}

/// Who may post hooks: the configured hook secrets and signing tokens, each checked, and
/// the signature policy. On the embedded default with neither configured, a hook secret
/// is generated once in the data directory.
pub fn hook_auth(config: &Config) -> anyhow::Result<HookAuth> {
    let mut secrets = configured(
        &config.hook_secret,
        config.hook_secret_file.as_deref(),
        "hook_secret",
        "hook secret",
        HookSecret::new,
    )?;
    let signing_keys = configured(
        &config.hook_signing_token,
        config.hook_signing_token_file.as_deref(),
        "hook_signing_token",
        "signing token",
        SigningKey::parse,
    )?;
    if secrets.is_empty() && signing_keys.is_empty() {
        secrets.push(generated_hook_secret(config)?);
    }
    let policy = SignaturePolicy {
        required: config.hook_signature_required,
        tolerance: config.hook_signature_tolerance,
    };
    Ok(HookAuth::new(
        HookSecrets::new(secrets),
        signing_keys,
        policy,
    )?)
}

/// The values of a list key and of its file (one per line, blank lines skipped), each
/// parsed by `parse`; an error says which one (by position, never by content).
fn configured<T>(
    values: &[String],
    file: Option<&Path>,
    key: &str,
    what: &str,
    parse: impl Fn(&str) -> Result<T, CredentialError>,
) -> anyhow::Result<Vec<T>> {
    let mut parsed = Vec::new();
    for (index, value) in values.iter().enumerate() {
        let item = parse(value).with_context(|| {
            format!(
                "{what} #{} of `{key}` (--{}, FLUXGATE_{} or the config file) is refused",
                index + 1,
                key.replace('_', "-"),
                key.to_uppercase()
            )
        })?;
        parsed.push(item);
    }
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the {what} file {}", file.display()))?;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let item = parse(line).with_context(|| {
                format!(
                    "the {what} on line {} of {} is refused",
                    number + 1,
                    file.display()
                )
            })?;
            parsed.push(item);
        }
    }
    Ok(parsed)
}

/// The hook secret generated in the data directory (created on first use).
fn generated_hook_secret(config: &Config) -> anyhow::Result<HookSecret> {
    if !config.uses_embedded_database() {
        bail!(
            "no hook secret: with a shared database every replica needs the same \
             --hook-secret-file (or --hook-signing-token-file)"
        );
    }
    let path = generated_hook_secret_path(config);
    data_dir::create_private_dir(&config.data_dir)?;
    let secret = if path.exists() {
        data_dir::tighten_file(&path)?;
        std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .trim()
            .to_owned()
    } else {
        let bytes: [u8; 24] = rand::rng().random();
        let secret = hex::encode(bytes);
        write_private(&path, &secret)?;
        tracing::warn!(path = %path.display(), "no hook secret configured; generated one (use it as the GitLab hook's secret token)");
        secret
    };
    HookSecret::new(&secret)
        .with_context(|| format!("the hook secret in {} is refused", path.display()))
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
    if bearer::check_token(&token).is_err() {
        bail!(
            "the admin token in {} has characters other than visible ASCII, so it cannot be \
             sent as `Authorization: Bearer <token>`",
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

    const SECRET: &str = "a-secret-long-enough";
    const TOKEN: &str = "whsec_KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

    fn config_in(dir: &Path) -> Config {
        Config {
            data_dir: dir.to_owned(),
            ..Config::default()
        }
    }

    fn error_chain(err: &anyhow::Error) -> String {
        format!("{err:#}")
    }

    #[test]
    fn a_hook_secret_is_generated_once_on_the_embedded_default() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(&dir.path().join("not-yet-created"));
        hook_auth(&config).unwrap();
        let first = std::fs::read_to_string(generated_hook_secret_path(&config)).unwrap();
        hook_auth(&config).unwrap();
        let second = std::fs::read_to_string(generated_hook_secret_path(&config)).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.trim().len(), 48);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&generated_hook_secret_path(&config)), 0o600);
            assert_eq!(mode(&config.data_dir), 0o700);
        }
    }

    #[test]
    fn configured_secrets_and_files_are_combined() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets");
        std::fs::write(
            &file,
            "one-secret-long-enough\n\n two-secret-long-enough \n",
        )
        .unwrap();
        let config = Config {
            hook_secret: vec![SECRET.into()],
            hook_secret_file: Some(file),
            ..config_in(dir.path())
        };
        let auth = hook_auth(&config).unwrap();
        assert_eq!(
            format!("{auth:?}")
                .matches("HookSecrets(3 configured)")
                .count(),
            1
        );
        assert!(!generated_hook_secret_path(&config).exists());
    }

    #[test]
    fn empty_and_short_secrets_are_refused_wherever_they_come_from() {
        let dir = tempfile::tempdir().unwrap();
        let empty_flag = Config {
            hook_secret: vec![SECRET.into(), String::new()],
            ..config_in(dir.path())
        };
        let err = error_chain(&hook_auth(&empty_flag).unwrap_err());
        assert!(
            err.starts_with("hook secret #2 of `hook_secret` (--hook-secret, FLUXGATE_HOOK_SECRET or the config file) is refused: a hook secret is empty"),
            "{err}"
        );
        let file = dir.path().join("secrets");
        std::fs::write(&file, "one-secret-long-enough\nshort\n").unwrap();
        let short_line = Config {
            hook_secret_file: Some(file.clone()),
            ..config_in(dir.path())
        };
        let err = error_chain(&hook_auth(&short_line).unwrap_err());
        assert_eq!(
            err,
            format!(
                "the hook secret on line 2 of {} is refused: a hook secret is 5 bytes long; at least 16 are required (generate one with `openssl rand -hex 24`)",
                file.display()
            )
        );
        assert!(!err.contains("short\n"));
    }

    #[test]
    fn signing_tokens_and_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        let signed_only = Config {
            hook_signing_token: vec![TOKEN.into()],
            ..config_in(dir.path())
        };
        hook_auth(&signed_only).unwrap();
        assert!(
            !generated_hook_secret_path(&signed_only).exists(),
            "no secret is generated when signing tokens are configured"
        );
        let bad = Config {
            hook_signing_token: vec![TOKEN.into(), "whsec_AAAA".into()],
            ..config_in(dir.path())
        };
        let err = error_chain(&hook_auth(&bad).unwrap_err());
        assert!(
            err.starts_with("signing token #2 of `hook_signing_token`"),
            "{err}"
        );
        assert!(
            err.ends_with(
                "a signing token's key is 3 bytes; it must be 24 to 64 (GitLab's are 32)"
            ),
            "{err}"
        );
        let required_without_tokens = Config {
            hook_secret: vec![SECRET.into()],
            hook_signature_required: true,
            ..config_in(dir.path())
        };
        let err = error_chain(&hook_auth(&required_without_tokens).unwrap_err());
        assert!(err.starts_with("signatures are required"), "{err}");
    }

    #[test]
    fn a_shared_database_needs_explicit_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            database_url: Some("postgres://db/fluxgate".into()),
            ..config_in(dir.path())
        };
        let err = hook_auth(&config).unwrap_err().to_string();
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
        std::fs::write(
            config.admin_token_file.as_ref().unwrap(),
            "an admin token with spaces\n",
        )
        .unwrap();
        assert!(
            admin_token(&config)
                .unwrap_err()
                .to_string()
                .contains("characters other than visible ASCII")
        );
        std::fs::write(
            config.admin_token_file.as_ref().unwrap(),
            " an-admin-token!-long-enough\n",
        )
        .unwrap();
        assert_eq!(
            admin_token(&config).unwrap().as_deref(),
            Some("an-admin-token!-long-enough")
        );
    }
}
