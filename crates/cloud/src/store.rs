//! `cloud.db`, the process backend's SQLite store: the records of the EC2
//! core (instances, ClientTokens, images, id counters) written through as
//! the [`Journal`], and the runtime's own tables — the slot of each live
//! instance (its address and uid, its top process's PID and start time, the
//! layers it was made of) and the ordered status-change events — and the
//! load balancers' records (`elbv2`, one JSON document, schema version 2).
//!
//! WAL, `synchronous=FULL`: a change the API answered for is on disk. One
//! connection behind a mutex: every write is short.
//!
//! Not here: what the records mean (`simulated`), processes (`process`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use endstate_wire::{Image, InstanceMetadataOptions, Tag, UserData};
use rusqlite::{params, Connection, OptionalExtension as _};
use serde_json::{json, Value};

use crate::simulated::{
    Change, ImageRecord, InstanceRecord, Journal, Phase, Restored, TokenRecord,
};

/// The schema version this code writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 2;

/// Version 2: the ELBv2 records, one JSON document (`elbv2`).
const MIGRATION_2: &str = "
CREATE TABLE elbv2 (id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL);
";

const SCHEMA: &str = "
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE instances (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    reservation_id TEXT NOT NULL,
    image_id TEXT NOT NULL,
    instance_type TEXT NOT NULL,
    zone TEXT NOT NULL,
    key_name TEXT,
    subnet_id TEXT,
    client_token TEXT,
    launch_index INTEGER NOT NULL,
    launched_ns INTEGER NOT NULL,
    phase TEXT NOT NULL,
    since_ns INTEGER NOT NULL,
    tags TEXT NOT NULL,
    metadata_options TEXT,
    user_data BLOB,
    private_ip TEXT
);
CREATE TABLE tokens (
    token TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    reservation_id TEXT NOT NULL,
    seqs TEXT NOT NULL
);
CREATE TABLE images (
    image_id TEXT PRIMARY KEY,
    manifest TEXT NOT NULL
);
CREATE TABLE slots (
    instance_id TEXT PRIMARY KEY,
    slot INTEGER NOT NULL UNIQUE,
    layers TEXT NOT NULL,
    pid INTEGER,
    start_time INTEGER
);
CREATE TABLE events (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX events_by_instance ON events (instance_id, n);
";

/// Why the store could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cloud database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("cloud database: {0}")]
    Corrupt(String),
}

/// A live instance's place in the runtime: slot `n` gives address
/// `127.100.(n >> 8).(n & 255)` and uid `2,000,000 + n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRow {
    pub instance_id: String,
    pub slot: u32,
    /// The layers the instance's root was made of, top first.
    pub layers: Vec<String>,
    /// The top process, once spawned: PID and start time (clock ticks
    /// since boot, `/proc/PID/stat` field 22).
    pub process: Option<(u32, u64)>,
}

/// One status change of an instance, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// RFC 3339, UTC.
    pub at: String,
    /// `spawned`, `running`, `status:initializing`, `status:ok`,
    /// `status:impaired`, `stopping`, `stopped`, `terminated`, `adopted`, ...
    pub kind: String,
    pub detail: String,
}

/// The store. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn duration(n: i64) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(0))
}

fn options_json(o: &InstanceMetadataOptions) -> String {
    json!({
        "http_tokens": o.http_tokens,
        "hop_limit": o.http_put_response_hop_limit,
        "http_endpoint": o.http_endpoint,
        "tags": o.instance_metadata_tags,
    })
    .to_string()
}

fn options_from_json(text: &str) -> Result<InstanceMetadataOptions, StoreError> {
    let v: Value = serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(InstanceMetadataOptions {
        http_tokens: s("http_tokens"),
        http_put_response_hop_limit: v
            .get("hop_limit")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok()),
        http_endpoint: s("http_endpoint"),
        instance_metadata_tags: s("tags"),
    })
}

fn image_manifest(i: &ImageRecord) -> String {
    json!({
        "name": i.image.name,
        "state": i.image.state,
        "owner_id": i.image.owner_id,
        "architecture": i.image.architecture,
        "root_device_name": i.image.root_device_name,
        "created": i.image.creation_date,
        "description": i.description,
        "tags": i.image.tags.iter().map(|t| (t.key.clone(), Value::String(t.value.clone()))).collect::<serde_json::Map<_, _>>(),
        "layers": i.layers,
    })
    .to_string()
}

fn image_from_manifest(image_id: String, text: &str) -> Result<ImageRecord, StoreError> {
    let v: Value = serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let tags = v
        .get("tags")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| Tag::new(k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let layers = v
        .get("layers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(ImageRecord {
        image: Image {
            image_id,
            name: s("name"),
            state: s("state").unwrap_or_else(|| "available".to_string()),
            owner_id: s("owner_id"),
            architecture: s("architecture"),
            root_device_name: s("root_device_name"),
            creation_date: s("created"),
            tags,
        },
        description: s("description"),
        layers,
    })
}

fn string_list(text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Store {
    /// Opens (creating if need be) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        match version {
            0 => {
                conn.execute_batch(SCHEMA)?;
                conn.execute_batch(MIGRATION_2)?;
                conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            1 => {
                conn.execute_batch(MIGRATION_2)?;
                conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            SCHEMA_VERSION => {}
            other => {
                return Err(StoreError::Corrupt(format!(
                    "schema version {other} is newer than this endstate ({SCHEMA_VERSION})"
                )))
            }
        }
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-write leaves an open transaction that SQLite rolls
        // back; the connection itself stays usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ELBv2 records as last saved (JSON), if ever.
    pub(crate) fn elbv2_state(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .query_row("SELECT state FROM elbv2 WHERE id = 1", [], |r| r.get(0))
            .optional()?)
    }

    /// Replaces the ELBv2 records.
    pub(crate) fn save_elbv2_state(&self, json: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO elbv2 (id, state) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET state = excluded.state",
            [json],
        )?;
        Ok(())
    }

    /// This cloud's id salt: made at the first open, the same ever after.
    pub(crate) fn id_salt(&self) -> Result<u64, StoreError> {
        let conn = self.lock();
        let stored: Option<i64> = conn
            .query_row(
                "SELECT value FROM counters WHERE name = 'id_salt'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(salt) = stored {
            return Ok(u64::from_ne_bytes(salt.to_ne_bytes()));
        }
        let salt = rand::random::<u64>();
        conn.execute(
            "INSERT INTO counters (name, value) VALUES ('id_salt', ?1)",
            [i64::from_ne_bytes(salt.to_ne_bytes())],
        )?;
        Ok(salt)
    }

    /// Everything the core needs to start again.
    pub(crate) fn load(&self) -> Result<Restored, StoreError> {
        let conn = self.lock();
        let counter = |name: &str| -> Result<u64, StoreError> {
            let v: Option<i64> = conn
                .query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(1))
        };
        let next_seq = counter("next_seq")?;
        let next_reservation = counter("next_reservation")?;
        let mut instances = Vec::new();
        {
            let mut stmt = conn.prepare(
                "SELECT seq, id, reservation_id, image_id, instance_type, zone, key_name,
                        subnet_id, client_token, launch_index, launched_ns, phase, since_ns,
                        tags, metadata_options, user_data, private_ip
                 FROM instances ORDER BY seq",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let seq: i64 = r.get(0)?;
                let phase: String = r.get(11)?;
                let tags: String = r.get(13)?;
                let options: Option<String> = r.get(14)?;
                let record = InstanceRecord {
                    id: r.get(1)?,
                    reservation_id: Arc::from(r.get::<_, String>(2)?),
                    image_id: r.get(3)?,
                    instance_type: r.get(4)?,
                    zone: r.get(5)?,
                    key_name: r.get(6)?,
                    subnet_id: r.get(7)?,
                    client_token: r.get(8)?,
                    launch_index: r.get(9)?,
                    launched: duration(r.get(10)?),
                    phase: Phase::from_name(&phase)
                        .ok_or_else(|| StoreError::Corrupt(format!("unknown phase {phase}")))?,
                    since: duration(r.get(12)?),
                    tags: Arc::new(
                        serde_json::from_str::<BTreeMap<String, String>>(&tags)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    ),
                    metadata_options: options.as_deref().map(options_from_json).transpose()?,
                    user_data: r.get::<_, Option<Vec<u8>>>(15)?.map(UserData),
                };
                let address = r.get::<_, Option<String>>(16)?.map(Arc::from);
                instances.push((u64::try_from(seq).unwrap_or(0), record, address));
            }
        }
        let mut tokens = Vec::new();
        {
            let mut stmt =
                conn.prepare("SELECT token, request, reservation_id, seqs FROM tokens")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let request: String = r.get(1)?;
                let seqs: String = r.get(3)?;
                tokens.push((
                    r.get::<_, String>(0)?,
                    TokenRecord {
                        request: TokenRecord::request_from_form(&request)
                            .map_err(StoreError::Corrupt)?,
                        reservation_id: Arc::from(r.get::<_, String>(2)?),
                        seqs: serde_json::from_str(&seqs)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    },
                ));
            }
        }
        let mut images = Vec::new();
        {
            let mut stmt = conn.prepare("SELECT image_id, manifest FROM images")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let manifest: String = r.get(1)?;
                images.push(image_from_manifest(r.get(0)?, &manifest)?);
            }
        }
        Ok(Restored {
            next_seq,
            next_reservation,
            instances,
            tokens,
            images,
        })
    }

    /// Gives `instance_id` the lowest free slot (a released one is reused),
    /// or the one it already has.
    pub fn allocate_slot(
        &self,
        instance_id: &str,
        layers: &[String],
        usable: &dyn Fn(u32) -> bool,
    ) -> Result<u32, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let existing: Option<u32> = tx
            .query_row(
                "SELECT slot FROM slots WHERE instance_id = ?1",
                [instance_id],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(slot) = existing {
            return Ok(slot);
        }
        // The lowest n ≥ 1 neither taken here nor unusable on this host
        // (another cloud's instance holds its address or uid).
        let taken: BTreeSet<u32> = tx
            .prepare("SELECT slot FROM slots")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let Some(slot) = (1..=MAX_SLOT).find(|n| !taken.contains(n) && usable(*n)) else {
            return Err(StoreError::Corrupt(
                "every address of 127.100.0.0/16 is taken".to_string(),
            ));
        };
        let layers =
            serde_json::to_string(layers).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        tx.execute(
            "INSERT INTO slots (instance_id, slot, layers) VALUES (?1, ?2, ?3)",
            params![instance_id, slot, layers],
        )?;
        tx.commit()?;
        Ok(slot)
    }

    /// Records the instance's top process.
    pub fn set_process(
        &self,
        instance_id: &str,
        process: Option<(u32, u64)>,
    ) -> Result<(), StoreError> {
        let (pid, start) = match process {
            Some((pid, start)) => (Some(pid), Some(i64::try_from(start).unwrap_or(i64::MAX))),
            None => (None, None),
        };
        self.lock().execute(
            "UPDATE slots SET pid = ?2, start_time = ?3 WHERE instance_id = ?1",
            params![instance_id, pid, start],
        )?;
        Ok(())
    }

    /// Frees the instance's slot (its address and uid) for reuse.
    pub fn release_slot(&self, instance_id: &str) -> Result<(), StoreError> {
        self.lock()
            .execute("DELETE FROM slots WHERE instance_id = ?1", [instance_id])?;
        Ok(())
    }

    pub fn slots(&self) -> Result<Vec<SlotRow>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT instance_id, slot, layers, pid, start_time FROM slots ORDER BY slot",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let layers: String = r.get(2)?;
            let pid: Option<u32> = r.get(3)?;
            let start: Option<i64> = r.get(4)?;
            out.push(SlotRow {
                instance_id: r.get(0)?,
                slot: r.get(1)?,
                layers: string_list(&layers)?,
                process: pid.zip(start.and_then(|s| u64::try_from(s).ok())),
            });
        }
        Ok(out)
    }

    /// Appends a status-change event.
    pub fn add_event(&self, instance_id: &str, kind: &str, detail: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO events (instance_id, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
            params![instance_id, now_rfc3339(), kind, detail],
        )?;
        Ok(())
    }

    /// The instance's events, oldest first.
    pub fn events(&self, instance_id: &str) -> Result<Vec<Event>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT at, kind, detail FROM events WHERE instance_id = ?1 ORDER BY n")?;
        let rows = stmt.query_map([instance_id], |r| {
            Ok(Event {
                at: r.get(0)?,
                kind: r.get(1)?,
                detail: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The highest slot: 127.100.255.255.
pub const MAX_SLOT: u32 = 65_535;

impl Journal for Store {
    fn write(&self, changes: &[Change<'_>]) -> Result<(), String> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        for change in changes {
            let done = match change {
                Change::Instance(seq, r, address) => tx.execute(
                    "INSERT OR REPLACE INTO instances (seq, id, reservation_id, image_id,
                        instance_type, zone, key_name, subnet_id, client_token, launch_index,
                        launched_ns, phase, since_ns, tags, metadata_options, user_data,
                        private_ip)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                        ?16, ?17)",
                    params![
                        i64::try_from(*seq).unwrap_or(i64::MAX),
                        r.id,
                        &*r.reservation_id,
                        r.image_id,
                        r.instance_type,
                        r.zone,
                        r.key_name,
                        r.subnet_id,
                        r.client_token,
                        r.launch_index,
                        nanos(r.launched),
                        r.phase.name(),
                        nanos(r.since),
                        serde_json::to_string(&*r.tags).map_err(|e| e.to_string())?,
                        r.metadata_options.as_ref().map(options_json),
                        r.user_data.as_ref().map(|u| u.as_bytes().to_vec()),
                        address,
                    ],
                ),
                Change::Token(token, t) => tx.execute(
                    "INSERT OR REPLACE INTO tokens (token, request, reservation_id, seqs)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![
                        token,
                        t.request_form(),
                        &*t.reservation_id,
                        serde_json::to_string(&t.seqs).map_err(|e| e.to_string())?,
                    ],
                ),
                Change::Image(i) => tx.execute(
                    "INSERT OR REPLACE INTO images (image_id, manifest) VALUES (?1, ?2)",
                    params![i.image.image_id, image_manifest(i)],
                ),
                Change::ImageGone(id) => tx.execute("DELETE FROM images WHERE image_id = ?1", [id]),
                Change::Counters {
                    next_seq,
                    next_reservation,
                } => tx.execute(
                    "INSERT OR REPLACE INTO counters (name, value)
                     VALUES ('next_seq', ?1), ('next_reservation', ?2)",
                    params![
                        i64::try_from(*next_seq).unwrap_or(i64::MAX),
                        i64::try_from(*next_reservation).unwrap_or(i64::MAX)
                    ],
                ),
            };
            done.map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn slots_are_the_lowest_free_and_reused_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cloud.db")).unwrap();
        assert_eq!(store.allocate_slot("i-a", &[], &|_| true).unwrap(), 1);
        assert_eq!(store.allocate_slot("i-b", &[], &|_| true).unwrap(), 2);
        assert_eq!(store.allocate_slot("i-c", &[], &|_| true).unwrap(), 3);
        assert_eq!(
            store.allocate_slot("i-b", &[], &|_| true).unwrap(),
            2,
            "idempotent"
        );
        store.release_slot("i-b").unwrap();
        assert_eq!(
            store.allocate_slot("i-d", &[], &|_| true).unwrap(),
            2,
            "reused"
        );
        assert_eq!(store.allocate_slot("i-e", &[], &|_| true).unwrap(), 4);
        store.release_slot("i-a").unwrap();
        assert_eq!(
            store
                .allocate_slot("i-f", &["l1".into()], &|_| true)
                .unwrap(),
            1
        );
        // Slots this host cannot use (another cloud's) are passed over.
        assert_eq!(
            store
                .allocate_slot("i-g", &[], &|n| n != 5 && n != 6)
                .unwrap(),
            7
        );
        store.set_process("i-f", Some((42, 7))).unwrap();
        let slots = store.slots().unwrap();
        assert_eq!(slots.len(), 5);
        assert_eq!(slots[0].process, Some((42, 7)));
        assert_eq!(slots[0].layers, vec!["l1".to_string()]);
    }

    #[test]
    fn a_version_1_database_gains_the_elbv2_table_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloud.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO counters (name, value) VALUES ('next_seq', 7)",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.elbv2_state().unwrap(), None);
        store.save_elbv2_state("{\"a\":1}").unwrap();
        store.save_elbv2_state("{\"a\":2}").unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.elbv2_state().unwrap().as_deref(), Some("{\"a\":2}"));
        assert_eq!(store.load().unwrap().next_seq, 7);
    }

    #[test]
    fn events_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cloud.db")).unwrap();
        for kind in ["spawned", "running", "status:ok", "status:impaired"] {
            store.add_event("i-a", kind, "").unwrap();
            store.add_event("i-b", "noise", "").unwrap();
        }
        let kinds: Vec<String> = store
            .events("i-a")
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            ["spawned", "running", "status:ok", "status:impaired"]
        );
    }
}
