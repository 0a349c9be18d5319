//! What the health layer reports: an instance turning healthy or unhealthy,
//! and replacement pausing or resuming, each with the time and the reason.
//!
//! Events are values; this module neither stores nor sends them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One thing that happened to an instance's health or a group's replacement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When, as a duration since the Unix epoch (the clock's time).
    pub at: Duration,
    /// The instance id, or the group's name for replacement events.
    pub subject: String,
    pub kind: EventKind,
    /// Why, in a sentence: "unhealthy after 2 consecutive failed probes (connection refused)".
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A probe failed and counted towards the unhealthy threshold (failures
    /// inside the grace period, or of an instance already unhealthy, do not).
    ProbeFailed,
    InstanceHealthy,
    InstanceUnhealthy,
    ReplacementPaused,
    ReplacementResumed,
}

impl EventKind {
    /// The name used in the event stream: `replacement_paused`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProbeFailed => "probe_failed",
            Self::InstanceHealthy => "instance_healthy",
            Self::InstanceUnhealthy => "instance_unhealthy",
            Self::ReplacementPaused => "replacement_paused",
            Self::ReplacementResumed => "replacement_resumed",
        }
    }
}
