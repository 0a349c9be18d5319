//! The sections rollouts read — `load_balancers:`, and a group's
//! `load_balancer:` and `rollout:` — load to the types of
//! `endstate_model::rollout` with their documented defaults, follow
//! environment overlays and `${var.*}`, change the spec's hash, and each
//! kind of bad input gives one error at the line and column where it was
//! written, naming the field and the limit.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::path::Path;
use std::time::Duration;

use endstate_model::{
    load_str, Amount, GroupLoadBalancer, LoadBalancerSpec, Rollout, Spec, Strategy,
};

/// A load balancer `web-lb` on 8080 and a group `web` of desired 4 behind
/// nothing yet; tests append the group's new sections.
const HEAD: &str = "\
project: shop
provider:
  aws:
    region: us-east-1
variables:
  surge: 2
load_balancers:
  web-lb:
    port: 8080
    deregistration_delay: 30
groups:
  web:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 4, max: 8 }
    zones: [us-east-1a]
";

/// Lines of HEAD: the first appended line is line 17.
const FIRST: usize = 17;

/// The lines before a `load_balancers:` section under test.
const PRE: &str = "\
project: shop
provider:
  aws:
    region: us-east-1
";

/// A group behind no load balancer, after a `load_balancers:` under test.
const PLAIN_GROUP: &str = "\
groups:
  web:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 4, max: 8 }
    zones: [us-east-1a]
";

fn load_source(source: &str, environment: Option<&str>) -> Result<Spec, String> {
    load_str(
        source,
        Path::new("spec.yaml"),
        Path::new("/nonexistent"),
        environment,
    )
    .map_err(|d| d.to_string())
}

fn spec(body: &str) -> Spec {
    load_source(&format!("{HEAD}{body}"), None).unwrap_or_else(|d| panic!("{d}"))
}

fn rollout(body: &str) -> Rollout {
    spec(body).groups[0].rollout.clone().unwrap()
}

#[test]
fn blue_green_with_every_field_loads_to_the_types() {
    let spec = spec(
        "
    load_balancer: { name: web-lb, port: 8000 }
    rollout:
      strategy: blue_green
      canary: [10, 50]
      canary_pause: 20
      keep_old_for: 600
      healthy_timeout: 120
      watch: 90
      auto_rollback: false
      max_error_rate: 2%
",
    );
    assert_eq!(
        spec.load_balancers,
        vec![LoadBalancerSpec {
            name: "web-lb".into(),
            port: 8080,
            deregistration_delay: Duration::from_secs(30),
        }]
    );
    let web = &spec.groups[0];
    assert_eq!(
        web.load_balancer,
        Some(GroupLoadBalancer {
            name: "web-lb".into(),
            port: 8000,
        })
    );
    assert_eq!(
        web.rollout,
        Some(Rollout {
            strategy: Strategy::BlueGreen {
                canary: vec![10, 50],
                canary_pause: Duration::from_secs(20),
                keep_old_for: Duration::from_secs(600),
            },
            healthy_timeout: Duration::from_secs(120),
            watch: Duration::from_secs(90),
            auto_rollback: false,
            max_error_rate: 0.02,
        })
    );
    // Through JSON (state, events, the API) and back, unchanged.
    let json = serde_json::to_string(&spec).unwrap();
    let back: Spec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, spec);
}

#[test]
fn rolling_takes_counts_percentages_and_variables() {
    let got = rollout(
        "
    load_balancer: { name: web-lb, port: 8000 }
    rollout:
      strategy: rolling
      max_surge: ${var.surge}
      max_unavailable: 50%
      pause: 10
      max_error_rate: 0.1
",
    );
    assert_eq!(
        got,
        Rollout {
            strategy: Strategy::Rolling {
                max_surge: Amount::Count(2),
                max_unavailable: Amount::Percent(50),
                pause: Duration::from_secs(10),
            },
            max_error_rate: 0.1,
            ..Rollout::default_rolling()
        }
    );
    // A quoted `${var.X}` inside `{ }` takes the variable's type too.
    let got = rollout(
        "
    load_balancer: { name: web-lb, port: '${var.surge}' }
    rollout: { strategy: rolling, max_surge: '${var.surge}', max_unavailable: 0 }
",
    );
    assert_eq!(
        got.strategy,
        Strategy::Rolling {
            max_surge: Amount::Count(2),
            max_unavailable: Amount::Count(0),
            pause: Duration::ZERO,
        }
    );
}

#[test]
fn absent_sections_and_fields_take_the_documented_defaults() {
    // No load balancer: no rollout (the planner's replacement).
    let plain = spec("");
    assert_eq!(plain.groups[0].load_balancer, None);
    assert_eq!(plain.groups[0].rollout, None);

    // A load balancer without `rollout:`: rolling, 25% / 25%.
    let behind = spec(
        "
    load_balancer: { name: web-lb, port: 8000 }
",
    );
    assert_eq!(behind.groups[0].rollout, Some(Rollout::default_rolling()));
    assert_eq!(
        Rollout::default_rolling(),
        Rollout {
            strategy: Strategy::Rolling {
                max_surge: Amount::Percent(25),
                max_unavailable: Amount::Percent(25),
                pause: Duration::ZERO,
            },
            healthy_timeout: Duration::from_secs(300),
            watch: Duration::from_secs(60),
            auto_rollback: true,
            max_error_rate: 0.05,
        }
    );

    let blue_green = rollout(
        "
    load_balancer: { name: web-lb, port: 8000 }
    rollout: { strategy: blue_green }
",
    );
    assert_eq!(
        blue_green,
        Rollout {
            strategy: Strategy::BlueGreen {
                canary: Vec::new(),
                canary_pause: Duration::from_secs(30),
                keep_old_for: Duration::from_secs(300),
            },
            ..Rollout::default_rolling()
        }
    );

    // deregistration_delay 300; load balancers sorted by name.
    let source = format!(
        "{PRE}load_balancers:
  z-lb: {{ port: 9000 }}
  a-lb: {{ port: 9001 }}
{PLAIN_GROUP}"
    );
    let spec = load_source(&source, None).unwrap();
    assert_eq!(
        spec.load_balancers,
        vec![
            LoadBalancerSpec {
                name: "a-lb".into(),
                port: 9001,
                deregistration_delay: Duration::from_secs(300),
            },
            LoadBalancerSpec {
                name: "z-lb".into(),
                port: 9000,
                deregistration_delay: Duration::from_secs(300),
            },
        ]
    );
}

#[test]
fn a_percentage_that_moves_one_instance_at_the_desired_capacity_is_enough() {
    // 25% of 4 rounds down to 1 unavailable: a rolling update can move.
    let got = rollout(
        "
    load_balancer: { name: web-lb, port: 8000 }
    rollout: { strategy: rolling, max_surge: 0, max_unavailable: 25% }
",
    );
    assert!(matches!(
        got.strategy,
        Strategy::Rolling {
            max_unavailable: Amount::Percent(25),
            ..
        }
    ));
}

#[test]
fn overlays_change_load_balancers_and_switch_strategies() {
    let source = format!(
        "{HEAD}    load_balancer: {{ name: web-lb, port: 8000 }}
    rollout:
      strategy: rolling
      max_surge: 1
      max_unavailable: 0
      watch: 30
environments:
  prod:
    load_balancers:
      web-lb: {{ deregistration_delay: 5 }}
      admin-lb: {{ port: 8081 }}
    groups:
      web:
        load_balancer: {{ port: 8001 }}
        rollout: {{ strategy: blue_green, canary: [25] }}
  staging:
    groups:
      web:
        rollout: null
"
    );
    let base = load_source(&source, None).unwrap();
    let prod = load_source(&source, Some("prod")).unwrap();
    assert_eq!(
        prod.load_balancers,
        vec![
            LoadBalancerSpec {
                name: "admin-lb".into(),
                port: 8081,
                deregistration_delay: Duration::from_secs(300),
            },
            LoadBalancerSpec {
                name: "web-lb".into(),
                port: 8080,
                deregistration_delay: Duration::from_secs(5),
            },
        ]
    );
    let web = &prod.groups[0];
    assert_eq!(
        web.load_balancer,
        Some(GroupLoadBalancer {
            name: "web-lb".into(),
            port: 8001,
        })
    );
    // Switching to blue_green dropped the base's rolling-only keys and kept
    // the shared ones.
    assert_eq!(
        web.rollout,
        Some(Rollout {
            strategy: Strategy::BlueGreen {
                canary: vec![25],
                canary_pause: Duration::from_secs(30),
                keep_old_for: Duration::from_secs(300),
            },
            watch: Duration::from_secs(30),
            ..Rollout::default_rolling()
        })
    );
    // An explicit null unsets the rollout: the default for a group behind
    // a load balancer.
    let staging = load_source(&source, Some("staging")).unwrap();
    assert_eq!(staging.groups[0].rollout, Some(Rollout::default_rolling()));
    assert_eq!(base.groups[0].load_balancer.as_ref().unwrap().port, 8000);
}

#[test]
fn the_spec_hash_follows_the_new_sections_but_not_the_launch_hash() {
    let behind = spec(
        "
    load_balancer: { name: web-lb, port: 8000 }
",
    );
    let other_port = spec(
        "
    load_balancer: { name: web-lb, port: 8001 }
",
    );
    let blue_green = spec(
        "
    load_balancer: { name: web-lb, port: 8000 }
    rollout: { strategy: blue_green }
",
    );
    let slower_drain = load_source(
        &format!("{HEAD}    load_balancer: {{ name: web-lb, port: 8000 }}\n")
            .replace("deregistration_delay: 30", "deregistration_delay: 31"),
        None,
    )
    .unwrap();
    let hashes = [
        &spec("").hash,
        &behind.hash,
        &other_port.hash,
        &blue_green.hash,
        &slower_drain.hash,
    ];
    for (i, a) in hashes.iter().enumerate() {
        for b in &hashes[i + 1..] {
            assert_ne!(a, b, "two different specs share a hash");
        }
    }
    assert_eq!(
        behind.hash,
        spec("\n    load_balancer: { name: web-lb, port: 8000 }\n").hash
    );
    // How a group is rolled out never needs new instances by itself.
    assert_eq!(
        behind.groups[0].launch_hash(),
        blue_green.groups[0].launch_hash()
    );
    assert_eq!(
        behind.groups[0].generation(),
        blue_green.groups[0].generation()
    );
}

/// Replaces `{L}` with line `first + L`.
fn lines(text: &str, first: usize) -> String {
    let mut text = text.to_string();
    for l in 0..20 {
        text = text.replace(&format!("{{{l}}}"), &(first + l).to_string());
    }
    text
}

fn check_cases(
    cases: &[(&str, &str, &str)],
    source: impl Fn(&str) -> String,
    first: usize,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, body, expected) in cases {
        let expected = lines(expected, first);
        let got = match load_source(&source(body), None) {
            Ok(_) => "<loaded without errors>".to_string(),
            Err(d) => d,
        };
        if got != expected {
            failures.push(format!(
                "case {name}:\n--- expected\n{expected}\n--- got\n{got}\n"
            ));
        }
    }
    failures
}

/// Each case: the `load_balancers:` section (from line 5), and the whole
/// diagnostic output, with `{L}` standing for line 4 + L.
#[test]
fn each_bad_load_balancer_is_one_error_where_it_was_written() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "leading dash in the name",
            "load_balancers:
  -web:
    port: 8080
",
            "spec.yaml:{2}:3: error: invalid load balancer name `-web`
  expected: 1 to 32 characters of A-Z, a-z, 0-9 and -, not starting or ending with - nor starting with internal-",
        ),
        (
            "name over 32 characters",
            "load_balancers:
  a-load-balancer-with-a-long-name-x: { port: 8080 }
",
            "spec.yaml:{2}:3: error: invalid load balancer name `a-load-balancer-with-a-long-name-x`
  expected: 1 to 32 characters of A-Z, a-z, 0-9 and -, not starting or ending with - nor starting with internal-",
        ),
        (
            "port missing",
            "load_balancers:
  web-lb: { deregistration_delay: 10 }
",
            "spec.yaml:{2}:3: error: missing required field `load_balancers.web-lb.port`",
        ),
        (
            "port out of range",
            "load_balancers:
  web-lb:
    port: 0
",
            "spec.yaml:{3}:11: error: load_balancers.web-lb.port (0) is out of range 1..=65,535",
        ),
        (
            "deregistration delay over ELB's limit",
            "load_balancers:
  web-lb: { port: 8080, deregistration_delay: 3601 }
",
            "spec.yaml:{2}:47: error: load_balancers.web-lb.deregistration_delay (3601) is out of range 0..=3,600",
        ),
        (
            "two load balancers on one port",
            "load_balancers:
  web-lb: { port: 8080 }
  api-lb:
    port: 8080
",
            "spec.yaml:{4}:11: error: load_balancers.api-lb.port (8080) is already the port of load balancer `web-lb` (line {2})
  expected: a listener port of its own for each load balancer",
        ),
        (
            "misspelt field",
            "load_balancers:
  web-lb:
    prot: 8080
",
            "spec.yaml:{2}:3: error: missing required field `load_balancers.web-lb.port`
spec.yaml:{3}:5: error: unknown field `prot` in load_balancers.web-lb (did you mean `port`?)
  expected: one of port, deregistration_delay",
        ),
        (
            "a list instead of a mapping",
            "load_balancers: [web-lb]
",
            "spec.yaml:{1}:17: error: load_balancers: expected a mapping, found a list",
        ),
    ];
    let failures = check_cases(cases, |body| format!("{PRE}{body}{PLAIN_GROUP}"), 4);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Each case: the lines appended to the group (after a newline, so that
/// the first written line is FIRST + 1), and the whole diagnostic output,
/// with `{L}` standing for line FIRST + L.
#[test]
fn each_bad_group_section_is_one_error_where_it_was_written() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown load balancer",
            "
    load_balancer: { name: api-lb, port: 8000 }
",
            "spec.yaml:{1}:28: error: load_balancer.name: unknown load balancer `api-lb`
  expected: one of web-lb",
        ),
        (
            "load balancer port missing",
            "
    load_balancer: { name: web-lb }
",
            "spec.yaml:{1}:5: error: missing required field `load_balancer.port`",
        ),
        (
            "load balancer port out of range",
            "
    load_balancer:
      name: web-lb
      port: 70000
",
            "spec.yaml:{3}:13: error: load_balancer.port (70000) is out of range 1..=65,535",
        ),
        (
            "rollout without a load balancer",
            "
    rollout: { strategy: rolling }
",
            "spec.yaml:{1}:5: error: rollout: group `web` has no load_balancer
  expected: a load_balancer: { name: LB, port: PORT } beside the rollout",
        ),
        (
            "strategy missing",
            "
    load_balancer: { name: web-lb, port: 8000 }
    rollout: { watch: 30 }
",
            "spec.yaml:{2}:5: error: missing required field `rollout.strategy`",
        ),
        (
            "unknown strategy",
            "
    load_balancer: { name: web-lb, port: 8000 }
    rollout:
      strategy: canary
",
            "spec.yaml:{3}:17: error: rollout.strategy: unknown strategy `canary`
  expected: rolling or blue_green",
        ),
        (
            "a rolling key under blue_green",
            "
    load_balancer: { name: web-lb, port: 8000 }
    rollout:
      strategy: blue_green
      max_surge: 1
",
            "spec.yaml:{4}:7: error: rollout.max_surge is a setting of strategy rolling, and this rollout is blue_green
  expected: for blue_green: canary, canary_pause, keep_old_for, healthy_timeout, watch, auto_rollback, max_error_rate",
        ),
        (
            "a blue_green key under rolling",
            "
    load_balancer: { name: web-lb, port: 8000 }
    rollout:
      strategy: rolling
      canary: [10]
",
            "spec.yaml:{4}:7: error: rollout.canary is a setting of strategy blue_green, and this rollout is rolling
  expected: for rolling: max_surge, max_unavailable, pause, healthy_timeout, watch, auto_rollback, max_error_rate",
        ),
        (
            "surge neither a count nor a percentage",
            "
    load_balancer: { name: web-lb, port: 8000 }
    rollout:
      strategy: rolling
      max_surge: some
",
            "spec.yaml:{4}:18: error: rollout.max_surge (`some`) is not a count or a percentage
  expected: a number of instances like 2, or a whole percentage of desired capacity like 25%",
        ),
        (
            "unavailability over 100%",
            "
    load_balancer: { name: web-lb, port: 8000 }
    rollout:
      strategy: rolling
      max_unavailable: 150%
",
            "spec.yaml:{4}:24: error: rollout.max_unavailable (150%) is over 100%",
        ),
        (
            "surge and unavailability both 0",
            "
    load_balancer: { name: web-lb, port: 8000 }
    rollout:
      strategy: rolling
      max_surge: 0
      max_unavailable: 0
",
            "spec.yaml:{5}:24: error: rollout.max_surge and rollout.max_unavailable both come to 0 instances at a desired capacity of 4: no instance could be replaced
  expected: max_surge or max_unavailable of at least one instance, like max_surge: 1",
        ),
        (
            "a percentage that rounds to 0 at the desired capacity",
            "
    load_balancer: { name: web-lb, port: 8000 }
    rollout: { strategy: rolling, max_surge: 0, max_unavailable: 20% }
",
            "spec.yaml:{2}:66: error: rollout.max_surge and rollout.max_unavailable both come to 0 instances at a desired capacity of 4: no instance could be replaced
  expected: max_surge or max_unavailable of at least one instance, like max_surge: 1",
        ),
        (
            "canary steps not increasing",
            "
    load_balancer: { name: web-lb, port: 8000 }
    rollout:
      strategy: blue_green
      canary: [50, 10]
",
            "spec.yaml:{4}:20: error: rollout.canary[1] (10) is not greater than the step before it (50)
  expected: percentages in increasing order, like [10, 50]",
        ),
        (
            "a canary step of 100",
            "
    load_balancer: { name: web-lb, port: 8000 }
    rollout:
      strategy: blue_green
      canary:
        - 10
        - 100
",
            "spec.yaml:{6}:11: error: rollout.canary[1] (100) is out of range 1..=99",
        ),
        (
            "healthy timeout of 0",
            "
    load_balancer: { name: web-lb, port: 8000 }
    rollout: { strategy: blue_green, healthy_timeout: 0 }
",
            "spec.yaml:{2}:55: error: rollout.healthy_timeout must be at least 1",
        ),
        (
            "error rate of 0",
            "
    load_balancer: { name: web-lb, port: 8000 }
    rollout:
      strategy: blue_green
      max_error_rate: 0%
",
            "spec.yaml:{4}:23: error: rollout.max_error_rate must be greater than 0
  expected: a percentage like 5% or a fraction like 0.05",
        ),
        (
            "error rate over 1",
            "
    load_balancer: { name: web-lb, port: 8000 }
    rollout:
      strategy: blue_green
      max_error_rate: 1.5
",
            "spec.yaml:{4}:23: error: rollout.max_error_rate (1.5) is not a share
  expected: a percentage like 90% or a fraction between 0 and 1 like 0.9",
        ),
        (
            "auto_rollback not a boolean",
            "
    load_balancer: { name: web-lb, port: 8000 }
    rollout:
      strategy: blue_green
      auto_rollback: 'yes'
",
            "spec.yaml:{4}:22: error: rollout.auto_rollback: expected a boolean, found a string
  expected: true or false",
        ),
        (
            "misspelt rollout field",
            "
    load_balancer: { name: web-lb, port: 8000 }
    rollout:
      strategy: blue_green
      keep_old_fr: 60
",
            "spec.yaml:{4}:7: error: unknown field `keep_old_fr` in rollout (did you mean `keep_old_for`?)
  expected: one of strategy, max_surge, max_unavailable, pause, canary, canary_pause, keep_old_for, healthy_timeout, watch, auto_rollback, max_error_rate",
        ),
        (
            "unknown variable in a duration",
            "
    load_balancer: { name: web-lb, port: 8000 }
    rollout:
      strategy: rolling
      pause: ${var.pause}
",
            "spec.yaml:{4}:14: error: unknown variable `pause`
  expected: one of surge",
        ),
        (
            "errors in the rollout of a group without a load balancer are all reported",
            "
    rollout:
      strategy: rolling
      watch: -1
",
            "spec.yaml:{1}:5: error: rollout: group `web` has no load_balancer
  expected: a load_balancer: { name: LB, port: PORT } beside the rollout
spec.yaml:{3}:14: error: rollout.watch (-1) is out of range 0..=4,294,967,295",
        ),
    ];
    let failures = check_cases(cases, |body| format!("{HEAD}{body}"), FIRST);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn two_groups_may_not_share_a_load_balancer() {
    let source = format!(
        "{HEAD}    load_balancer: {{ name: web-lb, port: 8000 }}
  api:
    image: ami-12345678
    instance_type: t3.micro
    capacity: {{ min: 1, desired: 1, max: 1 }}
    zones: [us-east-1a]
    load_balancer: {{ name: web-lb, port: 9000 }}
"
    );
    assert_eq!(
        load_source(&source, None).unwrap_err(),
        format!(
            "spec.yaml:{}:28: error: load_balancer.name: load balancer `web-lb` is already used by group `web` (line {FIRST})
  expected: one group per load balancer: its listener forwards to that group's generations",
            FIRST + 6
        )
    );
}

/// Validates each YAML document against `json_schema()` with Python's
/// jsonschema (draft 7): the schema editors read must accept what the
/// loader accepts and refuse the shapes it refuses.
#[test]
fn the_json_schema_accepts_the_sections_and_refuses_their_wrong_shapes() {
    let group = "\
project: shop
provider: { aws: { region: us-east-1 } }
load_balancers:
  web-lb: { port: 8080, deregistration_delay: 30 }
groups:
  web:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 4, max: 8 }
    zones: [us-east-1a]
    load_balancer: { name: web-lb, port: 8000 }
";
    let cases: &[(&str, &str, bool)] = &[
        ("no rollout", "", true),
        (
            "blue_green, every field",
            "    rollout: { strategy: blue_green, canary: [10, 50], canary_pause: 20, keep_old_for: 600, healthy_timeout: 120, watch: 90, auto_rollback: false, max_error_rate: 2% }\n",
            true,
        ),
        (
            "rolling, every field",
            "    rollout: { strategy: rolling, max_surge: 2, max_unavailable: 25%, pause: 10, max_error_rate: 0.1 }\n",
            true,
        ),
        (
            "a rolling key under blue_green",
            "    rollout: { strategy: blue_green, max_surge: 1 }\n",
            false,
        ),
        (
            "a blue_green key under rolling",
            "    rollout: { strategy: rolling, keep_old_for: 1 }\n",
            false,
        ),
        ("no strategy", "    rollout: { watch: 1 }\n", false),
        ("unknown strategy", "    rollout: { strategy: canary }\n", false),
        (
            "a canary step of 100",
            "    rollout: { strategy: blue_green, canary: [100] }\n",
            false,
        ),
        (
            "surge over 100%",
            "    rollout: { strategy: rolling, max_surge: 150% }\n",
            false,
        ),
        (
            "unknown rollout field",
            "    rollout: { strategy: rolling, surge: 1 }\n",
            false,
        ),
    ];
    let mut documents: Vec<String> = cases
        .iter()
        .map(|(_, body, _)| format!("{group}{body}"))
        .collect();
    // Two more: a load balancer name ELB refuses, and a group's
    // load_balancer without its port.
    documents.push(group.replace("  web-lb: {", "  -web-lb: {"));
    documents.push(group.replace(", port: 8000 }", " }"));
    let verdicts = super::schema_check::schema_verdicts(&documents);
    let mut expected: Vec<(&str, bool)> = cases.iter().map(|(n, _, v)| (*n, *v)).collect();
    expected.push(("invalid load balancer name", false));
    expected.push(("load_balancer without port", false));
    assert_eq!(verdicts.len(), expected.len(), "{verdicts:?}");
    let mut failures = Vec::new();
    for ((name, valid), verdict) in expected.iter().zip(&verdicts) {
        if verdict.starts_with("valid") != *valid {
            failures.push(format!("{name}: {verdict}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // And the loader agrees on the valid ones.
    for (name, body, valid) in cases {
        if *valid {
            load_source(&format!("{group}{body}"), None)
                .unwrap_or_else(|d| panic!("{name}: the loader refused it:\n{d}"));
        }
    }
}
