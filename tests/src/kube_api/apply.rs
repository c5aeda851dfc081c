//! Server-side apply and `metadata.managedFields`: which manager owns which field, the
//! conflicts between managers, and the fields an apply removes.
//!
//! Simplifications, all legal readings of structured-merge-diff for the objects the agent
//! writes: ownership is tracked per leaf path (maps merge key by key), every list is atomic
//! (owned and replaced as a whole, `ownerReferences` included), and a no-op write changes
//! nothing (no new `resourceVersion`).

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde_json::{Map, Value, json};

use super::status::ApiError;

/// A field path: the keys from the object's root.
pub type FieldPath = Vec<String>;

/// `managedFields[].operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Apply,
    Update,
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manager {
    pub name: String,
    pub operation: Operation,
    pub api_version: String,
    pub subresource: Option<&'static str>,
    pub fields: BTreeSet<FieldPath>,
    pub time: String,
}

/// Which part of an object a write may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource: everything, except `status` when it is a subresource.
    Main { status_subresource: bool },
    /// The `status` subresource: only `status`.
    Status,
}

impl Scope {
    /// Whether a write through this scope owns `path`. Server-set metadata is never owned.
    fn covers(self, path: &[String]) -> bool {
        let first = path.first().map(String::as_str);
        if matches!(first, Some("apiVersion" | "kind")) {
            return false;
        }
        if first == Some("metadata") {
            let server_set = matches!(
                path.get(1).map(String::as_str),
                Some(
                    "name"
                        | "namespace"
                        | "uid"
                        | "resourceVersion"
                        | "generation"
                        | "creationTimestamp"
                        | "managedFields"
                        | "deletionTimestamp"
                        | "selfLink"
                )
            );
            return !server_set && matches!(self, Scope::Main { .. });
        }
        match self {
            Scope::Main { status_subresource } => !(status_subresource && first == Some("status")),
            Scope::Status => first == Some("status"),
        }
    }

    /// `written` with the parts outside this scope taken from `current`.
    pub fn restrict(self, current: &Value, written: &Value) -> Value {
        match self {
            Scope::Main {
                status_subresource: false,
            } => written.clone(),
            Scope::Main {
                status_subresource: true,
            } => {
                let mut result = written.clone();
                strip_top(&mut result, "status");
                if let Some(status) = current.get("status") {
                    result["status"] = status.clone();
                }
                result
            }
            Scope::Status => {
                let mut result = current.clone();
                strip_top(&mut result, "status");
                if let Some(status) = written.get("status") {
                    result["status"] = status.clone();
                }
                result
            }
        }
    }
}

fn strip_top(value: &mut Value, key: &str) {
    if let Some(map) = value.as_object_mut() {
        map.remove(key);
    }
}

/// Every leaf path of `value` inside `scope`: maps recurse, anything else is a leaf.
pub fn leaf_paths(value: &Value, scope: Scope) -> BTreeSet<FieldPath> {
    let mut paths = BTreeSet::new();
    collect_leaves(value, &mut Vec::new(), &mut paths);
    paths.retain(|p| scope.covers(p));
    paths
}

fn collect_leaves(value: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                prefix.push(key.clone());
                collect_leaves(child, prefix, out);
                prefix.pop();
            }
        }
        _ if prefix.is_empty() => {}
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// Two paths overlap when one is a prefix of the other.
fn overlaps(a: &[String], b: &[String]) -> bool {
    let common = a.len().min(b.len());
    a[..common] == b[..common]
}

pub fn get_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |v, key| v.as_object()?.get(key))
}

fn set_path(value: &mut Value, path: &[String], new: Value) {
    let mut current = value;
    for key in &path[..path.len() - 1] {
        if !current.is_object() {
            *current = json!({});
        }
        current = current
            .as_object_mut()
            .expect("made an object above")
            .entry(key.clone())
            .or_insert_with(|| json!({}));
    }
    if !current.is_object() {
        *current = json!({});
    }
    current
        .as_object_mut()
        .expect("made an object above")
        .insert(path[path.len() - 1].clone(), new);
}

fn remove_path(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = value;
    for key in parents {
        match current.get_mut(key) {
            Some(next) => current = next,
            None => return,
        }
    }
    if let Some(map) = current.as_object_mut() {
        map.remove(last);
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Records a non-apply write (create, update, patch) by `manager`: it takes every field it
/// changed, from whoever owned it; fields it removed belong to nobody.
pub fn record_update(
    managers: &mut Vec<Manager>,
    manager: &str,
    api_version: &str,
    scope: Scope,
    old: Option<&Value>,
    new: &Value,
) {
    let new_leaves = leaf_paths(new, scope);
    let old_leaves = old.map(|o| leaf_paths(o, scope)).unwrap_or_default();
    let changed: BTreeSet<FieldPath> = new_leaves
        .iter()
        .filter(|p| old.and_then(|o| get_path(o, p)) != get_path(new, p))
        .cloned()
        .collect();
    let removed: BTreeSet<FieldPath> = old_leaves
        .iter()
        .filter(|p| get_path(new, p).is_none())
        .cloned()
        .collect();
    if changed.is_empty() && removed.is_empty() {
        return;
    }
    for entry in managers.iter_mut() {
        entry
            .fields
            .retain(|q| !changed.iter().chain(&removed).any(|p| overlaps(p, q)));
    }
    let subresource = (scope == Scope::Status).then_some("status");
    match managers.iter_mut().find(|m| {
        m.name == manager && m.operation == Operation::Update && m.subresource == subresource
    }) {
        Some(entry) => {
            entry.fields.extend(changed);
            entry.time = now();
            entry.api_version = api_version.to_owned();
        }
        None => managers.push(Manager {
            name: manager.to_owned(),
            operation: Operation::Update,
            api_version: api_version.to_owned(),
            subresource,
            fields: changed,
            time: now(),
        }),
    }
    managers.retain(|m| !m.fields.is_empty());
}

/// What an apply produced.
#[derive(Debug)]
pub struct Applied {
    pub object: Value,
    pub managers: Vec<Manager>,
}

/// Server-side apply of `config` by `manager` onto `current` (`None`: the object does not
/// exist yet). Conflicts are fields in `config` another manager owns with a different
/// value: `409` unless `force`, which takes them over.
pub fn apply(
    current: Option<&Value>,
    managers: &[Manager],
    manager: &str,
    config: &Value,
    force: bool,
    scope: Scope,
    api_version: &str,
) -> Result<Applied, ApiError> {
    let applied = leaf_paths(config, scope);
    // An empty map in the configuration only says the map exists: it neither conflicts
    // with nor keeps alive the keys inside it.
    let is_empty_map = |path: &FieldPath| {
        get_path(config, path).is_some_and(|v| v.as_object().is_some_and(Map::is_empty))
    };
    let mut managers = managers.to_vec();
    let subresource = (scope == Scope::Status).then_some("status");
    let base = current.cloned().unwrap_or_else(|| {
        let mut fresh = json!({});
        for key in ["apiVersion", "kind", "metadata"] {
            if let Some(value) = config.get(key) {
                fresh[key] = value.clone();
            }
        }
        fresh
    });
    let mut conflicts: Vec<(String, FieldPath)> = Vec::new();
    for other in managers.iter().filter(|m| m.name != manager) {
        for path in &applied {
            let contested = other.fields.iter().any(|q| overlaps(path, q));
            let differs = if is_empty_map(path) {
                get_path(&base, path).is_some_and(|v| !v.is_object())
            } else {
                get_path(&base, path) != get_path(config, path)
            };
            if contested && differs {
                conflicts.push((other.name.clone(), path.clone()));
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            return Err(conflict_error(&conflicts));
        }
        for other in managers.iter_mut().filter(|m| m.name != manager) {
            other.fields.retain(|q| {
                !conflicts
                    .iter()
                    .any(|(owner, p)| owner == &other.name && overlaps(p, q))
            });
        }
    }
    let previous: BTreeSet<FieldPath> = managers
        .iter()
        .find(|m| {
            m.name == manager && m.operation == Operation::Apply && m.subresource == subresource
        })
        .map(|m| m.fields.clone())
        .unwrap_or_default();
    let mut object = base;
    for dropped in previous.difference(&applied) {
        let still_owned = managers
            .iter()
            .filter(|m| !(m.name == manager && m.operation == Operation::Apply))
            .any(|m| m.fields.iter().any(|q| overlaps(dropped, q)))
            || applied
                .iter()
                .any(|p| overlaps(dropped, p) && !is_empty_map(p));
        if !still_owned {
            remove_path(&mut object, dropped);
        }
    }
    for path in &applied {
        let value = get_path(config, path).cloned().unwrap_or(Value::Null);
        let keep_existing_map = value.as_object().is_some_and(Map::is_empty)
            && get_path(&object, path).is_some_and(Value::is_object);
        if !keep_existing_map {
            set_path(&mut object, path, value);
        }
    }
    managers.retain(|m| {
        !(m.name == manager && m.operation == Operation::Apply && m.subresource == subresource)
    });
    if !applied.is_empty() {
        managers.push(Manager {
            name: manager.to_owned(),
            operation: Operation::Apply,
            api_version: api_version.to_owned(),
            subresource,
            fields: applied,
            time: now(),
        });
    }
    managers.retain(|m| !m.fields.is_empty());
    Ok(Applied { object, managers })
}

fn dotted(path: &[String]) -> String {
    path.iter().map(|k| format!(".{k}")).collect()
}

fn conflict_error(conflicts: &[(String, FieldPath)]) -> ApiError {
    let lines: Vec<String> = conflicts
        .iter()
        .map(|(owner, path)| format!("conflict with \"{owner}\": {}", dotted(path)))
        .collect();
    let causes: Vec<Value> = conflicts
        .iter()
        .zip(&lines)
        .map(|((_, path), line)| {
            json!({"type": "FieldManagerConflict", "message": line, "field": dotted(path)})
        })
        .collect();
    ApiError::new(
        409,
        "Conflict",
        format!(
            "Apply failed with {} conflict{}: {}",
            conflicts.len(),
            if conflicts.len() == 1 { "" } else { "s" },
            lines.join(", ")
        ),
    )
    .with_details(json!({"causes": causes}))
}

/// `metadata.managedFields` as the API server renders it (`FieldsV1`).
pub fn render(managers: &[Manager]) -> Value {
    let entries: Vec<Value> = managers
        .iter()
        .map(|m| {
            let mut fields = json!({});
            for path in &m.fields {
                let keys: Vec<String> = path.iter().map(|k| format!("f:{k}")).collect();
                set_path(&mut fields, &keys, json!({}));
            }
            let mut entry = json!({
                "manager": m.name,
                "operation": match m.operation { Operation::Apply => "Apply", Operation::Update => "Update" },
                "apiVersion": m.api_version,
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields,
            });
            if let Some(subresource) = m.subresource {
                entry["subresource"] = json!(subresource);
            }
            entry
        })
        .collect();
    Value::Array(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: Scope = Scope::Main {
        status_subresource: true,
    };

    fn apply_as(
        current: Option<&Applied>,
        manager: &str,
        config: Value,
        force: bool,
    ) -> Result<Applied, ApiError> {
        apply(
            current.map(|c| &c.object),
            current.map(|c| c.managers.as_slice()).unwrap_or_default(),
            manager,
            &config,
            force,
            MAIN,
            "v1",
        )
    }

    #[test]
    fn a_field_another_manager_set_differently_conflicts_unless_forced() {
        let first = apply_as(None, "a", json!({"spec": {"x": 1, "y": 2}}), false).unwrap();
        let same = apply_as(Some(&first), "b", json!({"spec": {"x": 1}}), false).unwrap();
        assert_eq!(
            same.object["spec"]["x"], 1,
            "same value: shared, no conflict"
        );
        let error = apply_as(Some(&first), "b", json!({"spec": {"x": 5}}), false).unwrap_err();
        assert_eq!(error.code, 409);
        assert!(
            error.message.contains("conflict with \"a\": .spec.x"),
            "{}",
            error.message
        );
        let forced = apply_as(Some(&first), "b", json!({"spec": {"x": 5}}), true).unwrap();
        assert_eq!(forced.object["spec"]["x"], 5);
        let a = forced.managers.iter().find(|m| m.name == "a").unwrap();
        assert!(!a.fields.contains(&vec!["spec".to_owned(), "x".to_owned()]));
    }

    #[test]
    fn fields_a_manager_stops_applying_are_removed_unless_someone_else_owns_them() {
        let first = apply_as(None, "a", json!({"spec": {"x": 1, "y": 2}}), false).unwrap();
        let shared = apply_as(Some(&first), "b", json!({"spec": {"y": 2}}), false).unwrap();
        let dropped = apply_as(Some(&shared), "a", json!({"spec": {"x": 1}}), false).unwrap();
        assert_eq!(dropped.object["spec"]["y"], 2, "b still owns y");
        let dropped = apply_as(Some(&first), "a", json!({"spec": {"x": 1}}), false).unwrap();
        assert!(
            dropped.object["spec"].get("y").is_none(),
            "{}",
            dropped.object
        );
    }

    #[test]
    fn an_empty_map_neither_conflicts_with_nor_keeps_the_keys_inside() {
        let first = apply_as(None, "a", json!({"data": {"mine": "1", "old": "2"}}), false).unwrap();
        let rival = apply_as(Some(&first), "b", json!({"data": {"theirs": "3"}}), false).unwrap();
        let emptied = apply_as(Some(&rival), "a", json!({"data": {}}), false).unwrap();
        assert_eq!(emptied.object["data"], json!({"theirs": "3"}));
    }

    #[test]
    fn status_is_outside_the_main_scope() {
        let applied = apply_as(
            None,
            "a",
            json!({"spec": {"x": 1}, "status": {"s": 1}}),
            false,
        )
        .unwrap();
        assert!(applied.managers[0].fields.iter().all(|p| p[0] != "status"));
    }
}
