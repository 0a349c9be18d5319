//! Benchmark of the simulated backend at the scale: loads 100,000
//! instances (directly, not over HTTP), then prints resident memory, the
//! rate of tag-filtered DescribeInstances pages of 1,000 (answered and
//! written as XML; no HTTP or signing), and the rate of RunInstances calls. Run it with `cargo run --release -p endstate-cloud
//! --bin cloud_bench [-- INSTANCES]`.
//!
//! Not a test: it asserts nothing and its figures go to BENCHMARKS.md.

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use endstate_clock::ManualClock;
use endstate_cloud::{Backend, SimulatedBackend, SimulatedConfig};
use endstate_wire::{
    DescribeInstancesRequest, Filter, Response as _, RunInstancesRequest, Tag, TagSpecification,
};

const IMAGE: &str = "ami-0e5c0f5d3b1e2a4f6";
const GROUPS: usize = 100;
const BATCH: u32 = 100;

/// Resident memory in KiB, from /proc/self/status (Linux only).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn run_request(count: u32, group: usize) -> RunInstancesRequest {
    RunInstancesRequest {
        image_id: IMAGE.to_string(),
        instance_type: Some("t3.micro".to_string()),
        min_count: count,
        max_count: count,
        client_token: None,
        availability_zone: None,
        subnet_id: None,
        security_group_ids: vec![],
        key_name: None,
        iam_instance_profile_name: None,
        user_data: None,
        block_device_mappings: vec![],
        metadata_options: None,
        tag_specifications: vec![TagSpecification {
            resource_type: "instance".to_string(),
            tags: vec![
                Tag::new("endstate:project", "bench"),
                Tag::new("endstate:group", format!("g{group}")),
                Tag::new("endstate:environment", "prod"),
                Tag::new("Name", format!("bench-g{group}")),
            ],
        }],
    }
}

fn describe(filter: &Filter, next_token: Option<String>) -> DescribeInstancesRequest {
    DescribeInstancesRequest {
        instance_ids: vec![],
        filters: vec![filter.clone()],
        max_results: Some(1000),
        next_token,
    }
}

/// Pages through every instance matching `filter`, each page written as
/// the XML a client would receive, repeatedly for about `budget`; returns
/// (pages, instances per pass, elapsed).
fn page_rate(
    backend: &SimulatedBackend,
    filter: &Filter,
    budget: Duration,
) -> Result<(u64, usize, Duration), Box<dyn Error>> {
    let started = Instant::now();
    let mut pages = 0;
    let mut per_pass = 0;
    while started.elapsed() < budget {
        let mut token = None;
        per_pass = 0;
        loop {
            let page = backend.describe_instances(&describe(filter, token))?;
            pages += 1;
            per_pass += page.instances().count();
            std::hint::black_box(page.to_xml());
            match page.next_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
    }
    Ok((pages, per_pass, started.elapsed()))
}

fn main() -> Result<(), Box<dyn Error>> {
    let instances: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 100_000,
    };
    let clock = ManualClock::new(Duration::from_secs(1_795_780_800));
    let mut config = SimulatedConfig::new("us-east-1");
    config.throttling = None;
    let backend = SimulatedBackend::new(config, Arc::new(clock.clone()));

    let rss_before = rss_kib().unwrap_or(0);
    let started = Instant::now();
    let calls = instances.div_ceil(BATCH as usize);
    for call in 0..calls {
        backend.run_instances(&run_request(BATCH, call % GROUPS))?;
    }
    let load = started.elapsed();
    clock.advance(Duration::from_secs(60));
    let rss_after = rss_kib().unwrap_or(0);
    let held = backend.len();
    println!("instances held: {held}");
    println!(
        "load: {calls} RunInstances calls of {BATCH} in {:.2} s",
        load.as_secs_f64()
    );
    println!(
        "memory: VmRSS {:.1} MiB after loading ({:.1} MiB for the instances, {:.2} KiB each)",
        rss_after as f64 / 1024.0,
        rss_after.saturating_sub(rss_before) as f64 / 1024.0,
        rss_after.saturating_sub(rss_before) as f64 / held.max(1) as f64
    );

    let budget = Duration::from_secs(3);
    let group = Filter {
        name: "tag:endstate:group".to_string(),
        values: vec!["g42".to_string()],
    };
    let (pages, per_pass, elapsed) = page_rate(&backend, &group, budget)?;
    println!(
        "DescribeInstances, tag:endstate:group (1 group of {GROUPS}, {per_pass} instances), pages of 1,000: {:.0} pages/s",
        pages as f64 / elapsed.as_secs_f64()
    );
    let project = Filter {
        name: "tag:endstate:project".to_string(),
        values: vec!["bench".to_string()],
    };
    let (pages, per_pass, elapsed) = page_rate(&backend, &project, budget)?;
    println!(
        "DescribeInstances, tag:endstate:project (all {per_pass} instances), pages of 1,000: {:.0} pages/s",
        pages as f64 / elapsed.as_secs_f64()
    );
    let state = Filter {
        name: "instance-state-name".to_string(),
        values: vec!["running".to_string()],
    };
    let (pages, per_pass, elapsed) = page_rate(&backend, &state, budget)?;
    println!(
        "DescribeInstances, instance-state-name (unindexed, {per_pass} instances), pages of 1,000: {:.0} pages/s",
        pages as f64 / elapsed.as_secs_f64()
    );

    let sparse = Filter {
        name: "instance-type".to_string(),
        values: vec!["c5.xlarge".to_string()],
    };
    let (pages, per_pass, elapsed) = page_rate(&backend, &sparse, budget)?;
    println!(
        "DescribeInstances, instance-type matching {per_pass} (unindexed: a full scan): {:.0} pages/s",
        pages as f64 / elapsed.as_secs_f64()
    );

    let started = Instant::now();
    let mut runs = 0u64;
    while started.elapsed() < budget {
        backend.run_instances(&run_request(1, 0))?;
        runs += 1;
    }
    println!(
        "RunInstances (1 instance each, onto {held} held): {:.0} calls/s",
        runs as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}
