//! Services: through `systemctl` (inside the root) when the root runs
//! systemd (`/run/systemd/system` exists), else through the built-in
//! cloud's instance supervisor and its control socket (one JSON request
//! line, one JSON answer line; services declared by files under
//! `/etc/endstate/services/`), else an error. A running service is
//! restarted when a resource notifying it changed in this run, and only
//! then; one just started is not restarted again.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::Outcome;
use crate::command::{self, Place};
use crate::engine::{Context, Notifications};
use crate::report::Change;
use crate::types::{ServiceEnsure, ServiceResource};

/// How long a `systemctl` call or a supervisor request may take.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Where the supervisor reads service files, inside the instance.
pub(crate) const SUPERVISOR_SERVICES: &str = "/etc/endstate/services";

/// The manager a service is run by.
enum Manager<'a> {
    Systemd,
    Supervisor(&'a Path),
}

/// What a service manager is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Start,
    Stop,
    Restart,
    Enable,
    Disable,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Enable => "enable",
            Action::Disable => "disable",
        }
    }
}

pub(crate) fn converge(
    context: &Context<'_>,
    service: &ServiceResource,
    notifications: &Notifications,
) -> Outcome {
    let name = service.service.as_deref().unwrap_or(&service.name);
    let manager = if context.host_path("/run/systemd/system").is_dir() {
        Manager::Systemd
    } else if let Some(socket) = context.supervisor_socket.filter(|socket| socket.exists()) {
        Manager::Supervisor(socket)
    } else {
        return Outcome::Failed(format!(
            "no service manager: {} does not exist (no systemd) and no instance supervisor socket is configured or present",
            context.host_path("/run/systemd/system").display()
        ));
    };
    let running = match is_running(context, &manager, name) {
        Ok(running) => running,
        Err(message) => return Outcome::Failed(message),
    };
    let mut changes = Vec::new();
    let mut actions = Vec::new();
    match (service.ensure, running) {
        (ServiceEnsure::Running, false) => {
            changes.push(state_change("stopped", "running"));
            actions.push(Action::Start);
        }
        (ServiceEnsure::Stopped, true) => {
            changes.push(state_change("running", "stopped"));
            actions.push(Action::Stop);
        }
        (ServiceEnsure::Running, true) if !notifications.changed.is_empty() => {
            changes.push(Change::new(
                "restarted",
                None,
                Some(format!("notified by {}", notifications.changed.join(", "))),
            ));
            actions.push(Action::Restart);
        }
        _ => {}
    }
    if let Some(enabled) = service.enabled {
        match is_enabled(context, &manager, name) {
            Ok(current) if current == enabled => {}
            Ok(current) => {
                if matches!(manager, Manager::Supervisor(_)) {
                    return Outcome::Failed(format!(
                        "enabled: a supervisor service starts at boot when {SUPERVISOR_SERVICES}/{name}.json exists; declare that file instead"
                    ));
                }
                changes.push(Change::new(
                    "enabled",
                    Some(current.to_string()),
                    Some(enabled.to_string()),
                ));
                actions.push(if enabled {
                    Action::Enable
                } else {
                    Action::Disable
                });
            }
            Err(message) => return Outcome::Failed(message),
        }
    }
    if context.noop {
        let restart_unknown = service.ensure == ServiceEnsure::Running
            && running
            && notifications.changed.is_empty()
            && !notifications.unknown.is_empty();
        if restart_unknown {
            return Outcome::Unknown(
                format!(
                    "restarted only if {} changes, which cannot be known beforehand",
                    notifications.unknown.join(", ")
                ),
                changes,
            );
        }
        return Outcome::Done(changes);
    }
    for action in actions {
        if let Err(message) = act(context, &manager, name, action) {
            return Outcome::Failed(message);
        }
    }
    Outcome::Done(changes)
}

fn state_change(from: &str, to: &str) -> Change {
    Change::new("state", Some(from.to_string()), Some(to.to_string()))
}

fn is_running(context: &Context<'_>, manager: &Manager<'_>, name: &str) -> Result<bool, String> {
    match manager {
        Manager::Systemd => {
            let output = systemctl(context, &["is-active", "--quiet", name])?;
            Ok(output.success())
        }
        Manager::Supervisor(socket) => {
            let answer = supervisor(socket, "status", None)?;
            if !answer.ok {
                return Err(format!(
                    "supervisor status: {}",
                    answer.error.unwrap_or_else(|| "refused".to_string())
                ));
            }
            Ok(answer
                .services
                .iter()
                .any(|entry| entry.name == name && entry.state == "running"))
        }
    }
}

fn is_enabled(context: &Context<'_>, manager: &Manager<'_>, name: &str) -> Result<bool, String> {
    match manager {
        Manager::Systemd => Ok(systemctl(context, &["is-enabled", "--quiet", name])?.success()),
        Manager::Supervisor(_) => Ok(context
            .host_path(&format!("{SUPERVISOR_SERVICES}/{name}.json"))
            .is_file()
            || context
                .expected
                .paths
                .contains(&format!("{SUPERVISOR_SERVICES}/{name}.json"))),
    }
}

fn act(
    context: &Context<'_>,
    manager: &Manager<'_>,
    name: &str,
    action: Action,
) -> Result<(), String> {
    match manager {
        Manager::Systemd => {
            let output = systemctl(context, &[action.verb(), name])?;
            if output.success() {
                Ok(())
            } else {
                Err(format!(
                    "systemctl {} {name}: {}",
                    action.verb(),
                    output.describe()
                ))
            }
        }
        Manager::Supervisor(socket) => {
            let answer = supervisor(socket, action.verb(), Some(name))?;
            if answer.ok {
                Ok(())
            } else {
                Err(format!(
                    "supervisor {} {name}: {}",
                    action.verb(),
                    answer.error.unwrap_or_else(|| "refused".to_string())
                ))
            }
        }
    }
}

fn systemctl(context: &Context<'_>, args: &[&str]) -> Result<command::Output, String> {
    let mut argv = vec!["systemctl"];
    argv.extend_from_slice(args);
    command::run(Place::InRoot(context.root), &argv, &[], TIMEOUT)
        .map_err(|message| format!("systemctl: {message}"))
}

/// The supervisor's answer (`endstate_instance::supervisor::Response`).
#[derive(Debug, Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    services: Vec<AnswerService>,
}

#[derive(Debug, Deserialize)]
struct AnswerService {
    name: String,
    state: String,
}

/// One request on the supervisor's control socket.
fn supervisor(socket: &Path, op: &str, name: Option<&str>) -> Result<Answer, String> {
    let fail = |error: &dyn std::fmt::Display| {
        format!("supervisor socket {}: {op}: {error}", socket.display())
    };
    let mut stream = UnixStream::connect(socket).map_err(|error| fail(&error))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|error| fail(&error))?;
    let request = match name {
        Some(name) => serde_json::json!({"op": op, "name": name}),
        None => serde_json::json!({"op": op}),
    };
    let mut line = request.to_string();
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|error| fail(&error))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|error| fail(&error))?;
    serde_json::from_str(&answer).map_err(|error| fail(&error))
}
