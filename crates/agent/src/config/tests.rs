//! Configuration parsing: a full file, defaults, and every rejected case with its message.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::receiver::ReceiverKind;

const MINIMAL: &str = "
broker: http://127.0.0.1:8150
receivers:
  - name: my-receiver
    project: group/app
    type: generic
    token: my-token
";

fn env(name: &str) -> Option<String> {
    (name == DEFAULT_TOKEN_ENV).then(|| "fgat_from_env".to_owned())
}

fn parse(yaml: &str) -> Result<AgentConfig, ConfigError> {
    AgentConfig::from_yaml(yaml, Path::new("/nonexistent"), &env)
}

fn error(yaml: &str) -> String {
    match parse(yaml) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(error) => error.to_string(),
    }
}

fn assert_error(yaml: &str, expected: &str) {
    let message = error(yaml);
    assert!(
        message.contains(expected),
        "error {message:?} should contain {expected:?}"
    );
}

/// `MINIMAL` with its receiver's `type` … `token` lines replaced by `receiver`.
fn with_receiver(receiver: &str) -> String {
    format!("broker: http://127.0.0.1:8150\nreceivers:\n{receiver}")
}

#[test]
fn minimal_config_gets_the_defaults() {
    let config = parse(MINIMAL).expect("valid");
    assert_eq!(config.brokers, vec!["http://127.0.0.1:8150"]);
    assert_eq!(config.token.reveal(), "fgat_from_env");
    assert_eq!(config.cluster_name, "");
    assert_eq!(config.retry, RetryPolicy::default());
    assert_eq!(config.retry.initial_backoff, Duration::from_millis(500));
    assert_eq!(config.retry.max_backoff, Duration::from_secs(30));
    assert_eq!(config.retry.report_after, Duration::from_secs(300));
    assert_eq!(config.retry.warn_every, Duration::from_secs(300));
    assert_eq!(config.health_listen, None);
    assert!(config.warnings.is_empty());
    assert_eq!(
        config.reconnect,
        ReconnectPolicy {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    );
    assert_eq!(config.request_timeout, Duration::from_secs(10));
    let receiver = &config.receivers[0];
    assert_eq!(receiver.name, "my-receiver");
    assert_eq!(receiver.kind, ReceiverKind::Generic);
    assert!(receiver.ref_pattern.is_none());
    assert_eq!(
        receiver.url.as_url().as_str(),
        "http://webhook-receiver.flux-system.svc.cluster.local/hook/\
         8a1182bb8ba88eae305b69af2c1839590333ebddd73eccbbe482c0c93d147305"
    );
}

#[test]
fn full_config_with_token_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("agent-token"), "fgat_abc\n").expect("write");
    std::fs::write(dir.path().join("receiver-token"), "my-token\n").expect("write");
    let yaml = "
broker: https://fluxgate.example.com:8150
token_file: agent-token
cluster_name: prod-eu
request_timeout: 3s
retry: {initial_backoff: 100ms, max_backoff: 2s, report_after: 1m, warn_every: 10m}
reconnect: {initial_backoff: 1s, max_backoff: 1m}
health_listen: 0.0.0.0:9152
receivers:
  - name: my-receiver
    project: https://gitlab.example.com/Group/App.git
    ref: refs/tags/v*
    type: generic-hmac
    token_file: receiver-token
    namespace: flux-system
    webhook_receiver_url: http://127.0.0.1:9292/
  - project: group/other
    type: generic
    url: http://flux.internal/hook/abc
  - name: gl
    project: group/app
    ref: main
    type: gitlab
    token: s3cr3t
";
    let config = AgentConfig::from_yaml(yaml, dir.path(), &|_| None).expect("valid");
    assert_eq!(config.token.reveal(), "fgat_abc", "agent token is trimmed");
    assert_eq!(config.cluster_name, "prod-eu");
    assert_eq!(config.request_timeout, Duration::from_secs(3));
    assert_eq!(
        config.retry,
        RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            report_after: Duration::from_secs(60),
            warn_every: Duration::from_secs(600),
        }
    );
    assert_eq!(
        config.health_listen,
        Some("0.0.0.0:9152".parse().expect("address"))
    );
    assert_eq!(config.reconnect.max_backoff, Duration::from_secs(60));

    let hmac = &config.receivers[0];
    assert_eq!(hmac.project.key(), "group/app");
    assert_eq!(hmac.token.expose(), "my-token\n", "receiver token is raw");
    assert_eq!(
        hmac.url.as_url().as_str(),
        "http://127.0.0.1:9292/hook/baf942a6b8038e8231291d524f1d8e54720d7b65c3bd1aa84057c41c317d5732"
    );

    let by_url = &config.receivers[1];
    assert_eq!(by_url.name, "receivers[1]");
    assert_eq!(
        by_url.url.as_url().as_str(),
        "http://flux.internal/hook/abc"
    );
    assert_eq!(by_url.token.expose(), "");

    assert_eq!(config.receivers[2].kind, ReceiverKind::Gitlab);
    assert!(
        !format!("{config:?}").contains("s3cr3t"),
        "secrets stay out of Debug"
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_location() {
    assert_error(&format!("{MINIMAL}brokr: x\n"), "unknown field `brokr`");
    let message = error(&with_receiver(
        "  - name: a\n    project: g/a\n    type: generic\n    token: t\n    tokn: x\n",
    ));
    assert!(message.contains("receivers[0]"), "{message}");
    assert!(message.contains("unknown field `tokn`"), "{message}");
    assert_error(
        &format!("{MINIMAL}retry: {{attempts: 3}}\n"),
        "unknown field `attempts`",
    );
}

#[test]
fn missing_and_malformed_values() {
    assert_error("receivers: []\n", "missing field `broker`");
    assert_error(
        &MINIMAL.replace("http://127.0.0.1:8150", "ftp://x"),
        "broker: scheme must be http or https",
    );
    assert_error(
        &MINIMAL.replace("http://127.0.0.1:8150", "nope"),
        "broker: \"nope\" has no scheme",
    );
    assert_error(
        &MINIMAL.replace("http://127.0.0.1:8150", "127.0.0.1:8150"),
        "broker: \"127.0.0.1:8150\" has no scheme: give the agent (gRPC) listener's URL with \
         http:// or https://; did you mean \"http://127.0.0.1:8150\"?",
    );
    assert_error(
        &MINIMAL.replace("http://127.0.0.1:8150", "fluxgate:8150"),
        "did you mean \"http://fluxgate:8150\"?",
    );
    assert_error(
        &MINIMAL.replace("http://127.0.0.1:8150", "http://"),
        "broker: \"http://\" is not a URL: empty host",
    );
    assert_error(
        &MINIMAL.replace("generic", "github"),
        "unknown variant `github`, expected one of `generic`, `generic-hmac`, `gitlab`",
    );
    assert_error(
        &format!("{MINIMAL}request_timeout: soon\n"),
        "request_timeout",
    );
    assert_error(
        &format!("{MINIMAL}request_timeout: 0s\n"),
        "request_timeout: must be longer than zero",
    );
}

#[test]
fn agent_token_sources() {
    assert_error(
        &format!("token_file: a\ntoken_env: B\n{MINIMAL}"),
        "token_file: set token_file or token_env, not both",
    );
    assert_error(
        &format!("token_env: OTHER\n{MINIMAL}"),
        "token_env: environment variable OTHER is not set",
    );
    let unset = AgentConfig::from_yaml(MINIMAL, Path::new("."), &|_| None)
        .expect_err("no token")
        .to_string();
    assert!(unset.contains("FLUXGATE_AGENT_TOKEN is not set"), "{unset}");
    assert_error(
        &format!("token_file: missing\n{MINIMAL}"),
        "token_file: cannot read",
    );
    for unsendable in ["fgat abc", "fgat_\u{e9}", "fgat\tabc"] {
        let refused =
            AgentConfig::from_yaml(MINIMAL, Path::new("."), &|_| Some(unsendable.to_owned()))
                .expect_err("a token the broker cannot read back")
                .to_string();
        assert!(
            refused.contains("token_env: the agent token has characters that cannot be sent"),
            "{refused}"
        );
    }
}

#[test]
fn the_old_max_attempts_key_still_loads_with_a_warning() {
    let config = parse(&format!("{MINIMAL}retry: {{max_attempts: 3}}\n")).expect("valid");
    assert_eq!(config.warnings.len(), 1);
    assert!(config.warnings[0].contains("retry.max_attempts is no longer used"));
}

#[test]
fn retry_and_reconnect_bounds() {
    assert_error(
        &format!("{MINIMAL}retry: {{report_after: 0s}}\n"),
        "retry.report_after: must be longer than zero",
    );
    assert_error(
        &format!("{MINIMAL}retry: {{warn_every: 0s}}\n"),
        "retry.warn_every: must be longer than zero",
    );
    assert_error(
        &format!("{MINIMAL}health_listen: localhost\n"),
        "health_listen: invalid socket address syntax",
    );
    assert_error(
        &format!("{MINIMAL}retry: {{initial_backoff: 0s}}\n"),
        "retry.initial_backoff: must be longer than zero",
    );
    assert_error(
        &format!("{MINIMAL}reconnect: {{initial_backoff: 2s, max_backoff: 1s}}\n"),
        "reconnect.max_backoff: must not be shorter than initial_backoff",
    );
    assert_error(
        &format!("{MINIMAL}retry: {{max_backoff: forever}}\n"),
        "max_backoff",
    );
}

#[test]
fn receiver_list_errors_name_the_receiver() {
    assert_error(
        "broker: http://b\nreceivers: []\n",
        "receivers: at least one receiver is required",
    );
    let cases = [
        (
            "  - name: a\n    project: 'a//b'\n    type: generic\n    token: t\n",
            "receivers[0].project: path \"a//b\" has an empty segment",
        ),
        (
            "  - name: a\n    project: g/a\n    ref: 'refs/heads/['\n    type: generic\n    token: t\n",
            "receivers[0].ref: ref pattern",
        ),
        (
            "  - project: g/a\n    type: generic\n    token: t\n",
            "receivers[0].name: required unless url is given",
        ),
        (
            "  - name: ' '\n    project: g/a\n    type: generic\n    token: t\n",
            "receivers[0].name: must not be empty",
        ),
        (
            "  - name: a\n    project: g/a\n    type: generic\n    token: t\n    token_file: f\n",
            "receivers[0].token_file: set token or token_file, not both",
        ),
        (
            "  - name: a\n    project: g/a\n    type: generic\n",
            "receivers[0].token: token or token_file is required: the hook path is computed from it",
        ),
        (
            "  - name: a\n    project: g/a\n    type: generic-hmac\n    url: http://f/hook/x\n",
            "receivers[0].token: token or token_file is required: this receiver type authenticates",
        ),
        (
            "  - name: a\n    project: g/a\n    type: generic\n    url: http://f/hook/x\n    namespace: n\n",
            "receivers[0].namespace: cannot be combined with url",
        ),
        (
            "  - name: a\n    project: g/a\n    type: generic\n    url: 'ftp://f/x'\n",
            "receivers[0].url: scheme must be http or https",
        ),
        (
            "  - name: a\n    project: g/a\n    type: generic\n    token: t\n    webhook_receiver_url: 'http://x?q=1'\n",
            "receivers[0].webhook_receiver_url: ",
        ),
        (
            "  - name: a\n    project: g/a\n    type: gitlab\n    token: \"t\\n\"\n",
            "receivers[0].token: a gitlab receiver's token cannot hold line breaks",
        ),
        (
            "  - name: a\n    project: g/a\n    type: generic\n    token_file: nope\n",
            "receivers[0].token_file: cannot read /nonexistent/nope",
        ),
        (
            "  - name: app\n    project: g/a\n    type: generic\n    token: t\n  - name: app\n    project: g/b\n    type: generic\n    token: t\n",
            "receivers[1].name: \"app\" is already used by receivers[0]",
        ),
    ];
    for (receiver, expected) in cases {
        assert_error(&with_receiver(receiver), expected);
    }
}

#[test]
fn broker_may_be_a_list_of_replicas() {
    let yaml = MINIMAL.replace(
        "broker: http://127.0.0.1:8150",
        "broker: [http://replica-a:8150, https://replica-b:8150]",
    );
    let config = parse(&yaml).unwrap();
    assert_eq!(
        config.brokers,
        vec!["http://replica-a:8150", "https://replica-b:8150"]
    );
    assert_error(
        &MINIMAL.replace("broker: http://127.0.0.1:8150", "broker: []"),
        "broker: give at least one address",
    );
    assert_error(
        &MINIMAL.replace(
            "broker: http://127.0.0.1:8150",
            "broker: [http://a:1, ftp://b:2]",
        ),
        "broker: scheme must be http or https",
    );
}

const KUBERNETES: &str = "
broker: http://127.0.0.1:8150
gitlab_url: https://example.com/gitlab
kubernetes: {}
";

fn kube_env(name: &str) -> Option<String> {
    match name {
        DEFAULT_TOKEN_ENV => Some("fgat_from_env".to_owned()),
        "POD_NAMESPACE" => Some("fluxgate-agent".to_owned()),
        "POD_NAME" => Some("fluxgate-agent-7d9f-abcde".to_owned()),
        _ => None,
    }
}

#[test]
fn the_kubernetes_mode_needs_no_static_receiver_and_gets_agentk_defaults() {
    let config =
        AgentConfig::from_yaml(KUBERNETES, Path::new("/nonexistent"), &kube_env).expect("valid");
    assert!(config.receivers.is_empty());
    let kubernetes = config.kubernetes.expect("kubernetes mode");
    assert_eq!(
        kubernetes.webhook_base,
        crate::kubernetes::webhook_base::WebhookBase::Direct(
            "http://webhook-receiver.flux-system.svc.cluster.local".to_owned()
        )
    );
    assert_eq!(
        kubernetes
            .gitlab
            .project_of("https://example.com/gitlab/g/app.git")
            .map(|p| p.as_str().to_owned()),
        Some("g/app".to_owned())
    );
    assert!(kubernetes.namespaces.is_empty());
    assert_eq!(kubernetes.label_selector, None);
    let hosts: Vec<String> = kubernetes
        .registry
        .hosts()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(hosts, ["registry.example.com"]);
    let leader = &kubernetes.leader;
    assert!(leader.enabled);
    assert_eq!(leader.lease_name, "fluxgate-agent");
    assert_eq!(leader.lease_namespace, "fluxgate-agent");
    assert_eq!(leader.identity, "fluxgate-agent-7d9f-abcde");
    assert_eq!(leader.lease_duration, Duration::from_secs(15));
    assert_eq!(leader.renew_deadline, Duration::from_secs(10));
    assert_eq!(leader.retry_period, Duration::from_secs(2));
    assert_eq!(kubernetes.agent_id, "fluxgate-agent/fluxgate-agent");
}

#[test]
fn kubernetes_settings_are_validated() {
    let error = |yaml: &str| match AgentConfig::from_yaml(yaml, Path::new("/x"), &kube_env) {
        Ok(_) => panic!("expected an error for {yaml}"),
        Err(error) => error.to_string(),
    };
    let base = "broker: http://127.0.0.1:8150\n";
    assert!(
        error(&format!("{base}kubernetes: {{}}\n"))
            .starts_with("gitlab_url: required with kubernetes")
    );
    assert!(
        error(&format!("{base}gitlab_url: ssh://h\nkubernetes: {{}}\n"))
            .starts_with("gitlab_url: scheme")
    );
    assert!(
        error(&format!(
            "{KUBERNETES}flux: {{webhook_receiver_url: 'http://x/?a=b'}}\n"
        ))
        .starts_with("flux.webhook_receiver_url:")
    );
    assert!(
        error(&format!(
            "{base}gitlab_url: https://g\nkubernetes: {{namespaces: [Bad_NS]}}\n"
        ))
        .starts_with("kubernetes.namespaces[0]:")
    );
    assert!(
        error(&format!(
            "{base}gitlab_url: https://g\nkubernetes: {{leader_election: {{lease_duration: 5s, renew_deadline: 5s}}}}\n"
        ))
        .starts_with("kubernetes.leader_election.renew_deadline: must be shorter than lease_duration")
    );
    assert!(
        error(&format!(
            "{base}gitlab_url: https://g\nkubernetes: {{unknown: 1}}\n"
        ))
        .contains("unknown field")
    );
    assert!(
        error(&format!(
            "{base}gitlab_url: https://g\nkubernetes: {{registry_hosts: [ok.example.com, 'https://r/x']}}\n"
        ))
        .starts_with("kubernetes.registry_hosts[1]:")
    );
    assert!(error(base).starts_with("receivers: at least one receiver is required"));
}

#[test]
fn registry_hosts_replace_the_default_and_may_be_empty() {
    let config = AgentConfig::from_yaml(
        &format!("{KUBERNETES}\n").replace(
            "kubernetes: {}",
            "kubernetes: {registry_hosts: [gitlab.example.com:5050, Registry.Example.com]}",
        ),
        Path::new("/x"),
        &kube_env,
    )
    .expect("valid");
    let hosts: Vec<String> = config
        .kubernetes
        .unwrap()
        .registry
        .hosts()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(hosts, ["gitlab.example.com:5050", "registry.example.com"]);
    let off = AgentConfig::from_yaml(
        &KUBERNETES.replace("kubernetes: {}", "kubernetes: {registry_hosts: []}"),
        Path::new("/x"),
        &kube_env,
    )
    .expect("valid");
    assert!(off.kubernetes.unwrap().registry.hosts().is_empty());
}

#[test]
fn the_former_metrics_listen_still_works_with_a_warning() {
    let config = parse(&format!("{MINIMAL}metrics_listen: 127.0.0.1:9152\n")).expect("valid");
    assert_eq!(
        config.health_listen,
        Some("127.0.0.1:9152".parse().unwrap())
    );
    assert!(
        config.warnings.iter().any(|w| w.contains("health_listen")),
        "{:?}",
        config.warnings
    );
    assert_error(
        &format!("{MINIMAL}metrics_listen: 127.0.0.1:1\nhealth_listen: 127.0.0.1:2\n"),
        "metrics_listen: is the former name of health_listen",
    );
}

/// Every message of an error and its causes, outermost first.
fn chain(error: &ConfigError) -> Vec<String> {
    let mut messages = vec![error.to_string()];
    let mut cause = std::error::Error::source(error);
    while let Some(next) = cause {
        messages.push(next.to_string());
        cause = next.source();
    }
    messages
}

#[test]
fn errors_say_each_thing_once() {
    let yaml = parse("broker: [unclosed\n").unwrap_err();
    let missing = AgentConfig::load(Path::new("/nonexistent/agent.yaml")).unwrap_err();
    for error in [yaml, missing] {
        let messages = chain(&error);
        for (i, message) in messages.iter().enumerate() {
            assert!(
                !messages[i + 1..]
                    .iter()
                    .any(|later| message.contains(later.as_str())),
                "a cause repeats its error: {messages:?}"
            );
        }
    }
    let missing = AgentConfig::load(Path::new("/nonexistent/agent.yaml")).unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("cannot read /nonexistent/agent.yaml: No such file"),
        "{missing}"
    );
}
