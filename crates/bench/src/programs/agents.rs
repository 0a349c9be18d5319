//! How long a change to a role takes to reach real agents and lightweight
//! watchers: the real `endstate serve` binary on the built-in cloud's
//! process backend (as root: instances really run), one group of N
//! instances (default 100) whose user data starts `endstate agent` as a
//! service, and W watchers (default 1,000) in this program.
//!
//! ```text
//! cargo build -p endstate -p endstate-bench
//! sudo target/debug/bench agents [N] [W]        # small while developing: agents 5 50
//! ```
//!
//! 1. Waits (bounded, progress on stderr) until every agent converged v1:
//!    the role's template, `/srv/agent.txt`, holds `id=<instance> rev-1`,
//!    read through the instance's overlay upper directory.
//! 2. Opens the watchers, spread over the instances (watcher k proves
//!    instance k mod N). Each authenticates by the real protocol, with no
//!    help from the server: a nonce from `POST /v1/agent/nonce`; the
//!    identity document, its signature and the nonce's signature from
//!    *that instance's* metadata service, fetched by `curl` running as the
//!    instance's uid (the process backend's metadata service tells
//!    instances apart by the uid owning the caller's socket, so from the
//!    host only a process of the instance's uid gets its answers: uid and
//!    endpoint are read from the instance's `init.json`); and the agent key
//!    the instance is bound to, read from the agent's state directory
//!    through the overlay upper directory
//!    (`<cloud dir>/instances/<id>/upper/var/lib/endstate/agent/agent-key`).
//!    Reading that key is the one shortcut, acceptable for a benchmark: a
//!    watcher is another process of the instance showing the instance's
//!    key. Each watcher then long-polls `GET /v1/agent/config?after=<v1>`
//!    and only receives.
//! 3. Writes the spec with the role at rev-2 and measures, from just
//!    before the write: for each agent, until its `/srv/agent.txt` holds
//!    rev-2 (the file, read every 20 ms through the upper directory; the
//!    `config_converged` events' times are printed beside, for
//!    comparison); for each watcher, until it received the new version.
//!    Prints counts and p50/p90/p99/max for agents, watchers and all, and
//!    the controller's RSS, CPU time and open descriptors (`/proc`). Waits
//!    at most 120 s: who has not been reached by then is counted, with the
//!    agents' failed runs (`config_failed` events), not waited for.
//!
//! Bounded: every wait has a deadline. The controller and the cloud (with
//! its instances) are stopped, and the temporary directories removed, at
//! the end and on failure; only processes this program started are
//! signalled, by their pid.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use endstate_bench::percentile_ms;
use endstate_bench::serve::{event_ms, free_port, Project};
use endstate_controller::api::types::AgentSessionRequest;
use endstate_controller::client::Client;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

/// The process backend's starter image.
const BASE_IMAGE: &str = "ami-0e5c0f5d3b1e2a4f6";
/// How long a watcher lets the server hold its poll (the server holds
/// up to 30 s).
const LONG_POLL: Duration = Duration::from_secs(30);
/// Watchers opening sessions at once (each runs one `curl`).
const OPENING_AT_ONCE: usize = 16;
/// How long the change may take to reach everyone (an agent whose run
/// failed tries again on its next check-in, up to 30 s later).
const CHANGE_LIMIT: Duration = Duration::from_secs(120);
/// How often the agents' files are read after the change.
const FILE_POLL: Duration = Duration::from_millis(20);

fn spec(server: &str, instances: usize, revision: u32) -> String {
    format!(
        r#"project: agents-bench
provider:
  local: {{}}
roles:
  web:
    resources:
      - kind: template
        name: identity
        path: /srv/agent.txt
        template: "id={{{{ metadata['instance-id'] }}}} rev-{revision}\n"
groups:
  web:
    image: {BASE_IMAGE}
    instance_type: t3.micro
    capacity: {{ min: {instances}, desired: {instances}, max: {instances} }}
    zones: [us-east-1a]
    roles: [web]
    user_data:
      script: |
        #!/bin/sh
        mkdir -p /var/lib/endstate/agent
        cat > /etc/endstate/services/agent.json <<EOF
        {{"command": ["/opt/endstate/bin/endstate", "agent", "--server", "{server}", "--imds-endpoint", "$AWS_EC2_METADATA_SERVICE_ENDPOINT", "--state-dir", "/var/lib/endstate/agent"], "restart": "always"}}
        EOF
"#
    )
}

/// What the host knows of one instance of the process backend.
struct InstanceAccess {
    id: String,
    /// The overlay upper directory: the instance's changes to its root.
    upper: PathBuf,
    uid: u32,
    /// Its metadata service, without the trailing slash.
    imds: String,
}

impl InstanceAccess {
    fn read(project: &Project, id: &str) -> Result<InstanceAccess> {
        let dir = project.cloud_dir.path().join("instances").join(id);
        let path = dir.join("init.json");
        let init: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| path.display().to_string())?,
        )
        .with_context(|| path.display().to_string())?;
        let uid = init["uid"]
            .as_u64()
            .and_then(|u| u32::try_from(u).ok())
            .with_context(|| format!("{}: no uid", path.display()))?;
        let imds = init["env"]["AWS_EC2_METADATA_SERVICE_ENDPOINT"]
            .as_str()
            .with_context(|| {
                format!(
                    "{}: no env.AWS_EC2_METADATA_SERVICE_ENDPOINT",
                    path.display()
                )
            })?
            .trim_end_matches('/')
            .to_string();
        Ok(InstanceAccess {
            id: id.to_string(),
            upper: dir.join("upper"),
            uid,
            imds,
        })
    }

    /// A file of the instance, through the upper directory.
    fn file(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.upper.join(path.trim_start_matches('/'))).ok()
    }

    /// An IMDSv2 token of the instance's metadata service (6 hours).
    async fn metadata_token(&self) -> Result<String> {
        let url = format!("{}/latest/api/token", self.imds);
        self.curl(&[
            "-X",
            "PUT",
            "-H",
            "x-aws-ec2-metadata-token-ttl-seconds: 21600",
            &url,
        ])
        .await
    }

    /// `path` of the instance's metadata service, with `token`.
    async fn metadata(&self, token: &str, path: &str) -> Result<String> {
        let url = format!("{}{path}", self.imds);
        let header = format!("x-aws-ec2-metadata-token: {token}");
        self.curl(&["-H", &header, &url]).await
    }

    /// `curl ARGS` run as the instance's uid (its metadata service
    /// answers only its own instance's processes).
    async fn curl(&self, args: &[&str]) -> Result<String> {
        let mut command = std::process::Command::new("curl");
        command
            .args([
                "--silent",
                "--show-error",
                "--fail",
                "--max-time",
                "5",
                "--noproxy",
                "*",
            ])
            .args(args)
            .current_dir("/")
            .uid(self.uid)
            .gid(self.uid);
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(true);
        let what = format!("curl {} as uid {}", args.join(" "), self.uid);
        let output = tokio::time::timeout(Duration::from_secs(10), command.output())
            .await
            .with_context(|| format!("{what}: no answer in 10 s"))?
            .with_context(|| format!("running {what}"))?;
        if !output.status.success() {
            bail!(
                "{what}: {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        String::from_utf8(output.stdout).with_context(|| format!("{what}: not UTF-8"))
    }
}

/// The proof one watcher shows for `instance`: a fresh nonce signed by
/// the instance's metadata service, and the instance's agent key.
struct Identity {
    /// The metadata service's token, for the nonces' signatures.
    token: String,
    document: String,
    signature: String,
    agent_key: String,
}

async fn open_watcher(
    server: &Client,
    instance: &InstanceAccess,
    identity: &Identity,
) -> Result<Client> {
    let nonce = server.agent_nonce().await?.nonce;
    let nonce_signature = instance
        .metadata(
            &identity.token,
            &format!("/latest/dynamic/instance-identity/nonce/{nonce}"),
        )
        .await?;
    let session = server
        .agent_session(&AgentSessionRequest {
            document: identity.document.clone(),
            signature: identity.signature.clone(),
            nonce,
            nonce_signature,
            agent_key: identity.agent_key.clone(),
        })
        .await
        .with_context(|| format!("a watcher's session for {}", instance.id))?;
    if session.instance_id != instance.id {
        bail!(
            "a session for {} speaks for {}",
            instance.id,
            session.instance_id
        );
    }
    Ok(server.with_token(session.token))
}

/// One watcher's life: the current version, "ready", then long polls until
/// the version changes; returns when it received the new one.
async fn watch(session: Client, ready: mpsc::Sender<String>) -> Result<Instant> {
    let first = session.agent_config(None, LONG_POLL).await?;
    let _ = ready.send(first.version.clone()).await;
    drop(ready);
    loop {
        let config = session
            .agent_config(Some(&first.version), LONG_POLL)
            .await?;
        if config.version != first.version {
            let received = Instant::now();
            let roles = serde_json::to_string(&config.roles)?;
            if !roles.contains("rev-2") {
                bail!("the new configuration is not rev-2: {roles}");
            }
            return Ok(received);
        }
    }
}

async fn running_ids(client: &Client) -> Vec<String> {
    client
        .instances(Some("web"))
        .await
        .map(|list| {
            list.into_iter()
                .filter(|i| i.state == "running")
                .map(|i| i.id)
                .collect()
        })
        .unwrap_or_default()
}

fn converged(instance: &InstanceAccess, revision: u32) -> bool {
    instance.file("/srv/agent.txt").as_deref()
        == Some(format!("id={} rev-{revision}\n", instance.id).as_str())
}

/// Waits until `count` instances run and every one converged rev-1.
async fn wait_for_v1(
    client: &Client,
    project: &Project,
    count: usize,
    limit: Duration,
) -> Result<Vec<InstanceAccess>> {
    let started = Instant::now();
    let mut said = Instant::now();
    let mut known: BTreeMap<String, InstanceAccess> = BTreeMap::new();
    loop {
        let ids = running_ids(client).await;
        for id in &ids {
            if !known.contains_key(id) {
                if let Ok(access) = InstanceAccess::read(project, id) {
                    known.insert(id.clone(), access);
                }
            }
        }
        let done = ids
            .iter()
            .filter(|id| known.get(*id).is_some_and(|i| converged(i, 1)))
            .count();
        if ids.len() == count && done == count {
            eprintln!(
                "agents: {count} instances converged rev-1 in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(ids.iter().filter_map(|id| known.remove(id)).collect());
        }
        if said.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "agents: {:.0} s: {} running, {done} converged rev-1 (of {count})",
                started.elapsed().as_secs_f64(),
                ids.len()
            );
            said = Instant::now();
        }
        if started.elapsed() > limit {
            bail!(
                "after {limit:?}: {} of {count} running, {done} converged rev-1; controller log:\n{}",
                ids.len(),
                project.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The median time of 5 requests to `instance`'s metadata service.
async fn imds_latency(instance: &InstanceAccess, token: &str) -> Result<Duration> {
    let mut times = Vec::with_capacity(5);
    for _ in 0..5 {
        let started = Instant::now();
        instance
            .metadata(token, "/latest/meta-data/instance-id")
            .await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// The rows of the host's TCP socket tables (`/proc/net/tcp`, `tcp6`):
/// what the metadata service's caller lookup reads per connection.
fn host_tcp_sockets() -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|table| table.lines().count().saturating_sub(1))
        .sum()
}

/// The controller's resident memory (KiB), peak (KiB), threads, CPU
/// seconds (user + system, from ticks of 1/100 s: Linux's USER_HZ) and
/// open descriptors.
struct ProcessFigures {
    rss_kib: u64,
    peak_kib: u64,
    threads: u64,
    cpu_seconds: f64,
    descriptors: usize,
}

fn process_figures(pid: u32) -> Option<ProcessFigures> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the line, the 12th and 13th after it.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let descriptors = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some(ProcessFigures {
        rss_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
        threads: field("Threads:")?,
        cpu_seconds: ticks as f64 / 100.0,
        descriptors,
    })
}

fn wall_ms(at: SystemTime) -> i128 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i128)
        .unwrap_or(0)
}

fn row(name: &str, samples: &mut [Duration]) -> String {
    samples.sort();
    format!(
        "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
        samples.len(),
        percentile_ms(samples, 0.5),
        percentile_ms(samples, 0.9),
        percentile_ms(samples, 0.99),
        percentile_ms(samples, 1.0),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
pub async fn main() -> Result<()> {
    endstate_bench::require_root("agents")?;
    let count: usize = endstate_bench::number_arg(1, "N (agents)", 100)?;
    let watchers: usize = endstate_bench::number_arg(2, "W (watchers)", 1_000)?;
    if count == 0 {
        bail!("N (agents): at least 1");
    }
    let mut project = Project::new()?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let server_url = format!("http://{listen}");
    project.write_spec(&spec(&server_url, count, 1))?;
    let client = project.start(&listen, &[]).await?;
    let pid = project
        .controller_pid()
        .context("the controller is not running")?;
    let limit = Duration::from_secs(120) + Duration::from_secs(2) * count as u32;
    let instances = wait_for_v1(&client, &project, count, limit).await?;

    // The watchers: one identity document per instance, a session each.
    let imds_without = {
        let token = instances[0].metadata_token().await?;
        imds_latency(&instances[0], &token).await?
    };
    let opened_at = Instant::now();
    let server = Client::new(server_url.clone(), "");
    let mut identities = Vec::with_capacity(instances.len());
    for instance in &instances {
        let key_path = instance.upper.join("var/lib/endstate/agent/agent-key");
        let agent_key = std::fs::read_to_string(&key_path)
            .with_context(|| key_path.display().to_string())?
            .trim()
            .to_string();
        let token = instance.metadata_token().await?;
        identities.push(Identity {
            document: instance
                .metadata(&token, "/latest/dynamic/instance-identity/document")
                .await?,
            signature: instance
                .metadata(&token, "/latest/dynamic/instance-identity/signature")
                .await?,
            token,
            agent_key,
        });
    }
    let instances = Arc::new(instances);
    let identities = Arc::new(identities);
    let opening = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let (ready_tx, mut ready_rx) = mpsc::channel::<String>(watchers.max(1));
    let mut tasks: JoinSet<Result<Instant>> = JoinSet::new();
    for k in 0..watchers {
        let (instances, identities, opening, server, ready) = (
            Arc::clone(&instances),
            Arc::clone(&identities),
            Arc::clone(&opening),
            server.clone(),
            ready_tx.clone(),
        );
        tasks.spawn(async move {
            let which = k % instances.len();
            let session = {
                let _turn = opening.acquire().await?;
                open_watcher(&server, &instances[which], &identities[which]).await?
            };
            watch(session, ready).await
        });
    }
    drop(ready_tx);
    let mut v1 = None;
    let open_deadline =
        Instant::now() + Duration::from_secs(60) + Duration::from_millis(300) * watchers as u32;
    for n in 0..watchers {
        let version = tokio::select! {
            version = ready_rx.recv() => version,
            failed = tasks.join_next() => {
                let error = match failed {
                    Some(Ok(Err(e))) => format!("{e:#}"),
                    Some(Err(e)) => e.to_string(),
                    _ => "ended early".to_string(),
                };
                bail!("a watcher failed while opening: {error}");
            }
            () = tokio::time::sleep_until(open_deadline.into()) => {
                bail!("only {n} of {watchers} watchers polling by the deadline");
            }
        };
        let version = version.context("the watchers ended before all were polling")?;
        if v1.get_or_insert_with(|| version.clone()) != &version {
            bail!("watchers were served different versions: {v1:?} and {version}");
        }
        if (n + 1) % 100 == 0 {
            eprintln!("agents: {} watchers polling", n + 1);
        }
    }
    eprintln!(
        "agents: {watchers} watchers polling, sessions opened in {:.1} s",
        opened_at.elapsed().as_secs_f64()
    );
    // Their polls reach the server.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let imds_with = imds_latency(&instances[0], &identities[0].token).await?;
    let before = process_figures(pid);
    let last_seq = {
        let mut after = 0;
        loop {
            let page = client.events_after(after, 1_000, None).await?;
            match page.last() {
                Some(last) => after = last.seq,
                None => break after,
            }
        }
    };

    // The change.
    let changed_wall = SystemTime::now();
    let changed = Instant::now();
    project.write_spec(&spec(&server_url, count, 2))?;

    let deadline = changed + CHANGE_LIMIT;
    let mut agent_times: Vec<Option<Duration>> = vec![None; instances.len()];
    let mut watcher_times = Vec::with_capacity(watchers);
    let mut failures = Vec::new();
    while agent_times.iter().any(Option::is_none) || !tasks.is_empty() {
        for (slot, instance) in agent_times.iter_mut().zip(instances.iter()) {
            if slot.is_none() && converged(instance, 2) {
                *slot = Some(changed.elapsed());
            }
        }
        while let Some(done) = tasks.try_join_next() {
            match done {
                Ok(Ok(received)) => watcher_times.push(received.duration_since(changed)),
                Ok(Err(e)) => failures.push(format!("{e:#}")),
                Err(e) => failures.push(e.to_string()),
            }
        }
        if Instant::now() > deadline {
            // Reported below as not reached, with the agents' failed runs.
            tasks.abort_all();
            eprintln!(
                "agents: {CHANGE_LIMIT:?} after the change, {} of {} agents and {} of {watchers} watchers have rev-2; stopped waiting",
                agent_times.iter().flatten().count(),
                instances.len(),
                watcher_times.len(),
            );
            break;
        }
        tokio::time::sleep(FILE_POLL).await;
    }
    let after = process_figures(pid);
    let sockets = host_tcp_sockets();
    if !failures.is_empty() {
        bail!(
            "{} watchers failed; the first: {}",
            failures.len(),
            failures[0]
        );
    }

    // The agents' own reports, for comparison: each instance's first
    // `config_converged` after the change.
    let mut reported: BTreeMap<String, Duration> = BTreeMap::new();
    let mut converge_runs = Vec::new();
    let mut failed_runs = 0;
    let mut after_event = last_seq;
    let events_deadline = Instant::now() + Duration::from_secs(10);
    while reported.len() < instances.len() && Instant::now() < events_deadline {
        let page = client.events_after(after_event, 1_000, Some("web")).await?;
        for event in &page {
            if event.kind == "config_converged" && !reported.contains_key(&event.subject) {
                let ms = event_ms(event)? - wall_ms(changed_wall);
                reported.insert(
                    event.subject.clone(),
                    Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
                );
                if let Some(run) = event.data["duration_ms"].as_u64() {
                    converge_runs.push(Duration::from_millis(run));
                }
            }
            if event.kind == "config_failed" {
                failed_runs += 1;
            }
        }
        match page.last() {
            Some(last) => after_event = last.seq,
            None => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }

    let mut event_times: Vec<Duration> = reported.into_values().collect();
    let mut agents: Vec<Duration> = agent_times.into_iter().flatten().collect();
    let mut all: Vec<Duration> = agents.iter().chain(&watcher_times).copied().collect();
    println!(
        "A change to a role (spec file written) reaching {} agents and {watchers} watchers, ms:",
        agents.len()
    );
    println!("| who | count | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    println!("{}", row("agents: file converged (upper dir)", &mut agents));
    println!("{}", row("watchers: config received", &mut watcher_times));
    println!("{}", row("all", &mut all));
    println!(
        "{}",
        row("agents: config_converged event", &mut event_times)
    );
    println!(
        "{}",
        row(
            "agents: the engine's run (report's duration_ms)",
            &mut converge_runs
        )
    );
    let missing = instances.len() - agents.len();
    if missing > 0 || watcher_times.len() < watchers {
        println!(
            "not reached within {CHANGE_LIMIT:?}: {missing} agents, {} watchers",
            watchers - watcher_times.len()
        );
    }
    println!(
        "agents' failed runs after the change (config_failed events): {failed_runs}; TCP sockets on the host at the end: {sockets}"
    );
    println!(
        "one metadata service request (curl as the instance's uid, process start included), median of 5: {:.0} ms before the watchers, {:.0} ms with them",
        imds_without.as_secs_f64() * 1000.0,
        imds_with.as_secs_f64() * 1000.0
    );
    if let (Some(before), Some(after)) = (&before, &after) {
        println!(
            "controller: RSS {:.1} MiB (peak {:.1} MiB), {} threads, {} descriptors; CPU {:.2} s in all, {:.2} s from the change to the last rev-2",
            after.rss_kib as f64 / 1024.0,
            after.peak_kib as f64 / 1024.0,
            after.threads,
            after.descriptors,
            after.cpu_seconds,
            after.cpu_seconds - before.cpu_seconds
        );
    }
    let p99 = percentile_ms(&all, 0.99);
    println!(
        "{}",
        serde_json::json!({
            "agents": agents.len(),
            "watchers": watcher_times.len(),
            "agents_ms": [percentile_ms(&agents, 0.5), percentile_ms(&agents, 0.9), percentile_ms(&agents, 0.99), percentile_ms(&agents, 1.0)],
            "watchers_ms": [percentile_ms(&watcher_times, 0.5), percentile_ms(&watcher_times, 0.9), percentile_ms(&watcher_times, 0.99), percentile_ms(&watcher_times, 1.0)],
            "all_p99_ms": p99,
            "agents_not_reached": missing,
            "watchers_not_reached": watchers - watcher_times.len(),
            "agents_failed_runs": failed_runs,
            "controller_rss_kib": after.as_ref().map(|a| a.rss_kib),
            "controller_cpu_s": after.as_ref().map(|a| a.cpu_seconds),
        })
    );
    drop(project);
    Ok(())
}
