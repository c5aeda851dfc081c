//! Flux Receivers the agent triggers: what each one is, and which events it wants.
//!
//! - [`payload`]: the JSON body and the per-type authentication headers.
//! - [`trigger`]: one HTTP call to a Receiver.
//! - [`retry`]: the retry policy around those calls.
//! - [`worker`]: one task per receiver that coalesces bursts and retries until it answers.
//! - [`health`]: which receivers are failing: logs, metrics, the report to the broker.

pub mod health;
pub mod payload;
pub mod retry;
pub mod trigger;
pub mod worker;

use fluxgate_core::{EventKind, FullPath, RefPattern};
use serde::Deserialize;

use crate::event::TriggerEvent;
use crate::flux_path::WebhookUrl;
use crate::secret::Secret;

/// The Flux Receiver types the agent can authenticate to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReceiverKind {
    /// No authentication: the webhook path is the only secret.
    Generic,
    /// `X-Signature: sha256=<hex HMAC-SHA256(token, body)>`.
    GenericHmac,
    /// `X-Gitlab-Token: <token>` and `X-Gitlab-Event: Push Hook` (or `Tag Push Hook`).
    Gitlab,
}

impl ReceiverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Generic => "generic",
            Self::GenericHmac => "generic-hmac",
            Self::Gitlab => "gitlab",
        }
    }
}

/// The receivers in use at one moment: static ones and discovered ones. Published on a
/// `tokio::sync::watch` channel; the session follows it.
pub type ReceiverSet = std::sync::Arc<Vec<Receiver>>;

/// How a Receiver's URL is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Route {
    /// Over HTTP, to the URL's host.
    #[default]
    Direct,
    /// Through the Kubernetes API server of the agent's kubeconfig, with its credentials:
    /// only the URL's path (a service-proxy path) is used.
    KubernetesApi,
}

/// One receiver: configured, or discovered in the cluster.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Unique in the agent's configuration; names the receiver in acks and logs.
    pub name: String,
    pub project: FullPath,
    /// `None`: every ref.
    pub ref_pattern: Option<RefPattern>,
    pub kind: ReceiverKind,
    pub url: WebhookUrl,
    /// The Receiver Secret's `token`, as raw bytes (text).
    pub token: Secret,
    pub route: Route,
}

impl Receiver {
    /// True if `event` is for this receiver's project (under its current path, or under
    /// the path this agent subscribed with, for renamed projects) and its ref matches. A
    /// ref-less project push matches every ref.
    pub fn matches(&self, event: &TriggerEvent) -> bool {
        let project_matches =
            event.project_path == self.project || event.matched_projects.contains(&self.project);
        let ref_matches = match (&self.ref_pattern, &event.git_ref) {
            (None, _) => true,
            (Some(pattern), Some(git_ref)) => pattern.matches(git_ref),
            (Some(_), None) => event.kind == EventKind::ProjectPush,
        };
        project_matches && ref_matches
    }
}

#[cfg(test)]
mod tests {
    use fluxgate_core::{EventKind, GitRef};

    use super::*;

    fn receiver(project: &str, pattern: Option<&str>) -> Receiver {
        Receiver {
            name: "r".to_owned(),
            project: FullPath::parse(project).unwrap(),
            ref_pattern: pattern.map(|p| RefPattern::parse(p).unwrap()),
            kind: ReceiverKind::Generic,
            url: WebhookUrl::parse("http://flux/hook/x").unwrap(),
            token: Secret::new(""),
            route: Route::Direct,
        }
    }

    fn event(project: &str, git_ref: &str, matched: &[&str]) -> TriggerEvent {
        let git_ref = GitRef::parse(git_ref).unwrap();
        TriggerEvent {
            seq: 1,
            event_id: "e".to_owned(),
            project_id: 7,
            project_path: FullPath::parse(project).unwrap(),
            matched_projects: matched
                .iter()
                .map(|p| FullPath::parse(p).unwrap())
                .collect(),
            kind: EventKind::for_ref(&git_ref),
            artifact: None,
            git_ref: Some(git_ref),
            before: String::new(),
            after: String::new(),
        }
    }

    #[test]
    fn project_matches_by_key_in_any_spelling() {
        let r = receiver("https://gitlab.example.com/Group/App.git", None);
        assert!(r.matches(&event("group/app", "refs/heads/main", &[])));
        assert!(!r.matches(&event("group/app2", "refs/heads/main", &[])));
    }

    #[test]
    fn exact_glob_and_short_name_refs() {
        let exact = receiver("g/a", Some("refs/heads/main"));
        assert!(exact.matches(&event("g/a", "refs/heads/main", &[])));
        assert!(!exact.matches(&event("g/a", "refs/heads/main2", &[])));
        let glob = receiver("g/a", Some("refs/tags/v*"));
        assert!(glob.matches(&event("g/a", "refs/tags/v1.2.3", &[])));
        assert!(!glob.matches(&event("g/a", "refs/heads/v1", &[])));
        let short = receiver("g/a", Some("main"));
        assert!(short.matches(&event("g/a", "refs/heads/main", &[])));
        assert!(short.matches(&event("g/a", "refs/tags/main", &[])));
        assert!(!short.matches(&event("g/a", "refs/heads/feature/main", &[])));
    }

    #[test]
    fn a_renamed_project_matches_through_matched_projects() {
        let r = receiver("old-group/app", Some("main"));
        let renamed = event("new-group/app", "refs/heads/main", &["old-group/app"]);
        assert!(r.matches(&renamed));
        let other = event("new-group/app", "refs/heads/main", &["something/else"]);
        assert!(!r.matches(&other));
    }

    #[test]
    fn a_resync_without_a_ref_matches_only_receivers_without_a_pattern() {
        let any_ref = receiver("g/a", None);
        let mut resync = TriggerEvent::resync(&any_ref);
        assert!(resync.is_resync());
        assert!(any_ref.matches(&resync));
        resync.git_ref = None;
        assert!(!receiver("g/a", Some("main")).matches(&resync));
    }

    #[test]
    fn a_resync_carries_an_exact_ref_only() {
        let exact = TriggerEvent::resync(&receiver("g/a", Some("refs/tags/v1")));
        assert_eq!(exact.ref_str(), "refs/tags/v1");
        assert_eq!(exact.kind, EventKind::TagPush);
        let glob = TriggerEvent::resync(&receiver("g/a", Some("refs/heads/*")));
        assert_eq!(glob.ref_str(), "");
        assert_eq!(glob.kind, EventKind::Push);
        let tags = TriggerEvent::resync(&receiver("g/a", Some("refs/tags/v*")));
        assert_eq!(tags.kind, EventKind::TagPush);
        let short = TriggerEvent::resync(&receiver("g/a", Some("main")));
        assert_eq!(short.ref_str(), "");
    }
}
