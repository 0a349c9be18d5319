//! Time from an instance's death to its replacement being healthy, through
//! the real `endstate serve` binary with its default intervals (observe 5 s,
//! period 60 s) on the built-in cloud's process backend (as root: real
//! instances in their own namespaces). One group of 5 with an HTTP health
//! check (interval 2 s, timeout 1 s, healthy threshold 2, unhealthy
//! threshold 3, grace 20 s); the service is `sh -c "python3 serve.py; exec
//! sleep 1000000"`, so killing the web server leaves the instance `ok` by
//! EC2's status check and only the health check can tell.
//!
//! K times (default 5): SIGKILL one instance's web server (found by its
//! listening socket in /proc/net/tcp), then read the controller's events
//! (`events_after`, their timestamps) for, measured from the kill:
//! (i) `instance_unhealthy` of the victim, (ii) `replacement_launched`
//! naming it, (iii) `instance_healthy` of the replacement. Prints each run
//! and p50 / max of each phase. The victim is the oldest instance, killed
//! once its grace period is over (failures within it are not judged).
//!
//! What bounds the figure: (i) the unhealthy threshold of failed probes,
//! 3 × 2 s, less the time since the last probe (4–6 s); (ii) adds the
//! settle delay of one probe interval (2 s, so failures detected together
//! are judged together), the reconcile's DescribeInstances, RunInstances,
//! and the executor's wait for `running` before the event is recorded;
//! (iii) adds the observer's next read (up to 5 s) that hands the new
//! instance to the health checker, its boot (user data, python's start) and
//! the healthy threshold, 2 × 2 s. The brake's window is 10 s (default
//! 300 s) and runs are 10 s apart after the group is healthy again, so one
//! kill per run does not count with the previous run's as a correlated
//! failure.
//!
//!     cargo build --release -p endstate -p endstate-bench
//!     sudo target/release/bench serve_heal [K]
//!
//! Runs `target/<profile>/endstate` beside this program, or `$ENDSTATE_BIN`.
//! Stops the controller (SIGTERM) and the cloud (`endstate cloud stop
//! --terminate-instances`) at the end, on failure too.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use endstate_bench::serve::Project;
use endstate_controller::client::Client;
use endstate_controller::view::{EventView, GroupView};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const SPEC: &str = r#"project: heal-bench
provider:
  local: {}
groups:
  web:
    image: ami-0e5c0f5d3b1e2a4f6
    instance_type: t3.micro
    capacity: { min: 2, desired: 5, max: 10 }
    zones: [us-east-1a]
    health_check:
      http: { port: 8080, path: / }
      interval: 2
      timeout: 1
      healthy_threshold: 2
      unhealthy_threshold: 3
      grace_period: 20
    replacement_brake:
      window: 10
    user_data:
      cloud_config:
        write_files:
          - path: /etc/endstate/services/web.json
            permissions: '0644'
            content: |
              {"command": ["sh", "-c", "python3 /opt/web/serve.py; exec sleep 1000000"], "restart": "never"}
          - path: /opt/web/serve.py
            permissions: '0755'
            content: |
              import http.server, os, urllib.request

              base = os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"].rstrip("/")
              token = urllib.request.urlopen(urllib.request.Request(
                  base + "/latest/api/token", method="PUT",
                  headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"}), timeout=5).read().decode()
              address = urllib.request.urlopen(urllib.request.Request(
                  base + "/latest/meta-data/local-ipv4",
                  headers={"X-aws-ec2-metadata-token": token}), timeout=5).read().decode()

              class Web(http.server.BaseHTTPRequestHandler):
                  def do_GET(self):
                      body = b"ok\n"
                      self.send_response(200)
                      self.send_header("Content-Length", str(len(body)))
                      self.end_headers()
                      self.wfile.write(body)

                  def log_message(self, *args):
                      pass

              http.server.ThreadingHTTPServer((address, 8080), Web).serve_forever()
"#;

/// The host PID of the process listening on `address:port` (instances
/// share the host's network namespace, each on its own address).
fn listener_pid(address: &str, port: u16) -> Result<i32> {
    let octets: Vec<u8> = address
        .split('.')
        .map(|o| o.parse())
        .collect::<Result<_, _>>()
        .with_context(|| format!("instance address {address}"))?;
    if octets.len() != 4 {
        bail!("instance address {address}: not IPv4");
    }
    // /proc/net/tcp writes IPv4 addresses as a little-endian u32 in hex.
    let wanted = format!(
        "{:02X}{:02X}{:02X}{:02X}:{port:04X}",
        octets[3], octets[2], octets[1], octets[0]
    );
    let table = std::fs::read_to_string("/proc/net/tcp").context("/proc/net/tcp")?;
    let inode = table
        .lines()
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // State 0A is LISTEN.
            (fields.get(1) == Some(&wanted.as_str()) && fields.get(3) == Some(&"0A"))
                .then(|| fields.get(9).map(|s| s.to_string()))
                .flatten()
        })
        .with_context(|| format!("nothing listens on {address}:{port}"))?;
    let socket = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == socket) {
                return Ok(pid);
            }
        }
    }
    bail!("no process holds the socket listening on {address}:{port}")
}

/// Milliseconds since the epoch of an event's RFC 3339 time.
fn event_ms(event: &EventView) -> Result<i128> {
    let at = time::OffsetDateTime::parse(&event.at, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("event {}: time {:?}", event.seq, event.at))?;
    Ok(at.unix_timestamp_nanos() / 1_000_000)
}

async fn web(client: &Client) -> Option<GroupView> {
    client.group("web").await.ok()
}

/// Waits until the group has 5 live, 5 healthy, none unhealthy.
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

async fn last_seq(client: &Client) -> Result<i64> {
    let mut after = 0;
    loop {
        let page = client.events_after(after, 1_000, None).await?;
        match page.last() {
            Some(last) => after = last.seq,
            None => return Ok(after),
        }
    }
}

/// The grace period (20 s) and a margin: a victim is killed once its
/// launch is this long ago, so that its failures are judged at once.
const GRACE_MS: i128 = 22_000;

/// One run's phases, in ms from the kill.
struct Run {
    unhealthy: i128,
    launched: i128,
    healthy: i128,
}

async fn one_run(client: &Client, project: &Project) -> Result<(String, Run)> {
    all_healthy(client, project, Duration::from_secs(180)).await?;
    let mut after = last_seq(client).await?;
    let instances = client.instances(Some("web")).await?;
    let launched_ms = |i: &endstate_controller::view::InstanceView| {
        time::OffsetDateTime::parse(
            &i.launch_time,
            &time::format_description::well_known::Rfc3339,
        )
        .map(|t| t.unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i128::MAX)
    };
    // The oldest: its failures count only once its grace period is over.
    let victim = instances
        .iter()
        .filter(|i| i.state == "running" && i.private_ip.is_some())
        .min_by_key(|i| launched_ms(i))
        .context("no running instance with an address")?;
    let judged_from = launched_ms(victim).saturating_add(GRACE_MS);
    loop {
        let now = i128::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
        if now >= judged_from {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let address = victim.private_ip.clone().unwrap_or_default();
    let pid = listener_pid(&address, 8080)?;
    kill(Pid::from_raw(pid), Signal::SIGKILL).with_context(|| format!("kill {pid}"))?;
    let killed_ms = i128::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    let killed = Instant::now();

    let (mut unhealthy, mut launched, mut healthy) = (None, None, None);
    let mut replacements: Vec<String> = Vec::new();
    while healthy.is_none() {
        if killed.elapsed() > Duration::from_secs(180) {
            bail!(
                "{}: no healthy replacement 180 s after the kill; controller log:\n{}",
                victim.id,
                project.log_tail()
            );
        }
        for event in client.events_after(after, 1_000, None).await? {
            after = event.seq;
            match event.kind.as_str() {
                "instance_unhealthy" if event.subject == victim.id && unhealthy.is_none() => {
                    unhealthy = Some(event_ms(&event)? - killed_ms);
                }
                "replacement_launched"
                    if event.data["replaces"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|v| v == victim.id.as_str())) =>
                {
                    launched = Some(event_ms(&event)? - killed_ms);
                    replacements.extend(event.subject.split(',').map(str::to_string));
                }
                "instance_healthy" if replacements.contains(&event.subject) => {
                    healthy = Some(event_ms(&event)? - killed_ms);
                }
                "replacement_paused" => bail!("the brake paused replacement: {}", event.reason),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let missing = |what: &str| {
        anyhow!(
            "{}: no {what} event before the replacement's healthy",
            victim.id
        )
    };
    Ok((
        victim.id.clone(),
        Run {
            unhealthy: unhealthy.ok_or_else(|| missing("instance_unhealthy"))?,
            launched: launched.ok_or_else(|| missing("replacement_launched"))?,
            healthy: healthy.unwrap_or_default(),
        },
    ))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
pub async fn main() -> Result<()> {
    endstate_bench::require_root("serve_heal")?;
    let runs: usize = endstate_bench::number_arg(1, "K (runs)", 5)?;
    let mut project = Project::new()?;
    project.write_spec(SPEC)?;
    // The controller's default intervals (observe 5 s, period 60 s).
    let client = project
        .start_serve(&["--listen", "127.0.0.1:0"], &[])
        .await?;
    let started = Instant::now();
    all_healthy(&client, &project, Duration::from_secs(180)).await?;
    println!(
        "5 healthy {:.1} s after the controller's start",
        started.elapsed().as_secs_f64()
    );
    println!("| run | instance | → instance_unhealthy | → replacement_launched | → replacement healthy |");
    println!("|---|---|---|---|---|");
    let mut all = Vec::new();
    for run in 1..=runs {
        if run > 1 {
            // Past the brake's window since the last run's failure.
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        let (victim, times) = one_run(&client, &project).await?;
        println!(
            "| {run} | {victim} | {} ms | {} ms | {} ms |",
            times.unhealthy, times.launched, times.healthy
        );
        all.push(times);
    }
    let column =
        |f: fn(&Run) -> i128| endstate_bench::p50_max(&mut all.iter().map(f).collect::<Vec<_>>());
    let (u50, umax) = column(|r| r.unhealthy);
    let (l50, lmax) = column(|r| r.launched);
    let (h50, hmax) = column(|r| r.healthy);
    println!("| p50 / max | | {u50} / {umax} ms | {l50} / {lmax} ms | {h50} / {hmax} ms |");
    println!(
        "{}",
        serde_json::json!({
            "runs": runs,
            "unhealthy_ms": [u50 as i64, umax as i64],
            "launched_ms": [l50 as i64, lmax as i64],
            "healthy_ms": [h50 as i64, hmax as i64],
        })
    );
    drop(project);
    Ok(())
}
