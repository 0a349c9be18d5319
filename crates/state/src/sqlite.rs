//! [`SqliteStore`]: the [`Store`] in one SQLite file (WAL mode), or in memory
//! for tests.
//!
//! Every write runs in an `IMMEDIATE` transaction (SQLite's write lock taken
//! at `BEGIN`), which first checks the caller's lease against the lock row
//! and then writes; so no takeover can slip between the check and the write.
//! Two processes (or two stores in one process) on the same file are safe:
//! SQLite serializes them, and `busy_timeout` makes the second wait rather
//! than fail.
//!
//! This module does not decide what a dead holder is (see
//! [`crate::liveness`]) nor what the rows mean (see the value modules).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use endstate_clock::SharedClock;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use crate::error::StateError;
use crate::event::{NewEvent, StoredEvent, DEFAULT_EVENT_LIMIT};
use crate::intent::{Intent, IntentId, IntentStatus, NewIntent};
use crate::liveness;
use crate::lock::{HolderInfo, Lease, LockInfo};
use crate::migrations;
use crate::run::{Run, RunId, RunKind, RunOutcome};
use crate::token::{self, TokenInfo, LAST_USED_RESOLUTION_MS};
use crate::Store;

/// How long a write waits for another connection's write transaction before
/// giving up with a busy error. Writes here are tiny, so waiting this long
/// means something is wrong, but a loaded machine can stall a few seconds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The state in SQLite. Cheap to share: wrap in an `Arc`.
pub struct SqliteStore {
    // A Mutex makes the store Sync, so `Arc<SqliteStore>` can be moved into
    // `spawn_blocking` closures without the caller adding its own lock.
    conn: Mutex<Connection>,
    clock: SharedClock,
    path: String,
    event_limit: usize,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it and its parent directories if need be) the state
    /// file at `path`, in WAL mode, and migrates it to the newest schema.
    ///
    /// Errors: [`StateError::CreateDir`], [`StateError::NewerSchema`] for a
    /// file from a newer endstate, [`StateError::Sqlite`].
    pub fn open(path: impl AsRef<Path>, clock: SharedClock) -> Result<Self, StateError> {
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StateError::CreateDir {
                path: parent.to_owned(),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL lets readers (`endstate status`) run beside a writer.
        // synchronous=FULL makes each commit durable across power loss, not
        // just process death: an intent must be on disk before its call is
        // made, or a launched instance could leak.
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StateError::NoWal {
                path: path.to_owned(),
                mode,
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        Self::finish_open(conn, clock, path.display().to_string())
    }

    /// A fresh store in memory, for tests: nothing survives it.
    pub fn open_in_memory(clock: SharedClock) -> Result<Self, StateError> {
        Self::finish_open(Connection::open_in_memory()?, clock, ":memory:".to_owned())
    }

    fn finish_open(
        mut conn: Connection,
        clock: SharedClock,
        path: String,
    ) -> Result<Self, StateError> {
        // Migrations rebuild tables, which needs foreign keys unenforced
        // (see `migrations`); they are checked before each script commits.
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        migrations::migrate(&mut conn, &path)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            clock,
            path,
            event_limit: DEFAULT_EVENT_LIMIT,
        })
    }

    /// Keeps at most `limit` events (at least one) instead of
    /// [`DEFAULT_EVENT_LIMIT`]: for tests of pruning, and for small disks.
    pub fn with_event_limit(mut self, limit: usize) -> Self {
        self.event_limit = limit.max(1);
        self
    }

    /// The schema version this build writes.
    pub fn schema_version() -> i64 {
        migrations::latest_version()
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // Every write is one transaction that rolls back when dropped, so a
        // panic while holding the mutex cannot leave the connection
        // half-written; poisoning is safe to ignore.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> i64 {
        to_ms(self.clock.now())
    }

    /// Runs `write` in one IMMEDIATE transaction after checking that `lease`
    /// still holds; commits only if both succeed.
    fn write<T>(
        &self,
        lease: &Lease,
        write: impl FnOnce(&Transaction<'_>, i64) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = self.now_ms();
        check_fence(&tx, lease, now)?;
        let out = write(&tx, now)?;
        tx.commit()?;
        Ok(out)
    }

    fn set_intent_status(
        &self,
        lease: &Lease,
        id: &IntentId,
        to: IntentStatus,
        apply: impl FnOnce(&Transaction<'_>, i64) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        self.write(lease, |tx, now| {
            let from: Option<String> = tx
                .query_row(
                    "SELECT status FROM intents WHERE id = ?1",
                    [id.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            let from: IntentStatus = from
                .ok_or_else(|| StateError::UnknownIntent(id.clone()))?
                .parse()?;
            if !from.may_become(to) {
                return Err(StateError::InvalidTransition {
                    id: id.clone(),
                    from,
                    to,
                });
            }
            apply(tx, now)
        })
    }
}

/// Durations since the epoch are stored as whole milliseconds. Past
/// i64::MAX ms (292 million years) they saturate.
fn to_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn from_ms(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The lock row, as stored.
struct LockRow {
    generation: u64,
    token: String,
    held: bool,
    holder: HolderInfo,
    acquired_at_ms: i64,
    expires_at_ms: i64,
}

fn read_lock(conn: &Connection) -> Result<Option<LockRow>, StateError> {
    Ok(conn
        .query_row(
            "SELECT generation, token, held, holder_name, holder_pid, holder_host,
                    holder_boot_id, holder_started, acquired_at_ms, expires_at_ms
             FROM state_lock WHERE id = 1",
            [],
            |r| {
                Ok(LockRow {
                    generation: to_u64(r.get(0)?),
                    token: r.get(1)?,
                    held: r.get(2)?,
                    holder: HolderInfo {
                        name: r.get(3)?,
                        pid: u32::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                        host: r.get(5)?,
                        boot_id: r.get(6)?,
                        started: to_u64(r.get(7)?),
                    },
                    acquired_at_ms: r.get(8)?,
                    expires_at_ms: r.get(9)?,
                })
            },
        )
        .optional()?)
}

/// The fence: `lease` may write only while the lock is held under its
/// generation and token and has not expired at `now_ms`.
fn check_fence(tx: &Transaction<'_>, lease: &Lease, now_ms: i64) -> Result<(), StateError> {
    let holds = read_lock(tx)?.is_some_and(|row| {
        row.held
            && row.generation == lease.generation
            && row.token == lease.token
            && now_ms < row.expires_at_ms
    });
    if holds {
        Ok(())
    } else {
        Err(StateError::Fenced {
            generation: lease.generation,
        })
    }
}

fn json_text(value: &serde_json::Value) -> String {
    // Serializing a Value to a String cannot fail: it has no non-string map
    // keys and writes to memory.
    value.to_string()
}

fn parse_json(column: &str, text: Option<String>) -> Result<Option<serde_json::Value>, StateError> {
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| StateError::Corrupt(format!("{column} is not JSON: {e}")))
    })
    .transpose()
}

const RUN_COLUMNS: &str = "id, kind, spec_hash, environment, generation, started_at_ms,
                           finished_at_ms, outcome, failure, summary";

/// A run row, before its text columns are parsed.
type RawRun = (
    i64,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn raw_run(r: &Row<'_>) -> rusqlite::Result<RawRun> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
    ))
}

fn run_from_raw(raw: RawRun) -> Result<Run, StateError> {
    let (
        id,
        kind,
        spec_hash,
        environment,
        generation,
        started,
        finished,
        outcome,
        failure,
        summary,
    ) = raw;
    Ok(Run {
        id: RunId(id),
        kind: kind.parse::<RunKind>()?,
        spec_hash,
        environment,
        generation: to_u64(generation),
        started_at: from_ms(started),
        finished_at: finished.map(from_ms),
        outcome: outcome
            .map(|o| RunOutcome::from_parts(&o, failure))
            .transpose()?,
        summary: parse_json("runs.summary", summary)?,
    })
}

const INTENT_COLUMNS: &str = "id, run_id, kind, group_name, zone, detail, status, generation,
                              recorded_at_ms, sent_at_ms, finished_at_ms, result, abandon_reason";

/// An intent row, before its text columns are parsed.
struct RawIntent {
    id: String,
    run_id: i64,
    kind: String,
    group: String,
    zone: Option<String>,
    detail: String,
    status: String,
    generation: i64,
    recorded_at: i64,
    sent_at: Option<i64>,
    finished_at: Option<i64>,
    result: Option<String>,
    abandon_reason: Option<String>,
}

fn raw_intent(r: &Row<'_>) -> rusqlite::Result<RawIntent> {
    Ok(RawIntent {
        id: r.get(0)?,
        run_id: r.get(1)?,
        kind: r.get(2)?,
        group: r.get(3)?,
        zone: r.get(4)?,
        detail: r.get(5)?,
        status: r.get(6)?,
        generation: r.get(7)?,
        recorded_at: r.get(8)?,
        sent_at: r.get(9)?,
        finished_at: r.get(10)?,
        result: r.get(11)?,
        abandon_reason: r.get(12)?,
    })
}

fn intent_from_raw(raw: RawIntent) -> Result<Intent, StateError> {
    Ok(Intent {
        id: IntentId::from_string(raw.id),
        run_id: RunId(raw.run_id),
        kind: raw.kind.parse()?,
        group: raw.group,
        zone: raw.zone,
        detail: parse_json("intents.detail", Some(raw.detail))?.unwrap_or_default(),
        status: raw.status.parse()?,
        generation: to_u64(raw.generation),
        recorded_at: from_ms(raw.recorded_at),
        sent_at: raw.sent_at.map(from_ms),
        finished_at: raw.finished_at.map(from_ms),
        result: parse_json("intents.result", raw.result)?,
        abandon_reason: raw.abandon_reason,
    })
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const EVENT_COLUMNS: &str = "seq, at_ms, group_name, kind, subject, reason, data";

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<(StoredEvent, String)> {
    Ok((
        StoredEvent {
            seq: r.get(0)?,
            at_ms: r.get(1)?,
            group: r.get(2)?,
            kind: r.get(3)?,
            subject: r.get(4)?,
            reason: r.get(5)?,
            data: serde_json::Value::Null,
        },
        r.get(6)?,
    ))
}

const TOKEN_COLUMNS: &str = "id, name, created_at_ms, last_used_ms, revoked";

fn token_from_row(r: &Row<'_>) -> rusqlite::Result<TokenInfo> {
    Ok(TokenInfo {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at_ms: r.get(2)?,
        last_used_ms: r.get(3)?,
        revoked: r.get(4)?,
    })
}

fn run_exists(tx: &Transaction<'_>, id: RunId) -> Result<bool, StateError> {
    Ok(tx
        .query_row("SELECT 1 FROM runs WHERE id = ?1", [id.0], |_| Ok(()))
        .optional()?
        .is_some())
}

impl Store for SqliteStore {
    fn acquire_lock(&self, holder: &HolderInfo, lease: Duration) -> Result<Lease, StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = self.now_ms();
        let current = read_lock(&tx)?;
        if let Some(row) = &current {
            let live_lease = row.held && now < row.expires_at_ms;
            if live_lease && !liveness::holder_is_dead(&row.holder, &liveness::local_host()) {
                return Err(StateError::Locked {
                    holder: row.holder.name.clone(),
                    pid: row.holder.pid,
                    host: row.holder.host.clone(),
                    expires_in: from_ms(row.expires_at_ms.saturating_sub(now)),
                });
            }
        }
        let generation = current.map_or(0, |row| row.generation) + 1;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let expires_at_ms = now.saturating_add(to_ms(lease));
        tx.execute(
            "INSERT INTO state_lock (id, generation, token, held, holder_name, holder_pid,
                 holder_host, holder_boot_id, holder_started, acquired_at_ms, expires_at_ms)
             VALUES (1, ?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (id) DO UPDATE SET
                 generation = excluded.generation, token = excluded.token, held = 1,
                 holder_name = excluded.holder_name, holder_pid = excluded.holder_pid,
                 holder_host = excluded.holder_host, holder_boot_id = excluded.holder_boot_id,
                 holder_started = excluded.holder_started,
                 acquired_at_ms = excluded.acquired_at_ms, expires_at_ms = excluded.expires_at_ms",
            params![
                i64::try_from(generation).unwrap_or(i64::MAX),
                token,
                holder.name,
                i64::from(holder.pid),
                holder.host,
                holder.boot_id,
                i64::try_from(holder.started).unwrap_or(i64::MAX),
                now,
                expires_at_ms,
            ],
        )?;
        tx.commit()?;
        Ok(Lease {
            generation,
            token,
            expires_at: from_ms(expires_at_ms),
            duration: lease,
        })
    }

    fn heartbeat(&self, lease: &Lease) -> Result<Lease, StateError> {
        self.write(lease, |tx, now| {
            let expires_at_ms = now.saturating_add(to_ms(lease.duration));
            tx.execute(
                "UPDATE state_lock SET expires_at_ms = ?1 WHERE id = 1",
                [expires_at_ms],
            )?;
            Ok(Lease {
                expires_at: from_ms(expires_at_ms),
                ..lease.clone()
            })
        })
    }

    fn release(&self, lease: &Lease) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Unlike writes, release does not require an unexpired lease: an
        // expired lock that nobody took over is still ours to free.
        let ours = read_lock(&tx)?
            .is_some_and(|row| row.generation == lease.generation && row.token == lease.token);
        if !ours {
            return Err(StateError::Fenced {
                generation: lease.generation,
            });
        }
        tx.execute("UPDATE state_lock SET held = 0 WHERE id = 1", [])?;
        tx.commit()?;
        Ok(())
    }

    fn lock_info(&self) -> Result<Option<LockInfo>, StateError> {
        let conn = self.conn();
        let now = self.now_ms();
        Ok(read_lock(&conn)?
            .filter(|row| row.held)
            .map(|row| LockInfo {
                holder: row.holder,
                generation: row.generation,
                acquired_at: from_ms(row.acquired_at_ms),
                expires_at: from_ms(row.expires_at_ms),
                expires_in: (now < row.expires_at_ms).then(|| from_ms(row.expires_at_ms - now)),
            }))
    }

    fn begin_run(
        &self,
        lease: &Lease,
        kind: RunKind,
        spec_hash: &str,
        environment: &str,
    ) -> Result<RunId, StateError> {
        self.write(lease, |tx, now| {
            tx.execute(
                "INSERT INTO runs (kind, spec_hash, environment, generation, started_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    kind.as_str(),
                    spec_hash,
                    environment,
                    i64::try_from(lease.generation).unwrap_or(i64::MAX),
                    now
                ],
            )?;
            Ok(RunId(tx.last_insert_rowid()))
        })
    }

    fn finish_run(
        &self,
        lease: &Lease,
        id: RunId,
        outcome: &RunOutcome,
        summary: &serde_json::Value,
    ) -> Result<(), StateError> {
        self.write(lease, |tx, now| {
            let finished: Option<Option<String>> = tx
                .query_row("SELECT outcome FROM runs WHERE id = ?1", [id.0], |r| {
                    r.get(0)
                })
                .optional()?;
            match finished {
                None => return Err(StateError::UnknownRun(id)),
                Some(Some(_)) => return Err(StateError::RunAlreadyFinished(id)),
                Some(None) => {}
            }
            let failure = match outcome {
                RunOutcome::Failed(message) => Some(message.as_str()),
                RunOutcome::Succeeded | RunOutcome::Interrupted => None,
            };
            tx.execute(
                "UPDATE runs SET finished_at_ms = ?1, outcome = ?2, failure = ?3, summary = ?4
                 WHERE id = ?5",
                params![now, outcome.as_str(), failure, json_text(summary), id.0],
            )?;
            Ok(())
        })
    }

    fn runs(&self, limit: usize) -> Result<Vec<Run>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?1"
        ))?;
        let raws = stmt
            .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], raw_run)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        raws.into_iter().map(run_from_raw).collect()
    }

    fn record_intent(&self, lease: &Lease, intent: &NewIntent) -> Result<Intent, StateError> {
        self.write(lease, |tx, now| {
            if !run_exists(tx, intent.run_id)? {
                return Err(StateError::UnknownRun(intent.run_id));
            }
            let id = IntentId::new_random();
            tx.execute(
                "INSERT INTO intents (id, run_id, kind, group_name, zone, detail, status,
                     generation, recorded_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'recorded', ?7, ?8)",
                params![
                    id.as_str(),
                    intent.run_id.0,
                    intent.kind.as_str(),
                    intent.group,
                    intent.zone,
                    json_text(&intent.detail),
                    i64::try_from(lease.generation).unwrap_or(i64::MAX),
                    now,
                ],
            )?;
            Ok(Intent {
                id,
                run_id: intent.run_id,
                kind: intent.kind,
                group: intent.group.clone(),
                zone: intent.zone.clone(),
                detail: intent.detail.clone(),
                status: IntentStatus::Recorded,
                generation: lease.generation,
                recorded_at: from_ms(now),
                sent_at: None,
                finished_at: None,
                result: None,
                abandon_reason: None,
            })
        })
    }

    fn mark_intent_sent(&self, lease: &Lease, id: &IntentId) -> Result<(), StateError> {
        self.set_intent_status(lease, id, IntentStatus::Sent, |tx, now| {
            tx.execute(
                "UPDATE intents SET status = 'sent', sent_at_ms = coalesce(sent_at_ms, ?1)
                 WHERE id = ?2",
                params![now, id.as_str()],
            )?;
            Ok(())
        })
    }

    fn complete_intent(
        &self,
        lease: &Lease,
        id: &IntentId,
        result: &serde_json::Value,
    ) -> Result<(), StateError> {
        self.set_intent_status(lease, id, IntentStatus::Completed, |tx, now| {
            tx.execute(
                "UPDATE intents SET status = 'completed', finished_at_ms = ?1, result = ?2
                 WHERE id = ?3",
                params![now, json_text(result), id.as_str()],
            )?;
            Ok(())
        })
    }

    fn abandon_intent(&self, lease: &Lease, id: &IntentId, reason: &str) -> Result<(), StateError> {
        self.set_intent_status(lease, id, IntentStatus::Abandoned, |tx, now| {
            tx.execute(
                "UPDATE intents SET status = 'abandoned', finished_at_ms = ?1, abandon_reason = ?2
                 WHERE id = ?3",
                params![now, reason, id.as_str()],
            )?;
            Ok(())
        })
    }

    fn open_intents(&self) -> Result<Vec<Intent>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {INTENT_COLUMNS} FROM intents
             WHERE status IN ('recorded', 'sent') ORDER BY seq"
        ))?;
        let raws = stmt
            .query_map([], raw_intent)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        raws.into_iter().map(intent_from_raw).collect()
    }

    fn append_events(&self, lease: &Lease, events: &[NewEvent]) -> Result<Vec<i64>, StateError> {
        let limit = i64::try_from(self.event_limit).unwrap_or(i64::MAX);
        self.write(lease, |tx, _now| {
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (at_ms, group_name, kind, subject, reason, data, generation)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut seqs = Vec::with_capacity(events.len());
            for event in events {
                insert.execute(params![
                    event.at_ms,
                    event.group,
                    event.kind,
                    event.subject,
                    event.reason,
                    json_text(&event.data),
                    to_i64(lease.generation),
                ])?;
                seqs.push(tx.last_insert_rowid());
            }
            // Seqs only ever grow and only the oldest are deleted, so the
            // kept ones are contiguous and this keeps exactly `limit`; were
            // there gaps, it would keep fewer, never more. Comparing with
            // max(seq) uses the primary key, not a scan.
            tx.execute(
                "DELETE FROM events WHERE seq <= (SELECT max(seq) FROM events) - ?1",
                [limit],
            )?;
            Ok(seqs)
        })
    }

    fn events_after(
        &self,
        after_seq: i64,
        limit: usize,
        group: Option<&str>,
    ) -> Result<Vec<StoredEvent>, StateError> {
        let conn = self.conn();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match group {
            Some(group) => conn
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events
                     WHERE group_name = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                ))?
                .query_map(params![group, after_seq, limit], event_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?,
            None => conn
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
                ))?
                .query_map(params![after_seq, limit], event_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?,
        };
        rows.into_iter()
            .map(|(event, data)| {
                Ok(StoredEvent {
                    data: parse_json("events.data", Some(data))?.unwrap_or_default(),
                    ..event
                })
            })
            .collect()
    }

    fn create_token(&self, name: &str) -> Result<(TokenInfo, String), StateError> {
        if name.trim().is_empty() {
            return Err(StateError::EmptyTokenName);
        }
        let plaintext = token::new_plaintext()?;
        let conn = self.conn();
        let now = self.now_ms();
        conn.execute(
            "INSERT INTO api_tokens (name, sha256, created_at_ms) VALUES (?1, ?2, ?3)",
            params![name, token::hash(&plaintext), now],
        )?;
        let info = TokenInfo {
            id: conn.last_insert_rowid(),
            name: name.to_owned(),
            created_at_ms: now,
            last_used_ms: None,
            revoked: false,
        };
        Ok((info, plaintext))
    }

    fn verify_token(&self, plaintext: &str) -> Result<Option<TokenInfo>, StateError> {
        let conn = self.conn();
        let found = conn
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE sha256 = ?1 AND revoked = 0"
            ))?
            .query_row([token::hash(plaintext)], token_from_row)
            .optional()?;
        let Some(mut info) = found else {
            return Ok(None);
        };
        let now = self.now_ms();
        // Most requests only read: the use is written at most once a
        // minute per token, outside any lease (it is not controller state).
        let stale = info
            .last_used_ms
            .is_none_or(|last| now.saturating_sub(last) >= LAST_USED_RESOLUTION_MS);
        if stale {
            conn.execute(
                "UPDATE api_tokens SET last_used_ms = ?1 WHERE id = ?2",
                params![now, info.id],
            )?;
            info.last_used_ms = Some(now);
        }
        Ok(Some(info))
    }

    fn list_tokens(&self) -> Result<Vec<TokenInfo>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id"
        ))?;
        let tokens = stmt
            .query_map([], token_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(tokens)
    }

    fn revoke_token(&self, id: i64) -> Result<bool, StateError> {
        let changed = self
            .conn()
            .execute("UPDATE api_tokens SET revoked = 1 WHERE id = ?1", [id])?;
        Ok(changed > 0)
    }

    fn token_count(&self) -> Result<u64, StateError> {
        let count: i64 = self.conn().query_row(
            "SELECT count(*) FROM api_tokens WHERE revoked = 0",
            [],
            |r| r.get(0),
        )?;
        Ok(to_u64(count))
    }

    fn put_group_state(
        &self,
        lease: &Lease,
        group: &str,
        state: &serde_json::Value,
    ) -> Result<(), StateError> {
        self.write(lease, |tx, now| {
            tx.execute(
                "INSERT INTO group_states (group_name, state, generation, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (group_name) DO UPDATE SET
                     state = excluded.state, generation = excluded.generation,
                     updated_at_ms = excluded.updated_at_ms",
                params![group, json_text(state), to_i64(lease.generation), now],
            )?;
            Ok(())
        })
    }

    fn group_states(&self) -> Result<BTreeMap<String, serde_json::Value>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT group_name, state FROM group_states")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(group, state)| {
                let state = parse_json("group_states.state", Some(state))?.unwrap_or_default();
                Ok((group, state))
            })
            .collect()
    }

    fn delete_group_state(&self, lease: &Lease, group: &str) -> Result<(), StateError> {
        self.write(lease, |tx, _now| {
            tx.execute("DELETE FROM group_states WHERE group_name = ?1", [group])?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    fn clock() -> SharedClock {
        Arc::new(endstate_clock::ManualClock::new(Duration::from_secs(
            1_700_000_000,
        )))
    }

    /// A file written by the build before `endstate serve` (schema 1) is
    /// migrated keeping its runs, their ids' high-water mark and the intents
    /// that point at them, and can then record a `serve` run.
    #[test]
    fn a_schema_1_file_gains_serve_keeping_runs_and_intents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        {
            let mut conn = Connection::open(&path).expect("open raw");
            migrations::migrate_with(&mut conn, "t", &migrations::MIGRATIONS[..1])
                .expect("schema 1");
            conn.execute_batch(
                "INSERT INTO runs (id, kind, spec_hash, environment, generation, started_at_ms)
                     VALUES (1, 'apply', 'h1', 'prod', 1, 10),
                            (2, 'destroy', 'h2', 'prod', 2, 20),
                            (3, 'plan', 'h3', 'prod', 3, 30);
                 DELETE FROM runs WHERE id = 3;
                 INSERT INTO intents (id, run_id, kind, group_name, detail, status,
                                      generation, recorded_at_ms)
                     VALUES ('abc', 2, 'terminate', 'web', '{}', 'sent', 2, 21);",
            )
            .expect("old rows");
            let version: i64 = conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .expect("version");
            assert_eq!(version, 1);
        }

        let store = SqliteStore::open(&path, clock()).expect("migrate");
        let runs = store.runs(10).expect("runs");
        assert_eq!(
            runs.iter().map(|r| (r.id.0, r.kind)).collect::<Vec<_>>(),
            [(2, RunKind::Destroy), (1, RunKind::Apply)]
        );
        let open = store.open_intents().expect("intents");
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].run_id, RunId(2));

        {
            let conn = store.conn();
            let enforced: bool = conn
                .pragma_query_value(None, "foreign_keys", |r| r.get(0))
                .expect("foreign_keys");
            assert!(enforced, "foreign keys must be enforced after migrating");
            let intents_sql: String = conn
                .query_row(
                    "SELECT sql FROM sqlite_master WHERE name = 'intents'",
                    [],
                    |r| r.get(0),
                )
                .expect("intents schema");
            assert!(intents_sql.contains("REFERENCES runs"), "{intents_sql}");
        }

        let lease = store
            .acquire_lock(
                &HolderInfo::current("endstate serve"),
                Duration::from_secs(30),
            )
            .expect("lock");
        let serve = store
            .begin_run(&lease, RunKind::Serve, "h4", "prod")
            .expect("serve run");
        assert_eq!(serve, RunId(4), "run ids are never reused");
        store
            .put_group_state(&lease, "web", &json!({ "desired": 2 }))
            .expect("new table");
        assert_eq!(store.group_states().expect("states").len(), 1);
    }
}
