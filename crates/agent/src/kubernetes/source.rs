//! A Flux source (`GitRepository` or `OCIRepository`) as the agent reads it: which
//! project, which refs or tags, and whether the agent should manage a Receiver for it.

use fluxgate_core::{FullPath, RefPattern};
use kube::api::DynamicObject;
use serde::Deserialize;

use super::annotations::{OPT_OUT, PIPELINE_EVENTS};
use super::gitlab_instance::GitLabInstance;
use super::oci_ref::{OciFollowed, OciRefError, OciRepositoryRef, TagFilter};
use super::registry::{OciUrlError, Registry};
use super::source_ref::{Followed, GitRepositoryRef, RefError};

/// The kinds of Flux source the agent manages Receivers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    GitRepository,
    OciRepository,
}

impl SourceKind {
    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitRepository => "GitRepository",
            Self::OciRepository => "OCIRepository",
        }
    }
}

/// The parts of a `GitRepository`'s `spec` the agent reads.
#[derive(Debug, Default, Deserialize)]
struct GitRepositorySpec {
    #[serde(default)]
    url: String,
    #[serde(default, rename = "ref")]
    reference: Option<GitRepositoryRef>,
}

/// The parts of an `OCIRepository`'s `spec` the agent reads.
#[derive(Debug, Default, Deserialize)]
struct OciRepositorySpec {
    #[serde(default)]
    url: String,
    #[serde(default, rename = "ref")]
    reference: Option<OciRepositoryRef>,
}

/// Why a source on the instance cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    GitRef(#[from] RefError),
    #[error(transparent)]
    OciRef(#[from] OciRefError),
    #[error(transparent)]
    OciUrl(#[from] OciUrlError),
}

/// What the agent makes of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceVerdict {
    /// On the GitLab instance and followable: the agent manages a Receiver for it.
    Managed(ManagedSource),
    /// Points elsewhere: not the agent's business.
    OtherHost,
    /// Annotated to be left alone.
    OptedOut,
    /// Pinned to a commit (`GitRepository`) or a digest (`OCIRepository`): nothing moves
    /// it.
    Pinned {
        kind: SourceKind,
        project: FullPath,
        pin: String,
    },
    /// On the instance, but its URL or ref cannot be read.
    BadRef {
        kind: SourceKind,
        project: Option<FullPath>,
        error: SourceError,
    },
}

/// What moves a managed source's Receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follows {
    /// A `GitRepository`: pushes to these refs, and with `pipeline_events` also artifact
    /// events of these refs.
    Git {
        refs: RefPattern,
        pipeline_events: bool,
    },
    /// An `OCIRepository`: artifact events of one of `candidates` (the project is the one
    /// the broker knows, see [`super::registry`]) for `repository` whose tag `tags`
    /// accepts.
    Oci {
        candidates: Vec<FullPath>,
        /// `host[:port]/path`, lower-cased.
        repository: String,
        tags: TagFilter,
    },
}

/// A source the agent manages a Receiver for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedSource {
    pub kind: SourceKind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `apiVersion` of the object, for the owner reference.
    pub api_version: String,
    /// `GitRepository`: the project. `OCIRepository`: the repository path, the longest of
    /// its candidate projects (written on the owned objects).
    pub project: FullPath,
    pub follows: Follows,
}

impl ManagedSource {
    /// The source's refs or tags, for log lines.
    pub fn describe_follows(&self) -> String {
        match &self.follows {
            Follows::Git {
                refs,
                pipeline_events,
            } => {
                if *pipeline_events {
                    format!("{} (pushes and pipeline events)", refs.as_str())
                } else {
                    refs.as_str().to_owned()
                }
            }
            Follows::Oci { tags, .. } => tags.describe(),
        }
    }
}

fn annotated_true(object: &DynamicObject, key: &str) -> bool {
    object
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
}

fn spec<T: serde::de::DeserializeOwned + Default>(object: &DynamicObject) -> T {
    object
        .data
        .get("spec")
        .and_then(|spec| serde_json::from_value(spec.clone()).ok())
        .unwrap_or_default()
}

fn managed(
    object: &DynamicObject,
    kind: SourceKind,
    api_version: &str,
    project: FullPath,
    follows: Follows,
) -> SourceVerdict {
    SourceVerdict::Managed(ManagedSource {
        kind,
        namespace: object.metadata.namespace.clone().unwrap_or_default(),
        name: object.metadata.name.clone().unwrap_or_default(),
        uid: object.metadata.uid.clone().unwrap_or_default(),
        api_version: api_version.to_owned(),
        project,
        follows,
    })
}

/// Reads `object` (a `GitRepository` of `api_version`).
pub fn judge(object: &DynamicObject, api_version: &str, gitlab: &GitLabInstance) -> SourceVerdict {
    const KIND: SourceKind = SourceKind::GitRepository;
    if annotated_true(object, OPT_OUT) {
        return SourceVerdict::OptedOut;
    }
    let spec: GitRepositorySpec = spec(object);
    let Some(project) = gitlab.project_of(&spec.url) else {
        return SourceVerdict::OtherHost;
    };
    match spec.reference.unwrap_or_default().followed() {
        Err(error) => SourceVerdict::BadRef {
            kind: KIND,
            project: Some(project),
            error: error.into(),
        },
        Ok(Followed::Pinned(commit)) => SourceVerdict::Pinned {
            kind: KIND,
            project,
            pin: commit,
        },
        Ok(Followed::Refs(refs)) => {
            let pipeline_events = annotated_true(object, PIPELINE_EVENTS);
            managed(
                object,
                KIND,
                api_version,
                project,
                Follows::Git {
                    refs,
                    pipeline_events,
                },
            )
        }
    }
}

/// Reads `object` (an `OCIRepository` of `api_version`).
pub fn judge_oci(object: &DynamicObject, api_version: &str, registry: &Registry) -> SourceVerdict {
    const KIND: SourceKind = SourceKind::OciRepository;
    if annotated_true(object, OPT_OUT) {
        return SourceVerdict::OptedOut;
    }
    let spec: OciRepositorySpec = spec(object);
    let repository = match registry.repository_of(&spec.url) {
        Ok(Some(repository)) => repository,
        Ok(None) => return SourceVerdict::OtherHost,
        Err(error) => {
            return SourceVerdict::BadRef {
                kind: KIND,
                project: None,
                error: error.into(),
            };
        }
    };
    match spec.reference.unwrap_or_default().followed() {
        Err(error) => SourceVerdict::BadRef {
            kind: KIND,
            project: Some(repository.path),
            error: error.into(),
        },
        Ok(OciFollowed::Pinned(digest)) => SourceVerdict::Pinned {
            kind: KIND,
            project: repository.path,
            pin: digest,
        },
        Ok(OciFollowed::Tags(tags)) => {
            let candidates = repository.candidate_projects();
            managed(
                object,
                KIND,
                api_version,
                repository.path,
                Follows::Oci {
                    candidates,
                    repository: repository.key,
                    tags,
                },
            )
        }
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
        assert_eq!(managed.kind, SourceKind::GitRepository);
        assert_eq!(
            managed.follows,
            Follows::Git {
                refs: RefPattern::parse("refs/heads/main").unwrap(),
                pipeline_events: false
            }
        );
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

#[cfg(test)]
mod oci_tests {
    use kube::api::ObjectMeta;

    use super::*;
    use crate::kubernetes::registry::RegistryHost;

    fn judged(spec: serde_json::Value, annotations: &[(&str, &str)]) -> SourceVerdict {
        let object = DynamicObject {
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
        };
        let registry = Registry::new(vec![RegistryHost::default_for("gitlab.example.com")]);
        judge_oci(&object, "source.toolkit.fluxcd.io/v1", &registry)
    }

    #[test]
    fn an_oci_repository_on_the_registry_is_managed_with_its_candidates_and_tags() {
        let verdict = judged(
            serde_json::json!({"url": "oci://registry.gitlab.example.com/g/sub/app/manifests", "ref": {"semver": "^1.0"}}),
            &[],
        );
        let SourceVerdict::Managed(managed) = verdict else {
            panic!("{verdict:?}");
        };
        assert_eq!(managed.kind, SourceKind::OciRepository);
        assert_eq!(managed.project.as_str(), "g/sub/app/manifests");
        let Follows::Oci {
            candidates,
            repository,
            tags,
        } = &managed.follows
        else {
            panic!("{:?}", managed.follows);
        };
        let candidates: Vec<&str> = candidates.iter().map(FullPath::as_str).collect();
        assert_eq!(candidates, ["g/sub", "g/sub/app", "g/sub/app/manifests"]);
        assert_eq!(
            repository,
            "registry.gitlab.example.com/g/sub/app/manifests"
        );
        assert!(tags.accepts(Some("1.2.0")));
        assert!(!tags.accepts(Some("2.0.0")));
        assert_eq!(managed.describe_follows(), "semver ^1.0");
    }

    #[test]
    fn digest_pinned_opted_out_foreign_and_broken_oci_sources_are_not_managed() {
        let url = "oci://registry.gitlab.example.com/g/app";
        let digest = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(
            judged(serde_json::json!({"url": url, "ref": {"digest": digest, "tag": "x"}}), &[]),
            SourceVerdict::Pinned { kind: SourceKind::OciRepository, pin, .. } if pin == digest
        ));
        assert_eq!(
            judged(serde_json::json!({"url": url}), &[(OPT_OUT, "true")]),
            SourceVerdict::OptedOut
        );
        assert_eq!(
            judged(serde_json::json!({"url": "oci://ghcr.io/g/app"}), &[]),
            SourceVerdict::OtherHost
        );
        assert!(matches!(
            judged(
                serde_json::json!({"url": url, "ref": {"semver": "nope"}}),
                &[]
            ),
            SourceVerdict::BadRef {
                error: SourceError::OciRef(_),
                ..
            }
        ));
        assert!(matches!(
            judged(
                serde_json::json!({"url": "oci://registry.gitlab.example.com/g"}),
                &[]
            ),
            SourceVerdict::BadRef {
                project: None,
                error: SourceError::OciUrl(_),
                ..
            }
        ));
    }

    #[test]
    fn a_git_repository_opts_in_to_pipeline_events_by_annotation() {
        let gitlab = GitLabInstance::parse("https://gitlab.example.com").unwrap();
        let object = |value: &str| DynamicObject {
            types: None,
            metadata: ObjectMeta {
                name: Some("app".to_owned()),
                namespace: Some("apps".to_owned()),
                annotations: Some([(PIPELINE_EVENTS.to_owned(), value.to_owned())].into()),
                ..ObjectMeta::default()
            },
            data: serde_json::json!({"spec": {"url": "https://gitlab.example.com/g/app"}}),
        };
        for (value, expected) in [
            ("true", true),
            (" TRUE ", true),
            ("false", false),
            ("", false),
        ] {
            let SourceVerdict::Managed(managed) = judge(&object(value), "v1", &gitlab) else {
                panic!("not managed");
            };
            assert!(
                matches!(managed.follows, Follows::Git { pipeline_events, .. } if pipeline_events == expected),
                "{value:?}"
            );
        }
    }
}
