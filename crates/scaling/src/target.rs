//! Target tracking: keep a metric's average per instance (CPU 50%, requests
//! per instance, …) at a target by setting the desired capacity.
//!
//! The rules, after AWS Auto Scaling's documented behaviour:
//! - **Formula.** `needed = ceil(counted × average / target)`, where the
//!   average and `counted` cover only the instances that report a sample
//!   and have finished warming up.
//! - **Warm-up.** An instance launched less than `instance_warmup_secs` ago
//!   neither counts in the average nor in `counted`; instead the warming
//!   instances are already part of the current desired capacity, so a
//!   scale-out happens only when `needed` exceeds it. That is AWS's "a
//!   warming instance is not counted towards the group's capacity yet": +1
//!   computed twice while the first +1 warms launches one instance, not two.
//! - **Scale-out cooldown.** AWS: while it runs, "the capacity added by the
//!   previous scale-out is calculated as part of the desired capacity for the
//!   next scale-out". Comparing `needed` with the current desired capacity
//!   (which includes that capacity) is exactly this, so a larger need still
//!   scales out inside the cooldown and an equal one does nothing.
//! - **Scale-in**, conservative (AWS says to scale in conservatively and
//!   documents no formula, so this is ours): never while the scale-in
//!   cooldown runs after the last scaling activity *of either direction*;
//!   never while any instance warms up; never while fewer instances report
//!   than the desired capacity (capacity in flight or missing data is not
//!   evidence of low load); and at most `max(1, 10% of desired)` instances
//!   per activity, so a quiet minute cannot halve a fleet.
//!   A scale-out is never blocked by the scale-in cooldown (AWS).
//! - **`disable_scale_in`**: the policy only ever scales out.
//! - **min and max** bound the result; when the current desired capacity is
//!   already outside them, the decision moves it inside regardless of
//!   cooldowns (honouring the bounds is not a scaling activity).
//!
//! Not here: metric collection and aggregation over a period (the caller
//! passes one sample per instance), alarms, predictive scaling.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{is_warming, within, Capacity, Decision, UnixSeconds};

/// A target-tracking policy, as written in the spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetTrackingConfig {
    /// The metric's name (`cpu`, `requests_per_instance`, …); informational
    /// here, the caller picks the samples.
    pub metric: String,
    /// The per-instance average to hold. Must be positive.
    pub target: f64,
    /// Seconds after a scale-out during which the capacity it added counts
    /// for the next one. Default 300, as Application Auto Scaling.
    #[serde(default = "default_cooldown")]
    pub scale_out_cooldown_secs: u64,
    /// Seconds after any scaling activity before a scale-in. Default 300.
    #[serde(default = "default_cooldown")]
    pub scale_in_cooldown_secs: u64,
    /// Seconds after launch before an instance's samples count. Default 300,
    /// EC2 Auto Scaling's default when no warm-up is set.
    #[serde(default = "default_cooldown")]
    pub instance_warmup_secs: u64,
    /// Only ever scale out. Default false.
    #[serde(default)]
    pub disable_scale_in: bool,
}

fn default_cooldown() -> u64 {
    300
}

/// One instance's latest sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The metric's value for this instance.
    pub value: f64,
    /// When the instance was launched.
    pub launch_time: UnixSeconds,
}

/// The last scaling activity the group saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// When it happened.
    pub at: UnixSeconds,
    /// Whether it added capacity.
    pub direction: Direction,
}

/// Which way an activity moved the desired capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Capacity added.
    Out,
    /// Capacity removed.
    In,
}

/// The most a scale-in removes at once: 10% of desired, at least 1.
pub fn max_scale_in_step(desired: u32) -> u32 {
    (desired / 10).max(1)
}

/// Evaluates the policy: `None` when the desired capacity should stay.
pub fn evaluate(
    config: &TargetTrackingConfig,
    samples: &BTreeMap<String, Sample>,
    capacity: Capacity,
    last_activity: Option<Activity>,
    now: UnixSeconds,
) -> Option<Decision> {
    if let Some(back_inside) = capacity.out_of_bounds() {
        return Some(back_inside);
    }
    let current = capacity.desired;
    if !(config.target > 0.0 && config.target.is_finite()) {
        return None;
    }
    let warming = samples
        .values()
        .filter(|s| is_warming(s.launch_time, config.instance_warmup_secs, now))
        .count();
    let ready: Vec<f64> = samples
        .values()
        .filter(|s| {
            !is_warming(s.launch_time, config.instance_warmup_secs, now) && s.value.is_finite()
        })
        .map(|s| s.value)
        .collect();
    if ready.is_empty() {
        return None;
    }
    let counted = ready.len() as f64;
    let average = ready.iter().sum::<f64>() / counted;
    let raw = (counted * average / config.target).ceil();
    // A metric cannot ask for fewer than zero instances or more than u32 holds.
    let needed = if raw <= 0.0 {
        0
    } else if raw >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        raw as u32
    };
    let metric = &config.metric;
    let target = config.target;

    if needed > current {
        let new_desired = capacity.clamp(needed);
        if new_desired <= current {
            return None;
        }
        let cooling = match last_activity {
            Some(a)
                if a.direction == Direction::Out
                    && within(Some(a.at), config.scale_out_cooldown_secs, now) =>
            {
                " (inside the scale-out cooldown; the capacity it added is counted)"
            }
            _ => "",
        };
        return Some(Decision {
            new_desired,
            reason: format!(
                "{metric} averages {average:.2} over {} ready instance(s) ({warming} warming), target {target}: \
                 ceil({} × {average:.2} / {target}) = {needed}; scale out {current} → {new_desired}{cooling}",
                ready.len(),
                ready.len()
            ),
        });
    }
    if needed >= current || config.disable_scale_in {
        return None;
    }
    if within(
        last_activity.map(|a| a.at),
        config.scale_in_cooldown_secs,
        now,
    ) || warming > 0
    {
        return None;
    }
    if ready.len() < current as usize {
        return None;
    }
    let floor = current - max_scale_in_step(current);
    let new_desired = capacity.clamp(needed.max(floor));
    if new_desired >= current {
        return None;
    }
    Some(Decision {
        new_desired,
        reason: format!(
            "{metric} averages {average:.2} over {} instance(s), target {target}: ceil({} × {average:.2} / {target}) = \
             {needed}; scale in {current} → {new_desired} (at most {} at a time)",
            ready.len(),
            ready.len(),
            max_scale_in_step(current)
        ),
    })
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    fn config() -> TargetTrackingConfig {
        serde_json::from_str(r#"{"metric": "cpu", "target": 50}"#).unwrap()
    }

    fn samples(values: &[(f64, UnixSeconds)]) -> BTreeMap<String, Sample> {
        values
            .iter()
            .enumerate()
            .map(|(i, &(value, launch_time))| (format!("i-{i:02}"), Sample { value, launch_time }))
            .collect()
    }

    fn cap(min: u32, max: u32, desired: u32) -> Capacity {
        Capacity { min, max, desired }
    }

    const NOW: UnixSeconds = 1_000_000;
    const OLD: UnixSeconds = NOW - 3600;

    #[test]
    fn defaults_are_documented_ones() {
        let c = config();
        assert_eq!(
            (
                c.scale_out_cooldown_secs,
                c.scale_in_cooldown_secs,
                c.instance_warmup_secs
            ),
            (300, 300, 300)
        );
        assert!(!c.disable_scale_in);
        assert!(serde_json::from_str::<TargetTrackingConfig>(
            r#"{"metric":"cpu","target":5,"bogus":1}"#
        )
        .is_err());
    }

    #[test]
    fn scale_out_is_proportional() {
        // 4 instances at 80% for a 50% target: ceil(4 × 80 / 50) = 7.
        let d = evaluate(
            &config(),
            &samples(&[(80.0, OLD); 4]),
            cap(1, 10, 4),
            None,
            NOW,
        )
        .unwrap();
        assert_eq!(d.new_desired, 7);
        assert!(
            d.reason.contains("ceil(4 × 80.00 / 50) = 7"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn scale_out_is_clamped_to_max() {
        let d = evaluate(
            &config(),
            &samples(&[(100.0, OLD); 4]),
            cap(1, 6, 4),
            None,
            NOW,
        )
        .unwrap();
        assert_eq!(d.new_desired, 6);
        assert_eq!(
            evaluate(
                &config(),
                &samples(&[(100.0, OLD); 6]),
                cap(1, 6, 6),
                None,
                NOW
            ),
            None
        );
    }

    #[test]
    fn at_target_nothing_happens() {
        assert_eq!(
            evaluate(
                &config(),
                &samples(&[(50.0, OLD); 4]),
                cap(1, 10, 4),
                None,
                NOW
            ),
            None
        );
    }

    #[test]
    fn warming_instances_do_not_count_or_trigger_another_scale_out() {
        // 4 ready at 62.5% → ceil(4 × 62.5 / 50) = 5; desired already 5
        // because one instance is warming (launched 60 s ago, reading 0%).
        let s = samples(&[
            (62.5, OLD),
            (62.5, OLD),
            (62.5, OLD),
            (62.5, OLD),
            (0.0, NOW - 60),
        ]);
        assert_eq!(evaluate(&config(), &s, cap(1, 10, 5), None, NOW), None);
        // The metric rises: ceil(4 × 75 / 50) = 6 → one more, not two.
        let s = samples(&[
            (75.0, OLD),
            (75.0, OLD),
            (75.0, OLD),
            (75.0, OLD),
            (0.0, NOW - 60),
        ]);
        assert_eq!(
            evaluate(&config(), &s, cap(1, 10, 5), None, NOW)
                .unwrap()
                .new_desired,
            6
        );
        // Once warmed up, its 0% counts.
        let s = samples(&[
            (62.5, OLD),
            (62.5, OLD),
            (62.5, OLD),
            (62.5, OLD),
            (0.0, NOW - 300),
        ]);
        assert_eq!(
            evaluate(&config(), &s, cap(1, 10, 5), None, NOW),
            None,
            "ceil(5 × 50 / 50) = 5"
        );
    }

    #[test]
    fn scale_out_inside_its_cooldown_counts_added_capacity() {
        let last = Some(Activity {
            at: NOW - 60,
            direction: Direction::Out,
        });
        // Desired was raised 4 → 6; the 2 new ones are not reporting yet.
        let s = samples(&[(75.0, OLD); 4]);
        assert_eq!(
            evaluate(&config(), &s, cap(1, 10, 6), last, NOW),
            None,
            "ceil(4 × 75 / 50) = 6 already"
        );
        let s = samples(&[(100.0, OLD); 4]);
        assert_eq!(
            evaluate(&config(), &s, cap(1, 10, 6), last, NOW)
                .unwrap()
                .new_desired,
            8
        );
    }

    #[test]
    fn scale_out_is_not_blocked_by_scale_in_cooldown() {
        let last = Some(Activity {
            at: NOW - 10,
            direction: Direction::In,
        });
        let d = evaluate(
            &config(),
            &samples(&[(100.0, OLD); 2]),
            cap(1, 10, 2),
            last,
            NOW,
        )
        .unwrap();
        assert_eq!(d.new_desired, 4);
    }

    #[test]
    fn scale_in_is_gradual_and_waits_for_its_cooldown() {
        let s = samples(&[(10.0, OLD); 20]);
        // ceil(20 × 10 / 50) = 4, but at most 10% (2) at a time.
        let d = evaluate(&config(), &s, cap(1, 30, 20), None, NOW).unwrap();
        assert_eq!(d.new_desired, 18);
        for last in [
            Activity {
                at: NOW - 299,
                direction: Direction::In,
            },
            Activity {
                at: NOW - 1,
                direction: Direction::Out,
            },
        ] {
            assert_eq!(
                evaluate(&config(), &s, cap(1, 30, 20), Some(last), NOW),
                None
            );
        }
        let last = Activity {
            at: NOW - 300,
            direction: Direction::In,
        };
        assert_eq!(
            evaluate(&config(), &s, cap(1, 30, 20), Some(last), NOW)
                .unwrap()
                .new_desired,
            18
        );
        // Small groups scale in by one.
        let d = evaluate(
            &config(),
            &samples(&[(1.0, OLD); 3]),
            cap(1, 30, 3),
            None,
            NOW,
        )
        .unwrap();
        assert_eq!(d.new_desired, 2);
    }

    #[test]
    fn scale_in_is_held_by_warming_missing_data_min_and_disable() {
        let c = config();
        let warming = samples(&[(10.0, OLD), (10.0, OLD), (10.0, NOW - 5)]);
        assert_eq!(evaluate(&c, &warming, cap(1, 10, 3), None, NOW), None);
        let missing = samples(&[(10.0, OLD), (10.0, OLD)]);
        assert_eq!(evaluate(&c, &missing, cap(1, 10, 3), None, NOW), None);
        assert_eq!(
            evaluate(&c, &samples(&[(0.0, OLD); 2]), cap(2, 10, 2), None, NOW),
            None
        );
        let disabled = TargetTrackingConfig {
            disable_scale_in: true,
            ..c
        };
        assert_eq!(
            evaluate(
                &disabled,
                &samples(&[(0.0, OLD); 4]),
                cap(1, 10, 4),
                None,
                NOW
            ),
            None
        );
    }

    #[test]
    fn no_ready_samples_no_decision() {
        assert_eq!(
            evaluate(
                &config(),
                &samples(&[(99.0, NOW)]),
                cap(1, 10, 1),
                None,
                NOW
            ),
            None
        );
        assert_eq!(
            evaluate(&config(), &BTreeMap::new(), cap(1, 10, 1), None, NOW),
            None
        );
    }

    #[test]
    fn desired_outside_bounds_is_brought_inside() {
        // A scheduled action lowered max to 0 in the evening.
        let last = Some(Activity {
            at: NOW - 1,
            direction: Direction::Out,
        });
        let d = evaluate(
            &config(),
            &samples(&[(99.0, OLD); 2]),
            cap(0, 0, 2),
            last,
            NOW,
        )
        .unwrap();
        assert_eq!(d.new_desired, 0);
        assert_eq!(
            evaluate(&config(), &BTreeMap::new(), cap(2, 4, 0), None, NOW)
                .unwrap()
                .new_desired,
            2
        );
    }

    #[test]
    fn randomized_decisions_stay_in_bounds_and_respect_scale_in_cooldown() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5ca1e);
        for case in 0..20_000 {
            let min = rng.random_range(0..5u32);
            let max = rng.random_range(min..min + 20);
            let desired = rng.random_range(min..=max);
            let now: UnixSeconds = 10_000_000;
            let config = TargetTrackingConfig {
                metric: "cpu".into(),
                target: rng.random_range(1.0..100.0),
                scale_out_cooldown_secs: rng.random_range(0..600),
                scale_in_cooldown_secs: rng.random_range(0..600),
                instance_warmup_secs: rng.random_range(0..600),
                disable_scale_in: rng.random_bool(0.2),
            };
            let n = rng.random_range(0..=desired + 2);
            let samples: BTreeMap<String, Sample> = (0..n)
                .map(|i| {
                    let s = Sample {
                        value: rng.random_range(0.0..200.0),
                        launch_time: now - rng.random_range(0..1200),
                    };
                    (format!("i-{i}"), s)
                })
                .collect();
            let last = rng.random_bool(0.7).then(|| Activity {
                at: now - rng.random_range(0..900),
                direction: if rng.random_bool(0.5) {
                    Direction::Out
                } else {
                    Direction::In
                },
            });
            let capacity = cap(min, max, desired);
            if let Some(d) = evaluate(&config, &samples, capacity, last, now) {
                assert!(
                    (min..=max).contains(&d.new_desired),
                    "case {case}: {d:?} outside [{min}, {max}]"
                );
                assert_ne!(d.new_desired, desired, "case {case}: a no-op decision");
                if d.new_desired < desired {
                    assert!(!config.disable_scale_in, "case {case}");
                    if let Some(a) = last {
                        assert!(
                            now - a.at >= config.scale_in_cooldown_secs as i64,
                            "case {case}: scale-in in cooldown"
                        );
                    }
                    assert!(
                        desired - d.new_desired <= max_scale_in_step(desired),
                        "case {case}"
                    );
                }
            }
        }
    }
}
