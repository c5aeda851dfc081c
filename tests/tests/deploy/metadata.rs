//! Metadata every object must carry: a namespace when its kind is namespaced (and none when
//! it is cluster-scoped), and the recommended labels `app.kubernetes.io/name`,
//! `app.kubernetes.io/component` and `app.kubernetes.io/part-of: fluxgate`, on the object
//! and on its pod template.

use serde_json::Value;

use super::{builtin, flux};

/// The labels every object and pod template carries.
pub const REQUIRED_LABELS: [&str; 3] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
];

/// What `object` lacks, in words.
pub fn problems(object: &Value) -> Vec<String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
    let here = format!("{kind} {name}");
    let mut out = Vec::new();
    let cluster_scoped = if flux::is_flux_kind(kind) {
        Some(false)
    } else {
        builtin::is_cluster_scoped(api_version, kind)
    };
    match (cluster_scoped, namespace.is_empty()) {
        (Some(true), false) => out.push(format!(
            "{here}: cluster-scoped, yet in namespace {namespace}"
        )),
        (Some(false), true) => out.push(format!("{here}: namespaced, yet without a namespace")),
        (None, _) => out.push(format!(
            "{here}: {api_version} {kind} is not a kind these checks know"
        )),
        _ => {}
    }
    out.extend(missing_labels(&here, &object["metadata"]["labels"]));
    let template = &object["spec"]["template"];
    if !template.is_null() {
        out.extend(missing_labels(
            &format!("{here} pod template"),
            &template["metadata"]["labels"],
        ));
    }
    out
}

fn missing_labels(here: &str, labels: &Value) -> Vec<String> {
    let mut out: Vec<String> = REQUIRED_LABELS
        .iter()
        .filter(|label| labels[**label].as_str().is_none_or(str::is_empty))
        .map(|label| format!("{here}: no label {label}"))
        .collect();
    if !labels["app.kubernetes.io/part-of"].is_null()
        && labels["app.kubernetes.io/part-of"] != "fluxgate"
    {
        out.push(format!("{here}: app.kubernetes.io/part-of is not fluxgate"));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const LABELS: [(&str, &str); 3] = [
        ("app.kubernetes.io/name", "fluxgate"),
        ("app.kubernetes.io/component", "broker"),
        ("app.kubernetes.io/part-of", "fluxgate"),
    ];

    fn labels() -> Value {
        json!(
            LABELS
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>()
        )
    }

    #[test]
    fn namespaces_follow_the_kind_scope() {
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n", "namespace": "x", "labels": labels()}});
        assert_eq!(
            problems(&namespace),
            vec!["Namespace n: cluster-scoped, yet in namespace x".to_owned()]
        );
        let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": labels()}});
        assert_eq!(
            problems(&config_map),
            vec!["ConfigMap c: namespaced, yet without a namespace".to_owned()]
        );
        let flux = json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "metadata": {"name": "g", "labels": labels()}});
        assert_eq!(
            problems(&flux),
            vec!["GitRepository g: namespaced, yet without a namespace".to_owned()]
        );
    }

    #[test]
    fn labels_are_required_on_the_object_and_its_template() {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "n", "labels": labels()},
            "spec": {"template": {"metadata": {"labels": {"app.kubernetes.io/name": "fluxgate", "app.kubernetes.io/part-of": "other"}}}}
        });
        assert_eq!(
            problems(&deployment),
            vec![
                "Deployment d pod template: no label app.kubernetes.io/component".to_owned(),
                "Deployment d pod template: app.kubernetes.io/part-of is not fluxgate".to_owned(),
            ]
        );
    }
}
