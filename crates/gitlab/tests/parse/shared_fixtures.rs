//! The sample bodies in `shared/fixtures/gitlab/`, copied from GitLab's documentation.

use fluxgate_core::{EventKind, Visibility};

use crate::support::{Push, assert_pushes, project, records, shared_fixture};

#[test]
fn system_hook_push_in_the_documented_shape() {
    // No `object_kind`, no `project.id`: the id comes from the top-level `project_id`.
    let records = records(&shared_fixture("gitlab-system-hook-push.json"));
    assert_pushes(
        &records,
        &[Push {
            project: project(15, "mike/diaspora", Some(Visibility::Private)),
            git_ref: "refs/heads/master",
            before: "95790bf891e76fee5e1747ab589903a6a1f80f22",
            after: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            kind: EventKind::Push,
        }],
    );
}

#[test]
fn project_push_hook_with_truncated_commits() {
    // `object_kind` and `project.id` present; 2 commits listed out of 4 is irrelevant.
    let records = records(&shared_fixture("gitlab-project-push-hook.json"));
    assert_pushes(
        &records,
        &[Push {
            project: project(15, "mike/diaspora", Some(Visibility::Private)),
            git_ref: "refs/heads/master",
            before: "95790bf891e76fee5e1747ab589903a6a1f80f22",
            after: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            kind: EventKind::Push,
        }],
    );
}

#[test]
fn system_hook_repository_update_with_one_change() {
    let records = records(&shared_fixture("gitlab-system-hook-repository-update.json"));
    assert_pushes(
        &records,
        &[Push {
            project: project(1, "jsmith/example", Some(Visibility::Private)),
            git_ref: "refs/heads/master",
            before: "8205ea8d81ce0c6b90fbe8280d118cc9fdad6130",
            after: "4045ea7a3df38697b3730a20fb73c8bed8a3e69e",
            kind: EventKind::Push,
        }],
    );
}
