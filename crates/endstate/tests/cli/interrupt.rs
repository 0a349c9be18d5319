//! Ctrl-C during an apply: no new launches start, the calls in flight finish
//! and are recorded, the run ends as interrupted with exit code 130 and
//! releases the lock; the next apply finishes the job exactly.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::{group, GroupSpec, World};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_new_launches_and_a_rerun_finishes() {
    let world = World::new("interrupt").await;
    let groups: Vec<GroupSpec> = (0..8).map(|i| group(&format!("g{i}"), 1, 2, 4)).collect();
    world.write_spec(&groups);

    // 16 launches at EC2's RunInstances rate (5 at once, then 2 per second)
    // take several seconds: interrupt once 6 went out.
    let mut command = world.command(&["apply", "--poll-interval", "0.1"]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().expect("spawning apply");
    let pid = Pid::from_raw(child.id() as i32);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while world.proxy.requests_of("RunInstances").len() < 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "apply never launched 6 batches"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill(pid, Signal::SIGINT).expect("sending SIGINT");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("waiter")
        .expect("apply output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(130),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("interrupted"), "{stdout}");

    let sent = world.proxy.requests_of("RunInstances").len();
    assert!(sent < 16, "all {sent} launches went out despite Ctrl-C");
    let live: usize = world.live_by_group().await.values().map(Vec::len).sum();
    assert_eq!(
        live, sent,
        "every launch that went out is recorded and live"
    );

    let status = world.ok_json(&["status", "--json"]).await;
    assert!(
        status["lock"].is_null(),
        "the interrupted run left its lock: {}",
        status["lock"]
    );

    world.ok(&["apply", "--poll-interval", "0.1"]).await;
    let live = world.live_by_group().await;
    assert_eq!(live.len(), 8);
    assert!(live.values().all(|ids| ids.len() == 2), "{live:?}");
}
