//! Throttling: the proxy enforces EC2's documented default token buckets in
//! front of moto. With its client-side buckets (the default), endstate
//! completes an apply of 16 RunInstances calls (over the 5-call burst)
//! without EC2 ever throttling it, and shows its waits; with them off, EC2
//! throttles, the retries absorb it, and the apply still completes.

use crate::common;

use common::{group, GroupSpec, World};

fn eight_groups() -> Vec<GroupSpec> {
    (0..8).map(|i| group(&format!("g{i}"), 1, 2, 4)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_buckets_keep_apply_under_ec2_limits_and_show_the_waits() {
    let world = World::new("throttled").await;
    world.write_spec(&eight_groups());
    world.proxy.throttle_like_ec2(true);

    let output = world.run(&["apply", "--poll-interval", "0.2"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "apply failed:\n{stderr}");

    let requests = world.requests();
    let runs = requests
        .iter()
        .filter(|r| r.action.as_deref() == Some("RunInstances"))
        .count();
    assert_eq!(runs, 16, "one call per group and zone");
    let throttled: Vec<u64> = requests
        .iter()
        .filter(|r| r.throttled())
        .map(|r| r.seq)
        .collect();
    assert!(
        throttled.is_empty(),
        "EC2's buckets were exceeded at requests {throttled:?}"
    );
    assert!(
        stderr.contains("RunInstances: rate limit reached"),
        "the waits are not shown:\n{stderr}"
    );
    // 16 calls, 5 at once then 2 per second: at least 5.5 s between the first and the last.
    let run_times: Vec<_> = requests
        .iter()
        .filter(|r| r.action.as_deref() == Some("RunInstances"))
        .map(|r| r.arrived)
        .collect();
    let spread = *run_times.iter().max().unwrap() - *run_times.iter().min().unwrap();
    assert!(spread.as_secs_f64() >= 5.4, "16 launches within {spread:?}");
    let live = world.live_by_group().await;
    assert!(live.values().all(|ids| ids.len() == 2), "{live:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_throttling_is_absorbed_by_retries() {
    let world = World::new("unlimited").await;
    world.write_spec(&eight_groups());
    world.proxy.throttle_like_ec2(true);

    let output = world
        .run(&["apply", "--rate-limits", "off", "--poll-interval", "0.2"])
        .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "apply failed:\n{stderr}");
    let throttled = world.requests().iter().filter(|r| r.throttled()).count();
    assert!(
        throttled > 0,
        "without client buckets, EC2 should have throttled"
    );
    assert!(stderr.contains("throttled by the endpoint"), "{stderr}");
    let live = world.live_by_group().await;
    assert_eq!(live.values().map(Vec::len).sum::<usize>(), 16, "{live:?}");
}
