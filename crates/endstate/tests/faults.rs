//! Faults on the way to a real moto server, injected by the proxy: a launch
//! whose answer never comes back (moto ignores ClientToken, so only the
//! read by intent tag keeps the retry from duplicating), no capacity for the
//! first instance type, and server errors on reads.

mod common;

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
