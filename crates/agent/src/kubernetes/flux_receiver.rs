//! A Flux `Receiver` object as the agent reads it: who made it, whether it is Ready, and
//! the webhook path Flux gave it.

use fluxgate_core::{FullPath, RefPattern};
use kube::api::DynamicObject;
use serde::Deserialize;

use super::annotations::{AGENT, MANAGED_BY, MANAGED_BY_VALUE, PROJECT, REF};
use crate::receiver::ReceiverKind;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    #[serde(default)]
    webhook_path: Option<String>,
    #[serde(default)]
    conditions: Vec<Condition>,
    #[serde(default)]
    observed_generation: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    kind: String,
    status: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    secret_ref: Option<SecretRef>,
    #[serde(default)]
    suspend: bool,
}

#[derive(Debug, Deserialize)]
struct SecretRef {
    name: String,
}

/// Who made a Receiver, as far as this agent is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Maker {
    /// This agent.
    ThisAgent,
    /// Another fluxgate agent (its id).
    OtherAgent(String),
    /// Someone else.
    Someone,
}

/// The parts of a Receiver the agent uses.
#[derive(Debug, Clone)]
pub struct ReceiverView {
    pub namespace: String,
    pub name: String,
    pub maker: Maker,
    /// `status.webhookPath`, once Flux has set it and the Receiver is Ready and not
    /// suspended.
    pub ready_path: Option<String>,
    pub kind: String,
    pub secret_name: Option<String>,
    /// `fluxgate.io/project`.
    pub project_annotation: Option<String>,
    /// `fluxgate.io/ref`.
    pub ref_annotation: Option<String>,
}

impl ReceiverView {
    pub fn read(object: &DynamicObject, agent_id: &str) -> Self {
        let labels = object.metadata.labels.as_ref();
        let annotations = object.metadata.annotations.as_ref();
        let annotation = |key: &str| annotations.and_then(|a| a.get(key)).cloned();
        let managed = labels
            .and_then(|l| l.get(MANAGED_BY))
            .is_some_and(|v| v == MANAGED_BY_VALUE);
        let maker = match (managed, annotation(AGENT)) {
            (true, Some(id)) if id == agent_id => Maker::ThisAgent,
            (true, Some(id)) => Maker::OtherAgent(id),
            (true, None) => Maker::OtherAgent(String::new()),
            (false, _) => Maker::Someone,
        };
        let spec: Spec = object
            .data
            .get("spec")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default();
        let status: Status = object
            .data
            .get("status")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .any(|c| c.kind == "Ready" && c.status == "True");
        let current = match (status.observed_generation, object.metadata.generation) {
            (Some(observed), Some(generation)) => observed >= generation,
            _ => true,
        };
        let ready_path = status
            .webhook_path
            .filter(|path| ready && current && !spec.suspend && path.starts_with("/hook/"));
        Self {
            namespace: object.metadata.namespace.clone().unwrap_or_default(),
            name: object.metadata.name.clone().unwrap_or_default(),
            maker,
            ready_path,
            kind: spec.kind,
            secret_name: spec.secret_ref.map(|r| r.name),
            project_annotation: annotation(PROJECT),
            ref_annotation: annotation(REF),
        }
    }

    /// For a Receiver someone else made and annotated with a project: how to call it.
    pub fn brought(&self) -> Option<Result<Brought, String>> {
        if self.maker != Maker::Someone {
            return None;
        }
        let project = self.project_annotation.as_deref()?;
        Some(self.brought_parts(project))
    }

    fn brought_parts(&self, project: &str) -> Result<Brought, String> {
        let project = FullPath::parse(project).map_err(|e| format!("{PROJECT}: {e}"))?;
        let refs = self
            .ref_annotation
            .as_deref()
            .map(RefPattern::parse)
            .transpose()
            .map_err(|e| format!("{REF}: {e}"))?;
        let kind = match self.kind.as_str() {
            "generic" => ReceiverKind::Generic,
            "generic-hmac" => ReceiverKind::GenericHmac,
            "gitlab" => ReceiverKind::Gitlab,
            other => {
                return Err(format!(
                    "spec.type {other:?} is not one the agent can call (generic, generic-hmac, gitlab)"
                ));
            }
        };
        let secret = self
            .secret_name
            .clone()
            .ok_or_else(|| "spec.secretRef is missing".to_owned())?;
        Ok(Brought {
            project,
            refs,
            kind,
            secret,
        })
    }
}

/// How to trigger a Receiver someone brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brought {
    pub project: FullPath,
    pub refs: Option<RefPattern>,
    pub kind: ReceiverKind,
    pub secret: String,
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::*;

    fn receiver(
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
        status: serde_json::Value,
    ) -> DynamicObject {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        DynamicObject {
            types: None,
            metadata: ObjectMeta {
                name: Some("r".to_owned()),
                namespace: Some("ns".to_owned()),
                generation: Some(2),
                labels: map(labels),
                annotations: map(annotations),
                ..ObjectMeta::default()
            },
            data: serde_json::json!({
                "spec": {"type": "generic-hmac", "secretRef": {"name": "s"}, "resources": []},
                "status": status,
            }),
        }
    }

    const READY: &str = r#"{"observedGeneration": 2, "webhookPath": "/hook/abc",
        "conditions": [{"type": "Ready", "status": "True"}]}"#;

    #[test]
    fn ready_means_a_current_ready_condition_and_a_path() {
        let ready: serde_json::Value = serde_json::from_str(READY).unwrap();
        let view = ReceiverView::read(&receiver(&[], &[], ready.clone()), "a/b");
        assert_eq!(view.ready_path.as_deref(), Some("/hook/abc"));
        let mut stale = ready.clone();
        stale["observedGeneration"] = 1.into();
        assert_eq!(
            ReceiverView::read(&receiver(&[], &[], stale), "a/b").ready_path,
            None
        );
        let mut not_ready = ready;
        not_ready["conditions"][0]["status"] = "False".into();
        assert_eq!(
            ReceiverView::read(&receiver(&[], &[], not_ready), "a/b").ready_path,
            None
        );
    }

    #[test]
    fn the_maker_is_read_from_the_label_and_the_agent_annotation() {
        let ours = receiver(
            &[(MANAGED_BY, MANAGED_BY_VALUE)],
            &[(AGENT, "a/b")],
            serde_json::Value::Null,
        );
        assert_eq!(ReceiverView::read(&ours, "a/b").maker, Maker::ThisAgent);
        assert_eq!(
            ReceiverView::read(&ours, "c/d").maker,
            Maker::OtherAgent("a/b".to_owned())
        );
        let theirs = receiver(
            &[],
            &[(PROJECT, "g/app"), (REF, "main")],
            serde_json::Value::Null,
        );
        let view = ReceiverView::read(&theirs, "a/b");
        assert_eq!(view.maker, Maker::Someone);
        let brought = view.brought().unwrap().unwrap();
        assert_eq!(brought.project.as_str(), "g/app");
        assert_eq!(brought.kind, ReceiverKind::GenericHmac);
        assert_eq!(brought.secret, "s");
        assert!(
            ReceiverView::read(&receiver(&[], &[], serde_json::Value::Null), "a/b")
                .brought()
                .is_none()
        );
    }
}
