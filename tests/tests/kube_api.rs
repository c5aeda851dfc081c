//! The Kubernetes API stand-in and the notification-controller stand-in, driven by the real
//! kube-rs client over HTTP, as the agent's Kubernetes mode will drive them.

use std::time::Duration;

use fluxgate_e2e::flux_receiver::{FluxReceiverStandIn, Receiver, ReceiverType, sha256_signature};
use fluxgate_e2e::kube_api::{
    FluxCrds, KubeApiStandIn, NotificationControllerStandIn, Options, SOURCE_GROUP,
};
use futures_util::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Config, discovery};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(10);

struct Setup {
    api: KubeApiStandIn,
    client: Client,
    _dir: tempfile::TempDir,
}

async fn setup_with(options: Options) -> Setup {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = KubeApiStandIn::start_with(options).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = api.write_kubeconfig(dir.path());
    let kubeconfig = Kubeconfig::read_from(&path).expect("read the written kubeconfig");
    let options = KubeConfigOptions {
        context: Some("standin".to_owned()),
        ..KubeConfigOptions::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .expect("kubeconfig makes a client config");
    let client = Client::try_from(config).expect("client from config");
    Setup {
        api,
        client,
        _dir: dir,
    }
}

async fn setup() -> Setup {
    setup_with(Options {
        bookmark_interval: Duration::from_millis(200),
        ..Options::default()
    })
    .await
}

fn dynamic_api(
    client: &Client,
    group: &str,
    version: &str,
    kind: &str,
    ns: &str,
) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(client.clone(), ns, &resource)
}

fn object<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("valid object")
}

fn api_error(error: kube::Error) -> Box<kube::core::Status> {
    match error {
        kube::Error::Api(status) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn next_within<S: Stream + Unpin>(stream: &mut S) -> S::Item {
    tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("stream item within the deadline")
        .expect("stream has not ended")
}

/// The watcher's next events are a complete (re-)list: `Init`, then `InitDone` (the test
/// objects are created after the list, so no `InitApply` comes between).
async fn expect_listed<S>(events: &mut S)
where
    S: futures_util::Stream<Item = Result<Event<Secret>, watcher::Error>> + Unpin,
{
    assert!(matches!(
        next_within(events).await.expect("init"),
        Event::Init
    ));
    assert!(matches!(
        next_within(events).await.expect("init done"),
        Event::InitDone
    ));
}

fn git_repository(name: &str) -> Value {
    json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": name, "namespace": "flux-system"},
        "spec": {"url": "https://gitlab.example.com/group/app.git", "interval": "1m", "ref": {"branch": "main"}},
    })
}

fn secret(name: &str, namespace: &str, token: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"token": token},
    })
}

fn receiver(name: &str, receiver_type: &str, secret: Option<&str>, resource: Value) -> Value {
    let mut receiver = json!({
        "apiVersion": "notification.toolkit.fluxcd.io/v1",
        "kind": "Receiver",
        "metadata": {"name": name, "namespace": "flux-system"},
        "spec": {"type": receiver_type, "resources": [resource]},
    });
    if let Some(secret) = secret {
        receiver["spec"]["secretRef"] = json!({"name": secret});
    }
    receiver
}

#[tokio::test]
async fn requests_need_the_kubeconfig_token() {
    let setup = setup().await;
    let anonymous = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/namespaces/default/secrets",
            setup.api.url()
        ))
        .send()
        .await
        .expect("request reaches the stand-in");
    assert_eq!(anonymous.status().as_u16(), 401);
    let status: Value = anonymous.json().await.expect("a Status body");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Unauthorized");
    let secrets: Api<Secret> = Api::namespaced(setup.client.clone(), "default");
    assert!(
        secrets
            .list(&ListParams::default())
            .await
            .expect("authorised list")
            .items
            .is_empty()
    );
    let version = setup.client.apiserver_version().await.expect("version");
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
}

#[tokio::test]
async fn flux_types_appear_in_discovery_only_once_installed() {
    let setup = setup().await;
    let client = &setup.client;
    let git_v1 = GroupVersionKind::gvk(SOURCE_GROUP, "v1", "GitRepository");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    assert_eq!(
        api_error(discovery::pinned_kind(client, &git_v1).await.unwrap_err()).code,
        404
    );
    assert_eq!(
        api_error(
            crds.get("gitrepositories.source.toolkit.fluxcd.io")
                .await
                .unwrap_err()
        )
        .code,
        404
    );
    let groups = client.list_api_groups().await.expect("group list");
    assert!(groups.groups.iter().all(|g| g.name != SOURCE_GROUP));
    let repos = dynamic_api(client, SOURCE_GROUP, "v1", "GitRepository", "flux-system");
    assert_eq!(
        api_error(repos.list(&ListParams::default()).await.unwrap_err()).code,
        404
    );

    setup.api.install_flux_crds(FluxCrds::CURRENT);
    let (resource, capabilities) = discovery::pinned_kind(client, &git_v1)
        .await
        .expect("v1 GitRepository");
    assert_eq!(resource.plural, "gitrepositories");
    assert_eq!(capabilities.scope, discovery::Scope::Namespaced);
    assert!(
        capabilities
            .subresources
            .iter()
            .any(|(r, _)| r.plural == "status")
    );
    let beta = GroupVersionKind::gvk(SOURCE_GROUP, "v1beta2", "GitRepository");
    discovery::pinned_kind(client, &beta)
        .await
        .expect("v1beta2 is served too");
    let group = discovery::group(client, SOURCE_GROUP)
        .await
        .expect("source group");
    assert_eq!(group.preferred_version_or_latest(), "v1");
    let everything = discovery::Discovery::new(client.clone())
        .run()
        .await
        .expect("full discovery");
    assert!(everything.has_group("notification.toolkit.fluxcd.io"));
    let crd = crds
        .get("gitrepositories.source.toolkit.fluxcd.io")
        .await
        .expect("the CRD");
    let served: Vec<&str> = crd
        .spec
        .versions
        .iter()
        .filter(|v| v.served)
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(served, ["v1", "v1beta2"]);
    let established = crd.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        established
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );

    // One set of objects, visible under each served version.
    repos
        .create(&PostParams::default(), &object(git_repository("app")))
        .await
        .expect("create v1");
    let as_beta = dynamic_api(
        client,
        SOURCE_GROUP,
        "v1beta2",
        "GitRepository",
        "flux-system",
    );
    let listed = as_beta
        .list(&ListParams::default())
        .await
        .expect("list v1beta2");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(
        listed.items[0]
            .types
            .as_ref()
            .map(|t| t.api_version.as_str()),
        Some("source.toolkit.fluxcd.io/v1beta2")
    );
}

#[tokio::test]
async fn an_old_flux_serves_git_repositories_only_as_v1beta2() {
    let setup = setup().await;
    setup.api.install_flux_crds(FluxCrds::OLD_BETA_SOURCES);
    let client = &setup.client;
    let v1 = GroupVersionKind::gvk(SOURCE_GROUP, "v1", "GitRepository");
    assert_eq!(
        api_error(discovery::pinned_kind(client, &v1).await.unwrap_err()).code,
        404
    );
    let beta = GroupVersionKind::gvk(SOURCE_GROUP, "v1beta2", "GitRepository");
    discovery::pinned_kind(client, &beta)
        .await
        .expect("v1beta2 served");
}

#[tokio::test]
async fn list_filters_by_label_and_field_selectors() {
    let setup = setup().await;
    for (name, namespace, tier) in [("a", "one", "web"), ("b", "one", "db"), ("c", "two", "web")] {
        let mut value = secret(name, namespace, "t");
        value["metadata"]["labels"] = json!({"tier": tier});
        setup.api.create(value).expect("create");
    }
    let names = |list: kube::core::ObjectList<Secret>| -> Vec<String> {
        list.items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect()
    };
    let everywhere: Api<Secret> = Api::all(setup.client.clone());
    let web = everywhere
        .list(&ListParams::default().labels("tier=web"))
        .await
        .unwrap();
    assert_eq!(names(web), ["a", "c"]);
    let not_web = everywhere
        .list(&ListParams::default().labels("tier notin (web)"))
        .await
        .unwrap();
    assert_eq!(names(not_web), ["b"]);
    let one: Api<Secret> = Api::namespaced(setup.client.clone(), "one");
    assert_eq!(
        names(one.list(&ListParams::default()).await.unwrap()),
        ["a", "b"]
    );
    let by_field = everywhere
        .list(&ListParams::default().fields("metadata.name=c"))
        .await
        .unwrap();
    assert_eq!(names(by_field), ["c"]);
    let rv = one
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version;
    assert_eq!(rv, Some(setup.api.resource_version().to_string()));
}

#[tokio::test]
async fn the_watcher_sees_added_modified_and_deleted() {
    let setup = setup().await;
    let secrets: Api<Secret> = Api::namespaced(setup.client.clone(), "apps");
    let mut events = watcher::watcher(secrets.clone(), watcher::Config::default()).boxed();
    expect_listed(&mut events).await;
    secrets
        .create(&PostParams::default(), &object(secret("s", "apps", "one")))
        .await
        .expect("create");
    let patch = json!({"metadata": {"labels": {"changed": "yes"}}});
    secrets
        .patch("s", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    secrets
        .delete("s", &DeleteParams::default())
        .await
        .expect("delete");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match next_within(&mut events).await.expect("watch event") {
            Event::Apply(s) => seen.push((
                "apply",
                s.metadata
                    .labels
                    .unwrap_or_default()
                    .contains_key("changed"),
            )),
            Event::Delete(_) => seen.push(("delete", true)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, [("apply", false), ("apply", true), ("delete", true)]);
}

#[tokio::test]
async fn an_expired_resource_version_makes_the_watcher_relist_and_continue() {
    let setup = setup().await;
    let secrets: Api<Secret> = Api::namespaced(setup.client.clone(), "apps");
    let config = watcher::Config::default().disable_bookmarks();
    let mut events = watcher::watcher(secrets.clone(), config).boxed();
    expect_listed(&mut events).await;
    // A change the secret watcher does not see moves the global resourceVersion past it;
    // compacting makes its resourceVersion too old; ending its watch makes it re-watch.
    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other", "namespace": "apps"}});
    setup.api.create(config_map).expect("create");
    setup.api.compact_history();
    setup.api.end_all_watches();
    match next_within(&mut events).await {
        Err(watcher::Error::WatchError(status)) => assert_eq!(status.code, 410),
        other => panic!("expected a 410 watch error, got {other:?}"),
    }
    expect_listed(&mut events).await;
    setup
        .api
        .create(secret("after", "apps", "t"))
        .expect("create");
    match next_within(&mut events).await.expect("event after relist") {
        Event::Apply(s) => assert_eq!(s.metadata.name.as_deref(), Some("after")),
        other => panic!("unexpected {other:?}"),
    }
    let lists = setup
        .api
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/namespaces/apps/secrets" && !r.query.contains("watch"))
        .count();
    assert_eq!(lists, 2, "one list at start, one after the 410");
}

#[tokio::test]
async fn idle_watches_get_bookmarks_and_end_after_their_timeout() {
    let setup = setup().await;
    let secrets: Api<Secret> = Api::namespaced(setup.client.clone(), "apps");
    setup
        .api
        .create(secret("other-namespace", "elsewhere", "t"))
        .expect("create");
    let start = setup.api.resource_version() - 1;
    let params = WatchParams::default().timeout(2);
    assert!(params.bookmarks, "kube asks for bookmarks by default");
    let mut stream = secrets
        .watch(&params, &start.to_string())
        .await
        .expect("watch")
        .boxed();
    match next_within(&mut stream).await.expect("bookmark") {
        WatchEvent::Bookmark(bookmark) => {
            assert_eq!(
                bookmark.metadata.resource_version,
                setup.api.resource_version().to_string()
            );
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while stream.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the watch ends after timeoutSeconds");
}

#[tokio::test]
async fn server_side_apply_creates_is_idempotent_and_reports_conflicts() {
    let setup = setup().await;
    let maps: Api<ConfigMap> = Api::namespaced(setup.client.clone(), "apps");
    let desired = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "owned", "labels": {"app": "x"}},
        "data": {"key": "one", "extra": "e"},
    });
    let created = maps
        .patch(
            "owned",
            &PatchParams::apply("agent"),
            &Patch::Apply(&desired),
        )
        .await
        .expect("apply creates");
    let rv = created.metadata.resource_version.clone();
    let again = maps
        .patch(
            "owned",
            &PatchParams::apply("agent"),
            &Patch::Apply(&desired),
        )
        .await
        .expect("re-apply");
    assert_eq!(
        again.metadata.resource_version, rv,
        "a no-op apply writes nothing"
    );

    let rival = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owned"}, "data": {"key": "two"}});
    let conflict = api_error(
        maps.patch("owned", &PatchParams::apply("rival"), &Patch::Apply(&rival))
            .await
            .unwrap_err(),
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(
        conflict
            .message
            .contains("conflict with \"agent\": .data.key"),
        "{}",
        conflict.message
    );
    let forced = maps
        .patch(
            "owned",
            &PatchParams::apply("rival").force(),
            &Patch::Apply(&rival),
        )
        .await
        .expect("forced");
    assert_eq!(
        forced
            .data
            .as_ref()
            .and_then(|d| d.get("key"))
            .map(String::as_str),
        Some("two")
    );
    let managers: Vec<(String, String)> = forced
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            (
                m.manager.unwrap_or_default(),
                m.operation.unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("rival".to_owned(), "Apply".to_owned())),
        "{managers:?}"
    );

    // The agent stops applying `extra`: nobody else owns it, so it goes.
    let trimmed = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owned", "labels": {"app": "x"}}, "data": {}});
    let after = maps
        .patch(
            "owned",
            &PatchParams::apply("agent"),
            &Patch::Apply(&trimmed),
        )
        .await
        .expect("apply less");
    let data = after.data.unwrap_or_default();
    assert!(!data.contains_key("extra"), "{data:?}");
    assert_eq!(
        data.get("key").map(String::as_str),
        Some("two"),
        "the rival's field stays"
    );

    let raw = reqwest::Client::new()
        .patch(format!(
            "{}/api/v1/namespaces/apps/configmaps/owned",
            setup.api.url()
        ))
        .bearer_auth(setup.api.token())
        .header("Content-Type", "application/apply-patch+yaml")
        .body(desired.to_string())
        .send()
        .await
        .expect("request reaches the stand-in");
    assert_eq!(raw.status().as_u16(), 422, "apply needs a fieldManager");
}

#[tokio::test]
async fn status_is_a_subresource_of_flux_objects() {
    let setup = setup().await;
    setup.api.install_flux_crds(FluxCrds::CURRENT);
    let repos = dynamic_api(
        &setup.client,
        SOURCE_GROUP,
        "v1",
        "GitRepository",
        "flux-system",
    );
    let mut with_status = git_repository("app");
    with_status["status"] = json!({"artifact": {"revision": "main@sha1:abc"}});
    let created = repos
        .create(&PostParams::default(), &object(with_status))
        .await
        .expect("create");
    assert!(
        created.data.get("status").is_none(),
        "create ignores status"
    );
    assert_eq!(created.metadata.generation, Some(1));

    let status = json!({"status": {"artifact": {"revision": "main@sha1:def"}}});
    let updated = repos
        .patch_status("app", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status patch");
    assert_eq!(
        updated.data["status"]["artifact"]["revision"],
        "main@sha1:def"
    );
    assert_eq!(
        updated.metadata.generation,
        Some(1),
        "status writes keep the generation"
    );

    let sneaky =
        json!({"spec": {"interval": "5m"}, "status": {"artifact": {"revision": "forged"}}});
    let patched = repos
        .patch("app", &PatchParams::default(), &Patch::Merge(&sneaky))
        .await
        .expect("main patch");
    assert_eq!(
        patched.data["status"]["artifact"]["revision"], "main@sha1:def",
        "the main resource ignores status"
    );
    assert_eq!(patched.data["spec"]["interval"], "5m");
    assert_eq!(
        patched.metadata.generation,
        Some(2),
        "a spec change bumps the generation"
    );

    let spec_via_status = json!({"spec": {"interval": "9m"}});
    let unchanged = repos
        .patch_status(
            "app",
            &PatchParams::default(),
            &Patch::Merge(&spec_via_status),
        )
        .await
        .expect("status patch");
    assert_eq!(
        unchanged.data["spec"]["interval"], "5m",
        "the status subresource ignores spec"
    );
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_what_it_owns() {
    let setup = setup().await;
    setup.api.install_flux_crds(FluxCrds::CURRENT);
    let owner = setup.api.create(git_repository("app")).expect("owner");
    let reference = json!([{
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "name": "app",
        "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
    }]);
    let mut owned = secret("receiver-token", "flux-system", "t");
    owned["metadata"]["ownerReferences"] = reference.clone();
    setup.api.create(owned).expect("owned secret");
    let mut owned_receiver = receiver(
        "app",
        "generic",
        Some("receiver-token"),
        json!({"kind": "GitRepository", "name": "app"}),
    );
    owned_receiver["metadata"]["ownerReferences"] = reference;
    setup.api.create(owned_receiver).expect("owned receiver");
    setup
        .api
        .create(secret("unrelated", "flux-system", "t"))
        .expect("unrelated");

    let secrets: Api<Secret> = Api::namespaced(setup.client.clone(), "flux-system");
    let start = setup.api.resource_version().to_string();
    let mut stream = secrets
        .watch(&WatchParams::default(), &start)
        .await
        .expect("watch")
        .boxed();
    let repos = dynamic_api(
        &setup.client,
        SOURCE_GROUP,
        "v1",
        "GitRepository",
        "flux-system",
    );
    repos
        .delete("app", &DeleteParams::background())
        .await
        .expect("delete owner");
    loop {
        match next_within(&mut stream).await.expect("event") {
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Deleted(s) => {
                assert_eq!(s.metadata.name.as_deref(), Some("receiver-token"));
                break;
            }
            other => panic!("expected DELETED, got {other:?}"),
        }
    }
    assert!(setup.api.get("receivers", "flux-system", "app").is_none());
    assert!(
        setup
            .api
            .get("secrets", "flux-system", "unrelated")
            .is_some()
    );
}

#[tokio::test]
async fn a_lease_replaced_with_a_stale_resource_version_conflicts() {
    let setup = setup().await;
    let leases: Api<Lease> = Api::namespaced(setup.client.clone(), "fluxgate");
    let lease: Lease = object(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "agent-leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "2026-01-01T00:00:00.000000Z"},
    }));
    let first = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create");
    let mut renewed = first.clone();
    renewed.spec.as_mut().expect("spec").holder_identity = Some("b".to_owned());
    leases
        .replace("agent-leader", &PostParams::default(), &renewed)
        .await
        .expect("replace at the current rv");
    let stale = api_error(
        leases
            .replace("agent-leader", &PostParams::default(), &first)
            .await
            .unwrap_err(),
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    let current = leases.get("agent-leader").await.expect("get");
    assert_eq!(
        current.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("b")
    );

    let raw = dynamic_api(
        &setup.client,
        "coordination.k8s.io",
        "v1",
        "Lease",
        "fluxgate",
    );
    let bad: DynamicObject = object(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "bad"}, "spec": {"leaseDurationSeconds": "fifteen"},
    }));
    assert_eq!(
        api_error(raw.create(&PostParams::default(), &bad).await.unwrap_err()).code,
        422
    );
}

#[tokio::test]
async fn invalid_objects_are_refused_with_their_causes() {
    let setup = setup().await;
    setup.api.install_flux_crds(FluxCrds::CURRENT);
    let receivers = dynamic_api(
        &setup.client,
        "notification.toolkit.fluxcd.io",
        "v1",
        "Receiver",
        "flux-system",
    );
    let target = json!({"kind": "GitRepository", "name": "app"});
    let cases = [
        (
            receiver("bad-type", "gitlab-ci", Some("s"), target.clone()),
            "spec.type",
        ),
        (
            receiver("no-secret", "generic", None, target.clone()),
            "spec.secretRef",
        ),
        (
            receiver(
                "bad-kind",
                "generic",
                Some("s"),
                json!({"kind": "Deployment", "name": "x"}),
            ),
            "spec.resources[0].kind",
        ),
        (
            receiver("Upper", "generic", Some("s"), target.clone()),
            "metadata.name",
        ),
    ];
    for (value, field) in cases {
        let status = api_error(
            receivers
                .create(&PostParams::default(), &object(value))
                .await
                .unwrap_err(),
        );
        assert_eq!(
            (status.code, status.reason.as_str()),
            (422, "Invalid"),
            "{field}"
        );
        let causes = status.details.map(|d| d.causes).unwrap_or_default();
        assert!(
            causes.iter().any(|c| c.field == field),
            "{field}: {causes:?}"
        );
    }
    let oidc = receiver("oidc", "generic-oidc", None, target.clone());
    receivers
        .create(&PostParams::default(), &object(oidc))
        .await
        .expect("generic-oidc needs no secretRef");
    let defaulted = receivers
        .create(
            &PostParams::default(),
            &object(receiver("ok", "generic", Some("s"), target)),
        )
        .await
        .expect("valid");
    assert_eq!(defaulted.data["spec"]["interval"], "10m", "the CRD default");

    let repos = dynamic_api(
        &setup.client,
        SOURCE_GROUP,
        "v1",
        "GitRepository",
        "flux-system",
    );
    let mut scp = git_repository("scp");
    scp["spec"]["url"] = json!("git@gitlab.example.com:group/app.git");
    assert_eq!(
        api_error(
            repos
                .create(&PostParams::default(), &object(scp))
                .await
                .unwrap_err()
        )
        .code,
        422
    );

    let secrets: Api<Secret> = Api::namespaced(setup.client.clone(), "flux-system");
    let mut not_base64: Value = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "raw"}, "data": {"token": "%%%"}});
    let bad = raw_create(
        &setup,
        "/api/v1/namespaces/flux-system/secrets",
        &not_base64,
    )
    .await;
    assert_eq!(bad, 422);
    not_base64["data"]["token"] = json!("czNjcjN0");
    assert_eq!(
        raw_create(
            &setup,
            "/api/v1/namespaces/flux-system/secrets",
            &not_base64
        )
        .await,
        201
    );
    let folded = secrets
        .create(
            &PostParams::default(),
            &object(secret("folded", "flux-system", "s3cr3t")),
        )
        .await
        .expect("stringData");
    assert!(folded.string_data.is_none());
    assert_eq!(folded.data.expect("data")["token"].0, b"s3cr3t");
}

async fn raw_create(setup: &Setup, path: &str, body: &Value) -> u16 {
    reqwest::Client::new()
        .post(format!("{}{path}", setup.api.url()))
        .bearer_auth(setup.api.token())
        .json(body)
        .send()
        .await
        .expect("request reaches the stand-in")
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_service_proxy_forwards_to_the_registered_address() {
    let setup = setup().await;
    let flux =
        FluxReceiverStandIn::start([Receiver::new("app", ReceiverType::GenericHmac, "t")]).await;
    setup
        .api
        .register_service("flux-system", "webhook-receiver", flux.address());
    let body = br#"{"ref":"main"}"#.to_vec();
    let path = format!(
        "/api/v1/namespaces/flux-system/services/http:webhook-receiver:80/proxy{}",
        flux.webhook_path("app")
    );
    let request = axum::http::Request::post(&path)
        .header("X-Signature", sha256_signature("t", &body))
        .body(body.clone())
        .expect("request");
    setup
        .client
        .request_text(request)
        .await
        .expect("proxied 200");
    let hits = flux.wait_for_hits("app", 1, DEADLINE).await;
    assert_eq!(hits[0].body.as_ref(), body.as_slice());
    assert!(
        hits[0].header("authorization").is_none(),
        "the proxy keeps the caller's credentials"
    );

    let bad = axum::http::Request::post(&path)
        .body(b"{}".to_vec())
        .expect("request");
    assert_eq!(
        api_error(setup.client.request_text(bad).await.unwrap_err()).code,
        400,
        "upstream status passes through"
    );
    let missing =
        axum::http::Request::get("/api/v1/namespaces/flux-system/services/nothing/proxy/")
            .body(Vec::new())
            .expect("request");
    assert_eq!(
        api_error(setup.client.request_text(missing).await.unwrap_err()).code,
        404
    );
    setup.api.create(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "no-endpoints", "namespace": "flux-system"}})).expect("service");
    // kube's client retries 503 with backoff for minutes, so ask without it.
    let unregistered = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/namespaces/flux-system/services/no-endpoints/proxy/",
            setup.api.url()
        ))
        .bearer_auth(setup.api.token())
        .send()
        .await
        .expect("request reaches the stand-in");
    assert_eq!(
        unregistered.status().as_u16(),
        503,
        "a Service without endpoints"
    );
}

const VECTOR_PATH: &str = "/hook/b98046fdfce6b4f7d6974d236a32ef16a5cb3bc0de15093af5866cb749e393fc";

async fn wait_ready(setup: &Setup, name: &str) -> Value {
    setup
        .api
        .wait_for(&format!("receiver {name} Ready"), DEADLINE, |api| {
            let receiver = api.get("receivers", "flux-system", name)?;
            let ready = receiver["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(receiver)
        })
        .await
}

#[tokio::test]
async fn a_receiver_becomes_ready_and_its_webhook_annotates_the_source() {
    let setup = setup().await;
    setup.api.install_flux_crds(FluxCrds::CURRENT);
    let controller = NotificationControllerStandIn::start(&setup.api).await;
    setup.api.create(git_repository("podinfo")).expect("source");
    setup
        .api
        .create(secret("receiver-token", "flux-system", "s3cr3t"))
        .expect("secret");
    let resource = json!({"kind": "GitRepository", "name": "podinfo"});
    let receivers = dynamic_api(
        &setup.client,
        "notification.toolkit.fluxcd.io",
        "v1",
        "Receiver",
        "flux-system",
    );
    receivers
        .create(
            &PostParams::default(),
            &object(receiver(
                "gitlab-receiver",
                "generic-hmac",
                Some("receiver-token"),
                resource,
            )),
        )
        .await
        .expect("receiver");
    let ready = wait_ready(&setup, "gitlab-receiver").await;
    assert_eq!(ready["status"]["webhookPath"], VECTOR_PATH);
    assert_eq!(ready["status"]["observedGeneration"], 1);
    let condition = &ready["status"]["conditions"][0];
    assert_eq!(condition["reason"], "Succeeded");
    assert_eq!(
        condition["message"],
        format!("Receiver initialized for path: {VECTOR_PATH}")
    );

    let url = format!("{}{VECTOR_PATH}", controller.webhook_base_url());
    let body = br#"{"object_kind":"push"}"#.to_vec();
    let http = reqwest::Client::new();
    let forged = http
        .post(&url)
        .header("X-Signature", sha256_signature("wrong", &body))
        .body(body.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(forged.status().as_u16(), 400);
    let annotation = |api: &KubeApiStandIn| {
        api.get("gitrepositories", "flux-system", "podinfo")
            .and_then(|r| {
                r["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"]
                    .as_str()
                    .map(str::to_owned)
            })
    };
    assert_eq!(
        annotation(&setup.api),
        None,
        "a refused request annotates nothing"
    );

    let signed = http
        .post(&url)
        .header("X-Signature", sha256_signature("s3cr3t", &body))
        .body(body.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(signed.status().as_u16(), 200);
    let stamp = annotation(&setup.api).expect("annotated on 200");
    humantime::parse_rfc3339(&stamp).expect("an RFC 3339 timestamp");
    assert_eq!(controller.hits("gitlab-receiver").len(), 2);

    // The same call through the API server's service proxy, as an agent outside the cluster.
    let proxied = axum::http::Request::post(format!(
        "/api/v1/namespaces/flux-system/services/webhook-receiver/proxy{VECTOR_PATH}"
    ))
    .header("X-Signature", sha256_signature("s3cr3t", &body))
    .body(body)
    .expect("request");
    setup
        .client
        .request_text(proxied)
        .await
        .expect("proxied 200");
    controller
        .wait_for_hits("gitlab-receiver", 3, DEADLINE)
        .await;
    assert_ne!(
        annotation(&setup.api),
        Some(stamp),
        "each accepted call writes a new value"
    );
}

#[tokio::test]
async fn a_receiver_waits_for_its_secret() {
    let setup = setup().await;
    setup.api.install_flux_crds(FluxCrds::CURRENT);
    let controller = NotificationControllerStandIn::start(&setup.api).await;
    setup.api.create(git_repository("podinfo")).expect("source");
    setup
        .api
        .create(receiver(
            "gitlab-receiver",
            "generic",
            Some("receiver-token"),
            json!({"kind": "GitRepository", "name": "podinfo"}),
        ))
        .expect("receiver");
    let waiting = setup
        .api
        .wait_for("Ready=False", DEADLINE, |api| {
            let receiver = api.get("receivers", "flux-system", "gitlab-receiver")?;
            (receiver["status"]["conditions"][0]["status"] == "False").then_some(receiver)
        })
        .await;
    assert_eq!(
        waiting["status"]["conditions"][0]["reason"],
        "TokenNotFound"
    );
    assert!(waiting["status"].get("webhookPath").is_none());
    let early = reqwest::Client::new()
        .post(format!("{}{VECTOR_PATH}", controller.webhook_base_url()))
        .send()
        .await
        .expect("send");
    assert_eq!(early.status().as_u16(), 404, "no path before Ready");

    setup
        .api
        .create(secret("receiver-token", "flux-system", "s3cr3t"))
        .expect("secret");
    let ready = wait_ready(&setup, "gitlab-receiver").await;
    assert_eq!(ready["status"]["webhookPath"], VECTOR_PATH);
}

#[tokio::test]
async fn a_receiver_whose_resource_is_missing_answers_500() {
    let setup = setup().await;
    setup.api.install_flux_crds(FluxCrds::CURRENT);
    let controller = NotificationControllerStandIn::start(&setup.api).await;
    setup
        .api
        .create(secret("receiver-token", "flux-system", "s3cr3t"))
        .expect("secret");
    setup
        .api
        .create(receiver(
            "gitlab-receiver",
            "generic",
            Some("receiver-token"),
            json!({"kind": "GitRepository", "name": "absent"}),
        ))
        .expect("receiver");
    wait_ready(&setup, "gitlab-receiver").await;
    let response = reqwest::Client::new()
        .post(format!("{}{VECTOR_PATH}", controller.webhook_base_url()))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 500);
}

#[tokio::test]
async fn a_ready_delay_holds_the_receiver_unknown_first() {
    let setup = setup().await;
    setup.api.install_flux_crds(FluxCrds::CURRENT);
    let delay = Duration::from_millis(500);
    let _controller =
        NotificationControllerStandIn::start_with_ready_delay(&setup.api, delay).await;
    setup
        .api
        .create(secret("receiver-token", "flux-system", "s3cr3t"))
        .expect("secret");
    let created = tokio::time::Instant::now();
    setup
        .api
        .create(receiver(
            "gitlab-receiver",
            "generic",
            Some("receiver-token"),
            json!({"kind": "GitRepository", "name": "x"}),
        ))
        .expect("receiver");
    setup
        .api
        .wait_for("Ready=Unknown", DEADLINE, |api| {
            let receiver = api.get("receivers", "flux-system", "gitlab-receiver")?;
            (receiver["status"]["conditions"][0]["status"] == "Unknown").then_some(())
        })
        .await;
    wait_ready(&setup, "gitlab-receiver").await;
    assert!(created.elapsed() >= delay);
}

#[tokio::test]
async fn oci_repositories_are_served_in_both_versions_and_a_receiver_annotates_them() {
    let setup = setup().await;
    setup.api.install_flux_crds(FluxCrds::CURRENT);
    let controller = NotificationControllerStandIn::start(&setup.api).await;
    let oci = |version: &str| {
        dynamic_api(
            &setup.client,
            "source.toolkit.fluxcd.io",
            version,
            "OCIRepository",
            "flux-system",
        )
    };
    let source = |url: &str| {
        json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1beta2",
            "kind": "OCIRepository",
            "metadata": {"name": "manifests", "namespace": "flux-system"},
            "spec": {"url": url, "interval": "1m", "ref": {"semver": ">=1.0.0"}},
        })
    };
    // Flux's CRD pattern: `^oci://.*$`.
    let status = api_error(
        oci("v1beta2")
            .create(
                &PostParams::default(),
                &object(source("https://registry.example.com/g/app")),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 422, "{status:?}");
    oci("v1beta2")
        .create(
            &PostParams::default(),
            &object(source("oci://registry.example.com/g/app/manifests")),
        )
        .await
        .expect("an oci:// source is stored");
    let read = oci("v1").get("manifests").await.expect("read as v1");
    assert_eq!(
        read.data["spec"]["url"],
        "oci://registry.example.com/g/app/manifests"
    );

    setup
        .api
        .create(secret("oci-token", "flux-system", "s3cr3t"))
        .expect("secret");
    let resource = json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1beta2",
        "kind": "OCIRepository",
        "name": "manifests",
    });
    dynamic_api(
        &setup.client,
        "notification.toolkit.fluxcd.io",
        "v1",
        "Receiver",
        "flux-system",
    )
    .create(
        &PostParams::default(),
        &object(receiver("oci", "generic-hmac", Some("oci-token"), resource)),
    )
    .await
    .expect("a Receiver may name an OCIRepository");
    let ready = wait_ready(&setup, "oci").await;
    let path = ready["status"]["webhookPath"].as_str().expect("a path");
    let body = br#"{"artifact":true}"#.to_vec();
    let answer = reqwest::Client::new()
        .post(format!("{}{path}", controller.webhook_base_url()))
        .header("X-Signature", sha256_signature("s3cr3t", &body))
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(answer.status().as_u16(), 200);
    let annotated = setup
        .api
        .get("ocirepositories", "flux-system", "manifests")
        .expect("the source");
    assert!(
        annotated["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"].is_string(),
        "{annotated}"
    );
}
