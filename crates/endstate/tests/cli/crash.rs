//! Crash safety: `endstate apply` is killed with SIGKILL at many points of a
//! run — after the k-th API request, for every k the run makes (the proxy
//! kills it once the request reached moto, so the outcome is unknown to
//! endstate), and at each named journal point — then apply runs again, and
//! the world must hold exactly the desired instances: no duplicate, no
//! leak, no lock left held.
//!
//! Two scenarios: converging from nothing, and replacing one group's image
//! while retagging another (launches, terminations and tags in one run).
//! Two worlds: a real moto server (which ignores ClientToken: recovery rests
//! on reading by tag), and the built-in cloud's simulated backend with
//! eventual consistency (new instances stay missing from DescribeInstances
//! for a second: recovery rests on the token and on waiting to see them).

use crate::common;

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use common::{group, GroupSpec, World};
use endstate_testkit::proxy::{Fault, Matcher, Rule};

const NEW_IMAGE: &str = "ami-0aaaaaaaaaaaaaaa1";

struct Scenario {
    name: &'static str,
    /// The spec the world is converged to before the killed run (if any).
    before: Option<Vec<GroupSpec>>,
    /// The spec the killed run and its rerun apply.
    target: Vec<GroupSpec>,
}

fn scenarios() -> Vec<Scenario> {
    let a = group("a", 3, 4, 6);
    let b = group("b", 2, 3, 5);
    let mut a2 = a.clone();
    a2.image = NEW_IMAGE.into();
    vec![
        Scenario {
            name: "converge from nothing",
            before: None,
            target: vec![a.clone(), b.clone()],
        },
        Scenario {
            name: "replace a's image, retag b",
            before: Some(vec![a, b.clone()]),
            target: vec![a2, b],
        },
    ]
}

enum Kill {
    AfterRequest(u64),
    AtPoint(&'static str),
}

impl std::fmt::Display for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kill::AfterRequest(k) => write!(f, "after request {k}"),
            Kill::AtPoint(point) => write!(f, "at {point}"),
        }
    }
}

#[derive(Clone, Copy)]
enum Backend {
    Moto,
    Cloud,
}

/// The world for the next kill: moto is reset and reused (it is slow to
/// start); the simulated cloud is cheap, so each kill gets a new one.
async fn next_world(backend: Backend, current: Option<World>) -> World {
    match (backend, current) {
        (Backend::Moto, Some(world)) => {
            world.moto().reset().await.expect("resetting moto");
            let _ = std::fs::remove_dir_all(world.dir.path().join(".endstate"));
            world
        }
        (Backend::Moto, None) => World::new("crash").await,
        (Backend::Cloud, _) => {
            World::with_cloud("crash", Duration::from_millis(300), Duration::from_secs(1)).await
        }
    }
}

async fn prepare(world: &World, scenario: &Scenario) {
    if let Some(before) = &scenario.before {
        world.write_spec(before);
        world
            .ok(&["apply", "--poll-interval", "0.05", "--rate-limits", "off"])
            .await;
    }
    write_target(world, scenario);
    world.proxy.clear();
    world.proxy.clear_rules();
}

/// At most `most` request numbers, spread evenly over 1..=n.
fn spread(n: u64, most: u64) -> Vec<u64> {
    if n <= most {
        return (1..=n).collect();
    }
    let mut ks: Vec<u64> = (0..most).map(|i| 1 + i * (n - 1) / (most - 1)).collect();
    ks.dedup();
    ks
}

fn write_target(world: &World, scenario: &Scenario) {
    world.write_spec(&scenario.target);
    // The retag: b's team tag changes in the target of the second scenario.
    if scenario.before.is_some() {
        let path = world.spec_path();
        let spec = std::fs::read_to_string(&path).expect("spec");
        std::fs::write(
            &path,
            spec.replace("tags: { team: b }", "tags: { team: b-renamed }"),
        )
        .expect("spec");
    }
}

/// Runs apply, killed as `kill` says. Returns whether it was killed.
async fn killed_apply(world: &World, kill: &Kill) -> bool {
    let mut command = world.command(&["apply", "--poll-interval", "0.05", "--rate-limits", "off"]);
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    match kill {
        Kill::AfterRequest(k) => {
            world
                .proxy
                .add_rule(Rule::once(Matcher::Nth(*k), Fault::KillAfterForward));
        }
        Kill::AtPoint(point) => {
            command.env("ENDSTATE_CRASH_AT", point);
        }
    }
    let child = command.spawn().expect("spawning endstate apply");
    world.proxy.set_kill_target(child.id());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("waiting task")
        .expect("waiting for endstate");
    world.proxy.clear_kill_target();
    world.proxy.clear_rules();
    match output.status.signal() {
        Some(9) => true,
        None if output.status.success() => false,
        other => panic!(
            "apply killed {kill} ended neither by SIGKILL nor cleanly ({other:?}):\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// The world holds exactly the target: per group, desired live instances,
/// all of the target image; nothing else live at all in moto (no leak, not
/// even untagged); and no lock held.
async fn assert_converged(world: &World, scenario: &Scenario, kill: &Kill) {
    let status = world
        .ok_json(&["status", "--json", "--rate-limits", "off"])
        .await;
    assert!(
        status["lock"].is_null(),
        "{}: {kill}: lock left held: {}",
        scenario.name,
        status["lock"]
    );
    let mut total = 0;
    for target in &scenario.target {
        let group = status["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .find(|g| g["group"] == target.name.as_str())
            .unwrap_or_else(|| panic!("{}: {kill}: group {} missing", scenario.name, target.name));
        let live: Vec<&serde_json::Value> = group["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .filter(|i| matches!(i["state"].as_str(), Some("pending" | "running")))
            .collect();
        assert_eq!(
            live.len(),
            target.desired as usize,
            "{}: killed {kill}: group {} has {} live instances, wants {}",
            scenario.name,
            target.name,
            live.len(),
            target.desired
        );
        for instance in &live {
            assert_eq!(
                instance["image"].as_str(),
                Some(target.image.as_str()),
                "{}: {kill}",
                scenario.name
            );
        }
        total += live.len();
    }
    // Every live instance in moto, tagged or not, read without endstate.
    let all = common::aws_cli_count_all(&world.upstream_url());
    assert_eq!(
        all, total,
        "{}: killed {kill}: {all} live instances in moto, {total} desired",
        scenario.name
    );
}

/// Kills and reruns over both scenarios; returns how many kills happened.
async fn kill_everywhere(backend: Backend) -> (usize, Vec<String>) {
    let mut kills_survived = 0;
    let mut report = Vec::new();
    let mut world = None;
    for scenario in scenarios() {
        // A clean run tells how many requests the scenario makes.
        let clean = next_world(backend, world.take()).await;
        prepare(&clean, &scenario).await;
        clean
            .ok(&["apply", "--poll-interval", "0.05", "--rate-limits", "off"])
            .await;
        let requests = clean.proxy.requests().len() as u64;
        assert!(requests >= 5, "{}: only {requests} requests", scenario.name);
        world = Some(clean);

        let mut kills: Vec<Kill> = spread(requests, 16)
            .into_iter()
            .map(Kill::AfterRequest)
            .collect();
        kills.extend(
            endstate_exec::crash::POINTS
                .iter()
                .map(|p| Kill::AtPoint(p)),
        );
        for kill in kills {
            let current = next_world(backend, world.take()).await;
            prepare(&current, &scenario).await;
            let was_killed = killed_apply(&current, &kill).await;
            if !was_killed {
                // This run never reached the point (e.g. no retag in the
                // first scenario): nothing to recover, but it must still be right.
                assert_converged(&current, &scenario, &kill).await;
                report.push(format!("{}: {kill}: not reached", scenario.name));
            } else {
                current
                    .ok(&["apply", "--poll-interval", "0.05", "--rate-limits", "off"])
                    .await;
                assert_converged(&current, &scenario, &kill).await;
                kills_survived += 1;
                report.push(format!(
                    "{}: {kill}: killed, rerun converged",
                    scenario.name
                ));
            }
            world = Some(current);
        }
    }
    (kills_survived, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_killed_anywhere_then_rerun_converges_exactly_on_moto() {
    let (kills, report) = kill_everywhere(Backend::Moto).await;
    eprintln!("{}", report.join("\n"));
    assert!(
        kills >= 20,
        "only {kills} kills happened:\n{}",
        report.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_killed_anywhere_then_rerun_converges_exactly_on_an_eventually_consistent_cloud() {
    let (kills, report) = kill_everywhere(Backend::Cloud).await;
    eprintln!("{}", report.join("\n"));
    assert!(
        kills >= 20,
        "only {kills} kills happened:\n{}",
        report.join("\n")
    );
}
