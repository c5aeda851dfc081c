//! GitLab hook bodies for tests, shaped like the real ones (see the fixtures README).

use serde_json::{Value, json};

/// A project as a push payload describes it; `visibility_level` 0, 10 or 20.
#[derive(Debug, Clone)]
pub struct Project {
    pub id: i64,
    pub path: String,
    pub visibility_level: i64,
}

impl Project {
    pub fn new(id: i64, path: &str, visibility_level: i64) -> Self {
        Self {
            id,
            path: path.to_owned(),
            visibility_level,
        }
    }

    pub fn private(id: i64, path: &str) -> Self {
        Self::new(id, path, 0)
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.path.rsplit('/').next(),
            "path_with_namespace": self.path,
            "visibility_level": self.visibility_level,
            "web_url": format!("https://gitlab.example.com/{}", self.path),
            "git_http_url": format!("https://gitlab.example.com/{}.git", self.path),
        })
    }
}

/// A 40-character object id made of one repeated hex digit, or of a number.
pub fn sha(n: u64) -> String {
    format!("{n:040x}")
}

/// A push (or a tag push, for `refs/tags/…`) as GitLab's system hook sends it.
pub fn push(project: &Project, git_ref: &str, before: &str, after: &str) -> Value {
    let kind = if git_ref.starts_with("refs/tags/") {
        "tag_push"
    } else {
        "push"
    };
    json!({
        "object_kind": kind,
        "event_name": kind,
        "before": before,
        "after": after,
        "ref": git_ref,
        "checkout_sha": after,
        "user_id": 1,
        "user_name": "e2e",
        "project_id": project.id,
        "project": project.json(),
        "commits": [],
        "total_commits_count": 0,
    })
}

pub fn project_rename(project: &Project, old_path: &str) -> Value {
    json!({
        "event_name": "project_rename",
        "created_at": "2026-11-21T10:00:00Z",
        "updated_at": "2026-11-21T10:00:00Z",
        "name": project.path.rsplit('/').next(),
        "path": project.path.rsplit('/').next(),
        "path_with_namespace": project.path,
        "project_id": project.id,
        "owner_name": "e2e",
        "owner_email": "e2e@example.com",
        "owners": [],
        "project_visibility": match project.visibility_level { 20 => "public", 10 => "internal", _ => "private" },
        "old_path_with_namespace": old_path,
    })
}
