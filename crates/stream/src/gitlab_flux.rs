//! `gitlab.agent.flux.rpc.GitLabFlux/ReconcileProjects`: KAS's flux API, for clients
//! written against agentk's flux module.
//!
//! The client sends one request with the project paths it reconciles and reads a server
//! stream of `ReconcileProjectsResponse{project: {id: <path>}}`, one per live push to one
//! of them that its agent may see, with the path **exactly as the client sent it** (agentk
//! looks its Receivers up by that string).
//!
//! - Authenticated by a fluxgate agent token (`authorization: Bearer fgat_…`), like
//!   `fluxgate.v1`; the access rule is the same, applied by the hub.
//! - Kinds: git pushes, tag pushes and GitLab's ref-less project push. Not pipeline
//!   artifacts: agentk reconciles GitRepositories, and an artifact is not a change to one.
//! - Paths match as the hub matches `fluxgate.v1` subscriptions (case-insensitively,
//!   current and former paths, so renames resolve), and each path that starts with the
//!   instance's relative URL root (`gitlab/group/project` under `https://host/gitlab`) also
//!   matches without it, as KAS does since gitlab-agent MR 4756.
//! - Best effort, as in KAS: no backlog, no acks, no cursor. A push committed while no
//!   stream is open is not sent later (Flux's own interval covers it). A client that does
//!   not read is closed as lagged (RESOURCE_EXHAUSTED), like a `fluxgate.v1` stream; on
//!   shutdown the stream ends cleanly, so agentk reconnects at once (to another replica).

use std::collections::HashMap;
use std::sync::Arc;

use fluxgate_core::{EventKind, FullPath, UnixMillis};
use fluxgate_fanout::{CloseReason, Delivery, StreamInfo};
use fluxgate_proto::gitlab::agent::flux::rpc::git_lab_flux_server::{GitLabFlux, GitLabFluxServer};
use fluxgate_proto::gitlab::agent::flux::rpc::{
    Project, ReconcileProjectsRequest, ReconcileProjectsResponse,
};
use fluxgate_routing::{AcceptedKinds, Subscription};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::metric_names as names;
use crate::service::authenticate;
use crate::session::StreamContext;
use crate::status;

/// Most projects one request may name.
pub const MAX_PROJECTS: usize = 1024;
/// Longest project path accepted (GitLab's own limit on a full path).
pub const MAX_PROJECT_LEN: usize = fluxgate_core::path::MAX_PATH_LEN;
/// Largest request message: [`MAX_PROJECTS`] paths of [`MAX_PROJECT_LEN`] bytes.
pub const MAX_MESSAGE_BYTES: usize = MAX_PROJECTS * (MAX_PROJECT_LEN + 8);
/// Responses buffered towards one client before the stream waits for it to read.
const OUTBOUND_BUFFER: usize = 64;
/// What presence shows as the version of a KAS flux client.
const CLIENT_VERSION: &str = "gitlab-flux";

/// The `GitLabFlux` service on the agent listener.
pub struct GitLabFluxStreams {
    context: Arc<StreamContext>,
    relative_root: Option<FullPath>,
}

impl GitLabFluxStreams {
    /// `relative_root`: the GitLab instance's relative URL root as a path (`gitlab` for
    /// `https://example.com/gitlab`), if it has one.
    pub fn new(context: Arc<StreamContext>, relative_root: Option<FullPath>) -> Self {
        Self {
            context,
            relative_root,
        }
    }

    pub fn into_server(self) -> GitLabFluxServer<Self> {
        GitLabFluxServer::new(self).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// The requested projects: the subscriptions to register, and for each subscription's
/// label the paths as the client sent them.
#[derive(Debug, Default)]
pub struct RequestedProjects {
    pub subscriptions: Vec<Subscription>,
    /// Subscription label (a path key) → the client's paths it stands for.
    pub sent_as: HashMap<String, Vec<String>>,
}

impl RequestedProjects {
    /// The client's paths a delivery's matched labels stand for, each once.
    pub fn ids_for(&self, matched: &[std::sync::Arc<str>]) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for label in matched {
            for id in self.sent_as.get(&**label).into_iter().flatten() {
                if !ids.contains(id) {
                    ids.push(id.clone());
                }
            }
        }
        ids
    }

    fn add(&mut self, path: FullPath, sent: &str) {
        let label = path.key().to_owned();
        let ids = self.sent_as.entry(label.clone()).or_default();
        if ids.iter().any(|id| id == sent) {
            return;
        }
        if ids.is_empty() {
            self.subscriptions.push(Subscription {
                project: path,
                refs: None,
                label: label.into(),
            });
        }
        ids.push(sent.to_owned());
    }
}

/// Validates a request: at most [`MAX_PROJECTS`] projects, each a non-empty GitLab path
/// of at most [`MAX_PROJECT_LEN`] bytes. A path under `relative_root` is also subscribed
/// without it.
pub fn requested_projects(
    request: ReconcileProjectsRequest,
    relative_root: Option<&FullPath>,
) -> Result<RequestedProjects, Status> {
    if request.project.len() > MAX_PROJECTS {
        return Err(Status::invalid_argument(format!(
            "project: at most {MAX_PROJECTS} projects per request, not {}",
            request.project.len()
        )));
    }
    let mut requested = RequestedProjects::default();
    for (index, Project { id }) in request.project.into_iter().enumerate() {
        if id.is_empty() {
            return Err(Status::invalid_argument(format!(
                "project[{index}].id must not be empty"
            )));
        }
        if id.len() > MAX_PROJECT_LEN {
            return Err(Status::invalid_argument(format!(
                "project[{index}].id is longer than {MAX_PROJECT_LEN} bytes"
            )));
        }
        let path = FullPath::parse(&id).map_err(|err| {
            Status::invalid_argument(format!(
                "project[{index}].id is not a GitLab project path: {err}"
            ))
        })?;
        let stripped = path.strip_root(relative_root);
        if stripped != path {
            requested.add(stripped, &id);
        }
        requested.add(path, &id);
    }
    Ok(requested)
}

#[tonic::async_trait]
impl GitLabFlux for GitLabFluxStreams {
    type ReconcileProjectsStream = ReceiverStream<Result<ReconcileProjectsResponse, Status>>;

    async fn reconcile_projects(
        &self,
        request: Request<ReconcileProjectsRequest>,
    ) -> Result<Response<Self::ReconcileProjectsStream>, Status> {
        if self.context.shutdown.is_cancelled() {
            return Err(status::closed(CloseReason::Shutdown));
        }
        let agent = authenticate(&self.context, request.metadata()).await?;
        let requested = requested_projects(request.into_inner(), self.relative_root.as_ref())?;
        let policy = agent.policy;
        let info = StreamInfo {
            agent_name: policy.name.to_string(),
            cluster_name: None,
            agent_version: CLIENT_VERSION.to_owned(),
            connected_since: UnixMillis::now(),
            last_ack_at: None,
        };
        let registration = self
            .context
            .hub
            .register(
                policy.id,
                policy.token_generation,
                info,
                AcceptedKinds::with([EventKind::ProjectPush]),
                requested.subscriptions.clone(),
            )
            .await
            .map_err(|err| status::refused(&err))?;
        metrics::counter!(names::FLUX_STREAMS_OPENED).increment(1);
        let span = tracing::info_span!(
            "gitlab_flux_stream",
            agent = %policy.name,
            agent_id = policy.id.0,
            stream = registration.id,
        );
        span.in_scope(|| {
            tracing::info!(
                projects = requested.sent_as.values().map(Vec::len).sum::<usize>(),
                head = %registration.head,
                "GitLab flux stream opened (best effort: live events only)"
            );
        });
        let (outbound, stream) = mpsc::channel(OUTBOUND_BUFFER);
        let context = self.context.clone();
        tokio::spawn(
            async move {
                let id = registration.id;
                let end = serve(&context, registration, &requested, &outbound).await;
                context.hub.unregister(id).await;
                let reason = match &end {
                    Ok(()) => "closed",
                    Err(status) => names::close_label(status.code()),
                };
                metrics::counter!(names::FLUX_STREAMS_CLOSED, "reason" => reason).increment(1);
                match end {
                    Ok(()) => tracing::info!("GitLab flux stream ended"),
                    Err(status) => {
                        tracing::info!(reason = status.message(), "closing GitLab flux stream");
                        let _ = outbound.send(Err(status)).await;
                    }
                }
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}

/// Sends the stream's live events until the client leaves (`Ok`), the broker shuts down
/// (`Ok`: a clean end, so agentk reconnects at once), or the hub closes it (the status).
async fn serve(
    context: &StreamContext,
    registration: fluxgate_fanout::Registration,
    requested: &RequestedProjects,
    outbound: &mpsc::Sender<Result<ReconcileProjectsResponse, Status>>,
) -> Result<(), Status> {
    let fluxgate_fanout::Registration {
        mut queue, close, ..
    } = registration;
    loop {
        let delivery: Delivery = tokio::select! {
            biased;
            () = context.shutdown.cancelled() => return Ok(()),
            () = close.closed() => return closed(close.reason()),
            () = outbound.closed() => return Ok(()),
            delivery = queue.recv() => match delivery {
                Some(delivery) => delivery,
                None => return closed(close.reason()),
            },
        };
        let Some(event) = delivery.entry.as_push() else {
            continue;
        };
        for id in requested.ids_for(&delivery.matched) {
            let response = ReconcileProjectsResponse {
                project: Some(Project { id }),
            };
            tokio::select! {
                biased;
                () = context.shutdown.cancelled() => return Ok(()),
                () = close.closed() => return closed(close.reason()),
                sent = outbound.send(Ok(response)) => {
                    if sent.is_err() {
                        return Ok(());
                    }
                }
            }
            metrics::counter!(names::FLUX_NOTIFICATIONS_SENT).increment(1);
        }
        tracing::debug!(seq = %delivery.entry.seq, event_id = %event.event_id, project = %event.project.path, kind = event.kind.as_str(), "GitLab flux notification sent");
    }
}

/// How a stream the hub closed ends: shutdown cleanly, the rest with their status.
fn closed(reason: Option<CloseReason>) -> Result<(), Status> {
    match reason {
        Some(CloseReason::Shutdown) => Ok(()),
        Some(reason) => Err(status::closed(reason)),
        None => Err(Status::unavailable("stream closed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(ids: &[&str]) -> ReconcileProjectsRequest {
        ReconcileProjectsRequest {
            project: ids
                .iter()
                .map(|id| Project {
                    id: (*id).to_owned(),
                })
                .collect(),
        }
    }

    fn root() -> FullPath {
        FullPath::parse("gitlab").unwrap()
    }

    #[test]
    fn a_path_under_the_relative_root_also_subscribes_without_it() {
        let requested =
            requested_projects(request(&["gitlab/Group/App", "other/svc"]), Some(&root())).unwrap();
        let mut keys: Vec<&str> = requested
            .subscriptions
            .iter()
            .map(|s| s.project.key())
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["gitlab/group/app", "group/app", "other/svc"]);
        assert_eq!(
            requested.ids_for(&["group/app".into()]),
            ["gitlab/Group/App"]
        );
        assert_eq!(
            requested.ids_for(&["gitlab/group/app".into()]),
            ["gitlab/Group/App"]
        );
    }

    #[test]
    fn every_path_the_client_sent_for_one_project_comes_back() {
        let requested = requested_projects(
            request(&["gitlab/group/app", "group/app", "Group/App", "group/app"]),
            Some(&root()),
        )
        .unwrap();
        assert_eq!(
            requested.ids_for(&["group/app".into(), "gitlab/group/app".into()]),
            ["gitlab/group/app", "group/app", "Group/App"]
        );
        assert_eq!(requested.subscriptions.len(), 2);
    }

    #[test]
    fn without_a_root_nothing_is_stripped() {
        let requested = requested_projects(request(&["gitlab/group/app"]), None).unwrap();
        assert_eq!(requested.subscriptions.len(), 1);
        assert!(requested.ids_for(&["group/app".into()]).is_empty());
    }

    #[test]
    fn invalid_requests_name_the_field() {
        let cases: [(Vec<String>, &str); 4] = [
            (vec![String::new()], "project[0].id must not be empty"),
            (
                vec!["ok/path".to_owned(), "a b".to_owned()],
                "project[1].id is not a GitLab project path",
            ),
            (
                vec!["a".repeat(MAX_PROJECT_LEN + 1)],
                "project[0].id is longer than",
            ),
            (
                vec!["g/p".to_owned(); MAX_PROJECTS + 1],
                "at most 1024 projects per request",
            ),
        ];
        for (ids, message) in cases {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let status = requested_projects(request(&ids), None).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains(message), "{}", status.message());
        }
    }
}
