//! The broker's configuration as the Kubernetes manifests give it, loaded by the broker's
//! own loader: for every render under `deploy/` that runs the broker (the SQLite base and
//! the PostgreSQL + Redis overlay), the `fluxgate.toml` of its ConfigMap is loaded with the
//! environment the container gets (the image's `ENV` from `docker/Dockerfile`, then the
//! Deployment's `env`, later ones winning, as in the container). Then the settings must fit
//! the pod: listeners on all interfaces at the ports the container declares, secret files
//! inside the mounted Secret, the SQLite data directory on the volume, and a drain that
//! ends before Kubernetes kills the pod.
//!
//! Needs `kubectl` on PATH (see `fluxgate_e2e::kustomize`).

use std::path::Path;

use fluxgate_e2e::kustomize::{BROKER_CONFIG_MAP, config_map_file, render_all, workspace_root};
use fluxgate_server::Config;
use fluxgate_server::config::Overrides;
use serde_json::Value;

/// Values standing in for what the cluster fills in: Secrets and the downward API.
fn stand_in_value(var: &Value) -> String {
    let from = &var["valueFrom"];
    match from["secretKeyRef"]["key"].as_str() {
        Some("database-url") => "postgres://fluxgate:secret@postgres:5432/fluxgate".to_owned(),
        Some("redis-url") => "redis://redis:6379".to_owned(),
        Some(other) => panic!("no stand-in for Secret key {other}"),
        None if !from["fieldRef"].is_null() => "fluxgate-5d9c7b6f4-x2x8q".to_owned(),
        None => panic!("env {var} has neither a value nor a known source"),
    }
}

/// The `ENV` of the Dockerfile's last stage (the broker's image), as `KEY=value` pairs.
fn image_env(dockerfile: &str) -> Vec<(String, String)> {
    let last_stage = dockerfile.rsplit("\nFROM ").next().expect("a stage");
    let joined = last_stage.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|line| line.trim().strip_prefix("ENV "))
        .flat_map(|assignments| assignments.split_whitespace())
        .map(|assignment| {
            let (key, value) = assignment.split_once('=').expect("ENV KEY=value");
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// The port of the container port named `name`.
fn container_port(container: &Value, name: &str) -> u16 {
    container["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|port| port["name"] == name))
        .and_then(|port| port["containerPort"].as_u64())
        .and_then(|port| u16::try_from(port).ok())
        .unwrap_or_else(|| panic!("the container declares no port {name}"))
}

/// The mount path of the volume whose definition satisfies `is_it`.
fn mount_of(pod: &Value, container: &Value, is_it: impl Fn(&Value) -> bool) -> Option<String> {
    let volume = pod["volumes"]
        .as_array()?
        .iter()
        .find(|volume| is_it(volume))?;
    container["volumeMounts"]
        .as_array()?
        .iter()
        .find(|mount| mount["name"] == volume["name"])
        .and_then(|mount| mount["mountPath"].as_str())
        .map(str::to_owned)
}

#[test]
fn the_manifests_give_the_broker_a_configuration_it_loads_and_that_fits_its_pod() {
    let dockerfile = std::fs::read_to_string(workspace_root().join("docker/Dockerfile"))
        .expect("docker/Dockerfile");
    let image_env = image_env(&dockerfile);
    assert!(
        image_env.iter().any(|(key, _)| key == "FLUXGATE_DATA_DIR"),
        "the broker image's ENV was not found: {image_env:?}"
    );
    let scratch = tempfile::tempdir().unwrap();
    let mut checked = Vec::new();
    for render in render_all() {
        let Some(deployment) = render.find("Deployment", "fluxgate") else {
            continue;
        };
        let dir = render.dir.clone();
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let text = config_map_file(&render, BROKER_CONFIG_MAP.0, BROKER_CONFIG_MAP.1);
        let file = scratch.path().join(format!("{}.toml", checked.len()));
        std::fs::write(&file, text).unwrap();
        let mut env = image_env.clone();
        for var in container["env"].as_array().into_iter().flatten() {
            let value = var["value"]
                .as_str()
                .map_or_else(|| stand_in_value(var), str::to_owned);
            env.push((var["name"].as_str().unwrap().to_owned(), value));
        }
        let config = Config::load(Some(file.as_path()), env, Overrides::new())
            .unwrap_or_else(|err| panic!("{dir}: the broker refuses its configuration: {err}"));

        let config_mount = mount_of(pod, container, |volume| !volume["configMap"].is_null())
            .expect("the ConfigMap is mounted");
        let config_path = format!("{config_mount}/{}", BROKER_CONFIG_MAP.1);
        let config_var = container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|var| var["name"] == "FLUXGATE_CONFIG");
        assert_eq!(
            config_var.and_then(|var| var["value"].as_str()),
            Some(config_path.as_str()),
            "{dir}: FLUXGATE_CONFIG names the mounted file (for serve and for `kubectl exec … fluxgate agent`)"
        );
        for (listen, port) in [
            (config.http_listen, "http"),
            (config.agent_listen, "grpc"),
            (config.metrics_listen, "ops"),
        ] {
            assert!(
                listen.ip().is_unspecified(),
                "{dir}: {listen} is not reachable from the Service"
            );
            assert_eq!(
                listen.port(),
                container_port(container, port),
                "{dir}: {port}"
            );
        }
        let secrets_mount = mount_of(pod, container, |volume| {
            volume["secret"]["secretName"] == "fluxgate-secrets"
        })
        .expect("Secret fluxgate-secrets is mounted");
        for secret_file in [
            config.hook_secret_file.as_deref(),
            config.admin_token_file.as_deref(),
        ] {
            let file = secret_file
                .unwrap_or_else(|| panic!("{dir}: hook_secret_file and admin_token_file are set"));
            assert_eq!(
                file.parent(),
                Some(Path::new(&secrets_mount)),
                "{dir}: {} is a key of the mounted Secret",
                file.display()
            );
        }
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
        assert!(
            config.shutdown_grace.as_secs() < grace,
            "{dir}: shutdown_grace {:?} must end before Kubernetes kills the pod ({grace} s)",
            config.shutdown_grace
        );
        if config.uses_embedded_database() {
            let data_mount = mount_of(pod, container, |volume| {
                !volume["persistentVolumeClaim"].is_null()
            })
            .unwrap_or_else(|| panic!("{dir}: SQLite without a volume loses the log on restart"));
            assert!(
                config.data_dir.starts_with(&data_mount)
                    && config.data_dir != Path::new(&data_mount),
                "{dir}: data_dir {} must be a directory of its own on the volume at {data_mount} \
                 (fluxgate makes it 0700; the volume's root is not its own)",
                config.data_dir.display()
            );
        } else {
            assert!(
                config.database_url().starts_with("postgres://"),
                "{dir}: PostgreSQL"
            );
            assert!(config.redis_url.is_some(), "{dir}: Redis");
        }
        checked.push(dir);
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "deploy/broker/base",
            "deploy/broker/overlays/postgres-redis"
        ],
        "the renders that run the broker"
    );
}

#[test]
fn the_image_env_is_read_from_the_last_stage_with_continuations() {
    let dockerfile = "FROM a AS build\nENV X=1\nFROM b\nENV A=1 \\\n    B=two\nCMD [\"x\"]\n";
    assert_eq!(
        image_env(dockerfile),
        vec![
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "two".to_owned())
        ]
    );
}
