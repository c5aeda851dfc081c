//! The agent's Kubernetes mode with the real binaries, against the Kubernetes API
//! stand-in (driven by the agent's real kube-rs client over HTTP) and the
//! notification-controller stand-in: discovery, owned objects, triggers, deletion, leader
//! failover, two agents side by side, and Flux installed after the agent.

use std::collections::BTreeMap;
use std::time::Duration;

use fluxgate_e2e::harness::payloads::{push, sha};
use fluxgate_e2e::harness::wait::eventually;
use fluxgate_e2e::harness::{
    AgentProcess, Broker, BrokerOptions, PATIENCE, Project, free_port, http_client,
};
use fluxgate_e2e::kube_api::{FluxCrds, KubeApiStandIn, NotificationControllerStandIn};
use serde_json::{Value, json};

/// The GitLab instance of these tests, served under a relative URL root.
pub(crate) const GITLAB_URL: &str = "https://GitLab.example.com/gitlab";
/// The agent's config project: every agent is entitled to its pushes.
pub(crate) const PROJECT: &str = "platform/gitops";

/// One cluster: the API stand-in with Flux's CRDs (unless `flux` is false) and the
/// notification-controller, and a kubeconfig for the agent.
pub(crate) struct Cluster {
    pub(crate) api: KubeApiStandIn,
    pub(crate) controller: NotificationControllerStandIn,
    kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub(crate) async fn start(flux: Option<FluxCrds>) -> Self {
        let api = KubeApiStandIn::start().await;
        if let Some(crds) = flux {
            api.cluster().install_flux_crds(crds);
        }
        let controller = NotificationControllerStandIn::start(&api).await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.write_kubeconfig(dir.path());
        Self {
            api,
            controller,
            kubeconfig,
            _dir: dir,
        }
    }

    fn git_repository(&self, namespace: &str, name: &str, url: &str, branch: &str, labels: Value) {
        self.api
            .cluster()
            .create(json!({
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "kind": "GitRepository",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": {"url": url, "interval": "5m", "ref": {"branch": branch}},
            }))
            .unwrap_or_else(|e| panic!("create GitRepository {namespace}/{name}: {e:?}"));
    }

    fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.api.cluster().get(plural, namespace, name)
    }

    /// Waits until Flux made `namespace/name` Ready, and returns it.
    pub(crate) async fn ready_receiver(&self, namespace: &str, name: &str) -> Value {
        let cluster = self.api.cluster();
        cluster
            .wait_for(
                &format!("Receiver {namespace}/{name} Ready"),
                PATIENCE,
                |c| {
                    c.get("receivers", namespace, name).filter(|r| {
                        r["status"]["conditions"].as_array().is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                    })
                },
            )
            .await
    }
}

/// A cluster (with `flux` CRDs installed, if any), an embedded broker, and the token of
/// its agent `cluster`, entitled to [`PROJECT`].
async fn setup(flux: Option<FluxCrds>) -> (Cluster, Broker, String, tempfile::TempDir) {
    let cluster = Cluster::start(flux).await;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerOptions::embedded(dir.path())).await;
    let token = broker.create_agent("cluster", PROJECT, &[]).await;
    (cluster, broker, token, dir)
}

/// An agent in the Kubernetes mode with a short lease and a health listener.
pub(crate) async fn agent(
    broker: &Broker,
    token: &str,
    cluster: &Cluster,
    extra: &str,
) -> (AgentProcess, String) {
    let health = format!("127.0.0.1:{}", free_port());
    let yaml = format!("health_listen: {health}\ngitlab_url: {GITLAB_URL}\n{extra}");
    let yaml = if extra.contains("flux:") {
        yaml
    } else {
        format!(
            "{yaml}flux: {{webhook_receiver_url: '{}'}}\n",
            cluster.controller.webhook_base_url()
        )
    };
    let yaml = if yaml.contains("kubernetes:") {
        yaml
    } else {
        format!("{yaml}kubernetes: {{leader_election: {{enabled: false}}}}\n")
    };
    let agent =
        AgentProcess::start_kubernetes(&broker.agent_url(), token, &yaml, &cluster.kubeconfig)
            .await;
    (agent, format!("http://{health}"))
}

/// The agent's `/readyz` status code and body.
async fn readyz(health: &str) -> Option<(u16, Value)> {
    let response = http_client()
        .get(format!("{health}/readyz"))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

/// A metric of the agent's `/metrics`, summed over its label sets; 0 if absent.
async fn agent_metric(health: &str, name: &str) -> f64 {
    let Ok(response) = http_client().get(format!("{health}/metrics")).send().await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub(crate) async fn wait_for_served(health: &str, count: f64) {
    eventually(
        PATIENCE,
        &format!("the agent serves {count} discovered receivers"),
        || async {
            (agent_metric(health, "fluxgate_agent_kubernetes_receivers_served").await == count)
                .then_some(())
        },
    )
    .await;
}

/// Pushes to `branch` until the Receiver `name` is called (a subscription added on a live
/// stream applies from the moment the broker reads it, so the first push may precede
/// it), and returns the call.
async fn push_until_called(
    broker: &Broker,
    cluster: &Cluster,
    project: &Project,
    branch: &str,
    name: &str,
) -> fluxgate_e2e::flux_receiver::Hit {
    let before = cluster.controller.hits(name).len();
    let mut n = 0;
    eventually(
        PATIENCE,
        &format!("a push to {branch} reaches Receiver {name}"),
        || {
            n += 1;
            let body = push(
                project,
                &format!("refs/heads/{branch}"),
                &sha(0),
                &sha(1000 + n),
            );
            async move {
                broker.hooks().accepted_seq(&body).await;
                // Give this push half a second to arrive before the next one.
                let wait = tokio::time::Instant::now() + Duration::from_millis(500);
                loop {
                    let hits = cluster.controller.hits(name);
                    if hits.len() > before {
                        return hits.into_iter().nth(before);
                    }
                    if tokio::time::Instant::now() > wait {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        },
    )
    .await
}

fn labels(object: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(object["metadata"]["labels"].clone()).unwrap_or_default()
}

fn annotation(object: &Value, key: &str) -> Option<String> {
    object["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn a_gitrepository_gets_its_receiver_and_a_push_reconciles_it() {
    let (cluster, broker, token, _dir) = setup(Some(FluxCrds::CURRENT)).await;
    // ssh with a port, a host in another case, the relative root, and `.git`.
    cluster.git_repository(
        "apps",
        "podinfo",
        "ssh://git@gitlab.example.com:2222/gitlab/Platform/GitOps.git",
        "main",
        json!({}),
    );
    // Another host: left alone.
    cluster.git_repository(
        "apps",
        "upstream",
        "https://github.com/platform/gitops",
        "main",
        json!({}),
    );
    let (_agent, health) = agent(&broker, &token, &cluster, "").await;

    let receiver = cluster.ready_receiver("apps", "fluxgate-podinfo").await;
    let source = cluster.get("gitrepositories", "apps", "podinfo").unwrap();
    let secret = cluster
        .get("secrets", "apps", "fluxgate-podinfo-token")
        .expect("the token Secret");
    for owned in [&receiver, &secret] {
        let owner = &owned["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], source["metadata"]["uid"], "{owned}");
        assert_eq!(owner["kind"], "GitRepository");
        assert_eq!(owner["controller"], true);
        assert_eq!(
            labels(owned)["app.kubernetes.io/managed-by"],
            "fluxgate-agent"
        );
        assert_eq!(
            annotation(owned, "fluxgate.io/project").as_deref(),
            Some("Platform/GitOps")
        );
    }
    assert_eq!(receiver["spec"]["type"], "generic-hmac");
    assert_eq!(receiver["spec"]["resources"][0]["name"], "podinfo");
    assert_eq!(
        receiver["spec"]["secretRef"]["name"],
        "fluxgate-podinfo-token"
    );
    let token_bytes = secret["data"]["token"].as_str().expect("data.token");
    assert_eq!(
        token_bytes.len(),
        88,
        "32 random bytes, hex, base64: {token_bytes}"
    );
    assert!(
        cluster
            .get("receivers", "apps", "fluxgate-upstream")
            .is_none(),
        "another host is left alone"
    );
    assert!(
        cluster
            .api
            .cluster()
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH")
            .all(|r| r.query.contains("fieldManager=fluxgate-agent")),
        "every apply is made by the fluxgate-agent field manager"
    );

    wait_for_served(&health, 1.0).await;
    let project = Project::new(7, PROJECT, 0);
    let hit = push_until_called(&broker, &cluster, &project, "main", "fluxgate-podinfo").await;
    assert_eq!(hit.status.as_u16(), 200, "a valid signature: {hit:?}");
    assert!(
        hit.header("X-Signature")
            .is_some_and(|s| s.starts_with("sha256="))
    );
    cluster
        .api
        .cluster()
        .wait_for("the source annotated by Flux", PATIENCE, |c| {
            c.get("gitrepositories", "apps", "podinfo")
                .and_then(|s| annotation(&s, "reconcile.fluxcd.io/requestedAt"))
        })
        .await;
    // Another branch is not what the source follows.
    let other = push(&project, "refs/heads/feature", &sha(0), &sha(99));
    let seq = broker.hooks().accepted_seq(&other).await;
    let calls = cluster.controller.hits("fluxgate-podinfo").len();
    broker.wait_for_cursor("cluster", seq).await;
    assert_eq!(
        cluster.controller.hits("fluxgate-podinfo").len(),
        calls,
        "a push to another branch triggers nothing"
    );

    let (status, body) = readyz(&health).await.expect("/readyz answers");
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_deleted_source_loses_its_objects_and_its_subscription() {
    let (cluster, broker, token, _dir) = setup(Some(FluxCrds::CURRENT)).await;
    let url = "https://gitlab.example.com/gitlab/platform/gitops.git";
    cluster.git_repository("apps", "main-src", url, "main", json!({}));
    cluster.git_repository("apps", "release-src", url, "release", json!({}));
    let (_agent, health) = agent(&broker, &token, &cluster, "").await;
    cluster.ready_receiver("apps", "fluxgate-main-src").await;
    cluster.ready_receiver("apps", "fluxgate-release-src").await;
    wait_for_served(&health, 2.0).await;
    let project = Project::new(7, PROJECT, 0);
    push_until_called(&broker, &cluster, &project, "main", "fluxgate-main-src").await;

    cluster
        .api
        .cluster()
        .delete("gitrepositories", "apps", "main-src")
        .expect("delete");
    cluster
        .api
        .cluster()
        .wait_for("the owned objects garbage-collected", PATIENCE, |c| {
            (c.get("receivers", "apps", "fluxgate-main-src").is_none()
                && c.get("secrets", "apps", "fluxgate-main-src-token")
                    .is_none())
            .then_some(())
        })
        .await;
    wait_for_served(&health, 1.0).await;
    let calls = cluster.controller.flux().all_hits().len();
    let main_seq = broker
        .hooks()
        .accepted_seq(&push(&project, "refs/heads/main", &sha(0), &sha(5)))
        .await;
    // The release source still works, and by the time the agent acked past the main push,
    // nothing called for main.
    push_until_called(
        &broker,
        &cluster,
        &project,
        "release",
        "fluxgate-release-src",
    )
    .await;
    broker.wait_for_cursor("cluster", main_seq).await;
    let main_calls = cluster.controller.flux().all_hits()[calls..]
        .iter()
        .filter(|hit| hit.receiver.as_deref() != Some("fluxgate-release-src"))
        .count();
    assert_eq!(
        main_calls, 0,
        "the deleted source's branch is no longer triggered"
    );
    assert!(
        cluster
            .get("secrets", "apps", "fluxgate-release-src-token")
            .is_some()
    );
}

#[tokio::test]
async fn flux_installed_after_the_agent_is_picked_up_and_called_through_the_service_proxy() {
    let (cluster, broker, token, _dir) = setup(None).await;
    let proxy = format!(
        "{}/api/v1/namespaces/flux-system/services/webhook-receiver:80/proxy",
        cluster.api.url()
    );
    let (mut agent, health) = agent(
        &broker,
        &token,
        &cluster,
        &format!("flux: {{webhook_receiver_url: '{proxy}'}}\n"),
    )
    .await;
    let (status, body) = eventually(PATIENCE, "/readyz names the missing Flux APIs", || async {
        readyz(&health)
            .await
            .filter(|(_, body)| body["reasons"].to_string().contains("GitRepository"))
    })
    .await;
    assert_eq!(status, 503, "{body}");
    agent
        .process()
        .wait_for_log("the cluster does not serve the Flux APIs the agent needs; is Flux installed? Checking again until it is", PATIENCE)
        .await;

    cluster.api.cluster().install_flux_crds(FluxCrds::CURRENT);
    cluster.git_repository(
        "apps",
        "podinfo",
        "https://gitlab.example.com/gitlab/platform/gitops",
        "main",
        json!({}),
    );
    cluster.ready_receiver("apps", "fluxgate-podinfo").await;
    wait_for_served(&health, 1.0).await;
    let project = Project::new(7, PROJECT, 0);
    let hit = push_until_called(&broker, &cluster, &project, "main", "fluxgate-podinfo").await;
    assert_eq!(hit.status.as_u16(), 200);
    assert!(
        cluster
            .api
            .cluster()
            .requests()
            .iter()
            .any(|r| r.path.contains("/services/webhook-receiver:80/proxy/hook/")),
        "the call went through the API server's service proxy"
    );
    eventually(PATIENCE, "/readyz is ready", || async {
        readyz(&health).await.filter(|(status, _)| *status == 200)
    })
    .await;
}

/// The `seq` of each call to Receiver `name` that Flux answered 200.
fn delivered_seqs(cluster: &Cluster, name: &str) -> Vec<u64> {
    cluster
        .controller
        .hits(name)
        .iter()
        .filter(|hit| hit.status.as_u16() == 200)
        .filter_map(|hit| hit.json()["seq"].as_u64())
        .collect()
}

/// Pushes to every branch once per round (distinct SHAs), recording each branch's last seq.
async fn push_rounds(
    broker: &Broker,
    project: &Project,
    branches: &[&'static str],
    rounds: std::ops::Range<u64>,
    last_seq: &mut BTreeMap<&'static str, u64>,
) {
    for round in rounds {
        for (index, branch) in branches.iter().enumerate() {
            let after = sha(2000 + round * 10 + index as u64);
            let body = push(project, &format!("refs/heads/{branch}"), &sha(0), &after);
            last_seq.insert(branch, broker.hooks().accepted_seq(&body).await);
        }
    }
}

fn lease_holder(cluster: &Cluster) -> Option<String> {
    cluster
        .get("leases", "fluxgate", "fluxgate-agent")
        .and_then(|lease| lease["spec"]["holderIdentity"].as_str().map(str::to_owned))
        .filter(|holder| !holder.is_empty())
}

#[tokio::test]
async fn the_standby_takes_over_a_killed_leader_within_the_lease_and_loses_no_push() {
    let (cluster, broker, token, _dir) = setup(Some(FluxCrds::CURRENT)).await;
    let url = "https://gitlab.example.com/gitlab/platform/gitops.git";
    let branches = ["b1", "b2", "b3"];
    for branch in branches {
        cluster.git_repository("apps", &format!("src-{branch}"), url, branch, json!({}));
    }
    let election = |identity: &str| {
        format!(
            "kubernetes: {{leader_election: {{lease_namespace: fluxgate, identity: {identity}, \
             lease_duration: 3s, renew_deadline: 2s, retry_period: 1s}}}}\n"
        )
    };
    let (agent_a, health_a) = agent(&broker, &token, &cluster, &election("agent-a")).await;
    let (agent_b, health_b) = agent(&broker, &token, &cluster, &election("agent-b")).await;
    let mut agents = BTreeMap::from([
        ("agent-a".to_owned(), (agent_a, health_a)),
        ("agent-b".to_owned(), (agent_b, health_b)),
    ]);
    let leader = cluster
        .api
        .cluster()
        .wait_for("a leader", PATIENCE, |_| lease_holder(&cluster))
        .await;
    let standby = if leader == "agent-a" {
        "agent-b"
    } else {
        "agent-a"
    }
    .to_owned();
    wait_for_served(&agents[&leader].1, 3.0).await;
    let (status, body) = eventually(PATIENCE, "the standby is ready", || async {
        readyz(&agents[&standby].1)
            .await
            .filter(|(status, _)| *status == 200)
    })
    .await;
    assert_eq!(body["role"], "standby", "{body}");
    let _ = status;
    let project = Project::new(7, PROJECT, 0);
    for branch in branches {
        push_until_called(
            &broker,
            &cluster,
            &project,
            branch,
            &format!("fluxgate-src-{branch}"),
        )
        .await;
    }

    // Pushes keep coming while the leader dies.
    let mut last_seq = BTreeMap::new();
    push_rounds(&broker, &project, &branches, 0..3, &mut last_seq).await;
    let killed_at = tokio::time::Instant::now();
    agents.get_mut(&leader).unwrap().0.kill().await;
    push_rounds(&broker, &project, &branches, 3..6, &mut last_seq).await;
    let new_leader = cluster
        .api
        .cluster()
        .wait_for("the standby to take the lease", PATIENCE, |_| {
            lease_holder(&cluster).filter(|holder| *holder == standby)
        })
        .await;
    let takeover = killed_at.elapsed();
    assert_eq!(new_leader, standby);
    // Lease 3 s + one retry period (1 s) + one more retry of slack.
    assert!(
        takeover < Duration::from_secs(6),
        "took over after {takeover:?}"
    );

    // Every acknowledged push is covered: each branch's Receiver got (at least) its last
    // push, so nothing between was skipped (coalescing delivers the newest).
    for branch in branches {
        let name = format!("fluxgate-src-{branch}");
        let last = last_seq[branch];
        eventually(
            PATIENCE,
            &format!("{name} gets seq {last} or later"),
            || async {
                delivered_seqs(&cluster, &name)
                    .iter()
                    .any(|seq| *seq >= last)
                    .then_some(())
            },
        )
        .await;
    }
    broker
        .wait_for_cursor("cluster", *last_seq.values().max().unwrap())
        .await;
    let (status, body) = readyz(&agents[&standby].1).await.expect("/readyz answers");
    assert_eq!(
        (status, body["role"].as_str()),
        (200, Some("leader")),
        "{body}"
    );
}

#[tokio::test]
async fn two_agents_with_disjoint_selectors_converge_and_then_write_nothing() {
    let (cluster, broker, _, _dir) = setup(Some(FluxCrds::CURRENT)).await;
    let token_a = broker.create_agent("team-a", PROJECT, &[]).await;
    let token_b = broker.create_agent("team-b", PROJECT, &[]).await;
    let url = "https://gitlab.example.com/gitlab/platform/gitops.git";
    cluster.git_repository("apps", "app-a", url, "a", json!({"team": "a"}));
    cluster.git_repository("apps", "app-b", url, "b", json!({"team": "b"}));
    // Picked by both selectors: one agent takes it, the other leaves it alone.
    cluster.git_repository("apps", "shared", url, "shared", json!({"team": "shared"}));
    let config = |team: &str| {
        format!(
            "kubernetes: {{label_selector: 'team in ({team},shared)', leader_election: \
             {{enabled: false, lease_name: agent-{team}, lease_namespace: fluxgate}}}}\n"
        )
    };
    let (_a, health_a) = agent(&broker, &token_a, &cluster, &config("a")).await;
    let (_b, health_b) = agent(&broker, &token_b, &cluster, &config("b")).await;
    let receiver_a = cluster.ready_receiver("apps", "fluxgate-app-a").await;
    let receiver_b = cluster.ready_receiver("apps", "fluxgate-app-b").await;
    let shared = cluster.ready_receiver("apps", "fluxgate-shared").await;
    assert_eq!(
        annotation(&receiver_a, "fluxgate.io/agent").as_deref(),
        Some("fluxgate/agent-a")
    );
    assert_eq!(
        annotation(&receiver_b, "fluxgate.io/agent").as_deref(),
        Some("fluxgate/agent-b")
    );
    let owner = annotation(&shared, "fluxgate.io/agent").expect("an owner");
    // Converged: each serves its own Receiver, and the shared one is served by its owner.
    let (owner_health, other_health) = if owner == "fluxgate/agent-a" {
        (&health_a, &health_b)
    } else {
        (&health_b, &health_a)
    };
    wait_for_served(owner_health, 2.0).await;
    wait_for_served(other_health, 1.0).await;

    let snapshot = |cluster: &Cluster| -> Vec<(String, String)> {
        ["fluxgate-app-a", "fluxgate-app-b", "fluxgate-shared"]
            .iter()
            .flat_map(|name| {
                [
                    cluster.get("receivers", "apps", name),
                    cluster.get("secrets", "apps", &format!("{name}-token")),
                ]
            })
            .map(|object| {
                let object = object.expect("every owned object exists");
                (
                    object["metadata"]["name"].as_str().unwrap().to_owned(),
                    object["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                )
            })
            .collect()
    };
    let writes = |cluster: &Cluster| {
        cluster
            .api
            .cluster()
            .requests()
            .iter()
            .filter(|r| r.is_write())
            .count()
    };
    let before = snapshot(&cluster);
    let writes_before = writes(&cluster);
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < until {
        assert_eq!(
            snapshot(&cluster),
            before,
            "an owned object changed: the agents fight"
        );
        assert_eq!(
            writes(&cluster),
            writes_before,
            "an agent wrote to the API server"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn opted_out_and_pinned_sources_are_left_alone_and_a_brought_receiver_is_used_as_it_is() {
    let (cluster, broker, token, _dir) = setup(Some(FluxCrds::CURRENT)).await;
    let url = "https://gitlab.example.com/gitlab/platform/gitops.git";
    let api = cluster.api.cluster();
    api.create(json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": "opted-out", "namespace": "apps", "annotations": {"fluxgate.io/ignore": "true"}},
        "spec": {"url": url, "interval": "5m"},
    }))
    .unwrap();
    api.create(json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": "pinned", "namespace": "apps"},
        "spec": {"url": url, "interval": "5m", "ref": {"commit": sha(3)}},
    }))
    .unwrap();
    // A Receiver the platform team made, with its own Secret, asking for pushes to `byo`.
    api.create(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "own-token", "namespace": "apps"},
        "stringData": {"token": "brought-token"},
    }))
    .unwrap();
    api.create(json!({
        "apiVersion": "notification.toolkit.fluxcd.io/v1",
        "kind": "Receiver",
        "metadata": {
            "name": "own-receiver", "namespace": "apps",
            "annotations": {"fluxgate.io/project": PROJECT, "fluxgate.io/ref": "refs/heads/byo"},
        },
        "spec": {
            "type": "generic-hmac",
            "resources": [{"kind": "GitRepository", "name": "opted-out"}],
            "secretRef": {"name": "own-token"},
        },
    }))
    .unwrap();
    let (mut agent, health) = agent(&broker, &token, &cluster, "").await;
    agent
        .process()
        .wait_for_log(
            &format!("GitRepository apps/pinned (platform/gitops) is pinned to commit {}: no push can move it, so it is not triggered", sha(3)),
            PATIENCE,
        )
        .await;
    wait_for_served(&health, 1.0).await;
    let project = Project::new(7, PROJECT, 0);
    let hit = push_until_called(&broker, &cluster, &project, "byo", "own-receiver").await;
    assert_eq!(
        hit.status.as_u16(),
        200,
        "signed with the brought Secret's token"
    );
    let own = cluster.get("receivers", "apps", "own-receiver").unwrap();
    assert!(
        own["metadata"]["labels"]
            .get("app.kubernetes.io/managed-by")
            .is_none(),
        "left as it is"
    );
    for name in ["fluxgate-opted-out", "fluxgate-pinned"] {
        assert!(
            cluster.get("receivers", "apps", name).is_none(),
            "{name} was made"
        );
    }
    assert!(
        cluster
            .get("secrets", "apps", "fluxgate-opted-out-token")
            .is_none()
    );
}

#[tokio::test]
async fn an_old_flux_serving_only_v1beta2_sources_is_followed() {
    let (cluster, broker, token, _dir) = setup(Some(FluxCrds::OLD_BETA_SOURCES)).await;
    cluster
        .api
        .cluster()
        .create(json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1beta2",
            "kind": "GitRepository",
            "metadata": {"name": "legacy", "namespace": "apps"},
            "spec": {"url": "https://gitlab.example.com/gitlab/platform/gitops", "interval": "1m"},
        }))
        .unwrap();
    let (_agent, health) = agent(&broker, &token, &cluster, "").await;
    let receiver = cluster.ready_receiver("apps", "fluxgate-legacy").await;
    assert_eq!(
        receiver["spec"]["resources"][0]["apiVersion"],
        "source.toolkit.fluxcd.io/v1beta2"
    );
    assert_eq!(
        receiver["metadata"]["ownerReferences"][0]["apiVersion"],
        "source.toolkit.fluxcd.io/v1beta2"
    );
    wait_for_served(&health, 1.0).await;
    // No ref: Flux follows master.
    let project = Project::new(7, PROJECT, 0);
    push_until_called(&broker, &cluster, &project, "master", "fluxgate-legacy").await;
}

#[tokio::test]
async fn expired_watches_relist_and_a_restart_keeps_every_token() {
    let (cluster, broker, token, _dir) = setup(Some(FluxCrds::CURRENT)).await;
    let url = "https://gitlab.example.com/gitlab/platform/gitops.git";
    cluster.git_repository("apps", "first", url, "main", json!({}));
    let (mut agent, health) = agent(&broker, &token, &cluster, "").await;
    cluster.ready_receiver("apps", "fluxgate-first").await;
    wait_for_served(&health, 1.0).await;

    // Every watch ends and its resourceVersion is too old: the agent must re-list (410).
    cluster.api.cluster().compact_history();
    cluster.api.cluster().end_all_watches();
    cluster.git_repository("apps", "second", url, "release", json!({}));
    cluster.ready_receiver("apps", "fluxgate-second").await;
    wait_for_served(&health, 2.0).await;

    let secrets_before: Vec<Value> = ["fluxgate-first-token", "fluxgate-second-token"]
        .iter()
        .map(|name| cluster.get("secrets", "apps", name).unwrap())
        .collect();
    agent.kill().await;
    agent.restart();
    wait_for_served(&health, 2.0).await;
    let project = Project::new(7, PROJECT, 0);
    let hit = push_until_called(&broker, &cluster, &project, "release", "fluxgate-second").await;
    assert_eq!(
        hit.status.as_u16(),
        200,
        "the Receiver still accepts the agent's signature"
    );
    for before in secrets_before {
        let name = before["metadata"]["name"].as_str().unwrap();
        let after = cluster.get("secrets", "apps", name).unwrap();
        assert_eq!(
            after["data"]["token"], before["data"]["token"],
            "{name}: a restart never rotates the token"
        );
        assert_eq!(
            after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
            "{name} untouched"
        );
    }
}
