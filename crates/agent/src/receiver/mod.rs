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
use crate::kubernetes::flux_status::ObjectRef;
use crate::kubernetes::oci_ref::TagFilter;
use crate::kubernetes::registry::parse_artifact_url;
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

/// Which kinds of event trigger a receiver.
///
/// | | push, tag push | project push (no ref) | artifact |
/// |---|---|---|---|
/// | `Pushes` | ref matches | always | never |
/// | `PushesAndArtifacts` | ref matches | always | ref matches |
/// | `Artifacts` | never | never | same repository (when the event names one) and tag accepted |
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Accepts {
    /// Static receivers, brought Receivers, and `GitRepository` sources.
    #[default]
    Pushes,
    /// `GitRepository` sources annotated `fluxgate.io/pipeline-events: "true"`.
    PushesAndArtifacts,
    /// `OCIRepository` sources: artifacts pushed to `repository` (`host[:port]/path`,
    /// lower-cased) with a tag `tags` accepts. An event without an artifact URL is taken
    /// for any repository of the project; its tag is the event's, else the URL's
    /// (`…/manifests:1.2.0`), else `latest`.
    Artifacts { repository: String, tags: TagFilter },
}

/// One receiver: configured, or discovered in the cluster.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Unique in the agent's configuration; names the receiver in acks and logs.
    pub name: String,
    pub project: FullPath,
    /// Further paths it subscribes to and is matched by: an `OCIRepository`'s other
    /// candidate projects (see [`crate::kubernetes::registry`]). Usually empty.
    pub also_projects: Vec<FullPath>,
    /// `None`: every ref.
    pub ref_pattern: Option<RefPattern>,
    /// Which kinds of event trigger it.
    pub accepts: Accepts,
    pub kind: ReceiverKind,
    pub url: WebhookUrl,
    /// The Receiver Secret's `token`, as raw bytes (text).
    pub token: Secret,
    pub route: Route,
    /// The Flux source whose sync the agent follows after triggering it (its own
    /// Receivers in the Kubernetes mode); `None`: not followed.
    pub synced_source: Option<ObjectRef>,
}

impl Receiver {
    /// Every path it subscribes to: its project, then [`Receiver::also_projects`].
    pub fn projects(&self) -> impl Iterator<Item = &FullPath> {
        std::iter::once(&self.project).chain(&self.also_projects)
    }

    /// True if `event` is for one of this receiver's projects (under its current path, or
    /// under the path this agent subscribed with, for renamed projects) and is an event
    /// it accepts ([`Accepts`]).
    pub fn matches(&self, event: &TriggerEvent) -> bool {
        let project_matches = self.projects().any(|project| {
            event.project_path == *project || event.matched_projects.contains(project)
        });
        project_matches && self.accepts_event(event)
    }

    fn ref_matches(&self, event: &TriggerEvent) -> bool {
        match (&self.ref_pattern, &event.git_ref) {
            (None, _) => true,
            (Some(pattern), Some(git_ref)) => pattern.matches(git_ref),
            (Some(_), None) => false,
        }
    }

    fn accepts_event(&self, event: &TriggerEvent) -> bool {
        let artifact = event.kind == EventKind::Artifact;
        match &self.accepts {
            // A project push has no ref: it may have moved any ref.
            Accepts::Pushes | Accepts::PushesAndArtifacts
                if event.kind == EventKind::ProjectPush =>
            {
                true
            }
            Accepts::Pushes => !artifact && self.ref_matches(event),
            Accepts::PushesAndArtifacts => self.ref_matches(event),
            Accepts::Artifacts { repository, tags } => {
                let Some(details) = event.artifact.as_ref().filter(|_| artifact) else {
                    return false;
                };
                // The URL names the repository, and the tag when the event has none
                // of its own (`oci://host/group/app/manifests:1.2.0`).
                let (same_repository, url_tag) = match details.url.as_deref() {
                    None => (true, None),
                    Some(url) => match parse_artifact_url(url) {
                        Some((key, tag)) => (key == *repository, tag),
                        None => (false, None),
                    },
                };
                let tag = details.tag.as_deref().or(url_tag.as_deref());
                same_repository && tags.accepts(tag)
            }
        }
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
            also_projects: Vec::new(),
            ref_pattern: pattern.map(|p| RefPattern::parse(p).unwrap()),
            accepts: Accepts::Pushes,
            kind: ReceiverKind::Generic,
            url: WebhookUrl::parse("http://flux/hook/x").unwrap(),
            token: Secret::new(""),
            route: Route::Direct,
            synced_source: None,
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
            received_at: None,
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

    fn artifact(
        project: &str,
        git_ref: &str,
        url: Option<&str>,
        tag: Option<&str>,
    ) -> TriggerEvent {
        let mut event = event(project, git_ref, &[project]);
        event.kind = EventKind::Artifact;
        event.artifact = Some(fluxgate_core::Artifact {
            url: url.map(str::to_owned),
            tag: tag.map(str::to_owned),
            digest: None,
            pipeline_id: "1".to_owned(),
            job_id: "2".to_owned(),
        });
        event
    }

    fn project_push(project: &str) -> TriggerEvent {
        let mut event = event(project, "refs/heads/main", &[]);
        event.kind = EventKind::ProjectPush;
        event.git_ref = None;
        event
    }

    fn oci_receiver(range: &str) -> Receiver {
        let mut r = receiver("g/app/manifests", None);
        r.also_projects = vec![FullPath::parse("g/app").unwrap()];
        let reference: crate::kubernetes::oci_ref::OciRepositoryRef =
            serde_json::from_value(serde_json::json!({"semver": range})).unwrap();
        let crate::kubernetes::oci_ref::OciFollowed::Tags(tags) = reference.followed().unwrap()
        else {
            panic!("not pinned");
        };
        r.accepts = Accepts::Artifacts {
            repository: "registry.example.com/g/app/manifests".to_owned(),
            tags,
        };
        r
    }

    #[test]
    fn which_kinds_trigger_which_receivers() {
        let pushes = receiver("g/app", Some("refs/heads/main"));
        let mut opted_in = pushes.clone();
        opted_in.accepts = Accepts::PushesAndArtifacts;
        let oci = oci_receiver(">=1.0.0 <2.0.0");
        let url = Some("oci://registry.example.com/g/app/manifests:1.2.0");
        let main_artifact = artifact("g/app", "refs/heads/main", url, Some("1.2.0"));
        let other_ref_artifact = artifact("g/app", "refs/heads/dev", url, Some("1.2.0"));
        let main_push = event("g/app", "refs/heads/main", &[]);
        // (receiver, event, triggered)
        let cases = [
            (&pushes, &main_push, true),
            (&pushes, &project_push("g/app"), true),
            (&pushes, &main_artifact, false),
            (&opted_in, &main_push, true),
            (&opted_in, &project_push("g/app"), true),
            (&opted_in, &main_artifact, true),
            (&opted_in, &other_ref_artifact, false),
            (&oci, &main_push, false),
            (&oci, &project_push("g/app"), false),
            (&oci, &main_artifact, true),
            // The ref of an artifact does not matter to an OCIRepository: its tag does.
            (&oci, &other_ref_artifact, true),
        ];
        for (index, (receiver, event, expected)) in cases.into_iter().enumerate() {
            assert_eq!(receiver.matches(event), expected, "case {index}");
        }
        // A project push of another project triggers nothing.
        assert!(!pushes.matches(&project_push("g/other")));
    }

    #[test]
    fn an_oci_receiver_wants_its_repository_and_a_tag_in_range() {
        let oci = oci_receiver(">=1.0.0 <2.0.0");
        let repo = "oci://registry.example.com/g/app/manifests";
        // Matched through the candidate the broker found to be the project.
        assert!(oci.matches(&artifact(
            "g/app",
            "refs/heads/main",
            Some(repo),
            Some("v1.0.0")
        )));
        assert!(!oci.matches(&artifact(
            "g/app",
            "refs/heads/main",
            Some(repo),
            Some("2.0.0")
        )));
        assert!(!oci.matches(&artifact("g/app", "refs/heads/main", Some(repo), None)));
        // Another image of the same project.
        let other = "oci://registry.example.com/g/app/other";
        assert!(!oci.matches(&artifact(
            "g/app",
            "refs/heads/main",
            Some(other),
            Some("1.0.0")
        )));
        // No URL: any repository of the project.
        assert!(oci.matches(&artifact("g/app", "refs/heads/main", None, Some("1.0.0"))));
        // Another project.
        assert!(!oci.matches(&artifact(
            "g/lib",
            "refs/heads/main",
            Some(repo),
            Some("1.0.0")
        )));
        // The URL's tag counts when the event has none.
        let tagged_url = "oci://registry.example.com/g/app/manifests:1.3.0";
        assert!(oci.matches(&artifact(
            "g/app",
            "refs/heads/main",
            Some(tagged_url),
            None
        )));
        // An untagged artifact counts as `latest`: only a `latest` follower takes it.
        let mut latest = oci.clone();
        latest.accepts = Accepts::Artifacts {
            repository: "registry.example.com/g/app/manifests".to_owned(),
            tags: TagFilter::Exact("latest".to_owned()),
        };
        assert!(latest.matches(&artifact("g/app", "refs/heads/main", Some(repo), None)));
        assert!(latest.matches(&artifact(
            "g/app",
            "refs/heads/main",
            Some(repo),
            Some("latest")
        )));
        assert!(!latest.matches(&artifact(
            "g/app",
            "refs/heads/main",
            Some(repo),
            Some("1.0.0")
        )));
    }
}
