//! The agent's permissions against the minimal list of `kubernetes.md` §5: exactly these
//! (resource, verb) pairs, cluster-wide except the Lease, which is in the agent's own
//! namespace. A verb or resource more, or one less, fails; so does a wildcard or a
//! `resourceNames`/`nonResourceURLs` rule (neither is in the list).

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use serde_json::Value;

/// Where a permission holds: the whole cluster, or one namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Cluster,
    Namespace(String),
}

/// One permission: scope, API group, resource, verb.
pub type Permission = (Scope, String, String, String);

/// §5's list, with the Lease in `namespace`.
pub fn documented_minimum(namespace: &str) -> BTreeSet<Permission> {
    let cluster: [(&str, &str, &[&str]); 8] = [
        (
            "source.toolkit.fluxcd.io",
            "gitrepositories",
            &["get", "list", "watch"],
        ),
        (
            "source.toolkit.fluxcd.io",
            "ocirepositories",
            &["get", "list", "watch"],
        ),
        (
            "notification.toolkit.fluxcd.io",
            "receivers",
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        (
            "kustomize.toolkit.fluxcd.io",
            "kustomizations",
            &["get", "list", "watch"],
        ),
        (
            "helm.toolkit.fluxcd.io",
            "helmreleases",
            &["get", "list", "watch"],
        ),
        ("", "secrets", &["get", "create", "patch"]),
        ("", "events", &["create"]),
        ("events.k8s.io", "events", &["create"]),
    ];
    let mut permissions: BTreeSet<Permission> = cluster
        .iter()
        .flat_map(|(group, resource, verbs)| {
            verbs.iter().map(|verb| {
                (
                    Scope::Cluster,
                    (*group).to_owned(),
                    (*resource).to_owned(),
                    (*verb).to_owned(),
                )
            })
        })
        .collect();
    for verb in ["get", "create", "update"] {
        permissions.insert((
            Scope::Namespace(namespace.to_owned()),
            "coordination.k8s.io".to_owned(),
            "leases".to_owned(),
            verb.to_owned(),
        ));
    }
    permissions
}

/// Every permission the ClusterRoles and Roles among `objects` grant, or the rules that
/// cannot be flattened into the list's terms.
pub fn granted(objects: &[Value]) -> Result<BTreeSet<Permission>, Vec<String>> {
    let mut permissions = BTreeSet::new();
    let mut refused = Vec::new();
    for object in objects {
        let (scope, name, rules) = match object["kind"].as_str() {
            Some("ClusterRole") => {
                let role: ClusterRole =
                    serde_json::from_value(object.clone()).expect("checked by the schema test");
                (Scope::Cluster, role.metadata.name, role.rules)
            }
            Some("Role") => {
                let role: Role =
                    serde_json::from_value(object.clone()).expect("checked by the schema test");
                let namespace = role.metadata.namespace.clone().unwrap_or_default();
                (Scope::Namespace(namespace), role.metadata.name, role.rules)
            }
            _ => continue,
        };
        for (index, rule) in rules.iter().flatten().enumerate() {
            let here = format!("{} rules[{index}]", name.as_deref().unwrap_or_default());
            if let Err(why) = flatten(&scope, rule, &mut permissions) {
                refused.push(format!("{here}: {why}"));
            }
        }
    }
    if refused.is_empty() {
        Ok(permissions)
    } else {
        Err(refused)
    }
}

fn flatten(scope: &Scope, rule: &PolicyRule, out: &mut BTreeSet<Permission>) -> Result<(), String> {
    if rule
        .resource_names
        .as_ref()
        .is_some_and(|names| !names.is_empty())
    {
        return Err("resourceNames are not in the documented list".to_owned());
    }
    if rule
        .non_resource_urls
        .as_ref()
        .is_some_and(|urls| !urls.is_empty())
    {
        return Err("nonResourceURLs are not in the documented list".to_owned());
    }
    let groups = rule.api_groups.clone().unwrap_or_default();
    let resources = rule.resources.clone().unwrap_or_default();
    let wildcard = |items: &[String]| items.iter().any(|item| item.contains('*'));
    if wildcard(&groups) || wildcard(&resources) || wildcard(&rule.verbs) {
        return Err("wildcards grant more than the documented list".to_owned());
    }
    for group in &groups {
        for resource in &resources {
            for verb in &rule.verbs {
                out.insert((scope.clone(), group.clone(), resource.clone(), verb.clone()));
            }
        }
    }
    Ok(())
}

/// Differences between what is granted and the list, in words.
pub fn differences(granted: &BTreeSet<Permission>, expected: &BTreeSet<Permission>) -> Vec<String> {
    let describe = |(scope, group, resource, verb): &Permission| {
        let group = if group.is_empty() { "core" } else { group };
        format!("{verb} {group}/{resource} ({scope:?})")
    };
    let extra = granted
        .difference(expected)
        .map(|p| format!("more than §5: {}", describe(p)));
    let missing = expected
        .difference(granted)
        .map(|p| format!("missing from §5: {}", describe(p)));
    extra.chain(missing).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn role(kind: &str, rules: Value) -> Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": "r", "namespace": "agents"},
            "rules": rules
        })
    }

    #[test]
    fn an_extra_verb_and_a_missing_one_are_both_named() {
        let objects = [
            role(
                "ClusterRole",
                json!([
                    {"apiGroups": ["source.toolkit.fluxcd.io"], "resources": ["gitrepositories", "ocirepositories"], "verbs": ["get", "list", "watch"]},
                    {"apiGroups": ["notification.toolkit.fluxcd.io"], "resources": ["receivers"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
                    {"apiGroups": ["kustomize.toolkit.fluxcd.io"], "resources": ["kustomizations"], "verbs": ["get", "list", "watch"]},
                    {"apiGroups": ["helm.toolkit.fluxcd.io"], "resources": ["helmreleases"], "verbs": ["get", "list", "watch"]},
                    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "patch", "list"]},
                    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create"]}
                ]),
            ),
            role(
                "Role",
                json!([
                    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create"]}
                ]),
            ),
        ];
        let granted = granted(&objects).unwrap();
        assert_eq!(
            differences(&granted, &documented_minimum("agents")),
            vec![
                "more than §5: list core/secrets (Cluster)".to_owned(),
                "missing from §5: update coordination.k8s.io/leases (Namespace(\"agents\"))"
                    .to_owned(),
            ]
        );
    }

    #[test]
    fn a_lease_rule_in_another_namespace_does_not_count() {
        let objects = [role(
            "Role",
            json!([
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
            ]),
        )];
        let granted = granted(&objects).unwrap();
        let expected = documented_minimum("elsewhere");
        assert!(
            differences(&granted, &expected)
                .iter()
                .any(|line| line.starts_with("more than §5: get coordination.k8s.io/leases"))
        );
    }

    #[test]
    fn wildcards_and_names_are_refused() {
        let objects = [role(
            "ClusterRole",
            json!([
                {"apiGroups": ["*"], "resources": ["secrets"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["x"], "verbs": ["get"]}
            ]),
        )];
        assert_eq!(granted(&objects).unwrap_err().len(), 2);
    }
}
