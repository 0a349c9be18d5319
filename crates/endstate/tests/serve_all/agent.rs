//! `endstate agent`, end to end, on the built-in cloud's process backend
//! (root: instances really run): the real `endstate serve` and two
//! instances whose user data starts `endstate agent` as a service (the
//! cloud binds the endstate binary into every instance at
//! `/opt/endstate/bin/endstate`). Checked, through each instance's overlay
//! upper directory:
//!
//! - each instance converges its group's role: a template rendered with a
//!   fact of its own (its instance id) and an exec run on every converge;
//! - a change of the role in the spec reaches every agent by long poll
//!   (the time is printed), and the controller records `agent_bound` and
//!   `config_converged` events;
//! - with the controller killed, every agent keeps running and keeps
//!   converging its last configuration on its check-in schedule;
//! - a controller started again (same state, so the same bindings) is
//!   found again: the agents re-authenticate and a new change reaches them.
//!
//! Bounded: every wait has a deadline; the whole test takes well under 90 s.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

use crate::common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::controller::{all_events, of_kind, wait_for, Project, ONE_CLOUD_AT_A_TIME};
use endstate_controller::client::Client;
use serde_json::Value;

/// The process backend's starter image.
const BASE_IMAGE: &str = "ami-0e5c0f5d3b1e2a4f6";

/// A project of one group `web` of two instances with role `web` at
/// `version`, whose agents talk to `server`.
fn spec(server: &str, version: &str) -> String {
    format!(
        r#"project: agents
provider:
  local: {{}}
roles:
  web:
    resources:
      - kind: template
        name: identity
        path: /srv/agent.txt
        template: "id={{{{ metadata['instance-id'] }}}} {version}\n"
      - kind: exec
        name: tick
        command: "date +%s%N >> /srv/ticks"
groups:
  web:
    image: {BASE_IMAGE}
    instance_type: t3.micro
    capacity: {{ min: 2, desired: 2, max: 2 }}
    zones: [us-east-1a]
    roles: [web]
    user_data:
      script: |
        #!/bin/sh
        mkdir -p /var/lib/endstate/agent
        cat > /etc/endstate/services/agent.json <<EOF
        {{"command": ["/opt/endstate/bin/endstate", "agent", "--server", "{server}", "--imds-endpoint", "$AWS_EC2_METADATA_SERVICE_ENDPOINT", "--state-dir", "/var/lib/endstate/agent"], "restart": "always"}}
        EOF
"#
    )
}

/// A free loopback port (bound, then released for serve to take).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Starts `endstate serve` on `listen` (agents check in every 2 s) and
/// waits for its API.
async fn start_serve(project: &mut Project, listen: &str) -> Client {
    let _ = std::fs::remove_file(project.state_dir().join("serve.json"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(project.dir.path().join("serve.log"))
        .unwrap();
    let mut command = project.command(&[
        "serve",
        "--listen",
        listen,
        "--observe-interval",
        "1",
        "--period",
        "5",
        "--poll-interval",
        "0.2",
        "--rate-limits",
        "off",
    ]);
    command
        .env("ENDSTATE_LOG", "endstate=info,endstate_controller=info")
        .env("ENDSTATE_AGENT_CHECK_IN", "2")
        .stdout(Stdio::null())
        .stderr(log);
    project.controller = Some(command.spawn().unwrap());
    let info_path = project.state_dir().join("serve.json");
    let started = Instant::now();
    loop {
        if std::fs::read(&info_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "endstate serve did not start:\n{}",
            project.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = std::fs::read_to_string(project.state_dir().join("api-token")).unwrap();
    Client::new(format!("http://{listen}"), token.trim())
}

/// A file inside an instance, read through its overlay upper directory
/// (the mount itself is in the instance's namespace only).
fn instance_file(project: &Project, instance: &str, path: &str) -> PathBuf {
    project
        .cloud_dir
        .path()
        .join("instances")
        .join(instance)
        .join("upper")
        .join(path.trim_start_matches('/'))
}

fn read(project: &Project, instance: &str, path: &str) -> Option<String> {
    std::fs::read_to_string(instance_file(project, instance, path)).ok()
}

fn console(project: &Project, instance: &str) -> String {
    std::fs::read_to_string(
        project
            .cloud_dir
            .path()
            .join("instances")
            .join(instance)
            .join("console.log"),
    )
    .unwrap_or_default()
}

/// The agent service's state in the instance's `status.json`.
fn agent_state(project: &Project, instance: &str) -> Option<String> {
    let status: Value = serde_json::from_slice(
        &std::fs::read(
            project
                .cloud_dir
                .path()
                .join("instances")
                .join(instance)
                .join("status.json"),
        )
        .ok()?,
    )
    .ok()?;
    status["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == "agent")
        .and_then(|s| s["state"].as_str())
        .map(str::to_string)
}

fn ticks(project: &Project, instance: &str) -> usize {
    read(project, instance, "/srv/ticks").map_or(0, |t| t.lines().count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_pull_their_roles_follow_changes_and_outlive_the_server() {
    let _one = ONE_CLOUD_AT_A_TIME.lock().await;
    let mut project = Project::new();
    let listen = format!("127.0.0.1:{}", free_port());
    let server = format!("http://{listen}");
    project.write_spec(&spec(&server, "v1"));
    let client = start_serve(&mut project, &listen).await;

    // Both instances converge v1, each with its own id.
    let instances: Vec<String> = wait_for(
        "two instances converged v1",
        Duration::from_secs(60),
        &project,
        async || {
            let instances = client.instances(Some("web")).await.ok()?;
            let ids: Vec<String> = instances
                .iter()
                .filter(|i| i.state == "running")
                .map(|i| i.id.clone())
                .collect();
            // The template comes before the exec in the role: a converge
            // is over once both have run.
            let done = ids.len() == 2
                && ids.iter().all(|id| {
                    read(&project, id, "/srv/agent.txt").as_deref()
                        == Some(format!("id={id} v1\n").as_str())
                        && ticks(&project, id) >= 1
                });
            done.then_some(ids)
        },
    )
    .await;
    for id in &instances {
        let mode = std::fs::metadata(instance_file(
            &project,
            id,
            "/var/lib/endstate/agent/config.json",
        ))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap();
        assert_eq!(mode, 0o600, "the last configuration is private");
    }

    // A change of the role reaches every agent by long poll.
    let changed_at = Instant::now();
    project.write_spec(&spec(&server, "v2"));
    wait_for(
        "every agent converged v2",
        Duration::from_secs(20),
        &project,
        async || {
            instances
                .iter()
                .all(|id| {
                    read(&project, id, "/srv/agent.txt").as_deref()
                        == Some(format!("id={id} v2\n").as_str())
                })
                .then_some(())
        },
    )
    .await;
    let reached = changed_at.elapsed();
    eprintln!(
        "the role change reached {} agents in {reached:?} (spec file write to file converged)",
        instances.len()
    );
    assert!(reached < Duration::from_secs(10), "{reached:?}");

    let events = all_events(&client, 0).await;
    assert_eq!(of_kind(&events, "agent_bound").len(), 2, "{events:#?}");
    let converged = of_kind(&events, "config_converged");
    for id in &instances {
        assert!(
            converged.iter().any(|e| e.subject == *id),
            "no config_converged for {id}: {events:#?}"
        );
    }
    assert!(of_kind(&events, "config_failed").is_empty(), "{events:#?}");

    // The server goes away: every agent keeps running and converging.
    project.kill();
    let before: Vec<usize> = instances.iter().map(|id| ticks(&project, id)).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now: Vec<usize> = instances.iter().map(|id| ticks(&project, id)).collect();
        if now.iter().zip(&before).all(|(n, b)| n >= &(b + 2)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agents stopped converging without the server: ticks {before:?} -> {now:?}\n{}",
            console(&project, &instances[0])
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for id in &instances {
        assert_eq!(
            agent_state(&project, id).as_deref(),
            Some("running"),
            "{}",
            console(&project, id)
        );
        assert_eq!(
            read(&project, id, "/srv/agent.txt").as_deref(),
            Some(format!("id={id} v2\n").as_str())
        );
    }

    // The server comes back: the agents open new sessions (their old
    // tokens died with it) as the same bound agents, and follow v3.
    project.write_spec(&spec(&server, "v3"));
    let client = start_serve(&mut project, &listen).await;
    wait_for(
        "every agent converged v3 from the restarted server",
        Duration::from_secs(30),
        &project,
        async || {
            instances
                .iter()
                .all(|id| {
                    read(&project, id, "/srv/agent.txt").as_deref()
                        == Some(format!("id={id} v3\n").as_str())
                })
                .then_some(())
        },
    )
    .await;
    let events = all_events(&client, 0).await;
    assert_eq!(
        of_kind(&events, "agent_bound").len(),
        2,
        "bound once each, across the restart: {events:#?}"
    );
}
