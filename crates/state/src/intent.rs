//! The intent journal's values: what the executor is about to do, recorded
//! before it does it, so that a crash at any point leaves a trace the next
//! run can resolve (by ClientToken and tag) instead of duplicating or leaking
//! instances.
//!
//! These are plain values; the SQL lives in [`crate::sqlite`]. This module
//! does not decide what to do with an open intent after a crash: that is the
//! executor's job.
//!
//! **Secrets:** an intent's `detail` and `result` are written to the state
//! file as given. Putting no secret value in them (user data with inline
//! credentials, tokens, keys) is the caller's responsibility; pass secret
//! *references* only.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::StateError;
use crate::run::RunId;

/// An intent's id: a random UUID v4 in simple form (32 lowercase hex
/// digits). The executor derives the EC2 `ClientToken` from it, so it is
/// unique per intent and stable across retries of the same intent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IntentId(String);

impl IntentId {
    /// A fresh random id.
    pub(crate) fn new_random() -> Self {
        IntentId(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Wraps an id read back from somewhere else (a log, a tag, the API).
    pub fn from_string(id: impl Into<String>) -> Self {
        IntentId(id.into())
    }

    /// The id as text: 32 lowercase hex digits for ids this crate made.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IntentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The mutating call an intent announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntentKind {
    /// RunInstances.
    Launch,
    /// TerminateInstances.
    Terminate,
    /// CreateTags / DeleteTags.
    Tag,
}

impl IntentKind {
    /// The name stored in the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            IntentKind::Launch => "launch",
            IntentKind::Terminate => "terminate",
            IntentKind::Tag => "tag",
        }
    }
}

impl fmt::Display for IntentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IntentKind {
    type Err = StateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "launch" => Ok(IntentKind::Launch),
            "terminate" => Ok(IntentKind::Terminate),
            "tag" => Ok(IntentKind::Tag),
            other => Err(StateError::Corrupt(format!(
                "unknown intent kind {other:?}"
            ))),
        }
    }
}

/// Where an intent stands. `Recorded` and `Sent` are *open*: after a crash
/// their outcome is unknown and must be resolved before anything is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntentStatus {
    /// Journaled; the call may not have been made yet.
    Recorded,
    /// The call was made (or is in flight); its outcome is not yet known.
    Sent,
    /// The call's outcome is known and recorded.
    Completed,
    /// Given up, with a reason (e.g. the plan changed, or recovery found
    /// nothing to adopt).
    Abandoned,
}

impl IntentStatus {
    /// The name stored in the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            IntentStatus::Recorded => "recorded",
            IntentStatus::Sent => "sent",
            IntentStatus::Completed => "completed",
            IntentStatus::Abandoned => "abandoned",
        }
    }

    /// Whether the intent still needs resolving.
    pub fn is_open(self) -> bool {
        matches!(self, IntentStatus::Recorded | IntentStatus::Sent)
    }

    /// Whether an intent may move from `self` to `to`. Marking sent twice is
    /// allowed (a retry of the same intent re-sends it with the same token).
    pub(crate) fn may_become(self, to: IntentStatus) -> bool {
        match to {
            IntentStatus::Recorded => false,
            IntentStatus::Sent | IntentStatus::Completed | IntentStatus::Abandoned => {
                self.is_open()
            }
        }
    }
}

impl fmt::Display for IntentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IntentStatus {
    type Err = StateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "recorded" => Ok(IntentStatus::Recorded),
            "sent" => Ok(IntentStatus::Sent),
            "completed" => Ok(IntentStatus::Completed),
            "abandoned" => Ok(IntentStatus::Abandoned),
            other => Err(StateError::Corrupt(format!(
                "unknown intent status {other:?}"
            ))),
        }
    }
}

/// An intent to record. See the module docs: `detail` must hold no secret.
#[derive(Debug, Clone, PartialEq)]
pub struct NewIntent {
    /// The run it belongs to.
    pub run_id: RunId,
    /// The call it announces.
    pub kind: IntentKind,
    /// The group it acts on.
    pub group: String,
    /// The availability zone, when the call is zonal.
    pub zone: Option<String>,
    /// What exactly will be asked (count, instance type, instance ids, tags).
    /// Written as given: no secrets.
    pub detail: serde_json::Value,
}

/// An intent as journaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    /// Its id; the EC2 ClientToken derives from it.
    pub id: IntentId,
    /// The run it belongs to.
    pub run_id: RunId,
    /// The call it announces.
    pub kind: IntentKind,
    /// The group it acts on.
    pub group: String,
    /// The availability zone, when the call is zonal.
    pub zone: Option<String>,
    /// What exactly will be asked.
    pub detail: serde_json::Value,
    /// Where it stands.
    pub status: IntentStatus,
    /// Generation of the lease under which it was recorded.
    pub generation: u64,
    /// When it was recorded, since the epoch, by the store's clock.
    pub recorded_at: Duration,
    /// When it was first marked sent.
    pub sent_at: Option<Duration>,
    /// When it was completed or abandoned.
    pub finished_at: Option<Duration>,
    /// The outcome given on completion (e.g. instance ids).
    pub result: Option<serde_json::Value>,
    /// Why it was abandoned.
    pub abandon_reason: Option<String>,
}
