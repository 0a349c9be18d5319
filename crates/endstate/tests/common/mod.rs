//! The black-box harness for endstate's end-to-end tests: a real moto
//! server on loopback, the recording fault proxy in front of it, a
//! temporary directory per test holding the spec and the state file, and
//! the real `endstate` binary run as a child process.

#![allow(dead_code)]

pub mod controller;
pub mod sshd;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use endstate_testkit::moto::MotoServer;
use endstate_testkit::proxy::{FaultProxy, RecordedRequest};
use serde_json::Value;

/// A secret value the tests hand endstate through the environment; it must
/// never show up in endstate's output or state.
pub const SECRET_VALUE: &str = "s3cret-0f-the-tests";

/// The EC2 endpoint behind the proxy.
pub enum Upstream {
    Moto(MotoServer),
    /// The built-in cloud's simulated backend, in this process.
    Cloud(endstate_cloud::RunningCloud),
}

pub struct World {
    pub upstream: Upstream,
    pub proxy: FaultProxy,
    pub dir: tempfile::TempDir,
    pub project: String,
}

/// A group in a generated spec.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub name: String,
    pub min: u32,
    pub desired: u32,
    pub max: u32,
    pub image: String,
    pub extra: String,
}

pub fn group(name: &str, min: u32, desired: u32, max: u32) -> GroupSpec {
    GroupSpec {
        name: name.into(),
        min,
        desired,
        max,
        image: "ami-0123456789abcdef0".into(),
        extra: String::new(),
    }
}

impl World {
    /// A world on a real moto server.
    pub async fn new(project: &str) -> Self {
        Self::on(project, Upstream::Moto(MotoServer::start().await)).await
    }

    /// A world on the built-in cloud's simulated backend with eventual
    /// consistency: new instances stay pending for `pending` and missing
    /// from DescribeInstances for `consistency_delay`. Signatures are
    /// verified with the tests' credentials; images are the tests' own.
    pub async fn with_cloud(
        project: &str,
        pending: std::time::Duration,
        consistency_delay: std::time::Duration,
    ) -> Self {
        let mut simulated = endstate_cloud::SimulatedConfig::new("us-east-1");
        simulated.images = [
            "ami-0123456789abcdef0",
            "ami-0aaaaaaaaaaaaaaa1",
            "ami-0fedcba9876543210",
        ]
        .iter()
        .map(|id| endstate_wire::Image {
            image_id: id.to_string(),
            name: None,
            state: "available".into(),
            owner_id: None,
            architecture: None,
            root_device_name: None,
            creation_date: None,
            tags: Vec::new(),
        })
        .collect();
        simulated.timings.pending = pending;
        simulated.consistency_delay = consistency_delay;
        simulated.throttling = None;
        let cloud = endstate_cloud::serve(endstate_cloud::CloudConfig {
            port: 0,
            credentials: endstate_cloud::Credentials::new().with("testing", "testing"),
            simulated,
            clock: endstate_clock::SystemClock::shared(),
        })
        .await
        .expect("starting the simulated cloud");
        Self::on(project, Upstream::Cloud(cloud)).await
    }

    async fn on(project: &str, upstream: Upstream) -> Self {
        let url = match &upstream {
            Upstream::Moto(moto) => moto.url().to_string(),
            Upstream::Cloud(cloud) => cloud.url(),
        };
        let proxy = FaultProxy::start(&url)
            .await
            .expect("starting the fault proxy");
        Self {
            upstream,
            proxy,
            dir: tempfile::tempdir().expect("temp dir"),
            project: project.into(),
        }
    }

    /// The endpoint itself, not the proxy: for clients that check on endstate.
    pub fn upstream_url(&self) -> String {
        match &self.upstream {
            Upstream::Moto(moto) => moto.url().to_string(),
            Upstream::Cloud(cloud) => cloud.url(),
        }
    }

    /// moto, for what only moto offers (resetting it).
    pub fn moto(&self) -> &MotoServer {
        match &self.upstream {
            Upstream::Moto(moto) => moto,
            Upstream::Cloud(_) => panic!("this world runs on the simulated cloud, not moto"),
        }
    }

    pub fn spec_path(&self) -> PathBuf {
        self.dir.path().join("endstate.yaml")
    }

    /// Writes a spec with these groups, each in two zones.
    pub fn write_spec(&self, groups: &[GroupSpec]) {
        let mut yaml = format!(
            "project: {}\nprovider:\n  aws:\n    region: us-east-1\n    endpoint: {}\ngroups:\n",
            self.project,
            self.proxy.url()
        );
        for g in groups {
            yaml.push_str(&format!(
                "  {}:\n    image: {}\n    instance_types: [t3.micro, t3a.micro]\n    capacity: {{ min: {}, desired: {}, max: {} }}\n    zones:\n      us-east-1a: []\n      us-east-1b: []\n    tags: {{ team: {} }}\n{}",
                g.name, g.image, g.min, g.desired, g.max, g.name, g.extra
            ));
        }
        std::fs::write(self.spec_path(), yaml).expect("writing the spec");
    }

    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_endstate"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("NO_COLOR", "1")
            .env("ENDSTATE_TEST_SECRET", SECRET_VALUE)
            .stdin(std::process::Stdio::null());
        command
    }

    /// Runs endstate to completion (on the blocking pool, so the proxy on
    /// this runtime keeps serving).
    pub async fn run(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        tokio::task::spawn_blocking(move || command.output().expect("running endstate"))
            .await
            .expect("endstate runner task")
    }

    /// Runs endstate and insists that it succeeds.
    pub async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "endstate {args:?} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub async fn ok_json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args).await;
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("endstate {args:?}: not JSON ({e}):\n{stdout}"))
    }

    /// Live (pending or running) instances of the project per group, read
    /// straight from moto (not through the proxy), with the aws CLI's
    /// library's view left out: this is the test's own ground truth.
    pub async fn live_by_group(&self) -> BTreeMap<String, Vec<String>> {
        let status = self
            .ok_json(&["status", "--json", "--rate-limits", "off"])
            .await;
        let mut groups = BTreeMap::new();
        for group in status["groups"].as_array().expect("groups") {
            let ids: Vec<String> = group["instances"]
                .as_array()
                .expect("instances")
                .iter()
                .filter(|i| matches!(i["state"].as_str(), Some("pending" | "running")))
                .map(|i| i["id"].as_str().expect("id").to_string())
                .collect();
            groups.insert(group["group"].as_str().expect("name").to_string(), ids);
        }
        groups
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.proxy.requests()
    }
}

/// Counts the project's live instances with the aws CLI, against moto
/// directly: a second, independent client.
pub fn aws_cli_count(moto_url: &str, project: &str) -> usize {
    aws_cli_live(moto_url, Some(project))
}

/// Counts every live instance in moto, tagged or not.
pub fn aws_cli_count_all(moto_url: &str) -> usize {
    aws_cli_live(moto_url, None)
}

fn aws_cli_live(moto_url: &str, project: Option<&str>) -> usize {
    let aws = std::env::var("ENDSTATE_AWS_CLI").unwrap_or_else(|_| {
        endstate_testkit::moto::workspace_root()
            .expect("workspace root")
            .join(".tools/venv/bin/aws")
            .to_string_lossy()
            .into_owned()
    });
    assert!(
        Path::new(&aws).exists(),
        "the aws CLI is not at {aws}: run scripts/test (it installs it)"
    );
    let mut filters = vec!["Name=instance-state-name,Values=pending,running".to_string()];
    if let Some(project) = project {
        filters.push(format!("Name=tag:endstate:project,Values={project}"));
    }
    let output = std::process::Command::new(&aws)
        .args([
            "--endpoint-url",
            moto_url,
            "--region",
            "us-east-1",
            "--output",
            "json",
            "ec2",
            "describe-instances",
            "--query",
            "Reservations[].Instances[].InstanceId",
            "--filters",
        ])
        .args(&filters)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("running the aws CLI");
    assert!(
        output.status.success(),
        "aws CLI failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ids: Vec<String> = serde_json::from_slice(&output.stdout).expect("aws CLI JSON");
    ids.len()
}

/// Instance ids in a RunInstances response body.
pub fn launched_ids(request: &RecordedRequest) -> Vec<String> {
    let Some(body) = &request.response_body else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    let mut rest = body.as_str();
    while let Some(start) = rest.find("<instanceId>") {
        rest = &rest[start + "<instanceId>".len()..];
        if let Some(end) = rest.find("</instanceId>") {
            ids.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    ids
}

/// The value of tag `key` in a RunInstances request's TagSpecifications.
pub fn launch_tag(request: &RecordedRequest, key: &str) -> Option<String> {
    let key_param = request.params.iter().find(|(name, value)| {
        name.starts_with("TagSpecification.1.Tag.") && name.ends_with(".Key") && value == key
    })?;
    let value_name = key_param.0.trim_end_matches(".Key").to_string() + ".Value";
    request.param(&value_name).map(str::to_string)
}

/// Instance ids a TerminateInstances request names.
pub fn terminated_ids(request: &RecordedRequest) -> Vec<String> {
    request
        .params
        .iter()
        .filter(|(name, _)| name.starts_with("InstanceId."))
        .map(|(_, value)| value.clone())
        .collect()
}
