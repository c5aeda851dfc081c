//! Discovery documents as kube-rs reads them: `/version`, `/api`, `/api/v1`, `/apis`,
//! `/apis/<group>`, `/apis/<group>/<version>`, and the CRD objects of installed Flux types
//! under `apiextensions.k8s.io/v1`.

use serde_json::{Value, json};

use super::resources::ResourceType;
use super::status::ApiError;

/// The Kubernetes version whose semantics the stand-in follows.
pub const KUBERNETES_MINOR: &str = "33";

/// The `apiextensions.k8s.io/v1` type, served for reading installed CRDs.
const CRD_GROUP: &str = "apiextensions.k8s.io";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v1.{KUBERNETES_MINOR}.0-fluxgate-standin"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`: the core group's versions.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// The groups (other than core) and their served versions, preferred first.
fn groups(types: &[ResourceType]) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut groups: Vec<(&'static str, Vec<&'static str>)> = vec![(CRD_GROUP, vec!["v1"])];
    for resource in types.iter().filter(|t| !t.group.is_empty()) {
        let entry = match groups.iter_mut().position(|(g, _)| *g == resource.group) {
            Some(index) => &mut groups[index].1,
            None => {
                groups.push((resource.group, Vec::new()));
                &mut groups.last_mut().expect("just pushed").1
            }
        };
        for version in &resource.versions {
            if !entry.contains(version) {
                entry.push(*version);
            }
        }
    }
    groups
}

fn group_document(name: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": versions,
        "preferredVersion": versions[0],
    })
}

/// `/apis`.
pub fn group_list(types: &[ResourceType]) -> Value {
    let groups: Vec<Value> = groups(types)
        .iter()
        .map(|(name, versions)| group_document(name, versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`.
pub fn group(types: &[ResourceType], name: &str) -> Result<Value, ApiError> {
    groups(types)
        .iter()
        .find(|(g, _)| *g == name)
        .map(|(g, versions)| group_document(g, versions))
        .ok_or_else(|| ApiError::not_found("", ""))
}

/// `/api/v1` or `/apis/<group>/<version>`.
pub fn resource_list(
    types: &[ResourceType],
    group: &str,
    version: &str,
) -> Result<Value, ApiError> {
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    let mut resources = Vec::new();
    if group == CRD_GROUP && version == "v1" {
        resources.push(json!({
            "name": "customresourcedefinitions",
            "singularName": "customresourcedefinition",
            "namespaced": false,
            "kind": "CustomResourceDefinition",
            "verbs": ["get", "list"],
            "shortNames": ["crd", "crds"],
        }));
    }
    for resource in types
        .iter()
        .filter(|t| t.group == group && t.serves(version))
    {
        let verbs = [
            "create", "delete", "get", "list", "patch", "update", "watch",
        ];
        resources.push(json!({
            "name": resource.plural,
            "singularName": resource.singular,
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": verbs,
        }));
        if resource.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", resource.plural),
                "singularName": "",
                "namespaced": resource.namespaced,
                "kind": resource.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if resource.kind == "Service" {
            resources.push(json!({
                "name": "services/proxy",
                "singularName": "",
                "namespaced": true,
                "kind": "ServiceProxyOptions",
                "verbs": ["create", "delete", "get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return Err(ApiError::not_found("", ""));
    }
    Ok(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

pub fn is_crd_path(group: &str, version: &str, plural: &str) -> bool {
    group == CRD_GROUP && version == "v1" && plural == "customresourcedefinitions"
}

/// The `CustomResourceDefinition` object of an installed type, Established.
pub fn crd(resource: &ResourceType) -> Value {
    let versions: Vec<Value> = resource
        .versions
        .iter()
        .enumerate()
        .map(|(index, v)| {
            json!({
                "name": v,
                "served": true,
                "storage": index == 0,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}},
            })
        })
        .collect();
    let condition = |kind: &str, reason: &str| json!({"type": kind, "status": "True", "reason": reason, "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"});
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": resource.qualified_name(), "resourceVersion": "1", "generation": 1},
        "spec": {
            "group": resource.group,
            "names": {
                "plural": resource.plural,
                "singular": resource.singular,
                "kind": resource.kind,
                "listKind": format!("{}List", resource.kind),
            },
            "scope": if resource.namespaced { "Namespaced" } else { "Cluster" },
            "versions": versions,
        },
        "status": {
            "acceptedNames": {"plural": resource.plural, "kind": resource.kind},
            "storedVersions": [resource.versions[0]],
            "conditions": [
                condition("NamesAccepted", "NoConflicts"),
                condition("Established", "InitialNamesAccepted"),
            ],
        },
    })
}

/// `GET …/customresourcedefinitions[/<name>]`.
pub fn crds(types: &[ResourceType], name: Option<&str>) -> Result<Value, ApiError> {
    let installed = types.iter().filter(|t| t.custom);
    match name {
        Some(name) => installed
            .clone()
            .find(|t| t.qualified_name() == name)
            .map(crd)
            .ok_or_else(|| {
                ApiError::not_found("customresourcedefinitions.apiextensions.k8s.io", name)
            }),
        None => Ok(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinitionList",
            "metadata": {"resourceVersion": "1"},
            "items": installed.map(crd).collect::<Vec<_>>(),
        })),
    }
}
