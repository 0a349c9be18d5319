//! The controller (`endstate serve`'s core) keeping G groups of S instances
//! (default 100 × 100 = 10,000) at their desired state, against the built-in
//! cloud's simulated backend over real HTTP and SigV4, both in this process.
//! Prints:
//! - (a) time to converge from nothing: until every group's view has
//!   `live == desired`, and until the controller sees every instance running;
//! - (b) steady state: a full reconcile pass over every group (started by
//!   `resume` on each group, which triggers one reconcile), its wall time and
//!   the per-group reconcile durations (p50 / p99 / max, from
//!   `GroupView.last_reconcile.duration_ms`);
//! - (c) process CPU (user + system, `getrusage`) per full pass and per
//!   observation of all instances (the observer's read of every instance,
//!   their status checks and CPU), split into the cloud server's share (its
//!   own runtime's threads, named `cloud`, from `/proc/self/task`) and the
//!   rest (controller, HTTP client, SigV4 signing, this program's polling);
//! - (d) healing: 1% of the instances (spread over the groups) terminated
//!   directly through the cloud's API, until the controller sees every group
//!   back at its size with none of them.
//!
//! Rate limits are off on both sides (`RateLimits::unlimited()` in the
//! governor, no throttling in the cloud) and the clock is the system's, so
//! every figure is wall time and CPU of this machine: what the controller
//! itself costs. Converging under EC2's default limits is
//! `converge_simulated`'s figure (bounded by 2 launches per second). New
//! instances stay `pending` for the simulated 15 s. The period is 1 h and the
//! observer runs every 5 s, so steady-state work is only what this program
//! triggers and the observer.
//!
//!     cargo run --release -p endstate-bench -- serve_reconcile [GROUPS SIZE]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use endstate_clock::{SharedClock, SystemClock};
use endstate_cloud::{serve, CloudConfig, Credentials, RunningCloud, SimulatedConfig};
use endstate_controller::view::ControllerApi;
use endstate_controller::{Controller, Options, Parts, SpecSource, ThrottleCounter};
use endstate_exec::{Governor, RateLimits, Reporter, RetryPolicy, Session};
use endstate_model::{Capacity, DisruptionBudget, Group, MetadataOptions, Provider, Spec, Zone};
use endstate_provider::ec2::{Ec2Client, Ec2Config};
use endstate_provider::{describe_all, Filter, Provider as _};
use endstate_state::{RunKind, SqliteStore, Store};
use nix::sys::resource::{getrusage, UsageWho};

const OBSERVE_EVERY: Duration = Duration::from_secs(5);
const PASSES: usize = 5;
/// Every phase gives up after this long.
const PHASE_LIMIT: Duration = Duration::from_secs(120);

fn spec(groups: u32, size: u32, image: &str) -> Spec {
    let group = |i: u32| Group {
        name: format!("g{i:03}"),
        image_id: image.into(),
        image_channel: None,
        instance_types: vec!["m5.large".into()],
        capacity: Capacity {
            min: 0,
            desired: size,
            max: size,
        },
        zones: ["us-east-1a", "us-east-1b", "us-east-1c"]
            .iter()
            .map(|z| Zone {
                name: (*z).into(),
                subnet_ids: vec![],
            })
            .collect(),
        security_group_ids: vec![],
        key_name: None,
        iam_instance_profile: None,
        root_volume: None,
        metadata: MetadataOptions::default(),
        tags: Default::default(),
        user_data: None,
        budget: DisruptionBudget::default(),
        health_check: None,
        brake: Default::default(),
        scaling: Default::default(),
        load_balancer: None,
        rollout: None,
        roles: Vec::new(),
    };
    Spec {
        load_balancers: Vec::new(),
        project: "serve-bench".into(),
        environment: "default".into(),
        provider: Provider::Aws {
            region: "us-east-1".into(),
            endpoint: None,
            profile: None,
        },
        groups: (0..groups).map(group).collect(),
        hash: "bench".into(),
        roles: Default::default(),
        recipes: Default::default(),
    }
}

/// CPU time (user + system) of the whole process so far.
fn process_cpu() -> Result<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).context("getrusage(RUSAGE_SELF)")?;
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_micros(
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
                + u64::try_from(t.tv_usec()).unwrap_or(0),
        )
    };
    Ok(tv(usage.user_time()) + tv(usage.system_time()))
}

/// CPU time (user + system) of this process's threads named `prefix…`, from
/// `/proc/self/task/*/stat` (fields 14 and 15, in ticks of 1/100 s).
fn threads_cpu(prefix: &str) -> Duration {
    let mut ticks = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(prefix) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        for index in [11, 12] {
            ticks += fields
                .get(index)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_millis(ticks * 10)
}

/// Process CPU and the cloud threads' share, at one moment.
#[derive(Clone, Copy)]
struct Cpu {
    total: Duration,
    cloud: Duration,
}

impl Cpu {
    fn now() -> Result<Self> {
        Ok(Self {
            total: process_cpu()?,
            cloud: threads_cpu("cloud"),
        })
    }

    /// (total, cloud, rest) since `earlier`, in ms.
    fn since(&self, earlier: &Cpu) -> (f64, f64, f64) {
        let total = self.total.saturating_sub(earlier.total).as_secs_f64() * 1000.0;
        let cloud = self.cloud.saturating_sub(earlier.cloud).as_secs_f64() * 1000.0;
        (total, cloud, total - cloud)
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Polls `done` every 200 ms until it holds; fails after [`PHASE_LIMIT`].
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> Result<Duration> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > PHASE_LIMIT {
            bail!("{what}: not done after {PHASE_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(started.elapsed())
}

fn all_at_desired(api: &dyn ControllerApi) -> bool {
    api.groups().iter().all(|g| g.live == g.desired)
}

/// Every instance the controller sees is running, `total` of them, none of `gone`.
fn all_running(api: &dyn ControllerApi, total: usize, gone: &BTreeSet<String>) -> bool {
    api.instances(None).is_ok_and(|list| {
        list.len() == total
            && list
                .iter()
                .all(|i| i.state == "running" && !gone.contains(&i.id))
    })
}

fn calls(governor: &Governor, action: &str) -> u64 {
    governor.stats().calls.get(action).copied().unwrap_or(0)
}

pub fn main() -> Result<()> {
    let args: Vec<String> = endstate_bench::program_args().collect();
    let groups: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let size: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100);
    let clock: SharedClock = Arc::new(SystemClock);

    // The cloud on its own runtime, whose threads are named `cloud`: their
    // CPU is the cloud server's share.
    let cloud_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("cloud")
        .enable_all()
        .build()?;
    let mut simulated = SimulatedConfig::new("us-east-1");
    simulated.throttling = None;
    let image = simulated.images[0].image_id.clone();
    let cloud = cloud_runtime.block_on(serve(CloudConfig {
        port: 0,
        credentials: Credentials::new().with("bench", "bench-secret"),
        simulated,
        clock: clock.clone(),
    }))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("controller")
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(groups, size, &image, &cloud, clock));
    cloud_runtime.block_on(cloud.shutdown())?;
    result
}

async fn run(
    groups: u32,
    size: u32,
    image: &str,
    cloud: &RunningCloud,
    clock: SharedClock,
) -> Result<()> {
    let total = usize::try_from(groups * size)?;
    let ec2 = || {
        Ec2Client::with_static_credentials(
            Ec2Config::new("us-east-1").with_endpoint(cloud.url()),
            "bench",
            "bench-secret",
            None,
        )
    };
    let counters = Controller::counters();
    let reporter: Arc<dyn Reporter> = Arc::new(ThrottleCounter(Arc::clone(&counters)));
    let governor = Arc::new(Governor::new(
        Arc::new(ec2()?),
        clock.clone(),
        &RateLimits::unlimited(),
        RetryPolicy::default(),
        reporter,
    ));
    // Outside the controller: terminates instances as a failure would.
    let direct = ec2()?;
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(
        dir.path().join("state.db"),
        clock.clone(),
    )?);
    let spec = spec(groups, size, image);
    let session = Arc::new(
        Session::begin(
            store.clone(),
            clock.clone(),
            "endstate serve",
            Duration::from_secs(60),
            RunKind::Serve,
            &spec.hash,
            &spec.environment,
        )
        .await?,
    );

    // (a) Converging from nothing.
    let cpu_start = Cpu::now()?;
    let started = Instant::now();
    let calls_gov = Arc::clone(&governor);
    let controller = Controller::start(
        Parts {
            clock: clock.clone(),
            provider: governor.clone(),
            // No load balancer in this benchmark's spec.
            load_balancing: None,
            api_calls: Box::new(move || calls_gov.stats().calls),
            store,
            session,
            spec,
            source: SpecSource {
                path: None,
                environment: None,
            },
            options: Options {
                period: Duration::from_secs(3_600),
                observe_every: OBSERVE_EVERY,
                ..Options::default()
            },
        },
        counters,
    )
    .await?;
    let api = controller.api();
    let result = measure(&*api, &governor, &direct, groups, total, started, cpu_start).await;
    controller.shutdown().await;
    result
}

async fn measure(
    api: &dyn ControllerApi,
    governor: &Governor,
    direct: &Ec2Client,
    groups: u32,
    total: usize,
    started: Instant,
    cpu_start: Cpu,
) -> Result<()> {
    let none = BTreeSet::new();
    wait_for("converging: live == desired", || all_at_desired(api)).await?;
    let at_desired = started.elapsed();
    wait_for("converging: all running", || all_running(api, total, &none)).await?;
    let all_up = started.elapsed();
    let converge_cpu = Cpu::now()?.since(&cpu_start);
    let runs = calls(governor, "RunInstances");

    // Let the launches' reconciles finish: they poll for `running` every
    // 2 s (the executor's default).
    tokio::time::sleep(Duration::from_secs(5)).await;

    // (c) Observations alone: a window with nothing else to do.
    let window = OBSERVE_EVERY * 4;
    let (describe0, status0) = (
        calls(governor, "DescribeInstances"),
        calls(governor, "DescribeInstanceStatus"),
    );
    let cpu0 = Cpu::now()?;
    tokio::time::sleep(window).await;
    let observe_cpu = Cpu::now()?.since(&cpu0);
    let describes = calls(governor, "DescribeInstances") - describe0;
    let status_calls = calls(governor, "DescribeInstanceStatus") - status0;
    // Nothing else reads the instances in this window: the observer's
    // reads are its pages over the whole project.
    let pages_per_observation = total.div_ceil(1_000).max(1) as f64;
    let observations = describes as f64 / pages_per_observation;

    // (b) Full passes: resume every group (each triggers one reconcile),
    // wait for every group's reconcile count to move. A pass that an
    // observation overlapped (DescribeInstanceStatus calls during it) is
    // measured again, up to 3 × PASSES tries.
    let mut pass_ms = Vec::new();
    let mut pass_cpu = Vec::new();
    let mut durations: Vec<u64> = Vec::new();
    let mut overlapped = 0;
    let names: Vec<String> = api.groups().into_iter().map(|g| g.name).collect();
    for _ in 0..PASSES * 3 {
        if pass_ms.len() == PASSES {
            break;
        }
        let before: BTreeMap<String, u64> = api
            .groups()
            .into_iter()
            .map(|g| (g.name, g.reconciles))
            .collect();
        let status_before = calls(governor, "DescribeInstanceStatus");
        let cpu0 = Cpu::now()?;
        let pass_started = Instant::now();
        for name in &names {
            api.resume(name)
                .await
                .map_err(|e| anyhow::anyhow!("resume {name}: {e}"))?;
        }
        wait_for("a full pass", || {
            api.groups()
                .iter()
                .all(|g| g.reconciles > before.get(&g.name).copied().unwrap_or(0))
        })
        .await?;
        let took = pass_started.elapsed();
        let cpu = Cpu::now()?.since(&cpu0);
        if calls(governor, "DescribeInstanceStatus") != status_before {
            overlapped += 1;
            continue;
        }
        pass_ms.push(took.as_secs_f64() * 1000.0);
        pass_cpu.push(cpu);
        durations.extend(
            api.groups()
                .iter()
                .filter_map(|g| g.last_reconcile.as_ref().map(|r| r.duration_ms)),
        );
    }
    if pass_ms.is_empty() {
        bail!("every pass overlapped an observation");
    }
    durations.sort_unstable();

    // What this program's polling costs: one call of each view.
    let mut groups_ms = Vec::new();
    let mut instances_ms = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let _ = api.groups();
        groups_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let _ = api.instances(None);
        instances_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    // (d) Healing: terminate 1% (at least one), spread over the groups.
    let (listed, _) = describe_all(
        direct,
        &[
            Filter::tag(endstate_model::tags::PROJECT, "serve-bench"),
            Filter::new("instance-state-name", ["running"]),
        ],
    )
    .await?;
    let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for instance in listed {
        let group = instance
            .tag(endstate_model::tags::GROUP)
            .unwrap_or("")
            .to_string();
        by_group.entry(group).or_default().push(instance.id);
    }
    let kill = (total / 100).max(1);
    let mut victims = BTreeSet::new();
    let mut round = 0;
    while victims.len() < kill {
        for ids in by_group.values() {
            if victims.len() < kill {
                if let Some(id) = ids.get(round) {
                    victims.insert(id.clone());
                }
            }
        }
        round += 1;
        if round > usize::try_from(groups)? * 100 {
            bail!("cannot find {kill} instances to terminate");
        }
    }
    let ids: Vec<String> = victims.iter().cloned().collect();
    // The observer reads status checks in batches of STATUS_BATCH ids:
    // one such call, directly.
    let batch: Vec<String> = by_group
        .values()
        .flatten()
        .take(endstate_provider::STATUS_BATCH)
        .cloned()
        .collect();
    let status_probe =
        match endstate_provider::Provider::describe_instance_status(direct, &batch).await {
            Ok(list) => format!("{} statuses for {} ids", list.len(), batch.len()),
            Err(error) => format!("error: {error}"),
        };
    let heal_cpu0 = Cpu::now()?;
    let heal_started = Instant::now();
    direct.terminate_instances(&ids).await?;
    wait_for("healing: the controller sees them gone", || {
        api.instances(None).is_ok_and(|list| {
            !list
                .iter()
                .any(|i| victims.contains(&i.id) && i.state == "running")
        })
    })
    .await?;
    let seen = heal_started.elapsed();
    wait_for("healing: back at desired", || all_at_desired(api)).await?;
    let relaunched = heal_started.elapsed();
    wait_for("healing: all running", || all_running(api, total, &victims)).await?;
    let healed = heal_started.elapsed();
    let heal_cpu = Cpu::now()?.since(&heal_cpu0);

    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut pass_total: Vec<f64> = pass_cpu.iter().map(|c| c.0).collect();
    let mut pass_cloud: Vec<f64> = pass_cpu.iter().map(|c| c.1).collect();
    let mut pass_rest: Vec<f64> = pass_cpu.iter().map(|c| c.2).collect();
    let pass_wall = median(&mut pass_ms.clone());
    let pass_max = pass_ms.iter().copied().fold(0.0, f64::max);
    let (p_total, p_cloud, p_rest) = (
        median(&mut pass_total),
        median(&mut pass_cloud),
        median(&mut pass_rest),
    );
    let per_obs = |ms: f64| {
        if observations > 0.0 {
            ms / observations
        } else {
            0.0
        }
    };

    println!(
        "| measure ({groups} groups × {} = {total} instances) | value |",
        total / usize::try_from(groups)?
    );
    println!("|---|---|");
    println!(
        "| (a) start → every group live == desired | {:.1} s |",
        at_desired.as_secs_f64()
    );
    println!(
        "| (a) start → all {total} seen running (pending 15 s) | {:.1} s |",
        all_up.as_secs_f64()
    );
    println!("| (a) RunInstances calls | {runs} |");
    println!(
        "| (a) CPU while converging: total / cloud / rest | {:.2} s / {:.2} s / {:.2} s |",
        converge_cpu.0 / 1000.0,
        converge_cpu.1 / 1000.0,
        converge_cpu.2 / 1000.0
    );
    println!(
        "| (b) full pass over {groups} groups, wall (median / max of {}) | {pass_wall:.0} ms / {pass_max:.0} ms |",
        pass_ms.len()
    );
    println!(
        "| (b) one group's reconcile ({} samples): p50 / p99 / max | {} / {} / {} ms |",
        durations.len(),
        percentile(&durations, 50.0),
        percentile(&durations, 99.0),
        percentile(&durations, 100.0)
    );
    println!("| (b) passes redone because an observation overlapped | {overlapped} |");
    println!(
        "| (c) CPU per full pass (median): total / cloud / rest | {p_total:.0} / {p_cloud:.0} / {p_rest:.0} ms |"
    );
    println!(
        "| (c) observations in a {} s window (DescribeInstances pages / status calls) | {observations:.1} ({describes} / {status_calls}) |",
        window.as_secs()
    );
    println!(
        "| (c) CPU per observation of {total}: total / cloud / rest | {:.0} / {:.0} / {:.0} ms |",
        per_obs(observe_cpu.0),
        per_obs(observe_cpu.1),
        per_obs(observe_cpu.2)
    );
    println!(
        "| (c) DescribeInstanceStatus of {} ids, directly | {status_probe} |",
        endstate_provider::STATUS_BATCH
    );
    println!(
        "| this program's polling: one `groups()` / one `instances(None)` (median of 5) | {:.1} / {:.1} ms |",
        median(&mut groups_ms),
        median(&mut instances_ms)
    );
    println!("| (d) terminated through the cloud's API | {kill} |");
    println!(
        "| (d) → the controller sees them gone | {:.1} s |",
        seen.as_secs_f64()
    );
    println!(
        "| (d) → every group live == desired | {:.1} s |",
        relaunched.as_secs_f64()
    );
    println!(
        "| (d) → all {total} running, none of them | {:.1} s |",
        healed.as_secs_f64()
    );
    println!(
        "| (d) CPU while healing: total / cloud / rest | {:.2} s / {:.2} s / {:.2} s |",
        heal_cpu.0 / 1000.0,
        heal_cpu.1 / 1000.0,
        heal_cpu.2 / 1000.0
    );
    println!(
        "{}",
        serde_json::json!({
            "groups": groups, "instances": total,
            "converge_desired_s": at_desired.as_secs_f64(), "converge_running_s": all_up.as_secs_f64(),
            "run_instances_calls": runs, "converge_cpu_ms": converge_cpu,
            "pass_wall_ms": pass_ms, "reconcile_ms_p50": percentile(&durations, 50.0),
            "reconcile_ms_p99": percentile(&durations, 99.0), "reconcile_ms_max": percentile(&durations, 100.0),
            "pass_cpu_ms": pass_cpu, "observations": observations, "observe_window_cpu_ms": observe_cpu,
            "killed": kill, "heal_seen_s": seen.as_secs_f64(), "heal_desired_s": relaunched.as_secs_f64(),
            "heal_running_s": healed.as_secs_f64(), "heal_cpu_ms": heal_cpu,
        })
    );
    Ok(())
}
