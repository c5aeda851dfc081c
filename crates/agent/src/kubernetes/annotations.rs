//! The labels and annotations the agent reads and writes.

/// The field manager of every server-side apply the agent makes.
pub const FIELD_MANAGER: &str = "fluxgate-agent";

/// Label on every object the agent owns (the Kubernetes recommended label).
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY_VALUE: &str = "fluxgate-agent";

/// Annotation naming the agent (`<lease namespace>/<lease name>`) that owns an object, so
/// two agents in one cluster never take each other's objects.
pub const AGENT: &str = "fluxgate.io/agent";

/// Annotation with the GitLab project path: written on owned objects; on a Receiver made
/// by someone else, it asks the agent to trigger that Receiver for the project's pushes
/// ("bring your own Receiver").
pub const PROJECT: &str = "fluxgate.io/project";

/// Optional annotation on a brought Receiver: the ref pattern it wants (default: every
/// ref), as in the static configuration (`refs/heads/main`, `refs/tags/v*`, `main`).
pub const REF: &str = "fluxgate.io/ref";

/// Annotation on a `GitRepository` or `OCIRepository`: `"true"` leaves it alone (no
/// Receiver is made).
pub const OPT_OUT: &str = "fluxgate.io/ignore";

/// Annotation on a `GitRepository`: `"true"` makes its Receiver also triggered by pipeline
/// (artifact) events whose ref it follows, not only by pushes. `OCIRepository` sources are
/// triggered by artifact events only, without it.
pub const PIPELINE_EVENTS: &str = "fluxgate.io/pipeline-events";

/// The annotation Flux's notification-controller sets on a resource a Receiver triggers.
pub const RECONCILE_REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";
