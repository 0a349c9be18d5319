//! The process backend end to end, in this process: the EC2 API server
//! (`serve_state`) over a `ProcessBackend` whose instances are run by the
//! real `endstate cloud instance-init`, driven with our own signed EC2
//! client (and, for the actions that client does not speak — stop, start,
//! reboot, CreateImage — through the same backend's `Backend` methods).
//!
//! Two instances boot from `#cloud-config` user data that writes a small
//! web service which asks the metadata service for the instance's own
//! address and serves there; then status checks, a SIGKILL of a top
//! process, stop/start/reboot, an image and an instance of it, a restart
//! of the backend on the same directory, and termination.
//!
//! Needs root (namespaces, as CI runs): instances then run as their own
//! uids, which is how the metadata service tells them apart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use endstate_cloud::process::{Isolation, ProcessBackend, ProcessConfig};
use endstate_cloud::{serve_state, Backend, CloudState, Credentials, RunningCloud};
use endstate_model::MetadataOptions;
use endstate_provider::ec2::{Ec2Client, Ec2Config};
use endstate_provider::{describe_all, Filter, LaunchRequest, Provider as _};
use endstate_wire::{
    CreateImageRequest, DescribeInstanceStatusRequest, RebootInstancesRequest,
    StartInstancesRequest, StopInstancesRequest,
};

const ENDSTATE: &str = env!("CARGO_BIN_EXE_endstate");
const KEY: &str = "AKIDCLOUDPROCESS";
const SECRET: &str = "cloud-process-test-secret";
const PROJECT: &str = "cloud-process-test";
/// Ports of their own, so that other tests' clouds on this host (which
/// hand out the same 127.100.x.y addresses) do not collide with these.
const IMDS_PORT: u16 = 22_169;
const WEB_PORT: u16 = 18_080;

fn user_data() -> Vec<u8> {
    format!(
        r#"#cloud-config
write_files:
  - path: /etc/endstate/services/web.json
    permissions: '0644'
    content: |
      {{"command": ["python3", "/opt/web/serve.py"], "restart": "always"}}
  - path: /opt/web/serve.py
    permissions: '0755'
    content: |
      import http.server, os, urllib.request
      opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
      base = os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"].rstrip("/")
      token = opener.open(urllib.request.Request(base + "/latest/api/token", method="PUT",
          headers={{"X-aws-ec2-metadata-token-ttl-seconds": "300"}}), timeout=5).read().decode()
      def metadata(path):
          request = urllib.request.Request(base + "/latest/meta-data/" + path,
              headers={{"X-aws-ec2-metadata-token": token}})
          return opener.open(request, timeout=5).read().decode()
      address, instance = metadata("local-ipv4"), metadata("instance-id")
      class Hello(http.server.BaseHTTPRequestHandler):
          def do_GET(self):
              body = f"hello from {{instance}} at {{address}}\n".encode()
              self.send_response(200)
              self.send_header("Content-Length", str(len(body)))
              self.end_headers()
              self.wfile.write(body)
          def log_message(self, *args):
              pass
      http.server.ThreadingHTTPServer((address, {WEB_PORT}), Hello).serve_forever()
runcmd:
  - echo "web instance booted"
"#
    )
    .into_bytes()
}

fn config(dir: &Path) -> ProcessConfig {
    let mut config = ProcessConfig::new(dir);
    config.ec2.throttling = None;
    config.init_command = vec![ENDSTATE.into(), "cloud".into(), "instance-init".into()];
    config.extra_binds = vec![(ENDSTATE.into(), "/opt/endstate/bin/endstate".into())];
    config.status_interval = Duration::from_millis(500);
    config.stop_grace = Duration::from_secs(5);
    config.imds_port = IMDS_PORT;
    config
}

/// Kills every instance's top process (and with it its PID namespace)
/// when the test ends, passed or failed.
struct Cleanup(Vec<u32>, Arc<std::sync::Mutex<Vec<u32>>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let pids: Vec<u32> = self.1.lock().map(|p| p.clone()).unwrap_or_default();
        for pid in self.0.iter().chain(pids.iter()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

struct Cloud {
    backend: Arc<ProcessBackend>,
    server: RunningCloud,
    client: Ec2Client,
}

async fn start(dir: &Path) -> Cloud {
    let backend = ProcessBackend::open(config(dir)).unwrap();
    assert_eq!(backend.isolation(), Isolation::Namespaces);
    let state = CloudState::new(backend.clone(), Credentials::new().with(KEY, SECRET));
    let server = serve_state(0, state).await.unwrap();
    let client = Ec2Client::with_static_credentials(
        Ec2Config::new("us-east-1").with_endpoint(server.url()),
        KEY,
        SECRET,
        None,
    )
    .unwrap();
    Cloud {
        backend,
        server,
        client,
    }
}

fn launch(image: &str, count: u32, token: &str, user_data: Vec<u8>) -> LaunchRequest {
    LaunchRequest {
        image_id: image.to_string(),
        instance_type: "t3.micro".to_string(),
        count,
        zone: "us-east-1a".to_string(),
        subnet_id: None,
        security_group_ids: vec![],
        key_name: None,
        iam_instance_profile: None,
        root_volume: None,
        metadata: MetadataOptions::default(),
        user_data: Some(user_data),
        tags: BTreeMap::from([("endstate:project".to_string(), PROJECT.to_string())]),
        client_token: token.to_string(),
    }
}

/// (state, instance status) of `id`.
async fn status(cloud: &Cloud, id: &str) -> (String, String) {
    let response = cloud
        .client
        .describe_instance_status(&DescribeInstanceStatusRequest {
            instance_ids: vec![id.to_string()],
            include_all_instances: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let s = &response.statuses[0];
    (s.state.name.clone(), s.instance_status.clone())
}

/// Waits for `want`, answering every (state, status) seen on the way.
async fn wait_for(
    cloud: &Cloud,
    id: &str,
    want: (&str, &str),
    within: Duration,
) -> Vec<(String, String)> {
    let deadline = Instant::now() + within;
    let mut seen: Vec<(String, String)> = Vec::new();
    loop {
        let now = status(cloud, id).await;
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        if now.0 == want.0 && now.1 == want.1 {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{id}: seen {seen:?}, waiting for {want:?}; events {:?}; console:\n{}",
            cloud.backend.events(id).unwrap(),
            console(cloud, id).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn console(cloud: &Cloud, id: &str) -> String {
    String::from_utf8_lossy(&cloud.client.console_output(id).await.unwrap_or_default()).into_owned()
}

/// `GET /` on `address:WEB_PORT`, raw HTTP/1.0 (no proxy can intervene).
fn http_get(address: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(
        &format!("{address}:{WEB_PORT}").parse().unwrap(),
        Duration::from_secs(2),
    )
    .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(format!("GET / HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split("\r\n\r\n").nth(1).map(str::to_string)
}

/// The HTTP status of `GET path` on an instance's metadata listener.
fn imds_status(address: &str, path: &str) -> u16 {
    let mut stream = TcpStream::connect(format!("{address}:{IMDS_PORT}")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

async fn wait_http(address: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(body) = http_get(address) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "nothing answers on {address}:{WEB_PORT}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Live processes running as `uid`.
fn processes_of(uid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|rest| rest.split_whitespace().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let zombie = field("State:").first().is_some_and(|s| *s == "Z");
        if !zombie && field("Uid:").get(1) == Some(&uid.to_string().as_str()) {
            out.push(pid);
        }
    }
    out
}

async fn instances(cloud: &Cloud) -> Vec<endstate_provider::Instance> {
    let (all, _) = describe_all(&cloud.client, &[Filter::tag("endstate:project", PROJECT)])
        .await
        .unwrap();
    all
}

fn kinds(cloud: &Cloud, id: &str) -> Vec<String> {
    cloud
        .backend
        .events(id)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn process_instances_serve_survive_restarts_and_terminate() {
    let _pass = crate::gate::enter("cloud_process");
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: the process backend isolates instances with namespaces"
    );
    let dir = tempfile::tempdir().unwrap();
    let tops = Arc::new(std::sync::Mutex::new(Vec::new()));
    let _cleanup = Cleanup(vec![], tops.clone());
    let remember = |cloud: &Cloud, id: &str| {
        if let Some(pid) = cloud.backend.top_process(id) {
            tops.lock().unwrap().push(pid);
        }
    };

    let cloud = start(dir.path()).await;
    let base = cloud.backend.base_image_id().to_string();

    // Two instances; each serves on its own address.
    let launched = cloud
        .client
        .run_instances(&launch(&base, 2, "cp-launch-1", user_data()))
        .await
        .unwrap();
    let (a, b) = (launched[0].id.clone(), launched[1].id.clone());
    remember(&cloud, &a);
    remember(&cloud, &b);
    let mut seen = BTreeMap::new();
    for id in [&a, &b] {
        seen.insert(
            id.clone(),
            wait_for(&cloud, id, ("running", "ok"), Duration::from_secs(60)).await,
        );
    }
    // The statuses only ever moved forward: pending, initializing, ok.
    for (id, seen) in &seen {
        let order = |s: &(String, String)| match (s.0.as_str(), s.1.as_str()) {
            ("pending", _) => 0,
            ("running", "initializing") => 1,
            ("running", "ok") => 2,
            other => panic!("{id}: unexpected {other:?} in {seen:?}"),
        };
        let ranks: Vec<u8> = seen.iter().map(order).collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{id}: {seen:?}");
    }
    let described = instances(&cloud).await;
    assert_eq!(described.len(), 2);
    let address = |id: &str| -> String {
        described
            .iter()
            .find(|i| i.id == id)
            .and_then(|i| i.private_ip.clone())
            .unwrap()
    };
    let (addr_a, addr_b) = (address(&a), address(&b));
    assert!(addr_a.starts_with("127.100.") && addr_b.starts_with("127.100."));
    assert_ne!(addr_a, addr_b);
    assert_eq!(
        wait_http(&addr_a, Duration::from_secs(30)).await,
        format!("hello from {a} at {addr_a}\n")
    );
    assert_eq!(
        wait_http(&addr_b, Duration::from_secs(30)).await,
        format!("hello from {b} at {addr_b}\n")
    );
    let boot = console(&cloud, &a).await;
    assert!(boot.contains("Cloud-init v."), "{boot}");
    assert!(boot.contains("web instance booted"), "{boot}");

    // SIGKILL of A's top process: impaired on a later probe, in order.
    let top_a = cloud.backend.top_process(&a).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(top_a as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for(&cloud, &a, ("running", "impaired"), Duration::from_secs(10)).await;
    let events_a = kinds(&cloud, &a);
    let position = |kind: &str| {
        events_a
            .iter()
            .position(|k| k == kind)
            .unwrap_or_else(|| panic!("{kind} in {events_a:?}"))
    };
    assert!(position("spawned") < position("running"));
    assert!(position("running") < position("status:ok"));
    assert!(position("status:ok") < position("status:impaired"));
    let uid_a = cloud.backend.uid(&a).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_of(uid_a).is_empty() {
        assert!(
            Instant::now() < deadline,
            "A's processes outlived its top process"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Stop, start, reboot B.
    let uid_b = cloud.backend.uid(&b).unwrap();
    cloud
        .backend
        .stop_instances(&StopInstancesRequest {
            instance_ids: vec![b.clone()],
            force: None,
        })
        .unwrap();
    wait_for(
        &cloud,
        &b,
        ("stopped", "not-applicable"),
        Duration::from_secs(20),
    )
    .await;
    assert!(
        processes_of(uid_b).is_empty(),
        "stopped, yet {:?} run",
        processes_of(uid_b)
    );
    assert!(http_get(&addr_b).is_none());
    cloud
        .backend
        .start_instances(&StartInstancesRequest {
            instance_ids: vec![b.clone()],
        })
        .unwrap();
    remember(&cloud, &b);
    wait_for(&cloud, &b, ("running", "ok"), Duration::from_secs(60)).await;
    wait_http(&addr_b, Duration::from_secs(30)).await;
    let top_b = cloud.backend.top_process(&b).unwrap();
    cloud
        .backend
        .reboot_instances(&RebootInstancesRequest {
            instance_ids: vec![b.clone()],
        })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while cloud.backend.top_process(&b).is_none_or(|p| p == top_b) {
        assert!(
            Instant::now() < deadline,
            "the reboot did not start B again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    remember(&cloud, &b);
    wait_for(&cloud, &b, ("running", "ok"), Duration::from_secs(60)).await;
    wait_http(&addr_b, Duration::from_secs(30)).await;

    // An image of B; an instance of it (with no user data of its own)
    // has B's files, so its supervisor starts the same service.
    let image = cloud
        .backend
        .create_image(&CreateImageRequest {
            instance_id: b.clone(),
            name: "web-from-b".to_string(),
            ..Default::default()
        })
        .unwrap()
        .image_id;
    let images = cloud
        .client
        .describe_images(std::slice::from_ref(&image))
        .await
        .unwrap();
    assert_eq!(images.len(), 1);
    // Its user data asks its own metadata endpoint, then B's.
    let probe = format!(
        r#"#!/bin/sh
python3 - <<'EOF'
import os, urllib.request, urllib.error
opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
own = os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"]
for name, base in [("own", own), ("other", "http://{addr_b}:{IMDS_PORT}/")]:
    try:
        token = opener.open(urllib.request.Request(base + "latest/api/token", method="PUT",
            headers={{"X-aws-ec2-metadata-token-ttl-seconds": "60"}}), timeout=5).read().decode()
        answer = opener.open(urllib.request.Request(base + "latest/meta-data/instance-id",
            headers={{"X-aws-ec2-metadata-token": token}}), timeout=5)
        print("imds", name, answer.status, answer.read().decode())
    except urllib.error.HTTPError as e:
        print("imds", name, e.code)
EOF
"#
    );
    let c = cloud
        .client
        .run_instances(&launch(&image, 1, "cp-launch-2", probe.into_bytes()))
        .await
        .unwrap()[0]
        .id
        .clone();
    remember(&cloud, &c);
    wait_for(&cloud, &c, ("running", "ok"), Duration::from_secs(60)).await;
    let addr_c = cloud.backend.address(&c).unwrap().to_string();
    let boot_c = console(&cloud, &c).await;
    assert!(boot_c.contains(&format!("imds own 200 {c}")), "{boot_c}");
    let other = boot_c
        .lines()
        .find(|l| l.starts_with("imds other"))
        .unwrap_or_else(|| panic!("{boot_c}"));
    eprintln!("{other}");
    assert!(!other.contains("200"), "C read B's metadata: {other}");
    // The host (no instance's uid) is refused too.
    assert!(
        imds_status(&addr_a, "/latest/meta-data/instance-id") >= 400,
        "the host read A's metadata"
    );
    assert_eq!(
        wait_http(&addr_c, Duration::from_secs(30)).await,
        format!("hello from {c} at {addr_c}\n")
    );

    // Restart: the server and backend go, a new one opens the directory.
    let before: BTreeSet<(String, String)> = instances(&cloud)
        .await
        .into_iter()
        .map(|i| (i.id, format!("{:?}", i.state)))
        .collect();
    let (top_b, top_c) = (cloud.backend.top_process(&b), cloud.backend.top_process(&c));
    cloud.server.shutdown().await.unwrap();
    drop(cloud.client);
    drop(cloud.backend);
    let cloud = start(dir.path()).await;
    let after_list = instances(&cloud).await;
    let after: BTreeSet<(String, String)> = after_list
        .iter()
        .map(|i| (i.id.clone(), format!("{:?}", i.state)))
        .collect();
    assert_eq!(after_list.len(), 3, "none doubled");
    assert_eq!(before, after, "none forgotten");
    assert_eq!(cloud.backend.top_process(&b), top_b, "B re-adopted");
    assert_eq!(cloud.backend.top_process(&c), top_c, "C re-adopted");
    assert!(kinds(&cloud, &b).contains(&"adopted".to_string()));
    assert!(kinds(&cloud, &a).contains(&"lost".to_string()));
    assert_eq!(
        status(&cloud, &a).await,
        ("running".to_string(), "impaired".to_string())
    );
    wait_for(&cloud, &b, ("running", "ok"), Duration::from_secs(10)).await;
    assert_eq!(
        wait_http(&addr_b, Duration::from_secs(10)).await,
        format!("hello from {b} at {addr_b}\n")
    );
    // The same token after the restart: the same instances.
    let retried = cloud
        .client
        .run_instances(&launch(&base, 2, "cp-launch-1", user_data()))
        .await
        .unwrap();
    assert_eq!(
        retried.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        [a.clone(), b.clone()]
    );

    for id in [&a, &b, &c] {
        eprintln!("{id} events:");
        for e in cloud.backend.events(id).unwrap() {
            eprintln!("  {} {} {}", e.at, e.kind, e.detail);
        }
    }

    // Terminate: nothing of theirs runs, their directories are gone, and
    // a new instance gets a released address.
    let uids: Vec<u32> = [&a, &b, &c]
        .iter()
        .map(|id| cloud.backend.uid(id).unwrap())
        .collect();
    cloud
        .client
        .terminate_instances(&[a.clone(), b.clone(), c.clone()])
        .await
        .unwrap();
    for id in [&a, &b, &c] {
        wait_for(
            &cloud,
            id,
            ("terminated", "not-applicable"),
            Duration::from_secs(20),
        )
        .await;
        assert!(
            !cloud.backend.instance_dir(id).exists(),
            "{id}'s directory is left"
        );
    }
    for uid in uids {
        assert!(
            processes_of(uid).is_empty(),
            "uid {uid} still runs {:?}",
            processes_of(uid)
        );
    }
    let d = cloud
        .client
        .run_instances(&launch(
            &base,
            1,
            "cp-launch-3",
            b"#!/bin/sh\ntrue\n".to_vec(),
        ))
        .await
        .unwrap()[0]
        .clone();
    remember(&cloud, &d.id);
    assert!(
        [&addr_a, &addr_b, &addr_c].contains(&&d.private_ip.clone().unwrap()),
        "{:?} is not a released address",
        d.private_ip
    );
    wait_for(&cloud, &d.id, ("running", "ok"), Duration::from_secs(60)).await;
    cloud
        .client
        .terminate_instances(std::slice::from_ref(&d.id))
        .await
        .unwrap();
    wait_for(
        &cloud,
        &d.id,
        ("terminated", "not-applicable"),
        Duration::from_secs(20),
    )
    .await;
    cloud.server.shutdown().await.unwrap();
}
