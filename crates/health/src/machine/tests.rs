//! The state machine, driven by results and times written in the test.

use super::*;
use crate::config::ProbeTarget;

const LAUNCH: Duration = Duration::from_secs(1_000_000);

fn check(grace_seconds: u64) -> HealthCheck {
    let mut check = HealthCheck::new(ProbeTarget::Tcp { port: 80 });
    check.grace_period_seconds = grace_seconds;
    check
}

fn at(seconds: u64) -> Duration {
    LAUNCH + Duration::from_secs(seconds)
}

fn refused() -> ProbeResult {
    ProbeResult::Failed(ProbeFailure::Refused)
}

#[test]
fn healthy_after_the_healthy_threshold_of_successes_in_a_row() {
    let mut health = InstanceHealth::new("i-1", LAUNCH, &check(300));
    for n in 1..=4 {
        assert_eq!(health.observe_probe(at(n * 30), &ProbeResult::Ok), None);
    }
    let event = health
        .observe_probe(at(150), &ProbeResult::Ok)
        .expect("transition");
    assert_eq!(event.kind, EventKind::InstanceHealthy);
    assert_eq!(event.at, at(150));
    assert_eq!(
        event.reason,
        "healthy after 5 consecutive successful probes"
    );
    assert_eq!(health.status(), HealthStatus::Healthy);
    // Staying healthy raises nothing.
    assert_eq!(health.observe_probe(at(180), &ProbeResult::Ok), None);
}

#[test]
fn unhealthy_after_the_unhealthy_threshold_of_failures_in_a_row_and_back() {
    let mut health = InstanceHealth::new("i-1", LAUNCH, &check(0));
    for n in 1..=5 {
        health.observe_probe(at(n), &ProbeResult::Ok);
    }
    assert_eq!(health.status(), HealthStatus::Healthy);
    // A single failure between successes resets nothing permanent.
    assert_eq!(health.observe_probe(at(10), &refused()), None);
    assert_eq!(health.observe_probe(at(11), &ProbeResult::Ok), None);
    assert_eq!(health.observe_probe(at(12), &refused()), None);
    let event = health
        .observe_probe(at(13), &ProbeResult::Failed(ProbeFailure::Refused))
        .expect("transition");
    assert_eq!(event.kind, EventKind::InstanceUnhealthy);
    assert_eq!(event.subject, "i-1");
    assert_eq!(
        event.reason,
        "unhealthy after 2 consecutive failed probes (connection refused)"
    );
    assert_eq!(health.observe_probe(at(14), &refused()), None);
    for n in 15..19 {
        assert_eq!(health.observe_probe(at(n), &ProbeResult::Ok), None);
    }
    let back = health
        .observe_probe(at(19), &ProbeResult::Ok)
        .expect("recovers");
    assert_eq!(back.kind, EventKind::InstanceHealthy);
}

#[test]
fn initial_goes_straight_to_unhealthy_after_grace() {
    let mut health = InstanceHealth::new("i-1", LAUNCH, &check(300));
    // Inside grace: any number of failures leave it Initial.
    for n in 0..10 {
        assert_eq!(health.observe_probe(at(n * 29), &refused()), None);
    }
    assert_eq!(health.status(), HealthStatus::Initial);
    // The first failure at the end of grace counts as the first of two.
    assert_eq!(
        health.observe_probe(at(300), &ProbeResult::Failed(ProbeFailure::Timeout)),
        None
    );
    let event = health
        .observe_probe(at(330), &ProbeResult::Failed(ProbeFailure::Status(500)))
        .expect("transition");
    assert_eq!(
        event.reason,
        "unhealthy after 2 consecutive failed probes (status 500)"
    );
}

#[test]
fn successes_inside_grace_still_make_an_instance_healthy() {
    let mut health = InstanceHealth::new("i-1", LAUNCH, &check(300));
    let events: Vec<_> = (1..=5)
        .filter_map(|n| health.observe_probe(at(n * 30), &ProbeResult::Ok))
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].at, at(150));
}

#[test]
fn ec2_not_running_is_unhealthy_at_once_even_in_grace() {
    for (state, name) in [
        (Ec2State::Stopping, "stopping"),
        (Ec2State::Stopped, "stopped"),
        (Ec2State::ShuttingDown, "shutting-down"),
        (Ec2State::Terminated, "terminated"),
    ] {
        let mut health = InstanceHealth::new("i-1", LAUNCH, &check(300));
        let event = health.observe_ec2(at(10), state, None).expect("transition");
        assert_eq!(event.kind, EventKind::InstanceUnhealthy);
        assert_eq!(
            event.reason,
            format!("unhealthy: EC2 instance state is {name}")
        );
    }
    let mut pending = InstanceHealth::new("i-1", LAUNCH, &check(300));
    assert_eq!(pending.observe_ec2(at(1), Ec2State::Pending, None), None);
    assert_eq!(
        pending.observe_ec2(at(2), Ec2State::Running, Some(Ec2Status::Initializing)),
        None
    );
}

#[test]
fn impaired_status_is_unhealthy_after_grace_and_holds_off_recovery() {
    let mut health = InstanceHealth::new("i-1", LAUNCH, &check(300));
    assert_eq!(
        health.observe_ec2(at(100), Ec2State::Running, Some(Ec2Status::Impaired)),
        None,
        "impaired inside grace is ignored"
    );
    let event = health
        .observe_ec2(at(301), Ec2State::Running, Some(Ec2Status::Impaired))
        .expect("transition");
    assert_eq!(
        event.reason,
        "unhealthy: EC2 instance status check impaired"
    );
    // Probes succeeding cannot make it healthy while EC2 says impaired.
    for n in 0..10 {
        assert_eq!(health.observe_probe(at(302 + n), &ProbeResult::Ok), None);
    }
    assert_eq!(
        health.observe_ec2(at(400), Ec2State::Running, Some(Ec2Status::Ok)),
        None
    );
    let events: Vec<_> = (0..5)
        .filter_map(|n| health.observe_probe(at(401 + n), &ProbeResult::Ok))
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::InstanceHealthy);
}
