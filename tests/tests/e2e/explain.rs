//! Subscriptions that can never match, with the real binaries: the agent warns about each,
//! `fluxgate agent show` lists them with the rule that stops them, and `fluxgate explain`
//! answers "would this agent get this push?" with the rule, the subscription and the ref
//! (exit 0 yes, 1 no).

use fluxgate_e2e::harness::payloads::{push, sha};
use fluxgate_e2e::harness::{
    AgentProcess, Broker, BrokerOptions, PATIENCE, Project, ReceiverConfig, eventually,
};
use serde_json::Value;

const AGENT: &str = "explainer";

#[tokio::test]
async fn agent_show_and_explain_say_why_a_push_would_or_would_not_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerOptions::embedded(dir.path())).await;
    let token = broker
        .create_agent(AGENT, "ops/config", &["--grant-project", "team/lib"])
        .await;
    // The catalog learns the projects from their pushes.
    let app = Project::private(1, "team/app");
    let lib = Project::private(2, "team/lib");
    for (project, n) in [(&app, 1), (&lib, 2)] {
        broker
            .post_hook(&push(project, "refs/heads/main", &sha(0), &sha(n)), &[])
            .await;
    }
    let nowhere = "http://127.0.0.1:9";
    let receivers = [
        ReceiverConfig::new("app", "team/app", "generic-hmac", "t", nowhere),
        ReceiverConfig {
            git_ref: Some("main".to_owned()),
            ..ReceiverConfig::new("lib", "team/lib", "generic-hmac", "t", nowhere)
        },
        ReceiverConfig::new("typo", "team/libb", "generic-hmac", "t", nowhere),
    ];
    let mut agent = AgentProcess::start(&broker.agent_url(), &token, &receivers).await;
    let warning = agent
        .process()
        .wait_for_log(
            "this subscription cannot match any push: its receivers will never be called",
            PATIENCE,
        )
        .await;
    assert_eq!(warning["level"], "WARN", "{warning}");

    // `agent show`: each subscription with its status and the rule.
    let statuses = eventually(PATIENCE, "the subscriptions stored", || async {
        let shown: Value =
            serde_json::from_str(&broker.cli(&["agent", "show", "--json", AGENT]).await).ok()?;
        let list = shown["subscriptions"]["subscriptions"].as_array()?.clone();
        (list.len() == 3).then_some(list)
    })
    .await;
    let state_of = |project: &str| {
        statuses
            .iter()
            .find(|s| s["project"] == project)
            .map(|s| s["state"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(state_of("team/app").as_deref(), Some("not_allowed"));
    assert_eq!(state_of("team/lib").as_deref(), Some("matchable"));
    assert_eq!(state_of("team/libb").as_deref(), Some("no_such_project"));
    let text = broker.cli(&["agent", "show", AGENT]).await;
    assert!(
        text.contains("subscriptions:   3 (2 cannot match"),
        "{text}"
    );
    assert!(
        text.contains("team/app (every ref): not_allowed: team/app (project 1) may not be seen: a private project that is neither the agent's configuration project nor granted to it"),
        "{text}"
    );
    assert!(
        text.contains(
            "team/lib (main): matchable: team/lib (project 2) may be seen: granted project team/lib"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "team/libb (every ref): no_such_project: no project team/libb is known to the broker"
        ),
        "{text}"
    );

    // Allowed: the grant, the subscription, the ref.
    let (code, text) = broker
        .cli_status(&[
            "explain",
            "--agent",
            AGENT,
            "--project",
            "team/lib",
            "--ref",
            "refs/heads/main",
        ])
        .await;
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.starts_with("would agent explainer get a push to team/lib (refs/heads/main)? yes"),
        "{text}"
    );
    assert!(
        text.contains("access rule:   allowed: granted project team/lib"),
        "{text}"
    );
    assert!(
        text.contains("  team/lib (refs main): matches refs/heads/main"),
        "{text}"
    );

    // The same project, another branch: the ref pattern stops it.
    let (code, text) = broker
        .cli_status(&[
            "explain",
            "--agent",
            AGENT,
            "--project",
            "team/lib",
            "--ref",
            "refs/heads/dev",
        ])
        .await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("do not match refs/heads/dev"), "{text}");

    // Denied by the access rule.
    let (code, text) = broker
        .cli_status(&["explain", "--agent", AGENT, "--project", "team/app"])
        .await;
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("access rule:   refused: a private project that is neither the agent's configuration project nor granted to it (fluxgate agent grant --project or --group)"),
        "{text}"
    );
    let (code, json) = broker
        .cli_status(&[
            "explain",
            "--json",
            "--agent",
            AGENT,
            "--project",
            "team/app",
        ])
        .await;
    assert_eq!(code, Some(1));
    let view: Value = serde_json::from_str(&json).expect("explain --json prints JSON");
    assert_eq!(view["would_receive"], false);
    assert_eq!(view["access"]["allowed"], false);
    assert_eq!(view["resolved"]["visibility"], "private");

    // No answer: exit 2.
    let (code, _) = broker
        .cli_status(&["explain", "--agent", "nobody", "--project", "team/app"])
        .await;
    assert_eq!(code, Some(2));
}
