//! Validation of the `receivers` list: names, projects, refs, tokens and hook URLs.
//!
//! Static receivers are triggered by pushes (branch and tag pushes whose ref matches, and
//! ref-less project pushes), never by pipeline (artifact) events: they have no `events:`
//! option. A Receiver that should follow pipeline artifacts is better discovered from its
//! source (`OCIRepository`, or a `GitRepository` annotated
//! `fluxgate.io/pipeline-events: "true"`), where the agent knows the tag or ref the source
//! follows; a static entry knows neither.

use std::path::Path;

use fluxgate_core::{FullPath, RefPattern};
use reqwest::header::HeaderValue;

use super::ConfigError;
use super::file::ReceiverEntry;
use crate::flux_path::{DEFAULT_NAMESPACE, DEFAULT_WEBHOOK_RECEIVER_URL, WebhookUrl, webhook_path};
use crate::receiver::{Receiver, ReceiverKind};
use crate::secret::Secret;

pub(super) fn validate(
    entries: Vec<ReceiverEntry>,
    base_dir: &Path,
) -> Result<Vec<Receiver>, ConfigError> {
    let mut receivers: Vec<Receiver> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let receiver = validate_one(index, entry, base_dir)?;
        if let Some(first) = receivers.iter().position(|r| r.name == receiver.name) {
            return Err(ConfigError::invalid(
                format!("receivers[{index}].name"),
                format!("{:?} is already used by receivers[{first}]", receiver.name),
            ));
        }
        receivers.push(receiver);
    }
    Ok(receivers)
}

fn validate_one(
    index: usize,
    entry: ReceiverEntry,
    base_dir: &Path,
) -> Result<Receiver, ConfigError> {
    let field = |key: &str| format!("receivers[{index}].{key}");
    let invalid = |key: &str, reason: String| ConfigError::invalid(field(key), reason);

    let project = FullPath::parse(&entry.project).map_err(|e| invalid("project", e.to_string()))?;
    let ref_pattern = entry
        .ref_pattern
        .as_deref()
        .map(RefPattern::parse)
        .transpose()
        .map_err(|e| invalid("ref", e.to_string()))?;
    let token = token(&entry, &field("token_file"), base_dir)?;

    if entry.url.is_some() {
        let conflicting = [
            ("webhook_receiver_url", entry.webhook_receiver_url.is_some()),
            ("namespace", entry.namespace.is_some()),
        ];
        if let Some((key, _)) = conflicting.iter().find(|(_, set)| *set) {
            return Err(invalid(
                key,
                "cannot be combined with url, which is the full hook URL".to_owned(),
            ));
        }
    }
    let name = match (&entry.name, &entry.url) {
        (Some(name), _) if name.trim().is_empty() => {
            return Err(invalid("name", "must not be empty".to_owned()));
        }
        (Some(name), _) => name.trim().to_owned(),
        (None, Some(_)) => format!("receivers[{index}]"),
        (None, None) => {
            return Err(invalid(
                "name",
                "required unless url is given: the hook path is computed from the \
                 Receiver's name and namespace"
                    .to_owned(),
            ));
        }
    };
    let token = match token {
        Some(token) => token,
        None if entry.url.is_some() && entry.kind == ReceiverKind::Generic => Secret::new(""),
        None => {
            let why = if entry.url.is_none() {
                "the hook path is computed from it"
            } else {
                "this receiver type authenticates with it"
            };
            return Err(invalid(
                "token",
                format!("token or token_file is required: {why}"),
            ));
        }
    };
    if entry.kind == ReceiverKind::Gitlab && HeaderValue::from_str(token.expose()).is_err() {
        return Err(invalid(
            "token",
            "a gitlab receiver's token cannot hold line breaks or control characters: it \
             is sent in X-Gitlab-Token (GitLab itself strips line breaks, so Flux could \
             never match it)"
                .to_owned(),
        ));
    }
    let url = match &entry.url {
        Some(url) => WebhookUrl::parse(url).map_err(|e| invalid("url", e.to_string()))?,
        None => {
            let namespace = entry.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
            let base = entry
                .webhook_receiver_url
                .as_deref()
                .unwrap_or(DEFAULT_WEBHOOK_RECEIVER_URL);
            let path = webhook_path(token.expose().as_bytes(), &name, namespace);
            WebhookUrl::join(base, &path)
                .map_err(|e| invalid("webhook_receiver_url", e.to_string()))?
        }
    };
    Ok(Receiver {
        name,
        project,
        also_projects: Vec::new(),
        ref_pattern,
        // Static receivers keep the push kinds; pipeline events are for discovered sources
        // (see the module documentation).
        accepts: crate::receiver::Accepts::Pushes,
        kind: entry.kind,
        url,
        token,
        route: crate::receiver::Route::Direct,
        synced_source: None,
    })
}

/// The receiver's token, from `token` or `token_file` (read raw, not trimmed).
fn token(
    entry: &ReceiverEntry,
    file_field: &str,
    base_dir: &Path,
) -> Result<Option<Secret>, ConfigError> {
    match (&entry.token, &entry.token_file) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            file_field,
            "set token or token_file, not both",
        )),
        (Some(token), None) => Ok(Some(Secret::new(token.as_str()))),
        (None, Some(path)) => {
            super::read_secret_file(file_field, base_dir, path).map(|raw| Some(Secret::new(raw)))
        }
        (None, None) => Ok(None),
    }
}
