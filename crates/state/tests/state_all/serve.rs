//! What `endstate serve` keeps, against real SQLite files in temporary
//! directories: the event log (order, group filter, fencing, pruning), API
//! tokens (hashed, verified, revoked, no plaintext on disk) and per-group
//! controller state (round trip, fencing).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use endstate_clock::{ManualClock, SharedClock};
use endstate_state::{
    HolderInfo, NewEvent, RunKind, RunOutcome, SqliteStore, StateError, Store, DEFAULT_EVENT_LIMIT,
    TOKEN_PREFIX,
};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(30);

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

fn lock(store: &SqliteStore) -> endstate_state::Lease {
    store
        .acquire_lock(&HolderInfo::current("endstate serve"), LEASE)
        .expect("acquire")
}

fn event(at_ms: i64, group: &str, subject: &str) -> NewEvent {
    NewEvent {
        at_ms,
        group: group.into(),
        kind: "scale".into(),
        subject: subject.into(),
        reason: format!("{group} is below its desired capacity"),
        data: json!({ "from": 2, "to": 3 }),
    }
}

fn subjects(events: &[endstate_state::StoredEvent]) -> Vec<&str> {
    events.iter().map(|e| e.subject.as_str()).collect()
}

#[test]
fn events_are_read_back_in_order_resumably_and_by_group() {
    let f = fixture();
    let store = f.store();
    let lease = lock(&store);
    let first = store
        .append_events(
            &lease,
            &[
                event(1, "web", "w1"),
                event(2, "db", "d1"),
                event(3, "web", "w2"),
            ],
        )
        .expect("append");
    let second = store
        .append_events(&lease, &[event(4, "db", "d2")])
        .expect("append");
    assert_eq!(first.len(), 3);
    assert!(first.windows(2).all(|w| w[0] < w[1]), "{first:?}");
    assert!(second[0] > first[2]);
    assert!(store
        .append_events(&lease, &[])
        .expect("append nothing")
        .is_empty());

    // Readers need no lock: another store on the same file reads.
    let reader = f.store();
    let all = reader.events_after(0, 100, None).expect("all");
    assert_eq!(subjects(&all), ["w1", "d1", "w2", "d2"]);
    assert_eq!(all[0], {
        let e = event(1, "web", "w1");
        endstate_state::StoredEvent {
            seq: first[0],
            at_ms: e.at_ms,
            group: e.group,
            kind: e.kind,
            subject: e.subject,
            reason: e.reason,
            data: e.data,
        }
    });

    let page = reader.events_after(0, 2, None).expect("page");
    assert_eq!(subjects(&page), ["w1", "d1"]);
    let rest = reader.events_after(page[1].seq, 100, None).expect("resume");
    assert_eq!(subjects(&rest), ["w2", "d2"]);

    let web = reader.events_after(0, 100, Some("web")).expect("web");
    assert_eq!(subjects(&web), ["w1", "w2"]);
    let web_after = reader
        .events_after(web[0].seq, 100, Some("web"))
        .expect("web after");
    assert_eq!(subjects(&web_after), ["w2"]);
    assert!(reader
        .events_after(0, 100, Some("cache"))
        .expect("none")
        .is_empty());
}

#[test]
fn a_holder_taken_over_can_append_no_events_and_store_no_group_state() {
    let f = fixture();
    let old = f.store();
    let stale = lock(&old);
    old.put_group_state(&stale, "web", &json!({ "desired": 3 }))
        .expect("put while holding");
    f.manual.advance(LEASE + Duration::from_secs(1));
    let new = f.store();
    let current = lock(&new);
    assert!(current.generation() > stale.generation());

    let err = old
        .append_events(&stale, &[event(1, "web", "w1")])
        .expect_err("fenced append");
    assert!(matches!(err, StateError::Fenced { .. }), "{err:?}");
    let err = old
        .put_group_state(&stale, "web", &json!({ "desired": 99 }))
        .expect_err("fenced put");
    assert!(matches!(err, StateError::Fenced { .. }), "{err:?}");
    let err = old
        .delete_group_state(&stale, "web")
        .expect_err("fenced delete");
    assert!(matches!(err, StateError::Fenced { .. }), "{err:?}");

    // Nothing the stale holder tried was written.
    assert!(new.events_after(0, 10, None).expect("events").is_empty());
    assert_eq!(
        new.group_states().expect("states")["web"],
        json!({ "desired": 3 })
    );
    // The new holder writes.
    new.append_events(&current, &[event(2, "web", "w2")])
        .expect("append by the new holder");
}

#[test]
fn pruning_keeps_the_newest_events_up_to_the_limit() {
    let f = fixture();
    let store = f.store().with_event_limit(5);
    let lease = lock(&store);
    let mut seqs = Vec::new();
    for batch in 0..4 {
        let events: Vec<_> = (0..3)
            .map(|i| event(batch * 3 + i, "web", &format!("e{}", batch * 3 + i)))
            .collect();
        seqs.extend(store.append_events(&lease, &events).expect("append"));
    }
    let kept = store.events_after(0, 100, None).expect("read");
    assert_eq!(subjects(&kept), ["e7", "e8", "e9", "e10", "e11"]);
    assert_eq!(kept[0].seq, seqs[7]);

    // A batch larger than the limit keeps only its own newest.
    let big: Vec<_> = (0..8)
        .map(|i| event(100 + i, "db", &format!("b{i}")))
        .collect();
    let big_seqs = store.append_events(&lease, &big).expect("big batch");
    let kept = store.events_after(0, 100, None).expect("read");
    assert_eq!(subjects(&kept), ["b3", "b4", "b5", "b6", "b7"]);
    // Seqs are never reused, even after pruning and reopening.
    store.release(&lease).expect("release");
    drop(store);
    let store = f.store();
    let lease = lock(&store);
    let next = store
        .append_events(&lease, &[event(200, "web", "after")])
        .expect("append after reopen");
    assert!(next[0] > big_seqs[7], "{next:?} after {big_seqs:?}");
}

#[test]
fn the_default_limit_keeps_exactly_one_hundred_thousand_events() {
    assert_eq!(DEFAULT_EVENT_LIMIT, 100_000);
    let f = fixture();
    let store = f.store();
    let lease = lock(&store);
    let events: Vec<_> = (0..DEFAULT_EVENT_LIMIT as i64)
        .map(|i| NewEvent {
            at_ms: i,
            group: "web".into(),
            kind: "k".into(),
            subject: i.to_string(),
            reason: String::new(),
            data: json!(null),
        })
        .collect();
    let seqs = store.append_events(&lease, &events).expect("append 100k");
    let extra = store
        .append_events(
            &lease,
            &[event(0, "web", "newest"), event(0, "web", "newer")],
        )
        .expect("append past the limit");
    let oldest = store.events_after(0, 1, None).expect("oldest");
    assert_eq!(oldest[0].seq, seqs[2], "the two oldest were pruned");
    let tail = store
        .events_after(seqs[DEFAULT_EVENT_LIMIT - 2], 10, None)
        .expect("tail");
    assert_eq!(tail.last().map(|e| e.seq), Some(extra[1]));
    let all = store
        .events_after(0, DEFAULT_EVENT_LIMIT + 10, None)
        .expect("all");
    assert_eq!(all.len(), DEFAULT_EVENT_LIMIT);
}

fn file_bytes(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).expect("read db");
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        if let Ok(more) = std::fs::read(PathBuf::from(side)) {
            bytes.extend(more);
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn tokens_verify_until_revoked_and_only_their_hash_is_on_disk() {
    let f = fixture();
    let store = f.store();
    // Tokens need no lock: a controller holds it while the CLI makes one.
    let other = f.store();
    let _lease = lock(&other);

    assert_eq!(store.token_count().expect("count"), 0);
    let err = store.create_token("  ").expect_err("blank name");
    assert!(matches!(err, StateError::EmptyTokenName), "{err:?}");
    let (ci, ci_plain) = store.create_token("ci").expect("create ci");
    let (ops, ops_plain) = store.create_token("ops").expect("create ops");
    assert!(ci_plain.starts_with(TOKEN_PREFIX));
    assert_ne!(ci_plain, ops_plain);
    assert_eq!(
        (ci.name.as_str(), ci.revoked, ci.last_used_ms),
        ("ci", false, None)
    );
    assert_eq!(store.token_count().expect("count"), 2);

    let verified = store
        .verify_token(&ci_plain)
        .expect("verify")
        .expect("valid token");
    assert_eq!(verified.id, ci.id);
    let first_use = verified.last_used_ms.expect("use recorded");
    // Within the minute the use is not rewritten; after it, it is.
    f.manual.advance(Duration::from_secs(10));
    let again = store
        .verify_token(&ci_plain)
        .expect("verify")
        .expect("valid");
    assert_eq!(again.last_used_ms, Some(first_use));
    f.manual.advance(Duration::from_secs(60));
    let later = store
        .verify_token(&ci_plain)
        .expect("verify")
        .expect("valid");
    assert_eq!(later.last_used_ms, Some(first_use + 70_000));

    let mut wrong = ci_plain.clone();
    wrong.pop();
    wrong.push(if ci_plain.ends_with('0') { '1' } else { '0' });
    assert_eq!(store.verify_token(&wrong).expect("verify"), None);
    assert_eq!(store.verify_token("").expect("verify"), None);

    assert!(store.revoke_token(ci.id).expect("revoke"));
    assert!(store.revoke_token(ci.id).expect("revoke twice"));
    assert!(!store.revoke_token(9_999).expect("revoke unknown"));
    assert_eq!(store.verify_token(&ci_plain).expect("verify"), None);
    assert!(store.verify_token(&ops_plain).expect("verify").is_some());
    assert_eq!(store.token_count().expect("count"), 1);
    let listed = store.list_tokens().expect("list");
    assert_eq!(
        listed
            .iter()
            .map(|t| (t.id, t.name.as_str(), t.revoked))
            .collect::<Vec<_>>(),
        [(ci.id, "ci", true), (ops.id, "ops", false)]
    );

    // Closing every connection checkpoints the WAL into the file.
    drop(store);
    drop(other);
    let bytes = file_bytes(&f.path);
    for plain in [&ci_plain, &ops_plain] {
        let secret = plain.trim_start_matches(TOKEN_PREFIX);
        assert!(!contains(&bytes, secret), "plaintext token on disk");
        // The hash is there: the test reads what the store wrote.
        use sha2::Digest;
        let hash = hex::encode(sha2::Sha256::digest(plain.as_bytes()));
        assert!(contains(&bytes, &hash), "hash of the token not on disk");
    }
}

#[test]
fn group_state_round_trips_across_reopen_and_is_deleted() {
    let f = fixture();
    {
        let store = f.store();
        let lease = lock(&store);
        store
            .put_group_state(&lease, "web", &json!({ "desired": 3, "paused": false }))
            .expect("put web");
        store
            .put_group_state(&lease, "db", &json!({ "desired": 1 }))
            .expect("put db");
        store
            .put_group_state(&lease, "web", &json!({ "desired": 5, "paused": true }))
            .expect("replace web");
        store.release(&lease).expect("release");
    }
    let store = f.store();
    let states = store.group_states().expect("states");
    assert_eq!(
        states.into_iter().collect::<Vec<_>>(),
        [
            ("db".to_string(), json!({ "desired": 1 })),
            ("web".to_string(), json!({ "desired": 5, "paused": true })),
        ]
    );
    let lease = lock(&store);
    store.delete_group_state(&lease, "db").expect("delete");
    store
        .delete_group_state(&lease, "db")
        .expect("delete again");
    assert_eq!(
        store
            .group_states()
            .expect("states")
            .keys()
            .collect::<Vec<_>>(),
        ["web"]
    );
}

#[test]
fn a_serve_run_is_recorded() {
    let f = fixture();
    let store = f.store();
    let lease = lock(&store);
    let run = store
        .begin_run(&lease, RunKind::Serve, "hash", "prod")
        .expect("begin serve");
    store
        .finish_run(&lease, run, &RunOutcome::Interrupted, &json!({}))
        .expect("finish");
    let runs = store.runs(1).expect("runs");
    assert_eq!(runs[0].kind, RunKind::Serve);
    assert_eq!(RunKind::Serve.as_str(), "serve");
    assert_eq!("serve".parse::<RunKind>().expect("parse"), RunKind::Serve);
}
