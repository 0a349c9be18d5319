//! Runs real instances as root in a temporary directory: overlay root with
//! metacopy, cloud-config boot, a supervised HTTP service on a loopback
//! address, the instance uid, SIGKILL of the top process ending the whole
//! instance, and a second boot running `bootcmd` only (then a SIGTERM stop).
//! Fails, not skips, without root: CI runs it as root.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use endstate_instance::{
    BootKind, BootState, InitConfig, Isolation, Overlay, Rlimits, RootSource, ServiceState, Status,
};

fn status_field(pid: &str, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(field))
        .map(|value| value.trim().to_string())
}

fn assert_root() {
    let uid = status_field("self", "Uid:").expect("read /proc/self/status");
    assert!(
        uid.split_whitespace().next() == Some("0"),
        "tests/boot.rs must run as root (it mounts an overlay in a new mount namespace); uid is {uid}"
    );
}

/// Host PIDs of every process whose real uid is `uid`.
fn processes_of(uid: u32) -> Vec<String> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Some(uids) = status_field(&pid, "Uid:") {
            if uids.split_whitespace().next() == Some(uid.to_string().as_str()) {
                pids.push(pid);
            }
        }
    }
    pids
}

fn children_of(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn pseudo_random() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    (nanos ^ (u64::from(std::process::id()) << 20)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

struct Instance {
    dir: PathBuf,
    top: Child,
}

impl Instance {
    fn start(dir: &Path, config: &InitConfig) -> Instance {
        config.write(dir).unwrap();
        let console = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("console.log"))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_endstate-instance-init"));
        command
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        Instance {
            dir: dir.to_path_buf(),
            top: command.spawn().unwrap(),
        }
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    fn wait_for(&mut self, what: &str, done: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(status) = Status::read(&self.dir.join("status.json")) {
                if done(&status) {
                    return status;
                }
            }
            if let Ok(Some(exit)) = self.top.try_wait() {
                panic!(
                    "the instance ended ({exit}) before {what}:\n{}",
                    self.console()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SIGKILL to the top process ends a root instance; without root its
        // processes are ended through the top process's group.
        let group = nix::unistd::Pid::from_raw(self.top.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.top.kill();
        let _ = self.top.wait();
    }
}

fn control(socket: &Path, request: &str) -> serde_json::Value {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(b"\n").unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

fn http_get(address: &str, port: u16, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpStream::connect((address, port)) {
            Ok(mut stream) => {
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
                let mut answer = String::new();
                stream.read_to_string(&mut answer).unwrap();
                return answer;
            }
            Err(error) => {
                assert!(Instant::now() < deadline, "{address}:{port}: {error}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn wait_until_gone(uid: u32, pids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_of(uid);
        let pid1_left: Vec<&String> = pids
            .iter()
            .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        if left.is_empty() && pid1_left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes of the instance left: uid {uid}: {left:?}, runtime: {pid1_left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_root_instance_boots_serves_and_dies_with_its_top_process() {
    assert_root();
    let random = pseudo_random();
    let uid = 3_000_000 + (random % 500_000) as u32;
    assert!(processes_of(uid).is_empty(), "uid {uid} is in use");
    let address = format!(
        "127.99.{}.{}",
        (random >> 20) % 250 + 1,
        (random >> 28) % 250 + 1
    );
    let port = 20_000 + ((random >> 36) % 40_000) as u16;

    let temp = tempfile::tempdir().unwrap();
    let layer = temp.path().join("layers/base");
    for dir in ["etc", "root", "srv", "var/lib", "opt"] {
        std::fs::create_dir_all(layer.join(dir)).unwrap();
    }
    std::fs::write(layer.join("etc/hostname"), "image\n").unwrap();
    std::fs::write(layer.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    // A sizeable lower file: metacopy must copy up its metadata only.
    let big = vec![7u8; 32 * 1024 * 1024];
    std::fs::write(layer.join("opt/big.bin"), &big).unwrap();

    let dir = temp.path().join("instances/i-0000000000000test");
    std::fs::create_dir_all(&dir).unwrap();
    let user_data = format!(
        r#"#cloud-config
bootcmd:
  - echo "bootcmd-ran for $INSTANCE_ID"
write_files:
  - path: /srv/hello.txt
    content: hello from the instance
    permissions: '0644'
  - path: /etc/endstate/services/web.json
    content: |
      {{"command": ["python3", "-m", "http.server", "{port}", "--bind", "{address}", "--directory", "/srv"], "restart": "always"}}
runcmd:
  - echo "runcmd-output uid=$(id -u) host=$(hostname)"
  - [sh, -c, "echo argv-form-ran"]
packages:
  - nginx
"#
    );
    std::fs::write(dir.join("user-data"), user_data).unwrap();
    let config = InitConfig {
        instance_id: "i-0000000000000test".into(),
        hostname: "ip-127-99-test".into(),
        address: address.clone(),
        uid,
        gid: uid,
        isolation: Isolation::Namespaces,
        root: RootSource::Overlay(Overlay {
            lower: vec![layer.clone()],
            upper: dir.join("upper"),
            work: dir.join("work"),
        }),
        mount_point: dir.join("root"),
        host_binds: ["/usr", "/lib", "/lib64", "/bin", "/sbin"]
            .iter()
            .map(PathBuf::from)
            .collect(),
        extra_binds: Vec::new(),
        rlimits: Rlimits {
            nofile: Some(1024),
            nproc: Some(512),
            as_bytes: None,
            core: Some(0),
        },
        env: BTreeMap::from([("AWS_REGION".to_string(), "us-east-1".to_string())]),
        user_data: dir.join("user-data"),
        control_socket: dir.join("supervisor.sock"),
        status_file: dir.join("status.json"),
        boot: BootKind::First,
    };

    // First boot.
    let mut instance = Instance::start(&dir, &config);
    let status = instance.wait_for("boot to finish and web to run", |status| {
        status.boot != BootState::Booting
            && status
                .service("web")
                .is_some_and(|web| web.state == ServiceState::Running)
    });
    let console = instance.console();
    assert_eq!(status.boot, BootState::Finished, "{console}");
    assert_eq!(status.user_data_exit, Some(0));
    assert!(status.boot_finished.is_some());
    assert!(
        console.contains(&format!("runcmd-output uid={uid} host=ip-127-99-test")),
        "{console}"
    );
    assert!(console.contains("argv-form-ran"), "{console}");
    assert!(
        console.contains("bootcmd-ran for i-0000000000000test"),
        "{console}"
    );
    assert!(console.contains("running 'modules:final'"), "{console}");
    assert!(
        console.contains("unsupported: module 'packages'"),
        "{console}"
    );

    // The instance's view: written files land in the upper layer, owned by the instance.
    let hello = dir.join("upper/srv/hello.txt");
    assert_eq!(
        std::fs::read_to_string(&hello).unwrap(),
        "hello from the instance"
    );
    assert_eq!(std::fs::metadata(&hello).unwrap().uid(), uid);
    // metacopy: the big file's owner changed in upper, its data stayed in the layer.
    let upper_big = std::fs::symlink_metadata(dir.join("upper/opt/big.bin")).unwrap();
    assert_eq!(upper_big.uid(), uid);
    assert!(
        upper_big.blocks() * 512 < 1024 * 1024,
        "opt/big.bin was copied up: {} blocks",
        upper_big.blocks()
    );
    let du = Command::new("du")
        .arg("-sk")
        .arg(dir.join("upper"))
        .output()
        .unwrap();
    let upper_kib: u64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        upper_kib < 4 * 1024,
        "upper holds {upper_kib} KiB for a 32 MiB lower file"
    );

    // The service answers from the host.
    let answer = http_get(&address, port, "/hello.txt");
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.ends_with("hello from the instance"), "{answer}");

    // Everything the instance runs is its uid: the service's process, seen from the host.
    let web_pid = status.service("web").unwrap().pid.unwrap();
    let mine = processes_of(uid);
    let web_host_pid = mine
        .iter()
        .find(|pid| {
            status_field(pid, "NSpid:")
                .and_then(|ns| ns.split_whitespace().last().map(str::to_string))
                == Some(web_pid.to_string())
        })
        .unwrap_or_else(|| {
            panic!("no process of uid {uid} with namespace pid {web_pid}: {mine:?}")
        });
    for field in ["Uid:", "Gid:"] {
        let ids = status_field(web_host_pid, field).unwrap();
        assert!(
            ids.split_whitespace().all(|id| id == uid.to_string()),
            "{field} {ids}"
        );
    }
    assert_eq!(
        status_field(web_host_pid, "Groups:").unwrap_or_default(),
        ""
    );
    // The runtime's blocked signals are not inherited: a service can be stopped with SIGTERM.
    for field in ["SigBlk:", "SigIgn:"] {
        let mask = status_field(web_host_pid, field).unwrap();
        assert_eq!(
            u64::from_str_radix(&mask, 16).unwrap() & (1 << 14),
            0,
            "{field} {mask}"
        );
    }

    // The control socket answers, and a restart brings the service back.
    let socket = dir.join("supervisor.sock");
    let answer = control(&socket, r#"{"op": "status", "name": "web"}"#);
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["services"][0]["state"], "running", "{answer}");
    let answer = control(&socket, r#"{"op": "status", "name": "nope"}"#);
    assert_eq!(answer["ok"], false, "{answer}");
    let answer = control(&socket, r#"{"op": "restart", "name": "web"}"#);
    assert_eq!(answer["ok"], true, "{answer}");
    instance.wait_for("web to run again after a restart", |status| {
        status
            .service("web")
            .is_some_and(|web| web.state == ServiceState::Running && web.pid != Some(web_pid))
    });
    assert!(http_get(&address, port, "/hello.txt").starts_with("HTTP/1.0 200"));
    // The stop was graceful: python died of the SIGTERM (143), not of the SIGKILL (137).
    let console = instance.console();
    assert!(
        console.contains("service web: stopped (exit status 143)"),
        "{console}"
    );

    // SIGKILL of the top process ends every process of the instance.
    let runtime = children_of(instance.top.id());
    assert_eq!(
        runtime.len(),
        1,
        "the top process has one child, PID 1: {runtime:?}"
    );
    assert_eq!(
        status_field(&runtime[0], "NSpid:")
            .unwrap()
            .split_whitespace()
            .last(),
        Some("1")
    );
    instance.top.kill().unwrap();
    instance.top.wait().unwrap();
    wait_until_gone(uid, &runtime);
    drop(instance);

    // A second boot runs bootcmd only; SIGTERM stops it cleanly. The backend
    // removes the previous run's status.json before it starts the instance.
    std::fs::remove_file(dir.join("status.json")).unwrap();
    let mut again = config.clone();
    again.boot = BootKind::Again;
    let mut instance = Instance::start(&dir, &again);
    instance.wait_for("the second boot to finish and web to run", |status| {
        status.boot == BootState::Finished
            && status
                .service("web")
                .is_some_and(|web| web.state == ServiceState::Running)
    });
    let console = instance.console();
    assert_eq!(console.matches("bootcmd-ran for").count(), 2, "{console}");
    assert_eq!(
        console.matches("runcmd-output uid=").count(),
        1,
        "{console}"
    );
    assert_eq!(
        console.matches("unsupported: module 'packages'").count(),
        1,
        "{console}"
    );
    assert!(http_get(&address, port, "/hello.txt").starts_with("HTTP/1.0 200"));
    let runtime = children_of(instance.top.id());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(instance.top.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let exit = instance.top.wait().unwrap();
    assert!(exit.success(), "SIGTERM: {exit}\n{}", instance.console());
    wait_until_gone(uid, &runtime);
    let status = Status::read(&dir.join("status.json")).unwrap();
    assert_eq!(status.service("web").unwrap().state, ServiceState::Stopped);
    assert!(instance.console().contains("all services stopped"));
}

#[test]
fn an_instance_without_root_isolation_runs_in_its_copied_root() {
    assert_root();
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let dir = temp.path().join("i-00000000000000none");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("user-data"),
        r#"#cloud-config
write_files:
  - path: /etc/endstate/services/sleeper.json
    content: '{"command": ["sleep", "300"], "restart": "on-failure"}'
runcmd:
  - echo "cwd=$(pwd) home=$HOME"
users: [default]
"#,
    )
    .unwrap();
    let config = InitConfig {
        instance_id: "i-00000000000000none".into(),
        hostname: "ip-127-98-0-1".into(),
        address: "127.98.0.1".into(),
        uid: 0,
        gid: 0,
        isolation: Isolation::None,
        root: RootSource::Copied(root.clone()),
        mount_point: root.clone(),
        host_binds: Vec::new(),
        extra_binds: Vec::new(),
        rlimits: Rlimits::default(),
        env: BTreeMap::new(),
        user_data: dir.join("user-data"),
        control_socket: dir.join("supervisor.sock"),
        status_file: dir.join("status.json"),
        boot: BootKind::First,
    };
    let mut instance = Instance::start(&dir, &config);
    let status = instance.wait_for("boot to finish and sleeper to run", |status| {
        status.boot != BootState::Booting
            && status
                .service("sleeper")
                .is_some_and(|sleeper| sleeper.state == ServiceState::Running)
    });
    let console = instance.console();
    assert_eq!(status.boot, BootState::Finished, "{console}");
    let root_text = root.display().to_string();
    assert!(
        console.contains(&format!("cwd={root_text} home={root_text}")),
        "{console}"
    );
    assert!(console.contains("unsupported: module 'users'"), "{console}");
    assert!(root.join("etc/endstate/services/sleeper.json").is_file());
    // Without a PID namespace the service's pid is a host pid, in the top process's group.
    let sleeper = status.service("sleeper").unwrap().pid.unwrap().to_string();
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{sleeper}/comm"))
            .unwrap()
            .trim(),
        "sleep"
    );
    let stat = std::fs::read_to_string(format!("/proc/{sleeper}/stat")).unwrap();
    let after_name = stat.rsplit_once(')').unwrap().1;
    let group: u32 = after_name
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(group, instance.top.id(), "{stat}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(instance.top.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let exit = instance.top.wait().unwrap();
    assert!(exit.success(), "SIGTERM: {exit}\n{}", instance.console());
    assert!(
        !Path::new(&format!("/proc/{sleeper}")).exists(),
        "sleep {sleeper} survived"
    );
}

fn none_config(temp: &Path, id: &str) -> (PathBuf, PathBuf, InitConfig) {
    let root = temp.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let dir = temp.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let config = InitConfig {
        instance_id: id.into(),
        hostname: "ip-127-98-0-2".into(),
        address: "127.98.0.2".into(),
        uid: 0,
        gid: 0,
        isolation: Isolation::None,
        root: RootSource::Copied(root.clone()),
        mount_point: root.clone(),
        host_binds: Vec::new(),
        extra_binds: Vec::new(),
        rlimits: Rlimits::default(),
        env: BTreeMap::new(),
        user_data: dir.join("user-data"),
        control_socket: dir.join("supervisor.sock"),
        status_file: dir.join("status.json"),
        boot: BootKind::First,
    };
    (root, dir, config)
}

#[test]
fn failing_steps_are_reported_and_failing_services_restart_with_backoff() {
    assert_root();
    let temp = tempfile::tempdir().unwrap();
    let (_root, dir, config) = none_config(temp.path(), "i-0000000000000fail");
    std::fs::write(
        dir.join("user-data"),
        r#"#cloud-config
write_files:
  - path: /etc/endstate/services/flaky.json
    content: '{"command": ["sh", "-c", "echo flaky-ran; exit 3"]}'
  - path: /etc/endstate/services/broken.json
    content: '{"command": ["sh"], "restart": "sometimes"}'
runcmd:
  - sh -c 'exit 4'
  - echo after-the-failure
  - exit 7
  - echo never-printed
"#,
    )
    .unwrap();
    let mut instance = Instance::start(&dir, &config);
    let status = instance.wait_for("flaky to be restarted twice", |status| {
        status
            .service("flaky")
            .is_some_and(|flaky| flaky.restarts >= 2)
    });
    let console = instance.console();
    assert_eq!(status.boot, BootState::Failed, "{console}");
    // runcmd is one script, as in cloud-init: a failing line does not stop
    // the next, an `exit` ends it, and its status is the script's.
    assert_eq!(status.user_data_exit, Some(7), "{console}");
    assert!(console.contains("after-the-failure"), "{console}");
    assert!(!console.contains("never-printed"), "{console}");
    let flaky = status.service("flaky").unwrap();
    assert_eq!(flaky.last_exit, Some(3));
    assert!(
        console.contains("service flaky: exited with status 3; restarting in 1 s"),
        "{console}"
    );
    assert!(
        console.contains("service flaky: exited with status 3; restarting in 2 s"),
        "{console}"
    );
    assert!(console.contains("error: service broken:"), "{console}");
    assert!(console.contains("unknown variant `sometimes`"), "{console}");
    assert!(status.service("broken").is_none());
    // A stop request wins over the restart policy.
    let answer = control(
        &dir.join("supervisor.sock"),
        r#"{"op": "stop", "name": "flaky"}"#,
    );
    assert_eq!(answer["ok"], true, "{answer}");
    let stopped = instance.wait_for("flaky to stop", |status| {
        status
            .service("flaky")
            .is_some_and(|flaky| flaky.state == ServiceState::Stopped)
    });
    std::thread::sleep(Duration::from_secs(3));
    let later = Status::read(&dir.join("status.json")).unwrap();
    assert_eq!(
        later.service("flaky"),
        stopped.service("flaky"),
        "restarted after a stop"
    );
}

#[test]
fn a_failing_bootcmd_fails_the_boot_but_not_the_instance() {
    assert_root();
    let temp = tempfile::tempdir().unwrap();
    let (_root, dir, config) = none_config(temp.path(), "i-00000000000bootcmd");
    std::fs::write(
        dir.join("user-data"),
        "#cloud-config\nbootcmd: [exit 5]\nruncmd: [echo still-ran]\n",
    )
    .unwrap();
    let mut instance = Instance::start(&dir, &config);
    let status = instance.wait_for("boot to end", |status| status.boot != BootState::Booting);
    assert_eq!(status.boot, BootState::Failed);
    assert_eq!(status.user_data_exit, Some(5));
    let console = instance.console();
    assert!(
        console.contains("bootcmd: bootcmd failed with exit status 5"),
        "{console}"
    );
    assert!(console.contains("still-ran"), "{console}");
}

#[test]
fn sigterm_during_boot_stops_the_step_and_the_instance() {
    assert_root();
    let temp = tempfile::tempdir().unwrap();
    let (_root, dir, config) = none_config(temp.path(), "i-0000000000000term");
    std::fs::write(
        dir.join("user-data"),
        "#cloud-config\nruncmd: [echo long-step-started, sleep 300, echo never-printed]\n",
    )
    .unwrap();
    let mut instance = Instance::start(&dir, &config);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !instance.console().contains("long-step-started") {
        assert!(Instant::now() < deadline, "{}", instance.console());
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(instance.top.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let exit = instance.top.wait().unwrap();
    assert!(exit.success(), "{exit}\n{}", instance.console());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let status = Status::read(&dir.join("status.json")).unwrap();
    assert_eq!(status.boot, BootState::Failed);
    assert_eq!(status.user_data_exit, Some(143));
    assert!(!instance.console().contains("never-printed"));
    // The step's own child (the sleep under sh) did not outlive the instance.
    let group = instance.top.id().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().to_string())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(2).map(|g| g == group))
                    .unwrap_or(false)
            })
        })
        .collect();
    assert!(
        left.is_empty(),
        "processes of the instance's group left: {left:?}"
    );
}

#[test]
fn boot_once_runs_the_user_data_starts_no_service_and_exits_with_its_status() {
    assert_root();
    for (script, expected) in [("exit 0", 0), ("echo failing; exit 6", 6)] {
        let temp = tempfile::tempdir().unwrap();
        let (root, dir, mut config) = none_config(temp.path(), "ami-0000000000000once");
        config.boot = BootKind::Once;
        std::fs::write(
            dir.join("user-data"),
            format!(
                "#cloud-config\nwrite_files:\n  - path: /etc/endstate/services/web.json\n    content: '{{\"command\": [\"sleep\", \"300\"]}}'\n  - path: /srv/baked\n    content: baked\nruncmd:\n  - {script}\n"
            ),
        )
        .unwrap();
        let mut instance = Instance::start(&dir, &config);
        let deadline = Instant::now() + Duration::from_secs(60);
        let exit = loop {
            if let Some(exit) = instance.top.try_wait().unwrap() {
                break exit;
            }
            assert!(Instant::now() < deadline, "{}", instance.console());
            std::thread::sleep(Duration::from_millis(50));
        };
        let console = instance.console();
        assert_eq!(exit.code(), Some(expected), "{console}");
        assert_eq!(
            std::fs::read_to_string(root.join("srv/baked")).unwrap(),
            "baked"
        );
        let status = Status::read(&dir.join("status.json")).unwrap();
        assert!(status.services.is_empty(), "no service starts: {status:?}");
        assert_eq!(status.user_data_exit, Some(expected));
        assert!(
            console.contains(&format!("boot once: ended with exit status {expected}")),
            "{console}"
        );
    }
}
