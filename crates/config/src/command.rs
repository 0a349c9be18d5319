//! Running a program for the engine: inside the root (through `chroot`
//! when the root is not `/`, else with `/` as the working directory) or on
//! the host (tools such as `useradd --root` that enter the root
//! themselves). A clean environment, no standard input, output captured,
//! a timeout after which the whole process group is killed. It does not
//! decide what a status means.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// The PATH every command gets.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where a program runs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Place<'a> {
    /// Inside this root.
    InRoot(&'a Path),
    /// On the host, the tool entering the root itself.
    Host,
}

/// How a program ended.
#[derive(Debug, Clone)]
pub(crate) struct Output {
    /// Its exit code (128 + signal when killed).
    pub code: i32,
    /// What it printed.
    pub stdout: String,
    /// What it printed on standard error.
    pub stderr: String,
}

impl Output {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// The exit code and the end of its error output, for an error message.
    pub fn describe(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let text = text.trim();
        let tail: String = if text.chars().count() > 2000 {
            let skip = text.chars().count() - 2000;
            format!("…{}", text.chars().skip(skip).collect::<String>())
        } else {
            text.to_string()
        };
        if tail.is_empty() {
            format!("exit status {}", self.code)
        } else {
            format!("exit status {}: {tail}", self.code)
        }
    }
}

/// Runs `argv` at `place` with PATH, LANG=C and `env`; an error when it
/// cannot start or outlives `timeout`.
pub(crate) fn run(
    place: Place<'_>,
    argv: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<Output, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("empty command".to_string());
    };
    let mut command = match place {
        Place::InRoot(root) if root != Path::new("/") => {
            let mut command = Command::new("chroot");
            command.arg(root).arg(program).args(args);
            command
        }
        _ => {
            let mut command = Command::new(program);
            command.args(args);
            command
        }
    };
    command
        .current_dir("/")
        .env_clear()
        .env("PATH", PATH)
        .env("LANG", "C")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills what it started too.
        .process_group(0);
    let mut child = command
        .spawn()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
                let _ = child.wait();
                return Err(format!(
                    "{program} did not finish within {} s and was killed",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(error) => return Err(format!("waiting for {program}: {error}")),
        }
    };
    let collect = |handle: Option<std::thread::JoinHandle<Vec<u8>>>| {
        handle
            .and_then(|handle| handle.join().ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).to_string())
            .unwrap_or_default()
    };
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1);
    Ok(Output {
        code,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

/// Reads a pipe to its end on a thread of its own (so that neither pipe
/// fills while the other is read), keeping at most 1 MiB.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            match pipe.read(&mut buffer) {
                Ok(0) | Err(_) => return kept,
                Ok(n) => {
                    if kept.len() < 1024 * 1024 {
                        kept.extend_from_slice(&buffer[..n]);
                    }
                }
            }
        }
    })
}

/// The umask an exec resource's command and guards run with, as Puppet's
/// exec does by default: whatever the umask of the process running the
/// engine (an agent under a supervisor, an ssh session, a terminal), the
/// files a command creates get the same modes everywhere.
pub const EXEC_UMASK: u32 = 0o022;

/// An exec resource's `command` (or guard) as the script that runs it:
/// [`EXEC_UMASK`] first.
pub(crate) fn exec_script(command: &str) -> String {
    format!("umask {EXEC_UMASK:03o}\n{command}")
}

/// `command` as a `/bin/sh -c` argv.
pub(crate) fn shell(command: &str) -> [&str; 3] {
    ["/bin/sh", "-c", command]
}
