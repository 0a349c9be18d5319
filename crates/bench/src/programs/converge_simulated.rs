//! Converging N instances (default 10,000) under EC2's default rate limits,
//! against the built-in cloud's simulated backend over real HTTP and SigV4,
//! on a clock sped up by a factor (default 50) that the cloud and endstate's
//! governor share — so the figures are in EC2 seconds. EC2's limits allow
//! 1,000 launches at once, then 2 per second: (N − 1,000) / 2 s is the bound
//! (4,500 s for 10,000); the design target is at most 1.1× that. Then a
//! no-op plan over the N instances: its describe pages and engine time.
//!
//!     cargo run --release -p endstate-bench -- converge_simulated [N FACTOR]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use endstate_clock::{ScaledClock, SharedClock};
use endstate_cloud::{serve, CloudConfig, Credentials, SimulatedConfig};
use endstate_exec::{
    observe, ApplyOptions, Executor, Governor, RateLimits, RetryPolicy, Session, Silent,
};
use endstate_model::{Capacity, DisruptionBudget, Group, MetadataOptions, Provider, Spec, Zone};
use endstate_plan::{plan, PlanOptions};
use endstate_provider::ec2::{Ec2Client, Ec2Config};
use endstate_state::{RunKind, RunOutcome, SqliteStore, Store};

fn spec(n: u32, image: &str) -> Arc<Spec> {
    Arc::new(Spec {
        load_balancers: Vec::new(),
        project: "converge".into(),
        environment: "default".into(),
        provider: Provider::Aws {
            region: "us-east-1".into(),
            endpoint: None,
            profile: None,
        },
        groups: vec![Group {
            name: "fleet".into(),
            image_id: image.into(),
            image_channel: None,
            instance_types: vec!["m5.large".into()],
            capacity: Capacity {
                min: 0,
                desired: n,
                max: n,
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
        }],
        hash: "bench".into(),
        roles: Default::default(),
        recipes: Default::default(),
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
pub async fn main() -> Result<()> {
    let args: Vec<String> = endstate_bench::program_args().collect();
    let n: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let factor: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(50.0);
    let clock: SharedClock = Arc::new(ScaledClock::new(factor));

    let simulated = SimulatedConfig::new("us-east-1");
    let image = simulated.images[0].image_id.clone();
    let cloud = serve(CloudConfig {
        port: 0,
        credentials: Credentials::new().with("bench", "bench-secret"),
        simulated,
        clock: clock.clone(),
    })
    .await?;
    let client = Ec2Client::with_static_credentials(
        Ec2Config::new("us-east-1").with_endpoint(cloud.url()),
        "bench",
        "bench-secret",
        None,
    )?;
    let governor = Arc::new(Governor::new(
        Arc::new(client),
        clock.clone(),
        &RateLimits::ec2_defaults(),
        RetryPolicy::default(),
        Arc::new(Silent),
    ));
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(
        dir.path().join("state.db"),
        clock.clone(),
    )?);
    let spec = spec(n, &image);
    let (_cancel_tx, cancel) = tokio::sync::watch::channel(false);
    let executor = Executor::new(
        governor.clone(),
        clock.clone(),
        Arc::new(Silent),
        ApplyOptions {
            max_concurrency: 8,
            wait_timeout: Duration::from_secs(3_600),
            poll_interval: Duration::from_secs(5),
        },
        cancel,
    );

    let started_ec2 = clock.now();
    let started_wall = Instant::now();
    let session = Arc::new(
        Session::begin(
            store.clone(),
            clock.clone(),
            "bench",
            Duration::from_secs(60),
            RunKind::Apply,
            "bench",
            "default",
        )
        .await?,
    );
    let observed = observe(governor.as_ref(), &spec.project).await?;
    let first = plan(&spec, &observed, &PlanOptions::default());
    let report = executor.apply(&session, &spec, &first).await?;
    let ec2_secs = (clock.now() - started_ec2).as_secs_f64();
    let wall_secs = started_wall.elapsed().as_secs_f64();
    if let Ok(session) = Arc::try_unwrap(session) {
        session
            .finish(RunOutcome::Succeeded, serde_json::json!({}))
            .await?;
    }
    let converge_stats = governor.stats();

    // The no-op plan over what was just made.
    let describes_before = converge_stats
        .calls
        .get("DescribeInstances")
        .copied()
        .unwrap_or(0);
    let read_started = Instant::now();
    let observed = observe(governor.as_ref(), &spec.project).await?;
    let read_ms = read_started.elapsed().as_secs_f64() * 1000.0;
    let plan_started = Instant::now();
    let noop = plan(&spec, &observed, &PlanOptions::default());
    let plan_ms = plan_started.elapsed().as_secs_f64() * 1000.0;
    let pages = governor
        .stats()
        .calls
        .get("DescribeInstances")
        .copied()
        .unwrap_or(0)
        - describes_before;

    let bound = f64::from(n.saturating_sub(1_000)) / 2.0;
    let runs = converge_stats
        .calls
        .get("RunInstances")
        .copied()
        .unwrap_or(0);
    println!("| measure | value |");
    println!("|---|---|");
    println!("| instances launched | {} |", report.launched.len());
    println!("| EC2 seconds to converge (clock ×{factor}) | {ec2_secs:.0} s |");
    println!("| EC2 limits' bound, (N − 1,000) / 2 | {bound:.0} s |");
    if bound > 0.0 {
        println!("| ratio to the bound | {:.3} |", ec2_secs / bound);
    }
    println!("| wall time | {wall_secs:.1} s |");
    println!(
        "| RunInstances calls (ceil(N/1,000) = {}) | {runs} |",
        n.div_ceil(1_000)
    );
    println!(
        "| throttled by the cloud / retries | {} / {} |",
        converge_stats.throttled, converge_stats.retries
    );
    println!(
        "| no-op plan: describe pages (ceil(N/1,000) = {}) | {pages} |",
        n.div_ceil(1_000)
    );
    println!("| no-op plan: reading them (HTTP, SigV4, XML; wall) | {read_ms:.0} ms |");
    println!("| no-op plan: planning (engine) | {plan_ms:.1} ms |");
    println!("| no-op plan: actions | {} |", noop.phases.len());
    println!(
        "{}",
        serde_json::json!({
            "instances": n, "factor": factor, "ec2_secs": ec2_secs, "bound_secs": bound,
            "wall_secs": wall_secs, "run_instances_calls": runs, "throttled": converge_stats.throttled,
            "retries": converge_stats.retries, "noop_pages": pages, "noop_read_ms": read_ms,
            "noop_plan_ms": plan_ms, "noop_phases": noop.phases.len(),
        })
    );
    cloud.shutdown().await?;
    Ok(())
}
