//! Shared test machinery: a cloud on loopback with a manual clock, our own
//! EC2 client pointed at it, a launch request, and the aws CLI.

#![allow(dead_code)] // Each test file uses a different part.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::collections::BTreeMap;
use std::path::PathBuf;
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

/// The aws CLI of the test set-up's venv (`scripts/setup-tools`); a test
/// that needs it fails, loudly, without it.
pub fn aws_cli() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/aws");
    assert!(
        path.exists(),
        "the aws CLI is missing from .tools/venv; run scripts/setup-tools"
    );
    path
}

/// `aws --endpoint-url ENDPOINT ARGS…` with these credentials and none of
/// the user's settings (no config files, no pager, one attempt).
pub fn aws_command(
    endpoint: &str,
    access_key: &str,
    secret: &str,
    args: &[&str],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(aws_cli());
    command
        .arg("--endpoint-url")
        .arg(endpoint)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("AWS_ACCESS_KEY_ID", access_key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_PAGER", "")
        .env("AWS_MAX_ATTEMPTS", "1");
    command
}

/// [`aws_command`] with `--output json`, which must succeed; its JSON
/// (`Null` for no output).
pub async fn aws_as(
    endpoint: &str,
    access_key: &str,
    secret: &str,
    args: &[&str],
) -> serde_json::Value {
    let mut with_json = vec!["--output", "json"];
    with_json.extend_from_slice(args);
    let output = aws_command(endpoint, access_key, secret, &with_json)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "aws {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    if stdout.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap()
    }
}
