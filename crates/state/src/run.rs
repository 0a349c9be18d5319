//! Runs history: one row per `plan`, `apply`, `destroy` or `serve`, with
//! its outcome and a JSON summary.
//!
//! These are plain values; the SQL that stores them lives in
//! [`crate::sqlite`]. A run is not a lock: holding a lease and recording a
//! run are separate steps.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::StateError;

/// A run's id: increasing, never reused within one state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub i64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    /// `endstate plan`.
    Plan,
    /// `endstate apply` (and each converge of `endstate serve`).
    Apply,
    /// `endstate destroy`.
    Destroy,
    /// `endstate serve`: one long run for the controller's whole life.
    Serve,
}

impl RunKind {
    /// The name stored in the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Plan => "plan",
            RunKind::Apply => "apply",
            RunKind::Destroy => "destroy",
            RunKind::Serve => "serve",
        }
    }
}

impl fmt::Display for RunKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunKind {
    type Err = StateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "plan" => Ok(RunKind::Plan),
            "apply" => Ok(RunKind::Apply),
            "destroy" => Ok(RunKind::Destroy),
            "serve" => Ok(RunKind::Serve),
            other => Err(StateError::Corrupt(format!("unknown run kind {other:?}"))),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "outcome", content = "message")]
pub enum RunOutcome {
    /// Everything it set out to do was done.
    Succeeded,
    /// It stopped on an error; the message says which.
    Failed(String),
    /// It was stopped (Ctrl-C, SIGTERM) or found unfinished after a crash.
    Interrupted,
}

impl RunOutcome {
    /// The name stored in the state file.
    pub fn as_str(&self) -> &'static str {
        match self {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed(_) => "failed",
            RunOutcome::Interrupted => "interrupted",
        }
    }

    pub(crate) fn from_parts(name: &str, message: Option<String>) -> Result<Self, StateError> {
        match name {
            "succeeded" => Ok(RunOutcome::Succeeded),
            "failed" => Ok(RunOutcome::Failed(message.unwrap_or_default())),
            "interrupted" => Ok(RunOutcome::Interrupted),
            other => Err(StateError::Corrupt(format!(
                "unknown run outcome {other:?}"
            ))),
        }
    }
}

/// One run as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Its id.
    pub id: RunId,
    /// What it did.
    pub kind: RunKind,
    /// Hash of the spec it ran against.
    pub spec_hash: String,
    /// The environment (dev, staging, prod, ...).
    pub environment: String,
    /// Generation of the lease under which it was begun.
    pub generation: u64,
    /// When it began, since the epoch, by the store's clock.
    pub started_at: Duration,
    /// When it finished; `None` while running, or if its process died.
    pub finished_at: Option<Duration>,
    /// How it ended; `None` while running, or if its process died.
    pub outcome: Option<RunOutcome>,
    /// The summary given when it finished.
    pub summary: Option<serde_json::Value>,
}
