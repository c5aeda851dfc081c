//! Which Flux source URLs point at the GitLab instance, and at which project.
//!
//! A `GitRepository`'s `spec.url` names a project in many spellings (kubernetes.md §2):
//! `https://gitlab.example.com/group/app.git`, `http://GitLab.Example.com:8080/group/app`,
//! `ssh://git@gitlab.example.com:2222/group/app.git`, and with a relative URL root
//! `https://example.com/gitlab/group/app.git`. A source belongs to the instance when its
//! host equals the instance's host, ignoring ASCII case, whatever the scheme Flux allows
//! (`http`, `https`, `ssh`), the port or the user; the project is what follows the
//! instance's relative root, without a trailing `.git`. agentk compares the host only and
//! never strips a relative root, so its sources on such instances never match (work item
//! 1240); this module does both.

use fluxgate_core::FullPath;
use reqwest::Url;

/// Schemes Flux accepts in a `GitRepository` URL (`^(http|https|ssh)://.*$`).
const GIT_SCHEMES: [&str; 3] = ["http", "https", "ssh"];

/// Why `gitlab_url` cannot name a GitLab instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceUrlError {
    #[error("not a URL: {0}")]
    Invalid(String),
    #[error("scheme must be http or https, not {0:?}")]
    Scheme(String),
    #[error("the URL has no host")]
    NoHost,
    #[error("the URL must not have a query string or fragment")]
    Query,
    #[error("relative URL root: {0}")]
    Root(String),
}

/// The GitLab instance the agent's sources must point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitLabInstance {
    /// ASCII-lower-cased host name (or IP literal, brackets kept for IPv6).
    host: String,
    /// The relative URL root, such as `gitlab` for `https://example.com/gitlab`.
    root: Option<FullPath>,
}

impl GitLabInstance {
    /// Parses `gitlab_url`, such as `https://gitlab.example.com` or
    /// `https://example.com/gitlab`.
    pub fn parse(raw: &str) -> Result<Self, InstanceUrlError> {
        let url = Url::parse(raw.trim()).map_err(|e| InstanceUrlError::Invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(InstanceUrlError::Scheme(url.scheme().to_owned()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(InstanceUrlError::Query);
        }
        let host = url
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or(InstanceUrlError::NoHost)?
            .to_ascii_lowercase();
        let root_path = url.path().trim_matches('/');
        let root = if root_path.is_empty() {
            None
        } else {
            Some(FullPath::parse(root_path).map_err(|e| InstanceUrlError::Root(e.to_string()))?)
        };
        Ok(Self { host, root })
    }

    /// The project `source_url` names on this instance, or `None` if it points elsewhere
    /// (another host, a scheme Flux does not accept, a path outside the relative root, or
    /// no project path at all).
    pub fn project_of(&self, source_url: &str) -> Option<FullPath> {
        let url = Url::parse(source_url.trim()).ok()?;
        if !GIT_SCHEMES.contains(&url.scheme()) {
            return None;
        }
        if !url.host_str()?.eq_ignore_ascii_case(&self.host) {
            return None;
        }
        if url.query().is_some() || url.fragment().is_some() {
            return None;
        }
        let path = url.path().trim_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path);
        let path = FullPath::parse(path).ok()?;
        match &self.root {
            None => Some(path),
            Some(root) if path.key() != root.key() && path.is_within(root) => {
                let below = path.strip_root(Some(root));
                (below.key() != path.key()).then_some(below)
            }
            Some(_) => None,
        }
    }

    /// The host, for log lines.
    pub fn host(&self) -> &str {
        &self.host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(instance: &str, url: &str) -> Option<String> {
        GitLabInstance::parse(instance)
            .unwrap()
            .project_of(url)
            .map(|p| p.as_str().to_owned())
    }

    #[test]
    fn every_spelling_flux_accepts_names_the_project() {
        let gitlab = "https://gitlab.example.com";
        let cases = [
            "https://gitlab.example.com/group/app.git",
            "https://gitlab.example.com/group/app",
            "https://gitlab.example.com/group/app/",
            "http://gitlab.example.com:8080/group/app.git",
            "ssh://git@gitlab.example.com/group/app.git",
            "ssh://git@gitlab.example.com:2222/group/app.git",
            "https://oauth2:secret@gitlab.example.com/group/app.git",
        ];
        for url in cases {
            assert_eq!(project(gitlab, url).as_deref(), Some("group/app"), "{url}");
        }
    }

    #[test]
    fn the_host_is_compared_without_case_and_the_path_keeps_its_spelling() {
        let found = project(
            "https://GitLab.Example.COM",
            "ssh://git@gitlab.example.com/Group/App.git",
        );
        assert_eq!(found.as_deref(), Some("Group/App"));
        let found = project(
            "https://gitlab.example.com",
            "https://GITLAB.EXAMPLE.COM/g/a",
        );
        assert_eq!(found.as_deref(), Some("g/a"));
    }

    #[test]
    fn other_hosts_and_schemes_do_not_match() {
        let gitlab = "https://gitlab.example.com";
        for url in [
            "https://github.com/group/app.git",
            "https://gitlab.example.com.evil.io/group/app.git",
            "https://evil.io/gitlab.example.com/group/app.git",
            "git@gitlab.example.com:group/app.git",
            "git://gitlab.example.com/group/app.git",
            "oci://gitlab.example.com/group/app",
            "https://gitlab.example.com/",
            "https://gitlab.example.com/group/app?ref=x",
            "not a url",
        ] {
            assert_eq!(project(gitlab, url), None, "{url}");
        }
    }

    #[test]
    fn a_relative_url_root_is_stripped_and_required() {
        let gitlab = "https://example.com/gitlab/";
        assert_eq!(
            project(gitlab, "https://example.com/gitlab/group/app.git").as_deref(),
            Some("group/app")
        );
        assert_eq!(
            project(gitlab, "ssh://git@example.com:2222/GitLab/group/sub/app").as_deref(),
            Some("group/sub/app")
        );
        // Outside the root, or the root itself, is not a project of this instance.
        assert_eq!(project(gitlab, "https://example.com/group/app.git"), None);
        assert_eq!(project(gitlab, "https://example.com/gitlab"), None);
        assert_eq!(
            project(gitlab, "https://example.com/gitlabx/group/app"),
            None
        );
    }

    #[test]
    fn gitlab_url_must_be_a_plain_http_url() {
        assert_eq!(
            GitLabInstance::parse("ssh://gitlab.example.com"),
            Err(InstanceUrlError::Scheme("ssh".to_owned()))
        );
        assert_eq!(
            GitLabInstance::parse("https://gitlab.example.com/?x=1"),
            Err(InstanceUrlError::Query)
        );
        assert!(matches!(
            GitLabInstance::parse("gitlab.example.com"),
            Err(InstanceUrlError::Invalid(_))
        ));
        let parsed = GitLabInstance::parse("https://GitLab.example.com:8443/").unwrap();
        assert_eq!(parsed.host(), "gitlab.example.com");
    }
}
