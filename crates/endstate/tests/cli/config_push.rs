//! `endstate config apply` and `endstate push`, black-box with the real
//! binary: a role (directory, file with a secret, template with facts,
//! exec with `creates`) converges a throwaway root, a second run changes
//! nothing, `--noop` predicts the first run and touches nothing, a bad file
//! is refused with its place. Push goes through the system's OpenSSH to
//! two `sshd -D` this test starts on 127.0.0.51 and .52 with keys it
//! generates: both roots end identical to a local apply's, the binary is
//! uploaded once per host, and a host made to fail fails alone.
//!
//! The engine runs commands in the roots with `chroot`, and sshd logs in
//! as the user running it, so these tests run as root (as CI does); every
//! root, key, cache and log is in a temporary directory, and the host's
//! own files are never changed.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use crate::common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::sshd::{machine_root, Sshds};
use serde_json::Value;

const SECRET: &str = "s3cret-0f-config-push";

/// The role every test converges; `${secret.token}` comes from H_TOKEN.
const ROLES: &str = r#"variables:
  greeting: hello
secrets:
  token: env:ES_CONFIG_PUSH_TOKEN
roles:
  web:
    resources:
      - { kind: directory, name: app, path: /srv/app, mode: "0750" }
      - kind: file
        name: motd
        path: /srv/app/motd
        content: "${var.greeting}, token ${secret.token}\n"
        mode: "0600"
        requires: [directory:app]
      - kind: template
        name: about
        path: /srv/app/about
        template: "os={{ facts.os.id }} host={{ facts.hostname }} cpus={{ facts.cpus }}\n"
        requires: [directory:app]
      - kind: exec
        name: build
        command: "echo built > /srv/app/built"
        creates: /srv/app/built
        requires: [directory:app]
"#;

const IDS: [&str; 4] = ["directory:app", "file:motd", "template:about", "exec:build"];

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests run commands inside throwaway roots with chroot and start sshd, which need root"
    );
}

fn endstate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_endstate"));
    command
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("ES_CONFIG_PUSH_TOKEN", SECRET)
        .env_remove("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .env("NO_COLOR", "1");
    command
}

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap();
    for stream in [&output.stdout, &output.stderr] {
        assert!(
            !String::from_utf8_lossy(stream).contains(SECRET),
            "the secret leaked into the output"
        );
    }
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every entry under `root`: kind, permission bits and content.
fn tree(root: &Path) -> Tree {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (String, u32, Vec<u8>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let name = path.strip_prefix(root).unwrap().display().to_string();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.insert(name, ("dir".into(), mode, Vec::new()));
                walk(root, &path, out);
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(
                    name,
                    ("link".into(), 0, target.display().to_string().into()),
                );
            } else {
                out.insert(name, ("file".into(), mode, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

type Tree = BTreeMap<String, (String, u32, Vec<u8>)>;

/// Panics naming each path where `got` differs from `want`.
fn assert_same_tree(got: &Tree, want: &Tree, what: &str) {
    let mut differences = Vec::new();
    for path in got
        .keys()
        .chain(want.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let show = |entry: Option<&(String, u32, Vec<u8>)>| match entry {
            None => "absent".to_string(),
            Some((kind, mode, content)) => format!(
                "{kind} {mode:o} {:?}",
                String::from_utf8_lossy(&content[..content.len().min(80)])
            ),
        };
        if got.get(path) != want.get(path) {
            differences.push(format!(
                "{path}: {} instead of {}",
                show(got.get(path)),
                show(want.get(path))
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{what}:\n{}",
        differences.join("\n")
    );
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

fn apply(file: &Path, root: &Path, extra: &[&str]) -> (Output, Value) {
    let output = run(endstate()
        .args(["config", "apply"])
        .arg(file)
        .arg("--root")
        .arg(root)
        .arg("--json")
        .args(extra));
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {}\n{}",
            text(&output.stdout),
            text(&output.stderr)
        )
    });
    (output, report)
}

#[test]
fn config_apply_converges_a_role_noop_predicts_it_and_a_second_run_changes_nothing() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("roles.yaml");
    std::fs::write(&file, ROLES).unwrap();
    let root = dir.path().join("root");
    machine_root(&root);
    let before = tree(&root);

    let (output, noop) = apply(&file, &root, &["--noop"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(statuses(&noop), all("would_change"));
    assert_eq!(tree(&root), before, "a noop run changed the root");

    let report_path = dir.path().join("reports/first.json");
    std::fs::create_dir_all(report_path.parent().unwrap()).unwrap();
    let (output, first) = apply(&file, &root, &["--report", report_path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(statuses(&first), all("changed"));
    assert_eq!(first["outcome"], "ok");
    let written = std::fs::read_to_string(&report_path).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&written).unwrap(), first);
    assert!(!written.contains(SECRET));
    assert_eq!(
        std::fs::read_to_string(root.join("srv/app/motd")).unwrap(),
        format!("hello, token {SECRET}\n")
    );
    let hostname = nix::unistd::gethostname().unwrap();
    let about = std::fs::read_to_string(root.join("srv/app/about")).unwrap();
    assert!(
        about.starts_with(&format!(
            "os=debian host={} cpus=",
            hostname.to_string_lossy()
        )),
        "{about}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("srv/app/built")).unwrap(),
        "built\n"
    );
    let mode = |path: &str| {
        std::fs::metadata(root.join(path))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!((mode("srv/app"), mode("srv/app/motd")), (0o750, 0o600));
    let converged = tree(&root);

    let (output, second) = apply(&file, &root, &[]);
    assert!(output.status.success());
    assert_eq!(statuses(&second), all("unchanged"));
    let (_, noop_again) = apply(&file, &root, &["--noop"]);
    assert_eq!(statuses(&noop_again), all("unchanged"));
    assert_eq!(tree(&root), converged);

    // The summary for people: the counts, and each changed resource.
    std::fs::remove_file(root.join("srv/app/built")).unwrap();
    let output = run(endstate()
        .args(["config", "apply"])
        .arg(&file)
        .arg("--root")
        .arg(&root));
    assert!(output.status.success());
    let summary = text(&output.stdout);
    assert!(summary.contains("changed       exec:build"), "{summary}");
    assert!(
        summary.contains("ok: 1 changed, 3 unchanged, 0 failed"),
        "{summary}"
    );
}

#[test]
fn a_bad_roles_file_or_role_is_refused_with_its_place_and_nothing_is_touched() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    machine_root(&root);
    let before = tree(&root);
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "roles:\n  web:\n    resources:\n      - { kind: file, name: a, path: /srv/a, content: x }\n      - { kind: directory, name: b, path: /srv/b, colour: red }\n",
    )
    .unwrap();
    let output = run(endstate()
        .args(["config", "apply"])
        .arg(&bad)
        .arg("--root")
        .arg(&root));
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    let place = format!("{}:5:51: error: unknown field `colour`", bad.display());
    assert!(stderr.contains(&place), "{stderr}");
    assert!(stderr.contains("nothing was done"), "{stderr}");

    let good = dir.path().join("roles.yaml");
    std::fs::write(&good, ROLES).unwrap();
    let output = run(endstate()
        .args(["config", "apply"])
        .arg(&good)
        .args(["--role", "db", "--root"])
        .arg(&root));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("no role `db`; the file declares web"),
        "{}",
        text(&output.stderr)
    );
    let output = run(endstate()
        .args(["config", "apply"])
        .arg(&good)
        .env_remove("ES_CONFIG_PUSH_TOKEN")
        .arg("--root")
        .arg(&root));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("ES_CONFIG_PUSH_TOKEN is not set"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(tree(&root), before);
}

#[test]
fn push_converges_like_a_local_apply_uploads_once_and_fails_only_the_failing_host() {
    require_root();
    let ssh_dir_before = Path::new("/root/.ssh").exists();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hosts = ["127.0.0.51", "127.0.0.52"];
    let sshds = Sshds::start(d, &hosts);

    let file = d.join("roles.yaml");
    std::fs::write(&file, ROLES).unwrap();
    for host in hosts {
        machine_root(&d.join("roots").join(host));
    }
    let local = d.join("local");
    machine_root(&local);
    let (output, _) = apply(&file, &local, &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));

    let push_to = |to: &str, extra: &[&str]| -> (Output, Value) {
        let output = run(endstate()
            .args(["push", "web", "--to", to, "--spec"])
            .arg(&file)
            .args(sshds.push_args())
            .arg("--root")
            .arg(d.join("roots/{host}"))
            .arg("--remote-dir")
            .arg(d.join("cache/{host}"))
            .arg("--json")
            .args(extra));
        let json = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON from push ({e}): {}\n{}",
                text(&output.stdout),
                text(&output.stderr)
            )
        });
        (output, json)
    };
    let push = |extra: &[&str]| push_to(&hosts.join(","), extra);
    let host = |json: &Value, i: usize| json["hosts"][i].clone();
    let cached_binary = |host: &str| {
        let bin = d.join("cache").join(host).join("bin");
        let entries: Vec<PathBuf> = std::fs::read_dir(&bin)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        let meta = std::fs::metadata(&entries[0]).unwrap();
        (entries[0].clone(), meta.ino(), meta.len())
    };

    // A noop push predicts and changes nothing.
    let before = tree(&d.join("roots/127.0.0.51"));
    let (output, json) = push(&["--noop"]);
    assert!(
        output.status.success(),
        "{json:#}\n{}",
        text(&output.stderr)
    );
    for i in 0..2 {
        assert_eq!(host(&json, i)["binary"], "uploaded");
        assert_eq!(statuses(&host(&json, i)["report"]), all("would_change"));
    }
    assert_eq!(tree(&d.join("roots/127.0.0.51")), before);
    let uploaded: Vec<_> = hosts.iter().map(|h| cached_binary(h)).collect();
    let binary_size = std::fs::metadata(env!("CARGO_BIN_EXE_endstate"))
        .unwrap()
        .len();
    assert!(uploaded.iter().all(|(_, _, len)| *len == binary_size));

    // The real push: both hosts converge, with no second upload.
    let (output, json) = push(&[]);
    assert!(
        output.status.success(),
        "{json:#}\n{}",
        text(&output.stderr)
    );
    for (i, name) in hosts.iter().enumerate() {
        assert_eq!(host(&json, i)["host"], *name);
        assert_eq!(host(&json, i)["ok"], true);
        assert_eq!(host(&json, i)["binary"], "cached");
        assert_eq!(statuses(&host(&json, i)["report"]), all("changed"));
        assert_same_tree(
            &tree(&d.join("roots").join(name)),
            &tree(&local),
            &format!("{name}'s root differs from the local apply's"),
        );
        assert_eq!(
            cached_binary(name),
            uploaded[i],
            "the binary was uploaded again"
        );
        let run_dir = d.join("cache").join(name).join("run");
        assert_eq!(
            std::fs::read_dir(&run_dir).unwrap().count(),
            0,
            "the role's document was left on {name}"
        );
    }
    assert_eq!(json["failed"], serde_json::json!([]));

    // Converged: nothing changes (one host at a time this once).
    let (output, json) = push(&["--parallel", "1"]);
    assert!(output.status.success());
    for i in 0..2 {
        assert_eq!(statuses(&host(&json, i)["report"]), all("unchanged"));
    }

    // One host made to fail: a file where its app directory should be.
    let broken = d.join("roots/127.0.0.52/srv/app");
    std::fs::remove_dir_all(&broken).unwrap();
    std::fs::write(&broken, "in the way\n").unwrap();
    let (output, json) = push(&[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("1 of 2 hosts failed: 127.0.0.52"),
        "{stderr}"
    );
    assert_eq!(host(&json, 0)["ok"], true);
    assert_eq!(host(&json, 1)["ok"], false);
    assert_eq!(json["failed"], serde_json::json!(["127.0.0.52"]));
    let failed = statuses(&host(&json, 1)["report"]);
    assert_eq!(failed["directory:app"], "failed");
    assert_eq!(failed["file:motd"], "skipped");
    assert_same_tree(
        &tree(&d.join("roots/127.0.0.51")),
        &tree(&local),
        "the host that did not fail",
    );

    // The summary for people: one block per host.
    let output = run(endstate()
        .args(["push", "web", "--to", &hosts.join(","), "--spec"])
        .arg(&file)
        .args(sshds.push_args())
        .arg("--root")
        .arg(d.join("roots/{host}"))
        .arg("--remote-dir")
        .arg(d.join("cache/{host}")));
    assert_eq!(output.status.code(), Some(1));
    let summary = text(&output.stdout);
    assert!(
        summary.contains("127.0.0.51: ok (binary cached")
            && summary.contains("127.0.0.52: FAILED (binary cached")
            && summary.contains("    failed        directory:app: "),
        "{summary}"
    );

    // An unreachable host fails alone too, with ssh's reason.
    let (output, json) = push_to("127.0.0.51,127.0.0.53", &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(host(&json, 0)["ok"], true);
    let error = host(&json, 1)["error"].as_str().unwrap().to_string();
    assert!(error.starts_with("ssh failed"), "{error}");

    assert_eq!(
        Path::new("/root/.ssh").exists(),
        ssh_dir_before,
        "the test changed the host's ~/.ssh"
    );
}

/// Exec commands run with umask 022 whatever the caller's (an agent under
/// a supervisor, an ssh session and a terminal differ): here `config
/// apply` started under umask 077.
#[test]
fn exec_commands_run_with_umask_022_whatever_the_callers() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("roles.yaml");
    std::fs::write(
        &file,
        "roles:\n  umask:\n    resources:\n      - kind: exec\n        name: record\n        command: \"umask > /srv/umask; : > /srv/made\"\n        creates: /srv/made\n",
    )
    .unwrap();
    let root = dir.path().join("root");
    machine_root(&root);
    let output = Command::new("/bin/sh")
        .arg("-c")
        .arg("umask 077; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_endstate"))
        .args(["config", "apply"])
        .arg(&file)
        .arg("--root")
        .arg(&root)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let recorded = std::fs::read_to_string(root.join("srv/umask")).unwrap();
    assert_eq!(recorded.trim(), "0022");
    let made = std::fs::metadata(root.join("srv/made")).unwrap();
    assert_eq!(made.permissions().mode() & 0o777, 0o644);
}
