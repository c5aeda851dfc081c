//! Helpers for the parse tests: loading fixtures, running the parser, and comparing
//! records exactly (event ids are generated, so they are checked apart).

use std::collections::HashSet;

use fluxgate_core::NewRecord;
use fluxgate_core::{
    CatalogChange, EventKind, FullPath, GitRef, ProjectId, ProjectRef, PushEvent, Sha, UnixMillis,
    Visibility,
};
use fluxgate_gitlab::{ParsedHook, parse_hook};

/// The receipt time every test passes in.
pub const RECEIVED_AT: UnixMillis = UnixMillis(1_767_225_600_000);

/// The null object id: a created ref's `before`, a deleted ref's `after`.
pub const ZERO: &str = "0000000000000000000000000000000000000000";

const SHARED_FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/gitlab/"
);
const OWN_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gitlab/");

/// A body from `shared/fixtures/gitlab/`, beside the repository.
pub fn shared_fixture(name: &str) -> Vec<u8> {
    read(&format!("{SHARED_FIXTURES}{name}"))
}

/// A body from this crate's `tests/fixtures/gitlab/`.
pub fn own_fixture(name: &str) -> Vec<u8> {
    read(&format!("{OWN_FIXTURES}{name}"))
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// A fixture as a JSON value, to derive variants from it.
pub fn fixture_json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("fixture is JSON")
}

/// Serialises a JSON value to a body (compact, so error columns are predictable).
pub fn body(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialisable")
}

/// Parses a body that must yield records.
pub fn records(body: &[u8]) -> Vec<NewRecord> {
    match parse_hook(body, RECEIVED_AT) {
        Ok(ParsedHook::Records { records, .. }) => records,
        other => panic!("expected records, got {other:?}"),
    }
}

/// Parses a body that must be ignored, and returns the kind label.
pub fn ignored(body: &[u8]) -> String {
    match parse_hook(body, RECEIVED_AT) {
        Ok(ParsedHook::Ignored { kind }) => kind.to_string(),
        other => panic!("expected an ignored hook, got {other:?}"),
    }
}

/// Parses a body that must be rejected, and returns the message.
pub fn error(body: &[u8]) -> String {
    match parse_hook(body, RECEIVED_AT) {
        Err(error) => error.message,
        Ok(parsed) => panic!("expected an error, got {parsed:?}"),
    }
}

/// A project as the parser should report it.
pub fn project(id: i64, path: &str, visibility: Option<Visibility>) -> ProjectRef {
    ProjectRef {
        id: ProjectId::new(id).expect("positive id"),
        path: FullPath::parse(path).expect("valid path"),
        visibility,
    }
}

/// One expected push record.
pub struct Push<'a> {
    pub project: ProjectRef,
    pub git_ref: &'a str,
    pub before: &'a str,
    pub after: &'a str,
    pub kind: EventKind,
}

/// Asserts that `records` are exactly these pushes, in order: every field equal, the
/// path spelled the same (paths compare case-insensitively), and each event id a
/// distinct UUIDv7.
pub fn assert_pushes(records: &[NewRecord], expected: &[Push<'_>]) {
    assert_eq!(records.len(), expected.len(), "{records:#?}");
    let mut ids = HashSet::new();
    for (record, want) in records.iter().zip(expected) {
        let NewRecord::Push(actual) = record else {
            panic!("expected a push, got {record:?}");
        };
        assert_eq!(actual.event_id.get_version_num(), 7, "event id is a UUIDv7");
        assert!(ids.insert(actual.event_id), "event ids are distinct");
        let want_event = PushEvent {
            event_id: actual.event_id,
            project: want.project.clone(),
            git_ref: Some(GitRef::parse(want.git_ref).expect("valid ref")),
            before: Sha::parse(want.before).expect("valid sha"),
            after: Sha::parse(want.after).expect("valid sha"),
            kind: want.kind,
            artifact: None,
            received_at: RECEIVED_AT,
        };
        assert_eq!(actual, &want_event);
        assert_eq!(actual.project.path.as_str(), want.project.path.as_str());
    }
}

/// The single catalog change a body must yield.
pub fn catalog_change(body: &[u8]) -> CatalogChange {
    match records(body).as_slice() {
        [NewRecord::Catalog(change)] => change.clone(),
        other => panic!("expected one catalog change, got {other:?}"),
    }
}
