//! Merging the layers into a [`Config`]: defaults, then an optional TOML file, then
//! `FLUXGATE_<KEY>` environment variables, then the flags given. Each layer overrides the
//! one before.
//!
//! Variables and flags arrive as text; numbers and booleans are read from text when the
//! key's type asks for them, so a secret made of digits stays text. A value that does not
//! fit its key is reported with the key, where the value came from and what was expected:
//! `invalid database_max_connections from env FLUXGATE_DATABASE_MAX_CONNECTIONS: expected
//! an unsigned integer, found "x"`.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::error::{Actual, Kind};
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};

use super::Config;
use super::reference;

/// A sparse configuration layer: the keys given, by name (flags given on the command line).
pub type Overrides = serde_json::Map<String, serde_json::Value>;

/// Why the configuration cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {} does not exist", path.display())]
    MissingFile { path: PathBuf },
    /// One message per problem, each naming the key and where its value came from. The
    /// figment error they come from is not kept as a source: its text is what these
    /// messages replace.
    #[error("{}", problems.join("; "))]
    Invalid { problems: Vec<String> },
}

/// Where a key's value came from, for messages.
enum Origin<'a> {
    Flag,
    Env,
    File(&'a Path),
    Default,
}

impl Config {
    /// Loads the layers. `env` is the process environment, passed in so that tests never
    /// mutate it; `flags` are the flags given (see [`super::flags::ConfigFlags`]).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: Overrides,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::MissingFile {
                    path: file.to_owned(),
                });
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let env = env_layer(env);
        let origin_of = |key: &str| {
            if flags.contains_key(key) {
                Origin::Flag
            } else if env.contains_key(key) {
                Origin::Env
            } else if let Some(file) = file {
                Origin::File(file)
            } else {
                Origin::Default
            }
        };
        let config: Config = figment
            .merge(Serialized::defaults(&env))
            .merge(Serialized::defaults(&flags))
            .extract_lossy()
            .map_err(|err| {
                let problems = err
                    .into_iter()
                    .map(|problem| {
                        let key = problem.path.join(".");
                        describe(&key, &origin_of(&key), &problem.kind)
                    })
                    .collect();
                ConfigError::Invalid { problems }
            })?;
        let problems: Vec<String> = config
            .nonsense()
            .into_iter()
            .map(|(key, reason)| format!("invalid {key}{}: {reason}", origin_of(key).words(key)))
            .collect();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { problems });
        }
        Ok(config)
    }

    /// Values that parse but cannot work, each with its key and why: an interval of zero
    /// spins (a database poll of zero is hundreds of reads a second), a timeout of zero
    /// fails everything, a capacity of zero holds nothing.
    fn nonsense(&self) -> Vec<(&'static str, &'static str)> {
        let durations = [
            ("presence_refresh", self.presence_refresh),
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("tls_handshake_timeout", self.tls_handshake_timeout),
            ("tls_reload_interval", self.tls_reload_interval),
            ("hook_signature_tolerance", self.hook_signature_tolerance),
            ("retention", self.retention),
            ("retention_check_interval", self.retention_check_interval),
            ("poll_interval", self.poll_interval),
            ("keepalive_interval", self.keepalive_interval),
            ("cursor_flush_interval", self.cursor_flush_interval),
            ("commit_timeout", self.commit_timeout),
        ];
        let counts = [
            (
                "database_max_connections",
                usize::try_from(self.database_max_connections).unwrap_or(usize::MAX),
            ),
            ("http_max_connections", self.http_max_connections),
            ("agent_max_connections", self.agent_max_connections),
            ("metrics_max_connections", self.metrics_max_connections),
            ("kas_max_connections", self.kas_max_connections),
            ("hook_body_limit", self.hook_body_limit),
            ("agent_queue_capacity", self.agent_queue_capacity),
            ("agent_max_unacked", self.agent_max_unacked),
            ("max_streams_per_agent", self.max_streams_per_agent),
            (
                "max_subscriptions_per_stream",
                self.max_subscriptions_per_stream,
            ),
            (
                "max_subscriptions_per_agent",
                self.max_subscriptions_per_agent,
            ),
        ];
        let mut problems: Vec<_> = durations
            .into_iter()
            .filter(|(_, value)| value.is_zero())
            .map(|(key, _)| (key, "must be more than zero"))
            .collect();
        problems.extend(
            counts
                .into_iter()
                .filter(|(_, value)| *value == 0)
                .map(|(key, _)| (key, "must be at least 1")),
        );
        problems
    }
}

impl Origin<'_> {
    /// Where `key`'s value came from, as the end of a phrase (empty for the default).
    fn words(&self, key: &str) -> String {
        match self {
            Origin::Flag => format!(" from flag --{}", key.replace('_', "-")),
            Origin::Env => format!(" from env {}", env_var(key)),
            Origin::File(path) => format!(" in file {}", path.display()),
            Origin::Default => String::new(),
        }
    }
}

/// The name of a key's environment variable.
pub fn env_var(key: &str) -> String {
    format!("FLUXGATE_{}", key.to_uppercase())
}

/// `FLUXGATE_<KEY>` variables of known keys, as text. Other variables, `FLUXGATE_CONFIG`
/// included, are not keys and are left alone.
fn env_layer(env: impl IntoIterator<Item = (String, String)>) -> Dict {
    let keys = reference::keys();
    env.into_iter()
        .filter_map(|(name, value)| {
            let key = name.strip_prefix("FLUXGATE_")?.to_lowercase();
            keys.contains(&key).then(|| (key, Value::from(value)))
        })
        .collect()
}

/// One problem, in words.
fn describe(key: &str, origin: &Origin<'_>, kind: &Kind) -> String {
    let source = origin.words(key);
    match kind {
        Kind::UnknownField(field, _) => {
            format!("unknown key {field}{source} (see docs/configuration.md)")
        }
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => format!(
            "invalid {key}{source}: expected {}, found {}",
            expected_in_words(expected),
            actual_in_words(actual)
        ),
        Kind::UnknownVariant(found, expected) => format!(
            "invalid {key}{source}: expected one of {}, found {found:?}",
            expected.join(", ")
        ),
        Kind::Message(message) if key.is_empty() => format!("{message}{source}"),
        other => format!("invalid {key}{source}: {other}"),
    }
}

fn expected_in_words(expected: &str) -> &str {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "an unsigned integer",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
        "a duration" => "a duration such as 500ms, 10s or 7d",
        other => other,
    }
}

fn actual_in_words(actual: &Actual) -> String {
    match actual {
        Actual::Str(text) => format!("{text:?}"),
        Actual::Unsigned(n) => n.to_string(),
        Actual::Signed(n) => n.to_string(),
        Actual::Float(n) => n.to_string(),
        Actual::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn error(file: Option<&Path>, environment: &[(&str, &str)], flags: Overrides) -> String {
        Config::load(file, env(environment), flags)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fluxgate.toml");
        std::fs::write(
            &file,
            "http_listen = \"0.0.0.0:9000\"\nretention = \"2d\"\nagent_queue_capacity = 10\n",
        )
        .unwrap();
        let environment = env(&[
            ("FLUXGATE_RETENTION", "3d"),
            ("FLUXGATE_HOOK_SECRET", "123, abc"),
            ("FLUXGATE_AGENT_TOKEN", "not a broker key"),
            ("FLUXGATE_CONFIG", "not a key either"),
            ("HOME", "/root"),
        ]);
        let mut flags = Overrides::new();
        flags.insert("agent_queue_capacity".into(), "20".into());
        let config = Config::load(Some(&file), environment, flags).unwrap();
        assert_eq!(
            config.http_listen,
            "0.0.0.0:9000".parse().unwrap(),
            "file over default"
        );
        assert_eq!(
            config.retention,
            Duration::from_secs(3 * 24 * 3600),
            "env over file"
        );
        assert_eq!(config.agent_queue_capacity, 20, "flag over file");
        assert_eq!(
            config.hook_secret,
            vec!["123", "abc"],
            "a list from one variable, digits kept as text"
        );
        assert_eq!(
            config.keepalive_interval,
            Duration::from_secs(15),
            "default"
        );
    }

    #[test]
    fn every_key_is_read_from_its_variable() {
        // Each key set through its variable to a value other than its default.
        let environment = env(&[
            ("FLUXGATE_DATA_DIR", "/srv/fluxgate"),
            ("FLUXGATE_DATABASE_MAX_CONNECTIONS", "3"),
            ("FLUXGATE_HOOK_SIGNATURE_REQUIRED", "true"),
            ("FLUXGATE_HTTP_LISTEN", "0.0.0.0:80"),
            ("FLUXGATE_LOG_FORMAT", "json"),
            ("FLUXGATE_BROKER_ID", "42"),
            ("FLUXGATE_HOOK_SIGNING_TOKEN", "whsec_a+b/c=, whsec_d"),
            ("FLUXGATE_HOOK_SIGNATURE_TOLERANCE", "90s"),
        ]);
        let config = Config::load(None, environment, Overrides::new()).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/srv/fluxgate"));
        assert_eq!(config.database_max_connections, 3);
        assert!(config.hook_signature_required);
        assert_eq!(config.http_listen.to_string(), "0.0.0.0:80");
        assert_eq!(config.log_format, super::super::LogFormat::Json);
        assert_eq!(
            config.broker_id.as_deref(),
            Some("42"),
            "digits kept as text"
        );
        assert_eq!(config.hook_signing_token, vec!["whsec_a+b/c=", "whsec_d"]);
        assert_eq!(config.hook_signature_tolerance, Duration::from_secs(90));
    }

    #[test]
    fn zero_intervals_timeouts_and_capacities_are_refused() {
        let mut flags = Overrides::new();
        flags.insert("poll_interval".into(), "0s".into());
        assert_eq!(
            error(None, &[("FLUXGATE_AGENT_QUEUE_CAPACITY", "0")], flags),
            "invalid poll_interval from flag --poll-interval: must be more than zero; \
             invalid agent_queue_capacity from env FLUXGATE_AGENT_QUEUE_CAPACITY: must be at \
             least 1"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fluxgate.toml");
        std::fs::write(&file, "keepalive_interval = \"0ms\"\n").unwrap();
        assert_eq!(
            error(Some(&file), &[], Overrides::new()),
            format!(
                "invalid keepalive_interval in file {}: must be more than zero",
                file.display()
            )
        );
        // Zero where it means something stays allowed: no leeway, no grace.
        let mut flags = Overrides::new();
        flags.insert("ci_token_leeway".into(), "0s".into());
        flags.insert("shutdown_grace".into(), "0s".into());
        Config::load(None, Vec::new(), flags).unwrap();
    }

    #[test]
    fn bad_values_name_the_key_their_origin_and_what_was_expected() {
        assert_eq!(
            error(
                None,
                &[("FLUXGATE_DATABASE_MAX_CONNECTIONS", "x")],
                Overrides::new()
            ),
            "invalid database_max_connections from env FLUXGATE_DATABASE_MAX_CONNECTIONS: \
             expected an unsigned integer, found \"x\""
        );
        assert_eq!(
            error(None, &[("FLUXGATE_RETENTION", "soon")], Overrides::new()),
            "invalid retention from env FLUXGATE_RETENTION: expected a duration such as \
             500ms, 10s or 7d, found \"soon\""
        );
        let mut flags = Overrides::new();
        flags.insert("http_listen".into(), "nowhere".into());
        assert_eq!(
            error(None, &[("FLUXGATE_HTTP_LISTEN", "0.0.0.0:80")], flags),
            "invalid http_listen from flag --http-listen: invalid socket address syntax",
            "the flag's value is the one reported, not the variable's"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fluxgate.toml");
        std::fs::write(
            &file,
            "htp_listen = \"0.0.0.0:9000\"\nlog_format = \"xml\"\n",
        )
        .unwrap();
        let message = error(Some(&file), &[], Overrides::new());
        assert!(
            message.contains(&format!(
                "unknown key htp_listen in file {}",
                file.display()
            )),
            "{message}"
        );

        std::fs::write(&file, "log_format = \"xml\"\n").unwrap();
        let message = error(Some(&file), &[], Overrides::new());
        assert_eq!(
            message,
            format!(
                "invalid log_format in file {}: expected one of text, json, found \"xml\"",
                file.display()
            )
        );

        let missing = error(Some(Path::new("/nonexistent.toml")), &[], Overrides::new());
        assert_eq!(missing, "config file /nonexistent.toml does not exist");
    }
}
