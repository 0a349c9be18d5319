//! Faults on the way to a real moto server, injected by the proxy: a launch
//! whose answer never comes back (moto ignores ClientToken, so only the
//! read by intent tag keeps the retry from duplicating), no capacity for the
//! first instance type, and server errors on reads.

use crate::common;

use common::{group, World};
use endstate_testkit::proxy::{Fault, Matcher, Rule};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_launch_answer_is_found_by_tag_and_not_launched_twice() {
    let world = World::new("lost").await;
    world.write_spec(&[group("web", 1, 4, 8)]);
    world.proxy.add_rule(Rule::once(
        Matcher::nth_of("RunInstances", 1),
        Fault::DropAfterForward,
    ));
    let output = world.run(&["apply", "--poll-interval", "0.1"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("outcome was unknown; found 2 instances by tag"),
        "{stderr}"
    );
    assert_eq!(
        world.proxy.requests_of("RunInstances").len(),
        2,
        "no launch was sent twice"
    );
    assert_eq!(world.live_by_group().await["web"].len(), 4);
    assert_eq!(
        common::aws_cli_count_all(&world.upstream_url()),
        4,
        "no duplicate in moto"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_capacity_for_the_first_type_falls_back_to_the_next_and_says_so() {
    let world = World::new("capacity").await;
    world.write_spec(&[group("web", 1, 2, 4)]);
    world.proxy.add_rule(Rule::once(
        Matcher::nth_of("RunInstances", 1),
        Fault::fail(
            500,
            "InsufficientInstanceCapacity",
            "We currently do not have sufficient t3.micro capacity in the Availability Zone you requested.",
        ),
    ));
    let output = world
        .run(&["apply", "--poll-interval", "0.1", "--json"])
        .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("no capacity for t3.micro in us-east-1"),
        "{stderr}"
    );
    assert!(stderr.contains("trying t3a.micro in us-east-1"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["report"]["fallbacks"], 1);
    let status = world.ok_json(&["status", "--json"]).await;
    let mut types: Vec<String> = status["groups"][0]["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["type"].as_str().expect("type").to_string())
        .collect();
    types.sort();
    assert_eq!(types, vec!["t3.micro", "t3a.micro"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_on_reads_are_retried() {
    let world = World::new("flaky").await;
    world.write_spec(&[group("web", 1, 2, 4)]);
    world.proxy.add_rule(
        Rule::new(
            Matcher::action("DescribeInstances"),
            Fault::fail(500, "InternalError", "An internal error has occurred."),
        )
        .times(2),
    );
    world.proxy.add_rule(Rule::once(
        Matcher::action("DescribeInstances"),
        Fault::DropBeforeForward,
    ));
    let output = world.run(&["apply", "--poll-interval", "0.1"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("DescribeInstances: attempt 1 failed"),
        "{stderr}"
    );
    assert_eq!(world.live_by_group().await["web"].len(), 2);
}

/// A run is killed once its RunInstances reached the cloud; before the rerun
/// the group's user data changes. The rerun resends the journaled launch
/// with its token but the new parameters; a cloud that honours ClientToken
/// (the simulated one does, as EC2 does) answers IdempotentParameterMismatch,
/// which means the first call landed: endstate waits for its instances by
/// tag instead of launching others, then replaces them for the new user data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_launch_with_changed_parameters_adopts_what_the_first_call_made() {
    use std::os::unix::process::ExitStatusExt;
    use std::time::Duration;

    // The first call's instances must still be invisible to describes when
    // the rerun looks for them by tag, or the rerun finds them there and
    // never resends: the consistency delay covers the kill and the rerun's
    // start with room to spare on a loaded machine (1 s did not, once).
    let world = World::with_cloud(
        "mismatch",
        Duration::from_millis(200),
        Duration::from_secs(6),
    )
    .await;
    let mut web = group("web", 0, 2, 4);
    web.extra = "    user_data:\n      script: |\n        #!/bin/sh\n        echo one\n".into();
    world.write_spec(&[web.clone()]);
    world.proxy.add_rule(Rule::once(
        Matcher::nth_of("RunInstances", 1),
        Fault::KillAfterForward,
    ));
    let mut command = world.command(&["apply", "--poll-interval", "0.05", "--rate-limits", "off"]);
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = command.spawn().expect("spawning apply");
    world.proxy.set_kill_target(child.id());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("waiter")
        .expect("apply");
    assert_eq!(
        output.status.signal(),
        Some(9),
        "the first apply was not killed"
    );

    web.extra = "    user_data:\n      script: |\n        #!/bin/sh\n        echo two\n".into();
    world.write_spec(&[web]);
    world.proxy.clear_rules();
    let output = world
        .run(&["apply", "--poll-interval", "0.05", "--rate-limits", "off"])
        .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let mismatches = world
        .proxy
        .requests_of("RunInstances")
        .iter()
        .filter(|r| r.error_code.as_deref() == Some("IdempotentParameterMismatch"))
        .count();
    // One per journaled launch that reached the cloud before the kill: the
    // killed one, and its twin for the other zone if it went out too.
    assert!(
        (1..=2).contains(&mismatches),
        "the resend should have met the first call's token ({mismatches} mismatches):\n{stderr}"
    );
    // Converged on the new user data: two live instances, and nothing else live.
    assert_eq!(world.live_by_group().await["web"].len(), 2);
    assert_eq!(common::aws_cli_count_all(&world.upstream_url()), 2);
    let plan = world.ok_json(&["plan", "--json"]).await;
    assert_eq!(plan["phases"].as_array().map(Vec::len), Some(0), "{plan}");
}
