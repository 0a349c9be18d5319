//! endstate's instance runtime: what runs as each instance of the built-in
//! cloud's `process` backend (docs/process-backend.md). [`init_main`] reads
//! `init.json`, isolates the instance (root mode: namespaces, overlay root,
//! chroot, limits, the instance uid), boots its user data as cloud-init would
//! and supervises its services until SIGTERM, reporting through `status.json`,
//! `console.log` and the control socket.
//!
//! The types the host side shares — [`InitConfig`], [`Status`] — are plain
//! serde types in [`config`]: using them needs no root and starts nothing.
//! This crate is not the host side: it does not pick uids, addresses or
//! layers, nor watch instances from outside.

pub mod boot;
pub mod config;
pub mod console;
pub mod isolation;
mod runtime;
pub mod supervisor;
mod time;
pub mod userdata;

use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;

pub use config::{
    Bind, BootKind, BootState, ConfigError, InitConfig, Isolation, Overlay, Rlimits, RootSource,
    ServiceState, ServiceStatus, Status,
};

use crate::console::Console;
use crate::runtime::{Launcher, Runtime, StatusWriter};

/// Why the runtime could not set an instance up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `init.json` is missing or malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file-system step failed.
    #[error("{step}: {source}")]
    Io {
        /// The step, naming its path.
        step: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{step}: {source}")]
    Sys {
        /// The step.
        step: String,
        /// The errno.
        source: nix::Error,
    },
    /// The configuration or the environment cannot be honoured.
    #[error("{0}")]
    Refused(String),
}

/// Names the step of a failing result.
pub(crate) trait Step<T> {
    fn step<S: StepName>(self, step: S) -> Result<T, Error>;
}

/// A step's name: a string, or a closure that builds one only on failure.
pub(crate) trait StepName {
    fn name(self) -> String;
}

impl StepName for &str {
    fn name(self) -> String {
        self.to_string()
    }
}

impl<F: FnOnce() -> String> StepName for F {
    fn name(self) -> String {
        self()
    }
}

impl<T> Step<T> for Result<T, std::io::Error> {
    fn step<S: StepName>(self, step: S) -> Result<T, Error> {
        self.map_err(|source| Error::Io {
            step: step.name(),
            source,
        })
    }
}

impl<T> Step<T> for Result<T, nix::Error> {
    fn step<S: StepName>(self, step: S) -> Result<T, Error> {
        self.map_err(|source| Error::Sys {
            step: step.name(),
            source,
        })
    }
}

/// `endstate cloud instance-init DIR`: reads `DIR/init.json`, sets the
/// instance up, boots it and supervises its services until SIGTERM (then
/// stops them and returns success).
///
/// It must be called before the process starts any other thread (before a
/// tokio runtime is built): in root mode it unshares namespaces and
/// re-executes `/proc/self/exe` with the same arguments and
/// [`isolation::STAGE_ENV`] set, which lands in this function again as PID 1
/// of the instance's PID namespace.
pub fn init_main(instance_dir: &Path) -> Result<ExitCode, Error> {
    let threads = thread_count();
    if threads != Some(1) {
        return Err(Error::Refused(format!(
            "instance-init must run before any other thread starts ({} threads found); \
             call init_main before building an async runtime",
            threads.map_or_else(|| "an unknown number of".to_string(), |n| n.to_string())
        )));
    }
    let config = InitConfig::read(instance_dir)?;
    let stage = std::env::var(isolation::STAGE_ENV).ok();
    match config.isolation {
        Isolation::Namespaces if stage.as_deref() == Some(isolation::STAGE_PID1) => {
            isolation::become_pid1()?;
            isolation::prepare_root(&config)?;
            let handles = HostHandles::open(instance_dir, &config)?;
            isolation::enter_root(&config)?;
            isolation::set_rlimits(&config.rlimits, true)?;
            let credentials = Some((config.uid, config.gid));
            run(config, handles, "/".into(), credentials)
        }
        Isolation::Namespaces => {
            if !nix::unistd::geteuid().is_root() {
                return Err(Error::Refused(
                    "isolation \"namespaces\" needs root; the backend uses \"userns\" or \"none\" without it"
                        .to_string(),
                ));
            }
            isolation::top_process(false)
        }
        Isolation::Userns if stage.as_deref() == Some(isolation::STAGE_PID1) => {
            isolation::become_pid1()?;
            isolation::prepare_root(&config)?;
            let handles = HostHandles::open(instance_dir, &config)?;
            isolation::enter_root(&config)?;
            // RLIMIT_NPROC counts the processes of the cloud's own uid.
            isolation::set_rlimits(&config.rlimits, false)?;
            // Root inside the user namespace: the only uid it maps.
            run(config, handles, "/".into(), None)
        }
        Isolation::Userns => isolation::top_process(true),
        Isolation::None => {
            nix::sys::prctl::set_child_subreaper(true).step("prctl PR_SET_CHILD_SUBREAPER")?;
            let root = match &config.root {
                RootSource::Copied(dir) => dir.clone(),
                RootSource::Overlay(_) => {
                    return Err(Error::Refused(
                        "isolation \"none\" needs a copied root, not an overlay".to_string(),
                    ));
                }
            };
            let handles = HostHandles::open(instance_dir, &config)?;
            // RLIMIT_NPROC would count every process of the cloud's own uid.
            isolation::set_rlimits(&config.rlimits, false)?;
            run(config, handles, root, None)
        }
    }
}

/// Ends every other process of this process's group: SIGTERM to the group
/// (the runtime has a handler, so it survives), then SIGKILL to each one
/// left after a grace period, reaping as they end (the runtime is their
/// subreaper).
fn sweep_process_group(runtime: &Runtime) {
    use nix::sys::signal::{kill, killpg, Signal};
    use nix::sys::wait::{waitpid, WaitPidFlag};
    let group = nix::unistd::getpgrp();
    if group != nix::unistd::getpid() {
        // Not a group leader: the group is not the instance's alone.
        return;
    }
    let reap = || {
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if status == nix::sys::wait::WaitStatus::StillAlive {
                break;
            }
        }
    };
    let members = || group_members(group.as_raw());
    if members().is_empty() {
        return;
    }
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = std::time::Instant::now() + supervisor::STOP_GRACE;
    while !members().is_empty() && std::time::Instant::now() < deadline {
        reap();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let left = members();
    if !left.is_empty() {
        runtime
            .console
            .event(&format!("killing {} leftover processes", left.len()));
    }
    for pid in left {
        let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
    reap();
}

/// The live processes of a process group, this one excepted (from `/proc`).
fn group_members(group: i32) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // Fields after the command name: state, ppid, pgrp. Zombies count
            // as gone: they are only waiting to be reaped.
            let mut fields = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace())
                .into_iter()
                .flatten();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|g| g.parse::<i32>().ok());
            state != Some("Z") && pgrp == Some(group)
        })
        .collect()
}

fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
}

/// What lives in the instance directory on the host, opened before the chroot.
struct HostHandles {
    console: Console,
    status: StatusWriter,
    control: std::os::unix::net::UnixListener,
    user_data: Vec<u8>,
}

impl HostHandles {
    fn open(instance_dir: &Path, config: &InitConfig) -> Result<HostHandles, Error> {
        let console_path = instance_dir.join(config::CONSOLE_FILE);
        let console =
            Console::open(&console_path).step(|| format!("open {}", console_path.display()))?;
        let status = StatusWriter::open(&config.status_file)
            .step(|| format!("open the directory of {}", config.status_file.display()))?;
        let user_data = match std::fs::read(&config.user_data) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(Error::Io {
                    step: format!("read {}", config.user_data.display()),
                    source,
                });
            }
        };
        let socket = &config.control_socket;
        match std::fs::remove_file(socket) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    step: format!("remove the stale socket {}", socket.display()),
                    source,
                });
            }
        }
        let control = std::os::unix::net::UnixListener::bind(socket)
            .step(|| format!("bind {}", socket.display()))?;
        std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .step(|| format!("chmod {}", socket.display()))?;
        Ok(HostHandles {
            console,
            status,
            control,
            user_data,
        })
    }
}

fn run(
    config: InitConfig,
    handles: HostHandles,
    root: std::path::PathBuf,
    credentials: Option<(u32, u32)>,
) -> Result<ExitCode, Error> {
    let (sender, messages) = mpsc::channel();
    runtime::forward_signals(sender.clone()).step("start the signal thread")?;
    supervisor::serve_control(handles.control, sender).step("start the control socket")?;
    let launcher = Launcher::new(&config, root, credentials);
    handles.console.event(&format!(
        "instance {} ({}, {}) starting: isolation {:?}, boot {:?}",
        config.instance_id, config.hostname, config.address, config.isolation, config.boot
    ));
    let mut runtime = Runtime {
        config,
        console: handles.console,
        launcher,
        status: handles.status,
        messages,
        stop_requested: false,
    };
    let exit = boot::boot(&mut runtime, &handles.user_data);
    let once = runtime.config.boot == BootKind::Once;
    if !once {
        supervisor::supervise(&mut runtime);
    }
    if runtime.launcher.credentials.is_none() {
        // Without a PID namespace, orphans of the instance (a step's children,
        // a service's children) would outlive it: end its process group.
        sweep_process_group(&runtime);
    }
    if once {
        runtime
            .console
            .event(&format!("boot once: ended with exit status {exit}"));
        // An exit status is a byte; a failure must not wrap to success.
        let code = if exit == 0 {
            0
        } else {
            u8::try_from(exit).unwrap_or(1).max(1)
        };
        return Ok(ExitCode::from(code));
    }
    runtime.console.event("instance stopped");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_main_refuses_to_run_beside_other_threads() {
        // The test harness runs this test on a thread of its own.
        let error = init_main(Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("before any other thread starts"), "{error}");
    }
}
