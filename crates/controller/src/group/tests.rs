use std::collections::BTreeMap;
use std::time::Duration;

use endstate_health::{EventKind, HealthCheck, ProbeTarget};
use endstate_model::{tags, Capacity as SpecCapacity, Group, Zone};
use endstate_plan::{Instance, InstanceState};
use endstate_scaling::schedule::{ScheduledAction, ScheduledActionConfig};
use endstate_scaling::target::TargetTrackingConfig;

use super::*;
use crate::metrics::Samples;

/// 2026-11-27T12:00:00Z
const NOON: u64 = 1_795_780_800;

fn at(seconds: u64) -> Duration {
    Duration::from_secs(NOON + seconds)
}

fn group(min: u32, desired: u32, max: u32) -> Group {
    Group {
        name: "web".into(),
        image_id: "ami-0123456789abcdef0".into(),
        image_channel: None,
        instance_types: vec!["t3.micro".into()],
        capacity: SpecCapacity { min, desired, max },
        zones: vec![Zone {
            name: "us-east-1a".into(),
            subnet_ids: vec![],
        }],
        security_group_ids: vec![],
        key_name: None,
        iam_instance_profile: None,
        root_volume: None,
        metadata: Default::default(),
        tags: BTreeMap::new(),
        user_data: None,
        budget: Default::default(),
        health_check: Some(HealthCheck {
            interval_seconds: 2,
            timeout_seconds: 1,
            grace_period_seconds: 0,
            ..HealthCheck::new(ProbeTarget::Tcp { port: 8080 })
        }),
        brake: Default::default(),
        scaling: Default::default(),
        load_balancer: None,
        rollout: None,
        roles: Vec::new(),
    }
}

fn instance(g: &Group, n: u32, launched: &str) -> Instance {
    let mut tags = BTreeMap::new();
    tags.insert(tags::GROUP.to_string(), g.name.clone());
    tags.insert(tags::LAUNCH_HASH.to_string(), g.launch_hash());
    Instance {
        id: format!("i-{n:017x}"),
        image_id: g.image_id.clone(),
        instance_type: "t3.micro".into(),
        zone: "us-east-1a".into(),
        subnet_id: None,
        state: InstanceState::Running,
        launch_time: launched.into(),
        private_ip: Some(format!("127.100.0.{n}")),
        client_token: None,
        tags,
    }
}

fn runtime_with(g: &Group, count: u32) -> GroupRuntime {
    let mut runtime = GroupRuntime::new(g, Persisted::default());
    let instances = (1..=count)
        .map(|n| instance(g, n, "2026-11-27T11:00:00Z"))
        .collect();
    runtime.observe(g, instances, &BTreeMap::new(), at(0));
    runtime
}

fn unhealthy(runtime: &mut GroupRuntime, id: &str, when: Duration) {
    let event = endstate_health::Event {
        at: when,
        subject: id.into(),
        kind: EventKind::InstanceUnhealthy,
        reason: "unhealthy after 2 consecutive failed probes".into(),
    };
    runtime.brake.observe(&event, 5);
    runtime.probe.insert(
        id.into(),
        (HealthStatus::Unhealthy, event.reason.clone(), when),
    );
}

#[test]
fn an_unhealthy_instance_is_replaced_only_after_the_settle_delay() {
    let g = group(2, 5, 10);
    let mut runtime = runtime_with(&g, 5);
    let victim = "i-00000000000000001";
    unhealthy(&mut runtime, victim, at(10));
    let (verdicts, desired) = runtime.verdicts(&g, at(11), Duration::from_secs(2));
    assert!(verdicts.unhealthy.is_empty(), "too early: {verdicts:?}");
    assert_eq!(desired, 5);
    let (verdicts, _) = runtime.verdicts(&g, at(12), Duration::from_secs(2));
    assert_eq!(verdicts.unhealthy.keys().collect::<Vec<_>>(), vec![victim]);
}

#[test]
fn the_brake_holds_replacement_of_correlated_failures() {
    let g = group(2, 5, 10);
    let mut runtime = runtime_with(&g, 5);
    for n in 1..=3 {
        unhealthy(&mut runtime, &format!("i-{n:017x}"), at(10));
    }
    assert!(runtime.brake.is_paused());
    let (verdicts, _) = runtime.verdicts(&g, at(60), Duration::from_secs(2));
    assert!(verdicts.unhealthy.is_empty(), "{verdicts:?}");
    assert!(runtime.view().replacement_paused.is_some());
    runtime.brake.resume(at(61));
    let (verdicts, _) = runtime.verdicts(&g, at(62), Duration::from_secs(2));
    assert_eq!(verdicts.unhealthy.len(), 3);
}

#[test]
fn scale_in_never_chooses_a_protected_instance() {
    let g = group(1, 5, 10);
    let mut runtime = runtime_with(&g, 5);
    runtime.capacity.desired = 1;
    for n in 1..=4 {
        runtime.persisted.protected.insert(format!("i-{n:017x}"));
    }
    let (verdicts, desired) = runtime.verdicts(&g, at(0), Duration::from_secs(2));
    assert_eq!(
        verdicts.retire.keys().collect::<Vec<_>>(),
        vec!["i-00000000000000005"]
    );
    // Four protected instances cannot go: the plan holds the group at 4.
    assert_eq!(desired, 4);
}

#[test]
fn target_tracking_scales_out_on_fresh_samples_and_ignores_stale_ones() {
    let mut g = group(1, 2, 6);
    g.scaling.target_tracking.push(TargetTrackingConfig {
        metric: "cpu".into(),
        target: 50.0,
        scale_out_cooldown_secs: 60,
        scale_in_cooldown_secs: 60,
        instance_warmup_secs: 0,
        disable_scale_in: false,
    });
    let mut runtime = runtime_with(&g, 2);
    let samples = Samples::default();
    for n in 1..=2 {
        samples.put("web", "cpu", Some(&format!("i-{n:017x}")), 100.0, at(0));
    }
    // Stale: nothing happens.
    let activities = runtime.evaluate_scaling(&g, &[], &samples, at(120), Duration::from_secs(30));
    assert!(activities.is_empty(), "{activities:?}");
    assert_eq!(runtime.capacity.desired, 2);
    // Fresh: 2 × 100 / 50 = 4.
    let activities = runtime.evaluate_scaling(&g, &[], &samples, at(10), Duration::from_secs(30));
    assert_eq!(activities.len(), 1, "{activities:?}");
    assert_eq!((activities[0].from, activities[0].to), (2, 4));
    assert_eq!(activities[0].policy, "target_tracking:cpu");
    assert_eq!(runtime.capacity.desired, 4);
    assert_eq!(runtime.persisted.capacity.map(|c| c.desired), Some(4));
}

#[test]
fn a_scheduled_action_fires_once_at_its_time_in_its_zone() {
    let g = group(2, 3, 6);
    let mut runtime = runtime_with(&g, 3);
    // 19:00 in Europe/Berlin on weekdays; 2026-11-27 is a Friday (UTC+1).
    let action = ScheduledAction::from_config(&ScheduledActionConfig {
        name: "evening".into(),
        cron: "0 19 * * 1-5".into(),
        time_zone: "Europe/Berlin".into(),
        min: Some(0),
        max: None,
        desired: Some(0),
    })
    .expect("the zone is installed");
    let samples = Samples::default();
    // 17:59:00 UTC = 18:59 in Berlin: not yet.
    let before = Duration::from_secs(NOON + 5 * 3600 + 59 * 60);
    assert!(runtime
        .evaluate_scaling(
            &g,
            std::slice::from_ref(&action),
            &samples,
            before,
            Duration::from_secs(60)
        )
        .is_empty());
    let after = before + Duration::from_secs(61);
    let activities = runtime.evaluate_scaling(
        &g,
        std::slice::from_ref(&action),
        &samples,
        after,
        Duration::from_secs(60),
    );
    assert_eq!(activities.len(), 1, "{activities:?}");
    assert_eq!(activities[0].policy, "scheduled:evening");
    assert_eq!(
        runtime.capacity,
        Capacity {
            min: 0,
            max: 6,
            desired: 0
        }
    );
    // Not again.
    assert!(runtime
        .evaluate_scaling(
            &g,
            &[action],
            &samples,
            after + Duration::from_secs(5),
            Duration::from_secs(60)
        )
        .is_empty());
}

#[test]
fn a_restart_keeps_the_scaled_capacity_unless_the_spec_changed() {
    let g = group(1, 2, 6);
    let mut runtime = runtime_with(&g, 2);
    runtime.capacity.desired = 5;
    runtime.persisted.capacity = Some(runtime.capacity);
    let saved = runtime.persisted.clone();
    assert_eq!(GroupRuntime::new(&g, saved.clone()).capacity.desired, 5);
    let changed = group(1, 3, 6);
    assert_eq!(GroupRuntime::new(&changed, saved).capacity.desired, 3);
}
