//! Built-in Kubernetes objects checked strictly against the `k8s-openapi` types (API
//! v1.33): each object is deserialized into its typed struct, serialized back, and
//! compared with the original. A field the schema does not know (a typo) is dropped by the
//! round trip and reported by its path; a value of the wrong type fails deserialization,
//! also by its path. The only normalization is dropping `null` values from the original
//! (serde writes an absent optional field as nothing).

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Whether a kind is cluster-scoped (`None`: not a built-in kind this module knows).
pub fn is_cluster_scoped(api_version: &str, kind: &str) -> Option<bool> {
    match (api_version, kind) {
        ("v1", "Namespace")
        | ("rbac.authorization.k8s.io/v1", "ClusterRole" | "ClusterRoleBinding") => Some(true),
        ("v1", "ConfigMap" | "PersistentVolumeClaim" | "Secret" | "Service" | "ServiceAccount")
        | ("apps/v1", "DaemonSet" | "Deployment" | "StatefulSet")
        | ("policy/v1", "PodDisruptionBudget")
        | ("rbac.authorization.k8s.io/v1", "Role" | "RoleBinding") => Some(false),
        _ => None,
    }
}

/// Checks `object` against its typed schema. `None`: its apiVersion and kind are not a
/// built-in kind this module knows (a Flux kind, or a typo in either).
pub fn check(object: &Value) -> Option<Result<(), String>> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let result = match (api_version, kind) {
        ("v1", "Namespace") => round_trip::<Namespace>(object),
        ("v1", "ConfigMap") => round_trip::<ConfigMap>(object),
        ("v1", "PersistentVolumeClaim") => round_trip::<PersistentVolumeClaim>(object),
        ("v1", "Secret") => round_trip::<Secret>(object),
        ("v1", "Service") => round_trip::<Service>(object),
        ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(object),
        ("apps/v1", "DaemonSet") => round_trip::<DaemonSet>(object),
        ("apps/v1", "Deployment") => round_trip::<Deployment>(object),
        ("apps/v1", "StatefulSet") => round_trip::<StatefulSet>(object),
        ("policy/v1", "PodDisruptionBudget") => round_trip::<PodDisruptionBudget>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<ClusterRole>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip::<ClusterRoleBinding>(object)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>(object),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<RoleBinding>(object),
        _ => return None,
    };
    Some(result)
}

/// Deserializes `value` as `T`, serializes it back and lists every difference.
pub fn round_trip<T: DeserializeOwned + Serialize>(value: &Value) -> Result<(), String> {
    let typed: T = serde_path_to_error::deserialize(value.clone())
        .map_err(|err| format!("field {}: {}", err.path(), err.inner()))?;
    let back = serde_json::to_value(&typed).expect("a typed object serializes");
    let mut original = value.clone();
    drop_nulls(&mut original);
    let mut differences = Vec::new();
    compare("", &original, &back, &mut differences);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(differences.join("; "))
    }
}

fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

fn compare(path: &str, original: &Value, back: &Value, out: &mut Vec<String>) {
    match (original, back) {
        (Value::Object(original), Value::Object(back)) => {
            for (key, value) in original {
                let here = format!("{path}.{key}");
                match back.get(key) {
                    Some(round_tripped) => compare(&here, value, round_tripped, out),
                    None => out.push(format!("{here}: unknown field")),
                }
            }
            for key in back.keys().filter(|key| !original.contains_key(*key)) {
                out.push(format!("{path}.{key}: added by the schema"));
            }
        }
        (Value::Array(original), Value::Array(back)) if original.len() == back.len() => {
            for (index, (value, round_tripped)) in original.iter().zip(back).enumerate() {
                compare(&format!("{path}[{index}]"), value, round_tripped, out);
            }
        }
        _ if original == back => {}
        _ => out.push(format!("{path}: {original} became {back}")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(container: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "n"},
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {
                    "metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [container]}
                }
            }
        })
    }

    #[test]
    fn a_valid_object_passes() {
        let object = deployment(json!({"name": "c", "image": "i", "imagePullPolicy": "Always"}));
        assert_eq!(check(&object), Some(Ok(())));
    }

    #[test]
    fn an_unknown_field_is_named_by_its_path() {
        let object = deployment(json!({"name": "c", "image": "i", "imagePullPolicyy": "Always"}));
        let error = check(&object).unwrap().unwrap_err();
        assert_eq!(
            error,
            ".spec.template.spec.containers[0].imagePullPolicyy: unknown field"
        );
    }

    #[test]
    fn a_wrong_type_is_named_by_its_path() {
        let mut object = deployment(json!({"name": "c"}));
        object["spec"]["replicas"] = json!("two");
        let error = check(&object).unwrap().unwrap_err();
        assert!(error.starts_with("field spec.replicas: "), "{error}");
    }

    #[test]
    fn a_missing_required_field_fails() {
        let object = deployment(json!({"image": "i"}));
        let error = check(&object).unwrap().unwrap_err();
        assert!(error.contains("name"), "{error}");
    }

    #[test]
    fn unknown_kinds_and_api_versions_are_not_taken_for_built_ins() {
        let mut object = deployment(json!({"name": "c"}));
        object["apiVersion"] = json!("apps/v1beta1");
        assert_eq!(check(&object), None);
        assert_eq!(check(&json!({"apiVersion": "v1", "kind": "Pod"})), None);
    }
}
