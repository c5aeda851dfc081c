//! Which `OCIRepository` URLs point at the GitLab instance's container registry, and at
//! which projects.
//!
//! An `OCIRepository`'s `spec.url` is `oci://<registry host>[:port]/<repository>`
//! (kubernetes.md §2). GitLab's registry names repositories after the project's full path,
//! lower-cased, followed by optional image names: `group/sub/project`,
//! `group/sub/project/manifests`, `group/sub/project/a/b`. The URL alone cannot say where
//! the project ends, so the agent does not guess: it names every prefix of the repository
//! path of at least two segments (`group/sub`, `group/sub/project`,
//! `group/sub/project/manifests`) as a candidate project and subscribes to all of them. A
//! project always has a namespace, so one segment is never a project; and at most one of
//! the candidates is a project, because a GitLab project cannot contain a group, so no
//! project path is a prefix of another project's. The broker's catalog, which knows the
//! projects, decides: it delivers only events of a real project, and an event's
//! `matched_projects` names the candidate it matched. The project is therefore the longest
//! prefix of the repository path that is a project.
//!
//! A URL belongs to the registry when its host is one of `kubernetes.registry_hosts`
//! (default `registry.<gitlab host>`), compared without ASCII case. An entry with a port
//! (`gitlab.example.com:5050`) requires that port; one without accepts any. GitLab's
//! relative URL root does not apply to registry paths.

use fluxgate_core::FullPath;
use reqwest::Url;

/// Longest registry host entry, in bytes (a DNS name plus a port).
const MAX_HOST_LEN: usize = 260;

/// Why a `kubernetes.registry_hosts` entry is not a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryHostError {
    #[error("{0:?} is not a host or host:port (no scheme, path or user)")]
    Invalid(String),
}

/// One registry host: lower-cased, with an optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost {
    host: String,
    port: Option<u16>,
}

impl RegistryHost {
    /// Parses `registry.example.com` or `gitlab.example.com:5050`.
    pub fn parse(text: &str) -> Result<Self, RegistryHostError> {
        let invalid = || RegistryHostError::Invalid(text.to_owned());
        let text = text.trim();
        if text.is_empty() || text.len() > MAX_HOST_LEN || text.contains(['/', '@', '?', '#', ' '])
        {
            return Err(invalid());
        }
        let url = Url::parse(&format!("oci://{text}")).map_err(|_| invalid())?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(invalid)?;
        if !url.path().is_empty() && url.path() != "/" {
            return Err(invalid());
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port: url.port(),
        })
    }

    /// `registry.<host of the GitLab instance>`, GitLab's default registry domain.
    pub fn default_for(gitlab_host: &str) -> Self {
        Self {
            host: format!("registry.{}", gitlab_host.to_ascii_lowercase()),
            port: None,
        }
    }

    fn accepts(&self, url: &Url) -> bool {
        url.host_str()
            .is_some_and(|host| host.eq_ignore_ascii_case(&self.host))
            && self.port.is_none_or(|port| url.port() == Some(port))
    }
}

impl std::fmt::Display for RegistryHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// Why an `OCIRepository` URL on a registry host cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OciUrlError {
    #[error("spec.url names no repository path with a project (at least group/project)")]
    NoProject,
    #[error("spec.url must not carry a tag or digest ({0:?}); Flux refuses it too")]
    TagInUrl(String),
    #[error("spec.url has an invalid repository path: {0}")]
    Path(String),
}

/// A repository in the instance's registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRepository {
    /// `host[:port]/path`, lower-cased: how the repository is compared with an artifact
    /// event's URL.
    pub key: String,
    /// The repository path (`group/sub/project/manifests`).
    pub path: FullPath,
}

impl RegistryRepository {
    /// Every prefix of the path with at least two segments, shortest first: the paths one
    /// of which is the project (see the module documentation).
    pub fn candidate_projects(&self) -> Vec<FullPath> {
        let text = self.path.as_str();
        let mut candidates = Vec::new();
        for (index, _) in text.match_indices('/').skip(1) {
            candidates.extend(FullPath::parse(&text[..index]).ok());
        }
        if text.contains('/') {
            candidates.push(self.path.clone());
        }
        candidates
    }
}

/// The registry hosts of the GitLab instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    hosts: Vec<RegistryHost>,
}

impl Registry {
    pub fn new(hosts: Vec<RegistryHost>) -> Self {
        Self { hosts }
    }

    pub fn hosts(&self) -> &[RegistryHost] {
        &self.hosts
    }

    /// The repository `url` names in this registry: `Ok(None)` when it points elsewhere (or
    /// is not an `oci://` URL), `Err` when it is on a registry host but unusable.
    pub fn repository_of(&self, url: &str) -> Result<Option<RegistryRepository>, OciUrlError> {
        let Ok(parsed) = Url::parse(url.trim()) else {
            return Ok(None);
        };
        if parsed.scheme() != "oci" || !self.hosts.iter().any(|h| h.accepts(&parsed)) {
            return Ok(None);
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(OciUrlError::Path(url.trim().to_owned()));
        }
        let path = parsed.path().trim_matches('/');
        if let Some(position) = path.rfind([':', '@']) {
            return Err(OciUrlError::TagInUrl(path[position..].to_owned()));
        }
        let path = FullPath::parse(path).map_err(|e| OciUrlError::Path(e.to_string()))?;
        if !path.as_str().contains('/') {
            return Err(OciUrlError::NoProject);
        }
        let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
        let authority = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        Ok(Some(RegistryRepository {
            key: format!("{authority}/{}", path.key()),
            path,
        }))
    }
}

/// An artifact URL as a pipeline sent it (`oci://host/path`, possibly with `:tag` and/or
/// `@digest`): its repository key (`host[:port]/path`, lower-cased, for comparison with
/// [`RegistryRepository::key`]) and its tag, if it names one. `None` if it is not such a
/// URL.
pub fn parse_artifact_url(url: &str) -> Option<(String, Option<String>)> {
    let parsed = Url::parse(url.trim()).ok()?;
    if parsed.scheme() != "oci" {
        return None;
    }
    let host = parsed.host_str().filter(|h| !h.is_empty())?;
    let mut path = parsed.path().trim_matches('/');
    if let Some((before, _)) = path.split_once('@') {
        path = before;
    }
    // A tag follows the last `:` of the last segment.
    let mut tag = None;
    let last_segment = path.rfind('/').unwrap_or(0);
    if let Some(colon) = path[last_segment..].rfind(':') {
        tag = Some(path[last_segment + colon + 1..].to_owned()).filter(|t| !t.is_empty());
        path = &path[..last_segment + colon];
    }
    let authority = match parsed.port() {
        Some(port) => format!("{}:{port}", host.to_ascii_lowercase()),
        None => host.to_ascii_lowercase(),
    };
    let key = format!(
        "{authority}/{}",
        path.trim_matches('/').to_ascii_lowercase()
    );
    Some((key, tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(hosts: &[&str]) -> Registry {
        Registry::new(
            hosts
                .iter()
                .map(|h| RegistryHost::parse(h).unwrap())
                .collect(),
        )
    }

    fn candidates(url: &str) -> Vec<String> {
        registry(&["registry.gitlab.example.com"])
            .repository_of(url)
            .unwrap()
            .unwrap()
            .candidate_projects()
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect()
    }

    #[test]
    fn every_prefix_of_two_segments_or_more_is_a_candidate_project() {
        assert_eq!(
            candidates("oci://registry.gitlab.example.com/group/sub/project/manifests"),
            [
                "group/sub",
                "group/sub/project",
                "group/sub/project/manifests"
            ]
        );
        assert_eq!(
            candidates("oci://registry.gitlab.example.com/group/project"),
            ["group/project"]
        );
        assert_eq!(
            candidates("oci://REGISTRY.gitlab.example.com/Group/App/x/"),
            ["Group/App", "Group/App/x"]
        );
    }

    #[test]
    fn only_configured_registry_hosts_match() {
        let registry = registry(&["registry.gitlab.example.com", "gitlab.example.com:5050"]);
        for url in [
            "oci://ghcr.io/group/project",
            "oci://registry.gitlab.example.com.evil.io/group/project",
            "oci://gitlab.example.com/group/project",
            "oci://gitlab.example.com:5000/group/project",
            "https://registry.gitlab.example.com/group/project",
            "not a url",
        ] {
            assert_eq!(registry.repository_of(url), Ok(None), "{url}");
        }
        let found = registry
            .repository_of("oci://gitlab.example.com:5050/g/p/img")
            .unwrap()
            .unwrap();
        assert_eq!(found.key, "gitlab.example.com:5050/g/p/img");
        let any_port = registry
            .repository_of("oci://registry.gitlab.example.com:443/g/p")
            .unwrap()
            .unwrap();
        assert_eq!(any_port.key, "registry.gitlab.example.com:443/g/p");
    }

    #[test]
    fn unusable_urls_on_the_registry_say_why() {
        let registry = registry(&["registry.example.com"]);
        assert_eq!(
            registry.repository_of("oci://registry.example.com/group"),
            Err(OciUrlError::NoProject)
        );
        assert_eq!(
            registry.repository_of("oci://registry.example.com/g/p:1.0"),
            Err(OciUrlError::TagInUrl(":1.0".to_owned()))
        );
        assert!(matches!(
            registry.repository_of("oci://registry.example.com/g/p@sha256:abc"),
            Err(OciUrlError::TagInUrl(_))
        ));
        assert!(matches!(
            registry.repository_of("oci://registry.example.com/g//p"),
            Err(OciUrlError::Path(_))
        ));
        assert_eq!(
            registry.repository_of("oci://registry.example.com/"),
            Err(OciUrlError::Path("path is empty".to_owned()))
        );
    }

    #[test]
    fn registry_host_entries_are_hosts_with_optional_ports() {
        assert_eq!(
            RegistryHost::parse("Registry.Example.com")
                .unwrap()
                .to_string(),
            "registry.example.com"
        );
        assert_eq!(
            RegistryHost::parse("gitlab.example.com:5050")
                .unwrap()
                .to_string(),
            "gitlab.example.com:5050"
        );
        for bad in [
            "",
            "https://registry.example.com",
            "registry.example.com/path",
            "user@registry.example.com",
            "registry.example.com:99999",
            "a b",
        ] {
            assert!(RegistryHost::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            RegistryHost::default_for("GitLab.example.com").to_string(),
            "registry.gitlab.example.com"
        );
    }

    #[test]
    fn artifact_urls_compare_by_repository_and_may_carry_the_tag() {
        for (url, tag) in [
            ("oci://registry.example.com/g/p/manifests", None),
            ("oci://Registry.Example.com/G/P/manifests/", None),
            (
                "oci://registry.example.com/g/p/manifests:1.2.3",
                Some("1.2.3"),
            ),
            ("oci://registry.example.com/g/p/manifests@sha256:abcd", None),
            (
                "oci://registry.example.com/g/p/manifests:v1@sha256:abcd",
                Some("v1"),
            ),
        ] {
            assert_eq!(
                parse_artifact_url(url),
                Some((
                    "registry.example.com/g/p/manifests".to_owned(),
                    tag.map(str::to_owned)
                )),
                "{url}"
            );
        }
        assert_eq!(
            parse_artifact_url("oci://registry.example.com:5050/g/p:tag"),
            Some((
                "registry.example.com:5050/g/p".to_owned(),
                Some("tag".to_owned())
            ))
        );
        assert_eq!(parse_artifact_url("https://registry.example.com/g/p"), None);
    }
}
