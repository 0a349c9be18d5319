//! The real `endstate serve` binary over a built-in cloud, for the
//! benchmarks that run it (`rollout`, `agents`): a project directory and a
//! cloud directory (temporary), the controller started with the flags the
//! benchmarks share, and on drop the controller stopped and the cloud
//! stopped with its instances. Also the event-time helper they share.
//!
//! Not a test harness: errors are `anyhow`, and a failure to clean up is
//! printed, not raised.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use endstate_controller::client::Client;
use endstate_controller::view::EventView;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The `endstate` binary: `$ENDSTATE_BIN`, else the one beside this
/// program (`target/<profile>/endstate`).
pub fn endstate_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("ENDSTATE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let beside = exe
        .parent()
        .context("this program has no directory")?
        .join("endstate");
    if !beside.exists() {
        bail!(
            "{} not found: build it first (cargo build -p endstate, with the same profile) or set ENDSTATE_BIN",
            beside.display()
        );
    }
    Ok(beside)
}

/// A free loopback port (bound, then released for `serve` to take), for a
/// controller whose address must be known before it starts (agents' user
/// data names it).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The project and cloud directories, and the controller; dropping it
/// stops the controller (SIGTERM, then SIGKILL after 30 s) and the cloud
/// with its instances, then removes both directories.
pub struct Project {
    pub binary: PathBuf,
    pub dir: tempfile::TempDir,
    pub cloud_dir: tempfile::TempDir,
    pub controller: Option<Child>,
}

impl Project {
    /// Fresh temporary directories, the binary of [`endstate_binary`].
    pub fn new() -> Result<Project> {
        Ok(Project {
            binary: endstate_binary()?,
            dir: tempfile::tempdir()?,
            cloud_dir: tempfile::tempdir()?,
            controller: None,
        })
    }

    /// `endstate ARGS` in the project directory, on this project's cloud.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("ENDSTATE_CLOUD_DIR", self.cloud_dir.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NO_COLOR", "1")
            .env_remove("ENDSTATE_CRASH_AT")
            .env_remove("ENDSTATE_API_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL");
        command
    }

    /// The last 100 lines of the controller's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(100)..].join("\n")
    }

    /// Writes the spec (`endstate.yaml`), which a running controller
    /// watches.
    pub fn write_spec(&self, text: &str) -> Result<()> {
        std::fs::write(self.dir.path().join("endstate.yaml"), text).context("writing the spec")
    }

    /// The controller's process id, while it runs.
    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.as_ref().map(Child::id)
    }

    /// Starts `endstate serve` on `listen` (`127.0.0.1:0`: any port) with
    /// `env` added, observing every second, period 5 s, polls of 0.2 s and
    /// no rate limits; waits (up to 120 s) for it to serve and returns its
    /// API's client.
    pub async fn start(&mut self, listen: &str, env: &[(&str, &str)]) -> Result<Client> {
        self.start_serve(
            &[
                "--listen",
                listen,
                "--observe-interval",
                "1",
                "--period",
                "5",
                "--poll-interval",
                "0.2",
                "--rate-limits",
                "off",
            ],
            env,
        )
        .await
    }

    /// Starts `endstate serve ARGS…` with `env` added; waits (up to 120 s)
    /// for it to serve and returns its API's client.
    pub async fn start_serve(&mut self, args: &[&str], env: &[(&str, &str)]) -> Result<Client> {
        let log = std::fs::File::create(self.dir.path().join("serve.log"))?;
        let mut command = self.command(&["serve"]);
        command
            .args(args)
            .env("ENDSTATE_LOG", "endstate=info,endstate_controller=info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log);
        self.controller = Some(command.spawn().context("starting endstate serve")?);
        let state = self.dir.path().join(".endstate");
        let started = Instant::now();
        let info: serde_json::Value = loop {
            if let Ok(bytes) = std::fs::read(state.join("serve.json")) {
                if let Ok(info) = serde_json::from_slice(&bytes) {
                    break info;
                }
            }
            if let Some(child) = self.controller.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "endstate serve exited ({status}) before serving:\n{}",
                        self.log_tail()
                    );
                }
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!(
                    "endstate serve did not start in 120 s:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let token = std::fs::read_to_string(state.join("api-token"))?;
        let url = info["url"]
            .as_str()
            .context("serve.json: no url")?
            .to_string();
        Ok(Client::new(url, token.trim()))
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if let Some(mut child) = self.controller.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let started = Instant::now();
            while matches!(child.try_wait(), Ok(None)) {
                if started.elapsed() > Duration::from_secs(30) {
                    eprintln!("endstate serve did not stop on SIGTERM in 30 s: killed");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        match self
            .command(&["cloud", "stop", "--terminate-instances"])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "endstate cloud stop --terminate-instances failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(error) => eprintln!("endstate cloud stop: {error}"),
        }
    }
}

/// Milliseconds since the epoch of an event's RFC 3339 time.
pub fn event_ms(event: &EventView) -> Result<i128> {
    let at = time::OffsetDateTime::parse(&event.at, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("event {}: time {:?}", event.seq, event.at))?;
    Ok(at.unix_timestamp_nanos() / 1_000_000)
}
