//! Shared test machinery: a cloud on loopback with a manual clock, our own
//! EC2 client pointed at it, and a launch request.

#![allow(dead_code)] // Each test file uses a different part.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use endstate_clock::ManualClock;
use endstate_cloud::{serve, CloudConfig, Credentials, RunningCloud, SimulatedConfig};
use endstate_model::MetadataOptions;
use endstate_provider::ec2::{Ec2Client, Ec2Config};
use endstate_provider::LaunchRequest;

pub const ACCESS_KEY: &str = "AKIDENDSTATETEST";
pub const SECRET: &str = "endstate-test-secret";
pub const IMAGE: &str = "ami-0e5c0f5d3b1e2a4f6";

/// 2026-11-27T12:00:00Z: near the wall clock, so launch times look real.
pub const START: Duration = Duration::from_secs(1_795_780_800);

pub fn clock() -> ManualClock {
    ManualClock::new(START)
}

/// A simulated region with no throttling (tests that want it turn it on).
pub fn config(clock: &ManualClock) -> CloudConfig {
    let mut simulated = SimulatedConfig::new("us-east-1");
    simulated.throttling = None;
    CloudConfig {
        port: 0,
        credentials: Credentials::new().with(ACCESS_KEY, SECRET),
        simulated,
        clock: Arc::new(clock.clone()),
    }
}

pub async fn start(config: CloudConfig) -> RunningCloud {
    serve(config).await.unwrap()
}

pub fn client(cloud: &RunningCloud) -> Ec2Client {
    Ec2Client::with_static_credentials(
        Ec2Config::new("us-east-1").with_endpoint(cloud.url()),
        ACCESS_KEY,
        SECRET,
        None,
    )
    .unwrap()
}

pub fn launch(count: u32, zone: &str, token: &str, group: &str) -> LaunchRequest {
    LaunchRequest {
        image_id: IMAGE.to_string(),
        instance_type: "t3.micro".to_string(),
        count,
        zone: zone.to_string(),
        subnet_id: None,
        security_group_ids: vec![],
        key_name: None,
        iam_instance_profile: None,
        root_volume: None,
        metadata: MetadataOptions::default(),
        user_data: Some(b"#!/bin/sh\necho secret-value\n".to_vec()),
        tags: BTreeMap::from([
            ("endstate:project".to_string(), "demo".to_string()),
            ("endstate:group".to_string(), group.to_string()),
        ]),
        client_token: token.to_string(),
    }
}
