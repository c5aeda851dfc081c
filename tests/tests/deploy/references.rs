//! What one object of a render says about another must hold within that render: a
//! Service's selector picks pods and its target ports are ports they declare; a
//! PodDisruptionBudget's selector picks pods; a workload's selector matches its own
//! template; the ConfigMaps, PersistentVolumeClaims and ServiceAccounts a pod names exist
//! in its namespace; a binding's role and service accounts exist. Secrets are the
//! exception: the manifests reference them and never carry one (a committed Secret would
//! overwrite the real one at every apply).

use std::collections::BTreeMap;

use serde_json::Value;

use super::pods::{Workload, workloads};

/// Every dangling reference in `objects`, in words.
pub fn problems(objects: &[Value]) -> Vec<String> {
    let workloads = workloads(objects);
    let exists = |kind: &str, namespace: &str, name: &str| {
        objects.iter().any(|object| {
            object["kind"] == kind
                && object["metadata"]["name"] == name
                && object["metadata"]["namespace"].as_str().unwrap_or_default() == namespace
        })
    };
    let mut out = Vec::new();
    for object in objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
        let here = format!("{kind} {namespace}/{name}");
        match kind {
            "Secret" => out.push(format!("{here}: the manifests must not carry Secrets")),
            "Service" => {
                let selector = labels(&object["spec"]["selector"]);
                let selected = selected(&workloads, namespace, &selector);
                if selected.is_empty() {
                    out.push(format!("{here}: its selector {selector:?} picks no pod"));
                }
                for port in object["spec"]["ports"].as_array().into_iter().flatten() {
                    let target = if port["targetPort"].is_null() {
                        &port["port"]
                    } else {
                        &port["targetPort"]
                    };
                    for workload in &selected {
                        if !declares_port(workload, target) {
                            out.push(format!(
                                "{here}: targetPort {target} is not a port of {}",
                                workload.describe()
                            ));
                        }
                    }
                }
            }
            "PodDisruptionBudget" => {
                let selector = labels(&object["spec"]["selector"]["matchLabels"]);
                if selected(&workloads, namespace, &selector).is_empty() {
                    out.push(format!("{here}: its selector {selector:?} picks no pod"));
                }
            }
            "RoleBinding" | "ClusterRoleBinding" => {
                let role_kind = object["roleRef"]["kind"].as_str().unwrap_or_default();
                let role_name = object["roleRef"]["name"].as_str().unwrap_or_default();
                let role_namespace = if role_kind == "Role" { namespace } else { "" };
                if !exists(role_kind, role_namespace, role_name) {
                    out.push(format!(
                        "{here}: {role_kind} {role_name} is not in the render"
                    ));
                }
                for subject in object["subjects"].as_array().into_iter().flatten() {
                    let subject_name = subject["name"].as_str().unwrap_or_default();
                    let subject_namespace = subject["namespace"].as_str().unwrap_or_default();
                    if subject["kind"] == "ServiceAccount"
                        && !exists("ServiceAccount", subject_namespace, subject_name)
                    {
                        out.push(format!(
                            "{here}: ServiceAccount {subject_namespace}/{subject_name} is not in the render"
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    for workload in &workloads {
        let here = workload.describe();
        let pod_labels = workload.pod_labels();
        if workload.selector.is_empty() || !is_subset(&workload.selector, &pod_labels) {
            out.push(format!(
                "{here}: selector {:?} does not match its template's labels",
                workload.selector
            ));
        }
        let pod = workload.pod();
        let account = pod.service_account_name.as_deref().unwrap_or("default");
        if !exists("ServiceAccount", &workload.namespace, account) {
            out.push(format!(
                "{here}: ServiceAccount {account} is not in the render"
            ));
        }
        for volume in pod.volumes.iter().flatten() {
            if let Some(config_map) = &volume.config_map
                && !exists("ConfigMap", &workload.namespace, &config_map.name)
            {
                out.push(format!(
                    "{here}: ConfigMap {} is not in the render",
                    config_map.name
                ));
            }
            if let Some(claim) = &volume.persistent_volume_claim
                && !exists(
                    "PersistentVolumeClaim",
                    &workload.namespace,
                    &claim.claim_name,
                )
            {
                out.push(format!(
                    "{here}: PersistentVolumeClaim {} is not in the render",
                    claim.claim_name
                ));
            }
        }
        for container in &pod.containers {
            for mount in container.volume_mounts.iter().flatten() {
                if !pod
                    .volumes
                    .iter()
                    .flatten()
                    .any(|volume| volume.name == mount.name)
                {
                    out.push(format!(
                        "{here}: volumeMount {} names no volume",
                        mount.name
                    ));
                }
            }
        }
    }
    out
}

fn labels(value: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(value.clone()).unwrap_or_default()
}

fn is_subset(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

fn selected<'a>(
    workloads: &'a [Workload],
    namespace: &str,
    selector: &BTreeMap<String, String>,
) -> Vec<&'a Workload> {
    if selector.is_empty() {
        return Vec::new();
    }
    workloads
        .iter()
        .filter(|workload| {
            workload.namespace == namespace && is_subset(selector, &workload.pod_labels())
        })
        .collect()
}

/// Whether a container of `workload` declares `port` (a number or a port name).
fn declares_port(workload: &Workload, port: &Value) -> bool {
    workload
        .pod()
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .any(|declared| match port {
            Value::Number(number) => number.as_i64() == Some(i64::from(declared.container_port)),
            Value::String(name) => declared.name.as_deref() == Some(name.as_str()),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn render() -> Vec<Value> {
        vec![
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa", "namespace": "n"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm-h98bc9c7k8", "namespace": "n"}}),
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "d", "namespace": "n"},
                "spec": {
                    "selector": {"matchLabels": {"app": "d"}},
                    "template": {
                        "metadata": {"labels": {"app": "d"}},
                        "spec": {
                            "serviceAccountName": "sa",
                            "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}],
                                            "volumeMounts": [{"name": "config", "mountPath": "/etc/x"}]}],
                            "volumes": [{"name": "config", "configMap": {"name": "cm-h98bc9c7k8"}}]
                        }
                    }
                }
            }),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "n"},
                   "spec": {"selector": {"app": "d"}, "ports": [{"port": 80, "targetPort": "http"}]}}),
        ]
    }

    #[test]
    fn a_consistent_render_passes() {
        assert_eq!(problems(&render()), Vec::<String>::new());
    }

    #[test]
    fn each_dangling_reference_is_named() {
        let cases: [(&str, Value, &str); 6] = [
            ("/3/spec/selector/app", json!("other"), "picks no pod"),
            (
                "/3/spec/ports/0/targetPort",
                json!("grpc"),
                "targetPort \"grpc\"",
            ),
            (
                "/2/spec/template/spec/serviceAccountName",
                json!("nobody"),
                "ServiceAccount nobody",
            ),
            (
                "/2/spec/template/spec/volumes/0/configMap/name",
                json!("cm"),
                "ConfigMap cm",
            ),
            (
                "/2/spec/selector/matchLabels/app",
                json!("e"),
                "does not match its template",
            ),
            (
                "/2/spec/template/spec/containers/0/volumeMounts/0/name",
                json!("cfg"),
                "names no volume",
            ),
        ];
        for (pointer, value, expected) in cases {
            let mut objects = Value::Array(render());
            *objects
                .pointer_mut(pointer)
                .unwrap_or_else(|| panic!("{pointer}")) = value;
            let Value::Array(objects) = objects else {
                unreachable!()
            };
            let found = problems(&objects);
            assert!(
                found.iter().any(|problem| problem.contains(expected)),
                "{pointer}: expected a problem about {expected}, got {found:?}"
            );
        }
        let mut with_secret = render();
        with_secret.push(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t", "namespace": "n"}}));
        assert_eq!(
            problems(&with_secret),
            vec!["Secret n/t: the manifests must not carry Secrets".to_owned()]
        );
    }
}
