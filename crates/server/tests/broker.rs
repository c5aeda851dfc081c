//! A broker in this process: its handle (addresses, readiness, shutdown, exit result) and
//! what a fresh one serves on its operations listener.

mod support;

use fluxgate_e2e::harness::http_client;
use fluxgate_server::{Listeners, run};
use support::TestBroker;

#[tokio::test]
async fn a_broker_starts_on_bound_listeners_serves_and_stops_cleanly() {
    let broker = TestBroker::start(false).await;
    let addresses = broker.handle.addresses();
    assert_ne!(
        addresses.http.port(),
        0,
        "the bound port, not the requested one"
    );

    let readyz = http_client()
        .get(broker.metrics_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200);
    let livez = http_client()
        .get(broker.metrics_url("/livez"))
        .send()
        .await
        .unwrap();
    assert_eq!(livez.status(), 200);

    broker
        .handle
        .stop()
        .await
        .expect("a requested stop is a clean exit");
    let refused = http_client()
        .get(format!("http://{}/readyz", addresses.metrics))
        .send()
        .await;
    assert!(refused.is_err(), "the listeners are closed after the stop");
}

#[tokio::test]
async fn a_start_up_failure_is_reported_by_ready_and_by_wait() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path(), false);
    config.hook_secret = vec!["short".to_owned()];
    let mut handle = run(
        config,
        Listeners::ephemeral().await.unwrap(),
        Default::default(),
    )
    .unwrap();
    assert!(handle.ready().await.is_err(), "never ready");
    let err = handle.wait().await.unwrap_err();
    assert!(format!("{err:#}").contains("hook_secret"), "{err:#}");
}

/// Every metric name in the broker's crates: each `"fluxgate_…"` literal in their sources
/// (the agent's own metrics and the benchmark's are not the broker's).
fn metric_names_in_the_code() -> std::collections::BTreeSet<String> {
    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut names = std::collections::BTreeSet::new();
    let mut pending: Vec<std::path::PathBuf> = std::fs::read_dir(&crates)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|dir| !dir.ends_with("agent") && !dir.ends_with("bench"))
        .map(|dir| dir.join("src"))
        .collect();
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let source = std::fs::read_to_string(&path).unwrap();
            for literal in source.split('"').skip(1).step_by(2) {
                let is_name = literal.starts_with("fluxgate_")
                    && literal
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if is_name {
                    names.insert(literal.to_owned());
                }
            }
        }
    }
    names
}

#[tokio::test]
async fn a_fresh_broker_lists_every_metric_the_code_defines() {
    let names = metric_names_in_the_code();
    assert!(
        names.len() > 30,
        "the scan finds the metric names: {names:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path(), false);
    // With Redis, so that the Redis metrics exist too.
    config.redis_url = Some("redis://127.0.0.1:6379".to_owned());
    config.redis_key_prefix = format!("fluxgate-server-test-{}", std::process::id());
    let mut handle = run(
        config,
        Listeners::ephemeral().await.unwrap(),
        Default::default(),
    )
    .unwrap();
    handle.ready().await.unwrap();
    let scrape = http_client()
        .get(format!("http://{}/metrics", handle.addresses().metrics))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let missing: Vec<&String> = names
        .iter()
        // Labelled by agent: listed once an agent connects (tests/e2e/sync.rs reads them).
        .filter(|name| !fluxgate_stream::metric_names::PER_AGENT_GAUGES.contains(&name.as_str()))
        .filter(|name| {
            !scrape.contains(&format!("# TYPE {name} "))
                || !scrape.contains(&format!("# HELP {name} "))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "described and listed by a fresh broker: {missing:?}\n{scrape}"
    );
    handle.stop().await.unwrap();
}
