//! The Secret and Receiver the agent owns for each managed source: what they hold, and
//! writing them.
//!
//! Both are written by server-side apply with the field manager `fluxgate-agent`, never
//! forced: a field someone else manages is a conflict the agent reports instead of a fight.
//! Both carry an owner reference to the source, so Kubernetes' garbage collector deletes
//! them with it. `blockOwnerDeletion` is left unset: setting it needs `update` on the
//! source's `finalizers` subresource where the OwnerReferencesPermissionEnforcement
//! admission plugin runs, which the minimal RBAC does not grant, and the GC works without
//! it.
//!
//! The Secret's `token` is 32 random bytes, hex-encoded (64 characters), generated once: an
//! existing token is read back and kept, so a re-apply never rotates it (a rotation would
//! change the Receiver's webhook path).

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret as SecretObject;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

use super::annotations::{AGENT, FIELD_MANAGER, MANAGED_BY, MANAGED_BY_VALUE, PROJECT};
use super::names;
use super::source::ManagedSource;
use crate::secret::Secret;

/// Why an owned object could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OwnedError {
    #[error("cannot read Secret {namespace}/{name}: {source}")]
    ReadSecret {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("Secret {namespace}/{name} exists and is not managed by this agent")]
    ForeignSecret { namespace: String, name: String },
    #[error("cannot apply {kind} {namespace}/{name}: {source}")]
    Apply {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
}

/// 32 random bytes, hex-encoded: the Receiver's token.
fn new_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Metadata both owned objects share.
fn metadata(source: &ManagedSource, name: &str, agent_id: &str) -> Value {
    json!({
        "name": name,
        "namespace": source.namespace,
        "labels": { MANAGED_BY: MANAGED_BY_VALUE },
        "annotations": { AGENT: agent_id, PROJECT: source.project.as_str() },
        "ownerReferences": [{
            "apiVersion": source.api_version,
            "kind": source.kind.as_str(),
            "name": source.name,
            "uid": source.uid,
            "controller": true,
        }],
    })
}

/// The Receiver the agent applies for `source`.
pub fn receiver_body(source: &ManagedSource, receiver: &ApiResource, agent_id: &str) -> Value {
    json!({
        "apiVersion": receiver.api_version,
        "kind": "Receiver",
        "metadata": metadata(source, &names::receiver_name(source.kind, &source.name), agent_id),
        "spec": {
            "type": "generic-hmac",
            "resources": [{
                "apiVersion": source.api_version,
                "kind": source.kind.as_str(),
                "name": source.name,
            }],
            "secretRef": { "name": names::secret_name(source.kind, &source.name) },
        },
    })
}

/// The Secret the agent applies for `source`, holding `token`.
fn secret_body(source: &ManagedSource, token: &str, agent_id: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(source, &names::secret_name(source.kind, &source.name), agent_id),
        "type": "Opaque",
        "data": { "token": base64::engine::general_purpose::STANDARD.encode(token) },
    })
}

/// True if `existing` (a Receiver object) already holds everything `desired` says, so
/// applying it again would change nothing.
pub fn receiver_is_current(existing: &DynamicObject, desired: &Value) -> bool {
    let contains = |have: Option<&BTreeMap<String, String>>, want: &Value| {
        want.as_object().is_none_or(|want| {
            want.iter().all(|(key, value)| {
                have.and_then(|h| h.get(key)).map(String::as_str) == value.as_str()
            })
        })
    };
    let meta = &existing.metadata;
    let owners_match = meta.owner_references.as_ref().is_some_and(|refs| {
        refs.iter().any(|r| {
            Some(r.uid.as_str()) == desired["metadata"]["ownerReferences"][0]["uid"].as_str()
        })
    });
    existing.data.get("spec").is_some_and(|spec| {
        spec.get("type") == desired["spec"].get("type")
            && spec.get("resources") == desired["spec"].get("resources")
            && spec.get("secretRef") == desired["spec"].get("secretRef")
    }) && contains(meta.labels.as_ref(), &desired["metadata"]["labels"])
        && contains(
            meta.annotations.as_ref(),
            &desired["metadata"]["annotations"],
        )
        && owners_match
}

/// Writes the owned objects of managed sources.
#[derive(Clone)]
pub struct OwnedObjects {
    client: Client,
    receiver: ApiResource,
    agent_id: String,
}

impl OwnedObjects {
    pub fn new(client: Client, receiver: ApiResource, agent_id: String) -> Self {
        Self {
            client,
            receiver,
            agent_id,
        }
    }

    /// Reads the token of `source`'s Secret, creating the Secret (with a new token) if it
    /// does not exist or has none.
    ///
    /// The Secret is created with a plain create, not an apply: of two agents that both
    /// find it missing, exactly one succeeds, and the other (409) finds it made by another
    /// agent and leaves the source alone. Two applies by the same field manager would
    /// both succeed, the second overwriting the first agent's token.
    pub async fn ensure_secret(&self, source: &ManagedSource) -> Result<Secret, OwnedError> {
        let name = names::secret_name(source.kind, &source.name);
        let api: Api<SecretObject> = Api::namespaced(self.client.clone(), &source.namespace);
        if let Some(existing) = self.read_secret(&api, source, &name).await? {
            if let Some(token) = self.own_token(&existing, source, &name)? {
                return Ok(token);
            }
            // Ours, without a token (someone emptied it): give it one.
            let token = new_token();
            let body = secret_body(source, &token, &self.agent_id);
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|e| self.apply_error(source, &name, e))?;
            return Ok(Secret::new(token));
        }
        let token = new_token();
        let secret: SecretObject =
            serde_json::from_value(secret_body(source, &token, &self.agent_id))
                .expect("the Secret body is a valid Secret");
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        match api.create(&params, &secret).await {
            Ok(_) => {
                tracing::info!(namespace = %source.namespace, secret = %name, "created the Receiver's token Secret");
                Ok(Secret::new(token))
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                // Made by someone else a moment ago.
                let existing = self.read_secret(&api, source, &name).await?;
                match existing.map(|e| self.own_token(&e, source, &name)) {
                    Some(Ok(Some(token))) => Ok(token),
                    Some(Err(foreign)) => Err(foreign),
                    _ => Err(OwnedError::ForeignSecret {
                        namespace: source.namespace.clone(),
                        name,
                    }),
                }
            }
            Err(error) => Err(self.apply_error(source, &name, error)),
        }
    }

    async fn read_secret(
        &self,
        api: &Api<SecretObject>,
        source: &ManagedSource,
        name: &str,
    ) -> Result<Option<SecretObject>, OwnedError> {
        api.get_opt(name).await.map_err(|e| OwnedError::ReadSecret {
            namespace: source.namespace.clone(),
            name: name.to_owned(),
            source: Box::new(e),
        })
    }

    /// The token of a Secret this agent made; `Ok(None)` if it has none, `Err` if another
    /// agent (or a person) made it.
    fn own_token(
        &self,
        existing: &SecretObject,
        source: &ManagedSource,
        name: &str,
    ) -> Result<Option<Secret>, OwnedError> {
        let ours = existing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(AGENT))
            .is_some_and(|id| *id == self.agent_id);
        if !ours {
            return Err(OwnedError::ForeignSecret {
                namespace: source.namespace.clone(),
                name: name.to_owned(),
            });
        }
        Ok(existing
            .data
            .as_ref()
            .and_then(|d| d.get("token"))
            .and_then(|t| String::from_utf8(t.0.clone()).ok())
            .filter(|t| !t.is_empty())
            .map(Secret::new))
    }

    fn apply_error(
        &self,
        source: &ManagedSource,
        name: &str,
        source_error: kube::Error,
    ) -> OwnedError {
        OwnedError::Apply {
            kind: "Secret",
            namespace: source.namespace.clone(),
            name: name.to_owned(),
            source: Box::new(source_error),
        }
    }

    /// Applies `source`'s Receiver.
    pub async fn apply_receiver(
        &self,
        body: &Value,
        source: &ManagedSource,
    ) -> Result<(), OwnedError> {
        let name = names::receiver_name(source.kind, &source.name);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &source.namespace, &self.receiver);
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(body),
        )
        .await
        .map_err(|e| OwnedError::Apply {
            kind: "Receiver",
            namespace: source.namespace.clone(),
            name,
            source: Box::new(e),
        })?;
        Ok(())
    }

    /// Deletes the Receiver the agent made for a source it no longer manages (opted out,
    /// pinned, pointed elsewhere). Its Secret stays until the source goes (the agent may
    /// not delete Secrets); a later Receiver reuses it.
    pub async fn delete_receiver(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &self.receiver);
        match api.delete(name, &Default::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Reads the `token` of a Secret someone else made (for a brought Receiver).
    pub async fn read_token(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Secret>, kube::Error> {
        let api: Api<SecretObject> = Api::namespaced(self.client.clone(), namespace);
        Ok(api.get_opt(name).await?.and_then(|secret| {
            secret
                .data
                .and_then(|d| d.get("token").cloned())
                .and_then(|t| String::from_utf8(t.0).ok())
                .map(Secret::new)
        }))
    }
}
