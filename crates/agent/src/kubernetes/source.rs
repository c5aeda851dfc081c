//! A Flux `GitRepository` as the agent reads it: which project, which refs, and whether the
//! agent should manage a Receiver for it.

use fluxgate_core::FullPath;
use kube::api::DynamicObject;
use serde::Deserialize;

use super::annotations::OPT_OUT;
use super::gitlab_instance::GitLabInstance;
use super::source_ref::{Followed, GitRepositoryRef, RefError};

/// The parts of `spec` the agent reads.
#[derive(Debug, Default, Deserialize)]
struct GitRepositorySpec {
    #[serde(default)]
    url: String,
    #[serde(default, rename = "ref")]
    reference: Option<GitRepositoryRef>,
}

/// What the agent makes of one `GitRepository`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceVerdict {
    /// On the GitLab instance and followable: the agent manages a Receiver for it.
    Managed(ManagedSource),
    /// Points elsewhere: not the agent's business.
    OtherHost,
    /// Annotated to be left alone.
    OptedOut,
    /// Pinned to a commit: no push moves it.
    Pinned { project: FullPath, commit: String },
    /// On the instance, but its ref cannot be read.
    BadRef { project: FullPath, error: RefError },
}

/// A source the agent manages a Receiver for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedSource {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `apiVersion` of the object, for the owner reference.
    pub api_version: String,
    pub project: FullPath,
    pub refs: fluxgate_core::RefPattern,
}

/// Reads `object` (a `GitRepository` of `api_version`).
pub fn judge(object: &DynamicObject, api_version: &str, gitlab: &GitLabInstance) -> SourceVerdict {
    let annotations = object.metadata.annotations.as_ref();
    if annotations
        .and_then(|a| a.get(OPT_OUT))
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
    {
        return SourceVerdict::OptedOut;
    }
    let spec: GitRepositorySpec = object
        .data
        .get("spec")
        .and_then(|spec| serde_json::from_value(spec.clone()).ok())
        .unwrap_or_default();
    let Some(project) = gitlab.project_of(&spec.url) else {
        return SourceVerdict::OtherHost;
    };
    match spec.reference.unwrap_or_default().followed() {
        Err(error) => SourceVerdict::BadRef { project, error },
        Ok(Followed::Pinned(commit)) => SourceVerdict::Pinned { project, commit },
        Ok(Followed::Refs(refs)) => SourceVerdict::Managed(ManagedSource {
            namespace: object.metadata.namespace.clone().unwrap_or_default(),
            name: object.metadata.name.clone().unwrap_or_default(),
            uid: object.metadata.uid.clone().unwrap_or_default(),
            api_version: api_version.to_owned(),
            project,
            refs,
        }),
    }
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::*;

    fn source(spec: serde_json::Value, annotations: &[(&str, &str)]) -> DynamicObject {
        DynamicObject {
            types: None,
            metadata: ObjectMeta {
                name: Some("app".to_owned()),
                namespace: Some("apps".to_owned()),
                uid: Some("uid-1".to_owned()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            data: serde_json::json!({ "spec": spec }),
        }
    }

    fn judged(spec: serde_json::Value, annotations: &[(&str, &str)]) -> SourceVerdict {
        let gitlab = GitLabInstance::parse("https://gitlab.example.com").unwrap();
        judge(
            &source(spec, annotations),
            "source.toolkit.fluxcd.io/v1",
            &gitlab,
        )
    }

    #[test]
    fn a_source_on_the_instance_is_managed_with_its_ref() {
        let verdict = judged(
            serde_json::json!({"url": "ssh://git@gitlab.example.com:2222/g/app.git", "ref": {"branch": "main"}}),
            &[],
        );
        let SourceVerdict::Managed(managed) = verdict else {
            panic!("{verdict:?}");
        };
        assert_eq!(managed.project.as_str(), "g/app");
        assert_eq!(managed.refs.as_str(), "refs/heads/main");
        assert_eq!(
            (
                managed.namespace.as_str(),
                managed.name.as_str(),
                managed.uid.as_str()
            ),
            ("apps", "app", "uid-1")
        );
    }

    #[test]
    fn opted_out_pinned_and_foreign_sources_are_not_managed() {
        let url = serde_json::json!({"url": "https://gitlab.example.com/g/app"});
        assert_eq!(
            judged(url.clone(), &[(OPT_OUT, "true")]),
            SourceVerdict::OptedOut
        );
        assert!(matches!(
            judged(url, &[(OPT_OUT, "false")]),
            SourceVerdict::Managed(_)
        ));
        assert!(matches!(
            judged(
                serde_json::json!({"url": "https://gitlab.example.com/g/app", "ref": {"commit": "abc"}}),
                &[]
            ),
            SourceVerdict::Pinned { .. }
        ));
        assert_eq!(
            judged(serde_json::json!({"url": "https://github.com/g/app"}), &[]),
            SourceVerdict::OtherHost
        );
        assert_eq!(judged(serde_json::json!({}), &[]), SourceVerdict::OtherHost);
    }
}
