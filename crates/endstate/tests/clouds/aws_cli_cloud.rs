//! A third-party client against the built-in cloud: the aws CLI (v1, on
//! botocore, installed by `scripts/setup-tools` into `.tools/venv`) drives
//! `endstate cloud serve`, run as the real binary, through an instance's
//! whole life — run-instances with tags and user data, describe-instances
//! by tag filter and by id, create-tags, get-console-output,
//! describe-instance-status, stop and start, create-image, describe-images,
//! deregister-image, modify-instance-metadata-options, terminate-instances —
//! and renders EC2's error shapes (unknown id, bad signature, ClientToken
//! reuse, oversized user data) as it would AWS's own.
//!
//! Every test runs once per backend (`simulated`, `process`): the bodies
//! are shared and take the backend as a parameter. Each test starts its own
//! server in a temporary directory and stops it with `endstate cloud stop`
//! (or, if that fails, by killing the PID it started); instances are
//! terminated before that, since the process backend's outlive the server.
//!
//! Not here: the Rust client's view of the same API (`conformance.rs`).

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// This module, to [`crate::gate`].
const MODULE: &str = "aws_cli_cloud";

/// The exit code of awscli 1.x (1.46.2, pinned by scripts/setup-tools)
/// when the service answers with an error (botocore's `ClientError`).
const AWS_CLI_SERVICE_ERROR: i32 = 255;

/// How long `endstate cloud serve` may take to write `server.json`.
const SERVE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Simulated,
    Process,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Simulated => "simulated",
            Backend::Process => "process",
        }
    }

    /// How long a state change may take: the simulated backend's phases
    /// last 1 s under `cloud serve`; the process backend's instances boot,
    /// stop and exit as real processes do.
    fn settle_timeout(self) -> Duration {
        match self {
            Backend::Simulated => Duration::from_secs(30),
            Backend::Process => Duration::from_secs(90),
        }
    }
}

/// Process-backend clouds run one at a time in this binary, to bound the
/// load they put on the machine (clouds on one host no longer collide: a
/// slot whose address or uid another cloud holds is passed over).
static PROCESS_BACKEND: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The aws CLI of `.tools/venv`, or `ENDSTATE_AWS_CLI`. Missing, it fails
/// the test loudly: tests never skip.
fn aws_cli() -> PathBuf {
    let path = std::env::var_os("ENDSTATE_AWS_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            endstate_testkit::moto::workspace_root()
                .expect("workspace root")
                .join(".tools/venv/bin/aws")
        });
    assert!(
        path.is_file(),
        "the aws CLI is not at {}: run scripts/setup-tools (or scripts/test), which installs it",
        path.display()
    );
    path
}

/// One aws CLI run: its exit code, its stdout parsed as JSON (Null when
/// empty or on error), its stderr.
#[derive(Debug)]
struct AwsRun {
    args: Vec<String>,
    code: Option<i32>,
    json: Value,
    stdout: String,
    stderr: String,
}

impl AwsRun {
    /// Insists on success and returns the JSON.
    fn ok(self) -> Value {
        assert_eq!(
            self.code,
            Some(0),
            "aws {:?} failed:\nstdout: {}\nstderr: {}",
            self.args,
            self.stdout,
            self.stderr
        );
        self.json
    }

    /// Insists on a service error with `code` from `operation`, rendered
    /// the way the CLI renders AWS's own.
    fn service_error(&self, operation: &str, code: &str) {
        assert_eq!(
            self.code,
            Some(AWS_CLI_SERVICE_ERROR),
            "aws {:?}: expected {code}, got exit {:?}:\nstdout: {}\nstderr: {}",
            self.args,
            self.code,
            self.stdout,
            self.stderr
        );
        let rendered = format!("An error occurred ({code}) when calling the {operation} operation");
        assert!(
            self.stderr.contains(&rendered),
            "aws {:?}: expected {rendered:?} in stderr:\n{}",
            self.args,
            self.stderr
        );
        assert!(
            self.stdout.trim().is_empty(),
            "an error printed output: {}",
            self.stdout
        );
    }
}

/// `endstate cloud serve` run by this test, with the CLI pointed at it.
struct Cloud {
    backend: Backend,
    dir: tempfile::TempDir,
    child: Option<Child>,
    url: String,
    access_key: String,
    secret_key: String,
    aws: PathBuf,
    /// Instances this test launched (terminated before the server stops).
    launched: std::cell::RefCell<Vec<String>>,
    /// Held for a process-backend cloud's whole life; released last.
    _serial: Option<std::sync::MutexGuard<'static, ()>>,
}

impl Cloud {
    fn start(backend: Backend) -> Self {
        let aws = aws_cli();
        // A failed test poisons the lock; the next one may still run.
        let serial = (backend == Backend::Process)
            .then(|| PROCESS_BACKEND.lock().unwrap_or_else(|p| p.into_inner()));
        let dir = tempfile::tempdir().expect("temp dir");
        let cloud_dir = dir.path().join("cloud");
        let log = std::fs::File::create(dir.path().join("serve.log")).expect("serve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_endstate"))
            .args(["cloud", "serve", "--backend", backend.name(), "--dir"])
            .arg(&cloud_dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawning endstate cloud serve");
        let mut cloud = Cloud {
            backend,
            dir,
            child: Some(child),
            url: String::new(),
            access_key: String::new(),
            secret_key: String::new(),
            aws,
            launched: Default::default(),
            _serial: serial,
        };
        let pid = cloud.child.as_ref().map(Child::id).expect("child");
        let deadline = Instant::now() + SERVE_TIMEOUT;
        let info = loop {
            if let Some(status) = cloud
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "endstate cloud serve --backend {} exited ({status}) before it served:\n{}",
                    backend.name(),
                    cloud.log()
                );
            }
            let server = std::fs::read(cloud_dir.join("server.json"))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
            if let Some(info) = server.filter(|i| i["pid"].as_u64() == Some(u64::from(pid))) {
                break info;
            }
            assert!(
                Instant::now() < deadline,
                "endstate cloud serve wrote no server.json within {SERVE_TIMEOUT:?}:\n{}",
                cloud.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(info["backend"], backend.name(), "{info}");
        let credentials: Value = serde_json::from_slice(
            &std::fs::read(cloud_dir.join("credentials")).expect("reading the credentials"),
        )
        .expect("credentials JSON");
        cloud.url = info["url"].as_str().expect("url").to_string();
        assert!(cloud.url.starts_with("http://127.0.0.1:"), "{}", cloud.url);
        cloud.access_key = credentials["access_key_id"]
            .as_str()
            .expect("key")
            .to_string();
        cloud.secret_key = credentials["secret_access_key"]
            .as_str()
            .expect("secret")
            .to_string();
        cloud
    }

    fn cloud_dir(&self) -> PathBuf {
        self.dir.path().join("cloud")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    fn aws_command(&self, secret_key: &str, args: &[&str]) -> Command {
        let mut command = Command::new(&self.aws);
        command
            .args([
                "--endpoint-url",
                &self.url,
                "--region",
                "us-east-1",
                "--output",
                "json",
            ])
            .arg("ec2")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", secret_key)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            // Botocore's own retries would hide what the server answered.
            .env("AWS_MAX_ATTEMPTS", "1")
            .env("AWS_RETRY_MODE", "standard")
            .stdin(Stdio::null());
        command
    }

    fn aws(&self, args: &[&str]) -> AwsRun {
        self.run_aws(self.aws_command(&self.secret_key, args), args)
    }

    fn run_aws(&self, mut command: Command, args: &[&str]) -> AwsRun {
        let output: Output = command.output().expect("running the aws CLI");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let json = if output.status.success() && !stdout.trim().is_empty() {
            serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("aws {args:?}: not JSON ({e}):\n{stdout}"))
        } else {
            Value::Null
        };
        AwsRun {
            args: args.iter().map(|a| a.to_string()).collect(),
            code: output.status.code(),
            json,
            stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The starter base image, found by name as a user would.
    fn base_image(&self) -> String {
        let images = self
            .aws(&[
                "describe-images",
                "--filters",
                "Name=name,Values=endstate-base",
            ])
            .ok();
        let images = images["Images"].as_array().expect("Images");
        assert_eq!(images.len(), 1, "{images:?}");
        assert_eq!(images[0]["State"], "available");
        images[0]["ImageId"].as_str().expect("ImageId").to_string()
    }

    /// run-instances, remembering the ids for clean-up.
    fn run_instances(&self, args: &[&str]) -> Value {
        let mut all = vec!["run-instances"];
        all.extend_from_slice(args);
        let reservation = self.aws(&all).ok();
        for instance in reservation["Instances"].as_array().expect("Instances") {
            let id = instance["InstanceId"]
                .as_str()
                .expect("InstanceId")
                .to_string();
            if !self.launched.borrow().contains(&id) {
                self.launched.borrow_mut().push(id);
            }
        }
        reservation
    }

    /// describe-instances by id: each instance, in the order asked.
    fn describe(&self, ids: &[&str]) -> Vec<Value> {
        let mut args = vec!["describe-instances", "--instance-ids"];
        args.extend_from_slice(ids);
        let out = self.aws(&args).ok();
        let instances = instances_of(&out);
        ids.iter()
            .map(|id| {
                instances
                    .iter()
                    .find(|i| i["InstanceId"] == *id)
                    .unwrap_or_else(|| panic!("{id} is missing from {out}"))
                    .clone()
            })
            .collect()
    }

    /// Polls describe-instances until every instance is in `state`.
    fn wait_for_state(&self, ids: &[&str], state: &str) -> Vec<Value> {
        let timeout = self.backend.settle_timeout();
        let deadline = Instant::now() + timeout;
        loop {
            let instances = self.describe(ids);
            if instances.iter().all(|i| i["State"]["Name"] == state) {
                return instances;
            }
            let states: Vec<&Value> = instances.iter().map(|i| &i["State"]["Name"]).collect();
            assert!(
                Instant::now() < deadline,
                "{ids:?} not {state} within {timeout:?}: {states:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Terminates whatever this test launched and is not terminated yet,
    /// and waits for it: the process backend's instances are processes
    /// that outlive the server.
    fn terminate_launched(&self) {
        let launched = self.launched.borrow().clone();
        if launched.is_empty() {
            return;
        }
        let ids: Vec<&str> = launched.iter().map(String::as_str).collect();
        let live: Vec<String> = self
            .describe(&ids)
            .iter()
            .filter(|i| i["State"]["Name"] != "terminated")
            .map(|i| i["InstanceId"].as_str().expect("id").to_string())
            .collect();
        let live: Vec<&str> = live.iter().map(String::as_str).collect();
        if !live.is_empty() {
            let mut args = vec!["terminate-instances", "--instance-ids"];
            args.extend_from_slice(&live);
            self.aws(&args).ok();
        }
        self.wait_for_state(&ids, "terminated");
    }

    /// Stops the server with `endstate cloud stop`; if that fails, kills
    /// the process this test started, by its PID.
    fn stop(mut self) {
        self.terminate_launched();
        self.launched.borrow_mut().clear();
        let output = Command::new(env!("CARGO_BIN_EXE_endstate"))
            .args(["cloud", "stop", "--json", "--dir"])
            .arg(self.cloud_dir())
            .stdin(Stdio::null())
            .output()
            .expect("running endstate cloud stop");
        let stopped = output.status.success();
        let mut child = self.child.take().expect("the server's child");
        if !stopped {
            let _ = child.kill();
        }
        let status = wait_child(&mut child, Duration::from_secs(30));
        assert!(
            stopped,
            "endstate cloud stop failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let answer: Value = serde_json::from_slice(&output.stdout).expect("cloud stop --json");
        assert_eq!(answer["stopped"], true, "{answer}");
        assert!(
            status.is_some_and(|s| s.success()),
            "the server did not exit cleanly after cloud stop: {status:?}\n{}",
            self.log()
        );
        assert!(
            !self.cloud_dir().join("server.json").exists(),
            "server.json outlived the server"
        );
    }
}

/// Waits for a child to exit, killing it (by its PID) at the deadline.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

impl Drop for Cloud {
    /// A test that failed before `stop` still cleans up, best effort and
    /// without asserting (it may be unwinding already): its instances,
    /// then its server, killed by the PID it started.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let launched = self.launched.borrow().clone();
        if !launched.is_empty() {
            let mut terminate = vec!["terminate-instances", "--instance-ids"];
            terminate.extend(launched.iter().map(String::as_str));
            let _ = self.aws_command(&self.secret_key, &terminate).output();
            let mut describe = vec!["describe-instances", "--instance-ids"];
            describe.extend(launched.iter().map(String::as_str));
            let deadline = Instant::now() + self.backend.settle_timeout();
            while Instant::now() < deadline {
                let Ok(output) = self.aws_command(&self.secret_key, &describe).output() else {
                    break;
                };
                let json: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
                let ended = instances_of(&json)
                    .iter()
                    .all(|i| i["State"]["Name"] == "terminated");
                if !output.status.success() || ended {
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn instances_of(describe: &Value) -> Vec<Value> {
    describe["Reservations"]
        .as_array()
        .map(|reservations| {
            reservations
                .iter()
                .flat_map(|r| r["Instances"].as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

fn ids_of(instances: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = instances
        .iter()
        .map(|i| i["InstanceId"].as_str().expect("InstanceId").to_string())
        .collect();
    ids.sort();
    ids
}

fn tag<'a>(instance: &'a Value, key: &str) -> Option<&'a str> {
    instance["Tags"]
        .as_array()?
        .iter()
        .find(|t| t["Key"] == key)
        .and_then(|t| t["Value"].as_str())
}

/// A name no other test (or earlier run) uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

const USER_DATA: &str = "#!/bin/sh\necho hello-from-the-aws-cli\n";

/// An instance's whole life, driven by the aws CLI.
fn lifecycle(backend: Backend) {
    let cloud = Cloud::start(backend);
    let image = cloud.base_image();
    let project = unique("cli");
    let token = unique("tok");

    // run-instances: two web instances with tags and user data, one worker.
    let web = cloud.run_instances(&[
        "--image-id",
        &image,
        "--count",
        "2",
        "--instance-type",
        "t3.micro",
        "--client-token",
        &token,
        "--user-data",
        USER_DATA,
        "--tag-specifications",
        &format!(
            "ResourceType=instance,Tags=[{{Key=project,Value={project}}},{{Key=role,Value=web}}]"
        ),
    ]);
    let web_instances = web["Instances"].as_array().expect("Instances");
    assert_eq!(web_instances.len(), 2, "{web}");
    assert!(web["ReservationId"]
        .as_str()
        .expect("ReservationId")
        .starts_with("r-"));
    for (index, instance) in web_instances.iter().enumerate() {
        assert!(instance["InstanceId"]
            .as_str()
            .expect("id")
            .starts_with("i-"));
        assert_eq!(instance["ImageId"], image.as_str());
        assert_eq!(instance["InstanceType"], "t3.micro");
        assert_eq!(instance["State"]["Name"], "pending", "{instance}");
        assert_eq!(instance["State"]["Code"], 0);
        assert_eq!(instance["ClientToken"], token.as_str());
        assert_eq!(instance["AmiLaunchIndex"], index);
        assert_eq!(tag(instance, "project"), Some(project.as_str()));
        assert_eq!(tag(instance, "role"), Some("web"));
        assert!(instance["Placement"]["AvailabilityZone"]
            .as_str()
            .expect("zone")
            .starts_with("us-east-1"));
    }
    let web_ids = ids_of(web_instances);
    let worker = cloud.run_instances(&[
        "--image-id",
        &image,
        "--instance-type",
        "t3.micro",
        "--tag-specifications",
        &format!(
            "ResourceType=instance,Tags=[{{Key=project,Value={project}}},{{Key=role,Value=worker}}]"
        ),
    ]);
    let worker_id = ids_of(worker["Instances"].as_array().expect("Instances")).remove(0);
    let all: Vec<&str> = web_ids
        .iter()
        .map(String::as_str)
        .chain([worker_id.as_str()])
        .collect();
    cloud.wait_for_state(&all, "running");

    // The same ClientToken and parameters: the same instances, no new ones.
    let again = cloud.run_instances(&[
        "--image-id",
        &image,
        "--count",
        "2",
        "--instance-type",
        "t3.micro",
        "--client-token",
        &token,
        "--user-data",
        USER_DATA,
        "--tag-specifications",
        &format!(
            "ResourceType=instance,Tags=[{{Key=project,Value={project}}},{{Key=role,Value=web}}]"
        ),
    ]);
    assert_eq!(
        ids_of(again["Instances"].as_array().expect("Instances")),
        web_ids
    );

    // describe-instances with tag filters: each role its own instances.
    let by_role = |role: &str| {
        let out = cloud
            .aws(&[
                "describe-instances",
                "--filters",
                &format!("Name=tag:project,Values={project}"),
                &format!("Name=tag:role,Values={role}"),
                "Name=instance-state-name,Values=running",
            ])
            .ok();
        ids_of(&instances_of(&out))
    };
    assert_eq!(by_role("web"), web_ids);
    assert_eq!(by_role("worker"), vec![worker_id.clone()]);
    assert_eq!(by_role("nobody"), Vec::<String>::new());
    // --query, as scripts use it, over a filter with a wildcard.
    let queried = cloud
        .aws(&[
            "describe-instances",
            "--filters",
            &format!("Name=tag:project,Values={}*", &project[..8]),
            "--query",
            "Reservations[].Instances[].InstanceId",
        ])
        .ok();
    let mut queried: Vec<String> = serde_json::from_value(queried).expect("ids");
    queried.sort();
    let mut expected: Vec<String> = all.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(queried, expected);

    // create-tags, then describe shows them (and filters on them).
    let first = web_ids[0].as_str();
    let out = cloud.aws(&[
        "create-tags",
        "--resources",
        first,
        "--tags",
        "Key=tier,Value=gold",
        "Key=owner,Value=ops team",
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.trim().is_empty(),
        "create-tags prints nothing: {out:?}"
    );
    let described = cloud.describe(&[first]).remove(0);
    assert_eq!(tag(&described, "tier"), Some("gold"));
    assert_eq!(tag(&described, "owner"), Some("ops team"));
    assert_eq!(tag(&described, "role"), Some("web"));
    let gold = cloud
        .aws(&[
            "describe-instances",
            "--filters",
            "Name=tag:tier,Values=gold",
        ])
        .ok();
    assert_eq!(ids_of(&instances_of(&gold)), vec![first.to_string()]);
    cloud
        .aws(&["delete-tags", "--resources", first, "--tags", "Key=owner"])
        .ok();
    let described = cloud.describe(&[first]).remove(0);
    assert_eq!(tag(&described, "owner"), None, "{described}");
    assert_eq!(tag(&described, "tier"), Some("gold"));

    // get-console-output: botocore decodes EC2's base64. The simulated
    // backend's instances print nothing; the process backend's run their
    // user data, whose output is the console.
    let console = |id: &str| cloud.aws(&["get-console-output", "--instance-id", id]).ok();
    match backend {
        Backend::Simulated => {
            let out = console(first);
            assert_eq!(out["InstanceId"], first);
            assert!(out["Timestamp"].is_string(), "{out}");
            assert!(out.get("Output").is_none(), "{out}");
        }
        Backend::Process => {
            let deadline = Instant::now() + backend.settle_timeout();
            loop {
                let out = console(first);
                assert_eq!(out["InstanceId"], first);
                if out["Output"]
                    .as_str()
                    .is_some_and(|o| o.contains("hello-from-the-aws-cli"))
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the user data's output never reached the console: {out}"
                );
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }

    // describe-instance-status: running instances, their checks ok once
    // booted.
    let deadline = Instant::now() + backend.settle_timeout();
    loop {
        let status = cloud
            .aws(&["describe-instance-status", "--instance-ids", first])
            .ok();
        let statuses = status["InstanceStatuses"].as_array().expect("statuses");
        assert_eq!(statuses.len(), 1, "{status}");
        let s = &statuses[0];
        assert_eq!(s["InstanceId"], first);
        assert_eq!(s["InstanceState"]["Name"], "running");
        assert!(s["AvailabilityZone"]
            .as_str()
            .expect("zone")
            .starts_with("us-east-1"));
        if s["InstanceStatus"]["Status"] == "ok" && s["SystemStatus"]["Status"] == "ok" {
            break;
        }
        assert!(
            s["InstanceStatus"]["Status"] == "initializing",
            "a healthy instance's status is {s}"
        );
        assert!(Instant::now() < deadline, "status never became ok: {s}");
        std::thread::sleep(Duration::from_millis(250));
    }

    // stop-instances, then start-instances, waiting on describe.
    let stopping = cloud.aws(&["stop-instances", "--instance-ids", first]).ok();
    let change = &stopping["StoppingInstances"][0];
    assert_eq!(change["InstanceId"], first);
    assert_eq!(change["PreviousState"]["Name"], "running");
    assert!(
        matches!(
            change["CurrentState"]["Name"].as_str(),
            Some("stopping" | "stopped")
        ),
        "{change}"
    );
    let stopped = cloud.wait_for_state(&[first], "stopped").remove(0);
    assert_eq!(stopped["State"]["Code"], 80);
    // Without --include-all-instances only running instances have a status.
    let status = cloud
        .aws(&["describe-instance-status", "--instance-ids", first])
        .ok();
    assert_eq!(
        status["InstanceStatuses"],
        serde_json::json!([]),
        "{status}"
    );
    let status = cloud
        .aws(&[
            "describe-instance-status",
            "--instance-ids",
            first,
            "--include-all-instances",
        ])
        .ok();
    assert_eq!(
        status["InstanceStatuses"][0]["InstanceState"]["Name"],
        "stopped"
    );
    let starting = cloud
        .aws(&["start-instances", "--instance-ids", first])
        .ok();
    let change = &starting["StartingInstances"][0];
    assert_eq!(change["PreviousState"]["Name"], "stopped");
    assert!(
        matches!(
            change["CurrentState"]["Name"].as_str(),
            Some("pending" | "running")
        ),
        "{change}"
    );
    cloud.wait_for_state(&[first], "running");

    // create-image from the running instance, describe it, deregister it.
    let image_name = unique("cli-image");
    let created = cloud
        .aws(&[
            "create-image",
            "--instance-id",
            first,
            "--name",
            &image_name,
            "--description",
            "made by the aws CLI",
            "--tag-specifications",
            "ResourceType=image,Tags=[{Key=made-by,Value=aws-cli}]",
        ])
        .ok();
    let new_image = created["ImageId"].as_str().expect("ImageId").to_string();
    assert!(new_image.starts_with("ami-"), "{created}");
    let deadline = Instant::now() + backend.settle_timeout();
    let described = loop {
        let images = cloud
            .aws(&["describe-images", "--image-ids", &new_image])
            .ok();
        let one = images["Images"][0].clone();
        if one["State"] == "available" {
            break one;
        }
        assert_eq!(one["State"], "pending", "{images}");
        assert!(
            Instant::now() < deadline,
            "{new_image} never became available"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(described["ImageId"], new_image.as_str());
    assert_eq!(described["Name"], image_name.as_str());
    assert_eq!(tag(&described, "made-by"), Some("aws-cli"));
    let named = cloud
        .aws(&[
            "describe-images",
            "--filters",
            &format!("Name=name,Values={image_name}"),
        ])
        .ok();
    assert_eq!(named["Images"].as_array().map(Vec::len), Some(1), "{named}");
    // A second image of the same name is refused, as on EC2.
    cloud
        .aws(&[
            "create-image",
            "--instance-id",
            first,
            "--name",
            &image_name,
        ])
        .service_error("CreateImage", "InvalidAMIName.Duplicate");
    let out = cloud.aws(&["deregister-image", "--image-id", &new_image]);
    assert_eq!(out.code, Some(0), "{out:?}");
    cloud
        .aws(&["describe-images", "--image-ids", &new_image])
        .service_error("DescribeImages", "InvalidAMIID.NotFound");

    // modify-instance-metadata-options, then describe shows the options.
    let modified = cloud
        .aws(&[
            "modify-instance-metadata-options",
            "--instance-id",
            first,
            "--http-tokens",
            "required",
            "--http-put-response-hop-limit",
            "2",
            "--http-endpoint",
            "enabled",
        ])
        .ok();
    assert_eq!(modified["InstanceId"], first);
    assert_eq!(
        modified["InstanceMetadataOptions"]["HttpTokens"],
        "required"
    );
    assert_eq!(
        modified["InstanceMetadataOptions"]["HttpPutResponseHopLimit"],
        2
    );
    let described = cloud.describe(&[first]).remove(0);
    assert_eq!(
        described["MetadataOptions"]["HttpTokens"], "required",
        "{described}"
    );
    assert_eq!(described["MetadataOptions"]["HttpPutResponseHopLimit"], 2);
    assert_eq!(described["MetadataOptions"]["HttpEndpoint"], "enabled");
    cloud
        .aws(&[
            "modify-instance-metadata-options",
            "--instance-id",
            first,
            "--http-tokens",
            "sometimes",
        ])
        .service_error("ModifyInstanceMetadataOptions", "InvalidParameterValue");

    // terminate-instances: all three; they end terminated and stay listed.
    let mut args = vec!["terminate-instances", "--instance-ids"];
    args.extend_from_slice(&all);
    let terminating = cloud.aws(&args).ok();
    let changes = terminating["TerminatingInstances"]
        .as_array()
        .expect("changes");
    assert_eq!(ids_of(changes), expected);
    for change in changes {
        assert_eq!(change["PreviousState"]["Name"], "running", "{change}");
        assert!(
            matches!(
                change["CurrentState"]["Name"].as_str(),
                Some("shutting-down" | "terminated")
            ),
            "{change}"
        );
    }
    let ended = cloud.wait_for_state(&all, "terminated");
    assert!(ended.iter().all(|i| i["State"]["Code"] == 48), "{ended:?}");
    // EC2 keeps terminated instances visible for a while, filters included.
    let out = cloud
        .aws(&[
            "describe-instances",
            "--filters",
            &format!("Name=tag:project,Values={project}"),
            "Name=instance-state-name,Values=terminated",
        ])
        .ok();
    assert_eq!(ids_of(&instances_of(&out)), expected);
    // Terminating again is no error: the state stays terminated.
    let again = cloud
        .aws(&["terminate-instances", "--instance-ids", first])
        .ok();
    assert_eq!(
        again["TerminatingInstances"][0]["CurrentState"]["Name"],
        "terminated"
    );
    cloud
        .aws(&["start-instances", "--instance-ids", first])
        .service_error("StartInstances", "IncorrectInstanceState");

    cloud.stop();
}

/// The errors a client must be able to tell apart, as the CLI renders them.
fn error_shapes(backend: Backend) {
    let cloud = Cloud::start(backend);
    let image = cloud.base_image();

    // An id of the right shape that names nothing.
    let unknown = "i-0123456789abcdef0";
    for (operation, args) in [
        (
            "DescribeInstances",
            vec!["describe-instances", "--instance-ids", unknown],
        ),
        (
            "TerminateInstances",
            vec!["terminate-instances", "--instance-ids", unknown],
        ),
        (
            "StopInstances",
            vec!["stop-instances", "--instance-ids", unknown],
        ),
        (
            "GetConsoleOutput",
            vec!["get-console-output", "--instance-id", unknown],
        ),
        (
            "CreateTags",
            vec![
                "create-tags",
                "--resources",
                unknown,
                "--tags",
                "Key=a,Value=b",
            ],
        ),
    ] {
        let run = cloud.aws(&args);
        run.service_error(operation, "InvalidInstanceID.NotFound");
        assert!(run.stderr.contains(unknown), "{run:?}");
    }
    // An id that is not an instance id at all.
    cloud
        .aws(&["describe-instances", "--instance-ids", "i-notanid"])
        .service_error("DescribeInstances", "InvalidInstanceID.Malformed");

    // A wrong secret key: the signature does not match. An unknown access
    // key: the credentials are refused.
    let mut wrong = cloud.secret_key.clone();
    wrong.replace_range(0..1, if wrong.starts_with('x') { "y" } else { "x" });
    cloud
        .run_aws(
            cloud.aws_command(&wrong, &["describe-instances"]),
            &["describe-instances", "(wrong secret)"],
        )
        .service_error("DescribeInstances", "SignatureDoesNotMatch");
    let mut stranger = cloud.aws_command(&cloud.secret_key, &["describe-instances"]);
    stranger.env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE");
    cloud
        .run_aws(stranger, &["describe-instances", "(unknown key)"])
        .service_error("DescribeInstances", "AuthFailure");

    // The same client token with other parameters.
    let token = unique("tok");
    let first = cloud.run_instances(&[
        "--image-id",
        &image,
        "--instance-type",
        "t3.micro",
        "--client-token",
        &token,
    ]);
    let first_ids = ids_of(first["Instances"].as_array().expect("Instances"));
    assert_eq!(first_ids.len(), 1);
    cloud
        .aws(&[
            "run-instances",
            "--image-id",
            &image,
            "--instance-type",
            "t3.small",
            "--client-token",
            &token,
        ])
        .service_error("RunInstances", "IdempotentParameterMismatch");
    cloud
        .aws(&[
            "run-instances",
            "--image-id",
            &image,
            "--instance-type",
            "t3.micro",
            "--count",
            "2",
            "--client-token",
            &token,
        ])
        .service_error("RunInstances", "IdempotentParameterMismatch");
    let tokened = cloud
        .aws(&[
            "describe-instances",
            "--filters",
            &format!("Name=client-token,Values={token}"),
        ])
        .ok();
    assert_eq!(
        ids_of(&instances_of(&tokened)),
        first_ids,
        "a mismatch launched nothing"
    );

    // User data: 16,384 bytes is EC2's limit, before base64.
    let dir = cloud.dir.path().to_path_buf();
    let write = |name: &str, len: usize| -> String {
        let script = "#!/bin/sh\n#";
        let body = format!("{script}{}\n", "a".repeat(len - script.len() - 1));
        assert_eq!(body.len(), len);
        let path: PathBuf = dir.join(name);
        std::fs::write(&path, body).expect("writing user data");
        format!("file://{}", path.display())
    };
    let over = write("over.sh", 16_385);
    let run = cloud.aws(&["run-instances", "--image-id", &image, "--user-data", &over]);
    run.service_error("RunInstances", "InvalidParameterValue");
    assert!(run.stderr.contains("16384"), "{run:?}");
    let at_limit = write("limit.sh", 16_384);
    let accepted = cloud.run_instances(&[
        "--image-id",
        &image,
        "--instance-type",
        "t3.micro",
        "--user-data",
        &at_limit,
    ]);
    assert_eq!(accepted["Instances"].as_array().map(Vec::len), Some(1));

    // A malformed or unknown image.
    cloud
        .aws(&["run-instances", "--image-id", "ami-0000000000000000f"])
        .service_error("RunInstances", "InvalidAMIID.NotFound");
    cloud
        .aws(&["describe-images", "--image-ids", "not-an-image"])
        .service_error("DescribeImages", "InvalidAMIID.Malformed");
    // A filter EC2 does not know.
    cloud
        .aws(&["describe-instances", "--filters", "Name=colour,Values=blue"])
        .service_error("DescribeInstances", "InvalidParameterValue");

    cloud.stop();
}

#[test]
fn aws_cli_drives_an_instance_lifecycle_on_the_simulated_backend() {
    let _pass = crate::gate::enter(MODULE);
    lifecycle(Backend::Simulated);
}

#[test]
fn aws_cli_renders_ec2_errors_from_the_simulated_backend() {
    let _pass = crate::gate::enter(MODULE);
    error_shapes(Backend::Simulated);
}

#[test]
fn aws_cli_drives_an_instance_lifecycle_on_the_process_backend() {
    let _pass = crate::gate::enter(MODULE);
    lifecycle(Backend::Process);
}

#[test]
fn aws_cli_renders_ec2_errors_from_the_process_backend() {
    let _pass = crate::gate::enter(MODULE);
    error_shapes(Backend::Process);
}
