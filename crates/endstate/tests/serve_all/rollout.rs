//! Rollouts behind a load balancer, end to end: the real `endstate serve`
//! on the built-in cloud's process backend (as root: instances really run,
//! each a python HTTP/1.1 keep-alive server whose body names its version),
//! the cloud's own load balancer, and a bounded load generator
//! (`endstate_testkit::load`) on its listener the whole time:
//!
//! - blue-green v1 → v2 under load: at least 20,000 requests, none failed;
//!   every request that started after the test received `traffic_switched`
//!   (server-sent events) was answered by v2 (the response's
//!   `x-endstate-generation`); the old generation scaled down;
//! - a v3 whose health check fails rolls back by itself, no request fails,
//!   v1 keeps serving and the group stays pinned (no retry loop);
//! - a v4 that is healthy but answers 5xx to 10% of requests is rolled back
//!   by the error-rate check: the only failed requests are v4's own 5xx;
//! - rolling (max surge 1, max unavailable 1, desired 5): from the EC2 and
//!   ELBv2 requests recorded by a `FaultProxy` in front of the cloud and the
//!   event log, live ≤ desired + 1 and in service ≥ desired − 1 at every
//!   moment (`BudgetLimits` of the equivalent `DisruptionBudget`);
//! - `endstate deploy web --image …` and `endstate rollback web`: progress
//!   lines and exit codes.
//!
//! Every wait has a deadline; every load has a request count and a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

use crate::common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::controller::{all_events, of_kind, wait_for, web, Project, ONE_CLOUD_AT_A_TIME};
use endstate_controller::client::Client;
use endstate_controller::view::{EventView, GroupView};
use endstate_testkit::load::{LoadConfig, LoadGenerator, LoadReport, Outcome};
use endstate_testkit::proxy::{FaultProxy, RecordedRequest};
use serde_json::Value;

/// The instances' traffic port, and the listener's: ports of their own, so
/// that other tests' clouds on this host (which hand out the same
/// 127.100.x.y addresses) do not collide with these.
const WEB_PORT: u16 = 18_700;
const LB_PORT: u16 = 18_780;
/// The process backend's starter image.
const BASE_IMAGE: &str = "ami-0e5c0f5d3b1e2a4f6";
/// `endstate serve`'s arguments beside the common ones: no client-side
/// rate limits (the cloud is local).
const FAST: &[&str] = &["--rate-limits", "off"];
/// The longest a `deploy` or `rollback` of the tests may take.
const CLI_LIMIT: Duration = Duration::from_secs(150);

// ----- the spec ------------------------------------------------------------

/// What an instance's web server does; its user data (so its generation)
/// is this and nothing else.
#[derive(Debug, Clone, Copy)]
struct Version {
    /// The body of every answer: `v1`, `v2`, …
    name: &'static str,
    /// The status of `GET /healthz` (the health check's path).
    healthz: u16,
    /// Every n-th `GET /` answers 500 (0: none).
    error_every: u32,
}

const V1: Version = Version {
    name: "v1",
    healthz: 200,
    error_every: 0,
};
const V2: Version = Version {
    name: "v2",
    healthz: 200,
    error_every: 0,
};
/// Fails its health check; `/` answers 200 all the same.
const V3: Version = Version {
    name: "v3",
    healthz: 500,
    error_every: 0,
};
/// Healthy, but 10% of `/` answer 500.
const V4: Version = Version {
    name: "v4",
    healthz: 200,
    error_every: 10,
};

const BLUE_GREEN: &str = "      strategy: blue_green
      canary: [20]
      canary_pause: 3
      keep_old_for: 5
      watch: 5
      healthy_timeout: 60";

const ROLLING: &str = "      strategy: rolling
      max_surge: 1
      max_unavailable: 1
      healthy_timeout: 60
      watch: 3";

/// A project of one group `web` of `desired` behind load balancer
/// `web-lb`, with `rollout` (the lines under `rollout:`), on `provider`
/// (the lines under `provider:`).
fn spec(project: &str, provider: &str, desired: u32, rollout: &str, version: Version) -> String {
    let Version {
        name,
        healthz,
        error_every,
    } = version;
    format!(
        r#"project: {project}
provider:
{provider}
load_balancers:
  web-lb: {{ port: {LB_PORT}, deregistration_delay: 5 }}
groups:
  web:
    image: {BASE_IMAGE}
    instance_type: t3.micro
    capacity: {{ min: 1, desired: {desired}, max: 12 }}
    zones: [us-east-1a]
    load_balancer: {{ name: web-lb, port: {WEB_PORT} }}
    health_check:
      http: {{ port: {WEB_PORT}, path: /healthz }}
      interval: 2
      timeout: 1
      healthy_threshold: 2
      unhealthy_threshold: 2
      grace_period: 10
    rollout:
{rollout}
    user_data:
      cloud_config:
        write_files:
          - path: /etc/endstate/services/web.json
            permissions: '0644'
            content: |
              {{"command": ["python3", "/opt/web/serve.py"], "restart": "always"}}
          - path: /opt/web/serve.py
            permissions: '0755'
            content: |
              import http.server, os, threading, urllib.request

              VERSION, HEALTHZ, ERROR_EVERY = "{name}", {healthz}, {error_every}
              opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
              base = os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"].rstrip("/")
              token = opener.open(urllib.request.Request(
                  base + "/latest/api/token", method="PUT",
                  headers={{"X-aws-ec2-metadata-token-ttl-seconds": "300"}}), timeout=5).read().decode()
              address = opener.open(urllib.request.Request(
                  base + "/latest/meta-data/local-ipv4",
                  headers={{"X-aws-ec2-metadata-token": token}}), timeout=5).read().decode()
              lock, served = threading.Lock(), [0]

              class Web(http.server.BaseHTTPRequestHandler):
                  protocol_version = "HTTP/1.1"

                  def do_GET(self):
                      status = 200
                      if self.path.startswith("/healthz"):
                          status = HEALTHZ
                      elif ERROR_EVERY:
                          with lock:
                              served[0] += 1
                              if served[0] % ERROR_EVERY == 0:
                                  status = 500
                      body = (VERSION + "\n").encode()
                      self.send_response(status)
                      self.send_header("Content-Length", str(len(body)))
                      self.end_headers()
                      self.wfile.write(body)

                  def log_message(self, *args):
                      pass

              class Server(http.server.ThreadingHTTPServer):
                  daemon_threads = True
                  request_queue_size = 512

              Server((address, {WEB_PORT}), Web).serve_forever()
"#
    )
}

const LOCAL: &str = "  local: {}";

// ----- waiting, events ----------------------------------------------------

async fn all_healthy(client: &Client, desired: u32) -> Option<GroupView> {
    web(client)
        .await
        .filter(|g| g.healthy == desired && g.live == desired && g.unhealthy == 0)
}

async fn last_seq(client: &Client) -> i64 {
    all_events(client, 0).await.last().map_or(0, |e| e.seq)
}

/// The controller's events as this test receives them over server-sent
/// events, each with the instant it arrived here: "after the test received
/// `traffic_switched`" is measured on this process's clock, the load
/// generator's.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(Instant, EventView)>>>);

impl Received {
    /// Follows `GET /v1/events/stream?group=web` from `after` in a task.
    fn follow(url: &str, token: &str, after: i64) -> Self {
        let received = Received::default();
        let into = received.clone();
        let request = reqwest::Client::new()
            .get(format!("{url}/v1/events/stream?group=web"))
            .bearer_auth(token)
            .header("Accept", "text/event-stream")
            .header("Last-Event-ID", after.to_string());
        tokio::spawn(async move {
            let mut response = request.send().await.unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            let mut text = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                let at = Instant::now();
                text.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = text.find("\n\n") {
                    let message: String = text.drain(..end + 2).collect();
                    let data: Vec<&str> = message
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim_start)
                        .collect();
                    if let Ok(event) = serde_json::from_str::<EventView>(&data.join("\n")) {
                        into.0.lock().unwrap().push((at, event));
                    }
                }
            }
        });
        received
    }

    fn first(&self, kind: &str) -> Option<(Instant, EventView)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(_, e)| e.kind == kind)
            .cloned()
    }

    fn kinds(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.kind.clone())
            .collect()
    }
}

async fn controller_url(project: &Project) -> (String, String) {
    let info: Value =
        serde_json::from_slice(&std::fs::read(project.state_dir().join("serve.json")).unwrap())
            .unwrap();
    let token = std::fs::read_to_string(project.state_dir().join("api-token")).unwrap();
    (
        info["url"].as_str().unwrap().to_string(),
        token.trim().to_string(),
    )
}

/// Waits until the listener answers `version`'s body.
async fn wait_serving(project: &Project, url: &str, version: Version) {
    let http = reqwest::Client::new();
    let want = format!("{}\n", version.name);
    wait_for(
        &format!("the load balancer serves {}", version.name),
        Duration::from_secs(60),
        project,
        async || {
            let response = http.get(url).send().await.ok()?;
            let ok = response.status().is_success();
            (ok && response.text().await.ok()? == want).then_some(())
        },
    )
    .await;
}

/// A load on `url` of 8 clients: at most `max` requests, at most
/// `seconds`.
fn load(url: &str, max: u64, seconds: u64) -> LoadGenerator {
    LoadGenerator::start(LoadConfig::new(url, 8, max, Duration::from_secs(seconds))).unwrap()
}

/// The generation header of responses whose body is `version`'s, checked
/// to be one.
fn generation_of(report: &LoadReport, version: Version) -> Option<String> {
    let want = format!("{}\n", version.name);
    let generations: BTreeSet<&str> = report
        .records
        .iter()
        .filter(|r| r.body == want)
        .filter_map(|r| r.generation.as_deref())
        .collect();
    assert!(
        generations.len() <= 1,
        "{} answered under several generations: {generations:?}",
        version.name
    );
    generations.first().map(|g| g.to_string())
}

/// The load's summary, its first failures and the events received, each
/// at its time from the load's start: what a failed assertion shows.
fn failures_report(report: &LoadReport, received: &Received) -> String {
    let at = |instant: Instant| {
        if instant >= report.started {
            format!("+{:.3}s", (instant - report.started).as_secs_f64())
        } else {
            format!("-{:.3}s", (report.started - instant).as_secs_f64())
        }
    };
    let failures: Vec<String> = report
        .failures()
        .take(20)
        .map(|r| {
            format!(
                "{} {:?} gen={:?} target={:?} body={:?}",
                at(r.started),
                r.outcome,
                r.generation,
                r.target,
                r.body
            )
        })
        .collect();
    let events: Vec<String> = received
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, e)| e.kind != "probe_failed")
        .map(|(instant, e)| format!("{} {} {}: {}", at(*instant), e.kind, e.subject, e.reason))
        .collect();
    format!(
        "{:?}\nfirst failures:\n{}\nevents:\n{}",
        report.summary(),
        failures.join("\n"),
        events.join("\n")
    )
}

/// Sets the group up at v1, healthy behind its load balancer; returns the
/// client and the listener's URL.
async fn v1_behind_the_load_balancer(
    project: &mut Project,
    name: &str,
    rollout: &str,
) -> (Client, String) {
    project.write_spec(&spec(name, LOCAL, 5, rollout, V1));
    let client = project.start_with(FAST, &[]).await;
    wait_for("5 healthy", Duration::from_secs(180), project, async || {
        all_healthy(&client, 5).await
    })
    .await;
    let url = project.load_balancer_url("web-lb", LB_PORT);
    wait_serving(project, &url, V1).await;
    (client, url)
}

// ----- a: blue-green v1 → v2 under load -------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_under_load_fails_no_request_and_switches_at_once() {
    let _alone = ONE_CLOUD_AT_A_TIME.lock().await;
    let mut project = Project::new();
    let (client, url) = v1_behind_the_load_balancer(&mut project, "bluegreen", BLUE_GREEN).await;
    let (api, token) = controller_url(&project).await;
    let received = Received::follow(&api, &token, last_seq(&client).await);

    let load = load(&url, 60_000, 240);
    // Some v1 traffic before the change.
    tokio::time::sleep(Duration::from_secs(2)).await;
    project.write_spec(&spec("bluegreen", LOCAL, 5, BLUE_GREEN, V2));
    wait_for(
        "rollout_completed",
        Duration::from_secs(180),
        &project,
        async || {
            if let Some((_, failed)) = received.first("rollout_failed") {
                panic!("the rollout failed: {failed:?}\n{}", project.log_tail(200));
            }
            received.first("rollout_completed")
        },
    )
    .await;
    // At least 20,000 requests in all: the load goes on until then.
    wait_for(
        "20,000 requests",
        Duration::from_secs(120),
        &project,
        async || (load.completed() >= 20_000).then_some(()),
    )
    .await;
    let report = load.stop_and_finish().await;
    let summary = report.summary();
    assert!(summary.total >= 20_000, "{summary:?}");
    assert_eq!(summary.failed, 0, "{}", failures_report(&report, &received));

    let g1 = generation_of(&report, V1).expect("v1 answered before the switch");
    let g2 = generation_of(&report, V2).expect("v2 answered after the switch");
    assert_ne!(g1, g2);
    let (switched_at, switched) = received
        .first("traffic_switched")
        .unwrap_or_else(|| panic!("no traffic_switched: {:?}", received.kinds()));
    let after = report.generations_after(switched_at);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        vec![&g2],
        "requests started after traffic_switched ({switched:?}) by generation: {after:?}"
    );
    assert!(after[&g2] > 0);
    // The canary: v2 served some requests before the switch, at 20%.
    let shifted = received.first("traffic_shifted");
    assert!(
        shifted.is_some(),
        "a canary step of 20%: {:?}",
        received.kinds()
    );

    // The old generation scaled down (after keep_old_for).
    wait_for(
        "only v2 live",
        Duration::from_secs(60),
        &project,
        async || {
            let live = project.live_generations();
            (live.len() == 1 && live.get(&g2) == Some(&5)).then_some(())
        },
    )
    .await;
    println!(
        "blue-green: {} requests, {:.0}/s, by generation {:?}",
        summary.total, summary.requests_per_second, summary.by_generation
    );
}

// ----- b: a v3 failing its health check rolls back by itself ----------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_new_generation_rolls_back_by_itself_without_failed_requests() {
    let _alone = ONE_CLOUD_AT_A_TIME.lock().await;
    let mut project = Project::new();
    // Short timeout: the unhealthy v3 fails within it, or by it.
    let rollout = BLUE_GREEN.replace("healthy_timeout: 60", "healthy_timeout: 30");
    let (client, url) = v1_behind_the_load_balancer(&mut project, "unhealthy", &rollout).await;
    let (api, token) = controller_url(&project).await;
    let before = last_seq(&client).await;
    let received = Received::follow(&api, &token, before);

    let load = load(&url, 200_000, 150);
    tokio::time::sleep(Duration::from_secs(1)).await;
    project.write_spec(&spec("unhealthy", LOCAL, 5, &rollout, V3));
    let (_, failed) = wait_for(
        "rollout_failed",
        Duration::from_secs(120),
        &project,
        async || received.first("rollout_failed"),
    )
    .await;
    let (rolled_back_at, _) = wait_for(
        "rollback_completed",
        Duration::from_secs(120),
        &project,
        async || received.first("rollback_completed"),
    )
    .await;
    // Pinned: no second attempt at v3 while the spec asks for it.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let report = load.stop_and_finish().await;
    let summary = report.summary();
    assert_eq!(summary.failed, 0, "{}", failures_report(&report, &received));
    assert!(
        failed.reason.contains("health") || failed.reason.contains("healthy"),
        "{failed:?}"
    );
    let g1 = generation_of(&report, V1).unwrap();
    assert_eq!(
        generation_of(&report, V3),
        None,
        "v3 served no request: {:?}",
        summary.by_generation
    );
    let late = report.generations_after(rolled_back_at);
    assert_eq!(late.keys().collect::<Vec<_>>(), vec![&g1], "{late:?}");
    let events = all_events(&client, before).await;
    assert_eq!(
        of_kind(&events, "rollout_started").len(),
        1,
        "no retry loop: {:#?}",
        events
            .iter()
            .filter(|e| e.kind.starts_with("roll"))
            .collect::<Vec<_>>()
    );
    let live = project.live_generations();
    assert_eq!(live.get(&g1), Some(&5), "{live:?}");
    assert_eq!(live.len(), 1, "v3 scaled down: {live:?}");
}

// ----- c: a v4 answering 5xx to 10% is rolled back by the error rate --------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_generation_answering_errors_is_rolled_back_by_the_error_rate() {
    let _alone = ONE_CLOUD_AT_A_TIME.lock().await;
    let mut project = Project::new();
    let (client, url) = v1_behind_the_load_balancer(&mut project, "errors", BLUE_GREEN).await;
    let (api, token) = controller_url(&project).await;
    let before = last_seq(&client).await;
    let received = Received::follow(&api, &token, before);

    let load = load(&url, 200_000, 150);
    tokio::time::sleep(Duration::from_secs(1)).await;
    project.write_spec(&spec("errors", LOCAL, 5, BLUE_GREEN, V4));
    let (_, failed) = wait_for(
        "rollout_failed",
        Duration::from_secs(120),
        &project,
        async || {
            if let Some((_, done)) = received.first("rollout_completed") {
                panic!("v4 was not rolled back: {done:?}");
            }
            received.first("rollout_failed")
        },
    )
    .await;
    let (rolled_back_at, _) = wait_for(
        "rollback_completed",
        Duration::from_secs(120),
        &project,
        async || received.first("rollback_completed"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = load.stop_and_finish().await;
    assert!(failed.reason.contains("error rate"), "{failed:?}");
    let g1 = generation_of(&report, V1).unwrap();
    let g4 = generation_of(&report, V4).expect("v4 took canary traffic");
    let summary = report.summary();
    assert!(
        summary.failed > 0,
        "v4's errors reached clients in the canary"
    );
    let not_v4: Vec<_> = report
        .failures()
        .filter(|r| !(r.outcome == Outcome::Status(500) && r.generation.as_deref() == Some(&g4)))
        .collect();
    assert!(
        not_v4.is_empty(),
        "failures other than v4's own 5xx: {}",
        failures_report(&report, &received)
    );
    let late = report.generations_after(rolled_back_at);
    assert_eq!(late.keys().collect::<Vec<_>>(), vec![&g1], "{late:?}");
    let live = project.live_generations();
    assert_eq!(live.get(&g1), Some(&5), "{live:?}");
}

// ----- d: rolling within max surge and max unavailable ----------------------

/// Instance ids in a response body between `<open>` and `</close>` tags.
fn tagged(body: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        if let Some(end) = rest.find(&close) {
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

/// Healthy targets in a DescribeTargetHealth response.
fn healthy_targets(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    for member in body.split("<member>").skip(1) {
        let ids = tagged(member, "Id");
        if member.contains("<State>healthy</State>") {
            out.extend(ids.into_iter().take(1));
        }
    }
    out
}

fn event_time(event: &EventView) -> Duration {
    let at = time::OffsetDateTime::parse(&event.at, &time::format_description::well_known::Rfc3339)
        .unwrap();
    Duration::from_nanos(u64::try_from(at.unix_timestamp_nanos()).unwrap())
}

/// A change in the count of live or in-service instances.
#[derive(Debug, Clone)]
struct Change {
    at: Duration,
    what: String,
    live: i64,
    in_service: i64,
}

/// Live and in-service instances of the group over time, from the
/// requests the proxy recorded and the controller's events:
///
/// - live from a RunInstances' arrival (before the cloud acted: counted
///   early) to a TerminateInstances' answer (counted late);
/// - in service from the first evidence it is healthy — a
///   DescribeTargetHealth answer naming it healthy, or its
///   `instance_healthy` event — until the first evidence it is not: its
///   DeregisterTargets' or TerminateInstances' arrival, or an
///   `instance_unhealthy` event.
fn timeline(requests: &[RecordedRequest], events: &[EventView]) -> Vec<Change> {
    // (at, +live/-live, +service/-service, id, what)
    let mut moments: Vec<(Duration, i64, i64, String, String)> = Vec::new();
    for request in requests {
        let action = request.action.as_deref().unwrap_or_default();
        let body = request.response_body.as_deref().unwrap_or_default();
        let done = request.completed_at.unwrap_or(request.arrived_at);
        match action {
            "RunInstances" if request.status == Some(200) => {
                for id in common::launched_ids(request) {
                    moments.push((request.arrived_at, 1, 0, id, "launched".into()));
                }
            }
            "TerminateInstances" => {
                for id in common::terminated_ids(request) {
                    moments.push((request.arrived_at, 0, -1, id.clone(), "terminating".into()));
                    moments.push((done, -1, 0, id, "terminated".into()));
                }
            }
            "DeregisterTargets" => {
                for (name, id) in &request.params {
                    if name.starts_with("Targets.member.") && name.ends_with(".Id") {
                        moments.push((
                            request.arrived_at,
                            0,
                            -1,
                            id.clone(),
                            "deregistered".into(),
                        ));
                    }
                }
            }
            "DescribeTargetHealth" if request.status == Some(200) => {
                for id in healthy_targets(body) {
                    moments.push((done, 0, 1, id, "healthy at the load balancer".into()));
                }
            }
            _ => {}
        }
    }
    for event in events {
        match event.kind.as_str() {
            "instance_healthy" => {
                moments.push((
                    event_time(event),
                    0,
                    1,
                    event.subject.clone(),
                    "instance_healthy".into(),
                ));
            }
            "instance_unhealthy" => {
                moments.push((
                    event_time(event),
                    0,
                    -1,
                    event.subject.clone(),
                    "instance_unhealthy".into(),
                ));
            }
            _ => {}
        }
    }
    moments.sort_by_key(|m| m.0);
    let mut live: BTreeSet<String> = BTreeSet::new();
    let mut in_service: BTreeSet<String> = BTreeSet::new();
    let mut out_of_service: BTreeSet<String> = BTreeSet::new();
    let mut changes = Vec::new();
    for (at, live_delta, service_delta, id, what) in moments {
        match live_delta {
            1 => {
                live.insert(id.clone());
            }
            -1 => {
                live.remove(&id);
            }
            _ => {}
        }
        match service_delta {
            // Once out (deregistered, terminating, unhealthy), evidence of
            // health read before does not put it back.
            1 if !out_of_service.contains(&id) => {
                in_service.insert(id.clone());
            }
            -1 => {
                in_service.remove(&id);
                if what != "instance_unhealthy" {
                    out_of_service.insert(id.clone());
                }
            }
            _ => {}
        }
        changes.push(Change {
            at,
            what: format!("{id} {what}"),
            live: live.len() as i64,
            in_service: in_service.len() as i64,
        });
    }
    changes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_stays_within_max_surge_and_max_unavailable() {
    let _alone = ONE_CLOUD_AT_A_TIME.lock().await;
    let mut project = Project::new();
    // The cloud first, then a recording proxy in front of it: the
    // controller's EC2 and ELBv2 calls all go through the proxy.
    project.ok(&["cloud", "start"]);
    let (cloud_url, key, secret) = project.cloud();
    let proxy = FaultProxy::start(&cloud_url).await.unwrap();
    let provider = format!(
        "  aws:\n    region: us-east-1\n    endpoint: {}",
        proxy.url()
    );
    let credentials = [
        ("AWS_ACCESS_KEY_ID", key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ];
    project.write_spec(&spec("rolling", &provider, 5, ROLLING, V1));
    let client = project.start_with(FAST, &credentials).await;
    wait_for(
        "5 healthy",
        Duration::from_secs(180),
        &project,
        async || all_healthy(&client, 5).await,
    )
    .await;
    let url = project.load_balancer_url("web-lb", LB_PORT);
    wait_serving(&project, &url, V1).await;
    let before = last_seq(&client).await;
    let (api, token) = controller_url(&project).await;
    let received = Received::follow(&api, &token, before);
    let load = load(&url, 200_000, 240);

    let rollout_from = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    project.write_spec(&spec("rolling", &provider, 5, ROLLING, V2));
    wait_for(
        "rollout_completed",
        Duration::from_secs(240),
        &project,
        async || {
            if let Some((_, failed)) = received.first("rollout_failed") {
                panic!("the rollout failed: {failed:?}\n{}", project.log_tail(200));
            }
            received.first("rollout_completed")
        },
    )
    .await;
    let report = load.stop_and_finish().await;

    // The budget: the DisruptionBudget that max surge 1 / max unavailable 1
    // of 5 amount to, as the planner's limits.
    let capacity = endstate_model::Capacity {
        min: 1,
        desired: 5,
        max: 12,
    };
    let budget = endstate_model::DisruptionBudget {
        min_healthy_share: 4.0 / 5.0,
        max_surge: Some(1),
    };
    let limits = endstate_plan::BudgetLimits::new(&capacity, &budget);
    assert_eq!((limits.floor, limits.ceiling), (4, 6));

    let requests = proxy.requests();
    let events = all_events(&client, 0).await;
    let changes = timeline(&requests, &events);
    let launches = requests
        .iter()
        .filter(|r| r.action.as_deref() == Some("RunInstances") && r.arrived_at >= rollout_from)
        .count();
    assert!(launches >= 3, "the rollout launched in batches: {launches}");
    let history = || {
        changes
            .iter()
            .filter(|c| c.at >= rollout_from)
            .map(|c| {
                format!(
                    "{:?} live={} in_service={} {}",
                    c.at, c.live, c.in_service, c.what
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    for change in changes.iter().filter(|c| c.at >= rollout_from) {
        assert!(
            change.live <= i64::from(limits.ceiling),
            "more than desired + max surge live at {change:?}:\n{}",
            history()
        );
        assert!(
            change.in_service >= i64::from(limits.floor),
            "fewer than desired - max unavailable in service at {change:?}:\n{}",
            history()
        );
    }
    let during: Vec<&Change> = changes.iter().filter(|c| c.at >= rollout_from).collect();
    let max_live = during.iter().map(|c| c.live).max().unwrap_or(0);
    let min_in_service = during.iter().map(|c| c.in_service).min().unwrap_or(0);
    // The counts are of the group (not vacuous): 5 live from the start.
    assert!(max_live >= 5, "{}", history());
    println!(
        "rolling: {} changes, live at most {max_live}, in service at least {min_in_service}",
        during.len()
    );
    let summary = report.summary();
    assert_eq!(summary.failed, 0, "{}", failures_report(&report, &received));
    let live = project.live_generations();
    assert_eq!(live.values().sum::<usize>(), 5, "{live:?}");
    assert_eq!(live.len(), 1, "one generation left: {live:?}");
    proxy.shutdown().await;
}

// ----- e: the CLI ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_and_rollback_from_the_command_line() {
    let _alone = ONE_CLOUD_AT_A_TIME.lock().await;
    let mut project = Project::new();
    // Without a controller: a clear error.
    project.write_spec(&spec("cli", LOCAL, 2, BLUE_GREEN, V1));
    let output = project
        .run_within(CLI_LIMIT, &["deploy", "web", "--image", BASE_IMAGE])
        .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("start it"), "{stderr}");
    assert!(stderr.contains("endstate serve"), "{stderr}");

    project.write_spec(&spec("cli", LOCAL, 2, BLUE_GREEN, V1));
    let client = project.start_with(FAST, &[]).await;
    wait_for(
        "2 healthy",
        Duration::from_secs(180),
        &project,
        async || all_healthy(&client, 2).await,
    )
    .await;
    let url = project.load_balancer_url("web-lb", LB_PORT);
    wait_serving(&project, &url, V1).await;
    let g1 = single_generation(&project);

    // Two more images: of an instance of the group (CreateImage).
    let instance = client.instances(Some("web")).await.unwrap()[0].id.clone();
    let image = project.create_image(&instance, "web-baked");
    let image2 = project.create_image(&instance, "web-baked-again");

    // An unknown group: refused by the controller, non-zero.
    let output = project
        .run_within(CLI_LIMIT, &["deploy", "nope", "--image", &image])
        .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refused the deploy"), "{stderr}");

    // Deploy and follow: a line per phase, exit 0 once completed.
    let output = project
        .run_within(CLI_LIMIT, &["deploy", "web", "--image", &image])
        .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for kind in ["rollout_started", "traffic_switched", "rollout_completed"] {
        assert!(stdout.contains(kind), "no {kind} line:\n{stdout}");
    }
    let g_image = single_generation(&project);
    assert_ne!(g_image, g1);
    assert_eq!(served_by(&url).await, g_image);

    // Roll back once it completed: a rollout back to the previous
    // generation, followed to its end; --json prints the final view (the
    // progress goes to stderr).
    let output = project
        .run_within(CLI_LIMIT, &["rollback", "web", "--json"])
        .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("rollout_completed"), "{stderr}");
    let view: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(view["group"], "web", "{view}");
    assert_eq!(view["to"], g1.as_str(), "{view}");
    assert_eq!(single_generation(&project), g1);
    assert_eq!(served_by(&url).await, g1);

    // --no-wait: the accepted rollout at once; then a rollback while it
    // runs takes the group back at once and scales the new one down.
    let before = last_seq(&client).await;
    let output = project
        .run_within(
            CLI_LIMIT,
            &["deploy", "web", "--image", &image2, "--no-wait", "--json"],
        )
        .await;
    assert!(output.status.success(), "{output:?}");
    let view: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(view["deploy_image"], image2.as_str(), "{view}");
    wait_for(
        "the deploy's rollout started",
        Duration::from_secs(60),
        &project,
        async || {
            all_events(&client, before)
                .await
                .into_iter()
                .find(|e| e.kind == "rollout_started")
        },
    )
    .await;
    let output = project.run_within(CLI_LIMIT, &["rollback", "web"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("rollback_completed"), "{stdout}");
    wait_for(
        "only the first generation live",
        Duration::from_secs(60),
        &project,
        async || (project.live_generations().keys().collect::<Vec<_>>() == [&g1]).then_some(()),
    )
    .await;
    assert_eq!(served_by(&url).await, g1);
}

/// The one generation of the live instances (asserted to be one).
fn single_generation(project: &Project) -> String {
    let live = project.live_generations();
    assert_eq!(live.len(), 1, "one generation live: {live:?}");
    live.into_keys().next().unwrap()
}

/// The generation that answers a request through the load balancer now.
async fn served_by(url: &str) -> String {
    let response = reqwest::get(url).await.unwrap();
    assert!(response.status().is_success(), "{response:?}");
    response.headers()["x-endstate-generation"]
        .to_str()
        .unwrap()
        .to_string()
}
