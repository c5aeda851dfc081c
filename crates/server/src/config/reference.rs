//! The configuration reference, generated from [`Config`]: each key's type, default,
//! variable, flag and description. `docs/configuration.md` is this text; a test keeps the
//! two equal (`FLUXGATE_UPDATE_DOCS=1 cargo test -p fluxgate-server config_reference`
//! rewrites the file).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use clap::{ArgAction, Args};

use super::Config;
use super::load::env_var;

/// Value names a key may have, with what they mean; `--help` shows them as `<NAME>`.
pub const VALUE_NAMES: &[(&str, &str)] = &[
    (
        "ADDRESS",
        "a socket address, `host:port` (`0.0.0.0:8080`, `[::]:8080`)",
    ),
    ("BYTES", "a size in bytes"),
    ("COUNT", "a whole number"),
    (
        "DURATION",
        "a duration: a number and a unit (`500ms`, `10s`, `5m`, `24h`, `7d`), or several (`1h 30m`)",
    ),
    ("FILTER", "a tracing filter (`info`, `fluxgate=debug,info`)"),
    ("FORMAT", "`text` or `json`"),
    ("PATH", "a file or directory path"),
    ("SECRET", "text; a list of them, see below"),
    ("TEXT", "text"),
    ("URL", "a URL"),
];

/// Every key, in the order of [`Config`].
pub fn keys() -> Vec<String> {
    definitions()
        .iter()
        .map(|arg| arg.get_id().to_string())
        .collect()
}

/// Each key's default as written in a file, or `None` when it has none (unset, empty).
pub fn defaults() -> BTreeMap<String, Option<String>> {
    let defaults = serde_json::to_value(Config::default()).expect("the defaults serialise");
    let serde_json::Value::Object(defaults) = defaults else {
        unreachable!("a struct serialises to an object");
    };
    defaults
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                serde_json::Value::Null => None,
                serde_json::Value::Array(items) if items.is_empty() => None,
                serde_json::Value::String(text) => Some(text),
                other => Some(other.to_string()),
            };
            (key, text)
        })
        .collect()
}

/// The keys' definitions as clap reads them from [`Config`].
fn definitions() -> Vec<clap::Arg> {
    Config::augment_args(clap::Command::new("fluxgate"))
        .get_arguments()
        .cloned()
        .collect()
}

/// The reference, in Markdown.
pub fn markdown() -> String {
    let defaults = defaults();
    let mut out = String::new();
    out.push_str(
        "# Configuration reference: `fluxgate`\n\
         \n\
         <!-- Generated from crates/server/src/config/mod.rs; do not edit by hand. Regenerate with\n     \
         FLUXGATE_UPDATE_DOCS=1 cargo test -p fluxgate-server config_reference -->\n\
         \n\
         Settings come from, in increasing priority: defaults, a TOML file (`--config`,\n\
         `FLUXGATE_CONFIG`), `FLUXGATE_<KEY>` environment variables, and command-line flags.\n\
         Every key has all three names: `retention` in the file, `FLUXGATE_RETENTION`,\n\
         `--retention`. Flags marked *every command* are taken by `migrate` and `agent …` as\n\
         well (they say where the store is and how to log); the others by `serve`. A value\n\
         that does not fit its key stops the start with a message that names the key, where\n\
         the value came from and what was expected.\n\
         \n\
         Lists (the `SECRET` keys) are a TOML array in the file, a repeated flag, or one\n\
         comma-separated variable. A boolean flag takes no value; in a file or a variable it\n\
         is `true` or `false`.\n\
         \n\
         | type | is |\n\
         |---|---|\n",
    );
    for (name, meaning) in VALUE_NAMES {
        let _ = writeln!(out, "| `{name}` | {meaning} |");
    }
    out.push_str(
        "\n| key | type | default | variable | flag | description |\n\
         |---|---|---|---|---|---|\n",
    );
    for arg in definitions() {
        let key = arg.get_id().as_str();
        let kind = match arg.get_action() {
            ArgAction::SetTrue => "boolean".to_owned(),
            ArgAction::Append => format!("list of `{}`", value_name(&arg)),
            _ => format!("`{}`", value_name(&arg)),
        };
        let default = match defaults.get(key).and_then(Option::as_deref) {
            Some(default) => format!("`{default}`"),
            None => "none".to_owned(),
        };
        let flag = format!("`--{}`", arg.get_long().unwrap_or(key));
        let flag = if arg.is_global_set() {
            format!("{flag} (every command)")
        } else {
            flag
        };
        let description = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(|help| help.to_string().replace('\n', " ").replace('|', "\\|"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| `{key}` | {kind} | {default} | `{}` | {flag} | {description} |",
            env_var(key)
        );
    }
    out
}

fn value_name(arg: &clap::Arg) -> String {
    arg.get_value_names()
        .and_then(|names| names.first())
        .map(ToString::to_string)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn docs_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md")
    }

    #[test]
    fn config_reference_matches_docs() {
        let generated = markdown();
        let path = docs_path();
        if std::env::var_os("FLUXGATE_UPDATE_DOCS").is_some() {
            std::fs::write(&path, &generated).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/configuration.md differs from the configuration defined in \
             crates/server/src/config/mod.rs; regenerate it with\n  \
             FLUXGATE_UPDATE_DOCS=1 cargo test -p fluxgate-server config_reference\n\
             and commit the result"
        );
    }

    #[test]
    fn every_field_is_a_key_with_a_flag_a_type_a_default_and_a_description() {
        let fields: Vec<String> = defaults().into_keys().collect();
        let mut keys = keys();
        keys.sort_unstable();
        assert_eq!(
            keys, fields,
            "each field of Config has a flag, and only they"
        );
        for arg in definitions() {
            let key = arg.get_id().as_str();
            assert_eq!(
                arg.get_long(),
                Some(key.replace('_', "-").as_str()),
                "{key}: the flag is the key with dashes"
            );
            assert!(
                arg.get_help()
                    .is_some_and(|help| !help.to_string().is_empty()),
                "{key} has no description (a doc comment)"
            );
            if !matches!(arg.get_action(), ArgAction::SetTrue) {
                let name = value_name(&arg);
                assert!(
                    VALUE_NAMES.iter().any(|(known, _)| *known == name),
                    "{key}: value name {name:?} is not one of VALUE_NAMES"
                );
            }
        }
    }
}
