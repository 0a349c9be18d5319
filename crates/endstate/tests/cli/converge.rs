//! The core loop end to end against a real moto server, through the
//! recording proxy: converge two groups, a no-op plan, scale up by exactly
//! the difference, replace on a new image within the disruption budget
//! (checked by replaying every request), destroy, and agreement with the
//! aws CLI.

use crate::common;

use std::collections::BTreeSet;

use common::{aws_cli_count, group, launch_tag, launched_ids, terminated_ids, World};

const NEW_IMAGE: &str = "ami-0fedcba9876543210";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_converge_scale_replace_and_destroy() {
    let world = World::new("shop").await;
    let api = group("api", 2, 3, 6);
    let mut web = group("web", 190, 200, 300);
    world.write_spec(&[api.clone(), web.clone()]);

    // Converge from nothing.
    let applied = world
        .ok_json(&["apply", "--json", "--poll-interval", "0.1"])
        .await;
    assert_eq!(
        applied["report"]["launched"].as_array().map(Vec::len),
        Some(203)
    );
    let live = world.live_by_group().await;
    assert_eq!(live["api"].len(), 3);
    assert_eq!(live["web"].len(), 200);
    let runs = world.proxy.requests_of("RunInstances");
    assert_eq!(runs.len(), 4, "one RunInstances per group and zone");

    // The aws CLI, straight to moto, counts the same instances as
    // `endstate status --json`.
    let by_status: usize = live.values().map(Vec::len).sum();
    assert_eq!(aws_cli_count(&world.upstream_url(), "shop"), by_status);
    assert_eq!(by_status, 203);

    // Nothing to do, and the plan reads the world in pages, not per instance.
    world.proxy.clear();
    let plan = world.ok_json(&["plan", "--json"]).await;
    assert_eq!(plan["phases"].as_array().map(Vec::len), Some(0), "{plan}");
    let describes = world.proxy.requests_of("DescribeInstances").len();
    assert!(describes <= 3, "no-op plan used {describes} describe calls");
    assert!(world
        .proxy
        .requests()
        .iter()
        .all(|r| r.action.as_deref() == Some("DescribeInstances")));

    // 200 -> 250 launches exactly 50.
    web.desired = 250;
    world.write_spec(&[api.clone(), web.clone()]);
    world.proxy.clear();
    world.ok(&["apply", "--poll-interval", "0.1"]).await;
    let launched: u32 = world
        .proxy
        .requests_of("RunInstances")
        .iter()
        .map(|r| {
            r.param("MaxCount")
                .and_then(|c| c.parse::<u32>().ok())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(launched, 50);
    assert!(world.proxy.requests_of("TerminateInstances").is_empty());
    assert_eq!(world.live_by_group().await["web"].len(), 250);

    // A new image replaces every web instance, never below min, never above
    // the budget's ceiling: replayed from the proxy's request log.
    web.image = NEW_IMAGE.into();
    world.write_spec(&[api.clone(), web.clone()]);
    world.proxy.clear();
    world.ok(&["apply", "--poll-interval", "0.1"]).await;
    let (low, high) = replay_live(&world, "web", 250);
    assert!(
        low >= web.min,
        "web dropped to {low} running (min {})",
        web.min
    );
    // floor = max(min 190, 90% of 250 = 225); ceiling = 250 + 10% = 275.
    assert!(low >= 225, "web dropped to {low}, below 90% of desired");
    assert!(high <= 275, "web rose to {high}, above desired + surge");
    let live = world.live_by_group().await;
    assert_eq!(live["web"].len(), 250);
    assert_eq!(live["api"].len(), 3);
    let status = world.ok_json(&["status", "--json"]).await;
    let images: BTreeSet<String> = status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["group"] == "web")
        .flat_map(|g| g["instances"].as_array().unwrap().clone())
        .filter(|i| matches!(i["state"].as_str(), Some("pending" | "running")))
        .map(|i| i["image"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(images, BTreeSet::from([NEW_IMAGE.to_string()]));

    // Destroy leaves nothing carrying the project's tags.
    world.ok(&["destroy", "--yes"]).await;
    assert_eq!(aws_cli_count(&world.upstream_url(), "shop"), 0);
    let live = world.live_by_group().await;
    assert!(live.values().all(Vec::is_empty), "{live:?}");
}

/// Replays the proxy's log in time order and returns the lowest and highest
/// number of live instances of `group`: a launch counts once its response
/// arrived, a termination as soon as its request left.
fn replay_live(world: &World, group: &str, start: u32) -> (u32, u32) {
    let mut events: Vec<(std::time::Duration, i64)> = Vec::new();
    for request in world.requests() {
        match request.action.as_deref() {
            Some("RunInstances")
                if launch_tag(&request, "endstate:group").as_deref() == Some(group) =>
            {
                let ids = launched_ids(&request);
                let at = request.completed.expect("launch completed");
                events.push((at, ids.len() as i64));
            }
            Some("TerminateInstances") => {
                let ids = terminated_ids(&request);
                events.push((request.arrived, -(ids.len() as i64)));
            }
            _ => {}
        }
    }
    // Terminations of other groups' instances do not count: this spec only
    // replaces `group`, so every termination must be one of its own.
    assert!(!events.is_empty());
    events.sort_by_key(|(at, _)| *at);
    let (mut live, mut low, mut high) = (i64::from(start), i64::from(start), i64::from(start));
    for (_, delta) in events {
        live += delta;
        low = low.min(live);
        high = high.max(live);
    }
    (low as u32, high as u32)
}
