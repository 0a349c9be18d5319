//! Third-party IMDS clients against the service: botocore (the aws CLI's
//! library, in `.tools/venv`) and `aws-config`'s IMDS client, each reading
//! instance-id, region or user data with IMDSv2 tokens from an instance
//! that requires them. The service identifies them by the uid owning their
//! socket, as the process backend will.
//!
//! Network rule: clients are pointed at the service on 127.0.0.1 through
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT` (botocore) or an explicit endpoint
//! (aws-config); the Python process gets a cleared environment with
//! `AWS_EC2_METADATA_DISABLED=false` set explicitly, and its script refuses
//! to run unless the endpoint is on loopback — nothing here can reach
//! 169.254.169.254.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use crate::common;

use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use endstate_imds::{InstanceMetadata, ListenerScope, Running};

const INSTANCE_ID: &str = "i-0c0ffee0c0ffee000";

fn instance() -> InstanceMetadata {
    let mut instance = common::instance(INSTANCE_ID, A_ADDR);
    instance.tokens_required = true;
    instance.user_data = Some(b"#cloud-config\nruncmd: [echo hello]\n".to_vec());
    instance
}

async fn start_for_this_process() -> Running {
    let source = ByUid(vec![(own_uid(), Arc::new(instance()))]);
    start(source, ListenerScope::AnyInstance).await
}

fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-tools to install botocore and the aws CLI",
        python.display()
    );
    python
}

const BOTOCORE_SCRIPT: &str = r#"
import json, sys
import botocore.session
from botocore.utils import InstanceMetadataFetcher, InstanceMetadataRegionFetcher

# The endpoint as botocore resolves it from AWS_EC2_METADATA_SERVICE_ENDPOINT.
endpoint = botocore.session.get_session().get_config_variable("ec2_metadata_service_endpoint")
if not endpoint or not endpoint.startswith("http://127."):
    sys.exit("refusing to run: metadata endpoint %r is not on loopback" % (endpoint,))
config = {"ec2_metadata_service_endpoint": endpoint, "ec2_metadata_v1_disabled": True}

class Reader(InstanceMetadataFetcher):
    def read(self, path):
        token = self._fetch_metadata_token()
        if not token:
            sys.exit("no IMDSv2 token")
        return self._get_request(path, None, token).text

reader = Reader(config=config, timeout=5, num_attempts=1)
print(json.dumps({
    "endpoint": reader.get_base_url(),
    "instance_id": reader.read("latest/meta-data/instance-id"),
    "user_data": reader.read("latest/user-data"),
    "region": InstanceMetadataRegionFetcher(config=config, timeout=5, num_attempts=1).retrieve_region(),
}))
"#;

#[tokio::test]
async fn botocore_reads_instance_id_region_and_user_data_with_tokens() {
    let python = python();
    let server = start_for_this_process().await;
    let output = tokio::process::Command::new(python)
        .arg("-c")
        .arg(BOTOCORE_SCRIPT)
        .env_clear()
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.endpoint())
        .env("AWS_EC2_METADATA_DISABLED", "false")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("NO_PROXY", "*")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "botocore failed: {stderr}");
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["endpoint"], server.endpoint());
    assert_eq!(answer["instance_id"], INSTANCE_ID);
    assert_eq!(answer["region"], "eu-west-3");
    assert_eq!(answer["user_data"], "#cloud-config\nruncmd: [echo hello]\n");
}

#[tokio::test]
async fn aws_config_imds_client_reads_instance_id_and_user_data() {
    let server = start_for_this_process().await;
    let client = aws_config::imds::Client::builder()
        .endpoint(server.endpoint())
        .unwrap()
        .build();
    let id = client.get("/latest/meta-data/instance-id").await.unwrap();
    assert_eq!(id.as_ref(), INSTANCE_ID);
    let user_data = client.get("/latest/user-data").await.unwrap();
    assert_eq!(user_data.as_ref(), "#cloud-config\nruncmd: [echo hello]\n");
    let zone = client
        .get("/latest/meta-data/placement/availability-zone")
        .await
        .unwrap();
    assert_eq!(zone.as_ref(), "eu-west-3b");
}
