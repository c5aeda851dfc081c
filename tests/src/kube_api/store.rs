//! The stand-in's state: objects of every served type, the global `resourceVersion`, the
//! bounded history of watch events, and every write path (create, replace, patch, apply,
//! delete with owner-reference garbage collection) with the checks the API server makes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::SystemTime;

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use super::apply::{self, Manager, Scope};
use super::resources::{FluxCrds, ResourceType, built_in_types, split_api_version};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::validation;

/// Where one object lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub group: &'static str,
    pub plural: &'static str,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
}

/// One stored object: its body in the storage version, and who manages which field.
#[derive(Debug, Clone)]
struct Stored {
    value: Value,
    managers: Vec<Manager>,
}

/// `ADDED`, `MODIFIED` or `DELETED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct ChangeEvent {
    pub resource_version: u64,
    pub event_type: EventType,
    pub group: &'static str,
    pub plural: &'static str,
    /// The object after the change (before it, for `DELETED`), in the storage version.
    pub object: Value,
}

/// One request the HTTP server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
}

impl RequestRecord {
    /// Whether the request could change state (anything but GET, HEAD and OPTIONS).
    pub fn is_write(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS")
    }
}

/// Which part of the object a write goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Main,
    Status,
}

/// The whole in-memory cluster.
pub struct State {
    types: Vec<ResourceType>,
    objects: BTreeMap<ObjectKey, Stored>,
    resource_version: u64,
    history: VecDeque<ChangeEvent>,
    history_limit: usize,
    /// A watch from a `resourceVersion` below this gets `410 Expired`.
    oldest_watchable: u64,
    events: broadcast::Sender<ChangeEvent>,
    /// Bumped on every change and every request, for `wait_for`.
    pub(crate) changes: watch::Sender<u64>,
    /// Bumped by `end_all_watches`.
    pub(crate) watch_epoch: watch::Sender<u64>,
    pub(crate) requests: Vec<RequestRecord>,
    pub(crate) services: HashMap<(String, String), SocketAddr>,
}

impl State {
    pub fn new(history_limit: usize) -> Self {
        Self {
            types: built_in_types(),
            objects: BTreeMap::new(),
            resource_version: 1,
            history: VecDeque::new(),
            history_limit,
            oldest_watchable: 0,
            events: broadcast::channel(4096).0,
            changes: watch::Sender::new(0),
            watch_epoch: watch::Sender::new(0),
            requests: Vec::new(),
            services: HashMap::new(),
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    pub fn install(&mut self, crds: FluxCrds) {
        for new in crds.types() {
            self.types
                .retain(|t| !(t.group == new.group && t.plural == new.plural));
            self.types.push(new);
        }
        self.notify();
    }

    pub(crate) fn notify(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// The type served at `group/version` under `plural`, or 404 as for an unknown path.
    pub fn served(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Result<ResourceType, ApiError> {
        self.types
            .iter()
            .find(|t| t.group == group && t.plural == plural && t.serves(version))
            .cloned()
            .ok_or_else(|| ApiError::not_found("", ""))
    }

    /// The type of an object by its `apiVersion` and `kind`.
    pub fn type_of(&self, api_version: &str, kind: &str) -> Result<ResourceType, ApiError> {
        let (group, version) = split_api_version(api_version);
        self.types
            .iter()
            .find(|t| t.group == group && t.kind == kind && t.serves(version))
            .cloned()
            .ok_or_else(|| {
                ApiError::not_found("", "").with_message(format!(
                    "no matches for kind \"{kind}\" in version \"{api_version}\""
                ))
            })
    }

    /// The type whose plural is `plural` (the core group first).
    pub fn type_by_plural(&self, plural: &str) -> Option<ResourceType> {
        self.types.iter().find(|t| t.plural == plural).cloned()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.events.subscribe()
    }

    /// Events after `resource_version`, or `410` if some of them are no longer kept.
    pub fn events_since(&self, resource_version: u64) -> Result<Vec<ChangeEvent>, ApiError> {
        if resource_version < self.oldest_watchable {
            return Err(ApiError::expired(resource_version));
        }
        Ok(self
            .history
            .iter()
            .filter(|e| e.resource_version > resource_version)
            .cloned()
            .collect())
    }

    /// Forgets every kept event: any watch from an older `resourceVersion` gets `410`.
    pub fn compact_history(&mut self) {
        self.history.clear();
        self.oldest_watchable = self.resource_version;
    }

    fn key(resource: &ResourceType, namespace: &str, name: &str) -> ObjectKey {
        ObjectKey {
            group: resource.group,
            plural: resource.plural,
            namespace: if resource.namespaced {
                namespace.to_owned()
            } else {
                String::new()
            },
            name: name.to_owned(),
        }
    }

    fn render(stored: &Stored, resource: &ResourceType, version: &str) -> Value {
        let mut value = stored.value.clone();
        value["apiVersion"] = json!(resource.api_version(version));
        if !stored.managers.is_empty() {
            value["metadata"]["managedFields"] = apply::render(&stored.managers);
        }
        value
    }

    pub fn get(
        &self,
        resource: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let key = Self::key(resource, namespace, name);
        self.objects
            .get(&key)
            .map(|s| Self::render(s, resource, version))
            .ok_or_else(|| ApiError::not_found(&resource.qualified_name(), name))
    }

    /// The objects of `resource` in `namespace` (all if `None`) matching the selectors.
    pub fn list(
        &self,
        resource: &ResourceType,
        version: &str,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.group == resource.group && k.plural == resource.plural)
            .filter(|(k, _)| namespace.is_none_or(|ns| !resource.namespaced || k.namespace == ns))
            .map(|(_, s)| Self::render(s, resource, version))
            .filter(|o| labels.matches_object(o) && fields.matches_object(o))
            .collect()
    }

    /// `POST` of `body` into `namespace`.
    pub fn create(
        &mut self,
        resource: &ResourceType,
        version: &str,
        namespace: &str,
        mut body: Value,
        manager: &str,
    ) -> Result<Value, ApiError> {
        check_type(resource, version, &body)?;
        let namespace = body_namespace(resource, namespace, &body)?;
        if body["metadata"]["name"].as_str().is_none_or(str::is_empty)
            && let Some(prefix) = body["metadata"]["generateName"].as_str()
        {
            let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..5].to_owned();
            body["metadata"]["name"] = json!(format!("{prefix}{suffix}"));
        }
        let name = body["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = Self::key(resource, &namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&resource.qualified_name(), &name));
        }
        let scope = scope_of(resource, Target::Main);
        let body = scope.restrict(&json!({}), &body);
        let mut managers = Vec::new();
        apply::record_update(
            &mut managers,
            manager,
            &resource.api_version(version),
            scope,
            None,
            &body,
        );
        self.write(resource, version, key, None, body, managers)
    }

    /// `PUT` of the whole object (or of its status), with optimistic concurrency when the
    /// body carries `metadata.resourceVersion`.
    #[allow(clippy::too_many_arguments)]
    pub fn replace(
        &mut self,
        resource: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
        body: Value,
        target: Target,
        manager: &str,
    ) -> Result<Value, ApiError> {
        check_type(resource, version, &body)?;
        let namespace = body_namespace(resource, namespace, &body)?;
        check_name(&body, name)?;
        let key = Self::key(resource, &namespace, name);
        let expected = body["metadata"]["resourceVersion"]
            .as_str()
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let old = self.existing(resource, &key, name, expected.as_deref())?;
        self.update(resource, version, key, old, &body, target, manager)
    }

    /// The stored object at `key`: 404 if there is none, 409 if `expected` is a
    /// `resourceVersion` other than its own.
    fn existing(
        &self,
        resource: &ResourceType,
        key: &ObjectKey,
        name: &str,
        expected: Option<&str>,
    ) -> Result<Stored, ApiError> {
        let old = self
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&resource.qualified_name(), name))?;
        if let Some(expected) = expected
            && Some(expected) != old.value["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::conflict(&resource.qualified_name(), name));
        }
        Ok(old)
    }

    /// Writes `new` over `old` as an update by `manager` (a replace or a patch), within
    /// what `target` (the object or its status) may change.
    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        resource: &ResourceType,
        version: &str,
        key: ObjectKey,
        old: Stored,
        new: &Value,
        target: Target,
        manager: &str,
    ) -> Result<Value, ApiError> {
        let scope = scope_of(resource, target);
        let body = scope.restrict(&old.value, new);
        let mut managers = old.managers.clone();
        apply::record_update(
            &mut managers,
            manager,
            &resource.api_version(version),
            scope,
            Some(&old.value),
            &body,
        );
        self.write(resource, version, key, Some(old), body, managers)
    }

    /// `PATCH` with `application/merge-patch+json` (RFC 7386).
    #[allow(clippy::too_many_arguments)]
    pub fn merge_patch(
        &mut self,
        resource: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
        patch: &Value,
        target: Target,
        manager: &str,
    ) -> Result<Value, ApiError> {
        let key = Self::key(resource, namespace, name);
        let old = self.existing(
            resource,
            &key,
            name,
            patch["metadata"]["resourceVersion"].as_str(),
        )?;
        let mut patched = old.value.clone();
        merge(&mut patched, patch);
        check_name(&patched, name)?;
        self.update(resource, version, key, old, &patched, target, manager)
    }

    /// Server-side apply (`application/apply-patch+yaml`): creates or updates.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        resource: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
        config: &Value,
        target: Target,
        manager: &str,
        force: bool,
    ) -> Result<Value, ApiError> {
        check_type(resource, version, config)?;
        if config["apiVersion"].as_str().is_none() || config["kind"].as_str().is_none() {
            return Err(ApiError::bad_request(
                "apiVersion and kind must be set in an apply configuration",
            ));
        }
        let namespace = body_namespace(resource, namespace, config)?;
        check_name(config, name)?;
        let key = Self::key(resource, &namespace, name);
        let old = self.objects.get(&key).cloned();
        if old.is_none() && target == Target::Status {
            return Err(ApiError::not_found(&resource.qualified_name(), name));
        }
        let scope = scope_of(resource, target);
        let applied = apply::apply(
            old.as_ref().map(|o| &o.value),
            old.as_ref()
                .map(|o| o.managers.as_slice())
                .unwrap_or_default(),
            manager,
            config,
            force,
            scope,
            &resource.api_version(version),
        )?;
        let mut body = applied.object;
        body["metadata"]["name"] = json!(name);
        let body = match &old {
            Some(old) => scope.restrict(&old.value, &body),
            None => scope.restrict(&json!({}), &body),
        };
        self.write(resource, version, key, old, body, applied.managers)
    }

    /// `DELETE`, then garbage collection of every object owned (transitively) by it.
    pub fn delete(
        &mut self,
        resource: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let key = Self::key(resource, namespace, name);
        let stored = self
            .objects
            .remove(&key)
            .ok_or_else(|| ApiError::not_found(&resource.qualified_name(), name))?;
        let deleted = self.commit_delete(resource, stored);
        self.collect_garbage();
        let mut deleted = deleted;
        deleted["apiVersion"] = json!(resource.api_version(version));
        Ok(deleted)
    }

    fn commit_delete(&mut self, resource: &ResourceType, stored: Stored) -> Value {
        self.resource_version += 1;
        let mut object = Self::render(&stored, resource, resource.versions[0]);
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        self.publish(resource, EventType::Deleted, object.clone());
        object
    }

    /// Deletes every object none of whose owners exists any more (background propagation).
    fn collect_garbage(&mut self) {
        loop {
            let live_uids: std::collections::HashSet<String> = self
                .objects
                .values()
                .filter_map(|s| s.value["metadata"]["uid"].as_str().map(str::to_owned))
                .collect();
            let orphan = self.objects.iter().find_map(|(key, stored)| {
                let owners = stored.value["metadata"]["ownerReferences"].as_array()?;
                let any_owner_alive = owners
                    .iter()
                    .any(|o| o["uid"].as_str().is_some_and(|uid| live_uids.contains(uid)));
                (!owners.is_empty() && !any_owner_alive).then(|| key.clone())
            });
            let Some(key) = orphan else {
                return;
            };
            let stored = self.objects.remove(&key).expect("key found above");
            let resource = self
                .types
                .iter()
                .find(|t| t.group == key.group && t.plural == key.plural)
                .cloned()
                .expect("stored objects have a served type");
            self.commit_delete(&resource, stored);
        }
    }

    /// The checks and server-set fields every write shares, then the commit.
    fn write(
        &mut self,
        resource: &ResourceType,
        version: &str,
        key: ObjectKey,
        old: Option<Stored>,
        mut body: Value,
        managers: Vec<Manager>,
    ) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        validation::default_object(resource, &mut body);
        body["apiVersion"] = json!(resource.storage_api_version());
        body["kind"] = json!(resource.kind);
        let metadata = body["metadata"]
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        metadata.remove("managedFields");
        metadata.insert("name".to_owned(), json!(key.name));
        if resource.namespaced {
            metadata.insert("namespace".to_owned(), json!(key.namespace));
        } else {
            metadata.remove("namespace");
        }
        let old_meta = old
            .as_ref()
            .map(|o| o.value["metadata"].clone())
            .unwrap_or(Value::Null);
        let uid = old_meta["uid"]
            .as_str()
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let created = old_meta["creationTimestamp"].as_str().map_or_else(
            || humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            str::to_owned,
        );
        metadata.insert("uid".to_owned(), json!(uid));
        metadata.insert("creationTimestamp".to_owned(), json!(created));
        metadata.insert(
            "resourceVersion".to_owned(),
            old_meta["resourceVersion"].clone(),
        );
        if resource.custom {
            let generation = match &old {
                None => 1,
                Some(old) => {
                    let previous = old.value["metadata"]["generation"].as_i64().unwrap_or(1);
                    if without_meta_and_status(&old.value) == without_meta_and_status(&body) {
                        previous
                    } else {
                        previous + 1
                    }
                }
            };
            body["metadata"]["generation"] = json!(generation);
        } else if let Some(metadata) = body["metadata"].as_object_mut() {
            metadata.remove("generation");
        }
        validation::validate(resource, &body)?;
        if let Some(old) = &old
            && old.value == body
            && same_ownership(&old.managers, &managers)
        {
            return Ok(Self::render(old, resource, version));
        }
        self.resource_version += 1;
        body["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        let stored = Stored {
            value: body,
            managers,
        };
        let event_type = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        let rendered = Self::render(&stored, resource, resource.versions[0]);
        self.objects.insert(key, stored);
        self.publish(resource, event_type, rendered.clone());
        let mut answer = rendered;
        answer["apiVersion"] = json!(resource.api_version(version));
        Ok(answer)
    }

    fn publish(&mut self, resource: &ResourceType, event_type: EventType, object: Value) {
        let event = ChangeEvent {
            resource_version: self.resource_version,
            event_type,
            group: resource.group,
            plural: resource.plural,
            object,
        };
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.oldest_watchable = dropped.resource_version;
            }
        }
        // No receiver is not an error: nobody is watching.
        let _ = self.events.send(event);
        self.notify();
    }
}

fn scope_of(resource: &ResourceType, target: Target) -> Scope {
    match target {
        Target::Main => Scope::Main {
            status_subresource: resource.status_subresource,
        },
        Target::Status => Scope::Status,
    }
}

fn without_meta_and_status(value: &Value) -> Value {
    let mut value = value.clone();
    if let Some(map) = value.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    value
}

fn same_ownership(a: &[Manager], b: &[Manager]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.name == y.name
                && x.operation == y.operation
                && x.fields == y.fields
                && x.subresource == y.subresource
        })
}

/// The body's `apiVersion` and `kind`, when present, must be the endpoint's.
fn check_type(resource: &ResourceType, version: &str, body: &Value) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    if body.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    if let Some(api_version) = body["apiVersion"].as_str()
        && api_version != resource.api_version(version)
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            resource.api_version(version)
        )));
    }
    if let Some(kind) = body["kind"].as_str()
        && kind != resource.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            resource.kind
        )));
    }
    Ok(())
}

fn body_namespace(
    resource: &ResourceType,
    url_namespace: &str,
    body: &Value,
) -> Result<String, ApiError> {
    if !resource.namespaced {
        return Ok(String::new());
    }
    match body["metadata"]["namespace"].as_str() {
        Some(ns) if !ns.is_empty() && ns != url_namespace => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => Ok(url_namespace.to_owned()),
    }
}

fn check_name(body: &Value, url_name: &str) -> Result<(), ApiError> {
    match body["metadata"]["name"].as_str() {
        Some(name) if name != url_name => Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({url_name})"
        ))),
        _ => Ok(()),
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}
