//! Scheduled actions: at the times a cron expression names, in a time zone,
//! set any of a group's min, max and desired capacity — e.g. dev to 0 at
//! 19:00 on weekdays and back to 2 at 08:00.
//!
//! [`due`] answers "which actions fired since I last looked", for a caller
//! that advances time (the controller's clock in production, a plain value in
//! tests); [`apply_action`] computes the capacity an action leaves. If the
//! caller was away through several firings of one action, that action fires
//! once, at its latest time (the others would set the same values).
//! Firings of different actions are applied in time order, ties in the
//! order the actions are listed.
//!
//! Not here: storing when the caller last looked, or one-off actions at a
//! fixed date (a cron expression for that date serves).

use serde::{Deserialize, Serialize};

use crate::cron::{CronError, CronExpr, CronSchedule};
use crate::tz::{TimeZone, TzError};
use crate::{Capacity, UnixSeconds};

/// A scheduled action, as written in the spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledActionConfig {
    /// The action's name, unique in its group.
    pub name: String,
    /// Five-field cron expression in `time_zone`'s wall-clock time.
    pub cron: String,
    /// IANA zone name. Default `UTC`, as AWS.
    #[serde(default = "default_zone")]
    pub time_zone: String,
    /// New minimum capacity, if set.
    #[serde(default)]
    pub min: Option<u32>,
    /// New maximum capacity, if set.
    #[serde(default)]
    pub max: Option<u32>,
    /// New desired capacity, if set.
    #[serde(default)]
    pub desired: Option<u32>,
}

fn default_zone() -> String {
    "UTC".into()
}

/// Why a scheduled action cannot be built or applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression is malformed.
    #[error("scheduled action {name:?}: {source}")]
    Cron {
        /// The action.
        name: String,
        /// The parse error.
        source: CronError,
    },
    /// The time zone could not be loaded.
    #[error("scheduled action {name:?}: {source}")]
    Zone {
        /// The action.
        name: String,
        /// The zone error.
        source: TzError,
    },
    /// Sets none of min, max and desired.
    #[error("scheduled action {0:?} sets none of min, max and desired")]
    NothingToSet(String),
    /// Would leave min above max.
    #[error("scheduled action {name:?} would leave min {min} above max {max}")]
    MinAboveMax {
        /// The action.
        name: String,
        /// The resulting min.
        min: u32,
        /// The resulting max.
        max: u32,
    },
}

/// A scheduled action ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledAction {
    /// The action's name.
    pub name: String,
    /// When it fires.
    pub schedule: CronSchedule,
    /// New minimum, if set.
    pub min: Option<u32>,
    /// New maximum, if set.
    pub max: Option<u32>,
    /// New desired, if set.
    pub desired: Option<u32>,
}

impl ScheduledAction {
    /// Builds the action, loading its zone from the system's zoneinfo.
    pub fn from_config(config: &ScheduledActionConfig) -> Result<ScheduledAction, ScheduleError> {
        let zone = TimeZone::load(&config.time_zone).map_err(|source| ScheduleError::Zone {
            name: config.name.clone(),
            source,
        })?;
        Self::with_zone(config, zone)
    }

    /// Builds the action with an already loaded zone.
    pub fn with_zone(
        config: &ScheduledActionConfig,
        zone: TimeZone,
    ) -> Result<ScheduledAction, ScheduleError> {
        let name = config.name.clone();
        let expr = CronExpr::parse(&config.cron).map_err(|source| ScheduleError::Cron {
            name: name.clone(),
            source,
        })?;
        if config.min.is_none() && config.max.is_none() && config.desired.is_none() {
            return Err(ScheduleError::NothingToSet(name));
        }
        if let (Some(min), Some(max)) = (config.min, config.max) {
            if min > max {
                return Err(ScheduleError::MinAboveMax { name, min, max });
            }
        }
        Ok(ScheduledAction {
            name,
            schedule: CronSchedule { expr, zone },
            min: config.min,
            max: config.max,
            desired: config.desired,
        })
    }
}

/// One action firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Firing {
    /// When it fired.
    pub at: UnixSeconds,
    /// Its index in the actions passed to [`due`].
    pub action: usize,
}

/// The actions that fired in `(after, until]`, each once at its latest
/// firing, in time order.
pub fn due(actions: &[ScheduledAction], after: UnixSeconds, until: UnixSeconds) -> Vec<Firing> {
    let mut out: Vec<Firing> = actions
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            a.schedule
                .fires_between(after, until)
                .last()
                .map(|&at| Firing { at, action: i })
        })
        .collect();
    out.sort_by_key(|f| (f.at, f.action));
    out
}

/// The capacity after `action`, with a sentence saying what changed. The
/// desired capacity is moved inside the new bounds if it left them (AWS
/// does the same when a scheduled action changes min or max).
pub fn apply_action(
    capacity: Capacity,
    action: &ScheduledAction,
) -> Result<(Capacity, String), ScheduleError> {
    let min = action.min.unwrap_or(capacity.min);
    let max = action.max.unwrap_or(capacity.max);
    if min > max {
        return Err(ScheduleError::MinAboveMax {
            name: action.name.clone(),
            min,
            max,
        });
    }
    let bounds = Capacity {
        min,
        max,
        desired: 0,
    };
    let desired = bounds.clamp(action.desired.unwrap_or(capacity.desired));
    let next = Capacity { min, max, desired };
    let reason = format!(
        "scheduled action {:?} ({} {}): min {} → {}, max {} → {}, desired {} → {}",
        action.name,
        action.schedule.expr,
        action.schedule.zone.name(),
        capacity.min,
        min,
        capacity.max,
        max,
        capacity.desired,
        desired
    );
    Ok((next, reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::combine::{combine, Vote};
    use crate::tz::utc;
    use crate::Decision;

    fn action(
        name: &str,
        cron: &str,
        zone: &str,
        min: Option<u32>,
        max: Option<u32>,
        desired: Option<u32>,
    ) -> ScheduledAction {
        let config = ScheduledActionConfig {
            name: name.into(),
            cron: cron.into(),
            time_zone: zone.into(),
            min,
            max,
            desired,
        };
        ScheduledAction::from_config(&config).unwrap()
    }

    #[test]
    fn config_errors_are_clear() {
        let mut c: ScheduledActionConfig =
            serde_json::from_str(r#"{"name":"night","cron":"0 19 * * MON-FRI","desired":0}"#)
                .unwrap();
        assert_eq!(c.time_zone, "UTC");
        assert!(ScheduledAction::from_config(&c).is_ok());
        c.time_zone = "Europe/Atlantis".into();
        let e = ScheduledAction::from_config(&c).unwrap_err().to_string();
        assert!(
            e.starts_with(r#"scheduled action "night": time zone "Europe/Atlantis" not found"#),
            "{e}"
        );
        c.time_zone = "UTC".into();
        c.cron = "0 25 * * *".into();
        let e = ScheduledAction::from_config(&c).unwrap_err().to_string();
        assert_eq!(
            e,
            r#"scheduled action "night": cron "0 25 * * *": hour 25 is out of range 0-23"#
        );
        c.cron = "0 1 * * *".into();
        c.desired = None;
        assert_eq!(
            ScheduledAction::from_config(&c),
            Err(ScheduleError::NothingToSet("night".into()))
        );
        c.min = Some(3);
        c.max = Some(2);
        assert!(matches!(
            ScheduledAction::from_config(&c),
            Err(ScheduleError::MinAboveMax { .. })
        ));
    }

    #[test]
    fn apply_sets_fields_and_keeps_desired_in_bounds() {
        let cap = Capacity {
            min: 2,
            max: 6,
            desired: 4,
        };
        let a = action("cap", "0 0 * * *", "UTC", None, Some(3), None);
        assert_eq!(
            apply_action(cap, &a).unwrap().0,
            Capacity {
                min: 2,
                max: 3,
                desired: 3
            }
        );
        let a = action("floor", "0 0 * * *", "UTC", Some(5), None, None);
        assert_eq!(
            apply_action(cap, &a).unwrap().0,
            Capacity {
                min: 5,
                max: 6,
                desired: 5
            }
        );
        let a = action("big", "0 0 * * *", "UTC", None, None, Some(10));
        assert_eq!(
            apply_action(cap, &a).unwrap().0,
            Capacity {
                min: 2,
                max: 6,
                desired: 6
            }
        );
        let a = action("bad", "0 0 * * *", "UTC", Some(7), None, None);
        assert!(matches!(
            apply_action(cap, &a),
            Err(ScheduleError::MinAboveMax { min: 7, max: 6, .. })
        ));
    }

    #[test]
    fn a_long_absence_fires_each_action_once_at_its_latest() {
        let a = action("hourly", "0 * * * *", "UTC", None, None, Some(1));
        let f = due(&[a], utc(2026, 11, 27, 0, 30), utc(2026, 11, 27, 5, 10));
        assert_eq!(
            f,
            vec![Firing {
                at: utc(2026, 11, 27, 5, 0),
                action: 0
            }]
        );
    }

    /// Ticking a minute at a time through both of 2026's DST weekends, a
    /// daily 02:30 fires once a day in Berlin and New York.
    #[test]
    fn ticking_through_dst_weekends_fires_once_a_day() {
        for (zone, spring, fall) in [
            (
                "Europe/Berlin",
                utc(2026, 3, 29, 1, 0),
                utc(2026, 10, 25, 0, 30),
            ),
            (
                "America/New_York",
                utc(2026, 3, 8, 7, 0),
                utc(2026, 11, 1, 7, 30),
            ),
        ] {
            let actions = [action("nightly", "30 2 * * *", zone, None, None, Some(1))];
            for sunday in [spring, fall] {
                let start = sunday - 2 * 86_400 - 7200;
                let mut fired = Vec::new();
                let mut now = start;
                while now < start + 4 * 86_400 {
                    fired.extend(due(&actions, now, now + 60).into_iter().map(|f| f.at));
                    now += 60;
                }
                assert!(fired.contains(&sunday), "{zone}: {fired:?} lacks {sunday}");
                // One firing per local day, no day missed, none twice.
                let tz = &actions[0].schedule.zone;
                let days: Vec<i64> = fired
                    .iter()
                    .map(|&f| tz.to_local(f).div_euclid(86_400))
                    .collect();
                assert!(days.len() >= 4, "{zone}: {fired:?}");
                assert!(
                    days.windows(2).all(|w| w[1] == w[0] + 1),
                    "{zone}: {fired:?}"
                );
            }
        }
    }

    /// The seed's "reduce costs": dev to 0 at 19:00 Monday to Friday, back to
    /// 2 at 08:00, in Berlin, over a simulated week driven by a time value.
    #[test]
    fn dev_sleeps_on_weekday_evenings_over_a_simulated_week() {
        let actions = [
            action(
                "evening",
                "0 19 * * MON-FRI",
                "Europe/Berlin",
                Some(0),
                Some(0),
                Some(0),
            ),
            action(
                "morning",
                "0 8 * * MON-FRI",
                "Europe/Berlin",
                Some(2),
                Some(4),
                Some(2),
            ),
        ];
        // Monday 23 November 2026 00:00 CET, running at 2.
        let start = utc(2026, 11, 22, 23, 0);
        let mut cap = Capacity {
            min: 2,
            max: 4,
            desired: 2,
        };
        let mut now = start;
        let mut log: Vec<(UnixSeconds, &str, u32)> = Vec::new();
        let mut saturday_noon = None;
        // One evaluation a minute, like a controller's tick.
        while now < start + 7 * 86_400 {
            let next = now + 60;
            for f in due(&actions, now, next) {
                let (c, reason) = apply_action(cap, &actions[f.action]).unwrap();
                assert!(reason.contains(&actions[f.action].name));
                cap = c;
                log.push((f.at, actions[f.action].name.as_str(), cap.desired));
            }
            // A target-tracking vote asking for 3 never beats the schedule's max.
            let vote = Vote {
                policy: "cpu".into(),
                decision: Some(Decision {
                    new_desired: 3,
                    reason: "busy".into(),
                }),
                scale_in_enabled: true,
            };
            if let Some(d) = combine(cap, &[vote]) {
                cap.desired = d.new_desired;
            }
            assert!(cap.desired >= cap.min && cap.desired <= cap.max);
            now = next;
            if now == utc(2026, 11, 28, 11, 0) {
                saturday_noon = Some(cap);
            }
        }
        let expected: Vec<(UnixSeconds, &str, u32)> = (23..=27)
            .flat_map(|d| {
                [
                    (utc(2026, 11, d, 7, 0), "morning", 2),
                    (utc(2026, 11, d, 18, 0), "evening", 0),
                ]
            })
            .collect();
        assert_eq!(log, expected);
        assert_eq!(
            saturday_noon,
            Some(Capacity {
                min: 0,
                max: 0,
                desired: 0
            }),
            "off over the weekend"
        );
        assert_eq!(
            cap,
            Capacity {
                min: 0,
                max: 0,
                desired: 0
            }
        );
    }
}
