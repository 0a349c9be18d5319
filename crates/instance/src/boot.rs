//! Carries out a [`BootPlan`](crate::userdata::BootPlan) inside the instance,
//! in cloud-init's order: boothooks, `bootcmd`, `write_files`, then (stage
//! `modules:final`) deferred `write_files`, `runcmd` and `#!` scripts; on a
//! later boot, `bootcmd` only. Every step and every line of output goes to
//! the console; a failing step is reported and the next one still runs. A
//! SIGTERM stops the running step and ends the boot. It does not parse user
//! data (that is `userdata`) and does not start services (`supervisor`).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::config::{BootKind, BootState};
use crate::runtime::{Message, Runtime};
use crate::supervisor::Response;
use crate::userdata::{self, BootPlan, CommandLine, Script, WriteFile};

/// Where boot scripts are written inside the instance, as cloud-init's
/// `/var/lib/cloud/instance`.
pub const STATE_DIR: &str = "/var/lib/endstate/instance";

/// How long a boot step has to end after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs the boot and records it in status.json.
pub(crate) fn boot(runtime: &mut Runtime, user_data: &[u8]) -> i32 {
    runtime.status.status.boot = BootState::Booting;
    runtime.status.status.boot_started = Some(crate::time::now_rfc3339());
    runtime.publish();
    runtime.console.stage("init");
    let outcome = match userdata::parse(user_data) {
        Ok(plan) => run_plan(runtime, &plan),
        Err(error) => {
            runtime.console.event(&format!("error: {error}"));
            Outcome {
                exit: 1,
                failed: true,
            }
        }
    };
    runtime.console.finished();
    let status = &mut runtime.status.status;
    status.boot = if outcome.failed {
        BootState::Failed
    } else {
        BootState::Finished
    };
    status.boot_finished = Some(crate::time::now_rfc3339());
    status.user_data_exit = Some(outcome.exit);
    runtime.console.event(&format!(
        "boot {}: user data exit status {}",
        if outcome.failed { "failed" } else { "finished" },
        outcome.exit
    ));
    runtime.publish();
    outcome.exit
}

#[derive(Debug, Default)]
struct Outcome {
    /// The first non-zero exit status, or 0.
    exit: i32,
    failed: bool,
}

impl Outcome {
    fn record(&mut self, exit: i32) {
        if exit != 0 {
            self.failed = true;
            if self.exit == 0 {
                self.exit = exit;
            }
        }
    }
}

fn run_plan(runtime: &mut Runtime, plan: &BootPlan) -> Outcome {
    let mut outcome = Outcome::default();
    let first = runtime.config.boot != BootKind::Again;
    if first {
        for event in &plan.events {
            runtime.console.event(&event.to_string());
        }
    } else {
        runtime
            .console
            .event("boot: again: running bootcmd only, as cloud-init does on every boot");
    }
    let steps: Vec<Step<'_>> = if first {
        let mut steps: Vec<Step<'_>> = plan.boothooks.iter().map(Step::Boothook).collect();
        steps.push(Step::Commands("bootcmd", &plan.bootcmd));
        steps.push(Step::Files(false, &plan.write_files));
        steps.push(Step::Stage("modules:final"));
        steps.push(Step::Files(true, &plan.write_files));
        steps.push(Step::Commands("runcmd", &plan.runcmd));
        steps.extend(plan.scripts.iter().map(Step::Script));
        steps
    } else {
        vec![Step::Commands("bootcmd", &plan.bootcmd)]
    };
    for step in steps {
        if runtime.stop_requested {
            runtime.console.event("boot interrupted by a stop");
            outcome.record(143);
            break;
        }
        match step {
            Step::Stage(stage) => runtime.console.stage(stage),
            Step::Files(deferred, files) => {
                for file in files.iter().filter(|file| file.defer == deferred) {
                    match write_file(runtime, file) {
                        Ok(()) => runtime.console.event(&format!(
                            "write_files: wrote {} ({} bytes{})",
                            file.path,
                            file.content.len(),
                            if file.append { ", appended" } else { "" }
                        )),
                        Err(error) => {
                            runtime
                                .console
                                .event(&format!("error: write_files: {}: {error}", file.path));
                            outcome.record(1);
                        }
                    }
                }
            }
            Step::Commands(module, commands) => {
                if commands.is_empty() {
                    continue;
                }
                let script = Script {
                    name: module.to_string(),
                    content: userdata::shell_script(commands).into_bytes(),
                };
                outcome.record(run_script(runtime, module, &script, Path::new(STATE_DIR)));
            }
            Step::Boothook(script) => {
                let dir = Path::new(STATE_DIR).join("boothooks");
                outcome.record(run_script(runtime, "boothook", script, &dir));
            }
            Step::Script(script) => {
                let dir = Path::new(STATE_DIR).join("scripts");
                outcome.record(run_script(runtime, "scripts-user", script, &dir));
            }
        }
    }
    outcome
}

enum Step<'a> {
    Stage(&'static str),
    Boothook(&'a Script),
    Commands(&'static str, &'a [CommandLine]),
    Files(bool, &'a [WriteFile]),
    Script(&'a Script),
}

/// Creates the missing parents of `path` (inside the instance), owned by the instance.
fn create_parents(runtime: &Runtime, path: &Path) -> std::io::Result<()> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut cursor = Some(parent);
    while let Some(dir) = cursor {
        if dir.symlink_metadata().is_ok() {
            break;
        }
        missing.push(dir.to_path_buf());
        cursor = dir.parent();
    }
    for dir in missing.iter().rev() {
        std::fs::create_dir(dir)?;
        runtime.launcher.own(dir)?;
    }
    Ok(())
}

fn write_file(runtime: &Runtime, file: &WriteFile) -> std::io::Result<()> {
    let path = runtime.launcher.path(&file.path);
    create_parents(runtime, &path)?;
    let mode = file.permissions.unwrap_or(0o644);
    let mut handle = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(file.append)
        .truncate(!file.append)
        .mode(mode)
        .open(&path)?;
    handle.write_all(&file.content)?;
    // The mode of an existing file, and bits the umask removed, are set here.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    runtime.launcher.own(&path)
}

/// Writes a script under `dir` (inside the instance) and runs it; its exit status.
fn run_script(runtime: &mut Runtime, module: &str, script: &Script, dir: &Path) -> i32 {
    let path = runtime
        .launcher
        .path(&dir.join(&script.name).to_string_lossy());
    let written = create_parents(runtime, &path).and_then(|()| {
        std::fs::write(&path, &script.content)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        runtime.launcher.own(&path)
    });
    if let Err(error) = written {
        runtime.console.event(&format!(
            "error: {module}: cannot write {}: {error}",
            path.display()
        ));
        return 1;
    }
    runtime
        .console
        .event(&format!("{module}: running {}", script.name));
    let command = if script.content.starts_with(b"#!") {
        runtime.launcher.command(path.as_os_str(), &runtime.console)
    } else {
        runtime
            .launcher
            .command("/bin/sh".as_ref(), &runtime.console)
            .map(|mut command| {
                command.arg(&path);
                command
            })
    };
    let exit = match command.and_then(|mut command| command.spawn()) {
        Ok(child) => wait(runtime, child),
        Err(error) => {
            runtime.console.event(&format!(
                "error: {module}: cannot run {}: {error}",
                script.name
            ));
            return 127;
        }
    };
    if exit != 0 {
        runtime.console.event(&format!(
            "{module}: {} failed with exit status {exit}",
            script.name
        ));
    }
    exit
}

/// Waits for a boot step, answering control requests and honouring a stop meanwhile.
fn wait(runtime: &mut Runtime, mut child: Child) -> i32 {
    let group = Pid::from_raw(child.id() as i32);
    let mut kill_at: Option<Instant> = None;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return crate::supervisor::exit_code(status),
            Ok(None) => {}
            Err(_) => return 1,
        }
        if kill_at.is_some_and(|at| Instant::now() >= at) {
            runtime.launcher.signal(group, Signal::SIGKILL);
        }
        match runtime.messages.recv_timeout(Duration::from_millis(50)) {
            Ok(Message::Signal(Signal::SIGCHLD)) | Err(RecvTimeoutError::Timeout) => {}
            Ok(Message::Signal(_)) => {
                if !runtime.stop_requested {
                    runtime.stop_requested = true;
                    runtime
                        .console
                        .event("stop requested during boot: stopping the running step");
                    runtime.launcher.signal(group, Signal::SIGTERM);
                    kill_at = Some(Instant::now() + STOP_GRACE);
                }
            }
            Ok(Message::Control(_, reply)) => {
                let _ = reply.send(Response::error(
                    "the instance is booting; try again when boot has finished",
                    Vec::new(),
                ));
            }
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
