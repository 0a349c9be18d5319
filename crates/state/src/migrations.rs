//! Schema migrations: an ordered list of SQL scripts, and the code that
//! brings a state file up to the newest one.
//!
//! The schema version is SQLite's `PRAGMA user_version`: 0 for an empty
//! file, N after the first N scripts have run. Opening an older file runs the
//! missing scripts, each in its own write transaction together with the
//! version bump, so a crash mid-migration leaves the file at a whole version.
//! Opening a file from a newer endstate fails with
//! [`StateError::NewerSchema`] and changes nothing.
//!
//! Scripts run with foreign key enforcement off, so a script may rebuild a
//! table (SQLite cannot change a `CHECK` in place: create the new table,
//! copy, drop the old, rename). Before each commit `PRAGMA
//! foreign_key_check` must come back empty, or the script is rolled back.
//! The caller turns enforcement on once migration is done.
//!
//! Scripts are append-only: a released script is never edited, only
//! followed by a new one. This module knows nothing of locks or leases.

use rusqlite::{Connection, TransactionBehavior};

use crate::error::StateError;

/// The migrations, oldest first; script `i` takes the schema from version
/// `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the lock, runs, the intent journal.
    r#"
    CREATE TABLE state_lock (
        id              INTEGER PRIMARY KEY CHECK (id = 1),
        generation      INTEGER NOT NULL,
        token           TEXT    NOT NULL,
        held            INTEGER NOT NULL CHECK (held IN (0, 1)),
        holder_name     TEXT    NOT NULL,
        holder_pid      INTEGER NOT NULL,
        holder_host     TEXT    NOT NULL,
        holder_boot_id  TEXT    NOT NULL,
        holder_started  INTEGER NOT NULL,
        acquired_at_ms  INTEGER NOT NULL,
        expires_at_ms   INTEGER NOT NULL
    );

    CREATE TABLE runs (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        kind            TEXT    NOT NULL CHECK (kind IN ('plan', 'apply', 'destroy')),
        spec_hash       TEXT    NOT NULL,
        environment     TEXT    NOT NULL,
        generation      INTEGER NOT NULL,
        started_at_ms   INTEGER NOT NULL,
        finished_at_ms  INTEGER,
        outcome         TEXT    CHECK (outcome IN ('succeeded', 'failed', 'interrupted')),
        failure         TEXT,
        summary         TEXT
    );

    CREATE TABLE intents (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        id              TEXT    NOT NULL UNIQUE,
        run_id          INTEGER NOT NULL REFERENCES runs (id),
        kind            TEXT    NOT NULL CHECK (kind IN ('launch', 'terminate', 'tag')),
        group_name      TEXT    NOT NULL,
        zone            TEXT,
        detail          TEXT    NOT NULL,
        status          TEXT    NOT NULL
                        CHECK (status IN ('recorded', 'sent', 'completed', 'abandoned')),
        generation      INTEGER NOT NULL,
        recorded_at_ms  INTEGER NOT NULL,
        sent_at_ms      INTEGER,
        finished_at_ms  INTEGER,
        result          TEXT,
        abandon_reason  TEXT
    );

    CREATE INDEX intents_open ON intents (seq) WHERE status IN ('recorded', 'sent');
    CREATE INDEX intents_by_run ON intents (run_id);
    "#,
    // 2: `endstate serve`: the 'serve' run kind (a rebuild of `runs`, whose
    // CHECK names the kinds), the event log, API tokens, per-group
    // controller state.
    r#"
    CREATE TABLE runs_v2 (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        kind            TEXT    NOT NULL CHECK (kind IN ('plan', 'apply', 'destroy', 'serve')),
        spec_hash       TEXT    NOT NULL,
        environment     TEXT    NOT NULL,
        generation      INTEGER NOT NULL,
        started_at_ms   INTEGER NOT NULL,
        finished_at_ms  INTEGER,
        outcome         TEXT    CHECK (outcome IN ('succeeded', 'failed', 'interrupted')),
        failure         TEXT,
        summary         TEXT
    );
    INSERT INTO runs_v2 (id, kind, spec_hash, environment, generation, started_at_ms,
                         finished_at_ms, outcome, failure, summary)
        SELECT id, kind, spec_hash, environment, generation, started_at_ms,
               finished_at_ms, outcome, failure, summary
        FROM runs;
    -- Run ids are never reused: carry the AUTOINCREMENT high-water mark over.
    UPDATE sqlite_sequence
        SET seq = (SELECT seq FROM sqlite_sequence WHERE name = 'runs')
        WHERE name = 'runs_v2'
          AND EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'runs');
    DROP TABLE runs;
    ALTER TABLE runs_v2 RENAME TO runs;

    CREATE TABLE events (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms           INTEGER NOT NULL,
        group_name      TEXT    NOT NULL,
        kind            TEXT    NOT NULL,
        subject         TEXT    NOT NULL,
        reason          TEXT    NOT NULL,
        data            TEXT    NOT NULL,
        generation      INTEGER NOT NULL
    );
    CREATE INDEX events_by_group ON events (group_name, seq);

    CREATE TABLE api_tokens (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        name            TEXT    NOT NULL CHECK (name <> ''),
        sha256          TEXT    NOT NULL UNIQUE,
        created_at_ms   INTEGER NOT NULL,
        last_used_ms    INTEGER,
        revoked         INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))
    );

    CREATE TABLE group_states (
        group_name      TEXT    PRIMARY KEY,
        state           TEXT    NOT NULL,
        generation      INTEGER NOT NULL,
        updated_at_ms   INTEGER NOT NULL
    );
    "#,
];

/// The schema version this build writes.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings `conn` up to the newest schema in `MIGRATIONS`.
pub(crate) fn migrate(conn: &mut Connection, path: &str) -> Result<(), StateError> {
    migrate_with(conn, path, MIGRATIONS)
}

fn user_version(conn: &Connection) -> Result<i64, StateError> {
    Ok(conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
}

/// Fails when any row points at a parent that does not exist: a table
/// rebuild lost rows. The caller's transaction then rolls back.
fn check_foreign_keys(conn: &Connection, target: i64) -> Result<(), StateError> {
    let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
    let broken: Option<(String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .next()
        .transpose()?;
    match broken {
        None => Ok(()),
        Some((table, rowid)) => Err(StateError::Corrupt(format!(
            "migration to schema version {target} left {table} row {rowid} \
             pointing at a missing parent; nothing was changed"
        ))),
    }
}

/// Brings `conn` up to the last of `migrations`. Separate from [`migrate`]
/// so tests can play an older build's list against a file.
pub(crate) fn migrate_with(
    conn: &mut Connection,
    path: &str,
    migrations: &[&str],
) -> Result<(), StateError> {
    let supported = migrations.len() as i64;
    // Cheap check first, so a file from a newer endstate is refused without
    // taking SQLite's write lock.
    let found = user_version(conn)?;
    if found > supported {
        return Err(StateError::NewerSchema {
            path: path.to_owned(),
            found,
            supported,
        });
    }
    for (index, script) in migrations.iter().enumerate() {
        let target = index as i64 + 1;
        // IMMEDIATE: two processes opening the same old file at once take
        // turns, and the second sees the first's version and skips.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = user_version(&tx)?;
        if current > supported {
            return Err(StateError::NewerSchema {
                path: path.to_owned(),
                found: current,
                supported,
            });
        }
        if current >= target {
            continue;
        }
        tx.execute_batch(script)?;
        check_foreign_keys(&tx, target)?;
        tx.pragma_update(None, "user_version", target)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT NOT NULL);";
    const V2: &str = "ALTER TABLE things ADD COLUMN colour TEXT NOT NULL DEFAULT 'blue';";

    fn open(path: &std::path::Path) -> Connection {
        Connection::open(path).expect("open sqlite file")
    }

    #[test]
    fn an_older_file_is_brought_up_to_date_keeping_its_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        {
            let mut conn = open(&path);
            migrate_with(&mut conn, "t", &[V1]).expect("migrate to v1");
            conn.execute("INSERT INTO things (name) VALUES ('old')", [])
                .expect("insert");
        }
        let mut conn = open(&path);
        migrate_with(&mut conn, "t", &[V1, V2]).expect("migrate to v2");
        assert_eq!(user_version(&conn).expect("version"), 2);
        let (name, colour): (String, String) = conn
            .query_row("SELECT name, colour FROM things", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("row survives");
        assert_eq!((name.as_str(), colour.as_str()), ("old", "blue"));
        // Running again is a no-op.
        migrate_with(&mut conn, "t", &[V1, V2]).expect("re-migrate");
        assert_eq!(user_version(&conn).expect("version"), 2);
    }

    #[test]
    fn a_file_from_a_newer_build_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let mut conn = open(&path);
        migrate_with(&mut conn, "t", &[V1, V2]).expect("migrate to v2");
        let err = migrate_with(&mut conn, "t", &[V1]).expect_err("older build must refuse");
        assert!(
            matches!(
                err,
                StateError::NewerSchema {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(user_version(&conn).expect("version"), 2);
    }

    #[test]
    fn a_failing_script_leaves_the_file_at_the_last_whole_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let mut conn = open(&path);
        let broken = "CREATE TABLE more (id INTEGER); THIS IS NOT SQL;";
        assert!(migrate_with(&mut conn, "t", &[V1, broken]).is_err());
        assert_eq!(user_version(&conn).expect("version"), 1);
        let more: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'more'",
                [],
                |r| r.get(0),
            )
            .expect("query");
        assert_eq!(more, 0, "half a migration was kept");
    }
}
