//! The supervisor: runs the services declared in `/etc/endstate/services/<name>.json`
//! inside the instance and any started later through the control socket,
//! restarts them by their policy with exponential backoff, reaps every child
//! (orphans included: it is PID 1 of the instance, or a subreaper), answers the
//! control socket (one JSON [`Request`] per line, one JSON [`Response`] line
//! back) and keeps status.json current. On SIGTERM it stops every service
//! (SIGTERM to its process group, SIGKILL after a grace period) and returns.
//! It does not set up the instance nor run user data.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::config::{ServiceState, ServiceStatus};
use crate::runtime::{Message, Runtime};

/// Where services are declared, inside the instance.
pub const SERVICES_DIR: &str = "/etc/endstate/services";

/// How long a stopped service has between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// A run at least this long resets the backoff.
pub const STABLE_RUN: Duration = Duration::from_secs(10);

/// The longest wait between restarts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One service file, `/etc/endstate/services/<name>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The argv; the program is looked up in the instance's PATH.
    pub command: Vec<String>,
    /// When to restart it.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Environment added to the instance's.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// When a service that ended is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Whatever its exit status.
    Always,
    /// When its exit status is not 0 (the default).
    #[default]
    OnFailure,
    /// Never.
    Never,
}

impl RestartPolicy {
    /// Whether a service that ended with `exit` is restarted.
    pub fn restarts_after(self, exit: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// Why a service file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The name cannot be a service name.
    #[error("'{0}' is not a service name (letters, digits, '-', '_', '.'; not starting with '.')")]
    BadName(String),
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file is not a service declaration.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Whether `name` can name a service (and a file under [`SERVICES_DIR`]).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl ServiceSpec {
    /// Reads `<dir>/<name>.json`.
    pub fn load(dir: &Path, name: &str) -> Result<ServiceSpec, ServiceError> {
        if !valid_name(name) {
            return Err(ServiceError::BadName(name.to_string()));
        }
        let path = dir.join(format!("{name}.json"));
        let bytes = std::fs::read(&path).map_err(|source| ServiceError::Io {
            path: path.clone(),
            source,
        })?;
        let spec: ServiceSpec =
            serde_json::from_slice(&bytes).map_err(|error| ServiceError::Invalid {
                path: path.clone(),
                message: error.to_string(),
            })?;
        if spec
            .command
            .first()
            .is_none_or(|program| program.is_empty())
        {
            return Err(ServiceError::Invalid {
                path,
                message: "command must name a program".to_string(),
            });
        }
        Ok(spec)
    }

    /// Every `*.json` under `dir`, by name; a missing directory declares none.
    pub fn load_all(dir: &Path) -> Vec<(String, Result<ServiceSpec, ServiceError>)> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().to_string();
                name.strip_suffix(".json").map(str::to_string)
            })
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let spec = ServiceSpec::load(dir, &name);
                (name, spec)
            })
            .collect()
    }
}

/// The wait before restart number `failures` in a row: 1 s, 2 s, 4 s, … 30 s.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(5);
    (Duration::from_secs(1) * 2u32.pow(exponent)).min(MAX_BACKOFF)
}

/// An exit status as a shell reports it: the code, or 128 + the signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}

/// A control-socket request: `{"op": "start"|"stop"|"restart"|"status", "name": "web"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// What to do.
    pub op: Op,
    /// The service; `status` without a name answers for all.
    #[serde(default)]
    pub name: Option<String>,
}

/// A control-socket operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Start a service (reading its file afresh), if it is not running.
    Start,
    /// Stop it; it stays stopped.
    Stop,
    /// Stop it, then start it.
    Restart,
    /// Report it (or all).
    Status,
}

/// A control-socket answer: `{"ok": true, "services": [...]}` or
/// `{"ok": false, "error": "...", "services": []}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The services concerned, after the request.
    pub services: Vec<ServiceStatus>,
}

impl Response {
    pub(crate) fn error(message: &str, services: Vec<ServiceStatus>) -> Response {
        Response {
            ok: false,
            error: Some(message.to_string()),
            services,
        }
    }
}

/// Serves the control socket from a thread of its own (a thread per
/// connection), passing each request to the runtime's main loop.
pub(crate) fn serve_control(
    listener: UnixListener,
    sender: Sender<Message>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let sender = sender.clone();
                let _ = std::thread::Builder::new()
                    .name("control-connection".into())
                    .spawn(move || serve_connection(stream, &sender));
            }
        })
        .map(drop)
}

fn serve_connection(stream: UnixStream, sender: &Sender<Message>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let response = match serde_json::from_str::<Request>(&line) {
            Err(error) => Response::error(&format!("bad request: {error}"), Vec::new()),
            Ok(request) => {
                let (reply, answer) = mpsc::channel();
                if sender.send(Message::Control(request, reply)).is_err() {
                    return;
                }
                answer
                    .recv_timeout(Duration::from_secs(30))
                    .unwrap_or_else(|_| {
                        Response::error("the supervisor did not answer", Vec::new())
                    })
            }
        };
        let Ok(mut json) = serde_json::to_vec(&response) else {
            return;
        };
        json.push(b'\n');
        if writer.write_all(&json).is_err() {
            return;
        }
    }
}

#[derive(Debug)]
struct Service {
    spec: ServiceSpec,
    state: ServiceState,
    pid: Option<Pid>,
    restarts: u32,
    last_exit: Option<i32>,
    started: Option<Instant>,
    failures: u32,
    restart_at: Option<Instant>,
    kill_at: Option<Instant>,
    /// Stopped on request: do not restart when it ends (unless `start_after_stop`).
    stopping: bool,
    start_after_stop: bool,
}

impl Service {
    fn new(spec: ServiceSpec) -> Service {
        Service {
            spec,
            state: ServiceState::Stopped,
            pid: None,
            restarts: 0,
            last_exit: None,
            started: None,
            failures: 0,
            restart_at: None,
            kill_at: None,
            stopping: false,
            start_after_stop: false,
        }
    }
}

/// The services of one instance.
struct Supervisor {
    services: BTreeMap<String, Service>,
    dir: PathBuf,
}

/// Starts the declared services and supervises until a stop is requested;
/// then stops them all and returns.
pub(crate) fn supervise(runtime: &mut Runtime) {
    let dir = runtime.launcher.path(SERVICES_DIR);
    let mut supervisor = Supervisor {
        services: BTreeMap::new(),
        dir,
    };
    for (name, spec) in ServiceSpec::load_all(&supervisor.dir) {
        match spec {
            Ok(spec) => {
                supervisor.services.insert(name.clone(), Service::new(spec));
                // A stop requested during boot starts nothing.
                if !runtime.stop_requested {
                    supervisor.start(runtime, &name);
                }
            }
            Err(error) => runtime
                .console
                .event(&format!("error: service {name}: {error}")),
        }
    }
    supervisor.publish(runtime);
    while !runtime.stop_requested {
        let timeout = supervisor
            .next_deadline()
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        match runtime.messages.recv_timeout(timeout) {
            Ok(Message::Signal(Signal::SIGCHLD)) => {}
            Ok(Message::Signal(signal)) => {
                runtime
                    .console
                    .event(&format!("{signal} received: stopping services"));
                runtime.stop_requested = true;
            }
            Ok(Message::Control(request, reply)) => {
                let response = supervisor.control(runtime, &request);
                let _ = reply.send(response);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => runtime.stop_requested = true,
        }
        supervisor.reap(runtime);
        supervisor.fire_deadlines(runtime);
        supervisor.publish(runtime);
    }
    supervisor.shutdown(runtime);
}

impl Supervisor {
    fn statuses(&self) -> Vec<ServiceStatus> {
        self.services
            .iter()
            .map(|(name, service)| status_of(name, service))
            .collect()
    }

    fn publish(&self, runtime: &mut Runtime) {
        let services = self.statuses();
        if runtime.status.status.services != services {
            runtime.status.status.services = services;
            runtime.publish();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.services
            .values()
            .flat_map(|service| [service.restart_at, service.kill_at])
            .flatten()
            .min()
    }

    fn start(&mut self, runtime: &Runtime, name: &str) {
        let Some(service) = self.services.get_mut(name) else {
            return;
        };
        service.restart_at = None;
        service.stopping = false;
        service.start_after_stop = false;
        let spawned = runtime
            .launcher
            .command(service.spec.command[0].as_ref(), &runtime.console)
            .and_then(|mut command| {
                command
                    .args(&service.spec.command[1..])
                    .envs(&service.spec.env);
                command.spawn()
            });
        match spawned {
            Ok(child) => {
                let pid = child.id();
                // The child is reaped by `reap` (waitpid on any child), not through `Child`.
                drop(child);
                service.pid = Some(Pid::from_raw(pid as i32));
                service.state = ServiceState::Running;
                service.started = Some(Instant::now());
                runtime
                    .console
                    .event(&format!("service {name}: started, pid {pid}"));
            }
            Err(error) => {
                let exit = if error.kind() == std::io::ErrorKind::NotFound {
                    127
                } else {
                    126
                };
                runtime
                    .console
                    .event(&format!("error: service {name}: cannot start: {error}"));
                service.started = None;
                Self::ended(runtime, name, service, exit);
            }
        }
    }

    /// Records the end of a service's run and schedules its restart.
    fn ended(runtime: &Runtime, name: &str, service: &mut Service, exit: i32) {
        service.pid = None;
        service.kill_at = None;
        service.last_exit = Some(exit);
        if service.stopping {
            service.stopping = false;
            service.state = ServiceState::Stopped;
            runtime
                .console
                .event(&format!("service {name}: stopped (exit status {exit})"));
            if service.start_after_stop {
                service.restart_at = Some(Instant::now());
            }
            return;
        }
        service.state = if exit == 0 {
            ServiceState::Exited
        } else {
            ServiceState::Failed
        };
        let stable = service
            .started
            .is_some_and(|started| started.elapsed() >= STABLE_RUN);
        service.failures = if stable { 1 } else { service.failures + 1 };
        if service.spec.restart.restarts_after(exit) {
            let wait = backoff(service.failures);
            service.restart_at = Some(Instant::now() + wait);
            runtime.console.event(&format!(
                "service {name}: exited with status {exit}; restarting in {} s",
                wait.as_secs()
            ));
        } else {
            runtime
                .console
                .event(&format!("service {name}: exited with status {exit}"));
        }
    }

    /// Reaps every child that ended: services and orphans alike.
    fn reap(&mut self, runtime: &Runtime) {
        loop {
            let (pid, exit) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, 128 + signal as i32),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(_) => return,
            };
            if let Some((name, service)) = self
                .services
                .iter_mut()
                .find(|(_, service)| service.pid == Some(pid))
            {
                Self::ended(runtime, name, service, exit);
            }
        }
    }

    fn fire_deadlines(&mut self, runtime: &Runtime) {
        let now = Instant::now();
        let due: Vec<String> = self
            .services
            .iter()
            .filter(|(_, service)| service.restart_at.is_some_and(|at| at <= now))
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            if let Some(service) = self.services.get_mut(&name) {
                if service.state != ServiceState::Stopped || service.start_after_stop {
                    service.restarts += 1;
                }
            }
            self.start(runtime, &name);
        }
        for service in self.services.values_mut() {
            if let (Some(at), Some(pid)) = (service.kill_at, service.pid) {
                if at <= now {
                    runtime.launcher.signal(pid, Signal::SIGKILL);
                    service.kill_at = None;
                }
            }
        }
    }

    fn stop(&mut self, runtime: &Runtime, name: &str) {
        let Some(service) = self.services.get_mut(name) else {
            return;
        };
        service.restart_at = None;
        match service.pid {
            Some(pid) => {
                service.stopping = true;
                runtime.launcher.signal(pid, Signal::SIGTERM);
                service.kill_at = Some(Instant::now() + STOP_GRACE);
            }
            None => service.state = ServiceState::Stopped,
        }
    }

    fn control(&mut self, runtime: &Runtime, request: &Request) -> Response {
        let name = match (&request.name, request.op) {
            (None, Op::Status) => {
                return Response {
                    ok: true,
                    error: None,
                    services: self.statuses(),
                };
            }
            (None, _) => return Response::error("this operation needs a name", Vec::new()),
            (Some(name), _) => name.clone(),
        };
        if matches!(request.op, Op::Start | Op::Restart) {
            // The file is read afresh, so that a service can be added or changed.
            match ServiceSpec::load(&self.dir, &name) {
                Ok(spec) => match self.services.get_mut(&name) {
                    Some(service) => service.spec = spec,
                    None => {
                        self.services.insert(name.clone(), Service::new(spec));
                    }
                },
                Err(error) if !self.services.contains_key(&name) => {
                    return Response::error(&format!("no service '{name}': {error}"), Vec::new());
                }
                Err(_) => {}
            }
        }
        let Some(service) = self.services.get_mut(&name) else {
            return Response::error(&format!("no service '{name}'"), Vec::new());
        };
        match request.op {
            Op::Status => {}
            Op::Start => {
                if service.pid.is_none() {
                    service.failures = 0;
                    self.start(runtime, &name);
                } else if service.stopping {
                    service.start_after_stop = true;
                }
            }
            Op::Stop => self.stop(runtime, &name),
            Op::Restart => {
                service.failures = 0;
                if service.pid.is_some() {
                    self.stop(runtime, &name);
                    if let Some(service) = self.services.get_mut(&name) {
                        service.start_after_stop = true;
                    }
                } else {
                    self.start(runtime, &name);
                }
            }
        }
        let services = self
            .services
            .get(&name)
            .map(|service| vec![status_of(&name, service)])
            .unwrap_or_default();
        Response {
            ok: true,
            error: None,
            services,
        }
    }

    /// Stops every service: SIGTERM, then SIGKILL after the grace period.
    fn shutdown(&mut self, runtime: &mut Runtime) {
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in &names {
            self.stop(runtime, name);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while self.services.values().any(|service| service.pid.is_some()) {
            if Instant::now() >= deadline {
                for service in self.services.values() {
                    if let Some(pid) = service.pid {
                        runtime.launcher.signal(pid, Signal::SIGKILL);
                    }
                }
            }
            // Any message now (a second SIGTERM, SIGCHLD, a request) only wakes the loop.
            if let Ok(Message::Control(_, reply)) =
                runtime.messages.recv_timeout(Duration::from_millis(100))
            {
                let _ = reply.send(Response::error("the instance is stopping", Vec::new()));
            }
            self.reap(runtime);
        }
        for service in self.services.values_mut() {
            service.restart_at = None;
        }
        self.publish(runtime);
        runtime.console.event("all services stopped");
    }
}

fn status_of(name: &str, service: &Service) -> ServiceStatus {
    ServiceStatus {
        name: name.to_string(),
        state: service.state,
        pid: service.pid.map(|pid| pid.as_raw() as u32),
        restarts: service.restarts,
        last_exit: service.last_exit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(0).as_secs(), 1);
    }

    #[test]
    fn policies_decide_restarts() {
        assert!(RestartPolicy::Always.restarts_after(0));
        assert!(RestartPolicy::Always.restarts_after(1));
        assert!(!RestartPolicy::OnFailure.restarts_after(0));
        assert!(RestartPolicy::OnFailure.restarts_after(137));
        assert!(!RestartPolicy::Never.restarts_after(1));
    }

    #[test]
    fn service_files_load_with_defaults_and_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("web.json"),
            r#"{"command": ["python3", "-m", "http.server"], "restart": "always", "env": {"A": "1"}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("worker.json"),
            r#"{"command": ["sleep", "9"]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("empty.json"), r#"{"command": []}"#).unwrap();
        std::fs::write(
            dir.path().join("typo.json"),
            r#"{"command": ["x"], "restrat": "never"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a service").unwrap();
        let loaded = ServiceSpec::load_all(dir.path());
        let names: Vec<&str> = loaded.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, vec!["empty", "typo", "web", "worker"]);
        let web = loaded[2].1.as_ref().unwrap();
        assert_eq!(web.restart, RestartPolicy::Always);
        assert_eq!(web.env["A"], "1");
        let worker = loaded[3].1.as_ref().unwrap();
        assert_eq!(worker.restart, RestartPolicy::OnFailure);
        let empty = loaded[0].1.as_ref().unwrap_err().to_string();
        assert!(empty.contains("command must name a program"), "{empty}");
        let typo = loaded[1].1.as_ref().unwrap_err().to_string();
        assert!(typo.contains("unknown field `restrat`"), "{typo}");
        let bad = ServiceSpec::load(dir.path(), "../etc/passwd").unwrap_err();
        assert!(matches!(bad, ServiceError::BadName(_)));
        assert!(ServiceSpec::load_all(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn requests_and_responses_have_the_documented_shape() {
        let request: Request = serde_json::from_str(r#"{"op": "restart", "name": "web"}"#).unwrap();
        assert_eq!(request.op, Op::Restart);
        let request: Request = serde_json::from_str(r#"{"op": "status"}"#).unwrap();
        assert_eq!(request.name, None);
        assert!(serde_json::from_str::<Request>(r#"{"op": "reload", "name": "web"}"#).is_err());
        let answer = serde_json::to_string(&Response::error("no", Vec::new())).unwrap();
        assert_eq!(answer, r#"{"ok":false,"error":"no","services":[]}"#);
    }

    #[test]
    fn names_are_file_names_without_tricks() {
        assert!(valid_name("web-1.blue_2"));
        assert!(!valid_name(""));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name("a/b"));
    }

    #[test]
    fn exit_codes_include_signals() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }
}
