//! [`MotoServer`]: a real `moto_server` (moto 5, the Python AWS mock) on a
//! free loopback port, one per test that needs it, killed (by its own PID)
//! when dropped.
//!
//! The binary comes from `ENDSTATE_MOTO_SERVER`, else from the workspace's
//! `.tools/venv/bin/moto_server`, which `scripts/test` installs. This is
//! test machinery: failures to start panic with instructions, and nothing
//! here is meant for production code.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long moto may take to answer after it starts (Python imports are
/// slow on a loaded two-core machine).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running moto server on 127.0.0.1.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    port: u16,
    url: String,
    /// moto's stdout and stderr (it logs every request), read on failure.
    log: tempfile::NamedTempFile,
}

impl MotoServer {
    /// Starts moto and waits until it answers. Panics, saying what to do,
    /// if it cannot.
    pub async fn start() -> Self {
        match Self::try_start().await {
            Ok(server) => server,
            Err(e) => panic!("could not start moto_server: {e:#}"),
        }
    }

    /// Starts moto and waits until it answers.
    pub async fn try_start() -> anyhow::Result<Self> {
        let binary = moto_binary()?;
        // The port is found free and then released for moto to bind, so
        // another process may take it in between: try a few ports.
        let mut last_error = None;
        for _ in 0..3 {
            match Self::start_on_free_port(&binary).await {
                Ok(server) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("moto did not start")))
    }

    async fn start_on_free_port(binary: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let log = tempfile::NamedTempFile::new().context("creating moto's log file")?;
        let child = Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // moto never needs the real metadata service or real AWS.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .stdin(Stdio::null())
            .stdout(log.reopen().context("opening moto's log")?)
            .stderr(log.reopen().context("opening moto's log")?)
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        let mut server = MotoServer {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        server.wait_until_ready().await?;
        Ok(server)
    }

    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let client = http_client()?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let probe = format!("{}/moto-api/data.json", self.url);
        loop {
            if let Some(status) = self.child.try_wait().context("checking on moto")? {
                bail!(
                    "moto_server exited ({status}) before answering:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(response) = client.get(&probe).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "moto_server did not answer on {} within {STARTUP_TIMEOUT:?}:\n{}",
                    self.url,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:PORT`, the endpoint for every service.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Forgets every resource in every region (`POST /moto-api/reset`).
    pub async fn reset(&self) -> anyhow::Result<()> {
        let response = http_client()?
            .post(format!("{}/moto-api/reset", self.url))
            .send()
            .await
            .context("resetting moto")?;
        if !response.status().is_success() {
            bail!("moto reset answered {}", response.status());
        }
        Ok(())
    }

    /// The last lines moto logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // Kills our own child by its PID, then reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that never goes through an HTTP proxy from the environment:
/// all our traffic is to loopback.
fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building an HTTP client")
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// `ENDSTATE_MOTO_SERVER`, else `<workspace>/.tools/venv/bin/moto_server`.
fn moto_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("ENDSTATE_MOTO_SERVER") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("ENDSTATE_MOTO_SERVER={} is not a file", path.display());
        }
        return Ok(path);
    }
    let root = workspace_root().context("finding the workspace root")?;
    let path = root.join(".tools/venv/bin/moto_server");
    if !path.is_file() {
        bail!(
            "{} not found. Run `scripts/test` once to install moto into .tools/venv \
             (or set ENDSTATE_MOTO_SERVER to a moto_server binary).",
            path.display()
        );
    }
    Ok(path)
}

/// The nearest ancestor of the crate being tested (`CARGO_MANIFEST_DIR` at
/// run time, else this crate's) that holds `.tools` or `Cargo.lock`.
pub fn workspace_root() -> anyhow::Result<PathBuf> {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    start
        .ancestors()
        .find(|dir| dir.join(".tools").is_dir() || dir.join("Cargo.lock").is_file())
        .map(Path::to_path_buf)
        .with_context(|| {
            format!(
                "no directory above {} holds .tools or Cargo.lock; run `scripts/test` from the workspace",
                start.display()
            )
        })
}
