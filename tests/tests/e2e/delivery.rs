//! The whole path with the real binaries: a GitLab hook over HTTP → broker → agent →
//! Flux Receiver stand-in.
//!
//! "Did not reach" is proven, never waited for: once the agent's stored cursor passes an
//! event's seq, the agent has handled (and acked) everything up to it, so a receiver that
//! was going to be called has been.

use std::time::Duration;

use fluxgate_e2e::flux_receiver::{FluxReceiverStandIn, Receiver, ReceiverType};
use fluxgate_e2e::harness::payloads::{project_rename, push, sha};
use fluxgate_e2e::harness::{
    AgentProcess, Broker, BrokerOptions, PATIENCE, Project, ReceiverConfig,
};

const WAIT: Duration = PATIENCE;

fn shared_fixture(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/../../shared/fixtures/gitlab/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}")))
        .unwrap()
}

async fn connected(agent: &mut AgentProcess) {
    agent
        .process()
        .wait_for_log("connected to the broker", WAIT)
        .await;
}

#[tokio::test]
async fn a_gitlab_fixture_reaches_the_right_receivers_with_valid_signatures() {
    let flux = FluxReceiverStandIn::start([
        Receiver::new("hmac", ReceiverType::GenericHmac, "hmac-token"),
        Receiver::new("gitlab", ReceiverType::Gitlab, "gitlab-token").with_events(&["Push Hook"]),
        Receiver::new("generic", ReceiverType::Generic, "generic-token"),
        Receiver::new("dev-only", ReceiverType::GenericHmac, "dev-token"),
        Receiver::new("other", ReceiverType::GenericHmac, "other-token"),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerOptions::embedded(dir.path())).await;
    let token = broker
        .create_agent(
            "cluster",
            "mike/diaspora",
            &["--grant-project", "other/svc"],
        )
        .await;
    let base = flux.base_url();
    let mut agent = AgentProcess::start(
        &broker.agent_url(),
        &token,
        &[
            ReceiverConfig::flux("hmac", "mike/diaspora", "generic-hmac", "hmac-token", &base)
                .on_ref("refs/heads/master"),
            ReceiverConfig::flux(
                "gitlab",
                "https://gitlab.example.com/mike/diaspora.git",
                "gitlab",
                "gitlab-token",
                &base,
            ),
            ReceiverConfig::new(
                "generic",
                "Mike/Diaspora",
                "generic",
                "generic-token",
                &flux.webhook_url("generic"),
            )
            .on_ref("master"),
            ReceiverConfig::flux(
                "dev-only",
                "mike/diaspora",
                "generic-hmac",
                "dev-token",
                &base,
            )
            .on_ref("refs/heads/dev"),
            ReceiverConfig::flux("other", "other/svc", "generic-hmac", "other-token", &base),
        ],
    )
    .await;
    connected(&mut agent).await;

    // The documented system-hook shape: no object_kind, no project.id.
    let fixture = shared_fixture("gitlab-system-hook-push.json");
    let response = broker.post_hook(&fixture, &[]).await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    let seq = response.seqs()[0];

    for name in ["hmac", "gitlab", "generic"] {
        let hits = flux.wait_for_hits(name, 1, WAIT).await;
        assert_eq!(
            hits[0].status, 200,
            "{name} accepted the call (signature or token valid)"
        );
        let body = hits[0].json();
        assert_eq!(body["project"]["path_with_namespace"], "mike/diaspora");
        assert_eq!(body["project"]["id"], 15);
        assert_eq!(body["ref"], "refs/heads/master");
        assert_eq!(body["after"], "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
        assert_eq!(body["seq"], seq);
    }
    let gitlab = &flux.hits("gitlab")[0];
    assert_eq!(gitlab.header("x-gitlab-token"), Some("gitlab-token"));
    assert_eq!(gitlab.header("x-gitlab-event"), Some("Push Hook"));
    assert!(
        flux.hits("hmac")[0]
            .header("x-signature")
            .is_some_and(|s| s.starts_with("sha256="))
    );

    // The same push from a project hook is a duplicate: nothing is delivered twice.
    let project_hook = shared_fixture("gitlab-project-push-hook.json");
    let again = broker
        .post_hook(&project_hook, &[("X-Gitlab-Event", "Push Hook")])
        .await;
    assert_eq!(again.body["status"], "duplicate", "{:?}", again.body);
    assert_eq!(again.seqs(), vec![seq]);

    broker.wait_for_cursor("cluster", seq).await;
    assert_eq!(flux.hits("dev-only").len(), 0, "another branch");
    assert_eq!(flux.hits("other").len(), 0, "another project");
    for name in ["hmac", "gitlab", "generic"] {
        assert_eq!(flux.hits(name).len(), 1, "{name} was called once");
    }
}

#[tokio::test]
async fn a_private_project_never_reaches_an_unauthorised_agent() {
    let flux = FluxReceiverStandIn::start([
        Receiver::new("insider", ReceiverType::GenericHmac, "insider-token"),
        Receiver::new("outsider", ReceiverType::GenericHmac, "outsider-token"),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerOptions::embedded(dir.path())).await;
    let insider_token = broker
        .create_agent("insider", "team/cfg", &["--grant-group", "team"])
        .await;
    let outsider_token = broker.create_agent("outsider", "other/cfg", &[]).await;
    let base = flux.base_url();
    let mut insider = AgentProcess::start(
        &broker.agent_url(),
        &insider_token,
        &[ReceiverConfig::flux(
            "insider",
            "team/secret",
            "generic-hmac",
            "insider-token",
            &base,
        )],
    )
    .await;
    let mut outsider = AgentProcess::start(
        &broker.agent_url(),
        &outsider_token,
        &[ReceiverConfig::flux(
            "outsider",
            "team/secret",
            "generic-hmac",
            "outsider-token",
            &base,
        )],
    )
    .await;
    connected(&mut insider).await;
    connected(&mut outsider).await;

    let secret = Project::private(42, "team/secret");
    let seq = broker
        .post_hook(&push(&secret, "refs/heads/main", &sha(0), &sha(1)), &[])
        .await
        .seqs()[0];

    flux.wait_for_hits("insider", 1, WAIT).await;
    broker.wait_for_cursor("outsider", seq).await;
    assert!(
        flux.hits("outsider").is_empty(),
        "the outsider agent saw a private project"
    );

    // The same project made public reaches both.
    let public = Project::new(42, "team/secret", 20);
    let seq = broker
        .post_hook(&push(&public, "refs/heads/main", &sha(1), &sha(2)), &[])
        .await
        .seqs()[0];
    flux.wait_for_hits("outsider", 1, WAIT).await;
    assert_eq!(flux.hits("outsider")[0].json()["seq"], seq);
}

#[tokio::test]
async fn an_agent_that_was_down_gets_what_it_missed() {
    let flux = FluxReceiverStandIn::start([
        Receiver::new("main", ReceiverType::GenericHmac, "main-token"),
        Receiver::new("tags", ReceiverType::Gitlab, "tags-token").with_events(&["Tag Push Hook"]),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerOptions::embedded(dir.path())).await;
    let token = broker.create_agent("away", "team/app", &[]).await;
    let base = flux.base_url();
    let mut agent = AgentProcess::start(
        &broker.agent_url(),
        &token,
        &[
            ReceiverConfig::flux("main", "team/app", "generic-hmac", "main-token", &base)
                .on_ref("refs/heads/main"),
            ReceiverConfig::flux("tags", "team/app", "gitlab", "tags-token", &base)
                .on_ref("refs/tags/v*"),
        ],
    )
    .await;
    connected(&mut agent).await;
    let app = Project::private(5, "team/app");
    let first = broker
        .post_hook(&push(&app, "refs/heads/main", &sha(0), &sha(1)), &[])
        .await
        .seqs()[0];
    flux.wait_for_hits("main", 1, WAIT).await;
    broker.wait_for_cursor("away", first).await;

    assert!(agent.stop().await, "the agent stops cleanly on SIGTERM");
    let main = broker
        .post_hook(&push(&app, "refs/heads/main", &sha(1), &sha(2)), &[])
        .await
        .seqs()[0];
    let tag = broker
        .post_hook(&push(&app, "refs/tags/v1.0.0", &sha(0), &sha(3)), &[])
        .await
        .seqs()[0];

    agent.restart();
    let main_hits = flux.wait_for_hits("main", 2, WAIT).await;
    assert_eq!(main_hits[1].json()["after"], sha(2));
    assert_eq!(main_hits[1].json()["seq"], main);
    let tag_hits = flux.wait_for_hits("tags", 1, WAIT).await;
    assert_eq!(tag_hits[0].json()["ref"], "refs/tags/v1.0.0");
    assert_eq!(tag_hits[0].header("x-gitlab-event"), Some("Tag Push Hook"));
    assert_eq!(tag_hits[0].status, 200);
    broker.wait_for_cursor("away", tag).await;
    assert_eq!(
        flux.hits("main").len(),
        2,
        "the event before the stop was not delivered again"
    );
}

#[tokio::test]
async fn a_renamed_project_still_matches() {
    let flux =
        FluxReceiverStandIn::start([Receiver::new("app", ReceiverType::GenericHmac, "app-token")])
            .await;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerOptions::embedded(dir.path())).await;
    let token = broker.create_agent("renamer", "team/app", &[]).await;
    let mut agent = AgentProcess::start(
        &broker.agent_url(),
        &token,
        &[ReceiverConfig::flux(
            "app",
            "team/app",
            "generic-hmac",
            "app-token",
            &flux.base_url(),
        )],
    )
    .await;
    connected(&mut agent).await;

    let before = Project::private(5, "team/app");
    broker
        .post_hook(&push(&before, "refs/heads/main", &sha(0), &sha(1)), &[])
        .await;
    flux.wait_for_hits("app", 1, WAIT).await;

    let after = Project::private(5, "team/app-v2");
    let renamed = broker
        .post_hook(&project_rename(&after, "team/app"), &[])
        .await;
    assert_eq!(renamed.status, 200, "{:?}", renamed.body);
    let seq = broker
        .post_hook(&push(&after, "refs/heads/main", &sha(1), &sha(2)), &[])
        .await
        .seqs()[0];

    let hits = flux.wait_for_hits("app", 2, WAIT).await;
    let body = hits[1].json();
    assert_eq!(body["project"]["path_with_namespace"], "team/app-v2");
    assert_eq!(body["seq"], seq);
    // The agent's configuration project followed the rename.
    let shown: serde_json::Value =
        serde_json::from_str(&broker.cli(&["agent", "show", "--json", "renamer"]).await).unwrap();
    assert_eq!(shown["config_project"], "team/app-v2");
}
