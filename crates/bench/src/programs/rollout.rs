//! Switch time and rollback time of a blue-green rollout behind the built-in
//! cloud's load balancer, through the real `endstate serve` binary on the
//! process backend (as root: real instances in their own namespaces), under
//! a steady load of 8 keep-alive clients (`endstate_testkit::load`) on the
//! listener.
//!
//! One group of 5, each instance a python HTTP/1.1 server whose body names
//! its version; health check on `/healthz` every 2 s (timeout 1 s) (thresholds 2/2);
//! rollout blue-green, canary [20] for 3 s, watch 5 s, keep the old
//! generation 5 s, max error rate 5%. K times (default 3):
//!
//! 1. a good version: the spec's user data changes; measured, from the
//!    controller's `traffic_switched` event (the listener's change
//!    acknowledged): the last request answered by the old generation,
//!    by when it *started* (≤ 0 ms: no request started after the switch
//!    reached the old generation), and the first instant after which every
//!    request started was answered by the new one; also trigger →
//!    switched and trigger → `rollout_completed`, and failed requests;
//! 2. a bad version (healthy, 5xx on 10% of requests): measured from
//!    `rollout_failed` (the error rate detected): the last request started
//!    that the bad generation answered (traffic back on the old), the
//!    rollback's traffic event, and `rollback_completed` (the new
//!    generation terminated).
//!
//! ```text
//! cargo build --release -p endstate -p endstate-bench
//! sudo target/release/bench rollout [K]
//! ```
//!
//! Runs `target/<profile>/endstate` beside this program, or `$ENDSTATE_BIN`;
//! the aws CLI (for the load balancer's DNSName) from `.tools/venv/bin/aws`
//! or `$ENDSTATE_AWS_CLI`. Stops the controller and the cloud (with its
//! instances) at the end, on failure too.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use endstate_bench::p50_max;
use endstate_bench::serve::{event_ms, Project};
use endstate_controller::client::Client;
use endstate_controller::view::{EventView, GroupView};
use endstate_testkit::load::{LoadConfig, LoadGenerator, LoadReport};

const WEB_PORT: u16 = 18_800;
const LB_PORT: u16 = 18_880;
const CLIENTS: usize = 8;

fn spec(version: &str, error_every: u32) -> String {
    format!(
        r#"project: rollout-bench
provider:
  local: {{}}
load_balancers:
  web-lb: {{ port: {LB_PORT}, deregistration_delay: 5 }}
groups:
  web:
    image: ami-0e5c0f5d3b1e2a4f6
    instance_type: t3.micro
    capacity: {{ min: 1, desired: 5, max: 12 }}
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
      strategy: blue_green
      canary: [20]
      canary_pause: 3
      keep_old_for: 5
      watch: 5
      healthy_timeout: 60
      max_error_rate: 0.05
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

              VERSION, ERROR_EVERY = "{version}", {error_every}
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
                      if not self.path.startswith("/healthz") and ERROR_EVERY:
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

/// The listener's URL: the load balancer's DNSName from the aws CLI's
/// `elbv2 describe-load-balancers` against the cloud, and its port.
fn load_balancer_url(project: &Project) -> Result<String> {
    let read = |name: &str| -> Result<serde_json::Value> {
        let path = project.cloud_dir.path().join(name);
        let bytes = std::fs::read(&path).with_context(|| path.display().to_string())?;
        Ok(serde_json::from_slice(&bytes)?)
    };
    let server = read("server.json")?;
    let credentials = read("credentials")?;
    let aws = match std::env::var("ENDSTATE_AWS_CLI") {
        Ok(path) => PathBuf::from(path),
        Err(_) => endstate_testkit::moto::workspace_root()?.join(".tools/venv/bin/aws"),
    };
    let output = Command::new(&aws)
        .args([
            "--endpoint-url",
            server["url"].as_str().context("server.json: no url")?,
            "--region",
            "us-east-1",
            "--output",
            "json",
            "elbv2",
            "describe-load-balancers",
            "--names",
            "web-lb",
        ])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env(
            "AWS_ACCESS_KEY_ID",
            credentials["access_key_id"].as_str().unwrap_or_default(),
        )
        .env(
            "AWS_SECRET_ACCESS_KEY",
            credentials["secret_access_key"]
                .as_str()
                .unwrap_or_default(),
        )
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .with_context(|| format!("running {}", aws.display()))?;
    if !output.status.success() {
        bail!(
            "aws elbv2 describe-load-balancers: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let dns = answer["LoadBalancers"][0]["DNSName"]
        .as_str()
        .with_context(|| format!("no DNSName in {answer}"))?;
    Ok(format!("http://{dns}:{LB_PORT}/"))
}

fn wall_ms(at: SystemTime) -> i128 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i128)
        .unwrap_or(0)
}

/// Turns the load generator's instants into wall-clock milliseconds (the
/// events' clock), from one pair read together.
#[derive(Clone, Copy)]
struct Clocks {
    instant: Instant,
    wall: SystemTime,
}

impl Clocks {
    fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    fn ms(self, at: Instant) -> i128 {
        match at.checked_duration_since(self.instant) {
            Some(after) => wall_ms(self.wall + after),
            None => wall_ms(self.wall - self.instant.duration_since(at)),
        }
    }
}

async fn web(client: &Client) -> Option<GroupView> {
    client.group("web").await.ok()
}

async fn all_healthy(client: &Client, project: &Project, limit: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        if web(client)
            .await
            .is_some_and(|g| g.live == 5 && g.healthy == 5 && g.unhealthy == 0)
        {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!(
                "the group was not 5 healthy after {limit:?}; controller log:\n{}",
                project.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn events_after(client: &Client, after: i64) -> Result<Vec<EventView>> {
    let mut events = Vec::new();
    let mut after = after;
    loop {
        let page = client.events_after(after, 1_000, Some("web")).await?;
        let Some(last) = page.last() else {
            return Ok(events);
        };
        after = last.seq;
        events.extend(page);
    }
}

async fn last_seq(client: &Client) -> Result<i64> {
    Ok(events_after(client, 0).await?.last().map_or(0, |e| e.seq))
}

/// Waits for the first event of one of `kinds` after `after`.
async fn wait_event(
    client: &Client,
    project: &Project,
    after: i64,
    kinds: &[&str],
    limit: Duration,
) -> Result<EventView> {
    let started = Instant::now();
    loop {
        if let Some(event) = events_after(client, after)
            .await?
            .into_iter()
            .find(|e| kinds.contains(&e.kind.as_str()))
        {
            return Ok(event);
        }
        if started.elapsed() > limit {
            bail!(
                "no {kinds:?} after {limit:?}; controller log:\n{}",
                project.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The generation header of the responses whose body is `version`.
fn generation_of(report: &LoadReport, version: &str) -> Option<String> {
    let body = format!("{version}\n");
    report
        .records
        .iter()
        .find(|r| r.body == body)
        .and_then(|r| r.generation.clone())
}

/// One good rollout's figures, in ms.
struct Switch {
    trigger_to_switched: i128,
    trigger_to_completed: i128,
    /// The last request the old generation answered, by its start, from
    /// the switch (≤ 0: none started after it).
    last_old_start: i128,
    /// From the switch to the first instant after which every request
    /// started was answered by the new generation.
    all_new_from: i128,
    requests: usize,
    failed: usize,
}

/// One rollback's figures, in ms from `rollout_failed`.
struct Rollback {
    /// The last request the bad generation answered, by its start.
    last_bad_start: i128,
    /// The rollback's first traffic event.
    traffic_back: Option<i128>,
    /// `rollback_completed`: the bad generation terminated.
    completed: i128,
    failed_by_bad: usize,
    failed_other: usize,
}

async fn good(
    client: &Client,
    project: &Project,
    url: &str,
    from: &str,
    to: &str,
) -> Result<Switch> {
    let after = last_seq(client).await?;
    let clocks = Clocks::now();
    let load = LoadGenerator::start(LoadConfig::new(
        url,
        CLIENTS,
        1_000_000,
        Duration::from_secs(300),
    ))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let trigger = wall_ms(SystemTime::now());
    project.write_spec(&spec(to, 0))?;
    let done = wait_event(
        client,
        project,
        after,
        &["rollout_completed", "rollout_failed"],
        Duration::from_secs(240),
    )
    .await?;
    let report = load.stop_and_finish().await;
    if done.kind != "rollout_completed" {
        bail!("the rollout to {to} failed: {}", done.reason);
    }
    let events = events_after(client, after).await?;
    let switched = events
        .iter()
        .find(|e| e.kind == "traffic_switched")
        .context("no traffic_switched event")?;
    let switched_ms = event_ms(switched)?;
    let old = generation_of(&report, from).context("the old generation answered nothing")?;
    let new = generation_of(&report, to).context("the new generation answered nothing")?;
    let last_old = report
        .last_started_by(&old)
        .context("no request answered by the old generation")?;
    let mut ordered: Vec<_> = report.records.iter().collect();
    ordered.sort_by_key(|r| r.started);
    // The first start after which every request is the new generation's.
    let all_new_from = ordered
        .iter()
        .rposition(|r| r.generation.as_deref() != Some(new.as_str()))
        .and_then(|i| ordered.get(i + 1))
        .map(|r| clocks.ms(r.started))
        .unwrap_or(switched_ms);
    let summary = report.summary();
    Ok(Switch {
        trigger_to_switched: switched_ms - trigger,
        trigger_to_completed: event_ms(&done)? - trigger,
        last_old_start: clocks.ms(last_old) - switched_ms,
        all_new_from: all_new_from - switched_ms,
        requests: summary.total,
        failed: summary.failed,
    })
}

async fn bad(
    client: &Client,
    project: &Project,
    url: &str,
    keep: &str,
    to: &str,
) -> Result<Rollback> {
    let after = last_seq(client).await?;
    let clocks = Clocks::now();
    let load = LoadGenerator::start(LoadConfig::new(
        url,
        CLIENTS,
        1_000_000,
        Duration::from_secs(300),
    ))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    project.write_spec(&spec(to, 10))?;
    let failed = wait_event(
        client,
        project,
        after,
        &["rollout_failed", "rollout_completed"],
        Duration::from_secs(240),
    )
    .await?;
    if failed.kind != "rollout_failed" {
        bail!(
            "the bad version {to} was not rolled back: {}",
            failed.reason
        );
    }
    let completed = wait_event(
        client,
        project,
        failed.seq,
        &["rollback_completed", "rollback_failed"],
        Duration::from_secs(240),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.stop_and_finish().await;
    if completed.kind != "rollback_completed" {
        bail!("the rollback failed: {}", completed.reason);
    }
    let failed_ms = event_ms(&failed)?;
    let events = events_after(client, failed.seq).await?;
    let traffic_back = events
        .iter()
        .find(|e| e.kind.starts_with("traffic_") && e.seq < completed.seq)
        .map(event_ms)
        .transpose()?
        .map(|ms| ms - failed_ms);
    let good_generation = generation_of(&report, keep);
    let bad_generation = generation_of(&report, to).context("the bad version took no traffic")?;
    let last_bad = report
        .last_started_by(&bad_generation)
        .context("no request answered by the bad generation")?;
    let failed_by_bad = report
        .failures()
        .filter(|r| r.generation.as_deref() == Some(bad_generation.as_str()))
        .count();
    let failed_other = report.failures().count() - failed_by_bad;
    if good_generation.is_none() {
        bail!("the kept version {keep} answered nothing");
    }
    Ok(Rollback {
        last_bad_start: clocks.ms(last_bad) - failed_ms,
        traffic_back,
        completed: event_ms(&completed)? - failed_ms,
        failed_by_bad,
        failed_other,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
pub async fn main() -> Result<()> {
    endstate_bench::require_root("rollout")?;
    let runs: usize = endstate_bench::number_arg(1, "K (runs)", 3)?;
    let mut project = Project::new()?;
    project.write_spec(&spec("v1", 0))?;
    let client = project.start("127.0.0.1:0", &[]).await?;
    all_healthy(&client, &project, Duration::from_secs(180)).await?;
    let url = load_balancer_url(&project)?;
    println!("| run | trigger → switched | trigger → completed | last old start − switch | all new from − switch | requests (failed) | rollback: last bad start | traffic event | bad generation terminated | failed: bad's / other |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut switches = Vec::new();
    let mut rollbacks = Vec::new();
    let mut current = "v1".to_string();
    for run in 1..=runs {
        all_healthy(&client, &project, Duration::from_secs(180)).await?;
        let next = format!("v{}", run + 1);
        let switch = good(&client, &project, &url, &current, &next).await?;
        current = next;
        // keep_old_for (5 s) and the old generation's scale-down.
        all_healthy(&client, &project, Duration::from_secs(180)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let bad_version = format!("bad{run}");
        let rollback = bad(&client, &project, &url, &current, &bad_version).await?;
        // Back to the good spec: the pin is lifted by a spec change, and
        // the next run starts from the good version's generation.
        println!(
            "| {run} | {} ms | {} ms | {} ms | {} ms | {} ({}) | {} ms | {} | {} ms | {} / {} |",
            switch.trigger_to_switched,
            switch.trigger_to_completed,
            switch.last_old_start,
            switch.all_new_from,
            switch.requests,
            switch.failed,
            rollback.last_bad_start,
            rollback
                .traffic_back
                .map_or("-".to_string(), |ms| format!("{ms} ms")),
            rollback.completed,
            rollback.failed_by_bad,
            rollback.failed_other,
        );
        switches.push(switch);
        rollbacks.push(rollback);
    }
    let (s50, smax) = p50_max(
        &mut switches
            .iter()
            .map(|s| s.last_old_start)
            .collect::<Vec<_>>(),
    );
    let (a50, amax) = p50_max(&mut switches.iter().map(|s| s.all_new_from).collect::<Vec<_>>());
    let (t50, tmax) = p50_max(
        &mut switches
            .iter()
            .map(|s| s.trigger_to_switched)
            .collect::<Vec<_>>(),
    );
    let (b50, bmax) = p50_max(
        &mut rollbacks
            .iter()
            .map(|r| r.last_bad_start)
            .collect::<Vec<_>>(),
    );
    let (c50, cmax) = p50_max(&mut rollbacks.iter().map(|r| r.completed).collect::<Vec<_>>());
    println!(
        "{}",
        serde_json::json!({
            "runs": runs,
            "trigger_to_switched_ms": [t50 as i64, tmax as i64],
            "last_old_start_after_switch_ms": [s50 as i64, smax as i64],
            "all_new_after_switch_ms": [a50 as i64, amax as i64],
            "failed_requests_in_good_rollouts": switches.iter().map(|s| s.failed).sum::<usize>(),
            "rollback_last_bad_start_ms": [b50 as i64, bmax as i64],
            "rollback_terminated_ms": [c50 as i64, cmax as i64],
            "failed_requests_not_bad_generation": rollbacks.iter().map(|r| r.failed_other).sum::<usize>(),
        })
    );
    drop(project);
    Ok(())
}
