//! The project catalog: what payloads and system events teach, resolved into effects.
//!
//! These are the rules, in one place:
//! - a project is known by id; its current path is also an alias of it, and former paths
//!   stay aliases until another project takes them;
//! - a project that moves (rename, transfer, or a push payload under a new path) takes its
//!   grants with it: agents granted the old path, or configured with it, now have the new;
//! - a group rename moves every project below it, and every grant below it;
//! - a visibility the payload does not state is left as it was.

use fluxgate_core::{
    CatalogChange, FullPath, ProjectId, ProjectRef, StateEffect, UnixMillis, Visibility,
};
use fluxgate_core::{HookBatch, NewRecord};
use sqlx::AnyConnection;

use std::collections::HashMap;

use super::{agents, rows};
use crate::error::StoreError;
use crate::model::CatalogProject;

/// Applies a GitLab system event and returns the effects.
pub(super) async fn apply(
    conn: &mut AnyConnection,
    projects: &mut ProjectCache,
    change: &CatalogChange,
    now: UnixMillis,
) -> Result<Vec<StateEffect>, StoreError> {
    match change {
        CatalogChange::ProjectUpserted { project } => observe(conn, projects, project, now).await,
        CatalogChange::ProjectRenamed { project, old_path } => {
            let known_path = projects.get(conn, project.id).await?.map(|p| p.path);
            let mut effects = Vec::new();
            if old_path != &project.path {
                put_alias(conn, old_path, project.id).await?;
                effects.push(StateEffect::Alias {
                    path: old_path.clone(),
                    project: project.id,
                });
            }
            effects.extend(observe(conn, projects, project, now).await?);
            // `observe` moved grants from the path we knew; also move them from the path
            // GitLab says it had, if that is a different one.
            if known_path.as_ref() != Some(old_path) && old_path != &project.path {
                effects.extend(
                    agents::follow_move(conn, now, |p| {
                        p.follow_project_move(old_path, &project.path)
                    })
                    .await?,
                );
            }
            Ok(effects)
        }
        CatalogChange::ProjectDestroyed { id, .. } => {
            sqlx::query("DELETE FROM projects WHERE id = $1")
                .bind(id.get())
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM project_aliases WHERE project_id = $1")
                .bind(id.get())
                .execute(&mut *conn)
                .await?;
            projects.forget(*id);
            Ok(vec![StateEffect::ProjectRemoved { id: *id }])
        }
        CatalogChange::GroupRenamed { old_path, new_path } => {
            let mut effects = Vec::new();
            for project in load_within(conn, old_path).await? {
                let Some(moved) = project.path.rebase(old_path, new_path) else {
                    continue;
                };
                put_project(conn, projects, project.id, &moved, project.visibility).await?;
                effects.push(StateEffect::Project {
                    id: project.id,
                    path: moved,
                    visibility: project.visibility,
                });
            }
            effects.extend(
                agents::follow_move(conn, now, |p| p.follow_group_move(old_path, new_path)).await?,
            );
            Ok(effects)
        }
    }
}

/// Learns what a payload says about a project. Returns no effects if nothing is new.
pub(super) async fn observe(
    conn: &mut AnyConnection,
    projects: &mut ProjectCache,
    project: &ProjectRef,
    now: UnixMillis,
) -> Result<Vec<StateEffect>, StoreError> {
    let known = projects.get(conn, project.id).await?;
    let visibility = project
        .visibility
        .or(known.as_ref().and_then(|k| k.visibility));
    let unchanged = known
        .as_ref()
        .is_some_and(|k| k.path.as_str() == project.path.as_str() && k.visibility == visibility);
    if unchanged {
        return Ok(Vec::new());
    }
    put_project(conn, projects, project.id, &project.path, visibility).await?;
    let mut effects = vec![StateEffect::Project {
        id: project.id,
        path: project.path.clone(),
        visibility,
    }];
    if let Some(known) = known
        && known.path != project.path
    {
        effects.extend(
            agents::follow_move(conn, now, |p| {
                p.follow_project_move(&known.path, &project.path)
            })
            .await?,
        );
    }
    Ok(effects)
}

/// The projects one transaction has read or written, so a batch of pushes to the same
/// project reads it once. Valid only inside the transaction: the log lock keeps other
/// writers out meanwhile.
#[derive(Default)]
pub(super) struct ProjectCache {
    known: HashMap<ProjectId, Option<CatalogProject>>,
}

/// The projects the pushes of `hooks` name, each once.
pub(super) fn projects_named(hooks: &[HookBatch]) -> Vec<ProjectId> {
    let mut ids: Vec<ProjectId> = hooks
        .iter()
        .flat_map(|hook| &hook.records)
        .filter_map(|record| match record {
            NewRecord::Push(event) => Some(event.project.id),
            NewRecord::Catalog(_) => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

impl ProjectCache {
    async fn get(
        &mut self,
        conn: &mut AnyConnection,
        id: ProjectId,
    ) -> Result<Option<CatalogProject>, StoreError> {
        if let Some(known) = self.known.get(&id) {
            return Ok(known.clone());
        }
        let row = sqlx::query("SELECT id, path, visibility FROM projects WHERE id = $1")
            .bind(id.get())
            .fetch_optional(&mut *conn)
            .await?;
        let project = row.map(|row| project_from_row(&row)).transpose()?;
        self.known.insert(id, project.clone());
        Ok(project)
    }

    pub(super) fn remember(&mut self, project: CatalogProject) {
        self.known.insert(project.id, Some(project));
    }

    /// Records that the catalog has no project `id` (until this transaction adds it).
    pub(super) fn forget(&mut self, id: ProjectId) {
        self.known.insert(id, None);
    }
}

async fn load_within(
    conn: &mut AnyConnection,
    group: &FullPath,
) -> Result<Vec<CatalogProject>, StoreError> {
    let prefix = format!("{}/%", escape_like(group.key()));
    let found = sqlx::query("SELECT id, path, visibility FROM projects WHERE path_key = $1 OR path_key LIKE $2 ESCAPE '\\'")
        .bind(group.key())
        .bind(prefix)
        .fetch_all(&mut *conn)
        .await?;
    found.iter().map(project_from_row).collect()
}

fn escape_like(raw: &str) -> String {
    raw.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

fn project_from_row(row: &sqlx::any::AnyRow) -> Result<CatalogProject, StoreError> {
    Ok(CatalogProject {
        id: rows::project_id(row, "id")?,
        path: rows::path(row, "path")?,
        visibility: rows::visibility(row, "visibility")?,
    })
}

async fn put_project(
    conn: &mut AnyConnection,
    projects: &mut ProjectCache,
    id: ProjectId,
    path: &FullPath,
    visibility: Option<Visibility>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO projects (id, path, path_key, visibility) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET path = excluded.path, path_key = excluded.path_key, \
         visibility = excluded.visibility",
    )
    .bind(id.get())
    .bind(path.as_str())
    .bind(path.key())
    .bind(visibility.map(Visibility::as_str))
    .execute(&mut *conn)
    .await?;
    projects.remember(CatalogProject {
        id,
        path: path.clone(),
        visibility,
    });
    put_alias(conn, path, id).await
}

async fn put_alias(
    conn: &mut AnyConnection,
    path: &FullPath,
    id: ProjectId,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO project_aliases (path_key, path, project_id) VALUES ($1, $2, $3) \
         ON CONFLICT (path_key) DO UPDATE SET path = excluded.path, project_id = excluded.project_id",
    )
    .bind(path.key())
    .bind(path.as_str())
    .bind(id.get())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Every project and every alias, for a snapshot.
pub(super) async fn load_all(
    conn: &mut AnyConnection,
) -> Result<(Vec<CatalogProject>, Vec<(FullPath, ProjectId)>), StoreError> {
    let projects = sqlx::query("SELECT id, path, visibility FROM projects ORDER BY id")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(project_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let aliases = sqlx::query("SELECT path, project_id FROM project_aliases ORDER BY path_key")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| {
            Ok((
                rows::path(row, "path")?,
                rows::project_id(row, "project_id")?,
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok((projects, aliases))
}
