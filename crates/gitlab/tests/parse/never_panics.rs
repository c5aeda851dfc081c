//! Property tests: `parse_hook` always returns, and what it returns is well formed.

use fluxgate_core::NewRecord;
use fluxgate_gitlab::{ParseError, ParsedHook, parse_hook};
use proptest::prelude::*;
use serde_json::Value;

use crate::support::{RECEIVED_AT, ZERO, body, fixture_json, own_fixture, shared_fixture};

/// Valid bodies the mutations start from.
fn bases() -> Vec<Value> {
    vec![
        fixture_json(&shared_fixture("gitlab-system-hook-push.json")),
        fixture_json(&shared_fixture("gitlab-project-push-hook.json")),
        fixture_json(&shared_fixture("gitlab-system-hook-repository-update.json")),
        fixture_json(&own_fixture("system-hook-project-rename.json")),
        fixture_json(&own_fixture("system-hook-group-rename.json")),
    ]
}

/// Where mutations land (JSON pointers); those absent from a base are added there.
const POINTERS: &[&str] = &[
    "/object_kind",
    "/event_name",
    "/ref",
    "/before",
    "/after",
    "/checkout_sha",
    "/project_id",
    "/project",
    "/project/id",
    "/project/path_with_namespace",
    "/project/visibility_level",
    "/commits",
    "/commits/0",
    "/commits/0/id",
    "/total_commits_count",
    "/changes",
    "/changes/0",
    "/changes/0/ref",
    "/changes/0/before",
    "/changes/0/after",
    "/path_with_namespace",
    "/project_visibility",
    "/old_path_with_namespace",
    "/full_path",
    "/old_full_path",
];

#[derive(Debug, Clone)]
enum Edit {
    Remove(usize),
    Set(usize, Value),
}

fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "push",
            "tag_push",
            "repository_update",
            "project_create",
            "project_update",
            "project_destroy",
            "project_rename",
            "project_transfer",
            "group_rename",
            "merge_request",
            ZERO,
            "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            "refs/heads/main",
            "refs/tags/v1.0.0",
            "group/sub/project",
            "https://gitlab.example.com/group/app.git",
            "mike/../diaspora",
            "",
            " ",
            "private",
            "public",
        ])
        .prop_map(String::from),
        "[a-zA-Z0-9/ ._:@-]{0,24}",
        any::<String>(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-2i64..=25).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        interesting_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn edit() -> impl Strategy<Value = Edit> {
    let at = 0..POINTERS.len();
    prop_oneof![
        at.clone().prop_map(Edit::Remove),
        (at, json_value()).prop_map(|(index, value)| Edit::Set(index, value)),
    ]
}

fn apply(root: &mut Value, edit: &Edit) {
    let index = match edit {
        Edit::Remove(index) | Edit::Set(index, _) => *index,
    };
    let Some((parent, key)) = POINTERS[index].rsplit_once('/') else {
        return;
    };
    match (root.pointer_mut(parent), edit) {
        (Some(Value::Object(map)), Edit::Remove(_)) => {
            map.remove(key);
        }
        (Some(Value::Object(map)), Edit::Set(_, value)) => {
            map.insert(key.to_owned(), value.clone());
        }
        (Some(Value::Array(items)), edit) => match (key.parse::<usize>(), edit) {
            (Ok(i), Edit::Remove(_)) if i < items.len() => {
                items.remove(i);
            }
            (Ok(i), Edit::Set(_, value)) if i < items.len() => items[i] = value.clone(),
            _ => {}
        },
        _ => {}
    }
}

/// What any result must look like: records stamped with the receipt time, a bounded
/// kind label, or a message that names a field or the body.
fn assert_well_formed(result: &Result<ParsedHook, ParseError>) {
    match result {
        Ok(ParsedHook::Records { records, .. }) => {
            assert!(!records.is_empty(), "no records: {result:?}");
            for record in records {
                if let NewRecord::Push(event) = record {
                    assert_eq!(event.received_at, RECEIVED_AT);
                }
            }
        }
        Ok(ParsedHook::Ignored { kind }) => {
            let kind = kind.as_str();
            assert!(!kind.is_empty() && kind.len() <= 64, "kind {kind:?}");
        }
        Err(error) => {
            let message = &error.message;
            assert!(
                message.starts_with("field `")
                    || message.starts_with("fields `")
                    || message.starts_with("body "),
                "message {message:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        assert_well_formed(&parse_hook(&bytes, RECEIVED_AT));
    }

    #[test]
    fn arbitrary_json_values(value in json_value()) {
        assert_well_formed(&parse_hook(&body(&value), RECEIVED_AT));
    }

    #[test]
    fn fixtures_with_fields_removed_or_replaced(
        base in 0..5usize,
        edits in prop::collection::vec(edit(), 1..8),
    ) {
        let mut value = bases().swap_remove(base);
        for edit in &edits {
            apply(&mut value, edit);
        }
        assert_well_formed(&parse_hook(&body(&value), RECEIVED_AT));
    }

    #[test]
    fn truncated_fixtures(base in 0..5usize, cut in any::<prop::sample::Index>()) {
        let full = body(&bases().swap_remove(base));
        let cut = cut.index(full.len());
        let result = parse_hook(&full[..cut], RECEIVED_AT);
        match result {
            Err(error) => prop_assert!(
                error.message.starts_with("body is not valid JSON: "),
                "{}", error.message
            ),
            Ok(parsed) => prop_assert!(false, "a truncated body parsed: {parsed:?}"),
        }
    }
}
