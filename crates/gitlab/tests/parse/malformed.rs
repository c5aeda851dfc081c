//! Bodies that must be rejected, with the exact message each gets (it becomes the 400
//! body GitLab shows in its delivery log).

use serde_json::{Value, json};

use crate::support::{body, error, fixture_json, own_fixture, shared_fixture};

/// The documented system-hook push (no `project.id`) with `edit` applied.
fn system_push(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut value = fixture_json(&shared_fixture("gitlab-system-hook-push.json"));
    edit(&mut value);
    body(&value)
}

/// The project-hook push (with `project.id`) with `edit` applied.
fn project_push(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut value = fixture_json(&shared_fixture("gitlab-project-push-hook.json"));
    edit(&mut value);
    body(&value)
}

fn own(name: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut value = fixture_json(&own_fixture(name));
    edit(&mut value);
    body(&value)
}

fn remove(value: &mut Value, key: &str) {
    value.as_object_mut().expect("object").remove(key);
}

mod not_a_json_object {
    use super::*;

    #[test]
    fn empty_body() {
        assert_eq!(
            error(b""),
            "body is not valid JSON: EOF while parsing a value at line 1 column 0"
        );
    }

    #[test]
    fn truncated_object() {
        assert_eq!(
            error(b"{\"event_name\": \"push\",\n  \"ref\": "),
            "body is not valid JSON: EOF while parsing a value at line 2 column 9"
        );
    }

    #[test]
    fn syntax_error_deep_inside_commits() {
        let mut text =
            String::from_utf8(shared_fixture("gitlab-project-push-hook.json")).expect("utf-8");
        text = text.replace("\"removed\": []", "\"removed\": [,]");
        assert_eq!(
            error(text.as_bytes()),
            "body is not valid JSON: expected value at line 54 column 19"
        );
    }

    #[test]
    fn trailing_characters() {
        assert_eq!(
            error(b"{\"event_name\":\"user_create\"} {}"),
            "body is not valid JSON: trailing characters at line 1 column 30"
        );
    }

    #[test]
    fn array() {
        assert_eq!(
            error(b"[{\"event_name\":\"push\"}]"),
            "body is not a JSON object: invalid type: sequence, expected an object at line 1 column 0"
        );
    }

    #[test]
    fn string() {
        assert_eq!(
            error(b"  \"push\""),
            "body is not a JSON object: invalid type: string \"push\", expected an object at line 1 column 8"
        );
    }

    #[test]
    fn null() {
        assert_eq!(
            error(b"null"),
            "body is not a JSON object: invalid type: null, expected an object at line 1 column 4"
        );
    }

    #[test]
    fn duplicate_key() {
        assert_eq!(
            error(b"{\"event_name\":\"push\",\"event_name\":\"push\"}"),
            "body is invalid: duplicate field `event_name` at line 1 column 33"
        );
    }
}

mod push_fields {
    use super::*;

    #[test]
    fn missing_ref() {
        assert_eq!(
            error(&project_push(|v| remove(v, "ref"))),
            "field `ref` is missing"
        );
    }

    #[test]
    fn null_ref() {
        assert_eq!(
            error(&project_push(|v| v["ref"] = Value::Null)),
            "field `ref` must be a string, found null"
        );
    }

    #[test]
    fn ref_with_a_space() {
        assert_eq!(
            error(&project_push(|v| v["ref"] = json!("refs/heads/my branch"))),
            "field `ref` is not a valid git ref: ref \"refs/heads/my branch\" is invalid: it contains a control character, a space, or one of `~`, `^`, `:`, `?`, `*`, `[`, `\\`"
        );
    }

    #[test]
    fn refs_git_refuses_or_that_are_not_full() {
        for (raw, reason) in [
            ("refs/heads/../x", "it contains `..`"),
            ("HEAD", "it has a single component"),
            ("master", "it has a single component"),
            (
                "refs/heads/",
                "it has an empty component (`//`, or a leading or trailing `/`)",
            ),
            (
                "refs/heads",
                "it is not a full ref under `refs/` (such as `refs/heads/main` or `refs/tags/v1`)",
            ),
            ("refs/heads/main.lock", "a component ends with `.lock`"),
            ("refs/heads/a@{1}", "it contains `@{`"),
        ] {
            assert_eq!(
                error(&project_push(|v| v["ref"] = json!(raw))),
                format!("field `ref` is not a valid git ref: ref {raw:?} is invalid: {reason}")
            );
        }
    }

    #[test]
    fn empty_ref() {
        assert_eq!(
            error(&project_push(|v| v["ref"] = json!(""))),
            "field `ref` is not a valid git ref: ref is empty"
        );
    }

    #[test]
    fn missing_before() {
        assert_eq!(
            error(&system_push(|v| remove(v, "before"))),
            "field `before` is missing"
        );
    }

    #[test]
    fn bad_after() {
        assert_eq!(
            error(&project_push(|v| v["after"] = json!("xyz"))),
            "field `after` is not a git object id: object id \"xyz\" is not 40 or 64 hexadecimal characters"
        );
    }

    #[test]
    fn after_of_41_characters() {
        let sha = "a".repeat(41);
        assert_eq!(
            error(&project_push(|v| v["after"] = json!(sha))),
            format!(
                "field `after` is not a git object id: object id \"{sha}\" is not 40 or 64 hexadecimal characters"
            )
        );
    }

    #[test]
    fn numeric_before() {
        assert_eq!(
            error(&project_push(|v| v["before"] = json!(12))),
            "field `before` must be a string, found 12"
        );
    }

    #[test]
    fn ref_as_an_object() {
        assert_eq!(
            error(&project_push(|v| v["ref"] = json!({"name": "main"}))),
            "field `ref` must be a string, found an object"
        );
    }
}

mod project_ids {
    use super::*;

    #[test]
    fn nested_id_zero() {
        assert_eq!(
            error(&project_push(|v| v["project"]["id"] = json!(0))),
            "field `project.id` must be a positive integer, found 0"
        );
    }

    #[test]
    fn top_level_id_negative() {
        assert_eq!(
            error(&system_push(|v| v["project_id"] = json!(-15))),
            "field `project_id` must be a positive integer, found -15"
        );
    }

    #[test]
    fn top_level_id_as_a_string() {
        assert_eq!(
            error(&system_push(|v| v["project_id"] = json!("15"))),
            "field `project_id` must be a positive integer, found \"15\""
        );
    }

    #[test]
    fn nested_id_as_a_fraction() {
        assert_eq!(
            error(&project_push(|v| v["project"]["id"] = json!(15.5))),
            "field `project.id` must be a positive integer, found 15.5"
        );
    }

    #[test]
    fn id_beyond_i64() {
        assert_eq!(
            error(&system_push(|v| v["project_id"] = json!(u64::MAX))),
            "field `project_id` must be a positive integer, found 18446744073709551615"
        );
    }

    #[test]
    fn both_ids_missing() {
        assert_eq!(
            error(&system_push(|v| remove(v, "project_id"))),
            "field `project_id` is missing, and so is `project.id`"
        );
    }

    #[test]
    fn ids_that_disagree() {
        assert_eq!(
            error(&project_push(|v| v["project_id"] = json!(16))),
            "fields `project.id` (15) and `project_id` (16) disagree"
        );
    }
}

mod project_object {
    use super::*;

    #[test]
    fn path_with_a_space() {
        assert_eq!(
            error(&project_push(
                |v| v["project"]["path_with_namespace"] = json!("mike/dias pora")
            )),
            "field `project.path_with_namespace` is not a valid GitLab path: path \"mike/dias pora\" has a forbidden character ' '"
        );
    }

    #[test]
    fn path_with_a_dot_dot_segment() {
        assert_eq!(
            error(&project_push(
                |v| v["project"]["path_with_namespace"] = json!("mike/../diaspora")
            )),
            "field `project.path_with_namespace` is not a valid GitLab path: path \"mike/../diaspora\" has a '.' or '..' segment"
        );
    }

    #[test]
    fn missing_path() {
        assert_eq!(
            error(&project_push(|v| remove(
                &mut v["project"],
                "path_with_namespace"
            ))),
            "field `project.path_with_namespace` is missing"
        );
    }

    #[test]
    fn missing_project_object() {
        assert_eq!(
            error(&project_push(|v| remove(v, "project"))),
            "field `project.path_with_namespace` is missing"
        );
    }

    #[test]
    fn project_as_a_string() {
        let message = error(&system_push(|v| v["project"] = json!("mike/diaspora")));
        assert!(
            message.starts_with(
                "field `project` is invalid: invalid type: string \"mike/diaspora\", expected an object at line 1 column "
            ),
            "{message}"
        );
    }

    #[test]
    fn project_as_an_array() {
        // An array is not read field by field, in order, as serde's derive would allow.
        let message = error(&system_push(|v| {
            v["project"] = json!([15, "mike/diaspora", 0]);
        }));
        assert!(
            message.starts_with(
                "field `project` is invalid: invalid type: sequence, expected an object at line 1 column "
            ),
            "{message}"
        );
    }
}

mod repository_update_fields {
    use super::*;

    const NAME: &str = "system-hook-repository-update-3-changes.json";

    #[test]
    fn missing_changes() {
        assert_eq!(
            error(&own(NAME, |v| remove(v, "changes"))),
            "field `changes` is missing"
        );
    }

    #[test]
    fn changes_as_an_object() {
        let message = error(&own(NAME, |v| {
            v["changes"] = json!({"ref": "refs/heads/main"})
        }));
        assert!(
            message.starts_with(
                "field `changes` is invalid: invalid type: map, expected a sequence at line 1 column "
            ),
            "{message}"
        );
    }

    #[test]
    fn change_that_is_not_an_object() {
        let message = error(&own(NAME, |v| v["changes"][1] = json!("refs/tags/v2.1.0")));
        assert!(
            message.starts_with(
                "field `changes[1]` is invalid: invalid type: string \"refs/tags/v2.1.0\", expected an object at line 1 column "
            ),
            "{message}"
        );
    }

    #[test]
    fn bad_after_in_the_third_change() {
        assert_eq!(
            error(&own(NAME, |v| v["changes"][2]["after"] = json!("deleted"))),
            "field `changes[2].after` is not a git object id: object id \"deleted\" is not 40 or 64 hexadecimal characters"
        );
    }

    #[test]
    fn invalid_ref_in_the_second_change() {
        assert_eq!(
            error(&own(NAME, |v| v["changes"][1]["ref"] = json!("refs/tags/.v2"))),
            "field `changes[1].ref` is not a valid git ref: ref \"refs/tags/.v2\" is invalid: a component starts with `.`"
        );
    }

    #[test]
    fn missing_ref_in_the_first_change() {
        assert_eq!(
            error(&own(NAME, |v| remove(&mut v["changes"][0], "ref"))),
            "field `changes[0].ref` is missing"
        );
    }

    #[test]
    fn project_id_zero() {
        assert_eq!(
            error(&own(NAME, |v| v["project_id"] = json!(0))),
            "field `project_id` must be a positive integer, found 0"
        );
    }
}

mod system_event_fields {
    use super::*;

    #[test]
    fn project_create_without_project_id() {
        assert_eq!(
            error(&own("system-hook-project-create.json", |v| remove(
                v,
                "project_id"
            ))),
            "field `project_id` is missing"
        );
    }

    #[test]
    fn project_update_with_null_project_id() {
        assert_eq!(
            error(&own(
                "system-hook-project-update.json",
                |v| v["project_id"] = Value::Null
            )),
            "field `project_id` must be a positive integer, found null"
        );
    }

    #[test]
    fn project_destroy_with_a_bad_path() {
        assert_eq!(
            error(&own(
                "system-hook-project-destroy.json",
                |v| v["path_with_namespace"] = json!("jsmith//underscore")
            )),
            "field `path_with_namespace` is not a valid GitLab path: path \"jsmith//underscore\" has an empty segment"
        );
    }

    #[test]
    fn project_rename_without_old_path() {
        assert_eq!(
            error(&own("system-hook-project-rename.json", |v| remove(
                v,
                "old_path_with_namespace"
            ))),
            "field `old_path_with_namespace` is missing"
        );
    }

    #[test]
    fn project_transfer_with_negative_id() {
        assert_eq!(
            error(&own(
                "system-hook-project-transfer.json",
                |v| v["project_id"] = json!(-73)
            )),
            "field `project_id` must be a positive integer, found -73"
        );
    }

    #[test]
    fn group_rename_with_an_empty_full_path() {
        assert_eq!(
            error(&own("system-hook-group-rename.json", |v| v["full_path"] =
                json!(""))),
            "field `full_path` is not a valid GitLab path: path is empty"
        );
    }

    #[test]
    fn group_rename_without_old_full_path() {
        assert_eq!(
            error(&own("system-hook-group-rename.json", |v| remove(
                v,
                "old_full_path"
            ))),
            "field `old_full_path` is missing"
        );
    }
}
