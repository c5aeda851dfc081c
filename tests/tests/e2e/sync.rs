//! Following a push until Flux applied it, end to end: the real broker and agent, the
//! Kubernetes API stand-in with the notification-controller, source-controller and
//! kustomize-controller stand-ins. The agent reports each stage; `fluxgate trace` (the
//! real CLI) and `GET /api/v1/events/{seq}` show them with their times, the failure with
//! Flux's message, and an agent that was not entitled with the rule that excluded it.

use std::time::Duration;

use fluxgate_e2e::harness::payloads::{push, sha};
use fluxgate_e2e::harness::wait::eventually;
use fluxgate_e2e::harness::{Broker, BrokerOptions, PATIENCE, Project, http_client};
use fluxgate_e2e::kube_api::{FluxCrds, FluxSyncStandIn};
use serde_json::{Value, json};

use crate::kubernetes::{Cluster, PROJECT, agent, wait_for_served};

pub(crate) const ADMIN_TOKEN: &str = "trace-admin-token-0123456789";
/// The project's id in GitLab.
const PROJECT_ID: i64 = 41;

pub(crate) struct Setup {
    pub(crate) cluster: Cluster,
    pub(crate) flux: FluxSyncStandIn,
    pub(crate) broker: Broker,
    /// The agent's health listener (`/metrics`).
    pub(crate) health: String,
    pub(crate) agent: fluxgate_e2e::harness::AgentProcess,
    _dir: tempfile::TempDir,
}

/// A GitRepository `apps/podinfo` on `main` of [`PROJECT`], two Kustomizations using it,
/// the agent `cluster` serving its Receiver, and an agent `stranger` that may not see the
/// (private) project.
pub(crate) async fn setup() -> Setup {
    let cluster = Cluster::start(Some(FluxCrds::CURRENT)).await;
    let flux = FluxSyncStandIn::start(&cluster.api, Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, ADMIN_TOKEN).unwrap();
    let mut options = BrokerOptions::embedded(dir.path().join("data"));
    options.admin_token_file = Some(token_file);
    let broker = Broker::start(options).await;
    let token = broker.create_agent("cluster", PROJECT, &[]).await;
    broker
        .create_agent("stranger", "elsewhere/config", &[])
        .await;
    let api = cluster.api.cluster();
    api.create(json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": "podinfo", "namespace": "apps"},
        "spec": {"url": "https://gitlab.example.com/gitlab/platform/gitops.git",
                 "interval": "5m", "ref": {"branch": "main"}},
    }))
    .expect("create the GitRepository");
    for name in ["podinfo", "podinfo-config"] {
        api.create(json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": name, "namespace": "apps"},
            "spec": {"interval": "10m", "path": "./deploy", "prune": true,
                     "sourceRef": {"kind": "GitRepository", "name": "podinfo"}},
        }))
        .expect("create a Kustomization");
    }
    let (agent, health) = agent(&broker, &token, &cluster, "").await;
    cluster.ready_receiver("apps", "fluxgate-podinfo").await;
    wait_for_served(&health, 1.0).await;
    Setup {
        cluster,
        flux,
        broker,
        health,
        agent,
        _dir: dir,
    }
}

impl Setup {
    /// Pushes `after` to main (the remote has it) until the agent's Receiver was called for
    /// a push (a subscription added on a live stream applies from the moment the broker
    /// reads it); returns the seq of the push that called it.
    pub(crate) async fn push_until_triggered(&self, first: u64) -> (u64, String) {
        let project = Project::new(PROJECT_ID, PROJECT, 0);
        let mut n = first;
        eventually(PATIENCE, "a push reaches the Receiver", || {
            n += 1;
            let after = sha(n);
            self.flux.set_remote(
                "gitrepositories",
                "apps",
                "podinfo",
                &format!("main@sha1:{after}"),
            );
            let body = push(&project, "refs/heads/main", &sha(0), &after);
            async move {
                let before = self.cluster.controller.hits("fluxgate-podinfo").len();
                let seq = self.broker.hooks().accepted_seq(&body).await;
                let wait = tokio::time::Instant::now() + Duration::from_millis(700);
                loop {
                    if self.cluster.controller.hits("fluxgate-podinfo").len() > before {
                        return Some((seq, after.clone()));
                    }
                    if tokio::time::Instant::now() > wait {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        })
        .await
    }

    async fn events_api(&self, seq: u64) -> (u16, Value) {
        let response = http_client()
            .get(self.broker.http_url(&format!("/api/v1/events/{seq}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("the broker answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The trace of `seq` once agent `cluster` reached `state` there.
    async fn trace_when(&self, seq: u64, state: &str) -> Value {
        eventually(
            PATIENCE,
            &format!("seq {seq} traced as {state}"),
            || async {
                let (status, trace) = self.events_api(seq).await;
                assert_eq!(status, 200, "{trace}");
                (agent_trace(&trace, "cluster")["state"] == state).then_some(trace)
            },
        )
        .await
    }
}

fn agent_trace<'a>(trace: &'a Value, name: &str) -> &'a Value {
    trace["agents"]
        .as_array()
        .and_then(|agents| agents.iter().find(|a| a["agent"] == name))
        .unwrap_or_else(|| panic!("agent {name} in {trace}"))
}

fn stages<'a>(agent: &'a Value, stage: &str) -> Vec<&'a Value> {
    agent["stages"]
        .as_array()
        .map(|s| s.iter().filter(|s| s["stage"] == stage).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_push_is_followed_until_applied_and_traced_with_every_stage() {
    let setup = setup().await;
    let (seq, after) = setup.push_until_triggered(100).await;
    let revision = format!("main@sha1:{after}");
    // Applied by both Kustomizations: each is its own stage, so wait for both.
    let trace = eventually(PATIENCE, "both Kustomizations applied", || async {
        let trace = setup.trace_when(seq, "applied").await;
        (stages(agent_trace(&trace, "cluster"), "applied").len() == 2).then_some(trace)
    })
    .await;
    assert_eq!(trace["project"], PROJECT);
    assert_eq!(trace["ref"], "refs/heads/main");
    assert_eq!(trace["after"], after.as_str());
    let cluster = agent_trace(&trace, "cluster");
    assert_eq!(cluster["entitled"], true);
    assert_eq!(cluster["rule"], "the agent's configuration project");
    let acked = stages(cluster, "acked");
    assert_eq!(acked.len(), 1, "{cluster}");
    assert_eq!(
        acked[0]["receivers"][0]["receiver"],
        "apps/fluxgate-podinfo"
    );
    assert_eq!(acked[0]["receivers"][0]["outcome"], "delivered");
    assert_eq!(acked[0]["receivers"][0]["http_status"], 200);
    let fetched = stages(cluster, "fetched");
    assert_eq!(fetched.len(), 1, "{cluster}");
    assert_eq!(fetched[0]["object"], "GitRepository/apps/podinfo");
    assert_eq!(fetched[0]["revision"], revision.as_str());
    let applied = stages(cluster, "applied");
    let mut objects: Vec<&str> = applied
        .iter()
        .filter_map(|s| s["object"].as_str())
        .collect();
    objects.sort_unstable();
    assert_eq!(
        objects,
        [
            "Kustomization/apps/podinfo",
            "Kustomization/apps/podinfo-config"
        ]
    );
    // Each stage is timed from the push, in the order Flux reached them.
    let ms = |stage: &Value| stage["after_push_ms"].as_i64().expect("after_push_ms");
    assert!(ms(acked[0]) >= 0, "{cluster}");
    assert!(ms(acked[0]) <= ms(fetched[0]), "{cluster}");
    for stage in &applied {
        assert!(ms(fetched[0]) <= ms(stage), "{cluster}");
        assert_eq!(stage["revision"], revision.as_str());
    }
    // The stranger may not see the private project: the rule says why.
    let stranger = agent_trace(&trace, "stranger");
    assert_eq!(stranger["entitled"], false);
    assert_eq!(stranger["state"], "not_entitled");
    assert!(
        stranger["rule"]
            .as_str()
            .unwrap()
            .contains("private project"),
        "{stranger}"
    );

    // The CLI finds the push by project@sha and prints the same path.
    let text = setup
        .broker
        .cli(&["trace", &format!("{PROJECT}@{}", &after[..10])])
        .await;
    assert!(
        text.starts_with(&format!("seq {seq}  push  {PROJECT}")),
        "{text}"
    );
    assert!(text.contains("agent cluster: applied"), "{text}");
    assert!(
        text.contains("fetched    GitRepository/apps/podinfo"),
        "{text}"
    );
    assert!(text.contains("Kustomization/apps/podinfo-config"), "{text}");
    assert!(
        text.contains("agent stranger: not entitled: a private project"),
        "{text}"
    );
    let json: Value = serde_json::from_str(
        &setup
            .broker
            .cli(&["trace", "--json", &seq.to_string()])
            .await,
    )
    .unwrap();
    assert_eq!(json["seq"], seq);

    // The stage histograms saw it.
    for metric in [
        "fluxgate_stage_push_to_fetched_seconds_count",
        "fluxgate_stage_push_to_applied_seconds_count",
        "fluxgate_stage_sent_to_acked_seconds_count",
    ] {
        assert!(setup.broker.metric(metric).await >= 1.0, "{metric}");
    }
}

#[tokio::test]
async fn a_failing_kustomization_is_traced_as_failed_with_fluxs_message() {
    let setup = setup().await;
    let message = "kustomize build failed: accumulating resources: deploy/missing.yaml";
    setup
        .flux
        .fail_kustomization("apps", "podinfo-config", message);
    let (seq, after) = setup.push_until_triggered(200).await;
    let trace = eventually(PATIENCE, "the failure and the apply", || async {
        let trace = setup.trace_when(seq, "failed").await;
        let cluster = agent_trace(&trace, "cluster");
        (stages(cluster, "applied").len() == 1).then_some(trace)
    })
    .await;
    let cluster = agent_trace(&trace, "cluster");
    let failed = stages(cluster, "failed");
    assert_eq!(failed.len(), 1, "{cluster}");
    assert_eq!(failed[0]["object"], "Kustomization/apps/podinfo-config");
    assert_eq!(failed[0]["message"], message);
    assert_eq!(failed[0]["revision"], format!("main@sha1:{after}"));
    assert_eq!(
        stages(cluster, "applied")[0]["object"],
        "Kustomization/apps/podinfo"
    );
    let text = setup.broker.cli(&["trace", &seq.to_string()]).await;
    assert!(text.contains("agent cluster: failed"), "{text}");
    assert!(text.contains(message), "{text}");
    assert!(
        setup.broker.metric("fluxgate_sync_reports_total").await >= 3.0,
        "fetched, applied and failed were counted"
    );
}

#[tokio::test]
async fn the_events_api_needs_the_admin_token_and_names_a_missing_seq() {
    let setup = setup().await;
    let response = http_client()
        .get(setup.broker.http_url("/api/v1/events/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let (status, body) = setup.events_api(999_999).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.to_string().contains("999999 is not in the log"),
        "{body}"
    );
}

/// Every `fluxgate_…` series name `text` (a `/metrics` page) exports.
fn exported(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .filter(|name| name.starts_with("fluxgate_"))
        .map(str::to_owned)
        .collect()
}

/// The `fluxgate_…` names an expression reads.
fn series_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("fluxgate_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn the_alert_rules_and_the_grafana_dashboard_read_what_the_binaries_export() {
    let setup = setup().await;
    let (seq, _) = setup.push_until_triggered(300).await;
    setup.trace_when(seq, "applied").await;
    let root = fluxgate_e2e::kustomize::workspace_root();
    let alerts: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("deploy/monitoring/alerts.yaml")).unwrap(),
    )
    .expect("alerts.yaml is YAML");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/monitoring/grafana-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut exprs: Vec<(String, String)> = Vec::new();
    for rule in alerts["groups"][0]["rules"].as_array().expect("rules") {
        let name = rule["alert"]
            .as_str()
            .expect("every rule is an alert")
            .to_owned();
        assert!(rule["labels"]["severity"].is_string(), "{name}: severity");
        assert!(
            rule["annotations"]["summary"].is_string(),
            "{name}: summary"
        );
        humantime::parse_duration(rule["for"].as_str().expect("for")).expect("for is a duration");
        exprs.push((name, rule["expr"].as_str().expect("expr").to_owned()));
    }
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            exprs.push((title, target["expr"].as_str().expect("expr").to_owned()));
        }
    }
    assert!(exprs.len() >= 15, "{exprs:?}");

    // Every series must be exported by the broker or the agent, here, after a real push
    // was applied (names are checked once the series exist: both have seen everything).
    let scrape = |url: String| async move {
        http_client()
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let mut names = exported(&scrape(setup.broker.metrics_url("/metrics")).await);
    names.extend(exported(&scrape(format!("{}/metrics", setup.health)).await));
    for (what, expr) in &exprs {
        promql_parser::parser::parse(expr)
            .unwrap_or_else(|e| panic!("{what}: {expr:?} is not PromQL: {e}"));
        let read = series_in(expr);
        assert!(!read.is_empty(), "{what}: {expr}");
        for series in read {
            assert!(
                names.contains(&series),
                "{what} reads {series}, which neither binary exports: {names:?}"
            );
        }
    }
}
