//! Every `agent.yaml` the manifests under `deploy/` carry loads with the agent's own
//! loader, as the pod would load it (its token file mounted, its downward-API env set).

use std::path::Path;

use fluxgate_agent::AgentConfig;

/// Where the Deployment mounts the token Secret.
const MOUNTED_TOKEN: &str = "/var/run/secrets/fluxgate/token";

#[test]
fn every_agent_configuration_in_deploy_loads() {
    let files = fluxgate_e2e::kustomize::agent_config_files();
    assert!(!files.is_empty(), "deploy/ carries no agent.yaml");
    let dir = tempfile::tempdir().expect("temp dir");
    let token = dir.path().join("token");
    std::fs::write(&token, "fgat_example\n").expect("write the token");
    for file in files {
        assert!(
            file.text.contains(MOUNTED_TOKEN),
            "{}: token_file is not the mounted Secret",
            file.origin
        );
        let text = file
            .text
            .replace(MOUNTED_TOKEN, &token.display().to_string());
        let env = |name: &str| match name {
            "POD_NAME" => Some("fluxgate-agent-5c9d-x2k4p".to_owned()),
            "POD_NAMESPACE" => Some("fluxgate-agent".to_owned()),
            _ => None,
        };
        let config = AgentConfig::from_yaml(&text, Path::new("/"), &env)
            .unwrap_or_else(|e| panic!("{}: {e}", file.origin));
        assert!(
            config.warnings.is_empty(),
            "{}: {:?}",
            file.origin,
            config.warnings
        );
        let kubernetes = config
            .kubernetes
            .unwrap_or_else(|| panic!("{}: not in the Kubernetes mode", file.origin));
        assert!(
            kubernetes.leader.enabled,
            "{}: two replicas need leader election",
            file.origin
        );
        assert_eq!(
            kubernetes.leader.lease_namespace, "fluxgate-agent",
            "{}",
            file.origin
        );
        assert_eq!(
            kubernetes.leader.identity, "fluxgate-agent-5c9d-x2k4p",
            "{}",
            file.origin
        );
        assert!(
            config.health_listen.is_some(),
            "{}: the probes need health_listen",
            file.origin
        );
    }
}
