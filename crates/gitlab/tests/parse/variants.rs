//! Variations of valid bodies: what is accepted, how optional fields read, and which
//! bodies are ignored rather than rejected.

use fluxgate_core::NewRecord;
use fluxgate_core::{CatalogChange, EventKind, Visibility};
use serde_json::{Value, json};

use crate::support::{
    Push, ZERO, assert_pushes, body, catalog_change, fixture_json, ignored, own_fixture, project,
    records, shared_fixture,
};

fn project_push(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut value = fixture_json(&shared_fixture("gitlab-project-push-hook.json"));
    edit(&mut value);
    body(&value)
}

fn only_push(body: &[u8]) -> fluxgate_core::PushEvent {
    match records(body).as_slice() {
        [NewRecord::Push(event)] => event.clone(),
        other => panic!("expected one push, got {other:?}"),
    }
}

#[test]
fn visibility_levels() {
    let cases = [
        (json!(0), Some(Visibility::Private)),
        (json!(10), Some(Visibility::Internal)),
        (json!(20), Some(Visibility::Public)),
        (json!(15), None),
        (json!("20"), None),
        (Value::Null, None),
    ];
    for (level, want) in cases {
        let event = only_push(&project_push(|v| {
            v["project"]["visibility_level"] = level.clone()
        }));
        assert_eq!(event.project.visibility, want, "visibility_level {level}");
    }
    let event = only_push(&project_push(|v| {
        v["project"]
            .as_object_mut()
            .expect("object")
            .remove("visibility_level");
    }));
    assert_eq!(event.project.visibility, None, "visibility_level absent");
}

#[test]
fn project_visibility_names() {
    let cases = [
        (json!("Public"), Some(Visibility::Public)),
        (json!("internal"), Some(Visibility::Internal)),
        (json!("secret"), None),
        (json!(20), None),
        (Value::Null, None),
    ];
    for (name, want) in cases {
        let mut value = fixture_json(&own_fixture("system-hook-project-create.json"));
        value["project_visibility"] = name.clone();
        let CatalogChange::ProjectUpserted { project } = catalog_change(&body(&value)) else {
            panic!("expected an upsert");
        };
        assert_eq!(project.visibility, want, "project_visibility {name}");
    }
}

#[test]
fn sha256_and_upper_case_object_ids() {
    let long = "AB".repeat(32);
    let event = only_push(&project_push(|v| {
        v["before"] = json!(long);
        v["after"] = json!("DA1560886D4F094C3E6C9EF40349F7D38B5D27D7");
    }));
    assert_eq!(event.before.as_str(), "ab".repeat(32));
    assert_eq!(
        event.after.as_str(),
        "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
    );
}

#[test]
fn kind_follows_the_ref_not_the_object_kind() {
    let event = only_push(&project_push(|v| v["ref"] = json!("refs/tags/v9")));
    assert_eq!(event.kind, EventKind::TagPush);
}

#[test]
fn null_nested_id_falls_back_to_project_id() {
    let event = only_push(&project_push(|v| v["project"]["id"] = Value::Null));
    assert_eq!(event.project.id.get(), 15);
}

#[test]
fn nested_id_alone_is_enough() {
    let event = only_push(&project_push(|v| {
        v.as_object_mut().expect("object").remove("project_id");
    }));
    assert_eq!(event.project.id.get(), 15);
}

#[test]
fn missing_checkout_sha_commits_and_repository_are_fine() {
    let records = records(&project_push(|v| {
        let object = v.as_object_mut().expect("object");
        for key in [
            "checkout_sha",
            "commits",
            "total_commits_count",
            "repository",
        ] {
            object.remove(key);
        }
    }));
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
fn large_body_of_commits_is_skipped() {
    let commit =
        fixture_json(&shared_fixture("gitlab-project-push-hook.json"))["commits"][0].clone();
    let records = records(&project_push(|v| {
        v["commits"] = Value::Array(vec![commit; 5_000]);
        v["before"] = json!(ZERO);
    }));
    assert_eq!(records.len(), 1);
}

/// A push body whose `field` is an array nested `depth` deep (built as text: a
/// `serde_json::Value` that deep would overflow the stack when dropped).
fn deeply_nested(field: &str, depth: usize) -> Vec<u8> {
    let zero = format!("\"{ZERO}\"");
    let fields = [
        ("object_kind", "\"push\""),
        ("ref", "\"refs/heads/main\""),
        ("before", zero.as_str()),
        ("after", zero.as_str()),
        ("project_id", "15"),
        ("project", r#"{"path_with_namespace":"a/b"}"#),
    ];
    let mut text = String::from("{");
    for (name, value) in fields.iter().filter(|(name, _)| *name != field) {
        text.push_str(&format!("\"{name}\":{value},"));
    }
    text.push_str(&format!("\"{field}\":"));
    text.push_str(&"[".repeat(depth));
    text.push_str(&"]".repeat(depth));
    text.push('}');
    text.into_bytes()
}

#[test]
fn deep_nesting_in_skipped_and_scalar_fields() {
    // serde_json skips values without recursing, so depth costs no stack.
    assert_eq!(records(&deeply_nested("commits", 100_000)).len(), 1);
    assert_eq!(
        crate::support::error(&deeply_nested("ref", 100_000)),
        "field `ref` must be a string, found an array"
    );
}

#[test]
fn repository_update_without_changes_is_ignored() {
    let mut value = fixture_json(&own_fixture("system-hook-repository-update-3-changes.json"));
    value["changes"] = json!([]);
    assert_eq!(ignored(&body(&value)), "repository_update");
}

#[test]
fn bodies_without_a_kind_are_ignored() {
    assert_eq!(ignored(b"{}"), "unknown");
    assert_eq!(ignored(b" \n{\"event_name\": 7}"), "unknown");
    assert_eq!(ignored(b"{\"ref\": \"refs/heads/main\"}"), "unknown");
}

#[test]
fn uninteresting_kinds_are_ignored_whatever_their_fields() {
    assert_eq!(
        ignored(br#"{"object_kind": "pipeline", "ref": 5, "project": "x", "changes": {}}"#),
        "pipeline"
    );
    assert_eq!(
        ignored(br#"{"event_name": "user_destroy", "project_id": -1}"#),
        "user_destroy"
    );
    assert_eq!(
        ignored(br#"{"object_kind": "gitlab_subscription_member_approval", "action": "enqueue"}"#),
        "gitlab_subscription_member_approval"
    );
}

#[test]
fn hostile_kind_labels_are_reported_as_unknown() {
    let long = format!(r#"{{"event_name": "{}"}}"#, "x".repeat(100));
    assert_eq!(ignored(long.as_bytes()), "unknown");
    assert_eq!(ignored(br#"{"object_kind": "push\nfake=1"}"#), "unknown");
}

#[test]
fn system_events_are_read_from_event_name_only() {
    let mut value = fixture_json(&own_fixture("system-hook-project-create.json"));
    value["object_kind"] = json!("project_create");
    assert_eq!(ignored(&body(&value)), "project_create");
    let mut value = fixture_json(&own_fixture("system-hook-repository-update-3-changes.json"));
    value["object_kind"] = json!("repository_update");
    assert_eq!(ignored(&body(&value)), "repository_update");
}

#[test]
fn records_carry_the_kind_that_produced_them() {
    use fluxgate_gitlab::{KnownKind, ParsedHook, parse_hook};
    let cases = [
        (
            shared_fixture("gitlab-project-push-hook.json"),
            KnownKind::Push,
        ),
        (
            own_fixture("system-hook-repository-update-3-changes.json"),
            KnownKind::RepositoryUpdate,
        ),
        (
            own_fixture("system-hook-project-transfer.json"),
            KnownKind::ProjectTransfer,
        ),
        (
            own_fixture("system-hook-group-rename.json"),
            KnownKind::GroupRename,
        ),
    ];
    for (body, want) in cases {
        match parse_hook(&body, crate::support::RECEIVED_AT) {
            Ok(parsed @ ParsedHook::Records { kind, .. }) => {
                assert_eq!(kind, want);
                assert_eq!(parsed.kind(), want.as_str());
            }
            other => panic!("expected records of {want}, got {other:?}"),
        }
    }
}
