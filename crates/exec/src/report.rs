//! What the executor tells the person (or program) watching: an [`Event`]
//! per thing that happened, delivered to a [`Reporter`]. The binary renders
//! them as progress bars on a terminal and plain lines otherwise; tests
//! collect them.
//!
//! Events carry ids, counts and reasons — never user data or secret values.

use std::sync::Mutex;
use std::time::Duration;

/// Something the executor did or is waiting for.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A phase of the plan starts.
    PhaseStarted {
        index: usize,
        of: usize,
        kind: &'static str,
        instances: u32,
    },
    /// A RunInstances call is about to go out.
    Launching {
        group: String,
        zone: String,
        instance_type: String,
        count: u32,
        intent: String,
    },
    /// It came back with instances.
    Launched {
        group: String,
        zone: String,
        ids: Vec<String>,
    },
    /// No capacity for this type in this zone; trying the next candidate.
    FallingBack {
        group: String,
        from: String,
        to: String,
        reason: String,
    },
    /// A launch whose outcome was unknown was resolved by reading.
    Resolved {
        intent: String,
        found: usize,
    },
    /// Terminations accepted.
    Terminated {
        group: String,
        ids: Vec<String>,
    },
    Retagged {
        group: String,
        count: usize,
    },
    /// Waiting for launched instances to run.
    Waiting {
        group: String,
        running: u32,
        pending: u32,
        expected: u32,
    },
    /// A wait before a call: on the client-side buckets, or after EC2 throttled.
    Throttled {
        action: &'static str,
        wait: Duration,
        by_server: bool,
    },
    /// A failed call that will be tried again.
    Retrying {
        action: &'static str,
        attempt: u32,
        wait: Duration,
        error: String,
    },
    /// Ctrl-C: no new launches; what is in flight finishes.
    Interrupted,
    /// An unfinished intent of an earlier run was found and dealt with.
    Recovered {
        intent: String,
        kind: String,
        outcome: String,
    },
}

/// Receives events. Must be cheap: it is called on the executor's path.
pub trait Reporter: Send + Sync {
    fn event(&self, event: &Event);
}

/// Drops every event.
#[derive(Debug, Default)]
pub struct Silent;

impl Reporter for Silent {
    fn event(&self, _event: &Event) {}
}

/// Keeps every event, for tests and for `--json` output.
#[derive(Debug, Default)]
pub struct Collect {
    events: Mutex<Vec<Event>>,
}

impl Collect {
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl Reporter for Collect {
    fn event(&self, event: &Event) {
        self.events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(event.clone());
    }
}
