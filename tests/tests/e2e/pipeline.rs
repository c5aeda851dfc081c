//! A pipeline's notification end to end: the real broker trusting the GitLab OIDC
//! stand-in (RS256 ID tokens, JWKS), the real agent in its Kubernetes mode against the
//! Kubernetes API and notification-controller stand-ins. An `OCIRepository` following a
//! semver range has its Receiver called for an artifact whose tag is in the range, and
//! not for one outside it, nor for a git push to the same project.

use std::sync::atomic::{AtomicU64, Ordering};

use fluxgate_e2e::flux_receiver::Hit;
use fluxgate_e2e::gitlab_oidc::GitLabOidc;
use fluxgate_e2e::harness::payloads::{push, sha};
use fluxgate_e2e::harness::wait::eventually;
use fluxgate_e2e::harness::{Broker, BrokerOptions, PATIENCE, Project, http_client};
use fluxgate_e2e::kube_api::FluxCrds;
use serde_json::{Value, json};

use crate::kubernetes::{Cluster, PROJECT, agent, wait_for_served};

/// The audience the pipeline's `id_tokens:` asks for.
const AUD: &str = "https://fluxgate.example.com";
/// The project's id in GitLab (a string in the token).
const PROJECT_ID: i64 = 28;
/// The default registry host of the agent's GitLab (`registry.<gitlab host>`).
const REPOSITORY: &str = "oci://registry.gitlab.example.com/platform/gitops/manifests";

/// POSTs a pipeline notification for `tag` with a fresh ID token of a job on `main`;
/// returns the event's seq.
async fn notify(broker: &Broker, gitlab: &GitLabOidc, tag: &str) -> u64 {
    let token = gitlab.mint(&gitlab.claims(AUD, PROJECT_ID, PROJECT, "main", &sha(7)));
    let response = http_client()
        .post(broker.http_url("/api/v1/notify"))
        .bearer_auth(token)
        .json(&json!({"artifact": REPOSITORY, "tag": tag}))
        .send()
        .await
        .expect("the broker answers");
    assert_eq!(response.status(), 200, "notify {tag}");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["status"], "accepted", "{answer}");
    answer["seq"].as_u64().expect("a seq")
}

/// The OCI tag a Receiver call carried.
fn tag_of(hit: &Hit) -> String {
    hit.json()["artifact"]["tag"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The name of the Receiver the agent made for the `OCIRepository` `apps/manifests`.
async fn oci_receiver_name(cluster: &Cluster) -> String {
    let cluster = cluster.api.cluster();
    let receiver = cluster
        .wait_for("the OCIRepository's Receiver", PATIENCE, |c| {
            c.list("receivers", Some("apps")).into_iter().find(|r| {
                r["spec"]["resources"][0]["kind"] == "OCIRepository"
                    && r["spec"]["resources"][0]["name"] == "manifests"
            })
        })
        .await;
    receiver["metadata"]["name"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_pipeline_notification_reconciles_the_oci_repository_whose_range_has_its_tag() {
    let gitlab = GitLabOidc::start(0).await;
    let cluster = Cluster::start(Some(FluxCrds::CURRENT)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = BrokerOptions::embedded(dir.path());
    options.extra_args = vec![
        "--gitlab-url".to_owned(),
        gitlab.issuer().to_owned(),
        "--ci-audience".to_owned(),
        AUD.to_owned(),
    ];
    let broker = Broker::start(options).await;
    let token = broker.create_agent("cluster", PROJECT, &[]).await;
    cluster
        .api
        .cluster()
        .create(json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "OCIRepository",
            "metadata": {"name": "manifests", "namespace": "apps"},
            "spec": {"url": REPOSITORY, "interval": "5m", "ref": {"semver": ">=1.0.0 <2.0.0"}},
        }))
        .expect("create the OCIRepository");
    let (_agent, health) = agent(&broker, &token, &cluster, "").await;
    let name = oci_receiver_name(&cluster).await;
    cluster.ready_receiver("apps", &name).await;
    wait_for_served(&health, 1.0).await;

    // A subscription added on a live stream applies from the moment the broker reads it:
    // notify (in range) until the first call, so what follows is certainly subscribed.
    let mut n = 0;
    let last_seq = AtomicU64::new(0);
    let first = eventually(
        PATIENCE,
        "an artifact in range reaches the Receiver",
        || {
            n += 1;
            let (broker, gitlab, cluster, name) = (&broker, &gitlab, &cluster, name.clone());
            let last_seq = &last_seq;
            async move {
                let seq = notify(broker, gitlab, &format!("1.0.{n}")).await;
                last_seq.store(seq, Ordering::Relaxed);
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
                loop {
                    if let Some(hit) = cluster.controller.hits(&name).into_iter().next() {
                        return Some(hit);
                    }
                    if tokio::time::Instant::now() > deadline {
                        return None;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
            }
        },
    )
    .await;
    assert!(tag_of(&first).starts_with("1.0."), "{:?}", first.json());
    assert_eq!(first.json()["object_kind"], "artifact");
    assert_eq!(first.json()["ref"], "refs/heads/main");
    assert_eq!(first.json()["after"], sha(7));
    let source = cluster
        .api
        .cluster()
        .get("ocirepositories", "apps", "manifests")
        .unwrap();
    assert!(
        source["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"].is_string(),
        "Flux was asked to reconcile the OCIRepository: {source}"
    );

    // Out of range, then a git push to the same project, then in range again, once the
    // agent handled everything before (so nothing is in flight to coalesce with): only
    // the last one calls the Receiver.
    broker
        .wait_for_cursor("cluster", last_seq.load(Ordering::Relaxed))
        .await;
    let calls_before = cluster.controller.hits(&name).len();
    notify(&broker, &gitlab, "2.0.0").await;
    let project = Project::new(PROJECT_ID, PROJECT, 0);
    broker
        .hooks()
        .accepted_seq(&push(&project, "refs/heads/main", &sha(0), &sha(1)))
        .await;
    notify(&broker, &gitlab, "v1.4.0").await;
    let hits = eventually(PATIENCE, "the v1.4.0 artifact reaches the Receiver", || {
        let hits = cluster.controller.hits(&name);
        async move { hits.iter().any(|h| tag_of(h) == "v1.4.0").then_some(hits) }
    })
    .await;
    let after: Vec<String> = hits[calls_before..].iter().map(tag_of).collect();
    assert_eq!(after, ["v1.4.0"], "neither 2.0.0 nor the push called it");
}
