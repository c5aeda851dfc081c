//! What every pod the manifests run must be: non-root with a fixed uid, a read-only root
//! file system, no privilege escalation, no capabilities, the runtime's seccomp profile,
//! CPU and memory requests and a memory limit, a pinned image, and probes on `/livez` and
//! `/readyz` that hit a port the container declares.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

/// A workload's pod template, typed.
pub struct Workload {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub selector: std::collections::BTreeMap<String, String>,
    pub template: PodTemplateSpec,
}

impl Workload {
    pub fn pod(&self) -> &PodSpec {
        self.template
            .spec
            .as_ref()
            .expect("a workload's template has a spec")
    }

    pub fn pod_labels(&self) -> std::collections::BTreeMap<String, String> {
        self.template
            .metadata
            .as_ref()
            .and_then(|metadata| metadata.labels.clone())
            .unwrap_or_default()
    }

    pub fn describe(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// The Deployments, StatefulSets and DaemonSets among `objects`. Objects that do not
/// parse are left to the schema test.
pub fn workloads(objects: &[Value]) -> Vec<Workload> {
    objects.iter().filter_map(workload).collect()
}

fn workload(object: &Value) -> Option<Workload> {
    let (metadata, selector, template) = match object["kind"].as_str()? {
        "Deployment" => {
            let typed: Deployment = serde_json::from_value(object.clone()).ok()?;
            let spec = typed.spec?;
            (typed.metadata, spec.selector, spec.template)
        }
        "StatefulSet" => {
            let typed: StatefulSet = serde_json::from_value(object.clone()).ok()?;
            let spec = typed.spec?;
            (typed.metadata, spec.selector, spec.template)
        }
        "DaemonSet" => {
            let typed: DaemonSet = serde_json::from_value(object.clone()).ok()?;
            let spec = typed.spec?;
            (typed.metadata, spec.selector, spec.template)
        }
        _ => return None,
    };
    Some(Workload {
        kind: object["kind"].as_str()?.to_owned(),
        name: metadata.name.unwrap_or_default(),
        namespace: metadata.namespace.unwrap_or_default(),
        selector: selector.match_labels.unwrap_or_default(),
        template,
    })
}

/// Everything wrong with `workload`'s containers, each naming the container.
pub fn problems(workload: &Workload) -> Vec<String> {
    let pod = workload.pod();
    let pod_security = pod.security_context.clone().unwrap_or_default();
    let mut out = Vec::new();
    let containers = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten());
    for container in containers {
        let mut problem = |text: &str| {
            out.push(format!(
                "{} container {}: {text}",
                workload.describe(),
                container.name
            ))
        };
        let security = container.security_context.clone().unwrap_or_default();
        if !security
            .run_as_non_root
            .or(pod_security.run_as_non_root)
            .unwrap_or(false)
        {
            problem("runAsNonRoot is not true");
        }
        match security.run_as_user.or(pod_security.run_as_user) {
            Some(uid) if uid > 0 => {}
            other => problem(&format!(
                "runAsUser must be a fixed non-root uid, is {other:?}"
            )),
        }
        if security.read_only_root_filesystem != Some(true) {
            problem("readOnlyRootFilesystem is not true");
        }
        if security.allow_privilege_escalation != Some(false) {
            problem("allowPrivilegeEscalation is not false");
        }
        let drops_all = security
            .capabilities
            .as_ref()
            .and_then(|capabilities| capabilities.drop.as_ref())
            .is_some_and(|drop| drop.iter().any(|capability| capability == "ALL"));
        if !drops_all {
            problem("capabilities.drop does not include ALL");
        }
        let seccomp = security
            .seccomp_profile
            .or(pod_security.seccomp_profile.clone())
            .map(|profile| profile.type_);
        if seccomp.as_deref() != Some("RuntimeDefault") {
            problem(&format!(
                "seccompProfile is {seccomp:?}, not RuntimeDefault"
            ));
        }
        let resources = container.resources.clone().unwrap_or_default();
        let requests = resources.requests.unwrap_or_default();
        for resource in ["cpu", "memory"] {
            if !requests.contains_key(resource) {
                problem(&format!("no {resource} request"));
            }
        }
        if !resources.limits.unwrap_or_default().contains_key("memory") {
            problem("no memory limit");
        }
        match container.image.as_deref() {
            Some(image) if is_pinned(image) => {}
            other => problem(&format!(
                "image {other:?} is not registry/repository:tag (an `images:` entry missing?)"
            )),
        }
        let probes = [
            ("livenessProbe", &container.liveness_probe, "/livez"),
            ("readinessProbe", &container.readiness_probe, "/readyz"),
        ];
        for (field, probe, path) in probes {
            if let Err(why) = probe_hits(probe.as_ref(), path, container) {
                problem(&format!("{field}: {why}"));
            }
        }
        if let Some(startup) = &container.startup_probe
            && let Err(why) = probe_port_declared(startup, container)
        {
            problem(&format!("startupProbe: {why}"));
        }
    }
    out
}

/// `registry/…/repository:tag` (or `@sha256:…`): not a bare friendly name.
fn is_pinned(image: &str) -> bool {
    let (repository, version) = match image.rsplit_once('@') {
        Some((repository, digest)) => (repository, digest),
        None => {
            let last_slash = image.rfind('/').unwrap_or(0);
            match image[last_slash..].rfind(':') {
                Some(colon) => image.split_at(last_slash + colon),
                None => (image, ""),
            }
        }
    };
    repository.contains('/') && version.len() > 1
}

/// The probe is an HTTP GET of `path` on a port the container declares.
fn probe_hits(probe: Option<&Probe>, path: &str, container: &Container) -> Result<(), String> {
    let probe = probe.ok_or("missing")?;
    let get = probe.http_get.as_ref().ok_or("not an httpGet probe")?;
    if get.path.as_deref() != Some(path) {
        return Err(format!("path is {:?}, not {path}", get.path));
    }
    probe_port_declared(probe, container)
}

fn probe_port_declared(probe: &Probe, container: &Container) -> Result<(), String> {
    let port = &probe.http_get.as_ref().ok_or("not an httpGet probe")?.port;
    let declared = container.ports.iter().flatten().any(|declared| match port {
        IntOrString::Int(number) => declared.container_port == *number,
        IntOrString::String(name) => declared.name.as_deref() == Some(name),
    });
    if declared {
        Ok(())
    } else {
        Err(format!("port {port:?} is not one of the container's ports"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn locked_down() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "n"},
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {
                    "metadata": {"labels": {"a": "b"}},
                    "spec": {
                        "securityContext": {
                            "runAsNonRoot": true, "runAsUser": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}
                        },
                        "containers": [{
                            "name": "c",
                            "image": "ghcr.io/o/c:1.0",
                            "ports": [{"name": "health", "containerPort": 9152}],
                            "livenessProbe": {"httpGet": {"path": "/livez", "port": "health"}},
                            "readinessProbe": {"httpGet": {"path": "/readyz", "port": 9152}},
                            "resources": {
                                "requests": {"cpu": "10m", "memory": "32Mi"},
                                "limits": {"memory": "64Mi"}
                            },
                            "securityContext": {
                                "readOnlyRootFilesystem": true,
                                "allowPrivilegeEscalation": false,
                                "capabilities": {"drop": ["ALL"]}
                            }
                        }]
                    }
                }
            }
        })
    }

    fn problems_of(object: &Value) -> Vec<String> {
        workloads(std::slice::from_ref(object))
            .iter()
            .flat_map(problems)
            .collect()
    }

    #[test]
    fn a_locked_down_container_passes() {
        assert_eq!(problems_of(&locked_down()), Vec::<String>::new());
    }

    #[test]
    fn each_missing_guard_is_reported() {
        let pod = |field: &str| format!("/spec/template/spec/{field}");
        let container = |field: &str| format!("/spec/template/spec/containers/0/{field}");
        let cases = [
            (
                pod("securityContext/runAsNonRoot"),
                json!(false),
                "runAsNonRoot",
            ),
            (pod("securityContext/runAsUser"), json!(0), "runAsUser"),
            (
                container("securityContext/readOnlyRootFilesystem"),
                json!(false),
                "readOnlyRootFilesystem",
            ),
            (
                container("securityContext/allowPrivilegeEscalation"),
                json!(true),
                "allowPrivilegeEscalation",
            ),
            (
                container("securityContext/capabilities/drop"),
                json!(["NET_RAW"]),
                "capabilities.drop",
            ),
            (
                pod("securityContext/seccompProfile/type"),
                json!("Unconfined"),
                "seccompProfile",
            ),
            (
                container("resources/requests"),
                json!({"memory": "1Mi"}),
                "no cpu request",
            ),
            (container("resources/limits"), json!({}), "no memory limit"),
            (container("image"), json!("fluxgate-agent"), "image"),
            (
                container("livenessProbe/httpGet/path"),
                json!("/healthz"),
                "livenessProbe: path",
            ),
            (
                container("readinessProbe/httpGet/port"),
                json!(9153),
                "readinessProbe: port",
            ),
            (
                container("livenessProbe/httpGet/port"),
                json!("metrics"),
                "livenessProbe: port",
            ),
        ];
        for (pointer, value, expected) in cases {
            let mut object = locked_down();
            *object
                .pointer_mut(&pointer)
                .unwrap_or_else(|| panic!("{pointer}")) = value;
            let found = problems_of(&object);
            assert!(
                found.len() == 1 && found[0].contains(expected),
                "{pointer}: expected one problem about {expected}, got {found:?}"
            );
        }
    }

    #[test]
    fn pinned_images_name_a_registry_and_a_version() {
        assert!(is_pinned("ghcr.io/fluxgate/fluxgate:0.1.0"));
        assert!(is_pinned("localhost:5000/fluxgate@sha256:abc"));
        assert!(!is_pinned("localhost:5000/fluxgate"));
        assert!(!is_pinned("fluxgate:0.1.0"));
        assert!(!is_pinned("fluxgate"));
    }
}
