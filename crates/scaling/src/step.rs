//! Step scaling: when a metric breaches an alarm threshold, adjust the
//! desired capacity by the step whose interval contains the breach.
//!
//! After AWS's step scaling policies:
//! - Step bounds are relative to `threshold`; `None` is minus or plus
//!   infinity. Above the threshold a step matches `lower <= v - threshold <
//!   upper`; below it, `lower < v - threshold <= upper`. Steps must not
//!   overlap (checked by [`StepScalingConfig::validate`]).
//! - Adjustment types: `change_in_capacity` (add n), `exact_capacity` (set
//!   to n), `percent_change_in_capacity` (add n% of the current capacity,
//!   rounded as AWS does: values above 1 rounded down, between 0 and 1 up to
//!   1, between -1 and 0 to -1, below -1 up towards zero), with
//!   `min_adjustment_magnitude` for the percent type.
//! - **Warm-up**: instances still warming are not counted as current
//!   capacity when a scale-out step is computed, and the result only scales
//!   out if it exceeds the desired capacity (which includes them). So
//!   +1 breached twice while the first +1 warms adds one instance, and a
//!   larger step adds only the difference.
//! - **Cooldown** (ours; EC2 step scaling has only warm-up): no scale-in
//!   within `scale_in_cooldown_secs` of the last activity, nor while
//!   instances warm up; scale-out is never held by it.
//! - min and max always bound the result.
//!
//! Not here: evaluating the alarm over periods (the caller passes the metric
//! value that breached), simple scaling.

use serde::{Deserialize, Serialize};

use crate::target::Activity;
use crate::{is_warming, within, Capacity, Decision, UnixSeconds};

/// How a step's `adjustment` changes the desired capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentType {
    /// Add `adjustment` (negative removes).
    ChangeInCapacity,
    /// Set the desired capacity to `adjustment`.
    ExactCapacity,
    /// Add `adjustment` percent of the current capacity.
    PercentChangeInCapacity,
}

/// One interval of the metric and its adjustment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepAdjustment {
    /// Lower bound relative to the threshold; `None` is minus infinity.
    #[serde(default)]
    pub lower_bound: Option<f64>,
    /// Upper bound relative to the threshold; `None` is plus infinity.
    #[serde(default)]
    pub upper_bound: Option<f64>,
    /// The adjustment, read per [`AdjustmentType`].
    pub adjustment: i64,
}

/// A step scaling policy, as written in the spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepScalingConfig {
    /// The metric's name; informational here.
    pub metric: String,
    /// The alarm threshold the step bounds are relative to.
    pub threshold: f64,
    /// How to read each step's adjustment.
    pub adjustment_type: AdjustmentType,
    /// The steps.
    pub steps: Vec<StepAdjustment>,
    /// For `percent_change_in_capacity`: the smallest change, in instances.
    #[serde(default)]
    pub min_adjustment_magnitude: Option<u32>,
    /// Seconds after launch an instance is warming. Default 300.
    #[serde(default = "default_secs")]
    pub instance_warmup_secs: u64,
    /// Seconds after any activity before a scale-in. Default 300.
    #[serde(default = "default_secs")]
    pub scale_in_cooldown_secs: u64,
}

fn default_secs() -> u64 {
    300
}

/// A step policy that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepConfigError {
    /// No steps at all.
    #[error("step scaling policy for {0:?} has no steps")]
    NoSteps(String),
    /// A step's lower bound is not below its upper bound.
    #[error("step {index}: lower bound must be below upper bound")]
    EmptyInterval {
        /// Position in `steps`.
        index: usize,
    },
    /// Two steps' intervals overlap.
    #[error("steps {a} and {b} overlap")]
    Overlap {
        /// One step.
        a: usize,
        /// The other.
        b: usize,
    },
    /// `exact_capacity` with a negative adjustment.
    #[error("step {index}: exact capacity {value} is negative")]
    NegativeExact {
        /// Position in `steps`.
        index: usize,
        /// The adjustment.
        value: i64,
    },
}

impl StepScalingConfig {
    /// Checks the steps: at least one, non-empty and non-overlapping.
    pub fn validate(&self) -> Result<(), StepConfigError> {
        if self.steps.is_empty() {
            return Err(StepConfigError::NoSteps(self.metric.clone()));
        }
        let lo = |s: &StepAdjustment| s.lower_bound.unwrap_or(f64::NEG_INFINITY);
        let hi = |s: &StepAdjustment| s.upper_bound.unwrap_or(f64::INFINITY);
        for (i, s) in self.steps.iter().enumerate() {
            if lo(s) >= hi(s) {
                return Err(StepConfigError::EmptyInterval { index: i });
            }
            if self.adjustment_type == AdjustmentType::ExactCapacity && s.adjustment < 0 {
                return Err(StepConfigError::NegativeExact {
                    index: i,
                    value: s.adjustment,
                });
            }
            for (j, t) in self.steps.iter().enumerate().skip(i + 1) {
                if lo(s) < hi(t) && lo(t) < hi(s) {
                    return Err(StepConfigError::Overlap { a: i, b: j });
                }
            }
        }
        Ok(())
    }

    /// The step whose interval holds `value`.
    pub fn step_for(&self, value: f64) -> Option<&StepAdjustment> {
        let v = value - self.threshold;
        self.steps.iter().find(|s| {
            let lo = s.lower_bound.unwrap_or(f64::NEG_INFINITY);
            let hi = s.upper_bound.unwrap_or(f64::INFINITY);
            if v >= 0.0 {
                lo <= v && v < hi
            } else {
                lo < v && v <= hi
            }
        })
    }
}

/// The desired capacity an adjustment gives from `base`, before min/max.
pub fn adjusted(
    kind: AdjustmentType,
    adjustment: i64,
    min_magnitude: Option<u32>,
    base: u32,
) -> i64 {
    let base = i64::from(base);
    match kind {
        AdjustmentType::ChangeInCapacity => base + adjustment,
        AdjustmentType::ExactCapacity => adjustment,
        AdjustmentType::PercentChangeInCapacity => {
            let raw = base as f64 * adjustment as f64 / 100.0;
            let mut change = if raw > 1.0 {
                raw.floor()
            } else if raw > 0.0 {
                1.0
            } else if raw == 0.0 {
                0.0
            } else if raw >= -1.0 {
                -1.0
            } else {
                raw.ceil()
            } as i64;
            if let Some(m) = min_magnitude {
                let m = i64::from(m);
                if change != 0 && change.abs() < m {
                    change = change.signum() * m;
                }
            }
            base + change
        }
    }
}

/// Evaluates the policy for a metric value (one per group, e.g. the
/// average). `launch_times` are the group's instances' launch times.
pub fn evaluate(
    config: &StepScalingConfig,
    value: f64,
    launch_times: &[UnixSeconds],
    capacity: Capacity,
    last_activity: Option<Activity>,
    now: UnixSeconds,
) -> Option<Decision> {
    if let Some(back_inside) = capacity.out_of_bounds() {
        return Some(back_inside);
    }
    let current = capacity.desired;
    let step = config.step_for(value)?;
    let warming = launch_times
        .iter()
        .filter(|&&t| is_warming(t, config.instance_warmup_secs, now))
        .count();
    let warming = u32::try_from(warming).unwrap_or(u32::MAX);
    let to_u32 = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
    let out_base = current.saturating_sub(warming);
    let out = to_u32(adjusted(
        config.adjustment_type,
        step.adjustment,
        config.min_adjustment_magnitude,
        out_base,
    ));
    let metric = &config.metric;
    if out > current {
        let new_desired = capacity.clamp(out);
        if new_desired <= current {
            return None;
        }
        return Some(Decision {
            new_desired,
            reason: format!(
                "{metric} {value} breaches {} (step {:?}..{:?}, {:?} {}); from {out_base} counted ({warming} warming): \
                 scale out {current} → {new_desired}",
                config.threshold, step.lower_bound, step.upper_bound, config.adjustment_type, step.adjustment
            ),
        });
    }
    let inward = to_u32(adjusted(
        config.adjustment_type,
        step.adjustment,
        config.min_adjustment_magnitude,
        current,
    ));
    if inward >= current
        || warming > 0
        || within(
            last_activity.map(|a| a.at),
            config.scale_in_cooldown_secs,
            now,
        )
    {
        return None;
    }
    let new_desired = capacity.clamp(inward);
    (new_desired < current).then(|| Decision {
        new_desired,
        reason: format!(
            "{metric} {value} breaches {} (step {:?}..{:?}, {:?} {}): scale in {current} → {new_desired}",
            config.threshold, step.lower_bound, step.upper_bound, config.adjustment_type, step.adjustment
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Direction;

    const NOW: UnixSeconds = 1_000_000;
    const OLD: UnixSeconds = NOW - 3600;

    fn step(lower: Option<f64>, upper: Option<f64>, adjustment: i64) -> StepAdjustment {
        StepAdjustment {
            lower_bound: lower,
            upper_bound: upper,
            adjustment,
        }
    }

    /// CPU threshold 60: +1 for [60, 70), +3 for [70, ∞); -1 below 40.
    fn cpu(kind: AdjustmentType) -> StepScalingConfig {
        StepScalingConfig {
            metric: "cpu".into(),
            threshold: 60.0,
            adjustment_type: kind,
            steps: vec![
                step(Some(0.0), Some(10.0), 1),
                step(Some(10.0), None, 3),
                step(None, Some(-20.0), -1),
            ],
            min_adjustment_magnitude: None,
            instance_warmup_secs: 300,
            scale_in_cooldown_secs: 300,
        }
    }

    fn cap(min: u32, max: u32, desired: u32) -> Capacity {
        Capacity { min, max, desired }
    }

    #[test]
    fn steps_match_by_interval_with_aws_inclusivity() {
        let c = cpu(AdjustmentType::ChangeInCapacity);
        assert_eq!(c.step_for(60.0).unwrap().adjustment, 1);
        assert_eq!(c.step_for(69.9).unwrap().adjustment, 1);
        assert_eq!(c.step_for(70.0).unwrap().adjustment, 3);
        assert_eq!(
            c.step_for(40.0).unwrap().adjustment,
            -1,
            "upper bound inclusive below the threshold"
        );
        assert!(c.step_for(50.0).is_none());
        assert_eq!(c.validate(), Ok(()));
        let mut bad = c.clone();
        bad.steps.push(step(Some(5.0), Some(15.0), 2));
        assert_eq!(bad.validate(), Err(StepConfigError::Overlap { a: 0, b: 3 }));
    }

    #[test]
    fn change_in_capacity() {
        let c = cpu(AdjustmentType::ChangeInCapacity);
        let launches = [OLD; 4];
        assert_eq!(
            evaluate(&c, 65.0, &launches, cap(1, 10, 4), None, NOW)
                .unwrap()
                .new_desired,
            5
        );
        assert_eq!(
            evaluate(&c, 95.0, &launches, cap(1, 10, 4), None, NOW)
                .unwrap()
                .new_desired,
            7
        );
        assert_eq!(
            evaluate(&c, 95.0, &launches, cap(1, 6, 4), None, NOW)
                .unwrap()
                .new_desired,
            6
        );
        assert_eq!(
            evaluate(&c, 10.0, &launches, cap(1, 10, 4), None, NOW)
                .unwrap()
                .new_desired,
            3
        );
        assert_eq!(
            evaluate(&c, 10.0, &[OLD], cap(1, 10, 1), None, NOW),
            None,
            "min"
        );
    }

    #[test]
    fn exact_capacity() {
        let mut c = cpu(AdjustmentType::ExactCapacity);
        c.steps = vec![step(Some(0.0), None, 8), step(None, Some(-20.0), 2)];
        assert_eq!(
            evaluate(&c, 61.0, &[OLD; 4], cap(1, 10, 4), None, NOW)
                .unwrap()
                .new_desired,
            8
        );
        assert_eq!(
            evaluate(&c, 1.0, &[OLD; 4], cap(1, 10, 4), None, NOW)
                .unwrap()
                .new_desired,
            2
        );
        c.steps[0].adjustment = -1;
        assert_eq!(
            c.validate(),
            Err(StepConfigError::NegativeExact {
                index: 0,
                value: -1
            })
        );
    }

    #[test]
    fn percent_change_rounds_like_aws_with_min_magnitude() {
        use AdjustmentType::PercentChangeInCapacity as P;
        assert_eq!(adjusted(P, 25, None, 10), 12, "2.5 rounds down to 2");
        assert_eq!(adjusted(P, 5, None, 10), 11, "0.5 rounds to 1");
        assert_eq!(adjusted(P, -5, None, 10), 9, "-0.5 rounds to -1");
        assert_eq!(adjusted(P, -25, None, 10), 8, "-2.5 rounds to -2");
        assert_eq!(adjusted(P, 25, Some(4), 10), 14, "min adjustment magnitude");
        assert_eq!(adjusted(P, -25, Some(4), 10), 6);
        assert_eq!(adjusted(P, 0, Some(4), 10), 10);
        let c = StepScalingConfig {
            min_adjustment_magnitude: Some(2),
            ..cpu(P)
        };
        let c = StepScalingConfig {
            steps: vec![step(Some(0.0), None, 10)],
            ..c
        };
        assert_eq!(
            evaluate(&c, 80.0, &[OLD; 5], cap(1, 10, 5), None, NOW)
                .unwrap()
                .new_desired,
            7
        );
    }

    #[test]
    fn warming_instances_are_not_current_capacity_for_scale_out() {
        let c = cpu(AdjustmentType::ChangeInCapacity);
        // 4 old + 1 warming from the last +1; +1 again adds nothing.
        let launches = [OLD, OLD, OLD, OLD, NOW - 30];
        assert_eq!(
            evaluate(&c, 65.0, &launches, cap(1, 10, 5), None, NOW),
            None
        );
        // The +3 step adds only the difference: 4 + 3 = 7.
        assert_eq!(
            evaluate(&c, 75.0, &launches, cap(1, 10, 5), None, NOW)
                .unwrap()
                .new_desired,
            7
        );
        // No scale-in while one warms.
        assert_eq!(
            evaluate(&c, 10.0, &launches, cap(1, 10, 5), None, NOW),
            None
        );
    }

    #[test]
    fn scale_in_waits_for_the_cooldown() {
        let c = cpu(AdjustmentType::ChangeInCapacity);
        let recent = Some(Activity {
            at: NOW - 100,
            direction: Direction::Out,
        });
        assert_eq!(
            evaluate(&c, 10.0, &[OLD; 4], cap(1, 10, 4), recent, NOW),
            None
        );
        let old = Some(Activity {
            at: NOW - 300,
            direction: Direction::In,
        });
        assert_eq!(
            evaluate(&c, 10.0, &[OLD; 4], cap(1, 10, 4), old, NOW)
                .unwrap()
                .new_desired,
            3
        );
        // Scale-out ignores it.
        assert_eq!(
            evaluate(&c, 65.0, &[OLD; 4], cap(1, 10, 4), recent, NOW)
                .unwrap()
                .new_desired,
            5
        );
    }

    #[test]
    fn randomized_decisions_stay_in_bounds_and_respect_scale_in_cooldown() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x57e9);
        let kinds = [
            AdjustmentType::ChangeInCapacity,
            AdjustmentType::ExactCapacity,
            AdjustmentType::PercentChangeInCapacity,
        ];
        for case in 0..20_000 {
            let min = rng.random_range(0..5u32);
            let max = rng.random_range(min..min + 20);
            let desired = rng.random_range(min..=max);
            let kind = kinds[rng.random_range(0..3)];
            let exact = kind == AdjustmentType::ExactCapacity;
            let adj = |rng: &mut rand::rngs::StdRng, sign: i64| {
                if exact {
                    rng.random_range(0..30)
                } else {
                    sign * rng.random_range(1..60)
                }
            };
            let config = StepScalingConfig {
                metric: "cpu".into(),
                threshold: 60.0,
                adjustment_type: kind,
                steps: vec![
                    step(Some(0.0), Some(20.0), adj(&mut rng, 1)),
                    step(Some(20.0), None, adj(&mut rng, 1)),
                    step(None, Some(-30.0), adj(&mut rng, -1)),
                ],
                min_adjustment_magnitude: rng.random_bool(0.5).then(|| rng.random_range(1..4)),
                instance_warmup_secs: rng.random_range(0..600),
                scale_in_cooldown_secs: rng.random_range(0..600),
            };
            assert_eq!(config.validate(), Ok(()));
            let now: UnixSeconds = 10_000_000;
            let launches: Vec<UnixSeconds> = (0..desired)
                .map(|_| now - rng.random_range(0..1200))
                .collect();
            let last = rng.random_bool(0.7).then(|| Activity {
                at: now - rng.random_range(0..900),
                direction: if rng.random_bool(0.5) {
                    Direction::Out
                } else {
                    Direction::In
                },
            });
            let value = rng.random_range(0.0..120.0);
            if let Some(d) = evaluate(&config, value, &launches, cap(min, max, desired), last, now)
            {
                assert!(
                    (min..=max).contains(&d.new_desired),
                    "case {case}: {d:?} outside [{min}, {max}]"
                );
                assert_ne!(d.new_desired, desired, "case {case}");
                if d.new_desired < desired {
                    if let Some(a) = last {
                        assert!(
                            now - a.at >= config.scale_in_cooldown_secs as i64,
                            "case {case}: in cooldown"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn config_reads_with_defaults() {
        let c: StepScalingConfig = serde_json::from_str(
            r#"{"metric":"cpu","threshold":60,"adjustment_type":"percent_change_in_capacity",
                "steps":[{"lower_bound":0,"adjustment":20}],"min_adjustment_magnitude":2}"#,
        )
        .unwrap();
        assert_eq!(
            (c.instance_warmup_secs, c.scale_in_cooldown_secs),
            (300, 300)
        );
        assert_eq!(c.steps[0].upper_bound, None);
    }
}
