//! The simulated backend called directly (no HTTP): EC2's lifecycle on a
//! manual clock, the states each action accepts, DescribeInstanceStatus,
//! and a tag-filtered page over 10,000 instances.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use crate::black_box::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use endstate_cloud::{ApiError, Backend, SimulatedBackend, SimulatedConfig, Timings};
use endstate_wire::{
    DescribeInstanceStatusRequest, DescribeInstancesRequest, Filter, RebootInstancesRequest,
    RunInstancesRequest, StartInstancesRequest, StopInstancesRequest, Tag, TagSpecification,
    TerminateInstancesRequest,
};

fn backend(clock: &endstate_clock::ManualClock) -> SimulatedBackend {
    let mut config = SimulatedConfig::new("us-east-1");
    config.throttling = None;
    config.timings = Timings {
        pending: Duration::from_secs(5),
        stopping: Duration::from_secs(3),
        shutting_down: Duration::from_secs(2),
    };
    SimulatedBackend::new(config, Arc::new(clock.clone()))
}

fn run(count: u32, tags: &[(&str, &str)]) -> RunInstancesRequest {
    RunInstancesRequest {
        image_id: IMAGE.to_string(),
        instance_type: Some("t3.micro".to_string()),
        min_count: count,
        max_count: count,
        client_token: None,
        availability_zone: None,
        subnet_id: None,
        security_group_ids: vec![],
        key_name: None,
        iam_instance_profile_name: None,
        user_data: None,
        block_device_mappings: vec![],
        metadata_options: None,
        tag_specifications: vec![TagSpecification {
            resource_type: "instance".to_string(),
            tags: tags.iter().map(|(k, v)| Tag::new(*k, *v)).collect(),
        }],
    }
}

fn state_of(backend: &SimulatedBackend, id: &str) -> String {
    let page = backend
        .describe_instances(&DescribeInstancesRequest {
            instance_ids: vec![id.to_string()],
            ..Default::default()
        })
        .unwrap();
    let name = page.instances().next().unwrap().state.name.clone();
    name
}

#[test]
fn lifecycle_follows_ec2_on_the_clock() {
    let clock = clock();
    let backend = backend(&clock);
    let launched = backend.run_instances(&run(1, &[])).unwrap();
    let id = launched.reservation.instances[0].instance_id.clone();
    assert_eq!(state_of(&backend, &id), "pending");
    clock.advance(Duration::from_secs(5));
    assert_eq!(state_of(&backend, &id), "running");

    // Stop: running → stopping → stopped; a second stop changes nothing.
    let stop = StopInstancesRequest {
        instance_ids: vec![id.clone()],
        force: None,
    };
    let changes = backend.stop_instances(&stop).unwrap().instances;
    assert_eq!(changes[0].previous_state.name, "running");
    assert_eq!(changes[0].current_state.name, "stopping");
    assert_eq!(changes[0].current_state.code, 64);
    clock.advance(Duration::from_secs(3));
    assert_eq!(state_of(&backend, &id), "stopped");
    let again = backend.stop_instances(&stop).unwrap().instances;
    assert_eq!(again[0].current_state.name, "stopped");

    // Reboot needs a running instance.
    let reboot = RebootInstancesRequest {
        instance_ids: vec![id.clone()],
    };
    assert!(matches!(
        backend.reboot_instances(&reboot),
        Err(ApiError::IncorrectInstanceState(_))
    ));

    // Start: stopped → pending → running.
    let start = StartInstancesRequest {
        instance_ids: vec![id.clone()],
    };
    let changes = backend.start_instances(&start).unwrap().instances;
    assert_eq!(changes[0].current_state.name, "pending");
    clock.advance(Duration::from_secs(5));
    assert_eq!(state_of(&backend, &id), "running");
    backend.reboot_instances(&reboot).unwrap();
    assert_eq!(state_of(&backend, &id), "running");

    // Terminate: shutting-down → terminated; then nothing starts it again.
    let terminate = TerminateInstancesRequest {
        instance_ids: vec![id.clone()],
    };
    let changes = backend.terminate_instances(&terminate).unwrap().instances;
    assert_eq!(changes[0].current_state.name, "shutting-down");
    clock.advance(Duration::from_secs(2));
    assert_eq!(state_of(&backend, &id), "terminated");
    let again = backend.terminate_instances(&terminate).unwrap().instances;
    assert_eq!(again[0].previous_state.name, "terminated");
    assert!(matches!(
        backend.start_instances(&start),
        Err(ApiError::IncorrectInstanceState(_))
    ));
    assert!(matches!(
        backend.stop_instances(&stop),
        Err(ApiError::IncorrectInstanceState(_))
    ));
}

#[test]
fn a_failed_batch_changes_nothing() {
    let clock = clock();
    let backend = backend(&clock);
    let a = backend
        .run_instances(&run(1, &[]))
        .unwrap()
        .reservation
        .instances[0]
        .instance_id
        .clone();
    clock.advance(Duration::from_secs(5));
    let b = backend
        .run_instances(&run(1, &[]))
        .unwrap()
        .reservation
        .instances[0]
        .instance_id
        .clone();
    // b is still pending, so stopping both fails and a keeps running.
    let error = backend
        .stop_instances(&StopInstancesRequest {
            instance_ids: vec![a.clone(), b],
            force: None,
        })
        .unwrap_err();
    assert_eq!(error.code(), "IncorrectInstanceState");
    assert_eq!(state_of(&backend, &a), "running");
    let error = backend
        .terminate_instances(&TerminateInstancesRequest {
            instance_ids: vec![a.clone(), "i-0123456789abcdef0".to_string()],
        })
        .unwrap_err();
    assert_eq!(error.code(), "InvalidInstanceID.NotFound");
    assert_eq!(state_of(&backend, &a), "running");
}

#[test]
fn instance_status_reports_running_instances_unless_asked_for_all() {
    let clock = clock();
    let backend = backend(&clock);
    backend.run_instances(&run(2, &[("g", "x")])).unwrap();
    clock.advance(Duration::from_secs(5));
    backend.run_instances(&run(1, &[("g", "x")])).unwrap();
    let request = DescribeInstanceStatusRequest {
        filters: vec![Filter {
            name: "tag:g".to_string(),
            values: vec!["x".to_string()],
        }],
        ..Default::default()
    };
    let running = backend.describe_instance_status(&request).unwrap();
    assert_eq!(running.statuses.len(), 2);
    assert!(running.statuses.iter().all(|s| s.instance_status == "ok"));
    let all = backend
        .describe_instance_status(&DescribeInstanceStatusRequest {
            include_all_instances: Some(true),
            ..request
        })
        .unwrap();
    assert_eq!(all.statuses.len(), 3);
    assert_eq!(all.statuses[2].state.name, "pending");
    assert_eq!(all.statuses[2].instance_status, "not-applicable");
}

#[test]
fn launches_without_a_zone_spread_by_free_capacity() {
    let clock = clock();
    let mut config = SimulatedConfig::new("us-east-1");
    config.throttling = None;
    for zone in ["us-east-1a", "us-east-1b", "us-east-1c"] {
        config
            .capacity
            .insert((zone.to_string(), "t3.micro".to_string()), 4);
    }
    let backend = SimulatedBackend::new(config, Arc::new(clock.clone()));
    let mut zones = Vec::new();
    for _ in 0..3 {
        let r = backend.run_instances(&run(2, &[])).unwrap();
        zones.push(r.reservation.instances[0].availability_zone.clone());
    }
    assert_eq!(zones, ["us-east-1a", "us-east-1b", "us-east-1c"]);
    // MaxCount above what is left launches what fits, at least MinCount.
    let mut request = run(1, &[]);
    request.max_count = 5;
    let r = backend.run_instances(&request).unwrap();
    assert_eq!(r.reservation.instances.len(), 2);
}

/// 10,000 instances in 10 groups; a tag-filtered page of 1,000 must cost
/// the page, not the fleet. The 100,000 figure is `cloud_bench`'s.
#[test]
fn a_tag_filtered_page_over_ten_thousand_instances() {
    let clock = clock();
    let backend = backend(&clock);
    let started = Instant::now();
    for group in 0..10 {
        let group = format!("g{group}");
        for _ in 0..10 {
            backend
                .run_instances(&run(
                    100,
                    &[("endstate:project", "big"), ("endstate:group", &group)],
                ))
                .unwrap();
        }
    }
    let load = started.elapsed();
    assert_eq!(backend.len(), 10_000);

    let started = Instant::now();
    let mut token = None;
    let mut seen = 0;
    let mut pages = 0;
    loop {
        let page = backend
            .describe_instances(&DescribeInstancesRequest {
                filters: vec![Filter {
                    name: "tag:endstate:group".to_string(),
                    values: vec!["g7".to_string()],
                }],
                max_results: Some(400),
                next_token: token,
                ..Default::default()
            })
            .unwrap();
        pages += 1;
        seen += page.instances().count();
        assert!(page
            .instances()
            .all(|i| i.tags.contains(&Tag::new("endstate:group", "g7"))));
        match page.next_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    let describe = started.elapsed();
    assert_eq!((seen, pages), (1_000, 3));
    eprintln!("10,000 instances loaded in {load:?}; 3 tag-filtered pages in {describe:?}");
    assert!(describe < Duration::from_secs(2), "{describe:?}");
}

#[test]
fn starts_in_one_call_share_the_capacity_left() {
    let clock = clock();
    let mut config = SimulatedConfig::new("us-east-1");
    config.throttling = None;
    config
        .capacity
        .insert(("us-east-1a".to_string(), "t3.micro".to_string()), 2);
    let backend = SimulatedBackend::new(config, Arc::new(clock.clone()));
    let in_a = |count| RunInstancesRequest {
        availability_zone: Some("us-east-1a".to_string()),
        ..run(count, &[])
    };
    let ids: Vec<String> = backend
        .run_instances(&in_a(2))
        .unwrap()
        .reservation
        .instances
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    clock.advance(Duration::from_secs(60));
    backend
        .stop_instances(&StopInstancesRequest {
            instance_ids: ids.clone(),
            force: None,
        })
        .unwrap();
    clock.advance(Duration::from_secs(60));
    // Stopped instances free their capacity: one more fits, then one start.
    backend.run_instances(&in_a(1)).unwrap();
    assert!(backend.run_instances(&in_a(2)).is_err());
    let start = StartInstancesRequest {
        instance_ids: ids.clone(),
    };
    let error = backend.start_instances(&start).unwrap_err();
    assert_eq!(error.code(), "InsufficientInstanceCapacity");
    assert_eq!(state_of(&backend, &ids[0]), "stopped");
    assert_eq!(state_of(&backend, &ids[1]), "stopped");
    backend
        .start_instances(&StartInstancesRequest {
            instance_ids: vec![ids[0].clone()],
        })
        .unwrap();
    assert_eq!(state_of(&backend, &ids[0]), "pending");
}

#[test]
fn terminated_instances_leave_listings_after_the_retention_window() {
    let clock = clock();
    let backend = backend(&clock);
    let id = backend
        .run_instances(&run(1, &[("g", "t")]))
        .unwrap()
        .reservation
        .instances[0]
        .instance_id
        .clone();
    backend
        .terminate_instances(&TerminateInstancesRequest {
            instance_ids: vec![id.clone()],
        })
        .unwrap();
    let listed = |backend: &SimulatedBackend| {
        backend
            .describe_instances(&DescribeInstancesRequest {
                filters: vec![Filter {
                    name: "tag:g".to_string(),
                    values: vec!["t".to_string()],
                }],
                ..Default::default()
            })
            .unwrap()
            .instances()
            .count()
    };
    clock.advance(Duration::from_secs(2 + 3600));
    assert_eq!(
        listed(&backend),
        1,
        "an hour after termination it still shows"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(listed(&backend), 0);
    assert_eq!(
        state_of(&backend, &id),
        "terminated",
        "by id it still shows"
    );
}
