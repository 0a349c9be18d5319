//! The lock, its lease and its fencing generation, against real SQLite files
//! shared by two stores (as two endstate processes would), and against real
//! processes: our own (alive), a finished child (dead), and a child killed
//! with SIGKILL while it holds the lock.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use endstate_clock::{ManualClock, SharedClock, SystemClock};
use endstate_state::{
    HolderInfo, IntentKind, IntentStatus, NewIntent, RunKind, SqliteStore, StateError, Store,
};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(30);

/// Set in a re-executed test binary: the path of the state file the child
/// must lock.
const CHILD_ENV: &str = "ENDSTATE_STATE_CHILD";

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    manual: ManualClock,
    clock: SharedClock,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let manual = ManualClock::new(Duration::from_secs(1_700_000_000));
    let clock: SharedClock = Arc::new(manual.clone());
    Fixture {
        _dir: dir,
        path,
        manual,
        clock,
    }
}

impl Fixture {
    fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.path, self.clock.clone()).expect("open store")
    }
}

fn locked_by(err: &StateError) -> Option<u32> {
    match err {
        StateError::Locked { pid, .. } => Some(*pid),
        _ => None,
    }
}

#[test]
fn a_live_lease_blocks_a_second_store_until_it_expires_then_the_first_is_fenced() {
    let f = fixture();
    let first = f.store();
    let second = f.store();

    let lease1 = first
        .acquire_lock(&HolderInfo::current("first"), LEASE)
        .expect("first acquires a free lock");
    assert_eq!(lease1.generation(), 1);
    let run = first
        .begin_run(&lease1, RunKind::Apply, "h", "dev")
        .expect("run");
    let intent = first
        .record_intent(
            &lease1,
            &NewIntent {
                run_id: run,
                kind: IntentKind::Launch,
                group: "web".into(),
                zone: None,
                detail: json!({"count": 1}),
            },
        )
        .expect("intent");

    // Our own process is alive, so only expiry can free the lock.
    f.manual.advance(Duration::from_secs(10));
    let err = second
        .acquire_lock(&HolderInfo::current("second"), LEASE)
        .expect_err("a live lease blocks");
    match &err {
        StateError::Locked {
            holder,
            pid,
            host,
            expires_in,
        } => {
            assert_eq!(holder, "first");
            assert_eq!(*pid, std::process::id());
            assert_eq!(host, &HolderInfo::current("x").host);
            assert_eq!(*expires_in, Duration::from_secs(20));
        }
        other => panic!("expected Locked, got {other:?}"),
    }

    // A heartbeat keeps it: 20 s later it is still held.
    let lease1 = first.heartbeat(&lease1).expect("heartbeat");
    assert_eq!(lease1.generation(), 1);
    f.manual.advance(Duration::from_secs(20));
    assert!(locked_by(
        &second
            .acquire_lock(&HolderInfo::current("second"), LEASE)
            .expect_err("renewed lease blocks")
    )
    .is_some());

    // The first holder pauses past its expiry; the second takes over at once.
    f.manual.advance(LEASE);
    let lease2 = second
        .acquire_lock(&HolderInfo::current("second"), LEASE)
        .expect("expired lease is taken over");
    assert_eq!(lease2.generation(), 2);
    let info = second.lock_info().expect("info").expect("held");
    assert_eq!(info.holder.name, "second");
    assert_eq!(info.generation, 2);
    assert_eq!(info.expires_in, Some(LEASE));

    // The first wakes up: every write is fenced and changes nothing.
    let fenced = |r: Result<(), StateError>| {
        assert!(
            matches!(r, Err(StateError::Fenced { generation: 1 })),
            "{r:?}"
        )
    };
    fenced(first.heartbeat(&lease1).map(drop));
    fenced(
        first
            .begin_run(&lease1, RunKind::Apply, "h", "dev")
            .map(drop),
    );
    fenced(first.mark_intent_sent(&lease1, &intent.id));
    fenced(first.complete_intent(&lease1, &intent.id, &json!({"instances": ["i-1"]})));
    fenced(first.abandon_intent(&lease1, &intent.id, "late"));
    fenced(first.finish_run(
        &lease1,
        run,
        &endstate_state::RunOutcome::Succeeded,
        &json!({}),
    ));
    fenced(first.release(&lease1));

    assert_eq!(second.runs(10).expect("runs").len(), 1);
    let open = second.open_intents().expect("open intents");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].status, IntentStatus::Recorded);
    assert_eq!(open[0].result, None);
    assert_eq!(second.runs(10).expect("runs")[0].outcome, None);
    let info = first.lock_info().expect("info").expect("held");
    assert_eq!((info.holder.name.as_str(), info.generation), ("second", 2));

    // The new holder writes normally.
    second
        .complete_intent(&lease2, &intent.id, &json!({"adopted": true}))
        .expect("new holder writes");
}

#[test]
fn an_expired_lease_cannot_write_even_if_nobody_took_over() {
    let f = fixture();
    let store = f.store();
    let lease = store
        .acquire_lock(&HolderInfo::current("t"), LEASE)
        .expect("lock");
    f.manual.advance(LEASE);
    assert!(matches!(
        store.begin_run(&lease, RunKind::Plan, "h", "dev"),
        Err(StateError::Fenced { .. })
    ));
    assert!(matches!(
        store.heartbeat(&lease),
        Err(StateError::Fenced { .. })
    ));
    assert!(store.runs(10).expect("runs").is_empty());
    let info = store.lock_info().expect("info").expect("still recorded");
    assert_eq!(info.expires_in, None);
    // It may still release what nobody else took.
    store.release(&lease).expect("release expired");
    assert!(store.lock_info().expect("info").is_none());
}

#[test]
fn release_frees_the_lock_and_the_next_generation_is_higher() {
    let f = fixture();
    let store = f.store();
    let me = HolderInfo::current("t");
    let lease1 = store.acquire_lock(&me, LEASE).expect("lock");
    store.release(&lease1).expect("release");
    store.release(&lease1).expect("releasing twice is harmless");
    assert!(matches!(
        store.begin_run(&lease1, RunKind::Plan, "h", "dev"),
        Err(StateError::Fenced { .. })
    ));
    let lease2 = f.store().acquire_lock(&me, LEASE).expect("free again");
    assert_eq!(lease2.generation(), 2);
    // A lease from another state file is no proof here, whatever its number.
    let other = fixture();
    let foreign = other.store();
    let first_elsewhere = foreign.acquire_lock(&me, LEASE).expect("lock elsewhere");
    foreign
        .release(&first_elsewhere)
        .expect("release elsewhere");
    let foreign_lease = foreign.acquire_lock(&me, LEASE).expect("relock elsewhere");
    assert_eq!(foreign_lease.generation(), lease2.generation());
    assert!(matches!(
        store.begin_run(&foreign_lease, RunKind::Plan, "h", "dev"),
        Err(StateError::Fenced { .. })
    ));
    assert!(matches!(
        store.release(&foreign_lease),
        Err(StateError::Fenced { .. })
    ));
    store
        .begin_run(&lease2, RunKind::Plan, "h", "dev")
        .expect("the real holder writes");
}

/// A PID that no process has: a child that has run and been reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait true");
    pid
}

/// Records `holder` as the lock's holder through its own store, with a
/// lease far from expiring.
fn lock_as(path: &Path, clock: &SharedClock, holder: &HolderInfo) {
    SqliteStore::open(path, clock.clone())
        .expect("open")
        .acquire_lock(holder, Duration::from_secs(3600))
        .expect("recorded holder");
}

#[test]
fn a_lock_held_by_a_dead_pid_is_taken_over_at_once() {
    let f = fixture();
    let dead = HolderInfo {
        pid: dead_pid(),
        ..HolderInfo::current("crashed apply")
    };
    lock_as(&f.path, &f.clock, &dead);

    let lease = f
        .store()
        .acquire_lock(&HolderInfo::current("next"), LEASE)
        .expect("dead holder's lock is taken at once");
    assert_eq!(lease.generation(), 2);
}

#[test]
fn a_lock_recorded_with_our_pid_but_another_start_time_is_taken_over() {
    let f = fixture();
    let me = HolderInfo::current("me");
    let reused = HolderInfo {
        name: "previous owner of this pid".into(),
        started: me.started + 1,
        ..me.clone()
    };
    lock_as(&f.path, &f.clock, &reused);
    let lease = f
        .store()
        .acquire_lock(&me, LEASE)
        .expect("a reused pid is not the holder");
    assert_eq!(lease.generation(), 2);
}

#[test]
fn a_lock_from_before_a_reboot_is_taken_over() {
    let f = fixture();
    let before_reboot = HolderInfo {
        boot_id: "11111111-2222-3333-4444-555555555555".into(),
        ..HolderInfo::current("old")
    };
    lock_as(&f.path, &f.clock, &before_reboot);
    f.store()
        .acquire_lock(&HolderInfo::current("new"), LEASE)
        .expect("rebooted holder is dead");
}

#[test]
fn a_dead_pid_on_another_host_still_blocks_until_expiry() {
    let f = fixture();
    let remote = HolderInfo {
        host: "elsewhere.invalid".into(),
        pid: dead_pid(),
        ..HolderInfo::current("remote")
    };
    lock_as(&f.path, &f.clock, &remote);
    let store = f.store();
    let err = store
        .acquire_lock(&HolderInfo::current("local"), LEASE)
        .expect_err("cannot judge a remote process");
    assert_eq!(locked_by(&err), Some(remote.pid));
    f.manual.advance(Duration::from_secs(3600));
    store
        .acquire_lock(&HolderInfo::current("local"), LEASE)
        .expect("expired");
}

/// Not a test on its own: run by `a_holder_killed_with_sigkill_is_taken_over_at_once`
/// in a child process (the test binary re-executed with `ENDSTATE_STATE_CHILD`
/// set). There it takes the lock with a long lease and sleeps until killed.
/// In a normal run the variable is unset and it returns at once.
#[test]
fn child_process_holds_the_lock_until_killed() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = SqliteStore::open(path, SystemClock::shared()).expect("child opens");
    store
        .acquire_lock(&HolderInfo::current("child"), Duration::from_secs(3600))
        .expect("child acquires");
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_holder_killed_with_sigkill_is_taken_over_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let clock = SystemClock::shared();
    let store = SqliteStore::open(&path, clock).expect("open");

    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            concat!(
                module_path!(),
                "::child_process_holds_the_lock_until_killed"
            )
            .split_once("::")
            .map_or("", |(_, name)| name),
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let child_pid = child.id();

    // Wait until the child holds the lock.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(info) = store.lock_info().expect("lock_info") {
            if info.holder.pid == child_pid {
                break;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("child exited before taking the lock: {status}");
        }
        assert!(Instant::now() < deadline, "child never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = store
        .acquire_lock(&HolderInfo::current("parent"), LEASE)
        .expect_err("the live child holds it");
    assert_eq!(locked_by(&err), Some(child_pid));

    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");

    let lease = store
        .acquire_lock(&HolderInfo::current("parent"), LEASE)
        .expect("a killed holder's lock is taken at once, long before its hour is up");
    assert_eq!(lease.generation(), 2);
}
