//! `endstate serve` on the built-in cloud's process backend, through the
//! real binary, its real HTTP API and instances that really run (as root:
//! each in its own namespaces, as CI runs):
//!
//! - self-healing: a SIGKILLed service is detected after exactly the
//!   unhealthy threshold of failed probes, replaced in the same reconcile,
//!   and the group is back to 5 healthy — read from the event stream;
//! - the brake: 3 of 5 services killed at once pause replacement with a
//!   `replacement_paused` event; resume heals them;
//! - target tracking on the instances' real CPU (a busy loop inside one
//!   instance): scale out, then in once the load stops, never outside
//!   min/max;
//! - restart safety: the controller SIGKILLed in the middle of a scale-out
//!   (at the executor's crash points, after RunInstances went out and after
//!   it returned) and started again: no duplicate instance, the scale-out
//!   completes;
//! - one writer: `endstate apply` against a project the controller owns
//!   hands the spec over and follows it; the API refuses requests without
//!   a valid token.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::controller::{all_events, of_kind, wait_for, web, Project, ONE_CLOUD_AT_A_TIME};
use endstate_controller::client::Client;
use endstate_controller::view::EventView;
use serde_json::Value;

/// A spec of one group on the built-in cloud, one zone: a web server on
/// 8080 that answers `/` and, on `/burn?seconds=N`, spins a core for N
/// seconds. The supervised service is a shell that outlives the server: a
/// killed server stays dead, the instance stays `ok` by EC2's status check,
/// and only the group's health check can tell — the case health checks are
/// for (an application dead or hung on a healthy instance).
fn spec(project: &str, min: u32, desired: u32, max: u32, extra: &str) -> String {
    format!(
        r#"project: {project}
provider:
  local: {{}}
groups:
  web:
    image: ami-0e5c0f5d3b1e2a4f6
    instance_type: t3.micro
    capacity: {{ min: {min}, desired: {desired}, max: {max} }}
    zones: [us-east-1a]
    health_check:
      http: {{ port: 8080, path: / }}
      interval: 2
      timeout: 1
      healthy_threshold: 2
      unhealthy_threshold: 3
      grace_period: 20
{extra}
    user_data:
      cloud_config:
        write_files:
          - path: /etc/endstate/services/web.json
            permissions: '0644'
            content: |
              {{"command": ["sh", "-c", "python3 /opt/web/serve.py; exec sleep 1000000"], "restart": "never"}}
          - path: /opt/web/serve.py
            permissions: '0755'
            content: |
              import http.server, os, threading, time, urllib.parse, urllib.request

              base = os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"].rstrip("/")
              token = urllib.request.urlopen(urllib.request.Request(
                  base + "/latest/api/token", method="PUT",
                  headers={{"X-aws-ec2-metadata-token-ttl-seconds": "300"}}), timeout=5).read().decode()
              address = urllib.request.urlopen(urllib.request.Request(
                  base + "/latest/meta-data/local-ipv4",
                  headers={{"X-aws-ec2-metadata-token": token}}), timeout=5).read().decode()

              def burn(seconds):
                  end = time.time() + seconds
                  while time.time() < end:
                      pass

              class Web(http.server.BaseHTTPRequestHandler):
                  def do_GET(self):
                      url = urllib.parse.urlparse(self.path)
                      if url.path == "/burn":
                          seconds = float(urllib.parse.parse_qs(url.query)["seconds"][0])
                          threading.Thread(target=burn, args=(seconds,), daemon=True).start()
                      body = b"ok\n"
                      self.send_response(200)
                      self.send_header("Content-Length", str(len(body)))
                      self.end_headers()
                      self.wfile.write(body)

                  def log_message(self, *args):
                      pass

              http.server.ThreadingHTTPServer((address, 8080), Web).serve_forever()
"#
    )
}

/// The host PID of the process listening on `address:port` (instances
/// share the host's network namespace, each on its own address).
fn listener_pid(address: &str, port: u16) -> Option<i32> {
    let octets: Vec<u8> = address.split('.').map(|o| o.parse().unwrap()).collect();
    // /proc/net/tcp writes IPv4 addresses as a little-endian u32 in hex.
    let wanted = format!(
        "{:02X}{:02X}{:02X}{:02X}:{port:04X}",
        octets[3], octets[2], octets[1], octets[0]
    );
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let inode = table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // State 0A is LISTEN.
        (fields.get(1) == Some(&wanted.as_str()) && fields.get(3) == Some(&"0A"))
            .then(|| fields[9].to_string())
    })?;
    let socket = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == socket) {
                return Some(pid);
            }
        }
    }
    None
}

/// SIGKILLs the web service of each instance (by its address).
async fn kill_services(client: &Client, ids: &[String]) {
    let instances = client.instances(Some("web")).await.unwrap();
    for id in ids {
        let address = instances
            .iter()
            .find(|i| &i.id == id)
            .and_then(|i| i.private_ip.clone())
            .unwrap();
        let pid = listener_pid(&address, 8080).expect("the web service listens");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_service_is_replaced_and_correlated_failures_pause_replacement() {
    let _alone = ONE_CLOUD_AT_A_TIME.lock().await;
    let mut project = Project::new();
    // The brake's window is short, so that the first (single) failure has
    // left it when the three fail together.
    let brake = "    replacement_brake:\n      window: 10";
    project.write_spec(&spec("heal", 2, 5, 10, brake));
    let client = project.start(None).await;
    let all_healthy = async |client: &Client| {
        web(client)
            .await
            .filter(|g| g.healthy == 5 && g.live == 5 && g.unhealthy == 0)
    };
    wait_for(
        "5 healthy",
        Duration::from_secs(180),
        &project,
        async || all_healthy(&client).await,
    )
    .await;

    // One service dies.
    let before = all_events(&client, 0).await.last().unwrap().seq;
    let first: Vec<String> = client
        .instances(Some("web"))
        .await
        .unwrap()
        .iter()
        .map(|i| i.id.clone())
        .collect();
    let victim = first[0].clone();
    kill_services(&client, std::slice::from_ref(&victim)).await;
    let killed_at = Instant::now();
    wait_for(
        "the victim replaced and 5 healthy",
        Duration::from_secs(120),
        &project,
        async || {
            let instances = client.instances(Some("web")).await.ok()?;
            let gone = !instances
                .iter()
                .any(|i| i.id == victim && (i.state == "running" || i.state == "pending"));
            (gone && all_healthy(&client).await.is_some()).then_some(())
        },
    )
    .await;
    let events = all_events(&client, before).await;
    let about_victim: Vec<&EventView> = events.iter().filter(|e| e.subject == victim).collect();
    let kinds: Vec<&str> = about_victim.iter().map(|e| e.kind.as_str()).collect();
    // Exactly the unhealthy threshold (3) of failed probes, then unhealthy.
    assert_eq!(
        &kinds[..4],
        [
            "probe_failed",
            "probe_failed",
            "probe_failed",
            "instance_unhealthy"
        ],
        "{about_victim:#?}"
    );
    assert!(
        about_victim[3]
            .reason
            .contains("3 consecutive failed probes"),
        "{:?}",
        about_victim[3]
    );
    let started = of_kind(&events, "reconcile_started")
        .into_iter()
        .find(|e| {
            e.data["unhealthy"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == victim.as_str())
        })
        .expect("a reconcile acted on the unhealthy instance");
    let reconcile = started.data["reconcile"].as_u64().unwrap();
    assert!(started.seq > about_victim[3].seq);
    let replacement = of_kind(&events, "replacement_launched")
        .into_iter()
        .find(|e| e.data["reconcile"] == reconcile)
        .expect("the replacement launched in the same reconcile");
    assert!(replacement.data["replaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == victim.as_str()));
    let new_id = replacement.data["ids"][0].as_str().unwrap().to_string();
    let terminated = of_kind(&events, "terminated")
        .into_iter()
        .find(|e| e.subject == victim)
        .expect("the victim terminated");
    assert_eq!(terminated.data["reconcile"], reconcile);
    assert!(terminated.reason.starts_with("unhealthy"), "{terminated:?}");
    assert!(
        terminated.seq > replacement.seq,
        "launch first, then terminate"
    );
    assert!(
        events
            .iter()
            .any(|e| e.kind == "instance_healthy" && e.subject == new_id),
        "the replacement turned healthy: {events:#?}"
    );
    // One replacement only.
    assert_eq!(
        of_kind(&events, "replacement_launched").len(),
        1,
        "{events:#?}"
    );

    // Three at once: the brake (after the first failure left its window).
    // (Detected within 4 probe intervals of the kill, 8 s; window 10 s.)
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(killed_at.elapsed())).await;
    let before = all_events(&client, 0).await.last().unwrap().seq;
    let current: Vec<String> = client
        .instances(Some("web"))
        .await
        .unwrap()
        .iter()
        .filter(|i| i.state == "running")
        .map(|i| i.id.clone())
        .collect();
    // Of the first five (the replacement is still in its grace period).
    let victims: Vec<String> = current
        .iter()
        .filter(|id| first.contains(id))
        .take(3)
        .cloned()
        .collect();
    assert_eq!(victims.len(), 3);
    kill_services(&client, &victims).await;
    let paused = wait_for(
        "replacement_paused",
        Duration::from_secs(60),
        &project,
        async || {
            all_events(&client, before)
                .await
                .into_iter()
                .find(|e| e.kind == "replacement_paused")
        },
    )
    .await;
    assert!(
        paused
            .reason
            .contains("of 5 instances turned unhealthy within 10 s"),
        "{paused:?}"
    );
    // Held: three probe intervals later, nothing was replaced.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let group = web(&client).await.unwrap();
    assert_eq!(group.unhealthy, 3, "{group:?}");
    assert!(group.replacement_paused.is_some());
    let events = all_events(&client, before).await;
    assert!(
        of_kind(&events, "replacement_launched").is_empty(),
        "{events:#?}"
    );
    assert!(of_kind(&events, "terminated").is_empty(), "{events:#?}");

    // Told to resume: healed, within the budget (one at a time: max surge 1).
    let resumed_at = all_events(&client, 0).await.last().unwrap().seq;
    client.resume("web").await.unwrap();
    wait_for(
        "healed after resume",
        Duration::from_secs(180),
        &project,
        async || {
            let instances = client.instances(Some("web")).await.ok()?;
            let left = instances
                .iter()
                .any(|i| victims.contains(&i.id) && (i.state == "running" || i.state == "pending"));
            (!left && all_healthy(&client).await.is_some()).then_some(())
        },
    )
    .await;
    let events = all_events(&client, resumed_at).await;
    assert!(
        events.iter().any(|e| e.kind == "replacement_resumed"),
        "{events:#?}"
    );
    let replaced: BTreeSet<&str> = of_kind(&events, "terminated")
        .iter()
        .map(|e| e.subject.as_str())
        .collect();
    assert_eq!(
        replaced,
        victims.iter().map(String::as_str).collect(),
        "{events:#?}"
    );
    for launch in of_kind(&events, "replacement_launched") {
        assert_eq!(
            launch.data["ids"].as_array().unwrap().len(),
            1,
            "one at a time: {launch:?}"
        );
    }
    project.stop();
    assert_eq!(
        project.live_in_cloud().len(),
        5,
        "instances outlive the controller"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cpu_load_scales_the_group_out_and_back_in_within_min_and_max() {
    let _alone = ONE_CLOUD_AT_A_TIME.lock().await;
    let mut project = Project::new();
    let scaling = r#"    scaling:
      target_tracking:
        - metric: cpu
          target: 50
          scale_out_cooldown: 5
          scale_in_cooldown: 5
          instance_warmup: 10"#;
    project.write_spec(&spec("scale", 1, 1, 3, scaling));
    let client = project.start(None).await;
    let instance = wait_for(
        "1 healthy",
        Duration::from_secs(180),
        &project,
        async || {
            web(&client).await.filter(|g| g.healthy == 1)?;
            client.instances(Some("web")).await.ok()?.into_iter().next()
        },
    )
    .await;
    // A busy loop inside the instance: one core, 100% of the metric.
    let address = instance.private_ip.clone().unwrap();
    let burn = format!("http://{address}:8080/burn?seconds=25");
    reqwest::get(&burn)
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let out = wait_for(
        "a scale-out",
        Duration::from_secs(60),
        &project,
        async || {
            all_events(&client, 0)
                .await
                .into_iter()
                .find(|e| e.kind == "scaled")
        },
    )
    .await;
    assert_eq!(out.data["policy"], "target_tracking:cpu", "{out:?}");
    assert_eq!(out.data["from"], 1);
    assert!(out.data["to"].as_u64().unwrap() >= 2, "{out:?}");
    wait_for(
        "2 or more live",
        Duration::from_secs(120),
        &project,
        async || web(&client).await.filter(|g| g.live >= 2),
    )
    .await;
    // The load stops (the burn ends): back to 1.
    wait_for(
        "scaled back in to 1",
        Duration::from_secs(180),
        &project,
        async || web(&client).await.filter(|g| g.desired == 1 && g.live == 1),
    )
    .await;
    let events = all_events(&client, 0).await;
    // The controller's own scale-in is no failure: the brake stays released.
    assert!(
        of_kind(&events, "replacement_paused").is_empty(),
        "{events:#?}"
    );
    assert!(
        of_kind(&events, "instance_unhealthy").is_empty(),
        "{events:#?}"
    );
    let activity = client.scaling(Some("web")).await.unwrap();
    assert!(activity.len() >= 2, "{activity:#?}");
    for a in &activity {
        assert!((1..=3).contains(&a.to), "outside min/max: {a:?}");
    }
    let events = all_events(&client, 0).await;
    let scaled = of_kind(&events, "scaled");
    let last = scaled.last().unwrap();
    assert!(
        last.data["to"].as_u64().unwrap() < last.data["from"].as_u64().unwrap(),
        "{scaled:#?}"
    );
    // The scale-in cooldown: no scale-in within 5 s of the activity before.
    let at = |e: &EventView| {
        time::OffsetDateTime::parse(&e.at, &time::format_description::well_known::Rfc3339).unwrap()
    };
    for pair in scaled.windows(2) {
        let scale_in = pair[1].data["to"].as_u64() < pair[1].data["from"].as_u64();
        if scale_in {
            assert!(
                at(pair[1]) - at(pair[0]) >= time::Duration::seconds(5),
                "{scaled:#?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_during_a_scale_out_restarts_without_duplicates() {
    let _alone = ONE_CLOUD_AT_A_TIME.lock().await;
    let mut project = Project::new();
    project.write_spec(&spec("restart", 1, 2, 10, ""));
    let client = project.start(None).await;
    wait_for("2 live", Duration::from_secs(180), &project, async || {
        web(&client).await.filter(|g| g.live == 2 && g.healthy == 2)
    })
    .await;
    project.stop();
    // Killed after the scale-out's RunInstances went out, before its answer
    // was recorded; then after the answer, before the instances ran.
    for (desired, point) in [(5u32, "intent-sent"), (8, "launch-returned")] {
        project.write_spec(&spec("restart", 1, desired, 10, ""));
        let _client = project.start(Some(point)).await;
        let status = project.wait_exit(Duration::from_secs(120));
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "the controller died at {point}: {status}\n{}",
            project.log()
        );
        let client = project.start(None).await;
        wait_for(
            &format!("{desired} live and healthy"),
            Duration::from_secs(180),
            &project,
            async || {
                web(&client)
                    .await
                    .filter(|g| g.live == desired && g.healthy == desired)
            },
        )
        .await;
        project.stop();
        let live = project.live_in_cloud();
        assert_eq!(
            live.len(),
            desired as usize,
            "after a crash at {point}: {live:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_hands_the_spec_to_the_controller_and_the_api_wants_a_token() {
    let _alone = ONE_CLOUD_AT_A_TIME.lock().await;
    let mut project = Project::new();
    project.write_spec(&spec("handover", 1, 1, 4, ""));
    let client = project.start(None).await;
    wait_for("1 live", Duration::from_secs(180), &project, async || {
        web(&client).await.filter(|g| g.live == 1)
    })
    .await;

    // Without a token, with a wrong one: 401, and nothing changes.
    let url = std::fs::read_to_string(project.state_dir().join("serve.json")).unwrap();
    let url = serde_json::from_str::<Value>(&url).unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let http = reqwest::Client::new();
    for auth in [None, Some("Bearer es_0000"), Some("Basic abc")] {
        let mut request = http
            .post(format!("{url}/v1/groups/web/pause"))
            .header("Content-Type", "application/json")
            .body("{}");
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
    }
    assert!(!web(&client).await.unwrap().paused);

    // A second writer: `apply` hands the changed spec over and follows it.
    project.write_spec(&spec("handover", 1, 3, 4, ""));
    let started = Instant::now();
    let out = project.ok(&["apply"]);
    assert!(out.contains("handed it spec"), "{out}");
    assert!(out.contains("Converged"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(180));
    let group = web(&client).await.unwrap();
    assert_eq!((group.desired, group.live), (3, 3), "{group:?}");
    // And a second controller is refused while this one runs.
    let second = project
        .command(&["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("one writer at a time"), "{stderr}");
    project.stop();
    assert_eq!(project.live_in_cloud().len(), 3);
}
