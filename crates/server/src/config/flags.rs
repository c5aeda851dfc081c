//! The configuration keys as command-line flags, derived from [`Config`]'s `#[arg]`s.
//!
//! Keys marked `global` (where the store is, how to log) are flags of every command; the
//! others are flags of `serve`. Only the flags given become a configuration layer
//! ([`ConfigFlags::given`]): their values, checked by each key's value parser, keyed by
//! the key's name and typed when the layers are merged.

use std::collections::BTreeMap;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, FromArgMatches};
use serde_json::Value;

use super::Config;
use super::load::Overrides;

/// Every key's flag, with `[default: …]` appended to its help. Never required: a key not
/// given comes from a lower layer.
pub fn all() -> Vec<clap::Arg> {
    let defaults = super::reference::defaults();
    Config::augment_args(clap::Command::new("fluxgate"))
        .get_arguments()
        .map(|arg| {
            let mut arg = arg.clone().required(false);
            let key = arg.get_id().as_str();
            if let Some(default) = defaults.get(key).and_then(Option::as_deref) {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                arg = arg.help(format!("{help} [default: {default}]"));
            }
            arg
        })
        .collect()
}

/// The configuration keys given as flags: those of every command (`GLOBAL`) or those of
/// `serve`.
#[derive(Debug, Clone, Default)]
pub struct ConfigFlags<const GLOBAL: bool> {
    given: Overrides,
}

impl<const GLOBAL: bool> ConfigFlags<GLOBAL> {
    /// The flags given, as a sparse configuration layer.
    pub fn given(&self) -> &Overrides {
        &self.given
    }

    fn scope() -> impl Iterator<Item = clap::Arg> {
        all()
            .into_iter()
            .filter(|arg| arg.is_global_set() == GLOBAL)
    }
}

impl<const GLOBAL: bool> FromArgMatches for ConfigFlags<GLOBAL> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut given = BTreeMap::new();
        for arg in Self::scope() {
            let key = arg.get_id().as_str();
            if matches.value_source(key) != Some(ValueSource::CommandLine) {
                continue;
            }
            let raw: Vec<String> = matches
                .get_raw(key)
                .into_iter()
                .flatten()
                .map(|value| value.to_string_lossy().into_owned())
                .collect();
            let value = match arg.get_action() {
                ArgAction::SetTrue => Value::Bool(true),
                ArgAction::Append => Value::from(raw),
                _ => raw.into_iter().next().map_or(Value::Null, Value::from),
            };
            given.insert(key.to_owned(), value);
        }
        Ok(Self {
            given: given.into_iter().collect(),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl<const GLOBAL: bool> Args for ConfigFlags<GLOBAL> {
    fn augment_args(command: clap::Command) -> clap::Command {
        command.args(Self::scope())
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}
