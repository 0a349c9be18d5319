//! The process backend running N instances at once (default 100): each is
//! real — its own address, overlay root, namespaces (as root), metadata
//! service and supervisor — and boots from user data that starts a service.
//! Prints, from one RunInstances call of N over real HTTP and SigV4:
//! - time from the launch call to each instance's user data finished (from
//!   its `status.json`), as min / p50 / p90 / max;
//! - memory per instance: the proportional set size (PSS, shared pages split
//!   among their users) of each instance's process tree, and the cloud
//!   server's own growth;
//! - status-check detection: SIGKILL of one instance's top process → its
//!   DescribeInstanceStatus answer turns `impaired` (probe interval 2 s);
//! - terminating all N.
//!
//!     cargo build -p endstate && cargo run --release -p endstate-bench -- process_fleet [N]
//!
//! The instances run `endstate cloud instance-init` from the endstate binary
//! beside this program (`target/<profile>/endstate`), or `$ENDSTATE_BIN`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use endstate_bench::serve::endstate_binary;
use endstate_cloud::process::{ProcessBackend, ProcessConfig};
use endstate_cloud::{serve_state, CloudState, Credentials, SimulatedConfig};
use endstate_provider::ec2::{Ec2Client, Ec2Config};
use endstate_provider::{describe_all, Filter, LaunchRequest, Provider as _};

const USER_DATA: &str = "#cloud-config
write_files:
  - path: /etc/endstate/services/idle.json
    content: '{\"command\": [\"sleep\", \"3600\"], \"restart\": \"always\"}'
runcmd:
  - echo booted
";

/// Parent PID of every process on the host.
fn parents() -> BTreeMap<u32, u32> {
    let mut map = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return map;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            map.insert(pid, ppid);
        }
    }
    map
}

/// `top` and all its descendants.
fn tree(top: u32, parents: &BTreeMap<u32, u32>) -> BTreeSet<u32> {
    let mut found = BTreeSet::from([top]);
    loop {
        let before = found.len();
        for (pid, ppid) in parents {
            if found.contains(ppid) {
                found.insert(*pid);
            }
        }
        if found.len() == before {
            return found;
        }
    }
}

/// A field of `/proc/PID/smaps_rollup` or `/proc/PID/status`, in KiB.
fn kib(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn rfc3339(text: &str) -> Option<SystemTime> {
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    let nanos = u64::try_from(at.unix_timestamp_nanos()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
}

async fn instance_status(client: &Ec2Client, id: &str) -> Result<String> {
    let answer = client
        .describe_instance_status(&endstate_wire::DescribeInstanceStatusRequest {
            instance_ids: vec![id.to_string()],
            include_all_instances: Some(true),
            ..Default::default()
        })
        .await?;
    Ok(answer
        .statuses
        .first()
        .map(|s| s.instance_status.clone())
        .unwrap_or_default())
}

#[tokio::main]
pub async fn main() -> Result<()> {
    let n: u32 = endstate_bench::number_arg(1, "N (instances)", 100)?;
    let dir = tempfile::tempdir()?;
    let server_rss_before = kib("/proc/self/status", "VmRSS:");

    let mut config = ProcessConfig::new(dir.path());
    let endstate = endstate_binary()?;
    config.init_command = vec![
        endstate.clone().into(),
        "cloud".into(),
        "instance-init".into(),
    ];
    config.extra_binds = vec![(endstate, PathBuf::from("/opt/endstate/bin/endstate"))];
    config.ec2 = SimulatedConfig::new("us-east-1");
    config.ec2.images.clear();
    config.ec2.throttling = None;
    let backend = ProcessBackend::open(config)?;
    let image = backend.base_image_id().to_string();
    println!(
        "process backend: isolation {:?}, {n} instances of {image}",
        backend.isolation()
    );
    let cloud = serve_state(
        0,
        CloudState::new(
            Arc::clone(&backend) as Arc<dyn endstate_cloud::Backend>,
            Credentials::new().with("bench", "bench"),
        ),
    )
    .await?;
    let client = Ec2Client::with_static_credentials(
        Ec2Config::new("us-east-1").with_endpoint(cloud.url()),
        "bench",
        "bench",
        None,
    )?;

    let launched_at = SystemTime::now();
    let started = Instant::now();
    let instances = client
        .run_instances(&LaunchRequest {
            image_id: image,
            instance_type: "t3.micro".into(),
            count: n,
            zone: "us-east-1a".into(),
            subnet_id: None,
            security_group_ids: vec![],
            key_name: None,
            iam_instance_profile: None,
            root_volume: None,
            metadata: endstate_model::MetadataOptions::default(),
            user_data: Some(USER_DATA.as_bytes().to_vec()),
            tags: BTreeMap::from([("bench".to_string(), "process".to_string())]),
            client_token: "bench-process-fleet".into(),
        })
        .await?;
    let call = started.elapsed();
    let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
    println!(
        "RunInstances of {n}: answered in {:.0} ms",
        call.as_secs_f64() * 1e3
    );

    // Wait for every boot to finish (bounded).
    let mut finished: BTreeMap<String, Duration> = BTreeMap::new();
    while finished.len() < ids.len() {
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "only {} of {n} instances finished booting in 600 s",
                finished.len()
            );
        }
        for id in &ids {
            if finished.contains_key(id) {
                continue;
            }
            let path = backend.instance_dir(id).join("status.json");
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Ok(status) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            match status["boot"].as_str() {
                Some("finished") => {
                    let at = status["boot_finished"].as_str().and_then(rfc3339);
                    let took = at
                        .and_then(|at| at.duration_since(launched_at).ok())
                        .unwrap_or_else(|| started.elapsed());
                    finished.insert(id.clone(), took);
                }
                Some("failed") => bail!("{id} failed to boot: {status}"),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut times: Vec<Duration> = finished.values().copied().collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "launch call → user data finished, per instance: min {:.0} ms, p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        ms(times[0]),
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.9)),
        ms(times[times.len() - 1])
    );

    // Memory: the instances' process trees, and the server's growth.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let parents = parents();
    let (mut pss, mut rss, mut processes) = (0u64, 0u64, 0usize);
    for id in &ids {
        let Some(top) = backend.top_process(id) else {
            bail!("{id} has no top process");
        };
        for pid in tree(top, &parents) {
            pss += kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:");
            rss += kib(&format!("/proc/{pid}/status"), "VmRSS:");
            processes += 1;
        }
    }
    let server_rss = kib("/proc/self/status", "VmRSS:");
    println!(
        "memory per instance: {:.1} MiB PSS ({:.1} MiB RSS), {:.1} processes; cloud server grew {:.1} MiB for {n} instances",
        pss as f64 / 1024.0 / f64::from(n),
        rss as f64 / 1024.0 / f64::from(n),
        processes as f64 / f64::from(n),
        server_rss.saturating_sub(server_rss_before) as f64 / 1024.0
    );

    // Status-check detection after SIGKILL of one instance's top process.
    let victim = &ids[0];
    while instance_status(&client, victim).await? != "ok" {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let top = backend
        .top_process(victim)
        .context("victim has no top process")?;
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(top)?),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    loop {
        if instance_status(&client, victim).await? == "impaired" {
            break;
        }
        if killed.elapsed() > Duration::from_secs(60) {
            bail!("{victim} not reported impaired 60 s after SIGKILL");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "status check: SIGKILL of {victim}'s top process → impaired in {:.0} ms (probe interval 2 s)",
        ms(killed.elapsed())
    );

    let terminating = Instant::now();
    for chunk in ids.chunks(1000) {
        client.terminate_instances(chunk).await?;
    }
    loop {
        let (live, _) = describe_all(
            &client,
            &[Filter::new(
                "instance-state-name",
                ["pending", "running", "stopping", "stopped", "shutting-down"],
            )],
        )
        .await?;
        if live.is_empty() {
            break;
        }
        if terminating.elapsed() > Duration::from_secs(300) {
            bail!(
                "{} instances still live 300 s after TerminateInstances",
                live.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "terminate all {n}: {:.0} ms until none is live",
        ms(terminating.elapsed())
    );
    cloud.shutdown().await?;
    Ok(())
}
