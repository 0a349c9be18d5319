//! The engine on throwaway roots: files, directories and templates
//! converge and then stay put; noop predicts the real run; a render failure
//! touches nothing; requires, notify and exec guards; secrets redacted.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use crate::black_box::common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;
use endstate_config::{Engine, Options, Outcome, Status, REDACTED};
use serde_json::json;

#[test]
fn files_directories_and_templates_converge_then_nothing_changes() {
    let root = empty_root();
    std::fs::write(root.path().join("etc/motd"), "old\n").unwrap();
    let roles = role(json!([
        {"kind": "directory", "name": "app", "path": "/etc/app", "mode": "0750"},
        {"kind": "file", "name": "motd", "path": "/etc/motd", "content": "hello\n", "mode": "0600"},
        {"kind": "file", "name": "conf", "path": "/etc/app/app.conf", "content": "a=1\n",
         "requires": ["directory:app"]},
        {"kind": "template", "name": "site", "path": "/etc/app/site.conf",
         "template": "os={{ facts.os.id }} {{ facts.os.version_id }}\nname={{ tags.Name }}\nid={{ metadata['instance-id'] }}\nport={{ vars.port }}\nworkers={{ facts.cpus * 2 }}\n",
         "vars": {"port": 8080}, "requires": ["directory:app"]},
    ]));
    let options = Options::new(root.path());
    let first = Engine::run(&roles, &facts(), &options);
    assert_eq!(first.outcome, Outcome::Ok, "{}", first.to_json());
    for id in ["directory:app", "file:motd", "file:conf", "template:site"] {
        assert_eq!(status(&first, id), Status::Changed, "{id}");
    }
    // Requirements first, declaration order otherwise.
    let order: Vec<&str> = first.resources.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        order,
        ["directory:app", "file:motd", "file:conf", "template:site"]
    );

    let etc = root.path().join("etc");
    assert_eq!(
        std::fs::read_to_string(etc.join("motd")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        std::fs::metadata(etc.join("motd")).unwrap().mode() & 0o7777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(etc.join("app")).unwrap().mode() & 0o7777,
        0o750
    );
    assert_eq!(
        std::fs::metadata(etc.join("app/app.conf")).unwrap().mode() & 0o7777,
        0o644
    );
    assert_eq!(
        std::fs::read_to_string(etc.join("app/site.conf")).unwrap(),
        "os=debian 13\nname=web-1\nid=i-0123456789abcdef0\nport=8080\nworkers=4\n"
    );
    let motd = first.resource("file:motd").unwrap();
    let fields: Vec<&str> = motd.changes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["content", "mode"]);
    assert!(motd.changes[0]
        .from
        .as_deref()
        .unwrap()
        .ends_with("(4 bytes)"));
    assert!(motd.changes[0]
        .to
        .as_deref()
        .unwrap()
        .ends_with("(6 bytes)"));
    // No temporary file is left beside what was written.
    let leftovers: Vec<_> = std::fs::read_dir(etc.join("app"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().to_string())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let second = Engine::run(&roles, &facts(), &options);
    assert_eq!(second.outcome, Outcome::Ok);
    assert!(
        second
            .resources
            .iter()
            .all(|r| r.status == Status::Unchanged && r.changes.is_empty()),
        "{}",
        second.to_json()
    );
}

#[test]
fn noop_predicts_exactly_what_the_real_run_changes_and_touches_nothing() {
    require_root();
    let root = shell_root();
    std::fs::write(root.path().join("etc/existing"), "same\n").unwrap();
    std::fs::write(root.path().join("etc/stale"), "stale\n").unwrap();
    // Whatever the umask: the prediction below names the mode it starts from.
    std::fs::set_permissions(
        root.path().join("etc/stale"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let roles = role(json!([
        {"kind": "file", "name": "existing", "path": "/etc/existing", "content": "same\n"},
        {"kind": "file", "name": "stale", "path": "/etc/stale", "content": "fresh\n", "mode": "0640"},
        {"kind": "directory", "name": "srv", "path": "/srv"},
        {"kind": "file", "name": "new", "path": "/srv/new", "content": "new\n", "requires": ["directory:srv"]},
        {"kind": "exec", "name": "marker", "command": "echo done > /tmp/marker", "creates": "/tmp/marker"},
        {"kind": "exec", "name": "guarded-by-file", "command": "echo x > /tmp/never",
         "creates": "/srv/new", "requires": ["file:new"]},
        {"kind": "exec", "name": "unless-true", "command": "echo x > /tmp/never", "unless": "true"},
        {"kind": "exec", "name": "onlyif-true", "command": "echo ran > /tmp/onlyif", "onlyif": "test -d /etc"},
    ]));
    let before = snapshot(root.path());
    let mut options = Options::new(root.path());
    options.noop = true;
    let noop = Engine::run(&roles, &facts(), &options);
    assert_eq!(noop.outcome, Outcome::Ok, "{}", noop.to_json());
    assert!(noop.noop);
    assert_eq!(snapshot(root.path()), before, "a noop run changed the root");
    assert_eq!(status(&noop, "file:existing"), Status::Unchanged);
    assert_eq!(status(&noop, "file:stale"), Status::WouldChange);
    assert_eq!(status(&noop, "directory:srv"), Status::WouldChange);
    assert_eq!(status(&noop, "file:new"), Status::WouldChange);
    assert_eq!(status(&noop, "exec:marker"), Status::WouldChange);
    // The file it waits for would be written first, so it would not run.
    assert_eq!(status(&noop, "exec:guarded-by-file"), Status::Unchanged);
    assert_eq!(status(&noop, "exec:unless-true"), Status::Unchanged);
    assert_eq!(status(&noop, "exec:onlyif-true"), Status::WouldChange);
    let json: serde_json::Value = serde_json::from_str(&noop.to_json()).unwrap();
    assert_eq!(json["outcome"], "ok");
    assert_eq!(json["resources"][1]["id"], "file:stale");
    assert_eq!(json["resources"][1]["status"], "would_change");
    assert_eq!(
        json["resources"][1]["changes"][1],
        json!({"field": "mode", "from": "0644", "to": "0640"})
    );

    options.noop = false;
    let real = Engine::run(&roles, &facts(), &options);
    assert_eq!(real.outcome, Outcome::Ok, "{}", real.to_json());
    assert_predicted(&noop, &real);
    assert!(root.path().join("tmp/marker").exists());
    assert!(root.path().join("tmp/onlyif").exists());
    assert!(!root.path().join("tmp/never").exists());
}

#[test]
fn noop_marks_what_cannot_be_known_as_unknown() {
    require_root();
    let root = shell_root();
    install_program(root.path(), "mkdir", "/bin/mkdir");
    let roles = role(json!([
        {"kind": "exec", "name": "unguarded", "command": "echo x > /tmp/x"},
        {"kind": "exec", "name": "make-data", "command": "mkdir /data", "creates": "/data"},
        {"kind": "file", "name": "data-file", "path": "/data/file", "content": "x", "requires": ["exec:make-data"]},
        {"kind": "directory", "name": "data", "path": "/data", "requires": ["exec:make-data"]},
        {"kind": "file", "name": "flag", "path": "/tmp/flag", "content": "1"},
        {"kind": "exec", "name": "guard-after-change", "command": "true",
         "unless": "test -f /tmp/flag", "requires": ["file:flag"]},
    ]));
    let mut options = Options::new(root.path());
    options.noop = true;
    let noop = Engine::run(&roles, &facts(), &options);
    assert_eq!(noop.outcome, Outcome::Ok, "{}", noop.to_json());
    for id in [
        "exec:unguarded",
        "file:data-file",
        "directory:data",
        "exec:guard-after-change",
    ] {
        let resource = noop.resource(id).unwrap();
        assert_eq!(resource.status, Status::Unknown, "{id}: {}", noop.to_json());
        assert!(resource.reason.is_some(), "{id} has no reason");
    }
    assert!(noop
        .resource("file:data-file")
        .unwrap()
        .reason
        .as_deref()
        .unwrap()
        .contains("exec:make-data"));
    assert_eq!(status(&noop, "exec:make-data"), Status::WouldChange);

    // The real run: the exec made /data, so the directory is already there.
    options.noop = false;
    let real = Engine::run(&roles, &facts(), &options);
    assert_eq!(real.outcome, Outcome::Ok, "{}", real.to_json());
    assert_eq!(status(&real, "directory:data"), Status::Unchanged);
    assert_eq!(status(&real, "file:data-file"), Status::Changed);
    assert_eq!(status(&real, "exec:guard-after-change"), Status::Unchanged);
}

#[test]
fn a_render_failure_touches_nothing() {
    let root = empty_root();
    std::fs::write(root.path().join("etc/keep"), "keep\n").unwrap();
    let roles = role(json!([
        {"kind": "file", "name": "keep", "path": "/etc/keep", "content": "replaced\n"},
        {"kind": "directory", "name": "d", "path": "/etc/d"},
        {"kind": "template", "name": "broken", "path": "/etc/broken",
         "template": "line one\nvalue={{ vars.missing }}\n"},
    ]));
    let before = snapshot(root.path());
    let report = Engine::run(&roles, &facts(), &Options::new(root.path()));
    assert_eq!(report.outcome, Outcome::RenderFailed);
    assert_eq!(snapshot(root.path()), before);
    assert_eq!(status(&report, "template:broken"), Status::Failed);
    assert_eq!(status(&report, "file:keep"), Status::Skipped);
    assert_eq!(status(&report, "directory:d"), Status::Skipped);
    assert_eq!(report.errors.len(), 1);
    let error = &report.errors[0];
    assert!(
        error.starts_with("role test: template:broken: template: line 2: undefined value"),
        "{error}"
    );
}

#[test]
fn a_missing_source_is_a_render_failure() {
    let root = empty_root();
    let sources = tempfile::tempdir().unwrap();
    std::fs::write(sources.path().join("present.txt"), "from source\n").unwrap();
    let roles = role(json!([
        {"kind": "file", "name": "ok", "path": "/etc/ok", "source": "present.txt"},
        {"kind": "file", "name": "gone", "path": "/etc/gone", "source": "absent.txt"},
    ]));
    let mut options = Options::new(root.path());
    options.source_dir = sources.path().to_path_buf();
    let report = Engine::run(&roles, &facts(), &options);
    assert_eq!(report.outcome, Outcome::RenderFailed);
    assert!(!root.path().join("etc/ok").exists());
    assert!(
        report.errors[0].contains("absent.txt"),
        "{:?}",
        report.errors
    );

    let roles =
        role(json!([{"kind": "file", "name": "ok", "path": "/etc/ok", "source": "present.txt"}]));
    let report = Engine::run(&roles, &facts(), &options);
    assert_eq!(report.outcome, Outcome::Ok);
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/ok")).unwrap(),
        "from source\n"
    );
}

#[test]
fn invalid_roles_touch_nothing_and_name_the_resource_and_field() {
    let root = empty_root();
    let roles = role(json!([
        {"kind": "file", "name": "a", "path": "/etc/a", "content": "x", "requires": ["file:b"]},
        {"kind": "file", "name": "b", "path": "/etc/b", "content": "x", "requires": ["file:a"]},
    ]));
    let report = Engine::run(&roles, &facts(), &Options::new(root.path()));
    assert_eq!(report.outcome, Outcome::Invalid);
    assert_eq!(
        report.errors,
        ["role test: file:a: requires: dependency cycle: file:a -> file:b -> file:a"]
    );
    assert!(!root.path().join("etc/a").exists());
}

#[test]
fn a_failed_resource_skips_its_dependents_and_the_others_go_on() {
    require_root();
    let root = shell_root();
    let roles = role(json!([
        {"kind": "exec", "name": "fails", "command": "echo broken >&2; exit 3"},
        {"kind": "file", "name": "after", "path": "/etc/after", "content": "x", "requires": ["exec:fails"]},
        {"kind": "file", "name": "transitive", "path": "/etc/transitive", "content": "x", "requires": ["file:after"]},
        {"kind": "file", "name": "independent", "path": "/etc/independent", "content": "x"},
        {"kind": "file", "name": "no-parent", "path": "/nowhere/file", "content": "x"},
    ]));
    let report = Engine::run(&roles, &facts(), &Options::new(root.path()));
    assert_eq!(report.outcome, Outcome::Failed);
    let fails = report.resource("exec:fails").unwrap();
    assert_eq!(fails.status, Status::Failed);
    assert_eq!(
        fails.error.as_deref(),
        Some("command: exit status 3: broken")
    );
    let after = report.resource("file:after").unwrap();
    assert_eq!(after.status, Status::Skipped);
    assert_eq!(
        after.reason.as_deref(),
        Some("requires exec:fails, which failed")
    );
    assert_eq!(
        report
            .resource("file:transitive")
            .unwrap()
            .reason
            .as_deref(),
        Some("requires file:after, which was skipped")
    );
    assert_eq!(status(&report, "file:independent"), Status::Changed);
    let no_parent = report.resource("file:no-parent").unwrap();
    assert_eq!(no_parent.status, Status::Failed);
    assert_eq!(
        no_parent.error.as_deref(),
        Some("parent directory /nowhere does not exist (declare it as a directory resource)")
    );
    assert!(!root.path().join("etc/after").exists());
}

#[test]
fn exec_guards_decide_whether_the_command_runs() {
    require_root();
    let root = shell_root();
    std::fs::write(root.path().join("etc/present"), "").unwrap();
    let roles = role(json!([
        {"kind": "exec", "name": "creates-present", "command": "echo x >> /tmp/log-a", "creates": "/etc/present"},
        {"kind": "exec", "name": "creates-absent", "command": "echo x >> /tmp/made", "creates": "/tmp/made"},
        {"kind": "exec", "name": "onlyif-false", "command": "echo x >> /tmp/log-b", "onlyif": "exit 1"},
        {"kind": "exec", "name": "onlyif-true", "command": "echo x >> /tmp/log-c", "onlyif": "exit 0"},
        {"kind": "exec", "name": "unless-true", "command": "echo x >> /tmp/log-d", "unless": "test -f /etc/present"},
        {"kind": "exec", "name": "unless-false", "command": "echo x >> /tmp/log-e", "unless": "test -f /tmp/log-e"},
        {"kind": "exec", "name": "chrooted", "command": "test -f /etc/present && echo yes > /tmp/inside"},
    ]));
    let options = Options::new(root.path());
    let first = Engine::run(&roles, &facts(), &options);
    assert_eq!(first.outcome, Outcome::Ok, "{}", first.to_json());
    let expected = [
        ("exec:creates-present", Status::Unchanged),
        ("exec:creates-absent", Status::Changed),
        ("exec:onlyif-false", Status::Unchanged),
        ("exec:onlyif-true", Status::Changed),
        ("exec:unless-true", Status::Unchanged),
        ("exec:unless-false", Status::Changed),
        ("exec:chrooted", Status::Changed),
    ];
    for (id, want) in expected {
        assert_eq!(status(&first, id), want, "{id}");
    }
    let tmp = root.path().join("tmp");
    assert!(
        !tmp.join("log-a").exists() && !tmp.join("log-b").exists() && !tmp.join("log-d").exists()
    );
    assert_eq!(
        std::fs::read_to_string(tmp.join("inside")).unwrap(),
        "yes\n"
    );

    let second = Engine::run(&roles, &facts(), &options);
    assert_eq!(status(&second, "exec:creates-absent"), Status::Unchanged);
    assert_eq!(status(&second, "exec:unless-false"), Status::Unchanged);
    // Guardless and onlyif-true commands run on every run.
    assert_eq!(status(&second, "exec:onlyif-true"), Status::Changed);
    assert_eq!(std::fs::read_to_string(tmp.join("made")).unwrap(), "x\n");
    assert_eq!(std::fs::read_to_string(tmp.join("log-e")).unwrap(), "x\n");
}

#[test]
fn an_exec_that_outlives_its_timeout_is_killed() {
    require_root();
    let root = shell_root();
    let roles = role(
        json!([{"kind": "exec", "name": "slow", "command": "while :; do :; done", "timeout": 1}]),
    );
    let report = Engine::run(&roles, &facts(), &Options::new(root.path()));
    let slow = report.resource("exec:slow").unwrap();
    assert_eq!(slow.status, Status::Failed);
    assert!(
        slow.error
            .as_deref()
            .unwrap()
            .contains("did not finish within 1 s"),
        "{:?}",
        slow.error
    );
}

#[test]
fn secrets_never_appear_in_the_report() {
    require_root();
    let root = shell_root();
    let secret = "s3cr3t-Pa55w0rd";
    let roles = role(json!([
        {"kind": "file", "name": "credentials", "path": "/etc/credentials", "content": format!("password={secret}\n"), "mode": "0600"},
        {"kind": "template", "name": "db", "path": "/etc/db.conf",
         "template": "user=app\npassword={{ vars.db_password }}\n", "vars": {"db_password": secret}},
        {"kind": "exec", "name": "login", "command": format!("echo using {secret} >&2; exit 1")},
        {"kind": "exec", "name": "probe", "command": format!("echo {secret} > /tmp/probe"), "creates": "/tmp/probe"},
    ]));
    let mut options = Options::new(root.path());
    options.secrets.insert(secret);
    for noop in [true, false] {
        options.noop = noop;
        let report = Engine::run(&roles, &facts(), &options);
        let json = report.to_json();
        assert!(!json.contains(secret), "noop={noop}: {json}");
        assert!(json.contains(REDACTED), "noop={noop}: {json}");
    }
    let report = Engine::run(&roles, &facts(), &options);
    // The failing command's error names it and its output, both redacted.
    let login = report.resource("exec:login").unwrap();
    assert_eq!(
        login.error.as_deref(),
        Some("command: exit status 1: using <redacted>")
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/db.conf")).unwrap(),
        format!("user=app\npassword={secret}\n")
    );

    // A report written to disk is the same redacted JSON.
    let path = root.path().join("report.json");
    report.write(&path).unwrap();
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(!written.contains(secret));
    let parsed: endstate_config::Report = serde_json::from_str(&written).unwrap();
    assert_eq!(parsed.resources.len(), 4);

    // Errors of the run as a whole are redacted too.
    let roles = role(
        json!([{"kind": "file", "name": "x", "path": "/etc/x", "content": "x", "requires": [format!("file:{secret}")]}]),
    );
    let invalid = Engine::run(&roles, &facts(), &options);
    assert_eq!(invalid.outcome, Outcome::Invalid);
    assert!(!invalid.to_json().contains(secret));
}
