//! A realistic push body (about 3 KB, like a small push with a few commits).

use fluxgate_e2e::harness::Project;
use fluxgate_e2e::harness::payloads::{push, sha};
use serde_json::{Value, json};

/// A push of three commits to `git_ref`, `after` encoding `n`.
pub fn push_body(project: &Project, git_ref: &str, n: u64) -> Value {
    let mut body = push(project, git_ref, &sha(n), &sha(n + 1));
    let commits: Vec<Value> = (0..3)
        .map(|c| {
            json!({
                "id": sha(n * 10 + c),
                "message": "Update the deployment manifests for the payments service\n\nBumps the image tag and adjusts resource limits after the load test.",
                "title": "Update the deployment manifests for the payments service",
                "timestamp": "2026-11-21T10:00:00+00:00",
                "url": format!("https://gitlab.example.com/{}/-/commit/{}", project.path, sha(n * 10 + c)),
                "author": {"name": "Jane Doe", "email": "[REDACTED]"},
                "added": ["apps/payments/hpa.yaml"],
                "modified": ["apps/payments/deployment.yaml", "apps/payments/kustomization.yaml", "apps/payments/values.yaml"],
                "removed": [],
            })
        })
        .collect();
    body["commits"] = Value::Array(commits);
    body["total_commits_count"] = json!(3);
    body
}

/// Reads `n` back from an event's `after`.
pub fn number_of(after: &str) -> Option<u64> {
    u64::from_str_radix(after, 16)
        .ok()
        .map(|n| n.saturating_sub(1))
}
