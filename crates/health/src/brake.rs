//! The correlated-failure brake: when more than a share of a group (default
//! 30%), and at least a minimum count (default 2), turn unhealthy within one
//! window, replacement pauses with a `replacement_paused` event; it resumes
//! when told, or by itself once the instances still unhealthy are back to at
//! most the number that would not have tripped it.
//!
//! Replacing instances that are failing together (a bad deploy, a dependency
//! down, overload) tends to make things worse: Auto Scaling groups have taken
//! whole fleets down that way. Pure: fed [`Event`]s and times, it reads no
//! clock and replaces nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The brake's settings are the spec's (`replacement_brake:`), defined in
/// `endstate_model::health`.
pub use endstate_model::health::BrakeConfig;

use crate::event::{Event, EventKind};

/// Whether replacement may proceed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrakeState {
    Released,
    Paused { since: Duration, reason: String },
}

/// One group's brake.
#[derive(Debug, Clone)]
pub struct Brake {
    group: String,
    config: BrakeConfig,
    state: BrakeState,
    /// When each instance last turned unhealthy, while it has not recovered.
    turned_unhealthy: BTreeMap<String, Duration>,
    /// Of those, the ones still in the group (not replaced or gone).
    present: BTreeSet<String>,
}

impl Brake {
    pub fn new(group: impl Into<String>, config: BrakeConfig) -> Self {
        Self {
            group: group.into(),
            config,
            state: BrakeState::Released,
            turned_unhealthy: BTreeMap::new(),
            present: BTreeSet::new(),
        }
    }

    pub fn state(&self) -> &BrakeState {
        &self.state
    }

    pub fn is_paused(&self) -> bool {
        matches!(self.state, BrakeState::Paused { .. })
    }

    /// Takes in one instance health event for a group of `group_size`
    /// instances (its desired capacity); other events are ignored.
    pub fn observe(&mut self, event: &Event, group_size: u32) -> Option<Event> {
        match event.kind {
            EventKind::InstanceUnhealthy => {
                self.turned_unhealthy
                    .insert(event.subject.clone(), event.at);
                self.present.insert(event.subject.clone());
                self.check_trip(event.at, group_size)
            }
            EventKind::InstanceHealthy => {
                self.turned_unhealthy.remove(&event.subject);
                self.present.remove(&event.subject);
                self.check_recovery(event.at, group_size)
            }
            EventKind::ProbeFailed
            | EventKind::ReplacementPaused
            | EventKind::ReplacementResumed => None,
        }
    }

    /// The instance left the group (replaced, terminated). Its failure still
    /// counts within the window: being replaced is not recovering.
    pub fn forget(&mut self, instance: &str, at: Duration, group_size: u32) -> Option<Event> {
        self.present.remove(instance);
        self.check_recovery(at, group_size)
    }

    /// Resumes replacement when told to. The failures seen so far are
    /// forgiven, so they cannot trip the brake again by themselves.
    pub fn resume(&mut self, at: Duration) -> Option<Event> {
        if !self.is_paused() {
            return None;
        }
        self.turned_unhealthy.clear();
        self.state = BrakeState::Released;
        Some(self.event(
            at,
            EventKind::ReplacementResumed,
            "replacement resumed when told".into(),
        ))
    }

    fn check_trip(&mut self, at: Duration, group_size: u32) -> Option<Event> {
        let window = Duration::from_secs(self.config.window_seconds);
        let start = at.saturating_sub(window);
        self.turned_unhealthy.retain(|_, when| *when >= start);
        if self.is_paused() {
            return None;
        }
        let count = u32::try_from(self.turned_unhealthy.len()).unwrap_or(u32::MAX);
        if !self.config.trips(count, group_size) {
            return None;
        }
        let reason = format!(
            "replacement paused: {count} of {group_size} instances turned unhealthy within {} s \
             (more than {}% and at least {})",
            self.config.window_seconds,
            percent(self.config.max_unhealthy_share),
            self.config.min_unhealthy
        );
        self.state = BrakeState::Paused {
            since: at,
            reason: reason.clone(),
        };
        Some(self.event(at, EventKind::ReplacementPaused, reason))
    }

    fn check_recovery(&mut self, at: Duration, group_size: u32) -> Option<Event> {
        if !self.is_paused() {
            return None;
        }
        let unhealthy = u32::try_from(self.present.len()).unwrap_or(u32::MAX);
        if self.config.trips(unhealthy, group_size) {
            return None;
        }
        self.state = BrakeState::Released;
        let reason = format!(
            "replacement resumed: health recovered, {unhealthy} of {group_size} instances unhealthy"
        );
        Some(self.event(at, EventKind::ReplacementResumed, reason))
    }

    fn event(&self, at: Duration, kind: EventKind, reason: String) -> Event {
        Event {
            at,
            subject: self.group.clone(),
            kind,
            reason,
        }
    }
}

fn percent(share: f64) -> String {
    let p = share * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}", p.round() as i64)
    } else {
        format!("{p:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Duration = Duration::from_secs(1_000_000);

    fn at(seconds: u64) -> Duration {
        T0 + Duration::from_secs(seconds)
    }

    fn health(instance: &str, seconds: u64, kind: EventKind) -> Event {
        Event {
            at: at(seconds),
            subject: instance.into(),
            kind,
            reason: String::new(),
        }
    }

    fn unhealthy(instance: &str, seconds: u64) -> Event {
        health(instance, seconds, EventKind::InstanceUnhealthy)
    }

    fn healthy(instance: &str, seconds: u64) -> Event {
        health(instance, seconds, EventKind::InstanceHealthy)
    }

    #[test]
    fn three_of_five_within_the_window_pause_replacement() {
        let mut brake = Brake::new("web", BrakeConfig::default());
        // 1 of 5 = 20%: not more than 30%.
        assert_eq!(brake.observe(&unhealthy("i-1", 0), 5), None);
        // 2 of 5 = 40% > 30% and at least 2.
        let paused = brake.observe(&unhealthy("i-2", 30), 5).expect("paused");
        assert_eq!(paused.kind, EventKind::ReplacementPaused);
        assert_eq!(paused.kind.as_str(), "replacement_paused");
        assert_eq!(paused.subject, "web");
        assert_eq!(
            paused.reason,
            "replacement paused: 2 of 5 instances turned unhealthy within 300 s \
             (more than 30% and at least 2)"
        );
        // A third raises nothing more.
        assert_eq!(brake.observe(&unhealthy("i-3", 31), 5), None);
        assert!(brake.is_paused());
    }

    #[test]
    fn one_of_five_does_not_and_neither_do_failures_outside_the_window() {
        let mut brake = Brake::new("web", BrakeConfig::default());
        assert_eq!(brake.observe(&unhealthy("i-1", 0), 5), None);
        assert!(!brake.is_paused());
        // i-1 turned unhealthy 301 s earlier: outside the window.
        assert_eq!(brake.observe(&unhealthy("i-2", 301), 5), None);
        assert!(!brake.is_paused());
        // The minimum count holds even where the share would trip: 1 of 2.
        let mut small = Brake::new("db", BrakeConfig::default());
        assert_eq!(small.observe(&unhealthy("i-1", 0), 2), None);
    }

    #[test]
    fn recovery_resumes_once_at_most_the_threshold_is_unhealthy() {
        let mut brake = Brake::new("web", BrakeConfig::default());
        brake.observe(&unhealthy("i-1", 0), 5);
        brake.observe(&unhealthy("i-2", 0), 5);
        brake.observe(&unhealthy("i-3", 0), 5);
        assert!(brake.is_paused());
        // 2 of 5 still unhealthy: still tripping.
        assert_eq!(brake.observe(&healthy("i-1", 60), 5), None);
        let resumed = brake.observe(&healthy("i-2", 90), 5).expect("resumed");
        assert_eq!(resumed.kind, EventKind::ReplacementResumed);
        assert_eq!(
            resumed.reason,
            "replacement resumed: health recovered, 1 of 5 instances unhealthy"
        );
        assert!(!brake.is_paused());
    }

    #[test]
    fn resume_when_told_forgives_the_failures_seen() {
        let mut brake = Brake::new("web", BrakeConfig::default());
        assert_eq!(brake.resume(at(0)), None, "nothing to resume");
        for (i, id) in ["i-1", "i-2", "i-3"].iter().enumerate() {
            brake.observe(&unhealthy(id, i as u64), 5);
        }
        assert!(brake.is_paused());
        let resumed = brake.resume(at(10)).expect("resumed");
        assert_eq!(resumed.reason, "replacement resumed when told");
        // One more failure alone does not pause again.
        assert_eq!(brake.observe(&unhealthy("i-4", 20), 5), None);
        // Replaced instances leave; their being gone is not a trip.
        assert_eq!(brake.forget("i-1", at(30), 5), None);
        assert!(!brake.is_paused());
    }

    #[test]
    fn replaced_instances_stop_holding_the_brake() {
        let mut brake = Brake::new("web", BrakeConfig::default());
        brake.observe(&unhealthy("i-1", 0), 5);
        brake.observe(&unhealthy("i-2", 0), 5);
        assert!(brake.is_paused());
        let resumed = brake.forget("i-1", at(5), 5).expect("resumed");
        assert_eq!(resumed.kind, EventKind::ReplacementResumed);
    }
}
