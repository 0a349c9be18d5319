//! API calls and wall time of `endstate apply` launching 1,000 instances,
//! and of a no-op `endstate plan` over them, against a real moto server on
//! loopback, counted by the recording proxy in front of it.
//!
//!     cargo build --bin endstate && cargo run -p endstate-bench -- apply_moto
//!
//! Uses the `endstate` binary beside this program (same profile), or
//! `ENDSTATE_BIN`. moto must be installed (`scripts/setup-tools`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use endstate_bench::median_ms;
use endstate_testkit::moto::MotoServer;
use endstate_testkit::proxy::FaultProxy;

const INSTANCES: u32 = 1_000;

fn endstate_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("ENDSTATE_BIN") {
        return Ok(path.into());
    }
    let beside = std::env::current_exe()?
        .parent()
        .context("no directory")?
        .join("endstate");
    if !beside.exists() {
        bail!(
            "{} is missing: build it first (cargo build --bin endstate, same profile)",
            beside.display()
        );
    }
    Ok(beside)
}

/// CPU seconds (user + system) of this process's waited-for children, from
/// `/proc/self/stat` (fields 16 and 17, in clock ticks of 1/100 s).
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: field 3 is at index 0, so fields 16 and 17 are 13 and 14.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(13) + ticks(14)) / 100.0
}

/// Runs endstate; returns its wall time, its CPU seconds and its stdout.
fn run(bin: &PathBuf, dir: &std::path::Path, args: &[&str]) -> Result<(Duration, f64, String)> {
    let cpu_before = children_cpu();
    let started = Instant::now();
    let output = std::process::Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        bail!(
            "endstate {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok((
        elapsed,
        children_cpu() - cpu_before,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

fn calls(proxy: &FaultProxy) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for request in proxy.requests() {
        *counts
            .entry(request.action.unwrap_or_default())
            .or_default() += 1;
    }
    counts
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
pub async fn main() -> Result<()> {
    let bin = endstate_bin()?;
    let moto = MotoServer::try_start().await?;
    let proxy = FaultProxy::start(moto.url()).await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("endstate.yaml"),
        format!(
            "project: bench\nprovider:\n  aws:\n    region: us-east-1\n    endpoint: {}\ngroups:\n  fleet:\n    image: ami-0123456789abcdef0\n    instance_types: [m5.large]\n    capacity: {{ min: 900, desired: {INSTANCES}, max: 1200 }}\n    zones:\n      us-east-1a: []\n      us-east-1b: []\n",
            proxy.url()
        ),
    )?;
    let dir_path = dir.path().to_path_buf();

    let (apply_time, apply_cpu, _) = {
        let (bin, dir) = (bin.clone(), dir_path.clone());
        tokio::task::spawn_blocking(move || {
            run(&bin, &dir, &["apply", "--json", "--poll-interval", "0.5"])
        })
        .await??
    };
    let apply_calls = calls(&proxy);

    let mut plan_times = Vec::new();
    let mut plan_cpu = Vec::new();
    let mut plan_calls = BTreeMap::new();
    for _ in 0..5 {
        proxy.clear();
        let (bin, dir) = (bin.clone(), dir_path.clone());
        let (elapsed, cpu, stdout) =
            tokio::task::spawn_blocking(move || run(&bin, &dir, &["plan", "--json"])).await??;
        let plan: serde_json::Value = serde_json::from_str(&stdout)?;
        if plan["phases"].as_array().map(Vec::len) != Some(0) {
            bail!("the plan after apply is not empty: {stdout}");
        }
        plan_times.push(elapsed);
        plan_cpu.push(Duration::from_secs_f64(cpu));
        plan_calls = calls(&proxy);
    }

    let plan_ms = median_ms(&mut plan_times);
    let plan_cpu_ms = median_ms(&mut plan_cpu);
    println!("| run | wall time | endstate CPU | API calls |");
    println!("|---|---|---|---|");
    println!(
        "| apply, {INSTANCES} instances from nothing | {:.2} s | {apply_cpu:.2} s | {apply_calls:?} |",
        apply_time.as_secs_f64()
    );
    println!("| no-op plan over {INSTANCES} (median of 5) | {plan_ms:.0} ms | {plan_cpu_ms:.0} ms | {plan_calls:?} |");
    println!(
        "{}",
        serde_json::json!({
            "instances": INSTANCES,
            "apply_secs": apply_time.as_secs_f64(),
            "apply_cpu_secs": apply_cpu,
            "apply_calls": apply_calls,
            "noop_plan_ms": plan_ms,
            "noop_plan_cpu_ms": plan_cpu_ms,
            "noop_plan_calls": plan_calls,
        })
    );
    Ok(())
}
