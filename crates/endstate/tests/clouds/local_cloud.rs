//! The built-in cloud as a user meets it, through the real `endstate`
//! binary and the process backend (instances that really run; CI runs as
//! root, so they run in their own namespaces as their own uids):
//!
//! - the README's example (`examples/web`): `provider: local` starts the
//!   cloud in the background, three instances boot from cloud-config, each
//!   serves HTTP on its own loopback address; SIGKILL of the cloud server and
//!   a restart forget nothing and double nothing; destroy leaves no process;
//! - third-party metadata clients inside an instance (aws-config's IMDS
//!   client, as `endstate metadata`, and botocore's fetchers) read the
//!   instance's own data with IMDSv2 tokens, and a process in instance A that
//!   asks B's metadata endpoint is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use endstate_provider::ec2::{Ec2Client, Ec2Config};
use endstate_provider::{describe_all, Filter, Provider as _};
use serde_json::Value;

const ENDSTATE: &str = env!("CARGO_BIN_EXE_endstate");
/// This module, to [`crate::gate`].
const MODULE: &str = "local_cloud";
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// A cloud directory and a project directory, both temporary; the cloud is
/// stopped, its instances terminated, when the test ends (pass or fail).
struct Local {
    cloud_dir: tempfile::TempDir,
    project: tempfile::TempDir,
    /// A server this test started directly (`cloud serve`), if any.
    server: Option<Child>,
    /// Run every command as this uid (through `setpriv`) instead of root.
    as_user: Option<u32>,
}

impl Local {
    fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests need root: the process backend isolates instances with namespaces (CI runs as root)"
        );
        Self {
            cloud_dir: tempfile::tempdir().unwrap(),
            project: tempfile::tempdir().unwrap(),
            server: None,
            as_user: None,
        }
    }

    /// Every command runs as `nobody` (uid 65534), as a user without root
    /// would run endstate.
    fn unprivileged() -> Self {
        let mut local = Self::new();
        for dir in [local.cloud_dir.path(), local.project.path()] {
            std::os::unix::fs::chown(dir, Some(65_534), Some(65_534)).unwrap();
        }
        // The build directory may be out of nobody's reach (a checkout under
        // /root): run a copy of the binary from the project directory.
        std::fs::copy(ENDSTATE, local.unprivileged_binary()).unwrap();
        local.as_user = Some(65_534);
        local
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = match self.as_user {
            None => Command::new(ENDSTATE),
            Some(uid) => {
                let mut setpriv = Command::new("setpriv");
                setpriv
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .args(["--clear-groups", "--"])
                    .arg(self.unprivileged_binary())
                    .env("HOME", self.project.path());
                setpriv
            }
        };
        command
            .args(args)
            .current_dir(self.project.path())
            .env("ENDSTATE_CLOUD_DIR", self.cloud_dir.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NO_COLOR", "1")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL");
        command
    }

    /// Where `unprivileged` puts the copy of the binary it runs.
    fn unprivileged_binary(&self) -> PathBuf {
        self.project.path().join("endstate")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "endstate {args:?} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn ok_json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        serde_json::from_str(&self.ok(&with_json)).unwrap()
    }

    /// Starts `endstate cloud serve` with extra arguments, and waits until
    /// it answers.
    fn serve(&mut self, extra: &[&str]) {
        let mut args = vec!["cloud", "serve"];
        args.extend_from_slice(extra);
        let child = self
            .command(&args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.cloud_dir.path().join("cloud.log")).unwrap())
            .spawn()
            .unwrap();
        self.server = Some(child);
        wait_until("the cloud answers", Duration::from_secs(60), || {
            self.run(&["cloud", "status", "--json"]).status.success()
                && self.ok_json(&["cloud", "status"])["running"] == true
        });
    }

    fn server_pid(&self) -> u32 {
        let info: Value = serde_json::from_slice(
            &std::fs::read(self.cloud_dir.path().join("server.json")).unwrap(),
        )
        .unwrap();
        u32::try_from(info["pid"].as_u64().unwrap()).unwrap()
    }

    /// An EC2 client for the running cloud, from its server.json and
    /// credentials.
    fn client(&self) -> Ec2Client {
        let read = |name: &str| -> Value {
            serde_json::from_slice(&std::fs::read(self.cloud_dir.path().join(name)).unwrap())
                .unwrap()
        };
        let (info, credentials) = (read("server.json"), read("credentials"));
        Ec2Client::with_static_credentials(
            Ec2Config::new("us-east-1").with_endpoint(info["url"].as_str().unwrap()),
            credentials["access_key_id"].as_str().unwrap(),
            credentials["secret_access_key"].as_str().unwrap(),
            None,
        )
        .unwrap()
    }

    fn write_spec(&self, text: &str) -> PathBuf {
        let path = self.project.path().join("endstate.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let stopped = self
            .run(&["cloud", "stop", "--terminate-instances"])
            .status
            .success();
        if let Some(mut child) = self.server.take() {
            if !stopped {
                child.kill().ok();
            }
            child.wait().ok();
        }
    }
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET /` on address:port, the body if the answer is 200.
fn http_get(address: &str, port: u16) -> Option<String> {
    let mut stream = TcpStream::connect((address, port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET / HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_string())
}

/// Processes on this host whose real uid is an instance's (2,000,000 and
/// up: the process backend's range).
fn instance_processes() -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse::<u32>().ok());
        if let Some(uid) = uid.filter(|u| *u >= 2_000_000) {
            found.push((pid, uid));
        }
    }
    found
}

/// The top process of the instance whose directory is `dir`: the
/// `instance-init` process for it whose parent is not one too (PID 1 of
/// the instance runs the same command line, as the top process's child).
fn top_process(dir: &Path) -> u32 {
    let wanted = dir.to_string_lossy().to_string();
    let mut found: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        if args.iter().any(|a| a == "instance-init") && args.contains(&wanted) {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            found.push((pid, ppid));
        }
    }
    let pids: Vec<u32> = found.iter().map(|(p, _)| *p).collect();
    let tops: Vec<u32> = found
        .iter()
        .filter(|(_, ppid)| !pids.contains(ppid))
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(tops.len(), 1, "one top process for {wanted}: {found:?}");
    tops[0]
}

/// (id, address) of the running instances `status --json` lists.
fn running_instances(status: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for group in status["groups"].as_array().unwrap() {
        for i in group["instances"].as_array().unwrap() {
            if i["state"] == "running" {
                found.push((
                    i["id"].as_str().unwrap().to_string(),
                    i["address"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
    }
    found.sort();
    found
}

/// Applies the web example and checks that each of its three instances
/// answers on its own address; their (id, address).
fn apply_web_example(local: &Local) -> Vec<(String, String)> {
    let example =
        std::fs::read_to_string(Path::new(REPO).join("examples/web/endstate.yaml")).unwrap();
    let spec = local.write_spec(&example);
    if let Some(uid) = local.as_user {
        std::os::unix::fs::chown(&spec, Some(uid), Some(uid)).unwrap();
    }
    local.ok(&["validate"]);
    // provider: local starts the cloud in the background.
    let applied = local.run(&["apply", "--poll-interval", "0.2"]);
    let stderr = String::from_utf8_lossy(&applied.stderr);
    assert!(applied.status.success(), "apply failed:\n{stderr}");
    assert!(stderr.contains("Started the built-in cloud"), "{stderr}");
    let running = running_instances(&local.ok_json(&["status"]));
    assert_eq!(running.len(), 3, "{running:?}");
    for (id, address) in &running {
        assert!(address.starts_with("127."), "{id} has address {address:?}");
        let mut body = None;
        wait_until(
            &format!("{id} answers on {address}:8080"),
            Duration::from_secs(30),
            || {
                body = http_get(address, 8080);
                body.is_some()
            },
        );
        assert_eq!(body.unwrap(), format!("hello from {id} at {address}\n"));
        let console = local.ok(&["cloud", "console-output", id]);
        assert!(console.contains("web instance booted"), "{console}");
    }
    running
}

#[test]
fn the_web_example_runs_without_root_in_user_namespaces() {
    let _pass = crate::gate::enter(MODULE);
    let local = Local::unprivileged();
    let running = apply_web_example(&local);
    let cloud = local.ok_json(&["cloud", "status"]);
    assert!(
        cloud["isolation"]
            .as_str()
            .unwrap()
            .starts_with("user namespaces"),
        "{cloud}"
    );
    // Every process of the cloud and its instances is nobody's on the host.
    let server = local.server_pid();
    let status = std::fs::read_to_string(format!("/proc/{server}/status")).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t65534\t")),
        "{status}"
    );
    local.ok(&["destroy", "--yes"]);
    for (_, address) in &running {
        wait_until(
            "the instance stops answering",
            Duration::from_secs(30),
            || http_get(address, 8080).is_none(),
        );
    }
}

#[test]
fn the_web_example_serves_on_three_addresses_and_survives_a_killed_server() {
    let _pass = crate::gate::enter(MODULE);
    let local = Local::new();
    let before = apply_web_example(&local);
    let cloud = local.ok_json(&["cloud", "status"]);
    assert_eq!(cloud["backend"], "process");
    let key = cloud["identity_public_key"].as_str().unwrap();
    assert_eq!(
        key.len(),
        44,
        "32 bytes of Ed25519 public key in base64: {key}"
    );
    assert!(
        cloud["isolation"]
            .as_str()
            .unwrap()
            .starts_with("namespaces"),
        "{cloud}"
    );

    // SIGKILL the server; the instances outlive it; a restart knows each
    // of them once, and they still answer.
    let pid = local.server_pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("the killed server is gone", Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z"))
                .unwrap_or(true)
    });
    for (id, address) in &before {
        assert!(
            http_get(address, 8080).is_some(),
            "{id} died with the server"
        );
    }
    // While no server watches, one instance dies.
    let (dead_id, dead_address) = before[0].clone();
    let top = top_process(&local.cloud_dir.path().join("instances").join(&dead_id));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(top).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until(
        "the dead instance stops answering",
        Duration::from_secs(10),
        || http_get(&dead_address, 8080).is_none(),
    );
    local.ok(&["cloud", "start"]);
    let after = running_instances(&local.ok_json(&["status"]));
    assert_eq!(
        after, before,
        "the restarted cloud must know exactly the same instances"
    );
    let all = tokio_block_on(async { describe_all(&local.client(), &[]).await.unwrap().0 });
    assert_eq!(all.len(), 3, "no instance doubled: {all:?}");
    for (id, address) in &before[1..] {
        assert!(
            http_get(address, 8080).is_some(),
            "{id} stopped answering after the restart"
        );
    }
    // The one that died meanwhile is known, running, and failing its
    // status check; the others pass theirs.
    let statuses = tokio_block_on(async {
        local
            .client()
            .describe_instance_status(&endstate_wire::DescribeInstanceStatusRequest {
                include_all_instances: Some(true),
                ..Default::default()
            })
            .await
            .unwrap()
            .statuses
    });
    for (id, _) in &before {
        let status = statuses.iter().find(|s| &s.instance_id == id).unwrap();
        let expected = if *id == dead_id { "impaired" } else { "ok" };
        assert_eq!(status.instance_status, expected, "{id}: {status:?}");
    }
    // Another plan is empty: the fleet is as declared.
    let plan = local.ok_json(&["plan"]);
    assert_eq!(plan["phases"].as_array().map(Vec::len), Some(0), "{plan}");

    local.ok(&["destroy", "--yes"]);
    wait_until(
        "no instance process is left",
        Duration::from_secs(30),
        || instance_processes().is_empty(),
    );
    for (_, address) in &before {
        assert!(http_get(address, 8080).is_none());
    }
}

fn tokio_block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// Runs an instance from `user_data` on the cloud and waits until its boot
/// is over. Its id and address.
async fn launch(local: &Local, image: &str, user_data: &str) -> (String, String) {
    let client = &local.client();
    let request = endstate_provider::LaunchRequest {
        image_id: image.to_string(),
        instance_type: "t3.micro".into(),
        count: 1,
        zone: "us-east-1a".into(),
        subnet_id: None,
        security_group_ids: Vec::new(),
        key_name: None,
        iam_instance_profile: None,
        root_volume: None,
        metadata: endstate_model::MetadataOptions::default(),
        user_data: Some(user_data.as_bytes().to_vec()),
        tags: Default::default(),
        client_token: uuid::Uuid::new_v4().to_string(),
    };
    let launched = client.run_instances(&request).await.unwrap();
    let id = launched[0].id.clone();
    let started = Instant::now();
    loop {
        let statuses = client
            .describe_instance_status(&endstate_wire::DescribeInstanceStatusRequest {
                instance_ids: vec![id.clone()],
                include_all_instances: Some(true),
                ..Default::default()
            })
            .await
            .unwrap();
        // Boot over, well or not: the console says which.
        if statuses
            .statuses
            .first()
            .is_some_and(|s| s.instance_status == "ok" || s.instance_status == "impaired")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{id} never booted: {statuses:?}\nconsole: {}\ncloud log: {}",
            std::fs::read_to_string(
                local
                    .cloud_dir
                    .path()
                    .join("instances")
                    .join(&id)
                    .join("console.log")
            )
            .unwrap_or_default(),
            std::fs::read_to_string(local.cloud_dir.path().join("cloud.log")).unwrap_or_default(),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (found, _) = describe_all(client, &[Filter::new("instance-id", [id.as_str()])])
        .await
        .unwrap();
    let address = found[0].private_ip.clone().unwrap();
    (id, address)
}

#[test]
fn metadata_clients_inside_an_instance_read_only_its_own_data() {
    let _pass = crate::gate::enter(MODULE);
    let mut local = Local::new();
    // botocore from the tools' virtual environment, run inside the instance
    // by the host's python3 (bound in with /usr): only its site-packages
    // directory is bound, as the environment's own interpreter may live
    // outside /usr.
    let lib = Path::new(REPO).join(".tools/venv/lib");
    let site = std::fs::read_dir(&lib)
        .unwrap_or_else(|e| panic!("{}: {e}: run scripts/setup-tools", lib.display()))
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.join("botocore").is_dir())
        .unwrap_or_else(|| {
            panic!(
                "no botocore under {}: run scripts/setup-tools",
                lib.display()
            )
        });
    let bind = format!(
        "{}:/opt/site-packages",
        site.canonicalize().unwrap().display()
    );
    local.serve(&["--bind", &bind]);
    let client = local.client();
    tokio_block_on(async {
        let base = local.ok_json(&["cloud", "status"])["base_image"]
            .as_str()
            .unwrap()
            .to_string();

        // B holds a secret in its user data.
        let (b_id, b_address) = launch(&local, &base, "#!/bin/sh\necho B-ONLY-7f3a\n").await;
        let port = 169;
        // A asks its own endpoint with both SDKs' clients, then B's.
        let a_user_data = format!(
            r#"#cloud-config
write_files:
  - path: /opt/probe/botocore_probe.py
    content: |
      import botocore.session
      from botocore.utils import IMDSRegionProvider, InstanceMetadataFetcher
      session = botocore.session.get_session()
      config = {{"ec2_metadata_service_endpoint": session.get_config_variable("ec2_metadata_service_endpoint"),
                "ec2_metadata_service_endpoint_mode": "ipv4"}}
      fetcher = InstanceMetadataFetcher(timeout=5, num_attempts=2, config=config)
      token = fetcher._fetch_metadata_token()
      assert token, "no IMDSv2 token"
      def get(path):
          return fetcher._get_request(path, None, token).text
      print("botocore instance-id:", get("latest/meta-data/instance-id"))
      print("botocore region:", IMDSRegionProvider(session).provide())
      print("botocore user-data marker:", "A-MARKER-91c2" in get("latest/user-data"))
  - path: /opt/probe/cross.py
    content: |
      import sys, urllib.request, urllib.error
      base = sys.argv[1]
      try:
          token = urllib.request.urlopen(urllib.request.Request(base + "latest/api/token", method="PUT",
              headers={{"X-aws-ec2-metadata-token-ttl-seconds": "60"}}), timeout=5).read().decode()
          body = urllib.request.urlopen(urllib.request.Request(base + "latest/user-data",
              headers={{"X-aws-ec2-metadata-token": token}}), timeout=5).read().decode()
          print("cross: answered:", body)
      except urllib.error.HTTPError as e:
          print("cross: refused with", e.code)
  - path: /opt/probe/probe.sh
    content: |
      echo A-MARKER-91c2 booting
      /opt/endstate/bin/endstate metadata instance-id placement/region user-data --json | sed 's/^/aws-config: /'
      PYTHONPATH=/opt/site-packages python3 /opt/probe/botocore_probe.py
      python3 /opt/probe/cross.py http://{b_address}:{port}/
      AWS_EC2_METADATA_SERVICE_ENDPOINT=http://{b_address}:{port}/ /opt/endstate/bin/endstate metadata user-data || echo "cross-sdk: refused"
      /opt/endstate/bin/endstate metadata identity /latest/dynamic/instance-identity/signature --json | sed 's/^/identity: /'
      echo probes done
runcmd:
  - [sh, /opt/probe/probe.sh]
"#
        );
        let (a_id, _) = launch(&local, &base, &a_user_data).await;
        let console = String::from_utf8(client.console_output(&a_id).await.unwrap()).unwrap();
        assert!(console.contains("probes done"), "{console}");

        // aws-config's IMDS client (IMDSv2; tokens are required).
        let line = console
            .lines()
            .find_map(|l| l.strip_prefix("aws-config: "))
            .unwrap_or_else(|| panic!("no aws-config line in:\n{console}"));
        let read: Value = serde_json::from_str(line).unwrap();
        assert_eq!(read["instance-id"], a_id.as_str());
        assert_eq!(read["placement/region"], "us-east-1");
        assert!(read["user-data"]
            .as_str()
            .unwrap()
            .contains("A-MARKER-91c2"));

        // The identity document is signed with the key `cloud status` shows.
        let line = console
            .lines()
            .find_map(|l| l.strip_prefix("identity: "))
            .unwrap_or_else(|| panic!("no identity line in:\n{console}"));
        let identity: Value = serde_json::from_str(line).unwrap();
        let document = identity["identity"].as_str().unwrap();
        let signature = identity["/latest/dynamic/instance-identity/signature"]
            .as_str()
            .unwrap();
        let document_json: Value = serde_json::from_str(document).unwrap();
        assert_eq!(document_json["instanceId"], a_id.as_str());
        let key = base64::engine::general_purpose::STANDARD
            .decode(
                local.ok_json(&["cloud", "status"])["identity_public_key"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        endstate_imds::verify(document.as_bytes(), signature, &key).unwrap();
        let mut forged = document.replace(&a_id, &b_id).into_bytes();
        forged.push(b' ');
        assert!(endstate_imds::verify(&forged, signature, &key).is_err());

        // botocore's fetchers.
        assert!(
            console.contains(&format!("botocore instance-id: {a_id}")),
            "{console}"
        );
        assert!(console.contains("botocore region: us-east-1"), "{console}");
        assert!(
            console.contains("botocore user-data marker: True"),
            "{console}"
        );

        // A asking B's endpoint: refused, whichever client asks; B's data
        // never reaches A.
        assert!(console.contains("cross: refused with 403"), "{console}");
        assert!(console.contains("cross-sdk: refused"), "{console}");
        assert!(
            !console.contains("B-ONLY-7f3a"),
            "B's user data leaked into A:\n{console}"
        );
        assert_ne!(a_id, b_id);
    });
}
