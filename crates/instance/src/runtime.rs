//! What boot and supervisor share once the instance is set up: the instance's
//! root as this process sees it, how to start a process of the instance
//! (uid, environment, working directory, console), the status file (written
//! through a directory handle opened before the chroot) and the one channel
//! on which signals and control requests arrive. It sets nothing up itself.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, Sender};

use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::Pid;

use crate::config::{BootState, InitConfig, Status};
use crate::console::Console;
use crate::supervisor::{Request, Response};

/// What wakes the runtime's main loop.
#[derive(Debug)]
pub(crate) enum Message {
    /// A signal sent to the runtime (SIGTERM, SIGINT, SIGHUP, SIGCHLD).
    Signal(Signal),
    /// A control-socket request and where its answer goes.
    Control(Request, Sender<Response>),
}

/// The signals the runtime handles, each with a tokio stream.
pub(crate) struct SignalStreams {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
    child: tokio::signal::unix::Signal,
}

/// Installs handlers for SIGTERM, SIGINT, SIGHUP and SIGCHLD (through tokio,
/// which has no `unsafe` for us to write) and returns their streams.
///
/// Handlers, not a blocked mask: a process inherits its parent's mask across
/// `exec`, so blocked signals would stay blocked in every service, while
/// handlers are reset to the default by `exec`. A handler is also what lets a
/// signal reach PID 1 of a PID namespace.
pub(crate) fn install_signal_handlers(
    runtime: &tokio::runtime::Runtime,
) -> std::io::Result<SignalStreams> {
    use tokio::signal::unix::{signal, SignalKind};
    let _context = runtime.enter();
    Ok(SignalStreams {
        terminate: signal(SignalKind::terminate())?,
        interrupt: signal(SignalKind::interrupt())?,
        hangup: signal(SignalKind::hangup())?,
        child: signal(SignalKind::child())?,
    })
}

impl SignalStreams {
    /// The next signal; `None` once the streams are closed.
    pub(crate) async fn next(&mut self) -> Option<Signal> {
        tokio::select! {
            Some(()) = self.terminate.recv() => Some(Signal::SIGTERM),
            Some(()) = self.interrupt.recv() => Some(Signal::SIGINT),
            Some(()) = self.hangup.recv() => Some(Signal::SIGHUP),
            Some(()) = self.child.recv() => Some(Signal::SIGCHLD),
            else => None,
        }
    }
}

/// A single-threaded tokio runtime that only drives signal streams.
pub(crate) fn signal_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
}

/// Installs the signal handlers and forwards each signal into the channel
/// from a thread of its own.
pub(crate) fn forward_signals(sender: Sender<Message>) -> std::io::Result<()> {
    let runtime = signal_runtime()?;
    let mut streams = install_signal_handlers(&runtime)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                while let Some(signal) = streams.next().await {
                    if sender.send(Message::Signal(signal)).is_err() {
                        break;
                    }
                }
            });
        })
        .map(drop)
}

/// How processes of the instance are started.
#[derive(Debug, Clone)]
pub(crate) struct Launcher {
    /// The instance's `/` as this process sees it (`/` after the chroot).
    pub root: PathBuf,
    /// Root mode: the uid and gid every process gets.
    pub credentials: Option<(u32, u32)>,
    /// The environment every process gets.
    pub env: BTreeMap<String, String>,
    /// The working directory and HOME.
    pub home: PathBuf,
}

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Launcher {
    pub(crate) fn new(config: &InitConfig, root: PathBuf, credentials: Option<(u32, u32)>) -> Self {
        let home = if credentials.is_some() {
            PathBuf::from("/root")
        } else {
            root.clone()
        };
        let mut env = BTreeMap::from([
            ("PATH".to_string(), PATH.to_string()),
            ("HOME".to_string(), home.display().to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("HOSTNAME".to_string(), config.hostname.clone()),
            ("INSTANCE_ID".to_string(), config.instance_id.clone()),
        ]);
        env.extend(config.env.clone());
        Launcher {
            root,
            credentials,
            env,
            home,
        }
    }

    /// A path inside the instance (`/etc/x`) as this process sees it.
    pub(crate) fn path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }

    /// A command of the instance: its own process group, the instance's uid,
    /// environment and working directory, output to the console, no stdin.
    pub(crate) fn command(&self, program: &OsStr, console: &Console) -> std::io::Result<Command> {
        let mut command = Command::new(program);
        command
            .env_clear()
            .envs(&self.env)
            .current_dir(if self.home.is_dir() {
                &self.home
            } else {
                &self.root
            })
            .stdin(Stdio::null())
            .stdout(console.stdio()?)
            .stderr(console.stdio()?);
        if self.credentials.is_some() {
            // Root mode: a process group per step or service, so that a stop
            // reaches its children too. Without root the processes stay in the
            // top process's group: that group is how the backend ends them all.
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
        }
        if let Some((uid, gid)) = self.credentials {
            // std drops supplementary groups (setgroups(0)) when root sets a uid.
            std::os::unix::process::CommandExt::uid(&mut command, uid);
            std::os::unix::process::CommandExt::gid(&mut command, gid);
        }
        Ok(command)
    }

    /// Signals a process started by [`Launcher::command`] (its whole process
    /// group in root mode). A process already gone is not an error.
    pub(crate) fn signal(&self, pid: Pid, signal: Signal) {
        let _ = if self.credentials.is_some() {
            nix::sys::signal::killpg(pid, signal)
        } else {
            nix::sys::signal::kill(pid, signal)
        };
    }

    /// Gives a path the runtime created to the instance's uid (root mode).
    pub(crate) fn own(&self, path: &Path) -> std::io::Result<()> {
        match self.credentials {
            Some((uid, gid)) => std::os::unix::fs::lchown(path, Some(uid), Some(gid)),
            None => Ok(()),
        }
    }
}

/// `status.json`, written through a handle on its directory so that it stays
/// reachable after the chroot.
#[derive(Debug)]
pub(crate) struct StatusWriter {
    dir: OwnedFd,
    name: PathBuf,
    pub status: Status,
}

impl StatusWriter {
    pub(crate) fn open(path: &Path) -> std::io::Result<StatusWriter> {
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .map(PathBuf::from)
            .ok_or_else(|| std::io::Error::other("the status file has no file name"))?;
        let dir = nix::fcntl::open(
            parent,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(StatusWriter {
            dir,
            name,
            status: Status {
                pid: std::process::id(),
                boot: BootState::Booting,
                boot_started: None,
                boot_finished: None,
                user_data_exit: None,
                services: Vec::new(),
                updated: String::new(),
            },
        })
    }

    /// Rewrites the file atomically (a temporary file renamed over it).
    pub(crate) fn write(&mut self) -> std::io::Result<()> {
        self.status.updated = crate::time::now_rfc3339();
        let json = serde_json::to_vec_pretty(&self.status)?;
        let mut temporary = self.name.clone().into_os_string();
        temporary.push(".tmp");
        let fd = openat(
            &self.dir,
            temporary.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )?;
        let mut file = std::fs::File::from(fd);
        file.write_all(&json)?;
        file.write_all(b"\n")?;
        renameat(&self.dir, temporary.as_os_str(), &self.dir, &self.name)?;
        Ok(())
    }
}

/// Everything the boot and the supervisor work with.
pub(crate) struct Runtime {
    pub config: InitConfig,
    pub console: Console,
    pub launcher: Launcher,
    pub status: StatusWriter,
    pub messages: Receiver<Message>,
    /// Set once SIGTERM (or SIGINT, SIGHUP) arrived.
    pub stop_requested: bool,
}

impl Runtime {
    /// Writes status.json, reporting a failure on the console.
    pub(crate) fn publish(&mut self) {
        if let Err(error) = self.status.write() {
            self.console
                .event(&format!("error: cannot write status.json: {error}"));
        }
    }
}
