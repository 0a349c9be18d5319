//! endstate's auto-scaling policies, as pure functions: the rules that
//! `endstate serve` (issue 4, item 4) will apply to a group's metrics and
//! schedule. Modelled on AWS Auto Scaling wherever the issue is silent.
//!
//! - [`target`]: target tracking (a metric's average per instance held at a
//!   target), with cooldowns and instance warm-up;
//! - [`step`]: step scaling (adjustments by metric intervals);
//! - [`cron`] and [`tz`]: 5-field cron expressions evaluated in an IANA time
//!   zone read from the system's zoneinfo;
//! - [`schedule`]: scheduled actions that set min, max and desired;
//! - [`select`]: which instances a scale-in terminates;
//! - [`combine`]: one decision out of several policies', min and max honoured.
//!
//! This crate is not the controller: nothing here reads a clock, sleeps,
//! stores activity history or calls a provider. Times are passed in as
//! [`UnixSeconds`]; the caller keeps the last activity time and applies the
//! decisions. The only I/O is [`tz::TimeZone::load`], which reads a zoneinfo
//! file when a schedule is built.

pub mod combine;
pub mod cron;
pub mod schedule;
pub mod select;
pub mod step;
pub mod target;
pub mod tz;

use serde::{Deserialize, Serialize};

/// An instant as whole seconds since the Unix epoch (UTC). Signed, so that
/// arithmetic on "now minus a cooldown" never underflows.
pub type UnixSeconds = i64;

/// A group's capacity bounds and its desired capacity. `min <= max` always;
/// `desired` is kept inside them by every function of this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// Fewest instances the group may have.
    pub min: u32,
    /// Most instances the group may have.
    pub max: u32,
    /// The number of instances the group should have now.
    pub desired: u32,
}

impl Capacity {
    /// Clamps `n` to `[min, max]`. If `min > max` (a caller's bug, refused by
    /// [`schedule::apply_action`]), `max` wins: never more than max.
    pub fn clamp(&self, n: u32) -> u32 {
        n.max(self.min).min(self.max)
    }

    /// The decision that brings `desired` back inside `[min, max]`, when it
    /// is outside them (after a schedule moved the bounds, say).
    pub fn out_of_bounds(&self) -> Option<Decision> {
        let (current, inside) = (self.desired, self.clamp(self.desired));
        (inside != current).then(|| Decision {
            new_desired: inside,
            reason: format!(
                "desired capacity {current} is outside [{}, {}]; set to {inside}",
                self.min, self.max
            ),
        })
    }
}

/// What a policy wants: a new desired capacity and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The desired capacity to set, already inside `[min, max]`.
    pub new_desired: u32,
    /// A sentence for the scaling-activity log.
    pub reason: String,
}

/// Whether an instance launched at `launch_time` is still warming up at `now`.
pub(crate) fn is_warming(launch_time: UnixSeconds, warmup_secs: u64, now: UnixSeconds) -> bool {
    now.saturating_sub(launch_time) < i64::try_from(warmup_secs).unwrap_or(i64::MAX)
}

/// `true` when fewer than `secs` seconds have passed since `since`.
pub(crate) fn within(since: Option<UnixSeconds>, secs: u64, now: UnixSeconds) -> bool {
    match since {
        Some(t) => now.saturating_sub(t) < i64::try_from(secs).unwrap_or(i64::MAX),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamp_honours_min_and_max() {
        let c = Capacity {
            min: 2,
            max: 5,
            desired: 3,
        };
        assert_eq!(c.clamp(0), 2);
        assert_eq!(c.clamp(9), 5);
        assert_eq!(c.clamp(4), 4);
    }

    #[test]
    fn warming_and_cooldown_windows_are_half_open() {
        assert!(is_warming(100, 300, 399));
        assert!(!is_warming(100, 300, 400));
        assert!(within(Some(100), 300, 399));
        assert!(!within(Some(100), 300, 400));
        assert!(!within(None, 300, 400));
    }
}
