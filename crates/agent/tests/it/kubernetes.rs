//! The agent binary in its Kubernetes mode with `OCIRepository` sources: against the
//! Kubernetes API stand-in and the notification-controller stand-in (`fluxgate-e2e`), and
//! the fake broker, which sends artifact and push events as the real broker would.

use std::process::Stdio;

use fluxgate_agent::kubernetes::names;
use fluxgate_agent::kubernetes::source::SourceKind;
use fluxgate_e2e::kube_api::{FluxCrds, KubeApiStandIn, NotificationControllerStandIn};
use fluxgate_proto::v1 as proto;
use proto::broker_message::Message;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::fake_broker::{FakeBroker, FakeStream};
use crate::support::{AGENT_TOKEN, PATIENCE};

const BINARY: &str = env!("CARGO_BIN_EXE_fluxgate-agent");
const REGISTRY: &str = "registry.gitlab.example.com";

struct Setup {
    api: KubeApiStandIn,
    controller: NotificationControllerStandIn,
    broker: FakeBroker,
    _agent: Child,
    _dir: tempfile::TempDir,
}

/// A cluster with Flux (`crds`), the fake broker, and the agent binary watching them.
async fn setup(crds: FluxCrds) -> Setup {
    let api = KubeApiStandIn::start().await;
    api.cluster().install_flux_crds(crds);
    let controller = NotificationControllerStandIn::start(&api).await;
    let broker = FakeBroker::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = api.write_kubeconfig(dir.path());
    std::fs::write(dir.path().join("token"), format!("{AGENT_TOKEN}\n")).expect("write");
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "broker: {}\ntoken_file: token\ncluster_name: oci\n\
             retry: {{initial_backoff: 20ms, max_backoff: 200ms}}\n\
             reconnect: {{initial_backoff: 50ms, max_backoff: 500ms}}\n\
             gitlab_url: https://gitlab.example.com\n\
             flux: {{webhook_receiver_url: '{}'}}\n\
             kubernetes: {{leader_election: {{enabled: false}}}}\n",
            broker.url(),
            controller.webhook_base_url()
        ),
    )
    .expect("write");
    let agent = Command::new(BINARY)
        .arg("--config")
        .arg(&config)
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info,fluxgate_agent=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the agent binary");
    Setup {
        api,
        controller,
        broker,
        _agent: agent,
        _dir: dir,
    }
}

fn oci_repository(name: &str, url: &str, reference: Value) -> Value {
    json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "OCIRepository",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"url": url, "interval": "5m", "ref": reference},
    })
}

/// Waits until Flux made Receiver `apps/<name>` Ready, and returns it.
async fn ready_receiver(setup: &Setup, name: &str) -> Value {
    setup
        .api
        .cluster()
        .wait_for(&format!("Receiver apps/{name} Ready"), PATIENCE, |c| {
            c.get("receivers", "apps", name).filter(|r| {
                r["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
        })
        .await
}

/// Reads the stream's Hello and subscription changes until every one of `projects` is
/// subscribed with every ref.
async fn wait_subscribed(stream: &mut FakeStream, projects: &[&str]) {
    let mut subscribed: Vec<(String, String)> = stream
        .hello
        .subscriptions
        .iter()
        .map(|s| (s.project.clone(), s.ref_pattern.clone()))
        .collect();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !projects
        .iter()
        .all(|p| subscribed.contains(&((*p).to_owned(), String::new())))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{projects:?} are subscribed in time: {subscribed:?}"
        );
        let change = stream.next_subscription_change().await;
        subscribed.retain(|s| {
            !change
                .remove
                .iter()
                .any(|r| (&r.project, &r.ref_pattern) == (&s.0, &s.1))
        });
        subscribed.extend(change.add.into_iter().map(|s| (s.project, s.ref_pattern)));
    }
}

fn artifact_event(seq: u64, project: &str, matched: &[&str], url: &str, tag: &str) -> Message {
    Message::Event(proto::Event {
        seq,
        event_id: format!("event-{seq}"),
        project_id: 42,
        project_path: project.to_owned(),
        r#ref: "refs/heads/main".to_owned(),
        before: "0".repeat(40),
        after: format!("{seq:040}"),
        kind: proto::EventKind::Artifact as i32,
        received_at: None,
        matched_projects: matched.iter().map(|p| (*p).to_owned()).collect(),
        artifact: Some(proto::Artifact {
            url: url.to_owned(),
            tag: tag.to_owned(),
            digest: format!("sha256:{}", "a".repeat(64)),
            pipeline_id: "1001".to_owned(),
            job_id: "2002".to_owned(),
        }),
    })
}

#[tokio::test]
async fn an_artifact_in_range_triggers_the_oci_receiver_and_other_tags_and_pushes_do_not() {
    let mut setup = setup(FluxCrds::CURRENT).await;
    let url = format!("oci://{REGISTRY}/group/app/manifests");
    setup
        .api
        .cluster()
        .create(oci_repository(
            "app",
            &url,
            json!({"semver": ">=1.0.0 <2.0.0"}),
        ))
        .expect("create the OCIRepository");

    // The agent makes the token Secret and a generic-hmac Receiver for the OCIRepository.
    let receiver_name = names::receiver_name(SourceKind::OciRepository, "app");
    let receiver = ready_receiver(&setup, &receiver_name).await;
    assert_eq!(receiver["spec"]["type"], "generic-hmac");
    assert_eq!(
        receiver["spec"]["resources"],
        json!([{"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository", "name": "app"}])
    );
    assert_eq!(
        receiver["metadata"]["ownerReferences"][0]["kind"],
        "OCIRepository"
    );
    let secret_name = names::secret_name(SourceKind::OciRepository, "app");
    assert_eq!(receiver["spec"]["secretRef"]["name"], secret_name);
    let secret = setup
        .api
        .cluster()
        .get("secrets", "apps", &secret_name)
        .expect("the token Secret exists");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["name"], "app");

    let mut stream = setup.broker.next_stream().await;
    stream.welcome(0, false);
    let accepted: Vec<i32> = stream.hello.accepted_kinds.clone();
    assert!(accepted.contains(&(proto::EventKind::Artifact as i32)));
    // Every candidate project of the repository path, with every ref.
    wait_subscribed(&mut stream, &["group/app", "group/app/manifests"]).await;

    // In range, for the project the broker matched (group/app): the Receiver is called.
    stream.send(artifact_event(
        1,
        "group/app",
        &["group/app"],
        &url,
        "v1.4.0",
    ));
    let ack = stream.next_ack().await;
    assert_eq!(ack.seq, 1);
    assert_eq!(ack.outcomes.len(), 1, "{ack:?}");
    assert_eq!(ack.outcomes[0].receiver, format!("apps/{receiver_name}"));
    assert_eq!(ack.outcomes[0].http_status, 200);
    let hits = setup
        .controller
        .wait_for_hits(&receiver_name, 1, PATIENCE)
        .await;
    assert_eq!(hits.len(), 1);
    let source = setup
        .api
        .cluster()
        .get("ocirepositories", "apps", "app")
        .unwrap();
    assert!(
        source["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"].is_string(),
        "Flux was asked to reconcile the OCIRepository: {source}"
    );

    // Out of range, another repository of the project, and a push: nothing is called.
    stream.send(artifact_event(
        2,
        "group/app",
        &["group/app"],
        &url,
        "2.0.0",
    ));
    let other_image = format!("oci://{REGISTRY}/group/app/other");
    stream.send(artifact_event(
        3,
        "group/app",
        &["group/app"],
        &other_image,
        "1.5.0",
    ));
    stream.event(4, "group/app", "refs/heads/main", &["group/app"]);
    for seq in 2..=4 {
        let ack = stream.next_ack().await;
        assert_eq!(ack.seq, seq);
        assert!(
            ack.outcomes.is_empty(),
            "seq {seq} triggers nothing: {ack:?}"
        );
    }
    // Acked without outcomes means no receiver was handed the events.
    assert_eq!(setup.controller.hits(&receiver_name).len(), 1);
}
