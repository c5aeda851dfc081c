//! The behavioural suite of the `Store` contract, run against SQLite and PostgreSQL.
//!
//! Each case is an `async fn(TestDatabase)`; `suite!` turns it into one test per backend,
//! each on a fresh database.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use fluxgate_core::{
    AdminAction, AgentId, AgentName, AgentToken, Artifact, CatalogChange, DeliveryDetail,
    DeliveryRecord, DeliveryStage, EventKind, FailingReceiver, FullPath, GitRef, Grant, LogEntry,
    LogRecord, ProjectId, ProjectRef, PushEvent, ReceiverAnswer, ReceiverHealth, Seq, Sha,
    StateCause, StateEffect, SubscriptionReport, SubscriptionState, SubscriptionStatus, UnixMillis,
    Visibility,
};
use fluxgate_core::{HookBatch, NewRecord};
use fluxgate_store::testing::TestDatabase;
use fluxgate_store::{
    AgentUpdate, Appender, CommitListener, CursorUpdate, HookOutcome, ManualClock, NewAgent,
    SqlStore, Store, StoreError, StoreOptions,
};
use parking_lot::Mutex;

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(fluxgate_store::testing::TestDatabase::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(fluxgate_store::testing::TestDatabase::postgres().await).await;
                }
            )*
        }
    };
}

suite!(
    seqs_are_gapless_and_in_order,
    read_pushes_skips_state_changes_and_says_how_far_it_read,
    idempotency_key_makes_a_duplicate,
    a_batch_too_large_for_one_statement_is_appended_whole_and_deduplicated,
    same_change_to_a_ref_is_a_duplicate_only_while_it_is_the_latest,
    artifacts_and_project_pushes_are_kept_whole_and_deduplicated_by_key_only,
    dedup_forgets_after_the_window,
    pushes_teach_the_catalog_once,
    renames_move_aliases_and_grants,
    group_rename_moves_projects_and_grants,
    destroy_removes_project_and_aliases,
    agent_lifecycle_is_logged,
    agents_are_found_by_token_only_with_the_current_token,
    cursors_only_move_forward,
    an_agent_cursor_is_the_lowest_of_its_streams,
    a_closed_stream_holds_until_a_later_stream_passes_it,
    a_hold_follows_the_subscriptions_a_stream_changed_to,
    a_stream_of_a_dead_replica_holds_until_taken_over,
    an_agent_is_connected_while_a_stream_is_open,
    only_a_migrated_database_opens_as_existing,
    holds_per_agent_are_bounded,
    streams_within_one_millisecond_never_release_each_other,
    receiver_health_is_replaced_and_bounded,
    delivery_records_keep_the_first_of_each_stage_and_go_with_their_entries,
    subscription_status_is_replaced_and_bounded,
    recent_pushes_come_with_their_records,
    trim_moves_the_floor,
    concurrent_writers_get_unique_gapless_seqs,
    appender_commits_concurrent_hooks_in_order,
    one_transaction_sees_its_own_changes,
);

fn p(s: &str) -> FullPath {
    FullPath::parse(s).unwrap()
}

fn sha(c: char) -> Sha {
    Sha::parse(&c.to_string().repeat(40)).unwrap()
}

fn project(id: i64, path: &str, visibility: Option<Visibility>) -> ProjectRef {
    ProjectRef {
        id: ProjectId::new(id).unwrap(),
        path: p(path),
        visibility,
    }
}

fn push(id: i64, path: &str, git_ref: &str, before: char, after: char) -> NewRecord {
    let git_ref = GitRef::parse(git_ref).unwrap();
    NewRecord::Push(PushEvent {
        event_id: uuid::Uuid::now_v7(),
        project: project(id, path, Some(Visibility::Private)),
        kind: EventKind::for_ref(&git_ref),
        git_ref: Some(git_ref),
        artifact: None,
        before: sha(before),
        after: sha(after),
        received_at: UnixMillis::now(),
    })
}

fn hook(records: Vec<NewRecord>) -> HookBatch {
    HookBatch {
        idempotency_key: None,
        records,
    }
}

fn catalog(change: CatalogChange) -> NewRecord {
    NewRecord::Catalog(change)
}

fn new_agent(name: &str, config: &str, grants: Vec<Grant>) -> (NewAgent, AgentToken) {
    let token = AgentToken::generate();
    let agent = NewAgent {
        name: AgentName::parse(name).unwrap(),
        config_project: p(config),
        grants,
        allow_internal: false,
        token_digest: token.digest(),
    };
    (agent, token)
}

async fn all_entries(store: &dyn Store) -> Vec<LogEntry> {
    store.read_log(Seq::ZERO, 10_000).await.unwrap()
}

fn pushes(entries: &[LogEntry]) -> Vec<&PushEvent> {
    entries.iter().filter_map(LogEntry::as_push).collect()
}

fn state_effects(entry: &LogEntry) -> &[StateEffect] {
    match &entry.record {
        LogRecord::State(change) => &change.effects,
        LogRecord::Push(_) => &[],
    }
}

async fn seqs_are_gapless_and_in_order(db: TestDatabase) {
    let store = db.store().await;
    let first = store
        .append(&[hook(vec![push(1, "a/b", "refs/heads/main", '0', '1')])])
        .await
        .unwrap();
    let second = store
        .append(&[
            hook(vec![push(1, "a/b", "refs/heads/main", '1', '2')]),
            hook(vec![
                push(1, "a/b", "refs/heads/dev", '0', '3'),
                push(1, "a/b", "refs/tags/v1", '0', '4'),
            ]),
        ])
        .await
        .unwrap();

    // The first push of a project also records what it taught the catalog.
    assert_eq!(first.entries.len(), 2);
    assert_eq!(second.entries.len(), 3);
    let entries = all_entries(&store).await;
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq.get()).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(store.log_bounds().await.unwrap().head, Seq(5));
    assert_eq!(
        second.outcomes[1]
            .records
            .iter()
            .map(|r| r.seq.get())
            .collect::<Vec<_>>(),
        vec![4, 5]
    );
    let kinds: Vec<EventKind> = pushes(&entries).iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Push,
            EventKind::Push,
            EventKind::Push,
            EventKind::TagPush
        ]
    );
    assert_eq!(store.read_log(Seq(3), 1).await.unwrap()[0].seq, Seq(4));
}

async fn read_pushes_skips_state_changes_and_says_how_far_it_read(db: TestDatabase) {
    let store = db.store().await;
    // seq 1: the catalog learns the project; 2: the push; 3..=5: agents; 6: a push.
    store
        .append(&[hook(vec![push(1, "a/b", "refs/heads/main", '0', '1')])])
        .await
        .unwrap();
    for name in ["edge-1", "edge-2", "edge-3"] {
        store
            .create_agent(new_agent(name, "ops/edge", vec![]).0)
            .await
            .unwrap();
    }
    store
        .append(&[hook(vec![push(1, "a/b", "refs/heads/main", '1', '2')])])
        .await
        .unwrap();
    let seqs = |page: &fluxgate_store::PushPage| -> Vec<u64> {
        page.entries.iter().map(|e| e.seq.get()).collect()
    };

    let all = store.read_pushes(Seq::ZERO, Seq(6), 10).await.unwrap();
    assert_eq!(seqs(&all), vec![2, 6], "state changes are skipped");
    assert_eq!(all.covered_to, Seq(6), "a short page covers the range");

    let first = store.read_pushes(Seq::ZERO, Seq(6), 1).await.unwrap();
    assert_eq!(seqs(&first), vec![2]);
    assert_eq!(
        first.covered_to,
        Seq(2),
        "a full page covers up to its last push"
    );

    let bounded = store.read_pushes(Seq(2), Seq(5), 10).await.unwrap();
    assert!(bounded.entries.is_empty(), "nothing after up_to");
    assert_eq!(bounded.covered_to, Seq(5));
}

async fn idempotency_key_makes_a_duplicate(db: TestDatabase) {
    let store = db.store().await;
    let keyed = |records| HookBatch {
        idempotency_key: Some("6f1e2d3c-key".to_owned()),
        records,
    };
    let first = store
        .append(&[keyed(vec![push(1, "a/b", "refs/heads/main", '0', '1')])])
        .await
        .unwrap();
    let again = store
        .append(&[keyed(vec![push(1, "a/b", "refs/heads/main", '1', '2')])])
        .await
        .unwrap();
    assert!(!first.outcomes[0].all_duplicates());
    assert!(again.outcomes[0].all_duplicates());
    assert_eq!(
        again.outcomes[0].records[0].seq,
        first.outcomes[0].records[0].seq
    );
    assert!(again.entries.is_empty());
    assert_eq!(pushes(&all_entries(&store).await).len(), 1);
}

/// 1,200 hooks with a key and a new ref each, in 30 projects: the batch's reads and writes
/// each need several statements (100 rows per part, 10,000 parameters per statement).
async fn a_batch_too_large_for_one_statement_is_appended_whole_and_deduplicated(db: TestDatabase) {
    let store = db.store().await;
    let hooks: Vec<HookBatch> = (0..1_200_i64)
        .map(|n| HookBatch {
            idempotency_key: Some(format!("key-{n}")),
            records: vec![push(
                1 + n % 30,
                &format!("group/p{}", n % 30),
                &format!("refs/heads/b{n}"),
                '0',
                '1',
            )],
        })
        .collect();
    let first = store.append(&hooks).await.unwrap();
    // One state entry per project first seen, then one entry per push.
    assert_eq!(first.entries.len(), 1_230);
    assert!(first.outcomes.iter().all(|o| !o.all_duplicates()));
    let seqs: Vec<u64> = all_entries(&store)
        .await
        .iter()
        .map(|e| e.seq.get())
        .collect();
    assert_eq!(seqs, (1..=1_230).collect::<Vec<u64>>(), "gapless, in order");
    assert_eq!(store.log_bounds().await.unwrap().head, Seq(1_230));

    // Every key and every ref head was written and is read back.
    let again = store.append(&hooks).await.unwrap();
    assert!(again.entries.is_empty());
    assert!(again.outcomes.iter().all(HookOutcome::all_duplicates));
    let same_change_without_keys: Vec<HookBatch> =
        hooks.iter().map(|h| hook(h.records.clone())).collect();
    let by_ref = store.append(&same_change_without_keys).await.unwrap();
    assert!(by_ref.entries.is_empty(), "each ref's last change is known");
    for (was, now) in first.outcomes.iter().zip(&by_ref.outcomes) {
        assert_eq!(was.records[0].seq, now.records[0].seq);
    }
}

async fn same_change_to_a_ref_is_a_duplicate_only_while_it_is_the_latest(db: TestDatabase) {
    let store = db.store().await;
    let append = |record| {
        let store = &store;
        async move {
            store
                .append(&[hook(vec![record])])
                .await
                .unwrap()
                .outcomes
                .remove(0)
                .records[0]
        }
    };
    let original = append(push(1, "a/b", "refs/heads/main", '0', '1')).await;
    let repeat = append(push(1, "a/b", "refs/heads/main", '0', '1')).await;
    assert!(repeat.duplicate);
    assert_eq!(repeat.seq, original.seq);
    // Another ref, or another project, with the same shas is not a duplicate.
    assert!(
        !append(push(1, "a/b", "refs/heads/dev", '0', '1'))
            .await
            .duplicate
    );
    assert!(
        !append(push(2, "a/c", "refs/heads/main", '0', '1'))
            .await
            .duplicate
    );
    // Back and forth: the third change repeats the first, but the ref moved in between.
    assert!(
        !append(push(1, "a/b", "refs/heads/main", '1', '0'))
            .await
            .duplicate
    );
    assert!(
        !append(push(1, "a/b", "refs/heads/main", '0', '1'))
            .await
            .duplicate
    );
}

/// A pipeline's artifact notification and GitLab's ref-less project push are stored with
/// every field; neither is a repeat of a git push with the same (zero) shas, and two
/// project pushes in a row are two events. Only the idempotency key (an ID token's `jti`)
/// makes a repeat.
async fn artifacts_and_project_pushes_are_kept_whole_and_deduplicated_by_key_only(
    db: TestDatabase,
) {
    let store = db.store().await;
    let artifact = || {
        NewRecord::Push(PushEvent {
            event_id: uuid::Uuid::now_v7(),
            project: project(1, "a/b", None),
            git_ref: Some(GitRef::parse("refs/heads/main").unwrap()),
            before: Sha::zero(),
            after: sha('1'),
            kind: EventKind::Artifact,
            artifact: Some(
                Artifact::new(
                    Some("oci://registry.example.com/a/b/manifests".into()),
                    Some("v1.2.3".into()),
                    None,
                    "100".into(),
                    "200".into(),
                )
                .unwrap(),
            ),
            received_at: UnixMillis::now(),
        })
    };
    let project_push = || {
        NewRecord::Push(PushEvent {
            event_id: uuid::Uuid::now_v7(),
            project: project(1, "a/b", None),
            git_ref: None,
            before: Sha::zero(),
            after: Sha::zero(),
            kind: EventKind::ProjectPush,
            artifact: None,
            received_at: UnixMillis::now(),
        })
    };
    let by_jti = |record| HookBatch {
        idempotency_key: Some("ci-jti:5b0c".to_owned()),
        records: vec![record],
    };
    store
        .append(&[hook(vec![push(1, "a/b", "refs/heads/main", '0', '1')])])
        .await
        .unwrap();
    let first = store.append(&[by_jti(artifact())]).await.unwrap();
    assert!(
        !first.outcomes[0].all_duplicates(),
        "an artifact is not a repeat of a push"
    );
    let replayed = store.append(&[by_jti(artifact())]).await.unwrap();
    assert!(
        replayed.outcomes[0].all_duplicates(),
        "the same jti is a repeat"
    );
    let other_jti = store.append(&[hook(vec![artifact()])]).await.unwrap();
    assert!(!other_jti.outcomes[0].all_duplicates());
    for _ in 0..2 {
        let appended = store.append(&[hook(vec![project_push()])]).await.unwrap();
        assert!(
            !appended.outcomes[0].all_duplicates(),
            "project pushes are never repeats"
        );
    }

    let entries = all_entries(&store).await;
    let events = pushes(&entries);
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Push,
            EventKind::Artifact,
            EventKind::Artifact,
            EventKind::ProjectPush,
            EventKind::ProjectPush
        ]
    );
    let stored = events[1];
    assert_eq!(
        stored.artifact.as_ref().unwrap().tag.as_deref(),
        Some("v1.2.3")
    );
    assert_eq!(stored.after, sha('1'));
    assert_eq!(events[3].git_ref, None);
}

async fn dedup_forgets_after_the_window(db: TestDatabase) {
    let window = Duration::from_secs(60);
    let clock = ManualClock::starting_at(UnixMillis::now());
    let options = StoreOptions {
        dedup_window: window,
        clock: clock.clone().into(),
        ..StoreOptions::default()
    };
    let store = db.store_with(options).await;
    let keyed = HookBatch {
        idempotency_key: Some("k".to_owned()),
        records: vec![push(1, "a/b", "refs/heads/main", '0', '1')],
    };
    store.append(std::slice::from_ref(&keyed)).await.unwrap();
    // At the window's edge the key (and the ref's last change) are still remembered.
    clock.advance(window);
    let within = store.append(std::slice::from_ref(&keyed)).await.unwrap();
    assert!(within.outcomes[0].all_duplicates());
    // One millisecond past it, both are forgotten: the delivery is new.
    clock.advance(Duration::from_millis(1));
    let later = store.append(&[keyed]).await.unwrap();
    assert!(!later.outcomes[0].all_duplicates());
    assert_eq!(pushes(&all_entries(&store).await).len(), 2);
}

async fn pushes_teach_the_catalog_once(db: TestDatabase) {
    let store = db.store().await;
    let (agent, _) = new_agent("prod", "team/app", vec![Grant::Project(p("team/lib"))]);
    store.create_agent(agent).await.unwrap();

    store
        .append(&[hook(vec![push(7, "team/app", "refs/heads/main", '0', '1')])])
        .await
        .unwrap();
    store
        .append(&[hook(vec![push(7, "team/app", "refs/heads/main", '1', '2')])])
        .await
        .unwrap();
    // The same project under a new path (a rename no system hook told us about).
    let moved = store
        .append(&[hook(vec![push(
            7,
            "team/app-renamed",
            "refs/heads/main",
            '2',
            '3',
        )])])
        .await
        .unwrap();

    let entries = all_entries(&store).await;
    let states: Vec<&LogEntry> = entries.iter().filter(|e| e.as_push().is_none()).collect();
    // Agent creation, the first sighting, the move: the repeat push taught nothing.
    assert_eq!(states.len(), 3, "{states:#?}");
    assert!(matches!(
        &state_effects(states[1])[0],
        StateEffect::Project { path, visibility: Some(Visibility::Private), .. } if path.as_str() == "team/app"
    ));
    let move_effects = state_effects(&moved.entries[0]);
    assert!(
        matches!(&move_effects[0], StateEffect::Project { path, .. } if path.as_str() == "team/app-renamed")
    );
    // The agent's config project followed the move.
    assert!(matches!(
        &move_effects[1],
        StateEffect::Agent { policy } if policy.config_project.as_str() == "team/app-renamed"
    ));

    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(snapshot.projects.len(), 1);
    assert_eq!(snapshot.projects[0].path.as_str(), "team/app-renamed");
    let aliases: BTreeSet<&str> = snapshot
        .aliases
        .iter()
        .map(|(path, _)| path.as_str())
        .collect();
    assert_eq!(aliases, BTreeSet::from(["team/app", "team/app-renamed"]));
    assert_eq!(
        snapshot.agents[0].config_project.as_str(),
        "team/app-renamed"
    );
    assert_eq!(snapshot.bounds.head, entries.last().unwrap().seq);
}

async fn renames_move_aliases_and_grants(db: TestDatabase) {
    let store = db.store().await;
    let (agent, _) = new_agent("a1", "ops/config", vec![Grant::Project(p("Team/App"))]);
    store.create_agent(agent).await.unwrap();
    store
        .append(&[hook(vec![catalog(CatalogChange::ProjectUpserted {
            project: project(5, "team/app", Some(Visibility::Internal)),
        })])])
        .await
        .unwrap();
    let renamed = store
        .append(&[hook(vec![catalog(CatalogChange::ProjectRenamed {
            project: project(5, "team/app2", Some(Visibility::Private)),
            old_path: p("team/app"),
        })])])
        .await
        .unwrap();

    let LogRecord::State(change) = &renamed.entries[0].record else {
        panic!("a rename is a state entry");
    };
    assert!(matches!(change.cause, StateCause::Gitlab { .. }));
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(snapshot.projects[0].path.as_str(), "team/app2");
    assert_eq!(snapshot.projects[0].visibility, Some(Visibility::Private));
    assert_eq!(
        snapshot.agents[0].grants,
        vec![Grant::Project(p("team/app2"))]
    );
    let owner_of_old = snapshot
        .aliases
        .iter()
        .find(|(path, _)| path.key() == "team/app")
        .unwrap()
        .1;
    assert_eq!(owner_of_old.get(), 5);

    // A rename of a project the catalog never saw still moves grants on its old path.
    let (agent, _) = new_agent("a2", "ops/config", vec![Grant::Project(p("x/unknown"))]);
    store.create_agent(agent).await.unwrap();
    store
        .append(&[hook(vec![catalog(CatalogChange::ProjectRenamed {
            project: project(6, "x/known-now", None),
            old_path: p("x/unknown"),
        })])])
        .await
        .unwrap();
    let a2 = store
        .agent(&AgentName::parse("a2").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a2.policy.grants, vec![Grant::Project(p("x/known-now"))]);

    // A new project taking the old path owns it from then on.
    store
        .append(&[hook(vec![push(9, "team/app", "refs/heads/main", '0', '1')])])
        .await
        .unwrap();
    let snapshot = store.snapshot().await.unwrap();
    let owner_of_old = snapshot
        .aliases
        .iter()
        .find(|(path, _)| path.key() == "team/app")
        .unwrap()
        .1;
    assert_eq!(owner_of_old.get(), 9);
    let a1 = store
        .agent(&AgentName::parse("a1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        a1.policy.grants,
        vec![Grant::Project(p("team/app2"))],
        "grants stay with project 5"
    );
}

async fn group_rename_moves_projects_and_grants(db: TestDatabase) {
    let store = db.store().await;
    let (agent, _) = new_agent(
        "g",
        "old_grp/cfg",
        vec![
            Grant::Group(p("old_grp/sub")),
            Grant::Project(p("old_grpx/app")),
        ],
    );
    store.create_agent(agent).await.unwrap();
    store
        .append(&[hook(vec![
            push(1, "old_grp/sub/app", "refs/heads/main", '0', '1'),
            push(2, "old_grp/cfg", "refs/heads/main", '0', '1'),
            // Shares a prefix but is not in the group (and `_` must not act as a wildcard).
            push(3, "old_grpx/app", "refs/heads/main", '0', '1'),
            push(4, "oldAgrp/app", "refs/heads/main", '0', '1'),
        ])])
        .await
        .unwrap();
    store
        .append(&[hook(vec![catalog(CatalogChange::GroupRenamed {
            old_path: p("old_grp"),
            new_path: p("new-grp"),
        })])])
        .await
        .unwrap();

    let snapshot = store.snapshot().await.unwrap();
    let paths: BTreeSet<&str> = snapshot
        .projects
        .iter()
        .map(|pr| pr.path.as_str())
        .collect();
    assert_eq!(
        paths,
        BTreeSet::from([
            "new-grp/cfg",
            "new-grp/sub/app",
            "oldAgrp/app",
            "old_grpx/app"
        ])
    );
    let policy = &snapshot.agents[0];
    assert_eq!(policy.config_project.as_str(), "new-grp/cfg");
    assert_eq!(
        policy.grants,
        vec![
            Grant::Project(p("old_grpx/app")),
            Grant::Group(p("new-grp/sub"))
        ]
    );
}

async fn destroy_removes_project_and_aliases(db: TestDatabase) {
    let store = db.store().await;
    store
        .append(&[hook(vec![
            push(1, "a/b", "refs/heads/main", '0', '1'),
            catalog(CatalogChange::ProjectRenamed {
                project: project(1, "a/c", None),
                old_path: p("a/b"),
            }),
            catalog(CatalogChange::ProjectDestroyed {
                id: ProjectId::new(1).unwrap(),
                path: p("a/c"),
            }),
        ])])
        .await
        .unwrap();
    let snapshot = store.snapshot().await.unwrap();
    assert!(snapshot.projects.is_empty());
    assert!(snapshot.aliases.is_empty());
}

async fn agent_lifecycle_is_logged(db: TestDatabase) {
    let store = db.store().await;
    store
        .append(&[hook(vec![push(1, "a/b", "refs/heads/main", '0', '1')])])
        .await
        .unwrap();
    let head_before = store.log_bounds().await.unwrap().head;

    let (agent, _) = new_agent("edge-1", "ops/edge", vec![]);
    let (created, entry) = store.create_agent(agent.clone()).await.unwrap();
    assert_eq!(
        created.cursor, head_before,
        "a new agent starts at the head"
    );
    assert!(matches!(
        &entry.record,
        LogRecord::State(change) if matches!(change.cause, StateCause::Admin { action: AdminAction::Create, .. })
    ));
    let err = store.create_agent(agent).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");

    let name = AgentName::parse("edge-1").unwrap();
    let grants = vec![Grant::Group(p("apps")), Grant::Project(p("infra/base"))];
    let (granted, _) = store
        .update_agent(
            &name,
            AgentUpdate::Grant {
                grants: grants.clone(),
                allow_internal: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        granted.policy.grants,
        vec![Grant::Project(p("infra/base")), Grant::Group(p("apps"))]
    );
    assert!(granted.policy.allow_internal);

    let missing = store
        .update_agent(
            &name,
            AgentUpdate::Revoke {
                grants: vec![Grant::Project(p("nope/x"))],
                internal: false,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        missing.to_string(),
        "agent \"edge-1\" has no grant for project nope/x"
    );
    let (revoked, _) = store
        .update_agent(
            &name,
            AgentUpdate::Revoke {
                grants: vec![Grant::Group(p("APPS"))],
                internal: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(revoked.policy.grants, vec![Grant::Project(p("infra/base"))]);
    assert!(!revoked.policy.allow_internal);

    let entry = store.delete_agent(&name).await.unwrap();
    assert_eq!(
        state_effects(&entry),
        [StateEffect::AgentRemoved {
            id: created.policy.id
        }]
    );
    assert!(store.agent(&name).await.unwrap().is_none());
    let err = store.delete_agent(&name).await.unwrap_err();
    assert_eq!(err.to_string(), "no agent named \"edge-1\"");
    // Create, grant, revoke and delete each left a state entry: 1 push + 1 observe + 4.
    assert_eq!(store.log_bounds().await.unwrap().head, Seq(6));
}

async fn agents_are_found_by_token_only_with_the_current_token(db: TestDatabase) {
    let store = db.store().await;
    let (agent, token) = new_agent("t", "a/b", vec![]);
    store.create_agent(agent).await.unwrap();
    let found = store
        .agent_by_token(&token.digest())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.policy.name.as_str(), "t");
    assert!(
        store
            .agent_by_token(&AgentToken::generate().digest())
            .await
            .unwrap()
            .is_none()
    );

    let rotated = AgentToken::generate();
    let name = AgentName::parse("t").unwrap();
    let (record, _) = store
        .update_agent(
            &name,
            AgentUpdate::RotateToken {
                digest: rotated.digest(),
            },
        )
        .await
        .unwrap();
    assert_eq!(record.policy.token_generation, 1);
    assert!(
        store
            .agent_by_token(&token.digest())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .agent_by_token(&rotated.digest())
            .await
            .unwrap()
            .is_some()
    );
}

/// A report for `stream` of `agent`, opened at `opened` after `started`, now at `cursor`.
fn report(
    agent: AgentId,
    stream: &str,
    started: u64,
    opened: i64,
    cursor: u64,
    at: i64,
) -> CursorUpdate {
    CursorUpdate {
        agent,
        stream: stream.to_owned(),
        subscriptions: "same".to_owned(),
        started_after: Seq(started),
        opened_at: UnixMillis(opened),
        cursor: Seq(cursor),
        seen_at: UnixMillis(at),
        closed_at: None,
    }
}

fn closed(mut update: CursorUpdate, at: i64) -> CursorUpdate {
    update.closed_at = Some(UnixMillis(at));
    update
}

/// Never stale: these tests say when a stream closed.
const NOT_STALE: UnixMillis = UnixMillis(0);

async fn agent_ids(store: &SqlStore, names: &[&str]) -> Vec<AgentId> {
    let mut ids = Vec::new();
    for name in names {
        let (agent, _) = new_agent(name, "a/b", vec![]);
        ids.push(store.create_agent(agent).await.unwrap().0.policy.id);
    }
    ids
}

async fn cursor_of(store: &SqlStore, agent: AgentId) -> (u64, Option<i64>) {
    let agents = store.list_agents().await.unwrap();
    let record = agents.iter().find(|a| a.policy.id == agent).unwrap();
    (
        record.cursor.get(),
        record.last_seen_at.map(UnixMillis::get),
    )
}

async fn cursors_only_move_forward(db: TestDatabase) {
    let store = db.store().await;
    let ids = agent_ids(&store, &["c1", "c2", "c3"]).await;
    store
        .save_cursors(
            &[
                report(ids[0], "s0", 0, 1, 10, 1_000),
                report(ids[1], "s1", 0, 1, 20, 1_000),
            ],
            NOT_STALE,
        )
        .await
        .unwrap();
    // One call, several streams: one would move back, one moves forward, one is new.
    store
        .save_cursors(
            &[
                report(ids[0], "s0", 0, 1, 7, 2_000),
                report(ids[1], "s1", 0, 1, 25, 500),
                report(ids[2], "s2", 0, 1, 3, 3_000),
            ],
            NOT_STALE,
        )
        .await
        .unwrap();
    assert_eq!(cursor_of(&store, ids[0]).await, (10, Some(2_000)));
    assert_eq!(cursor_of(&store, ids[1]).await, (25, Some(1_000)));
    assert_eq!(cursor_of(&store, ids[2]).await, (3, Some(3_000)));
}

async fn an_agent_cursor_is_the_lowest_of_its_streams(db: TestDatabase) {
    let store = db.store().await;
    let agent = agent_ids(&store, &["two-streams"]).await[0];
    // Stream a holds event 11 unacked; stream b, with other subscriptions, passes 100.
    store
        .save_cursors(&[report(agent, "a", 0, 1, 10, 10)], NOT_STALE)
        .await
        .unwrap();
    store
        .save_cursors(&[report(agent, "b", 0, 2, 100, 20)], NOT_STALE)
        .await
        .unwrap();
    assert_eq!(cursor_of(&store, agent).await.0, 10, "a still holds 11");
    store
        .save_cursors(&[report(agent, "a", 0, 1, 120, 30)], NOT_STALE)
        .await
        .unwrap();
    assert_eq!(cursor_of(&store, agent).await.0, 100, "now b is the lowest");
}

async fn a_closed_stream_holds_until_a_later_stream_passes_it(db: TestDatabase) {
    let store = db.store().await;
    let agent = agent_ids(&store, &["reconnects"]).await[0];
    let a = report(agent, "a", 0, 1, 10, 10);
    store
        .save_cursors(&[a.clone(), report(agent, "b", 0, 2, 100, 20)], NOT_STALE)
        .await
        .unwrap();
    // a leaves with 11 unacked; b goes on alone.
    store
        .save_cursors(
            &[closed(a, 30), report(agent, "b", 0, 2, 150, 40)],
            NOT_STALE,
        )
        .await
        .unwrap();
    assert_eq!(cursor_of(&store, agent).await.0, 10, "the closed a holds");
    // A stream that resumes above the hold does not replay 11: the hold stays.
    store
        .save_cursors(&[report(agent, "c", 150, 50, 200, 60)], NOT_STALE)
        .await
        .unwrap();
    assert_eq!(cursor_of(&store, agent).await.0, 10, "c never replayed 11");
    // Nor does a stream with other subscriptions: it was not owed what a was.
    let mut other = report(agent, "e", 10, 65, 300, 65);
    other.subscriptions = "other".to_owned();
    store.save_cursors(&[other], NOT_STALE).await.unwrap();
    assert_eq!(
        cursor_of(&store, agent).await.0,
        10,
        "e has other subscriptions"
    );
    // A stream that resumes at the hold replays 11; once past it, the hold is released.
    store
        .save_cursors(&[report(agent, "d", 10, 70, 10, 70)], NOT_STALE)
        .await
        .unwrap();
    assert_eq!(cursor_of(&store, agent).await.0, 10);
    store
        .save_cursors(&[report(agent, "d", 10, 70, 160, 80)], NOT_STALE)
        .await
        .unwrap();
    assert_eq!(
        cursor_of(&store, agent).await.0,
        150,
        "a released; b (150) is the lowest now"
    );
}

async fn a_hold_follows_the_subscriptions_a_stream_changed_to(db: TestDatabase) {
    let store = db.store().await;
    let agent = agent_ids(&store, &["discovers"]).await[0];
    // a opens with no subscriptions, then changes to "same" at seq 5 (in place).
    let mut opened = report(agent, "a", 0, 1, 3, 10);
    opened.subscriptions = "none".to_owned();
    store.save_cursors(&[opened], NOT_STALE).await.unwrap();
    let changed = report(agent, "a", 5, 1, 10, 20);
    store
        .save_cursors(&[closed(changed, 30)], NOT_STALE)
        .await
        .unwrap();
    assert_eq!(cursor_of(&store, agent).await.0, 10, "the closed a holds");
    // A later stream with a's current subscriptions, resumed at the hold and past it,
    // takes over: the hold is released.
    store
        .save_cursors(&[report(agent, "b", 10, 40, 60, 50)], NOT_STALE)
        .await
        .unwrap();
    assert_eq!(
        cursor_of(&store, agent).await.0,
        60,
        "a's hold goes with its current subscriptions"
    );
}

async fn a_stream_of_a_dead_replica_holds_until_taken_over(db: TestDatabase) {
    let store = db.store().await;
    let agent = agent_ids(&store, &["orphaned"]).await[0];
    // Stream a's replica died: a was never closed, its last report was at 10.
    store
        .save_cursors(&[report(agent, "a", 0, 1, 5, 10)], NOT_STALE)
        .await
        .unwrap();
    // A new stream resumes at 5 and passes it; while a is not stale, a still holds.
    store
        .save_cursors(&[report(agent, "b", 5, 20, 50, 30)], UnixMillis(10))
        .await
        .unwrap();
    assert_eq!(cursor_of(&store, agent).await.0, 5, "a may be alive");
    store
        .save_cursors(&[report(agent, "b", 5, 20, 60, 40)], UnixMillis(11))
        .await
        .unwrap();
    assert_eq!(
        cursor_of(&store, agent).await.0,
        60,
        "a was stale and taken over"
    );
}

async fn open_stream_seen_at(store: &SqlStore, agent: AgentId) -> Option<i64> {
    let name = store
        .list_agents()
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.policy.id == agent)
        .unwrap()
        .policy
        .name;
    let by_name = store.agent(&name).await.unwrap().unwrap();
    by_name.open_stream_seen_at.map(UnixMillis::get)
}

async fn an_agent_is_connected_while_a_stream_is_open(db: TestDatabase) {
    let store = db.store().await;
    let agent = agent_ids(&store, &["comes-and-goes"]).await[0];
    assert_eq!(
        open_stream_seen_at(&store, agent).await,
        None,
        "never connected"
    );
    let a = report(agent, "a", 0, 1, 5, 10);
    store
        .save_cursors(&[a.clone(), report(agent, "b", 0, 2, 5, 20)], NOT_STALE)
        .await
        .unwrap();
    assert_eq!(open_stream_seen_at(&store, agent).await, Some(20));
    // b closes: a, last heard of at 10, is still open.
    store
        .save_cursors(&[closed(report(agent, "b", 0, 2, 5, 30), 30)], NOT_STALE)
        .await
        .unwrap();
    assert_eq!(open_stream_seen_at(&store, agent).await, Some(10));
    // a closes too: the agent is gone at once, though it was seen a moment ago.
    store
        .save_cursors(&[closed(report(agent, "a", 0, 1, 5, 40), 40)], NOT_STALE)
        .await
        .unwrap();
    assert_eq!(open_stream_seen_at(&store, agent).await, None);
    assert_eq!(
        cursor_of(&store, agent).await.1,
        Some(40),
        "last seen stays"
    );
}

async fn only_a_migrated_database_opens_as_existing(db: TestDatabase) {
    let options = StoreOptions::default;
    if db.postgres_name().is_none() {
        // A SQLite file that is not there is refused, and not created.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("typo").join("fluxgate.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let err = SqlStore::connect_existing(&url, options())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("no database file at {}", path.display())
        );
        assert!(!path.exists() && !path.parent().unwrap().exists());
    }
    // A database that exists but was never migrated is refused, and left unmigrated.
    let bare = SqlStore::connect(db.url(), options()).await.unwrap();
    bare.close().await;
    let err = SqlStore::connect_existing(db.url(), options())
        .await
        .unwrap_err();
    // Every migration of the tree is missing (the SQLite and PostgreSQL sets have the same).
    let migrations = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../migrations/sqlite"
    ))
    .unwrap()
    .count();
    assert!(
        err.to_string().starts_with(&format!(
            "the database is not migrated: {migrations} of {migrations} migrations not applied, from "
        )),
        "{err}"
    );
    let err = SqlStore::connect_existing(db.url(), options())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("{migrations} of {migrations}")),
        "still unmigrated: {err}"
    );
    // Once migrated, it opens.
    db.store().await.close().await;
    let store = SqlStore::connect_existing(db.url(), options())
        .await
        .unwrap();
    store.check_migrated().await.unwrap();
    assert!(store.list_agents().await.unwrap().is_empty());
}

async fn receiver_health_is_replaced_and_bounded(db: TestDatabase) {
    let store = db.store().await;
    let (agent, _) = new_agent("h1", "a/b", vec![]);
    let id = store.create_agent(agent).await.unwrap().0.policy.id;
    let (other, _) = new_agent("h2", "a/b", vec![]);
    store.create_agent(other).await.unwrap();
    let name = AgentName::parse("h1").unwrap();
    assert_eq!(
        store.agent(&name).await.unwrap().unwrap().receiver_health,
        None,
        "no report before the first"
    );
    let failing = |receiver: &str, error: &str| FailingReceiver {
        receiver: receiver.to_owned(),
        failing_since: UnixMillis(1_000),
        attempts: 12,
        last_error: error.to_owned(),
        last_http_status: 503,
        oldest_unacked_seq: Some(Seq(7)),
    };
    let report = ReceiverHealth {
        reported_at: UnixMillis(5_000),
        failing: vec![
            failing("app", "HTTP 503 Service Unavailable"),
            failing("é-ü", ""),
        ],
    };
    store.save_receiver_health(id, &report).await.unwrap();
    assert_eq!(
        store.agent(&name).await.unwrap().unwrap().receiver_health,
        Some(report.clone())
    );
    let listed = store.list_agents().await.unwrap();
    assert_eq!(listed[0].receiver_health, Some(report));
    assert_eq!(
        listed[1].receiver_health, None,
        "other agents are untouched"
    );

    // A later report replaces it; an empty one says every receiver answers.
    let healthy = ReceiverHealth {
        reported_at: UnixMillis(6_000),
        failing: Vec::new(),
    };
    store.save_receiver_health(id, &healthy).await.unwrap();
    assert_eq!(
        store.agent(&name).await.unwrap().unwrap().receiver_health,
        Some(healthy.clone())
    );

    // Over a bound: refused, and nothing is written.
    let oversized = ReceiverHealth {
        reported_at: UnixMillis(7_000),
        failing: vec![failing("app", &"x".repeat(513))],
    };
    let err = store
        .save_receiver_health(id, &oversized)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("failing[0].last_error"), "{err}");
    assert_eq!(
        store.agent(&name).await.unwrap().unwrap().receiver_health,
        Some(healthy.clone())
    );
    let missing = store
        .save_receiver_health(AgentId(id.0 + 1000), &healthy)
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing:?}");
    // The report is not a routing change: nothing was logged for it.
    assert_eq!(all_entries(&store).await.len(), 2, "two creations");
}

async fn subscription_status_is_replaced_and_bounded(db: TestDatabase) {
    let store = db.store().await;
    let (agent, _) = new_agent("s1", "a/b", vec![]);
    let id = store.create_agent(agent).await.unwrap().0.policy.id;
    let (other, _) = new_agent("s2", "a/b", vec![]);
    store.create_agent(other).await.unwrap();
    let name = AgentName::parse("s1").unwrap();
    let stored = |store: &SqlStore| {
        let name = name.clone();
        let store = store.clone();
        async move {
            store
                .agent(&name)
                .await
                .unwrap()
                .unwrap()
                .subscription_status
        }
    };
    assert_eq!(
        stored(&store).await,
        None,
        "nothing before the first stream"
    );
    let status = |project: &str, state, reason: &str| SubscriptionStatus {
        project: project.to_owned(),
        ref_pattern: "refs/heads/*".to_owned(),
        state,
        reason: reason.to_owned(),
        project_path: Some("team/renamed".to_owned()),
    };
    let report = SubscriptionReport {
        reported_at: UnixMillis(5_000),
        subscriptions: vec![
            status("team/app", SubscriptionState::Matchable, "public"),
            status("team/ap", SubscriptionState::NoSuchProject, "é mistyped?"),
        ],
    };
    store.save_subscription_status(id, &report).await.unwrap();
    assert_eq!(stored(&store).await, Some(report.clone()));
    let listed = store.list_agents().await.unwrap();
    assert_eq!(listed[0].subscription_status, Some(report));
    assert_eq!(
        listed[1].subscription_status, None,
        "other agents untouched"
    );

    let later = SubscriptionReport {
        reported_at: UnixMillis(6_000),
        subscriptions: vec![status("team/app", SubscriptionState::NotAllowed, "revoked")],
    };
    store.save_subscription_status(id, &later).await.unwrap();
    assert_eq!(stored(&store).await, Some(later.clone()), "replaced");

    // Over a bound: refused, nothing written.
    let oversized = SubscriptionReport {
        reported_at: UnixMillis(7_000),
        subscriptions: vec![status(
            "a/b",
            SubscriptionState::Matchable,
            &"x".repeat(1025),
        )],
    };
    let err = store
        .save_subscription_status(id, &oversized)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("subscriptions[0].reason"), "{err}");
    assert_eq!(stored(&store).await, Some(later.clone()));
    let missing = store
        .save_subscription_status(AgentId(id.0 + 1000), &later)
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing:?}");
    assert_eq!(
        all_entries(&store).await.len(),
        2,
        "not logged: two creations"
    );
}

async fn streams_within_one_millisecond_never_release_each_other(db: TestDatabase) {
    let store = db.store().await;
    let agent = agent_ids(&store, &["quick"]).await[0];
    // Two streams with the same subscriptions, both holding event 1, opened and closed
    // within the same millisecond: neither is "later" than the other's close.
    store
        .save_cursors(
            &[
                closed(report(agent, "a", 0, 5, 0, 5), 5),
                closed(report(agent, "b", 0, 5, 0, 5), 5),
                {
                    let mut other = report(agent, "c", 0, 5, 100, 5);
                    other.subscriptions = "other".to_owned();
                    other
                },
            ],
            NOT_STALE,
        )
        .await
        .unwrap();
    assert_eq!(cursor_of(&store, agent).await.0, 0, "a and b still hold");
}

async fn holds_per_agent_are_bounded(db: TestDatabase) {
    let store = db.store().await;
    let agent = agent_ids(&store, &["flapping"]).await[0];
    // 70 streams, each with its own subscriptions, closed one after another with cursor n.
    let updates: Vec<CursorUpdate> = (1..=70)
        .map(|n| {
            let mut update = closed(report(agent, &format!("s{n}"), 0, n, n as u64, n), 100 + n);
            update.subscriptions = format!("subscriptions-{n}");
            update
        })
        .collect();
    store.save_cursors(&updates, NOT_STALE).await.unwrap();
    assert_eq!(
        cursor_of(&store, agent).await.0,
        7,
        "the 64 newest holds are kept (cursors 7 to 70); the 6 oldest were released"
    );
}

async fn delivery_records_keep_the_first_of_each_stage_and_go_with_their_entries(db: TestDatabase) {
    let store = db.store().await;
    let appended = store
        .append(&[hook(vec![
            push(3, "a/b", "refs/heads/main", '0', '1'),
            push(3, "a/b", "refs/heads/main", '1', '2'),
        ])])
        .await
        .unwrap();
    let seqs: Vec<Seq> = appended
        .entries
        .iter()
        .filter(|e| e.as_push().is_some())
        .map(|e| e.seq)
        .collect();
    let (first, second) = (seqs[0], seqs[1]);
    let record =
        |seq: Seq, agent: i64, stage: DeliveryStage, object: &str, at: i64| DeliveryRecord {
            seq,
            agent: AgentId(agent),
            stage,
            object: object.to_owned(),
            at: UnixMillis(at),
            detail: DeliveryDetail {
                revision: format!("main@sha1:{at}"),
                receivers: vec![ReceiverAnswer {
                    receiver: "apps/podinfo".to_owned(),
                    outcome: "delivered".to_owned(),
                    http_status: 200,
                    attempts: 1,
                    error: String::new(),
                }],
                ..DeliveryDetail::default()
            },
        };
    let source = "GitRepository/apps/podinfo";
    store
        .save_delivery_records(&[
            record(first, 1, DeliveryStage::Acked, "", 10),
            record(first, 1, DeliveryStage::Fetched, source, 20),
            record(first, 2, DeliveryStage::Acked, "", 11),
            // The same stage again in one batch: the first wins.
            record(first, 1, DeliveryStage::Fetched, source, 25),
            record(second, 1, DeliveryStage::Acked, "", 30),
        ])
        .await
        .unwrap();
    // Delivered again after a reconnect: the first time stays.
    store
        .save_delivery_records(&[record(first, 1, DeliveryStage::Acked, "", 99)])
        .await
        .unwrap();
    let found = store.delivery_records(first).await.unwrap();
    assert_eq!(
        found,
        vec![
            record(first, 1, DeliveryStage::Acked, "", 10),
            record(first, 2, DeliveryStage::Acked, "", 11),
            record(first, 1, DeliveryStage::Fetched, source, 20),
        ]
    );
    // A record over a bound is refused, and none of its batch is written.
    let mut oversized = record(second, 2, DeliveryStage::Failed, "Kustomization/apps/x", 40);
    oversized.detail.message = "m".repeat(2000);
    let err = store
        .save_delivery_records(&[record(second, 2, DeliveryStage::Acked, "", 41), oversized])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("message"), "{err}");
    assert_eq!(store.delivery_records(second).await.unwrap().len(), 1);
    // Found by seq and by project.
    assert_eq!(
        store.read_entry(second).await.unwrap().map(|e| e.seq),
        Some(second)
    );
    assert_eq!(
        store
            .recent_pushes_of(ProjectId::new(3).unwrap(), 10)
            .await
            .unwrap(),
        vec![second, first]
    );
    // Retention removes them with their entries.
    store
        .trim(UnixMillis::now().plus(Duration::from_millis(1)))
        .await
        .unwrap();
    assert!(store.delivery_records(first).await.unwrap().is_empty());
    assert!(store.delivery_records(second).await.unwrap().is_empty());
    assert_eq!(store.read_entry(second).await.unwrap(), None);
}

async fn recent_pushes_come_with_their_records(db: TestDatabase) {
    let store = db.store().await;
    assert_eq!(
        store.recent_pushes(10, 100).await.unwrap(),
        fluxgate_store::RecentPushes::default()
    );
    let first = store
        .append(&[hook(vec![push(3, "a/b", "refs/heads/main", '0', '1')])])
        .await
        .unwrap()
        .entries
        .iter()
        .find(|e| e.as_push().is_some())
        .unwrap()
        .seq;
    // Routing changes between the pushes (the catalog learning a project, an agent) are
    // not pushes.
    let (agent, _) = new_agent("dash", "a/config", vec![]);
    store.create_agent(agent).await.unwrap();
    let appended = store
        .append(&[hook(vec![
            push(3, "a/b", "refs/heads/main", '1', '2'),
            push(4, "a/c", "refs/heads/main", '0', '3'),
        ])])
        .await
        .unwrap();
    let pushes: Vec<Seq> = appended
        .entries
        .iter()
        .filter(|e| e.as_push().is_some())
        .map(|e| e.seq)
        .collect();
    let (second, third) = (pushes[0], pushes[1]);
    let record = |seq: Seq, agent: i64, stage: DeliveryStage, at: i64| DeliveryRecord {
        seq,
        agent: AgentId(agent),
        stage,
        object: if stage == DeliveryStage::Acked {
            String::new()
        } else {
            "Kustomization/apps/podinfo".to_owned()
        },
        at: UnixMillis(at),
        detail: DeliveryDetail::default(),
    };
    store
        .save_delivery_records(&[
            record(first, 1, DeliveryStage::Acked, 10),
            record(first, 1, DeliveryStage::Applied, 15),
            record(second, 1, DeliveryStage::Applied, 22),
            record(second, 1, DeliveryStage::Acked, 20),
            record(second, 2, DeliveryStage::Acked, 21),
        ])
        .await
        .unwrap();
    let watermark = store.delivery_watermark(second).await.unwrap();
    assert_eq!(watermark.head, third);
    assert_eq!(watermark.records, 3);
    assert_eq!(watermark.latest_at, Some(UnixMillis(22)));

    let recent = store.recent_pushes(10, 100).await.unwrap();
    assert!(!recent.records_truncated);
    let seqs: Vec<Seq> = recent.pushes.iter().map(|p| p.entry.seq).collect();
    assert_eq!(
        seqs,
        vec![third, second, first],
        "newest first, pushes only"
    );
    assert!(recent.pushes[0].records.is_empty());
    assert_eq!(
        recent.pushes[1].records,
        vec![
            record(second, 1, DeliveryStage::Acked, 20),
            record(second, 2, DeliveryStage::Acked, 21),
            record(second, 1, DeliveryStage::Applied, 22),
        ],
        "oldest first within a push"
    );
    assert_eq!(
        recent.pushes[2].records,
        vec![
            record(first, 1, DeliveryStage::Acked, 10),
            record(first, 1, DeliveryStage::Applied, 15),
        ]
    );
    // The limit keeps the newest pushes.
    let newest: Vec<Seq> = store
        .recent_pushes(2, 100)
        .await
        .unwrap()
        .pushes
        .iter()
        .map(|p| p.entry.seq)
        .collect();
    assert_eq!(newest, vec![third, second]);
    // The record bound drops the oldest pushes' records first, and says so.
    let bounded = store.recent_pushes(10, 3).await.unwrap();
    assert!(bounded.records_truncated);
    assert_eq!(bounded.pushes[1].records.len(), 3);
    assert!(bounded.pushes[2].records.is_empty());

    // A new record of a recent push moves the watermark; one of an older push does not.
    store
        .save_delivery_records(&[record(first, 2, DeliveryStage::Acked, 30)])
        .await
        .unwrap();
    assert_eq!(store.delivery_watermark(second).await.unwrap(), watermark);
    store
        .save_delivery_records(&[record(third, 1, DeliveryStage::Acked, 31)])
        .await
        .unwrap();
    let moved = store.delivery_watermark(second).await.unwrap();
    assert_eq!((moved.records, moved.latest_at), (4, Some(UnixMillis(31))));
}

async fn trim_moves_the_floor(db: TestDatabase) {
    let store = db.store().await;
    store
        .append(&[hook(vec![
            push(1, "a/b", "refs/heads/main", '0', '1'),
            push(1, "a/b", "refs/heads/main", '1', '2'),
        ])])
        .await
        .unwrap();
    let head = store.log_bounds().await.unwrap().head;
    // Nothing is older than the epoch.
    assert_eq!(store.trim(UnixMillis(0)).await.unwrap().floor, Seq::ZERO);
    let bounds = store
        .trim(UnixMillis::now().plus(Duration::from_millis(1)))
        .await
        .unwrap();
    assert_eq!(bounds.floor, head);
    assert!(all_entries(&store).await.is_empty());
    // New entries continue after the floor.
    let result = store
        .append(&[hook(vec![push(1, "a/b", "refs/heads/main", '2', '3')])])
        .await
        .unwrap();
    assert_eq!(result.entries[0].seq, head.next());
}

async fn concurrent_writers_get_unique_gapless_seqs(db: TestDatabase) {
    // Two stores on one database stand for two processes (or two replicas).
    let stores = [db.store().await, db.store().await];
    let mut tasks = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        for n in 0..25 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let id = (i * 100 + n + 1) as i64;
                let record = push(id, &format!("p/{id}"), "refs/heads/main", '0', '1');
                store.append(&[hook(vec![record])]).await.unwrap();
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let entries = all_entries(&stores[0]).await;
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq.get()).collect();
    assert_eq!(
        seqs,
        (1..=100).collect::<Vec<u64>>(),
        "50 pushes, each after its first sighting"
    );
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Seq>>);

impl CommitListener for Recorder {
    fn committed(&self, entries: &[LogEntry]) {
        self.0.lock().extend(entries.iter().map(|e| e.seq));
    }
}

async fn appender_commits_concurrent_hooks_in_order(db: TestDatabase) {
    let store: Arc<dyn Store> = Arc::new(db.store().await);
    let recorder = Arc::new(Recorder::default());
    let (appender, writer) = Appender::spawn(store.clone(), recorder.clone(), 16);
    let mut tasks = Vec::new();
    for n in 1..=40 {
        let appender = appender.clone();
        tasks.push(tokio::spawn(async move {
            let record = push(1, "a/b", &format!("refs/heads/b{n}"), '0', '1');
            appender.append(hook(vec![record])).await.unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap().records[0].seq);
    }
    drop(appender);
    writer.await.unwrap();

    let published = recorder.0.lock().clone();
    let mut sorted = published.clone();
    sorted.sort();
    assert_eq!(published, sorted, "published in seq order");
    assert_eq!(
        published.len(),
        41,
        "40 pushes and the first sighting of the project"
    );
    assert_eq!(published.last(), Some(&Seq(41)));
    let unique: BTreeSet<Seq> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), 40);
    assert!(seqs.iter().all(|seq| published.contains(seq)));
}

async fn one_transaction_sees_its_own_changes(db: TestDatabase) {
    let store = db.store().await;
    let keyed = |key: &str, records| HookBatch {
        idempotency_key: Some(key.to_owned()),
        records,
    };
    let result = store
        .append(&[
            keyed("k1", vec![push(1, "a/app", "refs/heads/main", '0', '1')]),
            keyed("k1", vec![push(1, "a/app", "refs/heads/main", '1', '2')]),
            hook(vec![push(1, "a/app", "refs/heads/main", '0', '1')]),
            hook(vec![catalog(CatalogChange::ProjectRenamed {
                project: project(1, "a/app2", Some(Visibility::Private)),
                old_path: p("a/app"),
            })]),
            hook(vec![push(1, "a/app2", "refs/heads/main", '1', '2')]),
        ])
        .await
        .unwrap();
    let flags: Vec<(u64, bool)> = result
        .outcomes
        .iter()
        .flat_map(|o| o.records.iter().map(|r| (r.seq.get(), r.duplicate)))
        .collect();
    // 1: first sighting, 2: push, 3: duplicate key, 2 again: same change, 3: rename, 4: push.
    assert_eq!(
        flags,
        vec![(2, false), (2, true), (2, true), (3, false), (4, false)]
    );
    // The push under the new path taught the catalog nothing: the rename already had.
    assert_eq!(result.entries.len(), 4);
    assert!(matches!(result.entries[3].record, LogRecord::Push(_)));
    // And the next transaction sees what this one wrote.
    let next = store
        .append(&[
            keyed("k1", vec![]),
            hook(vec![push(1, "a/app2", "refs/heads/main", '1', '2')]),
        ])
        .await
        .unwrap();
    assert!(next.outcomes.iter().all(HookOutcome::all_duplicates));
    assert!(next.entries.is_empty());
}

/// A fresh PostgreSQL test database and its name (for statements run as administrator).
async fn postgres_and_its_name() -> (TestDatabase, String) {
    let db = TestDatabase::postgres().await;
    let name = db
        .postgres_name()
        .expect("a PostgreSQL database")
        .to_owned();
    (db, name)
}

/// A `BEGIN` that ran while its lock did not (here: PostgreSQL's `lock_timeout` while
/// another session holds the log lock) leaves the connection inside a failed transaction;
/// it must be closed, not pooled, or every later append on it fails.
#[tokio::test]
async fn a_failed_locking_begin_does_not_poison_the_pool() {
    let (db, name) = postgres_and_its_name().await;
    db.execute_as_admin(&format!("ALTER DATABASE {name} SET lock_timeout = '200ms'"))
        .await;
    let store = db
        .store_with(StoreOptions {
            max_connections: 1,
            ..StoreOptions::default()
        })
        .await;
    let holder_pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(db.url())
        .await
        .expect("a second session");
    let mut holder = holder_pool.begin().await.expect("begin");
    sqlx::query("UPDATE log_state SET head_seq = head_seq WHERE id = 1")
        .execute(&mut *holder)
        .await
        .expect("hold the log lock");

    let refused = store
        .append(&[hook(vec![push(1, "a/b", "refs/heads/main", '0', '1')])])
        .await;
    assert!(refused.is_err(), "the lock was held: {refused:?}");

    holder.rollback().await.expect("release the log lock");
    let accepted = store
        .append(&[hook(vec![push(1, "a/b", "refs/heads/main", '0', '1')])])
        .await
        .expect("the next append gets a clean connection");
    assert_eq!(accepted.entries.len(), 2);
}

/// On SQLite an append opens and commits its transaction in its own statements (two hops
/// to the connection's thread, `BEGIN IMMEDIATE` with the read and `COMMIT` with the
/// write). One that fails between the two must not hand its connection, still inside the
/// transaction and holding the write lock, to the next append: with a pool of one, the
/// next append would find it and fail ("cannot start a transaction within a transaction").
#[tokio::test]
async fn a_sqlite_append_that_fails_after_its_begin_leaves_no_transaction_open() {
    let db = TestDatabase::sqlite();
    let store = db
        .store_with(StoreOptions {
            max_connections: 1,
            ..StoreOptions::default()
        })
        .await;
    // The write of a push to `poisoned/project` fails after the read began the transaction.
    let mut other = <sqlx::AnyConnection as sqlx::Connection>::connect(db.url())
        .await
        .expect("a second connection");
    sqlx::query(
        "CREATE TRIGGER poisoned BEFORE INSERT ON log_entries \
         WHEN NEW.body LIKE '%poisoned/project%' BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
    )
    .execute(&mut other)
    .await
    .expect("create the trigger");
    sqlx::Connection::close(other).await.expect("close");

    let refused = store
        .append(&[hook(vec![push(
            1,
            "poisoned/project",
            "refs/heads/main",
            '0',
            '1',
        )])])
        .await;
    let err = refused.expect_err("the trigger refuses the write");
    assert!(err.to_string().contains("poisoned"), "{err}");

    let accepted = store
        .append(&[hook(vec![push(2, "a/b", "refs/heads/main", '0', '1')])])
        .await
        .expect("the next append gets a connection outside any transaction");
    assert_eq!(accepted.entries.len(), 2, "the project seen, and its push");
    let bounds = store.log_bounds().await.unwrap();
    assert_eq!(
        bounds.head, accepted.entries[1].seq,
        "nothing of the failed append stayed"
    );
    assert_eq!(accepted.entries[0].seq.get(), 1);
}

/// On PostgreSQL a prepared statement may settle on a generic plan and keep it. The
/// append's lookup of ten ref heads (`OR`ed pairs), prepared while `ref_heads` was nearly
/// empty, kept a generic plan that scanned the whole table as it grew (the PostgreSQL
/// ingest benchmark slowed from ~0.1 ms to ~2 ms per lookup within seconds). Each ref is
/// now looked up by its own primary-key equality, whose generic plan is an index lookup
/// however small the table was.
#[tokio::test]
async fn the_ref_head_lookup_uses_the_index_once_the_table_has_grown() {
    let (db, name) = postgres_and_its_name().await;
    // What PostgreSQL chose in the benchmark, made certain here: a prepared statement's
    // plan is generic, made at its first run.
    db.execute_as_admin(&format!(
        "ALTER DATABASE {name} SET plan_cache_mode = force_generic_plan"
    ))
    .await;
    let options = || StoreOptions {
        max_connections: 1,
        ..StoreOptions::default()
    };
    let mut other = <sqlx::AnyConnection as sqlx::Connection>::connect(db.url())
        .await
        .expect("a second session");
    // The migrations' own scans (building indexes) are counted once their session ended.
    db.store_with(options()).await.close().await;
    let before = ref_heads_scans_once_counted(&mut other, 0).await;

    let store = db.store_with(options()).await;
    // Ten refs a batch, as a busy broker's batches have: on a nearly empty table a
    // sequential scan is as cheap as ten index lookups.
    let batch = |name: &str| {
        let pushes = (0..10)
            .map(|i| push(1, "a/b", &format!("refs/heads/{name}-{i}"), '0', '1'))
            .collect();
        [hook(pushes)]
    };
    store.append(&batch("first")).await.unwrap();
    // Grown behind the planner's back: no ANALYZE, which would make it plan again anyway.
    sqlx::query(
        "INSERT INTO ref_heads (project_id, ref, before_sha, after_sha, seq, received_at) \
         SELECT 1, 'refs/heads/grown' || g, 'b', 'a', 1, 0 FROM generate_series(1, 20000) g",
    )
    .execute(&mut other)
    .await
    .expect("grow ref_heads");
    for n in 0..5 {
        store.append(&batch(&format!("later{n}"))).await.unwrap();
    }
    store.close().await;
    let after = ref_heads_scans_once_counted(&mut other, 20_000 + 60).await;
    assert!(
        after.sequential - before.sequential <= 1,
        "{} sequential scans of ref_heads: the appends after it grew scanned it whole \
         instead of using its primary key",
        after.sequential - before.sequential
    );
}

/// How `ref_heads` has been read so far.
struct TableScans {
    sequential: i64,
}

/// `ref_heads`' scans, once the statistics count at least `inserted` rows inserted: a
/// session's counts reach them when it ends, at the latest.
async fn ref_heads_scans_once_counted(conn: &mut sqlx::AnyConnection, inserted: i64) -> TableScans {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let row = sqlx::query(
            "SELECT CAST(n_tup_ins AS BIGINT) AS inserted, CAST(seq_scan AS BIGINT) AS seq_scans \
             FROM pg_stat_user_tables WHERE relname = 'ref_heads'",
        )
        .fetch_one(&mut *conn)
        .await
        .expect("read the table's statistics");
        let counted: i64 = sqlx::Row::get(&row, "inserted");
        if counted >= inserted {
            return TableScans {
                sequential: sqlx::Row::get(&row, "seq_scans"),
            };
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the statistics never counted {inserted} inserted rows (saw {counted})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Counts the round trips PostgreSQL's clients make through it.
///
/// A TCP forwarder that reads the frontend's side of the wire protocol: after the
/// start-up messages (which carry no type byte), every message is a type byte and a
/// length. A client waits for the server after a `Sync` (`S`, the end of an extended-query
/// exchange) or a simple `Query` (`Q`), so those are its round trips.
struct RoundTripCounter {
    address: std::net::SocketAddr,
    round_trips: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RoundTripCounter {
    async fn start(server: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let round_trips = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = round_trips.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let server = tokio::net::TcpStream::connect(server).await.unwrap();
                    let (client_read, mut client_write) = client.into_split();
                    let (mut server_read, server_write) = server.into_split();
                    let answers = tokio::io::copy(&mut server_read, &mut client_write);
                    let requests = Self::forward_counting(client_read, server_write, counted);
                    let _ = tokio::join!(answers, requests);
                });
            }
        });
        Self {
            address,
            round_trips,
            task,
        }
    }

    async fn forward_counting(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        round_trips: Arc<std::sync::atomic::AtomicUsize>,
    ) -> std::io::Result<()> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        // SSLRequest (answered `N` here: no TLS) and StartupMessage: a length, then a body.
        let mut started = false;
        while !started {
            let length = from.read_u32().await?;
            let mut body = vec![0; length as usize - 4];
            from.read_exact(&mut body).await?;
            const SSL_REQUEST: u32 = 80_877_103;
            started = u32::from_be_bytes(body[..4].try_into().unwrap()) != SSL_REQUEST;
            to.write_u32(length).await?;
            to.write_all(&body).await?;
        }
        loop {
            let kind = from.read_u8().await?;
            let length = from.read_u32().await?;
            let mut body = vec![0; length as usize - 4];
            from.read_exact(&mut body).await?;
            if kind == b'S' || kind == b'Q' {
                round_trips.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            to.write_u8(kind).await?;
            to.write_u32(length).await?;
            to.write_all(&body).await?;
        }
    }

    fn take(&self) -> usize {
        self.round_trips
            .swap(0, std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for RoundTripCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A batch of hooks costs four round trips to PostgreSQL, however many hooks, keys, refs
/// and projects it holds: the `BEGIN` that takes the log lock, one read, one write and
/// the commit (`SqlStore::append`). A statement added back to the transaction fails this.
#[tokio::test]
async fn an_append_is_four_round_trips_to_postgres() {
    let db = TestDatabase::postgres().await;
    let url = url::Url::parse(db.url()).expect("a database URL");
    let server = tokio::net::lookup_host((url.host_str().unwrap(), url.port().unwrap_or(5432)))
        .await
        .unwrap()
        .next()
        .unwrap();
    let counter = RoundTripCounter::start(server).await;
    let mut through_counter = url.clone();
    through_counter.set_ip_host(counter.address.ip()).unwrap();
    through_counter
        .set_port(Some(counter.address.port()))
        .unwrap();
    let store = SqlStore::connect(
        through_counter.as_str(),
        StoreOptions {
            // The kept connection (a pool of one keeps none) carries every append, so the
            // third batch finds the second one's prepared statements.
            max_connections: 2,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    // Keyed pushes to refs of known and new projects, the usual shape of a busy batch.
    let batch = |round: i64| -> Vec<HookBatch> {
        (0..8_i64)
            .map(|n| HookBatch {
                idempotency_key: Some(format!("key-{round}-{n}")),
                records: vec![push(
                    1 + n % 3,
                    &format!("group/p{}", n % 3),
                    &format!("refs/heads/b{n}"),
                    char::from(b'0' + round as u8),
                    char::from(b'1' + round as u8),
                )],
            })
            .collect()
    };
    // The first batch also learns the projects; the second has the steady shape and
    // prepares its statements.
    let first = store.append(&batch(0)).await.unwrap();
    assert_eq!(first.entries.len(), 8 + 3);
    store.append(&batch(1)).await.unwrap();
    counter.take();

    let third = store.append(&batch(2)).await.unwrap();
    assert_eq!(third.entries.len(), 8, "new changes to the same refs");
    assert_eq!(counter.take(), 4);
}

/// The store keeps the connection of the last append for the next one (no pool check in
/// between); one the database dropped meanwhile is noticed and replaced, not used.
#[tokio::test]
async fn an_append_after_the_database_dropped_the_writers_connection_succeeds() {
    let (db, name) = postgres_and_its_name().await;
    let store = db.store().await;
    store
        .append(&[hook(vec![push(1, "a/b", "refs/heads/main", '0', '1')])])
        .await
        .unwrap();
    db.execute_as_admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .await;
    // Idle for longer than the kept connection goes unchecked (100 ms).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let next = store
        .append(&[hook(vec![push(1, "a/b", "refs/heads/main", '1', '2')])])
        .await
        .expect("a fresh connection replaces the dropped one");
    assert_eq!(next.entries.len(), 1);
}

/// With a pool of one connection, the store keeps no connection between appends: every
/// other query would wait for it.
#[tokio::test]
async fn a_pool_of_one_connection_serves_reads_after_an_append() {
    let db = TestDatabase::sqlite();
    let store = db
        .store_with(StoreOptions {
            max_connections: 1,
            acquire_timeout: Duration::from_secs(1),
            ..StoreOptions::default()
        })
        .await;
    store
        .append(&[hook(vec![push(1, "a/b", "refs/heads/main", '0', '1')])])
        .await
        .unwrap();
    let bounds = store
        .log_bounds()
        .await
        .expect("the append's connection is back in the pool");
    assert_eq!(bounds.head, Seq(2));
}
