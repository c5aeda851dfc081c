//! Shared helpers: configurations pointing at the stand-in, events, waiting with deadlines.

use std::path::Path;
use std::time::Duration;

use fluxgate_agent::AgentConfig;
use fluxgate_agent::dispatch::{AckReport, Dispatcher};
use fluxgate_agent::event::TriggerEvent;
use fluxgate_agent::receiver::retry::Deliverer;
use fluxgate_agent::receiver::trigger::http_client;
use fluxgate_core::{EventKind, FullPath, GitRef};
use tokio_util::sync::CancellationToken;

/// The agent token the fake broker expects.
pub const AGENT_TOKEN: &str = "fgat_test-token";

/// Generous upper bound for anything a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A configuration with short backoffs. `receivers` is the YAML list, indented by two.
pub fn config(broker: &str, receivers: &str) -> AgentConfig {
    let yaml = format!(
        "broker: {broker}
cluster_name: test-cluster
request_timeout: 2s
retry: {{initial_backoff: 10ms, max_backoff: 40ms, report_after: 300ms, warn_every: 1s}}
reconnect: {{initial_backoff: 20ms, max_backoff: 100ms}}
receivers:
{receivers}"
    );
    AgentConfig::from_yaml(&yaml, Path::new("."), &|name| {
        (name == "FLUXGATE_AGENT_TOKEN").then(|| AGENT_TOKEN.to_owned())
    })
    .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{yaml}"))
}

/// A dispatcher whose workers stop when the returned token is dropped.
pub fn dispatcher(config: &AgentConfig) -> (Dispatcher, tokio_util::sync::DropGuard) {
    fluxgate_agent::install_crypto_provider();
    let client = http_client(config.request_timeout).expect("HTTP client");
    let cancel = CancellationToken::new();
    let dispatcher = Dispatcher::start(
        config.receivers.clone(),
        &Deliverer::new(client, config.retry),
        None,
        &cancel,
    );
    (dispatcher, cancel.drop_guard())
}

/// A push (or tag push, by the ref) to `project`.
pub fn push(seq: u64, project: &str, git_ref: &str) -> TriggerEvent {
    let git_ref = GitRef::parse(git_ref).expect("valid ref");
    TriggerEvent {
        seq,
        event_id: format!("event-{seq}"),
        project_id: 42,
        project_path: FullPath::parse(project).expect("valid path"),
        matched_projects: Vec::new(),
        kind: EventKind::for_ref(&git_ref),
        artifact: None,
        received_at: None,
        git_ref: Some(git_ref),
        before: "0".repeat(40),
        after: format!("{seq:040}"),
    }
}

/// Fails the test if an ack is ready now: every completion the workers sent so far has
/// been looked at, and none finished an event.
pub async fn assert_no_ack(dispatcher: &mut Dispatcher, why: &str) {
    if let Ok(ack) = tokio::time::timeout(Duration::from_millis(20), dispatcher.next_ack()).await {
        panic!("{why}, yet an ack is ready: {ack:?}");
    }
}

/// The next `count` acks, in completion order.
pub async fn next_acks(dispatcher: &mut Dispatcher, count: usize) -> Vec<AckReport> {
    let mut acks = Vec::with_capacity(count);
    for _ in 0..count {
        let ack = tokio::time::timeout(PATIENCE, dispatcher.next_ack())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} acks arrived: {acks:?}", acks.len()));
        acks.push(ack);
    }
    acks
}

/// Polls `condition` until it holds, failing the test after [`PATIENCE`].
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
