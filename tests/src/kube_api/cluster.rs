//! Direct access to the stand-in's state for tests and for the notification-controller
//! stand-in: the same operations as the HTTP API, without HTTP, plus test hooks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::Shared;
use super::resources::{FluxCrds, ResourceType};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{RequestRecord, Target};

/// The field manager of writes made through this handle.
const TEST_MANAGER: &str = "standin-test";

/// A cheap, clonable handle on the stand-in's state.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

impl Cluster {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Installs Flux CRDs: their paths, discovery and CRD objects appear.
    pub fn install_flux_crds(&self, crds: FluxCrds) {
        self.shared.state.lock().install(crds);
    }

    /// Makes the service proxy forward `<namespace>/<name>` to `address`, creating the
    /// Service object if it does not exist.
    ///
    /// # Panics
    /// If the Service cannot be created.
    pub fn register_service(&self, namespace: &str, name: &str, address: SocketAddr) {
        let mut state = self.shared.state.lock();
        let services = state
            .type_by_plural("services")
            .expect("services are built in");
        if state.get(&services, "v1", namespace, name).is_err() {
            let service = json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"type": "ClusterIP", "ports": [{"port": 80, "targetPort": address.port()}]},
            });
            state
                .create(&services, "v1", namespace, service, TEST_MANAGER)
                .expect("create the Service");
        }
        state
            .services
            .insert((namespace.to_owned(), name.to_owned()), address);
    }

    fn resource(&self, plural: &str) -> Result<ResourceType, ApiError> {
        self.shared
            .state
            .lock()
            .type_by_plural(plural)
            .ok_or_else(|| {
                ApiError::not_found("", "").with_message(format!("no type {plural:?} is served"))
            })
    }

    /// The object, in its storage version, if it exists.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let resource = self.resource(plural).ok()?;
        let state = self.shared.state.lock();
        state
            .get(&resource, resource.versions[0], namespace, name)
            .ok()
    }

    /// The objects of a type in `namespace`, or in every namespace.
    pub fn list(&self, plural: &str, namespace: Option<&str>) -> Vec<Value> {
        let Ok(resource) = self.resource(plural) else {
            return Vec::new();
        };
        self.list_labelled(&resource, namespace, &LabelSelector::default())
    }

    pub(crate) fn list_labelled(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        labels: &LabelSelector,
    ) -> Vec<Value> {
        let state = self.shared.state.lock();
        state.list(
            resource,
            resource.versions[0],
            namespace,
            labels,
            &FieldSelector::default(),
        )
    }

    /// Creates `object` (its `apiVersion` and `kind` pick the type; namespace `default`
    /// when it names none).
    pub fn create(&self, object: Value) -> Result<Value, ApiError> {
        let mut state = self.shared.state.lock();
        let (resource, version) = Self::type_and_version(&state, &object)?;
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        state.create(&resource, &version, &namespace, object, TEST_MANAGER)
    }

    /// Server-side apply of `object` by `manager`, without `force`.
    pub fn apply_as(&self, manager: &str, object: Value) -> Result<Value, ApiError> {
        self.apply_with(manager, object, false)
    }

    /// Server-side apply of `object` by `manager`, with `force`.
    pub fn apply_forced(&self, manager: &str, object: Value) -> Result<Value, ApiError> {
        self.apply_with(manager, object, true)
    }

    fn apply_with(&self, manager: &str, object: Value, force: bool) -> Result<Value, ApiError> {
        let mut state = self.shared.state.lock();
        let (resource, version) = Self::type_and_version(&state, &object)?;
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        state.apply(
            &resource,
            &version,
            &namespace,
            &name,
            &object,
            Target::Main,
            manager,
            force,
        )
    }

    /// A JSON merge patch on the main resource, as `manager`.
    pub fn merge_patch_as(
        &self,
        manager: &str,
        plural: &str,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        let resource = self.resource(plural)?;
        let mut state = self.shared.state.lock();
        state.merge_patch(
            &resource,
            resource.versions[0],
            namespace,
            name,
            patch,
            Target::Main,
            manager,
        )
    }

    /// A JSON merge patch on the main resource.
    pub fn merge_patch(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        self.merge_patch_as(TEST_MANAGER, plural, namespace, name, patch)
    }

    /// Replaces the object's `status` through the status subresource, as `manager`.
    pub fn set_status_as(
        &self,
        manager: &str,
        plural: &str,
        namespace: &str,
        name: &str,
        status: Value,
    ) -> Result<Value, ApiError> {
        let resource = self.resource(plural)?;
        let mut state = self.shared.state.lock();
        let mut object = state.get(&resource, resource.versions[0], namespace, name)?;
        object["status"] = status;
        if let Some(metadata) = object["metadata"].as_object_mut() {
            metadata.remove("resourceVersion");
        }
        state.replace(
            &resource,
            resource.versions[0],
            namespace,
            name,
            object,
            Target::Status,
            manager,
        )
    }

    /// Replaces the object's `status` through the status subresource.
    pub fn set_status(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
        status: Value,
    ) -> Result<Value, ApiError> {
        self.set_status_as(TEST_MANAGER, plural, namespace, name, status)
    }

    /// Deletes the object, and garbage-collects what it owned.
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let resource = self.resource(plural)?;
        self.shared
            .state
            .lock()
            .delete(&resource, resource.versions[0], namespace, name)
    }

    fn type_and_version(
        state: &super::store::State,
        object: &Value,
    ) -> Result<(ResourceType, String), ApiError> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let resource = state.type_of(api_version, kind)?;
        let version = super::resources::split_api_version(api_version)
            .1
            .to_owned();
        Ok((resource, version))
    }

    /// The type an `apiVersion` and `kind` name, if that version is served.
    pub(crate) fn resource_for(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<ResourceType, ApiError> {
        self.shared.state.lock().type_of(api_version, kind)
    }

    /// The current global `resourceVersion`.
    pub fn resource_version(&self) -> u64 {
        self.shared.state.lock().resource_version()
    }

    /// Every HTTP request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.state.lock().requests.clone()
    }

    /// Drops the kept watch history: a watch from any older `resourceVersion` gets `410`.
    pub fn compact_history(&self) {
        self.shared.state.lock().compact_history();
    }

    /// Ends every open watch stream, as an API server restart would.
    pub fn end_all_watches(&self) {
        self.shared
            .state
            .lock()
            .watch_epoch
            .send_modify(|n| *n += 1);
    }

    /// Wakes everything waiting for a change, without changing anything.
    pub(crate) fn touch(&self) {
        self.shared.state.lock().notify();
    }

    /// A receiver that changes on every write and every request.
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.state.lock().changes.subscribe()
    }

    /// Waits until `check` returns `Some`, re-checking after every change and request.
    ///
    /// # Panics
    /// If `timeout` passes first; the message names `what`.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.changes();
        loop {
            changes.mark_unchanged();
            if let Some(found) = check(self) {
                return found;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                panic!("waited {timeout:?} for {what}");
            }
        }
    }
}
