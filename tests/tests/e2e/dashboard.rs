//! The dashboard in a real headless Chromium (`fluxgate_e2e::cdp`), against the real
//! broker and agent with the Kubernetes and Flux stand-ins of `sync.rs`: nothing but the
//! login page before login (data routes 401 from the page too), a wrong token refused,
//! then, without a reload, a push appearing with its stages up to applied, a failing
//! Kustomization in red with Flux's message, and the agent's disconnect within seconds.
//!
//! Across replicas (without a browser): a session opened on one replica is valid on the
//! other, and each shows what happened on the other, from the database and Redis.
//!
//! `FLUXGATE_UPDATE_DOCS=1` saves the screenshot to `docs/dashboard.png`.

use std::path::Path;
use std::time::{Duration, Instant};

use fluxgate_e2e::cdp::Browser;
use fluxgate_e2e::harness::payloads::{push, sha};
use fluxgate_e2e::harness::{
    Broker, BrokerOptions, PATIENCE, Project, RawStream, eventually, http_client,
};
use fluxgate_store::testing::TestDatabase;
use serde_json::Value;

use crate::sync::{ADMIN_TOKEN, setup};

/// Submits the login form with `token` (a real form post: the browser keeps the cookie).
fn submit(token: &str) -> String {
    format!(
        "document.getElementById('token').value = {token:?}; \
         document.getElementById('login').submit(); true"
    )
}

/// The cell of `stage` in agent `cluster`'s row of the push at `seq`.
fn cell(seq: u64, stage: &str) -> String {
    format!(
        "document.querySelector('.push[data-seq=\"{seq}\"] tr[data-agent=\"cluster\"] \
         td[data-stage=\"{stage}\"]')"
    )
}

#[tokio::test]
async fn the_dashboard_shows_pushes_live_and_an_agent_leaving() {
    let mut setup = setup().await;
    let browser = Browser::launch(1280, 1000).await;
    let mut page = browser.page().await;
    let home = setup.broker.http_url("/");

    // Before login: the login page only, and the data routes refuse the page's own fetch.
    page.navigate(&home).await;
    page.wait_for(
        "document.getElementById('login') !== null",
        PATIENCE,
        "the login form",
    )
    .await;
    assert_eq!(
        page.eval("document.getElementById('agents') === null")
            .await,
        true
    );
    for path in ["/dashboard/snapshot", "/dashboard/events"] {
        let status = page
            .eval(&format!("fetch('{path}').then(r => r.status)"))
            .await;
        assert_eq!(status, 401, "{path} before login");
    }

    // A wrong token: the login page again, with the reason.
    page.eval(&submit("not-the-admin-token")).await;
    page.wait_for(
        "(document.getElementById('login-error') || {}).textContent",
        PATIENCE,
        "the wrong token refused",
    )
    .await;
    let error = page
        .eval("document.getElementById('login-error').textContent")
        .await;
    assert!(
        error.as_str().unwrap().contains("not the admin token"),
        "{error}"
    );
    assert_eq!(
        page.eval("document.getElementById('agents') === null")
            .await,
        true
    );
    let cookies = page.eval("document.cookie").await;
    assert_eq!(cookies, "", "no cookie for a wrong token");

    // The right one: the dashboard, live, with the connected agent.
    page.eval(&submit(ADMIN_TOKEN)).await;
    page.wait_for(
        "document.querySelector('#agents tr[data-agent=\"cluster\"][data-connected=\"yes\"]')",
        PATIENCE,
        "the connected agent listed",
    )
    .await;
    assert_eq!(
        page.eval("document.cookie").await,
        "",
        "the session cookie is HttpOnly"
    );
    page.wait_for(
        "document.getElementById('status').dataset.state === 'live'",
        PATIENCE,
        "the event stream open",
    )
    .await;
    // Set on this document: a reload would lose it.
    page.eval("window.fluxgateNoReload = true").await;

    // A push appears without a reload and goes through every stage.
    let (seq, _) = setup.push_until_triggered(300).await;
    page.wait_for(
        &format!("{}?.dataset.state === 'done'", cell(seq, "applied")),
        PATIENCE,
        "the push applied on the page",
    )
    .await;
    for stage in ["delivered", "triggered", "fetched", "applied"] {
        let text = page
            .eval(&format!("{}.textContent", cell(seq, stage)))
            .await;
        let text = text.as_str().unwrap();
        assert!(text.starts_with(&format!("{stage} +")), "{stage}: {text}");
        assert_eq!(
            page.eval(&format!("{}.dataset.state", cell(seq, stage)))
                .await,
            "done",
            "{stage}"
        );
    }
    let triggered = page
        .eval(&format!("{}.textContent", cell(seq, "triggered")))
        .await;
    assert!(
        triggered
            .as_str()
            .unwrap()
            .contains("apps/fluxgate-podinfo delivered 200"),
        "{triggered}"
    );
    page.wait_for(
        "Number(document.querySelector('#latency tr[data-stage=\"applied\"] td:nth-child(2)').textContent) >= 1",
        PATIENCE,
        "the applied latency counted",
    )
    .await;
    assert_eq!(page.eval("window.fluxgateNoReload === true").await, true);

    // A failing Kustomization: in red, with Flux's message.
    let message = "kustomize build failed: accumulating resources: deploy/missing.yaml";
    setup
        .flux
        .fail_kustomization("apps", "podinfo-config", message);
    let (failed_seq, _) = setup.push_until_triggered(400).await;
    page.wait_for(
        &format!(
            "{}?.dataset.state === 'failed'",
            cell(failed_seq, "applied")
        ),
        PATIENCE,
        "the failure on the page",
    )
    .await;
    let failure = page
        .eval(&format!(
            "document.querySelector('.push[data-seq=\"{failed_seq}\"] tr.failure').textContent"
        ))
        .await;
    assert!(failure.as_str().unwrap().contains(message), "{failure}");
    let red = page
        .eval(&format!(
            "getComputedStyle({}).color",
            cell(failed_seq, "applied")
        ))
        .await;
    assert_eq!(red, "rgb(207, 34, 46)", "failures are red");
    assert_eq!(page.eval("window.fluxgateNoReload === true").await, true);

    if std::env::var_os("FLUXGATE_UPDATE_DOCS").is_some() {
        let png = page.screenshot().await;
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
        std::fs::write(&path, png).expect("write docs/dashboard.png");
    }

    // The agent goes: the page says so within seconds.
    setup.agent.kill().await;
    let gone = Instant::now();
    page.wait_for(
        "document.querySelector('#agents tr[data-agent=\"cluster\"][data-connected=\"no\"]')",
        Duration::from_secs(10),
        "the agent shown disconnected",
    )
    .await;
    let took = gone.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(page.eval("window.fluxgateNoReload === true").await, true);
    browser.close().await;
}

/// The dashboard snapshot of `broker` with `cookie`.
async fn snapshot(broker: &Broker, cookie: &str) -> Value {
    let response = http_client()
        .get(broker.http_url("/dashboard/snapshot"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "a session from the other replica");
    response.json().await.unwrap()
}

fn agent_row<'a>(snapshot: &'a Value, name: &str) -> Option<&'a Value> {
    snapshot["agents"]
        .as_array()?
        .iter()
        .find(|agent| agent["name"] == name)
}

#[tokio::test]
async fn every_replica_shows_the_same_dashboard_and_takes_the_same_session() {
    let database = TestDatabase::postgres().await;
    let dirs = tempfile::tempdir().unwrap();
    let token_file = dirs.path().join("admin-token");
    std::fs::write(&token_file, ADMIN_TOKEN).unwrap();
    let prefix = format!("e2e-{}", uuid::Uuid::new_v4().simple());
    let replica = |name: &str| {
        let mut options = BrokerOptions::replica(
            dirs.path().join(name),
            database.url(),
            "redis://127.0.0.1:6379",
            &prefix,
        );
        options.admin_token_file = Some(token_file.clone());
        options
            .extra_args
            .extend(["--broker-id".to_owned(), format!("replica-{name}")]);
        options
    };
    let a = Broker::start(replica("a")).await;
    let b = Broker::start(replica("b")).await;

    // Logged in on a, the cookie opens b's dashboard.
    let login = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(a.http_url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    // An agent on b shows as connected to b on a's dashboard.
    let token = a.create_agent("edge", "team/app", &[]).await;
    let mut stream = RawStream::open(&b.agent_url(), &token, &[("team/app", "")], None)
        .await
        .unwrap();
    eventually(PATIENCE, "a shows the agent on b", || async {
        let snapshot = snapshot(&a, &cookie).await;
        let edge = agent_row(&snapshot, "edge")?;
        (edge["connected"] == true && edge["replicas"][0] == "replica-b").then_some(())
    })
    .await;

    // A push to a, acked on b: both dashboards show it delivered.
    let project = Project::private(1, "team/app");
    let seq = a
        .hooks()
        .accepted_seq(&push(&project, "refs/heads/main", &sha(0), &sha(1)))
        .await;
    let event = stream
        .next_event(PATIENCE)
        .await
        .unwrap()
        .expect("the push on b");
    stream.ack(event.seq).await;
    for broker in [&a, &b] {
        eventually(PATIENCE, "the push delivered on the dashboard", || async {
            let snapshot = snapshot(broker, &cookie).await;
            let push = snapshot["pushes"]
                .as_array()?
                .iter()
                .find(|p| p["seq"] == seq)?
                .clone();
            let cluster = push["clusters"]
                .as_array()?
                .iter()
                .find(|c| c["agent"] == "edge")?
                .clone();
            (cluster["stages"][0]["state"] == "done").then_some(())
        })
        .await;
    }

    // The stream closes on b: a says so within seconds.
    drop(stream);
    let closed = Instant::now();
    eventually(
        Duration::from_secs(10),
        "a shows the agent gone",
        || async {
            let snapshot = snapshot(&a, &cookie).await;
            (agent_row(&snapshot, "edge")?["connected"] == false).then_some(())
        },
    )
    .await;
    assert!(closed.elapsed() < Duration::from_secs(10));
}
