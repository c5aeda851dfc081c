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
