//! The deployment manifests under `deploy/`, checked offline: every directory with a
//! `kustomization.yaml` is rendered with `kubectl kustomize` (a new one is found by
//! itself), and every object of every render is checked against its schema (built-in
//! kinds against `k8s-openapi`, Flux kinds against strict schemas), the project's policy
//! (locked-down containers, probes, labels, namespaces, the agent's minimal RBAC) and the
//! other objects of its render (selectors, ports, names). No cluster, no network: kubectl
//! must be on PATH, and a missing one fails the tests.

mod builtin;
mod flux;
mod metadata;
mod pods;
mod rbac;
mod references;

use std::sync::OnceLock;

use fluxgate_e2e::kustomize::{
    AGENT_CONFIG_MAP, Render, config_map_file, is_generated_name, kustomization_dirs, render_all,
    workspace_root,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, PodSpec};
use serde_json::Value;

/// The agent's Deployment in every render that installs the agent.
const AGENT: &str = "fluxgate-agent";
/// The broker's Deployment.
const BROKER: &str = "fluxgate";

/// Every render, made once for all the tests of this binary.
fn renders() -> &'static [Render] {
    static RENDERS: OnceLock<Vec<Render>> = OnceLock::new();
    RENDERS.get_or_init(render_all)
}

fn render_of(dir: &str) -> &'static Render {
    renders()
        .iter()
        .find(|render| render.dir == dir)
        .unwrap_or_else(|| panic!("{dir} is not a kustomization directory"))
}

fn deployment(render: &Render, name: &str) -> Option<Deployment> {
    let object = render.find("Deployment", name)?;
    Some(serde_json::from_value(object.clone()).expect("checked by the schema test"))
}

fn pod(deployment: &Deployment) -> &PodSpec {
    let spec = deployment.spec.as_ref().expect("a Deployment has a spec");
    spec.template
        .spec
        .as_ref()
        .expect("a pod template has a spec")
}

fn container(deployment: &Deployment) -> &Container {
    pod(deployment)
        .containers
        .first()
        .expect("a pod has a container")
}

fn env<'a>(container: &'a Container, name: &str) -> Option<&'a EnvVar> {
    container.env.iter().flatten().find(|var| var.name == name)
}

/// The mount path of the volume named `volume`.
fn mount_path(container: &Container, volume: &str) -> Option<String> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .find(|mount| mount.name == volume)
        .map(|mount| mount.mount_path.clone())
}

fn fail_with(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn every_kustomization_under_deploy_is_found_and_renders() {
    let dirs = kustomization_dirs();
    for expected in [
        "deploy/agent",
        "deploy/broker/base",
        "deploy/broker/overlays/postgres-redis",
        "deploy/examples/agent-overlay",
        "deploy/flux",
        "deploy/flux/oci",
    ] {
        assert!(
            dirs.iter().any(|dir| dir == expected),
            "{expected} not found in {dirs:?}"
        );
    }
    for render in renders() {
        assert!(!render.objects.is_empty(), "{} renders nothing", render.dir);
    }
}

#[test]
fn every_object_matches_its_schema() {
    let mut problems = Vec::new();
    for render in renders() {
        for object in &render.objects {
            let outcome = builtin::check(object)
                .or_else(|| flux::check(object))
                .unwrap_or_else(|| {
                    Err(format!(
                        "{} {} is not a kind these checks know",
                        object["apiVersion"], object["kind"]
                    ))
                });
            if let Err(why) = outcome {
                problems.push(format!(
                    "{}: {} {}: {why}",
                    render.dir,
                    object["kind"].as_str().unwrap_or_default(),
                    object["metadata"]["name"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    fail_with(problems);
}

#[test]
fn every_object_has_its_namespace_and_the_recommended_labels() {
    let problems = renders()
        .iter()
        .flat_map(|render| {
            render
                .objects
                .iter()
                .flat_map(metadata::problems)
                .map(|problem| format!("{}: {problem}", render.dir))
        })
        .collect();
    fail_with(problems);
}

#[test]
fn every_container_is_locked_down_and_probed_on_livez_and_readyz() {
    let mut checked = 0;
    let mut problems = Vec::new();
    for render in renders() {
        for workload in pods::workloads(&render.objects) {
            checked += 1;
            problems.extend(
                pods::problems(&workload)
                    .into_iter()
                    .map(|problem| format!("{}: {problem}", render.dir)),
            );
        }
    }
    assert!(
        checked >= 4,
        "only {checked} workloads found: the renders lost their Deployments"
    );
    fail_with(problems);
}

#[test]
fn references_resolve_within_each_render() {
    let problems = renders()
        .iter()
        .flat_map(|render| {
            references::problems(&render.objects)
                .into_iter()
                .map(|problem| format!("{}: {problem}", render.dir))
        })
        .collect();
    fail_with(problems);
}

#[test]
fn the_agent_has_exactly_the_documented_permissions() {
    let mut checked = Vec::new();
    for render in renders() {
        let Some(agent) = deployment(render, AGENT) else {
            continue;
        };
        let namespace = agent.metadata.namespace.clone().unwrap_or_default();
        let granted = rbac::granted(&render.objects)
            .unwrap_or_else(|refused| panic!("{}: {}", render.dir, refused.join("\n")));
        let differences = rbac::differences(&granted, &rbac::documented_minimum(&namespace));
        assert!(
            differences.is_empty(),
            "{}: the agent's RBAC is not §5's:\n{}",
            render.dir,
            differences.join("\n")
        );
        checked.push(render.dir.as_str());
    }
    assert!(
        checked.contains(&"deploy/agent"),
        "the agent base was not checked: {checked:?}"
    );
}

#[test]
fn the_agent_runs_two_replicas_with_its_identity_token_and_configuration() {
    let broker_service = render_of("deploy/broker/base")
        .find("Service", BROKER)
        .expect("the broker's Service");
    let broker_grpc_port = broker_service["spec"]["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|port| port["name"] == "grpc"))
        .map(|port| port["port"].clone())
        .expect("the broker's Service has a grpc port");
    let in_cluster_broker = format!(
        "http://{}.{}.svc.cluster.local:{broker_grpc_port}",
        BROKER,
        broker_service["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
    );
    let mut checked = 0;
    for render in renders() {
        let Some(agent) = deployment(render, AGENT) else {
            continue;
        };
        checked += 1;
        let dir = &render.dir;
        let spec = agent.spec.as_ref().expect("a spec");
        assert_eq!(spec.replicas, Some(2), "{dir}: replicas");
        let pod = pod(&agent);
        let container = container(&agent);
        for (name, field) in [
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace"),
        ] {
            let from = env(container, name)
                .and_then(|var| var.value_from.as_ref())
                .and_then(|from| from.field_ref.as_ref())
                .map(|field_ref| field_ref.field_path.as_str());
            assert_eq!(from, Some(field), "{dir}: env {name} from the downward API");
        }
        assert_eq!(
            pod.automount_service_account_token,
            Some(true),
            "{dir}: the agent needs its API token"
        );
        assert!(
            pod.termination_grace_period_seconds.is_some(),
            "{dir}: terminationGracePeriodSeconds"
        );
        let spreads_over_nodes = pod
            .topology_spread_constraints
            .iter()
            .flatten()
            .any(|constraint| constraint.topology_key == "kubernetes.io/hostname");
        let anti_affinity = pod
            .affinity
            .as_ref()
            .is_some_and(|affinity| affinity.pod_anti_affinity.is_some());
        assert!(
            spreads_over_nodes || anti_affinity,
            "{dir}: the two replicas are not spread over nodes"
        );
        let budget = render
            .find("PodDisruptionBudget", AGENT)
            .unwrap_or_else(|| panic!("{dir}: no PodDisruptionBudget"));
        assert!(
            budget["spec"]["maxUnavailable"] == 1 || budget["spec"]["minAvailable"] == 1,
            "{dir}: the budget must keep one replica: {budget}"
        );

        let token_volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|volume| {
                volume.secret.as_ref().is_some_and(|secret| {
                    secret.secret_name.as_deref() == Some("fluxgate-agent-token")
                })
            })
            .unwrap_or_else(|| panic!("{dir}: Secret fluxgate-agent-token is not a volume"));
        let token_mount = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|mount| mount.name == token_volume.name)
            .unwrap_or_else(|| panic!("{dir}: the token volume is not mounted"));
        assert_eq!(
            token_mount.read_only,
            Some(true),
            "{dir}: the token is mounted read-only"
        );

        let config_volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|volume| {
                volume.config_map.as_ref().is_some_and(|config_map| {
                    is_generated_name(&config_map.name, AGENT_CONFIG_MAP.0)
                })
            })
            .unwrap_or_else(|| panic!("{dir}: ConfigMap {} is not a volume", AGENT_CONFIG_MAP.0));
        let config_path = format!(
            "{}/{}",
            mount_path(container, &config_volume.name).expect("the configuration is mounted"),
            AGENT_CONFIG_MAP.1
        );
        let args = container.args.clone().unwrap_or_default();
        assert!(
            args.windows(2)
                .any(|pair| pair[0] == "--config" && pair[1] == config_path),
            "{dir}: args {args:?} do not pass --config {config_path}"
        );

        let text = config_map_file(render, AGENT_CONFIG_MAP.0, AGENT_CONFIG_MAP.1);
        let config: Value =
            serde_yaml_ng::from_str(&text).unwrap_or_else(|err| panic!("{dir}: agent.yaml: {err}"));
        assert_eq!(
            config["token_file"].as_str(),
            Some(format!("{}/token", token_mount.mount_path).as_str()),
            "{dir}: token_file is the Secret's key `token`"
        );
        let health_port = container
            .ports
            .iter()
            .flatten()
            .find(|port| port.name.as_deref() == Some("health"))
            .map(|port| port.container_port)
            .unwrap_or_else(|| panic!("{dir}: no port named health"));
        let listen_port = config["health_listen"]
            .as_str()
            .and_then(|listen| listen.rsplit_once(':'))
            .map(|(_, port)| port);
        assert_eq!(
            listen_port,
            Some(health_port.to_string().as_str()),
            "{dir}: health_listen is the health port"
        );
        assert!(
            config["kubernetes"]["leader_election"]["lease_name"].is_string(),
            "{dir}: no lease name"
        );
        if dir == "deploy/agent" {
            assert_eq!(
                config["broker"].as_str(),
                Some(in_cluster_broker.as_str()),
                "{dir}: the broker base's Service"
            );
        }
    }
    assert!(
        checked >= 2,
        "the agent base and the example overlay install the agent"
    );
}

#[test]
fn the_broker_runs_alone_on_sqlite_or_three_times_on_postgres_and_redis() {
    let base = render_of("deploy/broker/base");
    let single = deployment(base, BROKER).expect("the broker base has its Deployment");
    let spec = single.spec.as_ref().expect("a spec");
    assert_eq!(spec.replicas, Some(1), "SQLite allows one broker");
    assert_eq!(
        spec.strategy
            .as_ref()
            .and_then(|strategy| strategy.type_.as_deref()),
        Some("Recreate")
    );
    let claim = pod(&single)
        .volumes
        .iter()
        .flatten()
        .find_map(|volume| {
            volume
                .persistent_volume_claim
                .as_ref()
                .map(|claim| (volume.name.clone(), claim.claim_name.clone()))
        })
        .expect("the base keeps its database on a PersistentVolumeClaim");
    assert!(
        base.find("PersistentVolumeClaim", &claim.1).is_some(),
        "the claim is in the base"
    );
    let data_mount = mount_path(container(&single), &claim.0).expect("the claim is mounted");
    let data_dir = env(container(&single), "FLUXGATE_DATA_DIR").and_then(|var| var.value.clone());
    assert!(
        data_dir
            .as_deref()
            .is_some_and(|dir| dir.starts_with(&format!("{data_mount}/"))),
        "the data directory {data_dir:?} must be a directory of its own on the volume mounted at {data_mount}"
    );

    let overlay = render_of("deploy/broker/overlays/postgres-redis");
    let replicated = deployment(overlay, BROKER).expect("the overlay keeps the Deployment");
    let spec = replicated.spec.as_ref().expect("a spec");
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(
        spec.strategy
            .as_ref()
            .and_then(|strategy| strategy.type_.as_deref()),
        Some("RollingUpdate")
    );
    assert!(
        overlay.of_kind("PersistentVolumeClaim").next().is_none(),
        "no volume with PostgreSQL"
    );
    assert!(
        pod(&replicated)
            .volumes
            .iter()
            .flatten()
            .all(|volume| volume.persistent_volume_claim.is_none()),
        "no claim in the pods"
    );
    for name in ["FLUXGATE_DATABASE_URL", "FLUXGATE_REDIS_URL"] {
        let from_secret = env(container(&replicated), name)
            .and_then(|var| var.value_from.as_ref())
            .and_then(|from| from.secret_key_ref.as_ref())
            .is_some();
        assert!(from_secret, "{name} comes from a Secret");
    }
    assert!(
        overlay.find("PodDisruptionBudget", BROKER).is_some(),
        "several replicas need a budget"
    );
}

#[test]
fn the_example_overlay_replaces_the_agent_configuration_and_image() {
    let dir = "deploy/examples/agent-overlay";
    let render = render_of(dir);
    let written = std::fs::read_to_string(workspace_root().join(dir).join(AGENT_CONFIG_MAP.1))
        .expect("the example's agent.yaml");
    assert_eq!(
        config_map_file(render, AGENT_CONFIG_MAP.0, AGENT_CONFIG_MAP.1),
        written
    );
    let image = |render: &Render| {
        container(&deployment(render, AGENT).expect("the agent"))
            .image
            .clone()
    };
    let base_image = image(render_of("deploy/agent"));
    let overlay_image = image(render);
    assert_ne!(
        overlay_image, base_image,
        "the overlay's images entry must match the base's image name"
    );
    assert!(overlay_image.is_some_and(|image| image.starts_with("registry.example.com/")));
}

#[test]
fn the_flux_objects_install_the_agent_base_with_its_configuration_patched() {
    let agent = render_of("deploy/agent");
    let agent_namespace =
        agent.find("Deployment", AGENT).expect("the agent")["metadata"]["namespace"].clone();
    let dirs = kustomization_dirs();
    let mut checked = 0;
    for render in renders() {
        for kustomization in render.of_kind("Kustomization") {
            checked += 1;
            let dir = &render.dir;
            let spec = &kustomization["spec"];
            let namespace = &kustomization["metadata"]["namespace"];
            let source_kind = spec["sourceRef"]["kind"].as_str().unwrap_or_default();
            let source_namespace = if spec["sourceRef"]["namespace"].is_null() {
                namespace
            } else {
                &spec["sourceRef"]["namespace"]
            };
            let source = render
                .of_kind(source_kind)
                .find(|source| {
                    source["metadata"]["name"] == spec["sourceRef"]["name"]
                        && &source["metadata"]["namespace"] == source_namespace
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{dir}: sourceRef {} is not in the render",
                        spec["sourceRef"]
                    )
                });
            let path = spec["path"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("./")
                .trim_end_matches('/');
            // A git source is this repository; an OCI artifact is pushed from ./deploy.
            let in_repository = match source_kind {
                "GitRepository" => path.to_owned(),
                _ => format!("deploy/{path}"),
            };
            assert_eq!(
                in_repository, "deploy/agent",
                "{dir}: {source_kind} path {path}"
            );
            assert!(dirs.contains(&in_repository));
            assert_eq!(spec["prune"], true, "{dir}: prune");
            assert_eq!(spec["wait"], true, "{dir}: wait");
            assert_eq!(
                spec["targetNamespace"], agent_namespace,
                "{dir}: the token Secret's namespace"
            );
            assert!(!source["spec"]["url"].is_null());
            for patch in spec["patches"].as_array().into_iter().flatten() {
                let target = &patch["target"];
                assert_eq!(
                    target["kind"], "ConfigMap",
                    "{dir}: only the configuration is patched"
                );
                assert!(
                    agent.of_kind("ConfigMap").any(|config_map| {
                        is_generated_name(
                            config_map["metadata"]["name"].as_str().unwrap_or_default(),
                            target["name"].as_str().unwrap_or_default(),
                        )
                    }),
                    "{dir}: the patch targets {}, which the agent base does not generate",
                    target["name"]
                );
                let body: Value =
                    serde_yaml_ng::from_str(patch["patch"].as_str().unwrap_or_default())
                        .expect("the patch is YAML");
                builtin::round_trip::<ConfigMap>(&body)
                    .unwrap_or_else(|why| panic!("{dir}: the patch is no ConfigMap: {why}"));
                assert!(
                    body["data"][AGENT_CONFIG_MAP.1].is_string(),
                    "{dir}: the patch replaces {}",
                    AGENT_CONFIG_MAP.1
                );
            }
        }
    }
    assert!(checked >= 2, "the git and the OCI installs");
}
