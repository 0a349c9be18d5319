//! The event log's values: every action `endstate serve` takes, with its
//! reason, kept so that `endstate events` and the controller's API can say
//! what happened and why.
//!
//! These are plain values; the SQL lives in [`crate::sqlite`]. The log is
//! bounded: the store keeps the newest [`DEFAULT_EVENT_LIMIT`] events and
//! drops older ones as it appends. It is not an audit trail that must never
//! lose a record, and not the intent journal (which is what crash recovery
//! reads).
//!
//! **Secrets:** an event's fields are written to the state file as given;
//! put no secret value in them.

use serde::{Deserialize, Serialize};

/// How many events a store keeps unless told otherwise: appending past it
/// deletes the oldest, in the same transaction.
pub const DEFAULT_EVENT_LIMIT: usize = 100_000;

/// An event to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// When it happened, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The group it concerns (empty when it concerns the whole project).
    pub group: String,
    /// What kind of action it was (e.g. `scale`, `replace`, `pause`).
    pub kind: String,
    /// What it acted on (an instance id, a zone, the group itself).
    pub subject: String,
    /// Why, in a sentence a person can read.
    pub reason: String,
    /// Details for machines. Written as given: no secrets.
    pub data: serde_json::Value,
}

/// An event as stored, with its sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Its place in the log: increasing, never reused within one state file,
    /// so a reader resumes with `events_after(last_seq, ..)`.
    pub seq: i64,
    /// When it happened, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The group it concerns.
    pub group: String,
    /// What kind of action it was.
    pub kind: String,
    /// What it acted on.
    pub subject: String,
    /// Why.
    pub reason: String,
    /// Details for machines.
    pub data: serde_json::Value,
}
