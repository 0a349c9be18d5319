//! The sections `endstate serve` reads — `health_check`, `replacement_brake`
//! and `scaling` — load to the types of `endstate-health` and
//! `endstate-scaling`, and each kind of bad input gives one error at the
//! line and column where it was written.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::path::Path;

use endstate_model::health::{BrakeConfig, ExpectedStatus, HealthCheck, ProbeTarget};
use endstate_model::scaling::schedule::ScheduledActionConfig;
use endstate_model::scaling::step::{AdjustmentType, StepAdjustment, StepScalingConfig};
use endstate_model::scaling::target::TargetTrackingConfig;
use endstate_model::{load_str, Group, Scaling, Spec};

/// A group `web` of capacity 1..=6; tests append its new sections.
const HEAD: &str = "\
project: shop
provider:
  aws:
    region: us-east-1
groups:
  web:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 2, max: 6 }
    zones: [us-east-1a]
";

fn load(body: &str) -> Result<Spec, String> {
    load_str(
        &format!("{HEAD}{body}"),
        Path::new("spec.yaml"),
        Path::new("/nonexistent"),
        None,
    )
    .map_err(|d| d.to_string())
}

fn web(body: &str) -> Group {
    match load(body) {
        Ok(spec) => spec.groups.into_iter().next().unwrap(),
        Err(d) => panic!("unexpected diagnostics:\n{d}"),
    }
}

/// Lines of HEAD: the first appended line is line 11.
const FIRST: usize = 11;

#[test]
fn all_three_sections_load_to_the_policy_types() {
    let group = web("
    health_check:
      http: { port: 8080, path: /healthz, expected: \"200-299\" }
      interval: 10
      timeout: 2
      healthy_threshold: 2
      unhealthy_threshold: 3
      grace_period: 120
    replacement_brake:
      max_unhealthy_share: 0.4
      min_unhealthy: 3
      window: 600
    scaling:
      target_tracking:
        - metric: cpu
          target: 50
          scale_out_cooldown: 60
          scale_in_cooldown: 240
          instance_warmup: 30
          disable_scale_in: true
      step:
        - metric: requests
          threshold: 100.5
          adjustment_type: change_in_capacity
          steps:
            - { lower: 0, upper: 50, adjustment: 1 }
            - { lower: 50, adjustment: 3 }
            - { upper: -20, adjustment: -1 }
          instance_warmup: 60
          scale_in_cooldown: 300
          min_adjustment_magnitude: 2
      scheduled:
        - name: evening
          cron: \"0 19 * * 1-5\"
          time_zone: Europe/Berlin
          min: 0
          desired: 0
        - name: morning
          cron: \"0 8 * * MON-FRI\"
          max: 6
          desired: 3
");
    assert_eq!(
        group.health_check,
        Some(HealthCheck {
            probe: ProbeTarget::Http {
                port: 8080,
                path: "/healthz".into(),
                expected: "200-299".parse::<ExpectedStatus>().unwrap(),
            },
            interval_seconds: 10,
            timeout_seconds: 2,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            grace_period_seconds: 120,
        })
    );
    assert_eq!(
        group.brake,
        BrakeConfig {
            max_unhealthy_share: 0.4,
            min_unhealthy: 3,
            window_seconds: 600,
        }
    );
    assert_eq!(
        group.scaling,
        Scaling {
            target_tracking: vec![TargetTrackingConfig {
                metric: "cpu".into(),
                target: 50.0,
                scale_out_cooldown_secs: 60,
                scale_in_cooldown_secs: 240,
                instance_warmup_secs: 30,
                disable_scale_in: true,
            }],
            step: vec![StepScalingConfig {
                metric: "requests".into(),
                threshold: 100.5,
                adjustment_type: AdjustmentType::ChangeInCapacity,
                steps: vec![
                    StepAdjustment {
                        lower_bound: Some(0.0),
                        upper_bound: Some(50.0),
                        adjustment: 1,
                    },
                    StepAdjustment {
                        lower_bound: Some(50.0),
                        upper_bound: None,
                        adjustment: 3,
                    },
                    StepAdjustment {
                        lower_bound: None,
                        upper_bound: Some(-20.0),
                        adjustment: -1,
                    },
                ],
                min_adjustment_magnitude: Some(2),
                instance_warmup_secs: 60,
                scale_in_cooldown_secs: 300,
            }],
            scheduled: vec![
                ScheduledActionConfig {
                    name: "evening".into(),
                    cron: "0 19 * * 1-5".into(),
                    time_zone: "Europe/Berlin".into(),
                    min: Some(0),
                    max: None,
                    desired: Some(0),
                },
                ScheduledActionConfig {
                    name: "morning".into(),
                    cron: "0 8 * * MON-FRI".into(),
                    time_zone: "UTC".into(),
                    min: None,
                    max: Some(6),
                    desired: Some(3),
                },
            ],
        }
    );
}

#[test]
fn absent_sections_and_fields_take_the_documented_defaults() {
    let group = web("");
    assert_eq!(group.health_check, None);
    assert_eq!(group.brake, BrakeConfig::default());
    assert!(group.scaling.is_empty());

    let group = web("
    health_check: { tcp: { port: 22 } }
    replacement_brake: { max_unhealthy_share: 50% }
    scaling:
      target_tracking: [{ metric: cpu, target: 0.5 }]
");
    assert_eq!(
        group.health_check,
        Some(HealthCheck::new(ProbeTarget::Tcp { port: 22 }))
    );
    assert_eq!(group.brake.max_unhealthy_share, 0.5);
    assert_eq!(group.brake.min_unhealthy, 2);
    assert_eq!(group.brake.window_seconds, 300);
    let policy = &group.scaling.target_tracking[0];
    assert_eq!(policy.target, 0.5);
    assert_eq!(
        (
            policy.scale_out_cooldown_secs,
            policy.scale_in_cooldown_secs,
            policy.instance_warmup_secs,
            policy.disable_scale_in
        ),
        (300, 300, 300, false)
    );

    let group = web("
    health_check: { http: { port: 80, expected: 204 } }
");
    assert_eq!(
        group.health_check.unwrap().probe,
        ProbeTarget::Http {
            port: 80,
            path: "/".into(),
            expected: "204".parse().unwrap(),
        }
    );
}

#[test]
fn the_new_sections_do_not_change_the_launch_hash() {
    let plain = web("");
    let serving = web("
    health_check: { tcp: { port: 22 } }
    scaling: { target_tracking: [{ metric: cpu, target: 50 }] }
");
    assert_eq!(plain.launch_hash(), serving.launch_hash());
}

#[test]
fn an_overlay_switches_http_for_tcp() {
    let source = format!(
        "{HEAD}    health_check: {{ http: {{ port: 80 }} }}
environments:
  prod:
    groups:
      web:
        health_check: {{ tcp: {{ port: 22 }} }}
"
    );
    let spec = load_str(
        &source,
        Path::new("spec.yaml"),
        Path::new("/nonexistent"),
        Some("prod"),
    )
    .unwrap();
    assert_eq!(
        spec.groups[0].health_check.as_ref().unwrap().probe,
        ProbeTarget::Tcp { port: 22 }
    );
}

/// Each case: the lines appended to the group, and the whole diagnostic
/// output, with `{L}` standing for line FIRST + L.
#[test]
fn each_kind_of_bad_input_is_one_error_where_it_was_written() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "wrong type",
            "
    health_check:
      tcp: { port: 22 }
      interval: ten
",
            "spec.yaml:{3}:17: error: health_check.interval: expected an integer, found a string",
        ),
        (
            "unknown field with a suggestion",
            "
    health_check:
      tcp: { port: 22 }
      intervall: 10
",
            "spec.yaml:{3}:7: error: unknown field `intervall` in health_check (did you mean `interval`?)
  expected: one of http, tcp, interval, timeout, healthy_threshold, unhealthy_threshold, grace_period",
        ),
        (
            "misspelt section",
            "
    replacment_brake: { window: 60 }
",
            "spec.yaml:{1}:5: error: unknown field `replacment_brake` in group `web` (did you mean `replacement_brake`?)
  expected: one of image, instance_types, instance_type, capacity, zones, security_groups, key_pair, iam_instance_profile, root_volume, metadata, tags, user_data, disruption_budget, health_check, replacement_brake, scaling, load_balancer, rollout, roles",
        ),
        (
            "timeout not below interval",
            "
    health_check:
      http: { port: 80 }
      interval: 5
      timeout: 5
",
            "spec.yaml:{4}:16: error: health_check.timeout (5) must be at least 1 and less than health_check.interval (5)",
        ),
        (
            "neither http nor tcp",
            "
    health_check: { interval: 10 }
",
            "spec.yaml:{1}:5: error: health_check sets neither `http` nor `tcp`
  expected: http: { port: 8080 } or tcp: { port: 22 }",
        ),
        (
            "bad expected status",
            "
    health_check: { http: { port: 80, expected: \"200-199\" } }
",
            "spec.yaml:{1}:49: error: health_check.http.expected `200-199` is not a list of HTTP statuses
  expected: codes and ranges within 100-599, like 200, \"200-299\" or \"200,204\"",
        ),
        (
            "share out of range",
            "
    replacement_brake: { max_unhealthy_share: 1.5 }
",
            "spec.yaml:{1}:47: error: replacement_brake.max_unhealthy_share (1.5) is not a share
  expected: a percentage like 90% or a fraction between 0 and 1 like 0.9",
        ),
        (
            "target not positive",
            "
    scaling:
      target_tracking:
        - metric: cpu
          target: 0
",
            "spec.yaml:{4}:19: error: scaling.target_tracking[0].target (0) must be greater than 0",
        ),
        (
            "bad metric name",
            "
    scaling:
      target_tracking: [{ metric: CPU, target: 50 }]
",
            "spec.yaml:{2}:35: error: scaling.target_tracking[0].metric: invalid metric name `CPU`
  expected: a-z, 0-9 and _, starting with a letter, like cpu",
        ),
        (
            "overlapping steps",
            "
    scaling:
      step:
        - metric: requests
          threshold: 100
          adjustment_type: change_in_capacity
          steps:
            - { lower: 0, upper: 50, adjustment: 1 }
            - { lower: 40, adjustment: 3 }
",
            "spec.yaml:{8}:17: error: scaling.step[0].steps[1] overlaps scaling.step[0].steps[0]",
        ),
        (
            "unknown adjustment type",
            "
    scaling:
      step:
        - metric: requests
          threshold: 100
          adjustment_type: change
          steps: [{ adjustment: 1 }]
",
            "spec.yaml:{5}:28: error: scaling.step[0].adjustment_type: unknown type `change`
  expected: one of change_in_capacity, exact_capacity, percent_change_in_capacity",
        ),
        (
            "exact capacity over the group's max",
            "
    scaling:
      step:
        - metric: requests
          threshold: 100
          adjustment_type: exact_capacity
          steps: [{ lower: 0, adjustment: 7 }]
",
            "spec.yaml:{6}:43: error: scaling.step[0].steps[0].adjustment (7) is over capacity.max (6), and exact_capacity sets the capacity to it",
        ),
        (
            "bad cron field",
            "
    scaling:
      scheduled:
        - name: evening
          cron: \"0 25 * * 1-5\"
          desired: 0
",
            "spec.yaml:{4}:20: error: scaling.scheduled[0].cron: cron \"0 25 * * 1-5\": hour 25 is out of range 0-23
  expected: minute hour day-of-month month day-of-week, like \"0 19 * * 1-5\"",
        ),
        (
            "cron with too few fields",
            "
    scaling:
      scheduled:
        - name: evening
          cron: 0 19 * *
          desired: 0
",
            "spec.yaml:{4}:17: error: scaling.scheduled[0].cron: cron \"0 19 * *\": expected 5 fields (minute hour day-of-month month day-of-week), found 4
  expected: minute hour day-of-month month day-of-week, like \"0 19 * * 1-5\"",
        ),
        (
            "unknown time zone",
            "
    scaling:
      scheduled:
        - name: evening
          cron: 0 19 * * 1-5
          time_zone: Europe/Berlinn
          desired: 0
",
            "spec.yaml:{5}:22: error: scaling.scheduled[0].time_zone: time zone \"Europe/Berlinn\" not found (looked for /usr/share/zoneinfo/Europe/Berlinn)
  expected: an IANA time zone name, like Europe/Berlin or UTC",
        ),
        (
            "a bad zone does not hide a bad cron",
            "
    scaling:
      scheduled:
        - name: evening
          cron: 0 19 * * 8
          time_zone: Mars/Olympus
          desired: 0
",
            "spec.yaml:{4}:26: error: scaling.scheduled[0].cron: cron \"0 19 * * 8\": day of week 8 is out of range 0-7
  expected: minute hour day-of-month month day-of-week, like \"0 19 * * 1-5\"
spec.yaml:{5}:22: error: scaling.scheduled[0].time_zone: time zone \"Mars/Olympus\" not found (looked for /usr/share/zoneinfo/Mars/Olympus)
  expected: an IANA time zone name, like Europe/Berlin or UTC",
        ),
        (
            "duplicate scheduled name",
            "
    scaling:
      scheduled:
        - { name: evening, cron: 0 19 * * 1-5, desired: 0 }
        - { name: evening, cron: 0 8 * * 1-5, desired: 2 }
",
            "spec.yaml:{4}:19: error: scaling.scheduled[1].name: duplicate scheduled action `evening` (first on line {3})
  expected: a name unique within the group",
        ),
        (
            "none of min, max, desired",
            "
    scaling:
      scheduled:
        - name: evening
          cron: 0 19 * * 1-5
",
            "spec.yaml:{3}:11: error: scaling.scheduled[0] sets none of min, max and desired
  expected: at least one of min, max, desired",
        ),
        (
            "scheduled min above its max",
            "
    scaling:
      scheduled:
        - { name: evening, cron: 0 19 * * 1-5, min: 4, max: 3 }
",
            "spec.yaml:{3}:53: error: scaling.scheduled[0].min (4) is greater than scaling.scheduled[0].max (3)",
        ),
        (
            "scheduled desired over the group's max",
            "
    scaling:
      scheduled:
        - { name: evening, cron: 0 19 * * 1-5, desired: 9 }
",
            "spec.yaml:{3}:57: error: scaling.scheduled[0].desired (9) is over capacity.max (6), and the action does not set max",
        ),
    ];
    let mut failures = Vec::new();
    for (name, body, expected) in cases {
        let mut expected = expected.to_string();
        for l in 0..10 {
            expected = expected.replace(&format!("{{{l}}}"), &(FIRST + l).to_string());
        }
        let got = match load(body) {
            Ok(_) => "<loaded without errors>".to_string(),
            Err(d) => d,
        };
        if got != expected {
            failures.push(format!(
                "case {name}:\n--- expected\n{expected}\n--- got\n{got}\n"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
