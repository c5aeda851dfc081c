//! Watching the sync: after the agent called a source's Receiver for an event, it follows
//! Flux until the push is applied, and reports each stage to the broker.
//!
//! 1. **Fetched**: the source's `status.artifact.revision` carries the event's commit (or
//!    digest), or moved on from what it was when the Receiver was called (a later push
//!    that Flux fetched first also brings this one).
//! 2. **Applied** / **failed**, per Kustomization and HelmRelease that uses the source: it
//!    is `Ready=True` with that revision applied, or `Ready=False` having attempted it
//!    (with Flux's message). See [`super::flux_status`].
//! 3. **Timed out**: the deadline (`kubernetes.sync_watch.deadline`) passed first; the
//!    report names the object still awaited and what its `Ready` condition said.
//!
//! Like the discovery controller, it keeps kube-rs watches' caches and re-evaluates after
//! every change (level-triggered). It watches every source kind and each workload kind the
//! cluster serves (both optional: without Kustomizations a sync ends at fetched). A
//! source with no workload using it ends at fetched. It tracks at most [`MAX_TRACKED`]
//! triggers (the oldest is given up, counted and logged). Reports go to the broker stream
//! through a bounded queue ([`REPORT_QUEUE`]); what does not fit is dropped and counted.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use fluxgate_core::UnixMillis;
use fluxgate_proto::prost_types::Timestamp;
use fluxgate_proto::v1 as proto;
use futures_util::stream::{BoxStream, SelectAll};
use futures_util::{FutureExt as _, StreamExt as _};
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::flux_api;
use super::flux_status::{
    ObjectRef, Wanted, WorkloadState, artifact_revision, ready, workload_source, workload_state,
};
use super::object_cache::ObjectCache;
use crate::metric_names;

/// Triggers tracked at most.
pub const MAX_TRACKED: usize = 1024;
/// Reports waiting for the broker stream at most.
pub const REPORT_QUEUE: usize = 4096;
/// Triggers waiting for the watcher at most.
const TRIGGER_QUEUE: usize = 1024;
/// Earlier events one trigger's delivery covered (coalesced) that are reported with it.
const MAX_COVERED: usize = 64;
/// How often deadlines are checked.
const TICK: Duration = Duration::from_secs(1);
/// How often a cluster without the source APIs is asked again.
const RECHECK: Duration = Duration::from_secs(30);

/// A Receiver call that answered 2xx for an event: its source, and what to look for.
#[derive(Debug, Clone)]
pub struct Triggered {
    pub source: ObjectRef,
    /// The event delivered, then the earlier ones its delivery covered.
    pub seqs: Vec<u64>,
    pub wanted: Wanted,
    /// The event's `received_at` (broker clock), echoed in reports.
    pub event_received_at: Option<UnixMillis>,
}

/// The workers' handle: hands triggers to the watcher without waiting.
#[derive(Debug, Clone)]
pub struct SyncTriggers(mpsc::Sender<Triggered>);

impl SyncTriggers {
    pub fn triggered(&self, mut triggered: Triggered) {
        triggered.seqs.truncate(MAX_COVERED + 1);
        if self.0.try_send(triggered).is_err() {
            metrics::counter!(metric_names::SYNC_WATCH_DROPPED, "what" => "trigger").increment(1);
            tracing::debug!("sync watch queue full; a trigger is not followed");
        }
    }
}

/// What the watcher sends: one report per stage, event and object.
pub type SyncReports = mpsc::Receiver<proto::SyncReport>;

/// Makes the channels of a watcher: its triggers, and the reports it sends.
pub fn channels() -> (
    SyncTriggers,
    mpsc::Receiver<Triggered>,
    mpsc::Sender<proto::SyncReport>,
    SyncReports,
) {
    let (triggers, triggered) = mpsc::channel(TRIGGER_QUEUE);
    let (reports, reported) = mpsc::channel(REPORT_QUEUE);
    (SyncTriggers(triggers), triggered, reports, reported)
}

/// One trigger being followed.
#[derive(Debug)]
struct Tracking {
    triggered: Triggered,
    /// The source's revision when the trigger arrived.
    revision_before: Option<String>,
    deadline: Instant,
    /// The revision fetched, once it was.
    fetched: Option<String>,
    /// Workloads that applied or failed.
    done: HashSet<ObjectRef>,
}

/// The caches of one kind, one per scope.
struct Watched {
    kind: String,
    caches: Vec<ObjectCache>,
}

/// The watcher of one agent process.
pub struct SyncWatch {
    client: Client,
    scopes: Vec<Option<String>>,
    deadline: Duration,
    triggered: mpsc::Receiver<Triggered>,
    reports: mpsc::Sender<proto::SyncReport>,
}

impl SyncWatch {
    /// `namespaces`: the namespaces to watch, empty for all.
    pub fn new(
        client: Client,
        namespaces: &[String],
        deadline: Duration,
        triggered: mpsc::Receiver<Triggered>,
        reports: mpsc::Sender<proto::SyncReport>,
    ) -> Self {
        let scopes = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().cloned().map(Some).collect()
        };
        Self {
            client,
            scopes,
            deadline,
            triggered,
            reports,
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let Some(resources) = self.resources(&shutdown).await else {
            return;
        };
        tracing::info!(
            kinds = ?resources.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(),
            deadline = ?self.deadline,
            "watching the sync of triggered sources"
        );
        let mut watched: Vec<Watched> = Vec::new();
        let mut events: SelectAll<BoxStream<'static, (usize, usize, WatchResult)>> =
            SelectAll::new();
        for (kind_index, resource) in resources.iter().enumerate() {
            watched.push(Watched {
                kind: resource.kind.clone(),
                caches: self.scopes.iter().map(|_| ObjectCache::default()).collect(),
            });
            for (scope_index, scope) in self.scopes.iter().enumerate() {
                let api = match scope {
                    Some(namespace) => Api::<DynamicObject>::namespaced_with(
                        self.client.clone(),
                        namespace,
                        resource,
                    ),
                    None => Api::<DynamicObject>::all_with(self.client.clone(), resource),
                };
                events.push(
                    watcher::watcher(api, watcher::Config::default().any_semantic())
                        .default_backoff()
                        .map(move |event| (kind_index, scope_index, event))
                        .boxed(),
                );
            }
        }
        let mut tracked: VecDeque<Tracking> = VecDeque::new();
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                Some(triggered) = self.triggered.recv() => {
                    let revision_before = find(&watched, &triggered.source)
                        .and_then(artifact_revision)
                        .map(str::to_owned);
                    if tracked.len() == MAX_TRACKED
                        && let Some(oldest) = tracked.pop_front()
                    {
                        metrics::counter!(metric_names::SYNC_WATCH_DROPPED, "what" => "tracking").increment(1);
                        tracing::warn!(
                            seqs = ?oldest.triggered.seqs,
                            source = %oldest.triggered.source,
                            "following more than {MAX_TRACKED} syncs; giving up the oldest"
                        );
                    }
                    tracked.push_back(Tracking {
                        triggered,
                        revision_before,
                        deadline: Instant::now() + self.deadline,
                        fetched: None,
                        done: HashSet::new(),
                    });
                }
                Some((kind, scope, event)) = events.next() => {
                    apply(&mut watched, kind, scope, event);
                    while let Some(Some((kind, scope, event))) = events.next().now_or_never() {
                        apply(&mut watched, kind, scope, event);
                    }
                }
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            tracked.retain_mut(|tracking| !self.evaluate(&watched, tracking, now));
            metrics::gauge!(metric_names::SYNC_WATCH_TRACKED).set(tracked.len() as f64);
        }
    }

    /// The kinds to watch: the sources the cluster serves, then the workloads.
    async fn resources(&self, shutdown: &CancellationToken) -> Option<Vec<ApiResource>> {
        loop {
            let found = async {
                let sources = match flux_api::discover(&self.client).await? {
                    Ok(apis) => std::iter::once(apis.git_repository)
                        .chain(apis.oci_repository)
                        .collect(),
                    Err(_missing) => Vec::new(),
                };
                let workloads = flux_api::discover_workloads(&self.client).await?;
                Ok::<_, kube::Error>((sources, workloads))
            };
            match found.await {
                Ok((sources, workloads)) if !sources.is_empty() => {
                    if workloads.is_empty() {
                        tracing::warn!(
                            "the cluster serves neither Kustomization (v1) nor HelmRelease \
                             (v2): syncs are followed until the source fetched the revision"
                        );
                    }
                    return Some(sources.into_iter().chain(workloads).collect::<Vec<_>>());
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "cannot ask the Kubernetes API which Flux APIs it serves");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    /// Reports what `tracking` reached since the last pass. True when it is over.
    fn evaluate(&self, watched: &[Watched], tracking: &mut Tracking, now: Instant) -> bool {
        let source = find(watched, &tracking.triggered.source);
        if tracking.fetched.is_none() {
            let revision = source.and_then(artifact_revision);
            if let Some(revision) = revision.filter(|revision| {
                tracking.triggered.wanted.is_in(revision)
                    || tracking.revision_before.as_deref() != Some(*revision)
            }) {
                tracking.fetched = Some(revision.to_owned());
                let object = tracking.triggered.source.to_string();
                self.report(tracking, proto::SyncStage::Fetched, &object, revision, "");
            }
        }
        let Some(revision) = tracking.fetched.clone() else {
            if now >= tracking.deadline {
                let why = source
                    .and_then(ready)
                    .map(|(status, message)| {
                        format!("; its Ready condition is {status}: {message}")
                    })
                    .unwrap_or_else(|| "; the source does not exist".to_owned());
                let message = format!(
                    "waited {:?} for the source to fetch the revision{why}",
                    self.deadline
                );
                let object = tracking.triggered.source.to_string();
                let before = tracking.revision_before.clone().unwrap_or_default();
                self.report(
                    tracking,
                    proto::SyncStage::TimedOut,
                    &object,
                    &before,
                    &message,
                );
                return true;
            }
            return false;
        };
        let mut pending = Vec::new();
        for workloads in watched.iter().filter(|w| is_workload(&w.kind)) {
            for object in workloads.caches.iter().flat_map(ObjectCache::iter) {
                if workload_source(&workloads.kind, object).as_ref()
                    != Some(&tracking.triggered.source)
                {
                    continue;
                }
                let workload = ObjectRef::of(&workloads.kind, object);
                if tracking.done.contains(&workload) {
                    continue;
                }
                match workload_state(&workloads.kind, object, &revision) {
                    WorkloadState::Applied => {
                        self.report(
                            tracking,
                            proto::SyncStage::Applied,
                            &workload.to_string(),
                            &revision,
                            "",
                        );
                        tracking.done.insert(workload);
                    }
                    WorkloadState::Failed(message) => {
                        self.report(
                            tracking,
                            proto::SyncStage::Failed,
                            &workload.to_string(),
                            &revision,
                            &message,
                        );
                        tracking.done.insert(workload);
                    }
                    WorkloadState::Pending => pending.push((workload, object)),
                }
            }
        }
        if pending.is_empty() {
            return true;
        }
        if now >= tracking.deadline {
            for (workload, object) in pending {
                let why = ready(object)
                    .map(|(status, message)| {
                        format!("; its Ready condition is {status}: {message}")
                    })
                    .unwrap_or_default();
                let message = format!(
                    "waited {:?} for {revision} to be applied{why}",
                    self.deadline
                );
                self.report(
                    tracking,
                    proto::SyncStage::TimedOut,
                    &workload.to_string(),
                    &revision,
                    &message,
                );
            }
            return true;
        }
        false
    }

    /// Sends one report per seq the tracking stands for.
    fn report(
        &self,
        tracking: &Tracking,
        stage: proto::SyncStage,
        object: &str,
        revision: &str,
        message: &str,
    ) {
        let label = match stage {
            proto::SyncStage::Fetched => "fetched",
            proto::SyncStage::Applied => "applied",
            proto::SyncStage::Failed => "failed",
            proto::SyncStage::TimedOut | proto::SyncStage::Unspecified => "timed_out",
        };
        metrics::counter!(metric_names::SYNC_STAGES, "stage" => label).increment(1);
        let seqs = &tracking.triggered.seqs;
        match stage {
            proto::SyncStage::Failed | proto::SyncStage::TimedOut => {
                tracing::warn!(?seqs, stage = label, %object, %revision, %message, "sync did not complete")
            }
            _ => tracing::info!(?seqs, stage = label, %object, %revision, "sync stage reached"),
        }
        let observed_at = timestamp(UnixMillis::now());
        for seq in seqs {
            let report = proto::SyncReport {
                seq: *seq,
                stage: stage as i32,
                object: cut(object, fluxgate_core::delivery::MAX_OBJECT_BYTES),
                revision: cut(revision, fluxgate_core::delivery::MAX_REVISION_BYTES),
                message: cut(message, fluxgate_core::delivery::MAX_MESSAGE_BYTES),
                observed_at: Some(observed_at),
                event_received_at: tracking.triggered.event_received_at.map(timestamp),
            };
            if self.reports.try_send(report).is_err() {
                metrics::counter!(metric_names::SYNC_WATCH_DROPPED, "what" => "report")
                    .increment(1);
            }
        }
    }
}

type WatchResult = Result<Event<DynamicObject>, watcher::Error>;

fn apply(watched: &mut [Watched], kind: usize, scope: usize, event: WatchResult) {
    match event {
        Ok(event) => {
            watched[kind].caches[scope].apply(event);
        }
        Err(error) => {
            tracing::debug!(%error, kind = %watched[kind].kind, "sync watch failed; retrying with backoff");
        }
    }
}

fn is_workload(kind: &str) -> bool {
    matches!(kind, "Kustomization" | "HelmRelease")
}

fn find<'a>(watched: &'a [Watched], object: &ObjectRef) -> Option<&'a DynamicObject> {
    watched
        .iter()
        .filter(|w| w.kind == object.kind)
        .flat_map(|w| &w.caches)
        .find_map(|cache| cache.get(&object.namespace, &object.name))
}

fn timestamp(at: UnixMillis) -> Timestamp {
    Timestamp {
        seconds: at.get().div_euclid(1000),
        nanos: i32::try_from(at.get().rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// `text` cut to `max` bytes on a character boundary, without control characters.
fn cut(text: &str, max: usize) -> String {
    let mut text: String = text.chars().filter(|c| !c.is_control()).collect();
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
