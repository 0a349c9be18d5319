//! `endstate serve` on the built-in cloud's process backend, for the
//! black-box tests that run it (tests/serve.rs, tests/rollout.rs): a
//! temporary project and cloud directory, the real binary as the
//! controller, its API client, the aws CLI against the cloud itself, and
//! waiting with deadlines.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use endstate_controller::client::Client;
use endstate_controller::view::{EventView, GroupView};
use serde_json::Value;

pub const ENDSTATE: &str = env!("CARGO_BIN_EXE_endstate");

/// One test at a time: each runs its own built-in cloud, and clouds on one
/// host choose instance addresses by what is not listening yet, so two
/// clouds launching at once can race for one address (see the closing
/// note of this work); the tests' assertions are about one cloud each.
/// (An async mutex: it is held across the test's awaits, and works across
/// the tests' separate runtimes.)
pub static ONE_CLOUD_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A project directory and a cloud directory, both temporary; the
/// controller is killed and the cloud stopped with its instances
/// terminated when the test ends, pass or fail.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub cloud_dir: tempfile::TempDir,
    pub controller: Option<Child>,
}

impl Project {
    pub fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests need root: the process backend isolates instances with namespaces (CI runs as root)"
        );
        Self {
            dir: tempfile::tempdir().unwrap(),
            cloud_dir: tempfile::tempdir().unwrap(),
            controller: None,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(ENDSTATE);
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("ENDSTATE_CLOUD_DIR", self.cloud_dir.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NO_COLOR", "1")
            .env_remove("ENDSTATE_CRASH_AT")
            .env_remove("ENDSTATE_API_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL");
        command
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.command(args).output().unwrap();
        assert!(
            output.status.success(),
            "endstate {args:?} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    pub fn write_spec(&self, text: &str) {
        std::fs::write(self.dir.path().join("endstate.yaml"), text).unwrap();
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join(".endstate")
    }

    /// Starts `endstate serve` (with `crash_at` as ENDSTATE_CRASH_AT, if
    /// set) and waits for its API.
    pub async fn start(&mut self, crash_at: Option<&str>) -> Client {
        match crash_at {
            Some(point) => self.start_with(&[], &[("ENDSTATE_CRASH_AT", point)]).await,
            None => self.start_with(&[], &[]).await,
        }
    }

    /// Starts `endstate serve` with `args` after the common ones and `env`
    /// in its environment, and waits for its API.
    pub async fn start_with(&mut self, args: &[&str], env: &[(&str, &str)]) -> Client {
        let _ = std::fs::remove_file(self.state_dir().join("serve.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))
            .unwrap();
        let mut command = self.command(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--observe-interval",
            "1",
            "--period",
            "5",
            "--poll-interval",
            "0.2",
        ]);
        command
            .args(args)
            .env("ENDSTATE_LOG", "endstate=info,endstate_controller=info")
            .stdout(Stdio::null())
            .stderr(log);
        for (key, value) in env {
            command.env(key, value);
        }
        self.controller = Some(command.spawn().unwrap());
        let info_path = self.state_dir().join("serve.json");
        let started = Instant::now();
        let info: Value = loop {
            if let Ok(bytes) = std::fs::read(&info_path) {
                if let Ok(info) = serde_json::from_slice::<Value>(&bytes) {
                    break info;
                }
            }
            if let Some(status) = self.controller.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "endstate serve exited ({status}) before serving:\n{}",
                    self.log()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "endstate serve did not start:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let token = std::fs::read_to_string(self.state_dir().join("api-token")).unwrap();
        Client::new(info["url"].as_str().unwrap(), token.trim())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// SIGKILLs the controller (as `kill -9`).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.controller.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Waits for the controller to end by itself (a crash point).
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        let child = self.controller.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.controller = None;
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "the controller did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and wait for the graceful exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.controller.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).ok();
            let started = Instant::now();
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if started.elapsed() > Duration::from_secs(30) {
                    child.kill().ok();
                    panic!("endstate serve did not stop on SIGTERM:\n{}", self.log());
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            // A graceful stop: the run recorded as finished, the lock given back.
            assert!(
                status.success(),
                "endstate serve exited {status}:\n{}",
                self.log()
            );
        }
    }

    /// Live instances of the project, read from the cloud (not the
    /// controller): `endstate status --json`.
    pub fn live_in_cloud(&self) -> Vec<String> {
        let status: Value = serde_json::from_str(&self.ok(&["status", "--json"])).unwrap();
        let mut ids = Vec::new();
        for group in status["groups"].as_array().unwrap() {
            for instance in group["instances"].as_array().unwrap() {
                let state = instance["state"].as_str().unwrap();
                if state == "pending" || state == "running" {
                    ids.push(instance["id"].as_str().unwrap().to_string());
                }
            }
        }
        ids
    }

    /// The last `lines` lines of the controller's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Runs endstate to completion, at most `limit` (then it is killed and
    /// the test fails), without blocking this runtime: what it serves
    /// meanwhile (a proxy, an event reader) keeps running.
    pub async fn run_within(&self, limit: Duration, args: &[&str]) -> std::process::Output {
        let mut command = tokio::process::Command::from(self.command(args));
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = command.spawn().unwrap();
        match tokio::time::timeout(limit, child.wait_with_output()).await {
            Ok(output) => output.unwrap(),
            Err(_) => panic!(
                "endstate {args:?} did not finish within {limit:?}; controller log:\n{}",
                self.log_tail(100)
            ),
        }
    }

    /// The built-in cloud's URL and credentials (access key id, secret), as
    /// its directory holds them.
    pub fn cloud(&self) -> (String, String, String) {
        let read = |name: &str| -> Value {
            serde_json::from_slice(&std::fs::read(self.cloud_dir.path().join(name)).unwrap())
                .unwrap()
        };
        let server = read("server.json");
        let credentials = read("credentials");
        (
            server["url"].as_str().unwrap().to_string(),
            credentials["access_key_id"].as_str().unwrap().to_string(),
            credentials["secret_access_key"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    }

    /// Runs the aws CLI against the cloud itself (not through any proxy):
    /// the test's own, independent client. Answers its JSON.
    pub fn aws(&self, args: &[&str]) -> Value {
        let (url, key, secret) = self.cloud();
        let aws = std::env::var("ENDSTATE_AWS_CLI").unwrap_or_else(|_| {
            endstate_testkit::moto::workspace_root()
                .unwrap()
                .join(".tools/venv/bin/aws")
                .to_string_lossy()
                .into_owned()
        });
        let output = Command::new(&aws)
            .args([
                "--endpoint-url",
                &url,
                "--region",
                "us-east-1",
                "--output",
                "json",
            ])
            .args(args)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "aws {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// A load balancer's listener URL: its DNSName (the built-in cloud
    /// gives each load balancer a loopback address of its own), read with
    /// `aws elbv2 describe-load-balancers`, and the listener's `port`.
    pub fn load_balancer_url(&self, name: &str, port: u16) -> String {
        let answer = self.aws(&["elbv2", "describe-load-balancers", "--names", name]);
        let dns = answer["LoadBalancers"][0]["DNSName"]
            .as_str()
            .unwrap_or_else(|| panic!("no DNSName in {answer}"));
        format!("http://{dns}:{port}/")
    }

    /// Live (pending or running) instances per `endstate:generation` tag,
    /// read from the cloud with `aws ec2 describe-instances`.
    pub fn live_generations(&self) -> std::collections::BTreeMap<String, usize> {
        let answer = self.aws(&[
            "ec2",
            "describe-instances",
            "--filters",
            "Name=instance-state-name,Values=pending,running",
        ]);
        let mut counts = std::collections::BTreeMap::new();
        for reservation in answer["Reservations"].as_array().unwrap() {
            for instance in reservation["Instances"].as_array().unwrap() {
                let generation = instance["Tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|t| t["Key"] == "endstate:generation")
                    .and_then(|t| t["Value"].as_str())
                    .unwrap_or_default()
                    .to_string();
                *counts.entry(generation).or_default() += 1;
            }
        }
        counts
    }

    /// Makes an image of `instance` (CreateImage, no reboot) and waits
    /// until it is available.
    pub fn create_image(&self, instance: &str, name: &str) -> String {
        let created = self.aws(&[
            "ec2",
            "create-image",
            "--instance-id",
            instance,
            "--name",
            name,
            "--no-reboot",
        ]);
        let image = created["ImageId"].as_str().unwrap().to_string();
        let started = Instant::now();
        loop {
            let images = self.aws(&["ec2", "describe-images", "--image-ids", &image]);
            if images["Images"][0]["State"] == "available" {
                return image;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{images}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        self.kill();
        let _ = self
            .command(&["cloud", "stop", "--terminate-instances"])
            .output();
    }
}

pub async fn wait_for<T>(
    what: &str,
    limit: Duration,
    project: &Project,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}; controller log:\n{}",
            project.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn web(client: &Client) -> Option<GroupView> {
    client.group("web").await.ok()
}

pub async fn all_events(client: &Client, after: i64) -> Vec<EventView> {
    let mut events = Vec::new();
    let mut after = after;
    loop {
        let page = client.events_after(after, 1_000, None).await.unwrap();
        let Some(last) = page.last() else {
            return events;
        };
        after = last.seq;
        events.extend(page);
    }
}

pub fn of_kind<'e>(events: &'e [EventView], kind: &str) -> Vec<&'e EventView> {
    events.iter().filter(|e| e.kind == kind).collect()
}
