//! The aws CLI (botocore) against the built-in cloud: run-instances,
//! describe-instances with a tag filter, create-tags, stop/start and
//! terminate-instances, each answer read as the CLI's JSON. The CLI is told
//! to build no credential chain beyond its environment and never to ask
//! the instance metadata service.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use crate::black_box::common;

use std::time::Duration;

use common::*;
use serde_json::Value;

async fn aws(endpoint: &str, args: &[&str]) -> Value {
    aws_as(endpoint, ACCESS_KEY, SECRET, args).await
}

fn states(answer: &Value, key: &str) -> Vec<(String, String)> {
    answer[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["PreviousState"]["Name"].as_str().unwrap().to_string(),
                c["CurrentState"]["Name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn described_ids(answer: &Value) -> Vec<String> {
    let mut ids: Vec<String> = answer["Reservations"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["Instances"].as_array().unwrap().iter())
        .map(|i| i["InstanceId"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn the_aws_cli_drives_the_lifecycle() {
    let clock = clock();
    let cloud = start(config(&clock)).await;
    let url = cloud.url();

    let run = aws(
        &url,
        &[
            "ec2",
            "run-instances",
            "--image-id",
            IMAGE,
            "--instance-type",
            "t3.micro",
            "--count",
            "2",
            "--placement",
            "AvailabilityZone=us-east-1b",
            "--client-token",
            "cli-token-1",
            "--user-data",
            "#!/bin/sh\necho hi",
            "--metadata-options",
            "HttpTokens=required,HttpPutResponseHopLimit=2",
            "--tag-specifications",
            "ResourceType=instance,Tags=[{Key=endstate:project,Value=cli},{Key=Name,Value=a b}]",
        ],
    )
    .await;
    let instances = run["Instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2);
    assert_eq!(instances[0]["State"]["Name"], "pending");
    assert_eq!(instances[0]["Placement"]["AvailabilityZone"], "us-east-1b");
    assert_eq!(instances[0]["MetadataOptions"]["HttpTokens"], "required");
    let mut ids: Vec<String> = instances
        .iter()
        .map(|i| i["InstanceId"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    // Something else in the region, not carrying the tag.
    aws(
        &url,
        &["ec2", "run-instances", "--image-id", IMAGE, "--count", "1"],
    )
    .await;

    let described = aws(
        &url,
        &[
            "ec2",
            "describe-instances",
            "--filters",
            "Name=tag:endstate:project,Values=cli",
        ],
    )
    .await;
    assert_eq!(described_ids(&described), ids);
    let tags = described["Reservations"][0]["Instances"][0]["Tags"]
        .as_array()
        .unwrap();
    assert!(tags
        .iter()
        .any(|t| t["Key"] == "Name" && t["Value"] == "a b"));

    aws(
        &url,
        &[
            "ec2",
            "create-tags",
            "--resources",
            &ids[0],
            "--tags",
            "Key=role,Value=primary",
        ],
    )
    .await;
    let primary = aws(
        &url,
        &[
            "ec2",
            "describe-instances",
            "--filters",
            "Name=tag:role,Values=primary",
            "Name=instance-state-name,Values=pending,running",
        ],
    )
    .await;
    assert_eq!(described_ids(&primary), vec![ids[0].clone()]);

    clock.advance(Duration::from_secs(15));
    let stop = aws(&url, &["ec2", "stop-instances", "--instance-ids", &ids[0]]).await;
    assert_eq!(
        states(&stop, "StoppingInstances"),
        [("running".to_string(), "stopping".to_string())]
    );
    clock.advance(Duration::from_secs(10));
    let start = aws(&url, &["ec2", "start-instances", "--instance-ids", &ids[0]]).await;
    assert_eq!(
        states(&start, "StartingInstances"),
        [("stopped".to_string(), "pending".to_string())]
    );
    clock.advance(Duration::from_secs(15));
    let status = aws(
        &url,
        &["ec2", "describe-instance-status", "--instance-ids", &ids[0]],
    )
    .await;
    assert_eq!(
        status["InstanceStatuses"][0]["InstanceStatus"]["Status"],
        "ok"
    );
    aws(
        &url,
        &["ec2", "reboot-instances", "--instance-ids", &ids[1]],
    )
    .await;

    let mut args = vec!["ec2", "terminate-instances", "--instance-ids"];
    args.extend(ids.iter().map(String::as_str));
    let terminate = aws(&url, &args).await;
    let changes = states(&terminate, "TerminatingInstances");
    assert_eq!(changes.len(), 2);
    assert!(changes
        .iter()
        .all(|(prev, now)| prev == "running" && now == "shutting-down"));
    cloud.shutdown().await.unwrap();
}
