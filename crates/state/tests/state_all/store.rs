//! The store against real SQLite files in temporary directories: schema
//! migrations on open, runs history, and the intent journal across reopen.
//! Lock and fencing behaviour is in `lock.rs`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use endstate_clock::{ManualClock, SharedClock};
use endstate_state::{
    HolderInfo, IntentKind, IntentStatus, NewIntent, RunKind, RunOutcome, SqliteStore, StateError,
    Store,
};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(30);

fn clock() -> (ManualClock, SharedClock) {
    let clock = ManualClock::new(Duration::from_secs(1_700_000_000));
    let shared: SharedClock = Arc::new(clock.clone());
    (clock, shared)
}

fn user_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .expect("open raw")
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version")
}

fn launch(run_id: endstate_state::RunId, group: &str, count: u32) -> NewIntent {
    NewIntent {
        run_id,
        kind: IntentKind::Launch,
        group: group.into(),
        zone: Some("eu-west-1a".into()),
        detail: json!({ "count": count, "instance_type": "t3.micro" }),
    }
}

#[test]
fn open_creates_directories_and_migrates_an_empty_file_then_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested/deeper/state.db");
    let (_, clock) = clock();
    {
        let store = SqliteStore::open(&path, clock.clone()).expect("open new file");
        assert!(store.runs(10).expect("runs").is_empty());
        assert!(store.lock_info().expect("lock_info").is_none());
    }
    assert_eq!(user_version(&path), SqliteStore::schema_version());
    let journal_mode: String = rusqlite::Connection::open(&path)
        .expect("open raw")
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(journal_mode, "wal");

    // Reopen: no migration runs again, nothing breaks.
    let store = SqliteStore::open(&path, clock).expect("reopen");
    assert!(store.open_intents().expect("open_intents").is_empty());
    assert_eq!(user_version(&path), SqliteStore::schema_version());
}

#[test]
fn an_empty_file_created_elsewhere_is_migrated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    std::fs::write(&path, b"").expect("touch");
    assert_eq!(user_version(&path), 0);
    let (_, clock) = clock();
    SqliteStore::open(&path, clock).expect("open empty file");
    assert_eq!(user_version(&path), SqliteStore::schema_version());
}

#[test]
fn a_file_from_a_newer_endstate_is_refused_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let (_, clock) = clock();
    drop(SqliteStore::open(&path, clock.clone()).expect("open"));
    let future = SqliteStore::schema_version() + 7;
    rusqlite::Connection::open(&path)
        .expect("open raw")
        .pragma_update(None, "user_version", future)
        .expect("set version");

    let err = SqliteStore::open(&path, clock).expect_err("must refuse");
    match &err {
        StateError::NewerSchema {
            found, supported, ..
        } => {
            assert_eq!(*found, future);
            assert_eq!(*supported, SqliteStore::schema_version());
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    assert!(err.to_string().contains("upgrade endstate"), "{err}");
    assert_eq!(user_version(&path), future);
}

#[test]
fn runs_are_recorded_finished_once_and_listed_newest_first() {
    let (manual, clock) = clock();
    let store = SqliteStore::open_in_memory(clock).expect("open");
    let lease = store
        .acquire_lock(&HolderInfo::current("test"), LEASE)
        .expect("lock");

    let plan = store
        .begin_run(&lease, RunKind::Plan, "abc", "dev")
        .expect("begin plan");
    manual.advance(Duration::from_secs(2));
    store
        .finish_run(&lease, plan, &RunOutcome::Succeeded, &json!({"changes": 3}))
        .expect("finish plan");
    let apply = store
        .begin_run(&lease, RunKind::Apply, "abc", "dev")
        .expect("begin apply");
    store
        .finish_run(
            &lease,
            apply,
            &RunOutcome::Failed("throttled".into()),
            &json!({}),
        )
        .expect("finish apply");
    let destroy = store
        .begin_run(&lease, RunKind::Destroy, "abc", "dev")
        .expect("begin destroy");

    assert!(matches!(
        store.finish_run(&lease, plan, &RunOutcome::Interrupted, &json!({})),
        Err(StateError::RunAlreadyFinished(id)) if id == plan
    ));
    let ghost = endstate_state::RunId(999);
    assert!(matches!(
        store.finish_run(&lease, ghost, &RunOutcome::Interrupted, &json!({})),
        Err(StateError::UnknownRun(id)) if id == ghost
    ));

    let runs = store.runs(10).expect("runs");
    let ids: Vec<_> = runs.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![destroy, apply, plan]);
    assert_eq!(runs[0].outcome, None);
    assert_eq!(runs[0].finished_at, None);
    assert_eq!(
        runs[1].outcome,
        Some(RunOutcome::Failed("throttled".into()))
    );
    let plan_run = &runs[2];
    assert_eq!(plan_run.kind, RunKind::Plan);
    assert_eq!(plan_run.outcome, Some(RunOutcome::Succeeded));
    assert_eq!(plan_run.summary, Some(json!({"changes": 3})));
    assert_eq!(plan_run.generation, lease.generation());
    assert_eq!(
        plan_run.finished_at.expect("finished") - plan_run.started_at,
        Duration::from_secs(2)
    );
    assert_eq!(store.runs(1).expect("runs").len(), 1);
}

#[test]
fn intents_survive_reopen_and_only_open_ones_are_listed_in_recording_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let (manual, clock) = clock();

    let (run, ids) = {
        let store = SqliteStore::open(&path, clock.clone()).expect("open");
        let lease = store
            .acquire_lock(&HolderInfo::current("test"), LEASE)
            .expect("lock");
        let run = store
            .begin_run(&lease, RunKind::Apply, "h", "prod")
            .expect("run");
        // Same timestamp for all: order must come from recording, not time.
        let a = store
            .record_intent(&lease, &launch(run, "web", 2))
            .expect("a");
        let b = store
            .record_intent(&lease, &launch(run, "api", 1))
            .expect("b");
        let c = store
            .record_intent(&lease, &launch(run, "db", 1))
            .expect("c");
        let d = store
            .record_intent(&lease, &launch(run, "web", 5))
            .expect("d");
        let e = store
            .record_intent(
                &lease,
                &NewIntent {
                    run_id: run,
                    kind: IntentKind::Terminate,
                    group: "old".into(),
                    zone: None,
                    detail: json!({ "instance_ids": ["i-0abc"] }),
                },
            )
            .expect("e");

        assert_eq!(a.status, IntentStatus::Recorded);
        assert_eq!(a.id.as_str().len(), 32);
        assert!(a.id.as_str().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.id, b.id);

        manual.advance(Duration::from_secs(1));
        store.mark_intent_sent(&lease, &a.id).expect("a sent");
        store.mark_intent_sent(&lease, &b.id).expect("b sent");
        store
            .complete_intent(&lease, &b.id, &json!({ "instances": ["i-1"] }))
            .expect("b done");
        store
            .abandon_intent(&lease, &c.id, "plan changed")
            .expect("c abandoned");
        // Sending again (a retry with the same token) is allowed.
        store.mark_intent_sent(&lease, &a.id).expect("a resent");
        // Nothing moves a finished intent.
        assert!(matches!(
            store.complete_intent(&lease, &c.id, &json!(null)),
            Err(StateError::InvalidTransition {
                from: IntentStatus::Abandoned,
                to: IntentStatus::Completed,
                ..
            })
        ));
        assert!(matches!(
            store.mark_intent_sent(&lease, &b.id),
            Err(StateError::InvalidTransition {
                from: IntentStatus::Completed,
                ..
            })
        ));
        let ghost = endstate_state::IntentId::from_string("ffff");
        assert!(matches!(
            store.mark_intent_sent(&lease, &ghost),
            Err(StateError::UnknownIntent(_))
        ));
        assert!(matches!(
            store.record_intent(&lease, &launch(endstate_state::RunId(404), "x", 1)),
            Err(StateError::UnknownRun(_))
        ));
        // The process "crashes" here: no release.
        (run, vec![a, d, e])
    };

    let store = SqliteStore::open(&path, clock).expect("reopen");
    let open = store.open_intents().expect("open_intents");
    let open_ids: Vec<_> = open.iter().map(|i| i.id.clone()).collect();
    let want: Vec<_> = ids.iter().map(|i| i.id.clone()).collect();
    assert_eq!(open_ids, want);

    let a = &open[0];
    assert_eq!(a.status, IntentStatus::Sent);
    assert_eq!(a.run_id, run);
    assert_eq!(a.group, "web");
    assert_eq!(a.zone.as_deref(), Some("eu-west-1a"));
    assert_eq!(a.detail, json!({ "count": 2, "instance_type": "t3.micro" }));
    assert_eq!(a.sent_at, Some(a.recorded_at + Duration::from_secs(1)));
    assert_eq!(open[1].status, IntentStatus::Recorded);
    assert_eq!(open[2].kind, IntentKind::Terminate);
    assert_eq!(open[2].zone, None);
}

#[test]
fn a_store_can_be_shared_across_blocking_tasks() {
    fn shareable<T: Send + Sync + 'static>(_: &T) {}
    let (_, clock) = clock();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory(clock).expect("open"));
    shareable(&store);
    let lease = store
        .acquire_lock(&HolderInfo::current("test"), LEASE)
        .expect("lock");
    let handle = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || store.begin_run(&lease, RunKind::Plan, "h", "dev"))
    };
    handle
        .join()
        .expect("thread")
        .expect("write from another thread");
    assert_eq!(store.runs(5).expect("runs").len(), 1);
}
