//! Subscriptions and how one is matched against an event.

use std::sync::Arc;

use fluxgate_core::{FullPath, PushEvent, RefPattern};

use crate::catalog::Catalog;

/// "Send me pushes to this project (and these refs)".
#[derive(Debug, Clone)]
pub struct Subscription {
    pub project: FullPath,
    /// `None`: every ref.
    pub refs: Option<RefPattern>,
    /// The project as the agent wrote it, echoed back in `matched_projects` (shared: every
    /// delivery to this subscription carries it).
    pub label: Arc<str>,
}

impl Subscription {
    /// Two subscriptions are the same if they name the same project (case-insensitively)
    /// and the same ref pattern.
    pub fn same_as(&self, other: &Subscription) -> bool {
        self.project == other.project && self.refs == other.refs
    }

    /// True if this subscription asks for `event`: its path names the event's project
    /// (now or formerly), or equals the path the event carries, and the ref matches. An
    /// event without a ref (GitLab's project push notice) matches every ref pattern.
    pub fn matches(&self, catalog: &Catalog, event: &PushEvent) -> bool {
        let path_names_project = catalog.resolve(&self.project) == Some(event.project.id);
        self.matches_given(path_names_project, event)
    }

    /// [`Self::matches`], once it is known whether this subscription's path names the
    /// event's project in the catalog (the same for every subscription on that path, so
    /// routing works it out once per path rather than once per subscriber).
    pub fn matches_given(&self, path_names_project: bool, event: &PushEvent) -> bool {
        let names_project = path_names_project || self.project == event.project.path;
        let ref_matches = match (&self.refs, &event.git_ref) {
            (Some(pattern), Some(git_ref)) => pattern.matches(git_ref),
            (None, _) | (_, None) => true,
        };
        names_project && ref_matches
    }
}
