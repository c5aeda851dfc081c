//! The in-memory project catalog: ids, current paths, former paths (aliases), visibility.
//!
//! It is a mirror of the store's catalog, built from a snapshot and then kept current by
//! applying the effects recorded in the log. It makes no decisions of its own: the rules
//! (what a rename moves, who owns a reused path) live in the store, which records their
//! outcome as effects.

use std::collections::HashMap;

use fluxgate_core::{FullPath, ProjectId, ProjectRef, Visibility};

#[derive(Debug, Clone)]
struct Project {
    path: FullPath,
    visibility: Option<Visibility>,
}

/// What routing needs to know about an event's project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectView {
    pub id: ProjectId,
    /// The current path (the catalog's, or the event's if the catalog does not know it).
    pub path: FullPath,
    /// Unknown visibility is private.
    pub visibility: Visibility,
}

#[derive(Debug, Default, Clone)]
pub struct Catalog {
    projects: HashMap<ProjectId, Project>,
    /// Path key → the project that owns it.
    aliases: HashMap<String, ProjectId>,
    /// Project → every path key it owns (current and former).
    names: HashMap<ProjectId, Vec<String>>,
}

impl Catalog {
    pub fn set_project(&mut self, id: ProjectId, path: FullPath, visibility: Option<Visibility>) {
        self.set_alias(&path, id);
        self.projects.insert(id, Project { path, visibility });
    }

    /// `path` now names `id` (taking it from whichever project had it).
    pub fn set_alias(&mut self, path: &FullPath, id: ProjectId) {
        let key = path.key().to_owned();
        if let Some(previous) = self.aliases.insert(key.clone(), id)
            && previous != id
            && let Some(names) = self.names.get_mut(&previous)
        {
            names.retain(|name| name != &key);
        }
        let names = self.names.entry(id).or_default();
        if !names.contains(&key) {
            names.push(key);
        }
    }

    pub fn remove_project(&mut self, id: ProjectId) {
        self.projects.remove(&id);
        for key in self.names.remove(&id).unwrap_or_default() {
            self.aliases.remove(&key);
        }
    }

    /// The project a path names today, if the catalog knows it.
    pub fn resolve(&self, path: &FullPath) -> Option<ProjectId> {
        self.resolve_key(path.key())
    }

    /// [`Self::resolve`] by path key.
    pub fn resolve_key(&self, key: &str) -> Option<ProjectId> {
        self.aliases.get(key).copied()
    }

    /// Every path key that names `id`.
    pub fn names_of(&self, id: ProjectId) -> &[String] {
        self.names.get(&id).map_or(&[], Vec::as_slice)
    }

    /// The catalog's view of an event's project, falling back to what the event says.
    pub fn view(&self, project: &ProjectRef) -> ProjectView {
        match self.projects.get(&project.id) {
            Some(known) => ProjectView {
                id: project.id,
                path: known.path.clone(),
                visibility: known.visibility.unwrap_or(Visibility::Private),
            },
            None => ProjectView {
                id: project.id,
                path: project.path.clone(),
                visibility: project.visibility.unwrap_or(Visibility::Private),
            },
        }
    }

    pub fn len(&self) -> usize {
        self.projects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.projects.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> FullPath {
        FullPath::parse(s).unwrap()
    }

    fn id(n: i64) -> ProjectId {
        ProjectId::new(n).unwrap()
    }

    #[test]
    fn former_paths_keep_naming_a_project_until_taken() {
        let mut catalog = Catalog::default();
        catalog.set_project(id(1), p("team/app"), Some(Visibility::Private));
        catalog.set_project(id(1), p("team/app2"), Some(Visibility::Private));
        assert_eq!(catalog.resolve(&p("TEAM/APP")), Some(id(1)));
        assert_eq!(catalog.resolve(&p("team/app2")), Some(id(1)));

        catalog.set_project(id(2), p("team/app"), None);
        assert_eq!(catalog.resolve(&p("team/app")), Some(id(2)));
        assert_eq!(catalog.names_of(id(1)), ["team/app2"]);
    }

    #[test]
    fn removing_a_project_drops_its_aliases() {
        let mut catalog = Catalog::default();
        catalog.set_project(id(1), p("a/b"), None);
        catalog.set_alias(&p("a/old"), id(1));
        catalog.remove_project(id(1));
        assert_eq!(catalog.resolve(&p("a/b")), None);
        assert_eq!(catalog.resolve(&p("a/old")), None);
        assert!(catalog.is_empty());
    }

    #[test]
    fn unknown_visibility_is_private() {
        let mut catalog = Catalog::default();
        catalog.set_project(id(1), p("a/b"), None);
        let view = catalog.view(&ProjectRef {
            id: id(1),
            path: p("a/b"),
            visibility: Some(Visibility::Public),
        });
        assert_eq!(view.visibility, Visibility::Private);
    }
}
