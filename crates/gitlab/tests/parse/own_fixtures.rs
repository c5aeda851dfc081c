//! The bodies in `tests/fixtures/gitlab/` (see the README there for their sources).

use fluxgate_core::{CatalogChange, EventKind, FullPath, ProjectId, Visibility};

use crate::support::{
    Push, ZERO, assert_pushes, catalog_change, ignored, own_fixture, project, records,
};

fn path(raw: &str) -> FullPath {
    FullPath::parse(raw).expect("valid path")
}

#[test]
fn system_hook_tag_push() {
    // `after` is the tag object, which differs from `checkout_sha` (the commit).
    let records = records(&own_fixture("system-hook-tag-push.json"));
    assert_pushes(
        &records,
        &[Push {
            project: project(1, "jsmith/example", Some(Visibility::Private)),
            git_ref: "refs/tags/v1.0.0",
            before: ZERO,
            after: "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
            kind: EventKind::TagPush,
        }],
    );
}

#[test]
fn project_tag_push_hook() {
    let records = records(&own_fixture("project-tag-push-hook.json"));
    assert_pushes(
        &records,
        &[Push {
            project: project(1, "jsmith/example", Some(Visibility::Private)),
            git_ref: "refs/tags/v1.0.0",
            before: ZERO,
            after: "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
            kind: EventKind::TagPush,
        }],
    );
}

#[test]
fn branch_creation_has_a_zero_before() {
    let records = records(&own_fixture("project-push-branch-created.json"));
    assert_pushes(
        &records,
        &[Push {
            project: project(4242, "platform/fleet-infra", Some(Visibility::Internal)),
            git_ref: "refs/heads/feature/new-ingest",
            before: ZERO,
            after: "57c79ae4f30cf4d1aa3c6821cb34a58c8c36b4da",
            kind: EventKind::Push,
        }],
    );
}

#[test]
fn branch_deletion_has_a_zero_after_and_no_checkout_sha() {
    let records = records(&own_fixture("system-hook-push-branch-deleted.json"));
    assert_pushes(
        &records,
        &[Push {
            project: project(4242, "platform/fleet-infra", Some(Visibility::Internal)),
            git_ref: "refs/heads/old-feature",
            before: "a650bba3a3c3da372dfc62b6fce9a2d46006054b",
            after: ZERO,
            kind: EventKind::Push,
        }],
    );
}

#[test]
fn push_of_57_commits_listing_20() {
    let records = records(&own_fixture("project-push-20-of-57-commits.json"));
    // The path keeps its spelling; `assert_pushes` compares it as written.
    assert_pushes(
        &records,
        &[Push {
            project: project(4242, "platform/Fleet-Infra", Some(Visibility::Public)),
            git_ref: "refs/heads/main",
            before: "818e015feb2e0f4164dbdff9dcfba781e78f4f86",
            after: "bf75e1a6b2fd8d2c36e9c1b46c0950c1278417c2",
            kind: EventKind::Push,
        }],
    );
}

#[test]
fn repository_update_yields_one_push_per_change_in_order() {
    let records = records(&own_fixture("system-hook-repository-update-3-changes.json"));
    let fleet = || project(4242, "platform/fleet-infra", Some(Visibility::Public));
    assert_pushes(
        &records,
        &[
            Push {
                project: fleet(),
                git_ref: "refs/heads/main",
                before: "efcdf506da2b285c599c6c782038986fa8425939",
                after: "a1cfb1dc8b7063e989314742c2cad9538d9b1200",
                kind: EventKind::Push,
            },
            Push {
                project: fleet(),
                git_ref: "refs/tags/v2.1.0",
                before: ZERO,
                after: "35d4c140fa58531ec73fcd32df7a262e98add1ff",
                kind: EventKind::TagPush,
            },
            Push {
                project: fleet(),
                git_ref: "refs/heads/old-feature",
                before: "269358b3d34616633881b05c6b05fcdd64c6f330",
                after: ZERO,
                kind: EventKind::Push,
            },
        ],
    );
}

#[test]
fn project_create() {
    assert_eq!(
        catalog_change(&own_fixture("system-hook-project-create.json")),
        CatalogChange::ProjectUpserted {
            project: project(74, "jsmith/storecloud", Some(Visibility::Private)),
        }
    );
}

#[test]
fn project_update() {
    assert_eq!(
        catalog_change(&own_fixture("system-hook-project-update.json")),
        CatalogChange::ProjectUpserted {
            project: project(74, "jsmith/storecloud", Some(Visibility::Private)),
        }
    );
}

#[test]
fn project_destroy() {
    assert_eq!(
        catalog_change(&own_fixture("system-hook-project-destroy.json")),
        CatalogChange::ProjectDestroyed {
            id: ProjectId::new(73).expect("positive"),
            path: path("jsmith/underscore"),
        }
    );
}

#[test]
fn project_rename() {
    assert_eq!(
        catalog_change(&own_fixture("system-hook-project-rename.json")),
        CatalogChange::ProjectRenamed {
            project: project(73, "jsmith/underscore", Some(Visibility::Internal)),
            old_path: path("jsmith/overscore"),
        }
    );
}

#[test]
fn project_transfer() {
    assert_eq!(
        catalog_change(&own_fixture("system-hook-project-transfer.json")),
        CatalogChange::ProjectRenamed {
            project: project(73, "scores/underscore", Some(Visibility::Internal)),
            old_path: path("jsmith/overscore"),
        }
    );
}

#[test]
fn group_rename() {
    assert_eq!(
        catalog_change(&own_fixture("system-hook-group-rename.json")),
        CatalogChange::GroupRenamed {
            old_path: path("parent-group/old-name"),
            new_path: path("parent-group/better-name"),
        }
    );
}

#[test]
fn merge_request_is_ignored() {
    // Its `changes` is an object; an ignored kind's fields are never validated.
    assert_eq!(
        ignored(&own_fixture("system-hook-merge-request.json")),
        "merge_request"
    );
}

#[test]
fn user_create_is_ignored() {
    assert_eq!(
        ignored(&own_fixture("system-hook-user-create.json")),
        "user_create"
    );
}
