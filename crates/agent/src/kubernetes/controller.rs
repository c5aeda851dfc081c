//! The discovery controller: from the cluster's `GitRepository`, `OCIRepository` and
//! `Receiver` objects to the receivers the agent serves.
//!
//! It follows kube-rs' controller model: watches keep caches of the objects
//! ([`super::object_cache`]), and after every change one reconcile pass compares what
//! should exist with what does, level-triggered, so a missed or repeated event is harmless.
//! A pass:
//!
//! 1. judges every source ([`super::source`]); for each one on the GitLab instance (or its
//!    registry) that a push or an artifact can move, and while this replica leads, makes
//!    sure its Secret and Receiver exist and hold what they should ([`super::owned`]),
//!    writing only what differs;
//! 2. takes every Receiver that is Ready with a webhook path, the agent's own and the ones
//!    people brought (annotated with a project), as a receiver to call at
//!    `<webhook base><status.webhookPath>`;
//! 3. publishes the receiver set (static ones first) when it changed; the broker stream
//!    follows it in place (a `SubscriptionChange`, no reconnect).
//!
//! Each source's receiver says which events trigger it ([`Accepts`]): a `GitRepository`'s
//! takes pushes (and ref-less project pushes), plus pipeline artifact events of its refs
//! when annotated `fluxgate.io/pipeline-events: "true"`; an `OCIRepository`'s takes only
//! artifact events of its repository whose tag its `spec.ref` accepts, and subscribes to
//! every candidate project of its URL ([`super::registry`]).
//!
//! A write that fails is retried with backoff by a later pass. Sources it will not manage
//! (pinned, unreadable ref, a Receiver name taken by someone else or another agent) are
//! logged once each, as warnings, with what to do.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use fluxgate_core::Backoff;
use futures_util::stream::{BoxStream, SelectAll};
use futures_util::{FutureExt as _, StreamExt as _};
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::flux_api::{self, FluxApis};
use super::flux_receiver::{Maker, ReceiverView};
use super::flux_status::ObjectRef;
use super::names;
use super::object_cache::ObjectCache;
use super::owned::{OwnedObjects, receiver_body, receiver_is_current};
use super::source::{Follows, ManagedSource, SourceKind, SourceVerdict, judge, judge_oci};
use super::webhook_base::WebhookBase;
use crate::config::KubernetesSettings;
use crate::flux_path::WebhookUrl;
use crate::metric_names;
use crate::readiness::Readiness;
use crate::receiver::{Accepts, Receiver, ReceiverKind, ReceiverSet, Route};
use crate::secret::Secret;

/// A full pass runs at least this often, to retry failed writes and re-read brought
/// Receivers' Secrets.
const RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// Which watch an event came from.
#[derive(Debug, Clone, Copy)]
enum Watched {
    Source(usize),
    OciSource(usize),
    Receiver(usize),
}

type WatchEvent = (Watched, Result<Event<DynamicObject>, watcher::Error>);

/// The discovery controller of one agent process.
pub struct Controller {
    client: Client,
    settings: KubernetesSettings,
    static_receivers: Vec<Receiver>,
    publish: watch::Sender<ReceiverSet>,
    readiness: Arc<Readiness>,
    /// True while this replica leads: only then does it write.
    leading: watch::Receiver<bool>,
    /// True while this replica leads and its receiver set is complete: only then may it
    /// open a broker stream (see [`Controller::run`]).
    acting: watch::Sender<bool>,
}

/// The state of a running controller, once the Flux APIs are known.
struct Running {
    apis: FluxApis,
    owned: OwnedObjects,
    sources: Vec<ObjectCache>,
    /// One per scope while `OCIRepository` is watched; empty otherwise.
    oci_sources: Vec<ObjectCache>,
    receivers: Vec<ObjectCache>,
    /// Tokens of the agent's own Secrets, by `(namespace, secret name)`.
    tokens: HashMap<(String, String), Secret>,
    /// Tokens of brought Receivers' Secrets; re-read on every resync.
    brought_tokens: HashMap<(String, String), Secret>,
    /// Warnings already logged, so each is logged once.
    warned: HashSet<String>,
    /// Failed writes make the next pass come sooner, with backoff.
    retry: Backoff,
    retry_due: Option<tokio::time::Instant>,
}

impl Controller {
    pub fn new(
        client: Client,
        settings: KubernetesSettings,
        static_receivers: Vec<Receiver>,
        publish: watch::Sender<ReceiverSet>,
        readiness: Arc<Readiness>,
        leading: watch::Receiver<bool>,
        acting: watch::Sender<bool>,
    ) -> Self {
        Self {
            client,
            settings,
            static_receivers,
            publish,
            readiness,
            leading,
            acting,
        }
    }

    /// Waits for the Flux APIs, then watches and reconciles until `shutdown` fires.
    ///
    /// It says when the replica may act (`acting`): only once it leads *and* a complete
    /// pass has published every receiver it can serve. A stream opened earlier would
    /// subscribe to too little, and the broker's replay of what happened while no agent
    /// was streaming (a failover, a restart) would skip, for good, the events of
    /// receivers not yet in the set.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let Some(apis) = self.wait_for_flux(&shutdown).await else {
            return;
        };
        tracing::info!(
            git_repository = %apis.git_repository.api_version,
            oci_repository = ?apis.oci_repository.as_ref().map(|r| &r.api_version),
            receiver = %apis.receiver.api_version,
            gitlab = %self.settings.gitlab.host(),
            registry = ?self.settings.registry.hosts().iter().map(ToString::to_string).collect::<Vec<_>>(),
            namespaces = ?self.settings.namespaces,
            label_selector = ?self.settings.label_selector,
            "watching Flux sources"
        );
        let mut events = self.watches(&apis);
        let scopes = self.scopes().len();
        let oci_watched = self.oci_wanted() && apis.oci_repository.is_some();
        if self.oci_wanted() && !oci_watched {
            self.report_oci_missing();
        }
        let mut running = Running {
            owned: OwnedObjects::new(
                self.client.clone(),
                apis.receiver.clone(),
                self.settings.agent_id.clone(),
            ),
            apis,
            sources: (0..scopes).map(|_| ObjectCache::default()).collect(),
            oci_sources: if oci_watched {
                (0..scopes).map(|_| ObjectCache::default()).collect()
            } else {
                Vec::new()
            },
            receivers: (0..scopes).map(|_| ObjectCache::default()).collect(),
            tokens: HashMap::new(),
            brought_tokens: HashMap::new(),
            warned: HashSet::new(),
            retry: Backoff::new(Duration::from_millis(500), RESYNC_INTERVAL),
            retry_due: None,
        };
        let mut resync = tokio::time::interval(RESYNC_INTERVAL);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                Some(event) = events.next() => {
                    self.on_event(&mut running, event);
                    // Take every event already waiting before one pass.
                    while let Some(Some(event)) = events.next().now_or_never() {
                        self.on_event(&mut running, event);
                    }
                }
                changed = self.leading.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if !*self.leading.borrow() {
                        self.set_acting(false);
                    }
                }
                _ = resync.tick() => {
                    running.brought_tokens.clear();
                    self.recheck_oci(&mut running, &mut events).await;
                }
                () = sleep_until(running.retry_due) => running.retry_due = None,
            }
            let synced = running
                .sources
                .iter()
                .chain(&running.oci_sources)
                .chain(&running.receivers)
                .all(ObjectCache::is_synced);
            self.readiness.set_watches_synced(synced);
            if synced {
                self.reconcile(&mut running).await;
                self.set_acting(*self.leading.borrow());
            }
        }
    }

    fn set_acting(&self, acting: bool) {
        self.acting
            .send_if_modified(|current| std::mem::replace(current, acting) != acting);
    }

    /// True if `OCIRepository` sources can point at a configured registry host.
    fn oci_wanted(&self) -> bool {
        !self.settings.registry.hosts().is_empty()
    }

    fn report_oci_missing(&self) {
        tracing::error!(
            missing = flux_api::OCI_REPOSITORY_MISSING,
            "the cluster does not serve Flux's OCIRepository API; GitRepository sources are \
             served, OCIRepository sources are not. Checking again every {RESYNC_INTERVAL:?}"
        );
        self.readiness
            .set_flux_apis_optional_missing(vec![flux_api::OCI_REPOSITORY_MISSING.to_owned()]);
    }

    /// Asks again for the `OCIRepository` API when it was missing, and watches it once the
    /// cluster serves it.
    async fn recheck_oci(
        &self,
        running: &mut Running,
        events: &mut SelectAll<BoxStream<'static, WatchEvent>>,
    ) {
        if !self.oci_wanted() || running.apis.oci_repository.is_some() {
            return;
        }
        let resource = match flux_api::discover_oci_repository(&self.client).await {
            Ok(Some(resource)) => resource,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "cannot ask the Kubernetes API whether it serves OCIRepository");
                return;
            }
        };
        tracing::info!(oci_repository = %resource.api_version, "the cluster serves OCIRepository now; watching it");
        let scopes = self.scopes();
        running.oci_sources = (0..scopes.len()).map(|_| ObjectCache::default()).collect();
        for (index, scope) in scopes.iter().enumerate() {
            events.push(self.watch(scope, &resource, Watched::OciSource(index), true));
        }
        running.apis.oci_repository = Some(resource);
        self.readiness.set_flux_apis_optional_missing(Vec::new());
    }

    /// Polls API discovery until the cluster serves the Flux APIs.
    async fn wait_for_flux(&mut self, shutdown: &CancellationToken) -> Option<FluxApis> {
        let mut reported = None;
        loop {
            match flux_api::discover(&self.client).await {
                Ok(Ok(apis)) => {
                    self.readiness.set_flux_apis_missing(Vec::new());
                    self.readiness.set_kubernetes_error(None);
                    return Some(apis);
                }
                Ok(Err(missing)) => {
                    if reported.as_ref() != Some(&missing) {
                        tracing::error!(
                            missing = ?missing,
                            retry_every = ?flux_api::RECHECK_INTERVAL,
                            "the cluster does not serve the Flux APIs the agent needs; is Flux \
                             installed? Checking again until it is"
                        );
                        reported = Some(missing.clone());
                    }
                    self.readiness.set_kubernetes_error(None);
                    self.readiness.set_flux_apis_missing(missing);
                    // Nothing to discover yet: the static receivers are the whole set.
                    self.set_acting(*self.leading.borrow());
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot ask the Kubernetes API which Flux APIs it serves");
                    self.readiness
                        .set_kubernetes_error(Some(format!("API discovery failed: {error}")));
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(flux_api::RECHECK_INTERVAL) => {}
                changed = self.leading.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    if !*self.leading.borrow() {
                        self.set_acting(false);
                    }
                }
            }
        }
    }

    /// The namespaces to watch; `None` stands for all.
    fn scopes(&self) -> Vec<Option<String>> {
        if self.settings.namespaces.is_empty() {
            vec![None]
        } else {
            self.settings.namespaces.iter().cloned().map(Some).collect()
        }
    }

    /// One watch of each source kind and one of Receivers per scope, merged.
    fn watches(&self, apis: &FluxApis) -> SelectAll<BoxStream<'static, WatchEvent>> {
        let mut all = SelectAll::new();
        for (index, scope) in self.scopes().iter().enumerate() {
            all.push(self.watch(scope, &apis.git_repository, Watched::Source(index), true));
            if let Some(oci) = apis.oci_repository.as_ref().filter(|_| self.oci_wanted()) {
                all.push(self.watch(scope, oci, Watched::OciSource(index), true));
            }
            all.push(self.watch(scope, &apis.receiver, Watched::Receiver(index), false));
        }
        all
    }

    /// A watch of `resource` in `scope`; sources (`labels`) follow the label selector.
    fn watch(
        &self,
        scope: &Option<String>,
        resource: &ApiResource,
        watched: Watched,
        labels: bool,
    ) -> BoxStream<'static, WatchEvent> {
        let api = match scope {
            Some(namespace) => {
                Api::<DynamicObject>::namespaced_with(self.client.clone(), namespace, resource)
            }
            None => Api::<DynamicObject>::all_with(self.client.clone(), resource),
        };
        let mut config = watcher::Config::default().any_semantic();
        if labels && let Some(selector) = &self.settings.label_selector {
            config = config.labels(selector);
        }
        watcher::watcher(api, config)
            .default_backoff()
            .map(move |event| (watched, event))
            .boxed()
    }

    fn on_event(&self, running: &mut Running, (watched, event): WatchEvent) {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                let what = match watched {
                    Watched::Source(_) => SourceKind::GitRepository.as_str(),
                    Watched::OciSource(_) => SourceKind::OciRepository.as_str(),
                    Watched::Receiver(_) => "Receiver",
                };
                tracing::warn!(%error, watch = what, "Kubernetes watch failed; retrying with backoff");
                self.readiness
                    .set_kubernetes_error(Some(format!("watch of {what} failed: {error}")));
                return;
            }
        };
        self.readiness.set_kubernetes_error(None);
        match watched {
            Watched::Source(index) => running.sources[index].apply(event),
            Watched::OciSource(index) => running.oci_sources[index].apply(event),
            Watched::Receiver(index) => running.receivers[index].apply(event),
        };
    }

    /// One level-triggered pass: writes what differs (when leading), then publishes the
    /// receiver set.
    async fn reconcile(&self, running: &mut Running) {
        let leading = *self.leading.borrow();
        let mut discovered = Vec::new();
        let mut failed = false;
        let mut counts: BTreeMap<(&'static str, &'static str), u64> = BTreeMap::new();
        let sources: Vec<(SourceKind, DynamicObject)> = running
            .sources
            .iter()
            .flat_map(ObjectCache::iter)
            .map(|object| (SourceKind::GitRepository, object.clone()))
            .chain(
                running
                    .oci_sources
                    .iter()
                    .flat_map(ObjectCache::iter)
                    .map(|object| (SourceKind::OciRepository, object.clone())),
            )
            .collect();
        let oci_api_version = running
            .apis
            .oci_repository
            .as_ref()
            .map(|r| r.api_version.clone())
            .unwrap_or_default();
        for (kind, object) in &sources {
            let verdict = match kind {
                SourceKind::GitRepository => judge(
                    object,
                    &running.apis.git_repository.api_version,
                    &self.settings.gitlab,
                ),
                SourceKind::OciRepository => {
                    judge_oci(object, &oci_api_version, &self.settings.registry)
                }
            };
            *counts
                .entry((kind.as_str(), verdict_label(&verdict)))
                .or_default() += 1;
            let namespace = object.metadata.namespace.clone().unwrap_or_default();
            let name = object.metadata.name.clone().unwrap_or_default();
            let source = match verdict {
                SourceVerdict::Managed(source) => source,
                SourceVerdict::OtherHost => continue,
                other => {
                    self.warn_unmanaged(running, *kind, &namespace, &name, &other);
                    if leading {
                        failed |= !self
                            .remove_own_receiver(running, *kind, &namespace, &name)
                            .await;
                    }
                    continue;
                }
            };
            match self.serve_source(running, &source, leading).await {
                Ok(Some(receiver)) => discovered.push(receiver),
                Ok(None) => {}
                Err(()) => failed = true,
            }
        }
        let live: HashSet<(String, String)> = sources
            .iter()
            .map(|(kind, object)| {
                (
                    object.metadata.namespace.clone().unwrap_or_default(),
                    names::secret_name(*kind, object.metadata.name.as_deref().unwrap_or_default()),
                )
            })
            .collect();
        running.tokens.retain(|key, _| live.contains(key));
        discovered.extend(self.brought_receivers(running).await);
        for kind in [SourceKind::GitRepository, SourceKind::OciRepository] {
            for state in ["managed", "other_host", "opted_out", "pinned", "bad_ref"] {
                let count = counts.get(&(kind.as_str(), state)).copied().unwrap_or(0);
                metrics::gauge!(
                    metric_names::KUBERNETES_SOURCES,
                    "kind" => kind.as_str(),
                    "state" => state,
                )
                .set(count as f64);
            }
        }
        metrics::gauge!(metric_names::KUBERNETES_RECEIVERS_SERVED).set(discovered.len() as f64);
        self.publish_receivers(discovered);
        running.retry_due = if failed {
            Some(tokio::time::Instant::now() + running.retry.next_delay())
        } else {
            running.retry.reset();
            None
        };
    }

    /// Makes sure `source`'s Secret and Receiver exist (when leading), and returns the
    /// receiver to call once Flux made the Receiver Ready. `Err` means a write failed.
    async fn serve_source(
        &self,
        running: &mut Running,
        source: &ManagedSource,
        leading: bool,
    ) -> Result<Option<Receiver>, ()> {
        let receiver_name = names::receiver_name(source.kind, &source.name);
        let secret_name = names::secret_name(source.kind, &source.name);
        let existing = find(&running.receivers, &source.namespace, &receiver_name);
        let view = existing.map(|object| ReceiverView::read(object, &self.settings.agent_id));
        if let Some(view) = &view {
            match &view.maker {
                Maker::ThisAgent => {}
                Maker::OtherAgent(agent) => {
                    warn_once(
                        &mut running.warned,
                        format!("other-agent/{}/{}", source.namespace, receiver_name),
                        &format!(
                            "Receiver {}/{receiver_name} belongs to another fluxgate agent \
                             ({agent:?}); this agent leaves source {} alone. Give the agents \
                             disjoint kubernetes.namespaces or label_selector.",
                            source.namespace, source.name
                        ),
                    );
                    return Ok(None);
                }
                Maker::Someone => {
                    warn_once(
                        &mut running.warned,
                        format!("taken/{}/{}", source.namespace, receiver_name),
                        &format!(
                            "a Receiver named {}/{receiver_name} exists and was not made by \
                             fluxgate; this agent leaves source {} alone. Rename that \
                             Receiver, or annotate the source with {}: \"true\".",
                            source.namespace,
                            source.name,
                            super::annotations::OPT_OUT
                        ),
                    );
                    return Ok(None);
                }
            }
        }
        let token_key = (source.namespace.clone(), secret_name);
        if leading {
            if !running.tokens.contains_key(&token_key) {
                match running.owned.ensure_secret(source).await {
                    Ok(token) => {
                        running.tokens.insert(token_key.clone(), token);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot make the Receiver's token Secret; retrying");
                        count_write("Secret", false);
                        return Err(());
                    }
                }
            }
            let body = receiver_body(source, &running.apis.receiver, &self.settings.agent_id);
            if !existing.is_some_and(|object| receiver_is_current(object, &body)) {
                match running.owned.apply_receiver(&body, source).await {
                    Ok(()) => {
                        count_write("Receiver", true);
                        tracing::info!(
                            namespace = %source.namespace,
                            receiver = %receiver_name,
                            source = %source.name,
                            kind = source.kind.as_str(),
                            project = %source.project,
                            follows = %source.describe_follows(),
                            "applied the source's Receiver"
                        );
                    }
                    Err(error) => {
                        count_write("Receiver", false);
                        tracing::warn!(%error, "cannot apply the source's Receiver; retrying");
                        return Err(());
                    }
                }
            }
        }
        let (Some(view), Some(token)) = (view, running.tokens.get(&token_key)) else {
            return Ok(None);
        };
        let Some(path) = view.ready_path else {
            return Ok(None);
        };
        Ok(self
            .receiver(
                &view.namespace,
                &view.name,
                &path,
                source.project.clone(),
                None,
                ReceiverKind::GenericHmac,
                token.clone(),
            )
            .map(|receiver| follow_source(receiver, source)))
    }

    /// Deletes the Receiver this agent made for a source it no longer manages. Returns
    /// false if that failed.
    async fn remove_own_receiver(
        &self,
        running: &mut Running,
        kind: SourceKind,
        namespace: &str,
        source: &str,
    ) -> bool {
        let name = names::receiver_name(kind, source);
        let ours = find(&running.receivers, namespace, &name).is_some_and(|object| {
            ReceiverView::read(object, &self.settings.agent_id).maker == Maker::ThisAgent
        });
        if !ours {
            return true;
        }
        match running.owned.delete_receiver(namespace, &name).await {
            Ok(()) => {
                count_write("Receiver", true);
                tracing::info!(%namespace, receiver = %name, "deleted the Receiver of a source the agent no longer manages");
                true
            }
            Err(error) => {
                count_write("Receiver", false);
                tracing::warn!(%error, %namespace, receiver = %name, "cannot delete the Receiver; retrying");
                false
            }
        }
    }

    /// Receivers people made and annotated with a project, Ready, with their tokens.
    async fn brought_receivers(&self, running: &mut Running) -> Vec<Receiver> {
        let views: Vec<ReceiverView> = running
            .receivers
            .iter()
            .flat_map(ObjectCache::iter)
            .map(|object| ReceiverView::read(object, &self.settings.agent_id))
            .collect();
        let mut found = Vec::new();
        for view in views {
            let brought = match view.brought() {
                None => continue,
                Some(Ok(brought)) => brought,
                Some(Err(reason)) => {
                    warn_once(
                        &mut running.warned,
                        format!("brought/{}/{}/{reason}", view.namespace, view.name),
                        &format!(
                            "Receiver {}/{} is annotated with a project but cannot be used: {reason}",
                            view.namespace, view.name
                        ),
                    );
                    continue;
                }
            };
            let Some(path) = &view.ready_path else {
                continue;
            };
            let key = (view.namespace.clone(), brought.secret.clone());
            if !running.brought_tokens.contains_key(&key) {
                match running.owned.read_token(&key.0, &key.1).await {
                    Ok(Some(token)) => {
                        running.brought_tokens.insert(key.clone(), token);
                    }
                    Ok(None) => {
                        warn_once(
                            &mut running.warned,
                            format!("brought-secret/{}/{}", key.0, key.1),
                            &format!(
                                "Secret {}/{} of Receiver {} has no token; the Receiver is not called",
                                key.0, key.1, view.name
                            ),
                        );
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, namespace = %key.0, secret = %key.1, "cannot read a brought Receiver's Secret");
                        continue;
                    }
                }
            }
            let token = running.brought_tokens[&key].clone();
            found.extend(self.receiver(
                &view.namespace,
                &view.name,
                path,
                brought.project,
                brought.refs,
                brought.kind,
                token,
            ));
        }
        found
    }

    /// The receiver to call for a Ready Receiver object.
    #[allow(clippy::too_many_arguments)]
    fn receiver(
        &self,
        namespace: &str,
        name: &str,
        webhook_path: &str,
        project: fluxgate_core::FullPath,
        refs: Option<fluxgate_core::RefPattern>,
        kind: ReceiverKind,
        token: Secret,
    ) -> Option<Receiver> {
        let (base, route) = match &self.settings.webhook_base {
            WebhookBase::Direct(base) => (base.clone(), Route::Direct),
            WebhookBase::ServiceProxy { path } => {
                (format!("http://kubernetes-api{path}"), Route::KubernetesApi)
            }
        };
        let url = match WebhookUrl::join(&base, webhook_path) {
            Ok(url) => url,
            Err(error) => {
                tracing::warn!(%error, %namespace, receiver = %name, "unusable webhook path");
                return None;
            }
        };
        Some(Receiver {
            name: format!("{namespace}/{name}"),
            project,
            also_projects: Vec::new(),
            ref_pattern: refs,
            accepts: Accepts::Pushes,
            kind,
            url,
            token,
            route,
            synced_source: None,
        })
    }

    /// Publishes static receivers plus `discovered`, if that differs from the current set.
    fn publish_receivers(&self, discovered: Vec<Receiver>) {
        let static_names: HashSet<&str> = self
            .static_receivers
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        let mut set = self.static_receivers.clone();
        set.extend(
            discovered
                .into_iter()
                .filter(|r| !static_names.contains(r.name.as_str())),
        );
        self.publish.send_if_modified(|current| {
            if same_receivers(current, &set) {
                return false;
            }
            tracing::info!(receivers = set.len(), "the receiver set changed");
            *current = Arc::new(set);
            true
        });
    }

    fn warn_unmanaged(
        &self,
        running: &mut Running,
        kind: SourceKind,
        namespace: &str,
        name: &str,
        verdict: &SourceVerdict,
    ) {
        let kind = kind.as_str();
        let message = match verdict {
            SourceVerdict::Pinned {
                kind: SourceKind::GitRepository,
                project,
                pin,
            } => format!(
                "{kind} {namespace}/{name} ({project}) is pinned to commit {pin}: no push can \
                 move it, so it is not triggered"
            ),
            SourceVerdict::Pinned {
                kind: SourceKind::OciRepository,
                project,
                pin,
            } => format!(
                "{kind} {namespace}/{name} ({project}) is pinned to digest {pin}: no artifact \
                 can move it, so it is not triggered"
            ),
            SourceVerdict::BadRef {
                project: Some(project),
                error,
                ..
            } => {
                format!("{kind} {namespace}/{name} ({project}) is not triggered: {error}")
            }
            SourceVerdict::BadRef {
                project: None,
                error,
                ..
            } => {
                format!("{kind} {namespace}/{name} is not triggered: {error}")
            }
            SourceVerdict::OptedOut => {
                tracing::debug!(%namespace, %name, "source opted out");
                return;
            }
            SourceVerdict::Managed(_) | SourceVerdict::OtherHost => return,
        };
        warn_once(
            &mut running.warned,
            format!("source/{namespace}/{name}/{message}"),
            &message,
        );
    }
}

/// Makes `receiver` (made for a managed source's Receiver) follow what moves the source.
fn follow_source(mut receiver: Receiver, source: &ManagedSource) -> Receiver {
    receiver.synced_source = Some(ObjectRef::new(
        source.kind.as_str(),
        &source.namespace,
        &source.name,
    ));
    match &source.follows {
        Follows::Git {
            refs,
            pipeline_events,
        } => {
            receiver.ref_pattern = Some(refs.clone());
            receiver.accepts = if *pipeline_events {
                Accepts::PushesAndArtifacts
            } else {
                Accepts::Pushes
            };
        }
        Follows::Oci {
            candidates,
            repository,
            tags,
        } => {
            // Every ref: an artifact's ref says nothing about its tag; the tag decides.
            receiver.ref_pattern = None;
            receiver.also_projects = candidates
                .iter()
                .filter(|candidate| candidate.key() != source.project.key())
                .cloned()
                .collect();
            receiver.accepts = Accepts::Artifacts {
                repository: repository.clone(),
                tags: tags.clone(),
            };
        }
    }
    receiver
}

/// Logs `message` as a warning unless `key` was warned about before.
fn warn_once(warned: &mut HashSet<String>, key: String, message: &str) {
    if warned.insert(key) {
        tracing::warn!("{message}");
    }
}

fn find<'a>(caches: &'a [ObjectCache], namespace: &str, name: &str) -> Option<&'a DynamicObject> {
    caches.iter().find_map(|cache| cache.get(namespace, name))
}

fn verdict_label(verdict: &SourceVerdict) -> &'static str {
    match verdict {
        SourceVerdict::Managed(_) => "managed",
        SourceVerdict::OtherHost => "other_host",
        SourceVerdict::OptedOut => "opted_out",
        SourceVerdict::Pinned { .. } => "pinned",
        SourceVerdict::BadRef { .. } => "bad_ref",
    }
}

fn count_write(kind: &'static str, ok: bool) {
    metrics::counter!(
        metric_names::KUBERNETES_WRITES,
        "kind" => kind,
        "outcome" => if ok { "ok" } else { "error" },
    )
    .increment(1);
}

/// True if both sets hold the same receivers with the same definitions, in order.
fn same_receivers(a: &[Receiver], b: &[Receiver]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(a, b)| a.name == b.name && crate::dispatch::same_definition(a, b))
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
