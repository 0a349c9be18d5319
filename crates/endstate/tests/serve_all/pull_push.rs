//! One role, converged by pull and by push, ends the same. Pull: the real
//! `endstate serve` on the built-in cloud's process backend (root:
//! instances really run) and one instance whose user data starts
//! `endstate agent` as a service. Push: `endstate push` through the
//! system's OpenSSH to an `sshd -D` this test starts on 127.0.0.54 with
//! keys it generates (`common::sshd`), into a throwaway `--root`.
//! Checked:
//!
//! - every managed path (a directory, a file with a mode, a template, the
//!   file an exec with `creates` made) has the same kind, permission bits
//!   and content on both sides — the instance's read through its overlay
//!   upper directory, where everything the agent wrote is;
//! - each side's paths are owned by the user that converged them: the
//!   instance's uid (everything in an instance runs as it) and root (sshd
//!   logs in as the user running it). The owners differ by design, so
//!   they are compared with each side's runner, not with each other;
//! - a second push reports every resource unchanged;
//! - `--to group:web,127.0.0.54` resolves the group to its instance's
//!   private address (127.100.x.y, where the test starts a second sshd,
//!   on the host, with its own throwaway root), lists it under `groups`
//!   in `--json`, converges that root the same, and finds 127.0.0.54
//!   unchanged.
//!
//! The template uses a variable and two facts both sides share: the OS id
//! (the push root gets the instance image's own `/etc/os-release`) and
//! the CPU count (the same machine). Kinds left out, and why: `user` and
//! `group` — the agent runs as the instance's unprivileged uid, and the
//! shadow tools (`useradd --root`) need root (they chroot into the root);
//! `package` — apt needs root and the network; `service` — systemd on the
//! push side, the instance's supervisor on the pull side: not one
//! mechanism to compare.
//!
//! Bounded: every wait has a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

use crate::common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::controller::{all_events, of_kind, wait_for, Project, ONE_CLOUD_AT_A_TIME};
use common::sshd::{machine_root, Sshds};
use serde_json::Value;

/// The process backend's starter image.
const BASE_IMAGE: &str = "ami-0e5c0f5d3b1e2a4f6";

/// The loopback address of the push target (config_push uses .51–.53).
const PUSH_HOST: &str = "127.0.0.54";

/// The paths the role manages.
const MANAGED: [&str; 4] = [
    "/srv/app",
    "/srv/app/motd",
    "/srv/app/about",
    "/srv/app/built",
];

const IDS: [&str; 4] = ["directory:app", "file:motd", "template:about", "exec:build"];

/// The spec: role `web` and group `web` of `desired` instances whose
/// agents talk to `server`.
fn spec(server: &str, desired: u32) -> String {
    format!(
        r#"project: pullpush
provider:
  local: {{}}
variables:
  greeting: hello
roles:
  web:
    resources:
      - {{ kind: directory, name: app, path: /srv/app, mode: "0750" }}
      - kind: file
        name: motd
        path: /srv/app/motd
        content: "${{var.greeting}} from the web role\n"
        mode: "0640"
        requires: [directory:app]
      - kind: template
        name: about
        path: /srv/app/about
        template: "os={{{{ facts.os.id }}}} cpus={{{{ facts.cpus }}}} greeting=${{var.greeting}}\n"
        mode: "0644"
        requires: [directory:app]
      - kind: exec
        name: build
        command: "echo built > /srv/app/built"
        creates: /srv/app/built
        requires: [directory:app]
groups:
  web:
    image: {BASE_IMAGE}
    instance_type: t3.micro
    capacity: {{ min: 0, desired: {desired}, max: 1 }}
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

/// Kind, permission bits and content of a path (content empty for a
/// directory).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    /// Permission bits, in octal.
    mode: String,
    content: String,
}

/// Each managed path's entry (`None`: missing) and owner (uid).
type Managed = (
    BTreeMap<&'static str, Option<Entry>>,
    BTreeMap<&'static str, u32>,
);

/// The managed paths under `root`, and their owners.
fn managed(root: &Path) -> Managed {
    let mut entries = BTreeMap::new();
    let mut owners = BTreeMap::new();
    for path in MANAGED {
        let full = root.join(path.trim_start_matches('/'));
        let entry = std::fs::symlink_metadata(&full).ok().map(|meta| {
            owners.insert(path, meta.uid());
            let kind = if meta.is_dir() {
                "directory"
            } else if meta.file_type().is_symlink() {
                "symlink"
            } else {
                "file"
            };
            Entry {
                kind,
                mode: format!("{:04o}", meta.permissions().mode() & 0o7777),
                content: if meta.is_file() {
                    std::fs::read_to_string(&full).unwrap()
                } else {
                    String::new()
                },
            }
        });
        entries.insert(path, entry);
    }
    (entries, owners)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn statuses(report: &Value) -> BTreeMap<String, String> {
    report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn all(status: &str) -> BTreeMap<String, String> {
    IDS.iter()
        .map(|id| (id.to_string(), status.to_string()))
        .collect()
}

/// The instance's `/etc/os-release`, from the starter image's one layer.
fn image_os_release(cloud_dir: &Path) -> PathBuf {
    let layers: Vec<PathBuf> = std::fs::read_dir(cloud_dir.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().path().join("etc/os-release"))
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(layers.len(), 1, "one image layer expected: {layers:?}");
    layers[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_role_converges_the_same_by_pull_and_by_push() {
    let _one = ONE_CLOUD_AT_A_TIME.lock().await;
    let mut project = Project::new();

    // Pull. The agents need the controller's address in their user data,
    // known once it listens: it starts with no instance, then the group
    // grows to one with the address in the spec (the controller follows
    // its spec file).
    project.write_spec(&spec("http://127.0.0.1:1", 0));
    let client = project
        .start_with(
            &["--rate-limits", "off"],
            &[("ENDSTATE_AGENT_CHECK_IN", "2")],
        )
        .await;
    let info: Value =
        serde_json::from_slice(&std::fs::read(project.state_dir().join("serve.json")).unwrap())
            .unwrap();
    let server = info["url"]
        .as_str()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    project.write_spec(&spec(&server, 1));
    let (instance, address) = wait_for(
        "the instance's agent converged the role",
        Duration::from_secs(90),
        &project,
        async || {
            let instances = client.instances(Some("web")).await.ok()?;
            let running = instances.iter().find(|i| i.state == "running")?;
            let events = all_events(&client, 0).await;
            of_kind(&events, "config_converged")
                .iter()
                .any(|e| e.subject == running.id)
                .then(|| (running.id.clone(), running.private_ip.clone().unwrap()))
        },
    )
    .await;
    let events = all_events(&client, 0).await;
    assert!(of_kind(&events, "config_failed").is_empty(), "{events:#?}");
    let instance_dir = project.cloud_dir.path().join("instances").join(&instance);
    let upper = instance_dir.join("upper");
    let (pulled, pulled_owners) = managed(&upper);
    let instance_uid = std::fs::metadata(&upper).unwrap().uid();
    assert!(
        instance_uid >= 2_000_000,
        "the instance's uid: {instance_uid}"
    );

    // Push, to a root that starts as the instance did (the image's
    // os-release), through sshd on PUSH_HOST.
    let ssh = tempfile::tempdir().unwrap();
    let d = ssh.path();
    let sshds = Sshds::start(d, &[PUSH_HOST, address.as_str()]);
    let os_release = image_os_release(project.cloud_dir.path());
    for host in [PUSH_HOST, address.as_str()] {
        let root = d.join("roots").join(host);
        machine_root(&root);
        std::fs::copy(&os_release, root.join("etc/os-release")).unwrap();
    }
    let push = |to: &str| -> (Output, Value) {
        let output = project
            .command(&[
                "push",
                "web",
                "--to",
                to,
                "--spec",
                "endstate.yaml",
                "--json",
            ])
            .args(sshds.push_args())
            .arg("--root")
            .arg(d.join("roots/{host}"))
            .arg("--remote-dir")
            .arg(d.join("cache/{host}"))
            .output()
            .unwrap();
        let json = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON from push ({e}): {}\n{}\n{}",
                text(&output.stdout),
                text(&output.stderr),
                sshds.logs()
            )
        });
        (output, json)
    };
    let (output, first) = push(PUSH_HOST);
    assert!(
        output.status.success(),
        "{first:#}\n{}",
        text(&output.stderr)
    );
    assert_eq!(statuses(&first["hosts"][0]["report"]), all("changed"));
    let push_root = d.join("roots").join(PUSH_HOST);
    let (pushed, pushed_owners) = managed(&push_root);

    // The same result: kind, mode and content of every managed path.
    assert!(
        pulled.values().all(Option::is_some),
        "the agent left a managed path missing: {pulled:#?}"
    );
    eprintln!("converged by pull and by push: {pulled:#?}");
    assert_eq!(pushed, pulled, "push and pull differ");
    let modes: Vec<&str> = MANAGED
        .iter()
        .map(|path| pulled[path].as_ref().unwrap().mode.as_str())
        .collect();
    assert_eq!(modes, ["0750", "0640", "0644", "0644"], "{pulled:#?}");
    let about = pulled["/srv/app/about"].as_ref().unwrap();
    assert!(
        about.content.starts_with("os=") && about.content.ends_with(" greeting=hello\n"),
        "{about:?}"
    );
    assert!(
        pulled_owners.values().all(|uid| *uid == instance_uid),
        "{pulled_owners:?}"
    );
    assert!(
        pushed_owners.values().all(|uid| *uid == 0),
        "{pushed_owners:?}"
    );

    // A second push changes nothing.
    let (output, second) = push(PUSH_HOST);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(statuses(&second["hosts"][0]["report"]), all("unchanged"));
    assert_eq!(managed(&push_root).0, pulled);

    // A group as a target: its instance's private address, first.
    let (output, grouped) = push(&format!("group:web,{PUSH_HOST}"));
    assert!(
        output.status.success(),
        "{grouped:#}\n{}",
        text(&output.stderr)
    );
    assert_eq!(
        grouped["groups"],
        serde_json::json!([{ "group": "web", "hosts": [{ "instance": instance, "host": address }] }])
    );
    assert_eq!(grouped["hosts"][0]["host"], address.as_str());
    assert_eq!(statuses(&grouped["hosts"][0]["report"]), all("changed"));
    assert_eq!(grouped["hosts"][1]["host"], PUSH_HOST);
    assert_eq!(statuses(&grouped["hosts"][1]["report"]), all("unchanged"));
    assert_eq!(managed(&d.join("roots").join(&address)).0, pulled);

    // For people: the hosts the group resolved to come first.
    let output = project
        .command(&[
            "push",
            "web",
            "--to",
            "group:web",
            "--spec",
            "endstate.yaml",
            "--noop",
        ])
        .args(sshds.push_args())
        .arg("--root")
        .arg(d.join("roots/{host}"))
        .arg("--remote-dir")
        .arg(d.join("cache/{host}"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let summary = text(&output.stdout);
    assert!(
        summary.starts_with(&format!("group web: {address} ({instance})\n{address}: ok")),
        "{summary}"
    );

    // A group of the spec with no instance, or none of that name.
    project.write_spec(&spec(&server, 1).replace(
        "groups:\n",
        "groups:\n  idle:\n    image: ami-0e5c0f5d3b1e2a4f6\n    instance_type: t3.micro\n    capacity: { min: 0, desired: 0, max: 1 }\n    zones: [us-east-1a]\n",
    ));
    let refused = |to: &str| {
        let output: Output = project
            .command(&["push", "web", "--to", to, "--spec", "endstate.yaml"])
            .args(sshds.push_args())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        text(&output.stderr)
    };
    let empty = refused("group:idle");
    assert!(
        empty.contains("group `idle` of project pullpush has no running instance"),
        "{empty}"
    );
    let unknown = refused("group:cache");
    assert!(
        unknown.contains("endstate.yaml declares no group `cache` (it declares idle, web)"),
        "{unknown}"
    );
}
