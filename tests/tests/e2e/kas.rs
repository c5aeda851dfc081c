//! KAS compatibility on the wire, with the real binaries: GitLab Rails' `GitPushEvent`
//! (a Rails-like client minting its JWT as Rails does) on the KAS listener, and KAS's
//! `GitLabFlux/ReconcileProjects` on the agent listener for agentk-style clients.

use fluxgate_e2e::flux_receiver::{FluxReceiverStandIn, Receiver, ReceiverType};
use fluxgate_e2e::harness::payloads::{push, sha};
use fluxgate_e2e::harness::{
    AgentProcess, Broker, BrokerOptions, PATIENCE, Project, ReceiverConfig,
};
use fluxgate_e2e::kas_client::{
    KasSecret, RailsKasClient, rails_claims, sign_hs256, unsigned_token,
};
use fluxgate_proto::gitlab::agent::flux::rpc::git_lab_flux_client::GitLabFluxClient;
use fluxgate_proto::gitlab::agent::flux::rpc::{
    Project as FluxProject, ReconcileProjectsRequest, ReconcileProjectsResponse,
};
use serde_json::json;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

const GITLAB_HOST: &str = "gitlab.example.com";

/// A broker with the KAS listener on (a Rails secret file) and a relative URL root.
async fn kas_broker(dir: &std::path::Path, secret: &KasSecret) -> Broker {
    let secret_file = secret.write_file(dir);
    let mut options = BrokerOptions::embedded(dir.join("data"));
    options.extra_args = vec![
        "--kas-secret-file".to_owned(),
        secret_file.display().to_string(),
        "--kas-listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--kas-relative-url-root".to_owned(),
        "/gitlab".to_owned(),
    ];
    Broker::start(options).await
}

#[tokio::test]
async fn a_rails_git_push_event_reaches_a_receiver_whatever_its_ref_pattern() {
    let flux =
        FluxReceiverStandIn::start([Receiver::new("app", ReceiverType::GenericHmac, "app-token")])
            .await;
    let dir = tempfile::tempdir().unwrap();
    let secret = KasSecret::from_seed(1);
    let mut broker = kas_broker(dir.path(), &secret).await;
    let kas = broker.kas.expect("the ready line names the KAS listener");
    let token = broker.create_agent("cluster", "ops/app", &[]).await;
    let mut agent = AgentProcess::start(
        &broker.agent_url(),
        &token,
        &[ReceiverConfig::flux(
            "app",
            "ops/app",
            "generic-hmac",
            "app-token",
            &flux.base_url(),
        )
        .on_ref("refs/heads/release-*")],
    )
    .await;
    agent
        .process()
        .wait_for_log("connected to the broker", PATIENCE)
        .await;

    let mut rails = RailsKasClient::connect(kas, secret, GITLAB_HOST).await;
    rails
        .send_git_push_event(42, "ops/app")
        .await
        .expect("the broker accepts Rails' call");
    let hits = flux.wait_for_hits("app", 1, PATIENCE).await;
    assert_eq!(hits[0].status, 200, "the signed call was accepted");
    // The log is written by another thread: polled, not read once.
    let committed = broker
        .process()
        .wait_for_log("KAS git push event committed", PATIENCE)
        .await;
    assert_eq!(committed["outcome"], "accepted", "{committed}");
}

#[tokio::test]
async fn tokens_rails_would_not_send_are_unauthenticated_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let secret = KasSecret::from_seed(2);
    let broker = kas_broker(dir.path(), &secret).await;
    let mut rails = RailsKasClient::connect(broker.kas.unwrap(), secret.clone(), GITLAB_HOST).await;
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut claims = rails_claims(GITLAB_HOST);
        change(&mut claims);
        format!("bearer {}", sign_hs256(&hs256, &claims, &secret.bytes))
    };
    let now = rails_claims(GITLAB_HOST)["iat"].as_i64().unwrap();
    let cases: Vec<(Option<String>, &str)> = vec![
        (
            Some(with(&|c| c["exp"] = json!(now - 120))),
            "JWT validation failed: the JWT expired at",
        ),
        (
            Some(with(&|c| c["nbf"] = json!(now + 120))),
            "JWT validation failed: the JWT is not valid before",
        ),
        (
            Some(with(&|c| c["aud"] = json!("gitlab"))),
            "the JWT audience does not contain \"gitlab-kas\"",
        ),
        (
            Some(format!(
                "bearer {}",
                sign_hs256(
                    &hs256,
                    &rails_claims(GITLAB_HOST),
                    &KasSecret::from_seed(3).bytes
                )
            )),
            "the JWT signature does not match the KAS secret",
        ),
        (
            Some(format!(
                "bearer {}",
                unsigned_token(&rails_claims(GITLAB_HOST))
            )),
            "the JWT algorithm \"none\" is not allowed",
        ),
        (
            Some(format!(
                "Bearer {}",
                sign_hs256(
                    &json!({"alg": "RS256", "typ": "JWT"}),
                    &rails_claims(GITLAB_HOST),
                    &secret.bytes
                )
            )),
            "the JWT algorithm \"RS256\" is not allowed",
        ),
        (None, "missing `authorization: bearer <JWT>` metadata"),
        (
            Some("Basic dXNlcjpwYXNz".to_owned()),
            "missing `authorization: bearer <JWT>` metadata",
        ),
    ];
    for (authorization, reason) in cases {
        let status = rails
            .call(authorization.as_deref(), 42, "ops/app")
            .await
            .expect_err(reason);
        assert_eq!(status.code(), Code::Unauthenticated, "{reason}: {status:?}");
        assert!(status.message().contains(reason), "{reason}: {status:?}");
        if let Some(value) = &authorization {
            let token = value.split_once(' ').unwrap().1;
            assert!(!status.message().contains(token), "the token is not echoed");
        }
    }
    // The scheme is case-insensitive, and what Rails sends is accepted.
    rails.send_git_push_event(42, "ops/app").await.unwrap();
    // KAS's validation rules on the event.
    let token = format!(
        "bearer {}",
        sign_hs256(&hs256, &rails_claims(GITLAB_HOST), &secret.bytes)
    );
    for (id, path, reason) in [
        (0, "ops/app", "event.project.id must be greater than 0"),
        (42, "", "event.project.full_path must not be empty"),
    ] {
        let status = rails.call(Some(&token), id, path).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(reason), "{status:?}");
    }
}

#[tokio::test]
async fn a_secret_file_that_is_not_32_bytes_of_base64_stops_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kas-secret");
    std::fs::write(&file, "c2hvcnQ=\n").unwrap();
    let mut options = BrokerOptions::embedded(dir.path().join("data"));
    options.extra_args = vec![
        "--kas-secret-file".to_owned(),
        file.display().to_string(),
        "--kas-listen".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    let mut command =
        tokio::process::Command::new(fluxgate_e2e::harness::binaries::binary("fluxgate"));
    command
        .args([
            "--data-dir",
            &options.data_dir.display().to_string(),
            "serve",
        ])
        .args(&options.extra_args)
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--metrics-listen",
            "127.0.0.1:0",
            "--hook-secret",
            &options.hook_secret,
        ]);
    let mut process = fluxgate_e2e::harness::process::Process::spawn("fluxgate", command);
    let status = process
        .wait_for_exit(PATIENCE)
        .await
        .expect("the broker exits");
    assert!(!status.success());
    let output = process.lines().join("\n");
    assert!(
        output.contains("decodes to 5 bytes; it must be the Base64 of exactly 32 bytes"),
        "{output}"
    );
}

async fn reconcile(
    broker: &Broker,
    token: &str,
    ids: &[&str],
) -> Streaming<ReconcileProjectsResponse> {
    let channel = Channel::from_shared(broker.agent_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request = tonic::Request::new(ReconcileProjectsRequest {
        project: ids
            .iter()
            .map(|id| FluxProject {
                id: (*id).to_owned(),
            })
            .collect(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    GitLabFluxClient::new(channel)
        .reconcile_projects(request)
        .await
        .expect("the broker opens the stream")
        .into_inner()
}

async fn next_id(stream: &mut Streaming<ReconcileProjectsResponse>) -> String {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("a notification within the patience")
        .expect("the stream is open")
        .expect("a message")
        .project
        .expect("a project")
        .id
}

#[tokio::test]
async fn reconcile_projects_sends_the_path_as_sent_and_never_a_project_the_agent_may_not_see() {
    let dir = tempfile::tempdir().unwrap();
    let secret = KasSecret::from_seed(4);
    let mut broker = kas_broker(dir.path(), &secret).await;
    let token = broker.create_agent("cluster", "ops/app", &[]).await;
    // Under the relative root, as agentk derives it from a GitRepository URL; and a
    // private project the agent was never granted.
    let mut stream = reconcile(&broker, &token, &["gitlab/Ops/App", "secret/vault"]).await;

    let hooks = broker.hooks();
    let private = Project::private(7, "secret/vault");
    hooks
        .accepted_seq(&push(&private, "refs/heads/main", &sha(0), &sha(1)))
        .await;
    let app = Project::private(8, "ops/app");
    hooks
        .accepted_seq(&push(&app, "refs/heads/main", &sha(0), &sha(2)))
        .await;
    // Events come in seq order: the first one is the agent's project, so the private
    // push before it was not sent.
    assert_eq!(next_id(&mut stream).await, "gitlab/Ops/App");

    // GitLab's own notice (no ref) reaches it too.
    let mut rails = RailsKasClient::connect(broker.kas.unwrap(), secret, GITLAB_HOST).await;
    rails.send_git_push_event(7, "secret/vault").await.unwrap();
    rails.send_git_push_event(8, "ops/app").await.unwrap();
    assert_eq!(next_id(&mut stream).await, "gitlab/Ops/App");

    // An unknown token is refused like on fluxgate.v1; a bad path names the field.
    let channel = Channel::from_shared(broker.agent_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request = tonic::Request::new(ReconcileProjectsRequest { project: vec![] });
    request
        .metadata_mut()
        .insert("authorization", "Bearer fgat_unknown".parse().unwrap());
    let status = GitLabFluxClient::new(channel.clone())
        .reconcile_projects(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut request = tonic::Request::new(ReconcileProjectsRequest {
        project: vec![FluxProject { id: String::new() }],
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let status = GitLabFluxClient::new(channel)
        .reconcile_projects(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("project[0].id must not be empty"));

    // On shutdown the stream ends cleanly (agentk reconnects at once on EOF).
    assert!(broker.terminate().await, "the broker stops on SIGTERM");
    let end = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("the stream ends within the patience");
    assert!(matches!(end, Ok(None)), "a clean end, not {end:?}");
}
