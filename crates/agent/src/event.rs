//! A push the agent may trigger receivers for: a broker event, or a resync.
//!
//! Broker events come from the stream (converted in [`crate::wire`]). A resync is made up
//! by the agent for one receiver when the broker says the agent's cursor expired: events
//! may have been missed, so every receiver is triggered once. A resync has seq `0`, an
//! empty `before`/`after`, project id `0`, a ref only when the receiver names one exact
//! ref, and the kind `tag_push` when the receiver's pattern only covers tags.

use fluxgate_core::{Artifact, EventKind, FullPath, GitRef, UnixMillis};

use crate::receiver::Receiver;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerEvent {
    /// Position in the broker's log; `0` for a resync.
    pub seq: u64,
    pub event_id: String,
    pub project_id: i64,
    /// The project's current path.
    pub project_path: FullPath,
    /// The subscription paths (as this agent sent them) the broker matched the event
    /// against, so a renamed project still finds its receivers.
    pub matched_projects: Vec<FullPath>,
    /// `None` for a resync of a receiver without an exact ref, and for a ref-less
    /// project push (GitLab's KAS notice), which matches every ref.
    pub git_ref: Option<GitRef>,
    pub before: String,
    pub after: String,
    pub kind: EventKind,
    /// What a pipeline published; only for [`EventKind::Artifact`].
    pub artifact: Option<Artifact>,
    /// When the broker received the push (broker clock); `None` for a resync.
    pub received_at: Option<UnixMillis>,
}

impl TriggerEvent {
    /// The synthetic event that triggers `receiver` once after a cursor expiry.
    pub fn resync(receiver: &Receiver) -> Self {
        let pattern = receiver.ref_pattern.as_ref().map_or("", |p| p.as_str());
        let git_ref = Some(pattern)
            .filter(|raw| raw.starts_with("refs/") && !raw.contains(['*', '?', '[', '{', '\\']))
            .and_then(|raw| GitRef::parse(raw).ok());
        // A `gitlab` Receiver may accept only `Tag Push Hook`: a tags-only pattern resyncs
        // as a tag push.
        let kind = if pattern.starts_with("refs/tags/") {
            EventKind::TagPush
        } else {
            EventKind::Push
        };
        Self {
            seq: 0,
            event_id: uuid::Uuid::new_v4().to_string(),
            project_id: 0,
            project_path: receiver.project.clone(),
            matched_projects: Vec::new(),
            git_ref,
            before: String::new(),
            after: String::new(),
            kind,
            artifact: None,
            received_at: None,
        }
    }

    /// True for an agent-made resync event.
    pub fn is_resync(&self) -> bool {
        self.seq == 0
    }

    /// The ref as text, empty if unknown.
    pub fn ref_str(&self) -> &str {
        self.git_ref.as_ref().map_or("", GitRef::as_str)
    }
}
