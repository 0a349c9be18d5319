//! Resources that touch a system's accounts, packages and services, each
//! against a throwaway root (never the host's own users, packages or
//! services), and facts from a loopback metadata service.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use crate::black_box::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};

use common::*;
use endstate_config::facts::{gather, FactsOptions};
use endstate_config::{Engine, Options, Outcome, Status};
use endstate_instance::supervisor::{Op, Request, Response};
use endstate_instance::{ServiceState, ServiceStatus};
use serde_json::json;

/// A root holding copies of the host's account files, for `useradd --root`.
fn accounts_root() -> tempfile::TempDir {
    let root = empty_root();
    for file in ["passwd", "group", "shadow", "gshadow", "login.defs"] {
        std::fs::copy(format!("/etc/{file}"), root.path().join("etc").join(file)).unwrap();
    }
    std::fs::create_dir_all(root.path().join("srv")).unwrap();
    root
}

#[test]
fn users_and_groups_are_created_inside_the_root_only() {
    require_root();
    let root = accounts_root();
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let host_group = std::fs::read_to_string("/etc/group").unwrap();
    assert!(
        !host_passwd.contains("es-app:"),
        "the host already has the test user"
    );
    let roles = role(json!([
        {"kind": "group", "name": "es-app", "gid": 4242},
        {"kind": "group", "name": "es-extra", "gid": 4244},
        {"kind": "user", "name": "es-app", "uid": 4243, "group": "es-app", "groups": ["es-extra"],
         "home": "/srv/app", "shell": "/bin/sh", "requires": ["group:es-app", "group:es-extra"]},
        {"kind": "file", "name": "owned", "path": "/srv/owned", "content": "x\n",
         "owner": "es-app", "group": "es-app", "requires": ["user:es-app"]},
    ]));
    let mut options = Options::new(root.path());
    options.noop = true;
    let noop = Engine::run(&roles, &facts(), &options);
    assert_eq!(noop.outcome, Outcome::Ok, "{}", noop.to_json());
    options.noop = false;
    let real = Engine::run(&roles, &facts(), &options);
    assert_eq!(real.outcome, Outcome::Ok, "{}", real.to_json());
    assert_predicted(&noop, &real);

    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    assert!(
        passwd.contains("es-app:x:4243:4242::/srv/app:/bin/sh"),
        "{passwd}"
    );
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    assert!(group.contains("es-app:x:4242:"), "{group}");
    assert!(group.contains("es-extra:x:4244:es-app"), "{group}");
    let owned = std::fs::metadata(root.path().join("srv/owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (4243, 4242));
    // The host's own databases are untouched.
    assert_eq!(std::fs::read_to_string("/etc/passwd").unwrap(), host_passwd);
    assert_eq!(std::fs::read_to_string("/etc/group").unwrap(), host_group);

    let again = Engine::run(&roles, &facts(), &options);
    assert!(
        again
            .resources
            .iter()
            .all(|r| r.status == Status::Unchanged),
        "{}",
        again.to_json()
    );

    // A changed shell is a usermod, reported as such.
    let roles = role(json!([{"kind": "user", "name": "es-app", "shell": "/bin/false"}]));
    let changed = Engine::run(&roles, &facts(), &options);
    let user = changed.resource("user:es-app").unwrap();
    assert_eq!(user.status, Status::Changed, "{}", changed.to_json());
    assert_eq!(user.changes[0].field, "shell");
    assert_eq!(user.changes[0].from.as_deref(), Some("/bin/sh"));
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    assert!(
        passwd.contains("es-app:x:4243:4242::/srv/app:/bin/false"),
        "{passwd}"
    );
}

#[test]
fn an_owner_missing_from_the_root_is_an_error_naming_it() {
    let root = accounts_root();
    let roles = role(json!([
        {"kind": "file", "name": "f", "path": "/srv/f", "content": "x", "owner": "es-nobody-here"},
    ]));
    let report = Engine::run(&roles, &facts(), &Options::new(root.path()));
    let file = report.resource("file:f").unwrap();
    assert_eq!(file.status, Status::Failed);
    let error = file.error.as_deref().unwrap();
    assert!(
        error.starts_with("owner: no user 'es-nobody-here' in "),
        "{error}"
    );
    assert!(!root.path().join("srv/f").exists());
}

#[test]
fn a_package_on_a_root_without_dpkg_is_a_clear_error() {
    let root = empty_root();
    let roles = role(json!([{"kind": "package", "name": "nginx"}]));
    let report = Engine::run(&roles, &facts(), &Options::new(root.path()));
    let package = report.resource("package:nginx").unwrap();
    assert_eq!(package.status, Status::Failed);
    let error = package.error.as_deref().unwrap();
    assert!(
        error.starts_with("no package manager applies to this root: "),
        "{error}"
    );
    assert!(
        error.contains("var/lib/dpkg/status does not exist"),
        "{error}"
    );
}

/// A root with dpkg-query and a dpkg database holding one installed
/// package, `es-fake` 1.0, and no apt-get.
fn dpkg_root() -> tempfile::TempDir {
    let root = shell_root();
    install_program(root.path(), "dpkg-query", "/usr/bin/dpkg-query");
    let dpkg = root.path().join("var/lib/dpkg");
    std::fs::create_dir_all(dpkg.join("info")).unwrap();
    std::fs::create_dir_all(dpkg.join("updates")).unwrap();
    std::fs::write(
        dpkg.join("status"),
        "Package: es-fake\nStatus: install ok installed\nPriority: optional\nSection: misc\nMaintainer: nobody <nobody@example.invalid>\nArchitecture: all\nVersion: 1.0\nDescription: a package that exists only in a test root\n\n",
    )
    .unwrap();
    std::fs::write(dpkg.join("available"), "").unwrap();
    root
}

#[test]
fn packages_are_queried_with_dpkg_inside_the_root() {
    require_root();
    let root = dpkg_root();
    let roles = role(json!([
        {"kind": "package", "name": "es-fake"},
        {"kind": "package", "name": "pinned", "package": "es-fake", "version": "2.0"},
        {"kind": "package", "name": "es-absent"},
    ]));
    let mut options = Options::new(root.path());
    options.noop = true;
    let noop = Engine::run(&roles, &facts(), &options);
    assert_eq!(
        status(&noop, "package:es-fake"),
        Status::Unchanged,
        "{}",
        noop.to_json()
    );
    let pinned = noop.resource("package:pinned").unwrap();
    assert_eq!(pinned.status, Status::WouldChange);
    assert_eq!(pinned.changes[0].from.as_deref(), Some("1.0"));
    assert_eq!(pinned.changes[0].to.as_deref(), Some("2.0"));
    let absent = noop.resource("package:es-absent").unwrap();
    assert_eq!(absent.status, Status::WouldChange, "{}", noop.to_json());
    assert_eq!(absent.changes[0].from, None);

    // This root has no apt-get: installing is a clear error, not a host install.
    options.noop = false;
    let real = Engine::run(&roles, &facts(), &options);
    assert_eq!(status(&real, "package:es-fake"), Status::Unchanged);
    let error = real
        .resource("package:es-absent")
        .unwrap()
        .error
        .clone()
        .unwrap();
    assert!(
        error.ends_with("usr/bin/apt-get does not exist: cannot install es-absent"),
        "{error}"
    );
}

/// A root that "runs systemd": `/run/systemd/system` and a `systemctl`
/// stand-in that records its calls and keeps units' states in files.
fn systemd_root() -> tempfile::TempDir {
    let root = shell_root();
    std::fs::create_dir_all(root.path().join("run/systemd/system")).unwrap();
    std::fs::create_dir_all(root.path().join("var/lib/fake-systemd")).unwrap();
    install_script(
        root.path(),
        "/usr/bin/systemctl",
        r#"#!/bin/sh
echo "$*" >> /var/log/systemctl.log
state=/var/lib/fake-systemd
case "$1" in
  is-active) test -f "$state/$3.active" ;;
  is-enabled) test -f "$state/$3.enabled" ;;
  start|restart) echo > "$state/$2.active" ;;
  stop) rm -f "$state/$2.active" ;;
  enable) echo > "$state/$2.enabled" ;;
  *) exit 2 ;;
esac
"#,
    );
    std::fs::create_dir_all(root.path().join("var/log")).unwrap();
    // `rm` is not a dash builtin; give the stand-in one.
    install_program(root.path(), "rm", "/bin/rm");
    root
}

fn systemctl_calls(root: &std::path::Path) -> Vec<String> {
    let log = root.join("var/log/systemctl.log");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    std::fs::write(&log, "").unwrap();
    text.lines()
        .filter(|line| !line.starts_with("is-"))
        .map(str::to_string)
        .collect()
}

fn web_roles(config: &str) -> Vec<endstate_config::Role> {
    role(json!([
        {"kind": "file", "name": "web.conf", "path": "/etc/web.conf", "content": config, "notify": ["service:web"]},
        {"kind": "file", "name": "unrelated", "path": "/etc/unrelated", "content": config},
        {"kind": "service", "name": "web", "enabled": true},
    ]))
}

#[test]
fn notify_restarts_a_systemd_service_only_when_a_watched_resource_changed() {
    require_root();
    let root = systemd_root();
    let options = Options::new(root.path());

    // First run: the service is started (and enabled), not also restarted.
    let first = Engine::run(&web_roles("port=80\n"), &facts(), &options);
    assert_eq!(first.outcome, Outcome::Ok, "{}", first.to_json());
    assert_eq!(systemctl_calls(root.path()), ["start web", "enable web"]);
    let web = first.resource("service:web").unwrap();
    let fields: Vec<&str> = web.changes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["state", "enabled"]);

    // Nothing changed: no call but queries.
    let second = Engine::run(&web_roles("port=80\n"), &facts(), &options);
    assert_eq!(
        status(&second, "service:web"),
        Status::Unchanged,
        "{}",
        second.to_json()
    );
    assert!(systemctl_calls(root.path()).is_empty());

    // The watched file changes: noop predicts the restart, the real run does it.
    let mut noop = options.clone();
    noop.noop = true;
    let predicted = Engine::run(&web_roles("port=8080\n"), &facts(), &noop);
    assert!(systemctl_calls(root.path()).is_empty());
    let real = Engine::run(&web_roles("port=8080\n"), &facts(), &options);
    assert_predicted(&predicted, &real);
    assert_eq!(systemctl_calls(root.path()), ["restart web"]);
    let web = real.resource("service:web").unwrap();
    assert_eq!(
        web.changes[0].to.as_deref(),
        Some("notified by file:web.conf")
    );
}

#[test]
fn a_failed_notifier_restarts_nothing_and_an_unknown_one_makes_the_restart_unknown() {
    require_root();
    let root = systemd_root();
    std::fs::write(root.path().join("var/lib/fake-systemd/web.active"), "").unwrap();
    let options = Options::new(root.path());
    let failing = role(json!([
        {"kind": "file", "name": "broken", "path": "/nowhere/web.conf", "content": "x", "notify": ["service:web"]},
        {"kind": "service", "name": "web"},
    ]));
    let report = Engine::run(&failing, &facts(), &options);
    assert_eq!(status(&report, "file:broken"), Status::Failed);
    assert_eq!(
        status(&report, "service:web"),
        Status::Unchanged,
        "{}",
        report.to_json()
    );
    assert!(systemctl_calls(root.path()).is_empty());

    let unguarded = role(json!([
        {"kind": "exec", "name": "reload-data", "command": "true", "notify": ["service:web"]},
        {"kind": "service", "name": "web"},
    ]));
    let mut noop = options.clone();
    noop.noop = true;
    let predicted = Engine::run(&unguarded, &facts(), &noop);
    let web = predicted.resource("service:web").unwrap();
    assert_eq!(web.status, Status::Unknown, "{}", predicted.to_json());
    assert!(web.reason.as_deref().unwrap().contains("exec:reload-data"));
    assert!(systemctl_calls(root.path()).is_empty());
    let real = Engine::run(&unguarded, &facts(), &options);
    assert_eq!(status(&real, "service:web"), Status::Changed);
    assert_eq!(systemctl_calls(root.path()), ["restart web"]);
}

#[test]
fn a_service_without_a_service_manager_is_a_clear_error() {
    let root = empty_root();
    let roles = role(json!([{"kind": "service", "name": "web"}]));
    let report = Engine::run(&roles, &facts(), &Options::new(root.path()));
    let error = report
        .resource("service:web")
        .unwrap()
        .error
        .clone()
        .unwrap();
    assert!(error.starts_with("no service manager: "), "{error}");
}

/// A stand-in for the instance supervisor's control socket: reads each
/// request with the supervisor's own `Request` type (which refuses unknown
/// fields) and answers with its `Response`, recording requests.
struct FakeSupervisor {
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeSupervisor {
    fn start(path: &std::path::Path) -> FakeSupervisor {
        let listener = UnixListener::bind(path).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            let mut running: BTreeMap<String, bool> = BTreeMap::new();
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut line = String::new();
                BufReader::new(stream.try_clone().unwrap())
                    .read_line(&mut line)
                    .unwrap();
                let request: Request = serde_json::from_str(&line).unwrap();
                let op = serde_json::to_value(request.op).unwrap();
                let op = op.as_str().unwrap().to_string();
                seen.lock().unwrap().push(match &request.name {
                    Some(name) => format!("{op} {name}"),
                    None => op.clone(),
                });
                if let Some(name) = &request.name {
                    if matches!(request.op, Op::Start | Op::Restart) {
                        running.insert(name.clone(), true);
                    }
                }
                let services = running
                    .keys()
                    .map(|name| ServiceStatus {
                        name: name.clone(),
                        state: ServiceState::Running,
                        pid: Some(7),
                        restarts: 0,
                        last_exit: None,
                    })
                    .collect();
                let answer = Response {
                    ok: true,
                    error: None,
                    services,
                };
                let answer = serde_json::to_string(&answer).unwrap();
                stream.write_all(format!("{answer}\n").as_bytes()).unwrap();
            }
        });
        FakeSupervisor { requests }
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

#[test]
fn on_the_process_backend_services_go_through_the_supervisor_socket() {
    let root = empty_root();
    let socket_dir = tempfile::tempdir().unwrap();
    let socket = socket_dir.path().join("supervisor.sock");
    let supervisor = FakeSupervisor::start(&socket);
    let roles = |port: u16| {
        role(json!([
            {"kind": "directory", "name": "services-parent", "path": "/etc/endstate"},
            {"kind": "directory", "name": "services", "path": "/etc/endstate/services", "requires": ["directory:services-parent"]},
            {"kind": "file", "name": "web.json", "path": "/etc/endstate/services/web.json",
             "content": format!("{{\"command\": [\"python3\", \"-m\", \"http.server\", \"{port}\"]}}\n"),
             "requires": ["directory:services"], "notify": ["service:web"]},
            {"kind": "service", "name": "web", "enabled": true},
        ]))
    };
    let mut options = Options::new(root.path());
    options.supervisor_socket = Some(socket.clone());

    let first = Engine::run(&roles(8080), &facts(), &options);
    assert_eq!(first.outcome, Outcome::Ok, "{}", first.to_json());
    assert_eq!(supervisor.take(), ["status", "start web"]);
    let second = Engine::run(&roles(8080), &facts(), &options);
    assert_eq!(status(&second, "service:web"), Status::Unchanged);
    assert_eq!(supervisor.take(), ["status"]);
    let third = Engine::run(&roles(9090), &facts(), &options);
    assert_eq!(status(&third, "service:web"), Status::Changed);
    assert_eq!(supervisor.take(), ["status", "restart web"]);
}

/// A loopback metadata service that insists on an IMDSv2 token.
fn fake_imds() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if stream.read(&mut byte).unwrap() == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let head = String::from_utf8(head).unwrap();
            let request_line = head.lines().next().unwrap().to_string();
            seen.lock().unwrap().push(request_line.clone());
            let has_token = head
                .to_ascii_lowercase()
                .contains("x-aws-ec2-metadata-token: tok-1");
            let (status, body) = match request_line.split_whitespace().take(2).collect::<Vec<_>>()[..]
            {
                ["PUT", "/latest/api/token"] => ("200 OK", "tok-1"),
                [_, _] if !has_token => ("401 Unauthorized", ""),
                ["GET", "/latest/meta-data/instance-id"] => ("200 OK", "i-0abc"),
                ["GET", "/latest/meta-data/instance-type"] => ("200 OK", "t3.small"),
                ["GET", "/latest/meta-data/placement/availability-zone"] => ("200 OK", "local-1a"),
                ["GET", "/latest/meta-data/tags/instance/"] => ("200 OK", "Name\nteam"),
                ["GET", "/latest/meta-data/tags/instance/Name"] => ("200 OK", "web-7"),
                ["GET", "/latest/meta-data/tags/instance/team"] => ("200 OK", "edge"),
                _ => ("404 Not Found", ""),
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (endpoint, requests)
}

#[test]
fn facts_come_from_the_root_and_the_metadata_service_when_given() {
    let root = empty_root();
    std::fs::write(
        root.path().join("etc/os-release"),
        "ID=debian\nVERSION_ID=\"13\"\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n",
    )
    .unwrap();
    // Without an endpoint, no instance and no request anywhere.
    let plain = gather(&FactsOptions::new(root.path())).unwrap();
    assert_eq!(plain.os.id, "debian");
    assert!(plain.cpus >= 1 && plain.memory_bytes > 0);
    assert!(plain.instance.is_none());

    let (endpoint, requests) = fake_imds();
    let mut options = FactsOptions::new(root.path());
    options.imds_endpoint = Some(endpoint);
    let facts = gather(&options).unwrap();
    let instance = facts.instance.clone().unwrap();
    assert_eq!(instance.id, "i-0abc");
    assert_eq!(instance.metadata["instance-type"], "t3.small");
    assert_eq!(instance.metadata["availability-zone"], "local-1a");
    assert!(!instance.metadata.contains_key("ami-id"));
    assert_eq!(
        instance.tags,
        BTreeMap::from([
            ("Name".to_string(), "web-7".to_string()),
            ("team".to_string(), "edge".to_string())
        ])
    );
    assert_eq!(
        requests.lock().unwrap()[0],
        "PUT /latest/api/token HTTP/1.1"
    );

    // Templates see them.
    let roles = role(json!([{"kind": "template", "name": "t", "path": "/etc/t",
        "template": "{{ tags.Name }}/{{ tags.team }} {{ metadata['instance-id'] }} {{ facts.os.pretty_name }}"}]));
    let report = Engine::run(&roles, &facts, &Options::new(root.path()));
    assert_eq!(report.outcome, Outcome::Ok, "{}", report.to_json());
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/t")).unwrap(),
        "web-7/edge i-0abc Debian GNU/Linux 13 (trixie)"
    );

    // An endpoint that does not answer is an error naming it.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    options.imds_endpoint = Some(format!("http://{address}"));
    let error = gather(&options).unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("instance metadata service http://{address}: ")),
        "{error}"
    );
}
