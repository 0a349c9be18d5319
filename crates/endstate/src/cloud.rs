//! `endstate cloud …`: run the built-in cloud (`serve`), find it or start
//! it in the background for a spec whose provider is `local`
//! ([`ensure_running`]), report on it (`status`), stop it (`stop`), and read
//! an instance's console (`console-output`).
//!
//! The cloud directory holds, besides the backend's own files, what this
//! module writes: `credentials` (the API's access key, generated at first
//! start, 0600), `server.json` (where the running server listens, which
//! process it is) and `serve.lock`, which a serving process holds locked
//! for its whole life — the lock, not the PID file, is the proof that a
//! server runs, and the kernel releases it however the server dies.
//!
//! Not here: the API server and backends (crate `endstate-cloud`), the
//! instance runtime (crate `endstate-instance`).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use endstate_clock::SystemClock;
use endstate_cloud::process::{Isolation, ProcessBackend, ProcessConfig};
use endstate_cloud::{Backend, CloudState, Credentials, SimulatedBackend, SimulatedConfig};
use endstate_provider::ec2::{Ec2Client, Ec2Config};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::args::{CloudBackend, CloudCommand};

/// The environment variable naming the cloud directory.
pub const DIR_ENV: &str = "ENDSTATE_CLOUD_DIR";
const SERVER_FILE: &str = "server.json";
const CREDENTIALS_FILE: &str = "credentials";
const LOCK_FILE: &str = "serve.lock";
const LOG_FILE: &str = "cloud.log";
/// How long `ensure_running` waits for a server it started.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `stop` waits for the server to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a running server listens and what it is. Written by `serve` once
/// it listens; removed when it stops.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerInfo {
    pub pid: u32,
    pub url: String,
    pub addr: SocketAddr,
    pub region: String,
    pub backend: String,
    /// How instances are isolated, in words, for `cloud status`.
    pub isolation: String,
    /// The starter image's id (`endstate-base`), when the backend has one.
    pub base_image: Option<String>,
    /// The Ed25519 public key (base64) that verifies the identity documents
    /// its metadata service signs, when the backend runs instances.
    pub identity_public_key: Option<String>,
    pub version: String,
}

/// The API's access key. Never printed.
#[derive(Clone, Serialize, Deserialize)]
pub struct LocalCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for LocalCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// A running built-in cloud, as a client needs it.
#[derive(Debug, Clone)]
pub struct LocalEndpoint {
    pub info: ServerInfo,
    pub credentials: LocalCredentials,
}

impl LocalEndpoint {
    /// An EC2 client for it.
    pub fn client(&self) -> Result<Ec2Client> {
        Ok(Ec2Client::with_static_credentials(
            Ec2Config::new(self.info.region.clone()).with_endpoint(self.info.url.clone()),
            self.credentials.access_key_id.clone(),
            self.credentials.secret_access_key.clone(),
            None,
        )?)
    }
}

/// The cloud directory: `--dir`, else `$ENDSTATE_CLOUD_DIR`, else the
/// spec's `provider.local.dir` (relative to the spec), else
/// `$XDG_DATA_HOME/endstate/cloud`, else `~/.local/share/endstate/cloud`.
pub fn resolve_dir(flag: Option<&Path>, spec_dir: Option<(&Path, &str)>) -> Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some((base, dir)) = spec_dir {
        return Ok(base.join(dir));
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(data).join("endstate").join("cloud"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/endstate/cloud")),
        None => bail!("no cloud directory: set {DIR_ENV}, XDG_DATA_HOME or HOME, or pass --dir"),
    }
}

pub async fn run(command: CloudCommand) -> Result<ExitCode> {
    match command {
        CloudCommand::Serve {
            dir,
            port,
            region,
            backend,
            binds,
        } => {
            let binds = binds
                .iter()
                .map(|b| parse_bind(b))
                .collect::<Result<Vec<_>>>()?;
            serve(
                &resolve_dir(dir.as_deref(), None)?,
                port,
                &region,
                backend,
                binds,
            )
            .await
        }
        CloudCommand::Start { dir, region, json } => {
            let dir = resolve_dir(dir.as_deref(), None)?;
            let endpoint = ensure_running(&dir, &region, !json)?;
            if json {
                println!("{}", serde_json::to_string(&endpoint.info)?);
            } else {
                println!("{}", endpoint.info.url);
            }
            Ok(ExitCode::SUCCESS)
        }
        CloudCommand::Status { dir, json } => {
            status(&resolve_dir(dir.as_deref(), None)?, json).await
        }
        CloudCommand::Stop {
            dir,
            terminate_instances,
            json,
        } => {
            let dir = resolve_dir(dir.as_deref(), None)?;
            let left = before_stop(&dir, terminate_instances).await?;
            stop(&dir, left, json)
        }
        CloudCommand::ConsoleOutput { id, dir } => {
            console_output(&resolve_dir(dir.as_deref(), None)?, &id).await
        }
        // Handled in main, before any runtime starts.
        CloudCommand::InstanceInit { .. } => bail!("instance-init runs outside the async runtime"),
    }
}

/// Creates the cloud directory, private to its owner (one that exists is
/// left as it is).
fn create_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", dir.display()))
}

/// The lock file, opened (not locked).
fn lock_file(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Whether a server holds the directory's lock right now.
fn is_serving(dir: &Path) -> Result<bool> {
    if !dir.join(LOCK_FILE).exists() {
        return Ok(false);
    }
    let file = lock_file(dir)?;
    match file.try_lock() {
        Ok(()) => {
            file.unlock().ok();
            Ok(false)
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(true),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("checking {}", dir.join(LOCK_FILE).display()))
        }
    }
}

/// The credentials, created at first use: an access key id of EC2's shape
/// and a 40-character secret, from the system's random source.
fn load_or_create_credentials(dir: &Path) -> Result<LocalCredentials> {
    let path = dir.join(CREDENTIALS_FILE);
    if let Ok(bytes) = std::fs::read(&path) {
        return serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a credentials file", path.display()));
    }
    let key = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let credentials = LocalCredentials {
        access_key_id: format!("ESLC{}", &key[..16]),
        secret_access_key: secret[..40].to_string(),
    };
    write_private(&path, &serde_json::to_vec_pretty(&credentials)?)?;
    Ok(credentials)
}

/// Writes a file readable by its owner only, atomically (temp + rename).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn read_server_info(dir: &Path) -> Result<Option<ServerInfo>> {
    let path = dir.join(SERVER_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
            format!("{} is not a server description", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The running server of `dir`, if one serves and answers.
fn running(dir: &Path) -> Result<Option<ServerInfo>> {
    if !is_serving(dir)? {
        return Ok(None);
    }
    let Some(info) = read_server_info(dir)? else {
        return Ok(None);
    };
    let answers = TcpStream::connect_timeout(&info.addr, Duration::from_secs(2)).is_ok();
    Ok(answers.then_some(info))
}

/// The running server of `dir` with the credentials to call it.
fn running_endpoint(dir: &Path) -> Result<Option<LocalEndpoint>> {
    let Some(info) = running(dir)? else {
        return Ok(None);
    };
    Ok(Some(LocalEndpoint {
        credentials: load_or_create_credentials(dir)?,
        info,
    }))
}

/// The backend `serve` runs, and the words `cloud status` uses for it.
struct Served {
    backend: Arc<dyn Backend>,
    isolation: String,
    base_image: Option<String>,
    identity_public_key: Option<String>,
}

fn open_backend(
    dir: &Path,
    region: &str,
    backend: CloudBackend,
    binds: Vec<(PathBuf, PathBuf)>,
) -> Result<Served> {
    match backend {
        CloudBackend::Simulated => {
            if !binds.is_empty() {
                bail!("--bind applies to the process backend only");
            }
            let mut config = SimulatedConfig::new(region);
            let config_image = config.images.first().map(|i| i.image_id.clone());
            // A cloud for one user on one machine: EC2's limits would only
            // slow them down. Benchmarks set their own.
            config.throttling = None;
            config.id_salt = u64::from_ne_bytes(
                *uuid::Uuid::new_v4()
                    .as_bytes()
                    .first_chunk()
                    .unwrap_or(&[0; 8]),
            );
            config.timings = endstate_cloud::Timings {
                pending: Duration::from_secs(1),
                stopping: Duration::from_secs(1),
                shutting_down: Duration::from_secs(1),
            };
            Ok(Served {
                backend: Arc::new(SimulatedBackend::new(config, SystemClock::shared())),
                isolation: "simulated: instances are records, nothing runs (state is in memory and ends with the server)".to_string(),
                base_image: config_image,
                identity_public_key: None,
            })
        }
        CloudBackend::Process => {
            let mut config = ProcessConfig::new(dir);
            config.ec2 = SimulatedConfig::new(region);
            config.ec2.images.clear();
            config.ec2.throttling = None;
            config.extra_binds.extend(binds);
            let backend = ProcessBackend::open(config)
                .with_context(|| format!("opening the built-in cloud in {}", dir.display()))?;
            let isolation = match backend.isolation() {
                Isolation::Namespaces => "namespaces: each instance has its own mount, PID and UTS namespaces, an overlay root, its own uid and resource limits".to_string(),
                Isolation::Userns => format!(
                    "user namespaces (not running as root): each instance has its own mount, PID and UTS namespaces and an overlay root, but all run as this user (uid {}) on the host: they can signal each other, and the metadata service tells them apart by address only",
                    nix::unistd::geteuid()
                ),
                Isolation::None => format!(
                    "WEAK: not running as root, so instances share this user (uid {}) and the host's namespaces; they can see and signal each other, and each root is a plain copy",
                    nix::unistd::geteuid()
                ),
            };
            Ok(Served {
                base_image: Some(backend.base_image_id().to_string()),
                identity_public_key: Some(
                    base64::engine::general_purpose::STANDARD.encode(backend.imds_public_key()),
                ),
                backend,
                isolation,
            })
        }
    }
}

/// Runs the built-in cloud in the foreground until SIGTERM or Ctrl-C.
/// `HOST_PATH:INSTANCE_PATH`, both absolute, the host path existing.
fn parse_bind(text: &str) -> Result<(PathBuf, PathBuf)> {
    let Some((host, instance)) = text.split_once(':') else {
        bail!("--bind {text}: expected HOST_PATH:INSTANCE_PATH");
    };
    let (host, instance) = (PathBuf::from(host), PathBuf::from(instance));
    if !host.is_absolute() || !instance.is_absolute() {
        bail!("--bind {text}: both paths must be absolute");
    }
    if !host.exists() {
        bail!("--bind {text}: {} does not exist", host.display());
    }
    Ok((host, instance))
}

async fn serve(
    dir: &Path,
    port: u16,
    region: &str,
    backend: CloudBackend,
    binds: Vec<(PathBuf, PathBuf)>,
) -> Result<ExitCode> {
    create_dir(dir)?;
    let lock = lock_file(dir)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let at = read_server_info(dir)?
                .map(|i| format!(" at {} (pid {})", i.url, i.pid))
                .unwrap_or_default();
            bail!(
                "the built-in cloud of {} is already running{at}",
                dir.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", dir.join(LOCK_FILE).display()))
        }
    }
    let credentials = load_or_create_credentials(dir)?;
    let served = open_backend(dir, region, backend, binds)?;
    let state = CloudState::new(
        served.backend,
        Credentials::new().with(&credentials.access_key_id, &credentials.secret_access_key),
    );
    let cloud = endstate_cloud::serve_state(port, state).await?;
    let info = ServerInfo {
        pid: std::process::id(),
        url: cloud.url(),
        addr: cloud.addr,
        region: region.to_string(),
        backend: backend.name().to_string(),
        isolation: served.isolation,
        base_image: served.base_image,
        identity_public_key: served.identity_public_key,
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    write_private(&dir.join(SERVER_FILE), &serde_json::to_vec_pretty(&info)?)?;
    eprintln!(
        "endstate cloud: {} backend listening on {} (directory {})",
        info.backend,
        info.url,
        dir.display()
    );
    crate::commands::stop_signal().await;
    eprintln!("endstate cloud: stopping");
    // Only our own description is removed: the lock proves it is ours.
    std::fs::remove_file(dir.join(SERVER_FILE)).ok();
    cloud.shutdown().await?;
    drop(lock);
    Ok(ExitCode::SUCCESS)
}

/// The built-in cloud of `dir`: the running one, or one started now in the
/// background (`endstate cloud serve`, its output in `cloud.log`).
pub fn ensure_running(dir: &Path, region: &str, announce: bool) -> Result<LocalEndpoint> {
    create_dir(dir)?;
    if let Some(endpoint) = running_endpoint(dir)? {
        if endpoint.info.region != region {
            bail!(
                "the built-in cloud of {} runs region {}, the spec asks for {region}; stop it (endstate cloud stop) or use another directory",
                dir.display(),
                endpoint.info.region
            );
        }
        return Ok(endpoint);
    }
    let exe = std::env::current_exe().context("finding the endstate binary")?;
    let log_path = dir.join(LOG_FILE);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut child = std::process::Command::new(exe)
        .args(["cloud", "serve", "--region", region, "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C meant for this command does not
        // reach the cloud, which outlives it.
        .process_group(0)
        .spawn()
        .context("starting the built-in cloud")?;
    let started = Instant::now();
    loop {
        if let Some(endpoint) = running_endpoint(dir)? {
            if announce {
                eprintln!(
                    "Started the built-in cloud at {} (pid {}, directory {}); `endstate cloud stop` stops it.",
                    endpoint.info.url,
                    endpoint.info.pid,
                    dir.display()
                );
            }
            return Ok(endpoint);
        }
        if let Some(status) = child.try_wait()? {
            // Another command may have started one at the same moment.
            if let Some(endpoint) = running_endpoint(dir)? {
                return Ok(endpoint);
            }
            bail!(
                "the built-in cloud exited ({status}) before it was ready; see {}",
                log_path.display()
            );
        }
        if started.elapsed() > START_TIMEOUT {
            bail!(
                "the built-in cloud did not start within {} s; see {}",
                START_TIMEOUT.as_secs(),
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The running endpoint, or an error saying how to start one.
fn require_running(dir: &Path) -> Result<LocalEndpoint> {
    match running_endpoint(dir)? {
        Some(endpoint) => Ok(endpoint),
        None => bail!(
            "the built-in cloud of {} is not running; start it with `endstate cloud start` (or any command on a spec whose provider is local)",
            dir.display()
        ),
    }
}

async fn status(dir: &Path, json: bool) -> Result<ExitCode> {
    let Some(endpoint) = running_endpoint(dir)? else {
        if json {
            println!("{}", json!({ "running": false, "dir": dir }));
        } else {
            println!("not running (directory {})", dir.display());
        }
        return Ok(ExitCode::SUCCESS);
    };
    let client = endpoint.client()?;
    let (instances, _) = endstate_provider::describe_all(&client, &[]).await?;
    let mut by_state = std::collections::BTreeMap::<String, usize>::new();
    for instance in &instances {
        *by_state
            .entry(instance.state.as_str().to_string())
            .or_default() += 1;
    }
    let info = &endpoint.info;
    if json {
        println!(
            "{}",
            json!({
                "running": true, "dir": dir, "url": info.url, "pid": info.pid,
                "region": info.region, "backend": info.backend, "isolation": info.isolation,
                "base_image": info.base_image,
                "identity_public_key": info.identity_public_key,
                "version": info.version, "instances": by_state,
            })
        );
    } else {
        println!("running at {} (pid {})", info.url, info.pid);
        println!("directory  {}", dir.display());
        println!("backend    {} (region {})", info.backend, info.region);
        println!("isolation  {}", info.isolation);
        if let Some(image) = &info.base_image {
            println!("base image {image} (endstate-base)");
        }
        if let Some(key) = &info.identity_public_key {
            println!("identity   {key} (Ed25519 public key of signed identity documents)");
        }
        let counts: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
        println!(
            "instances  {}",
            if counts.is_empty() {
                "none".to_string()
            } else {
                counts.join(", ")
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The ids of the running cloud's instances in `states` (all projects).
async fn instances_in(client: &Ec2Client, states: &[&str]) -> Result<Vec<String>> {
    let filter = [endstate_provider::Filter::new(
        "instance-state-name",
        states.iter().copied(),
    )];
    let (found, _) = endstate_provider::describe_all(client, &filter).await?;
    Ok(found.into_iter().map(|i| i.id).collect())
}

/// Live: not terminated, nor on the way there.
const LIVE: &[&str] = &["pending", "running", "stopping", "stopped"];

/// Waits (boundedly) until no instance is shutting down: a stop lets the
/// server finish the terminations it has begun.
async fn wait_for_terminations(client: &Ec2Client) -> Result<()> {
    let started = Instant::now();
    loop {
        let left = instances_in(client, &["shutting-down"]).await?;
        if left.is_empty() {
            return Ok(());
        }
        if started.elapsed() > STOP_TIMEOUT {
            bail!(
                "{} instances were still shutting down after {} s",
                left.len(),
                STOP_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `stop` leaves behind: instances terminated first, or still live.
#[derive(Debug, Clone, Copy, Default)]
struct Left {
    terminated: usize,
    live: usize,
}

/// Terminates (when asked) every live instance of the running cloud and
/// waits until each is terminated; counts what is left live.
async fn before_stop(dir: &Path, terminate: bool) -> Result<Left> {
    let Some(endpoint) = running_endpoint(dir)? else {
        return Ok(Left::default());
    };
    let client = endpoint.client()?;
    let ids = instances_in(&client, LIVE).await?;
    if terminate {
        for chunk in ids.chunks(1000) {
            endstate_provider::Provider::terminate_instances(&client, chunk).await?;
        }
    }
    wait_for_terminations(&client).await?;
    Ok(if terminate {
        Left {
            terminated: ids.len(),
            live: 0,
        }
    } else {
        Left {
            terminated: 0,
            live: ids.len(),
        }
    })
}

fn stop(dir: &Path, left: Left, json: bool) -> Result<ExitCode> {
    let Some(info) = running(dir)? else {
        if json {
            println!("{}", json!({ "stopped": false, "running": false }));
        } else {
            println!("not running (directory {})", dir.display());
        }
        return Ok(ExitCode::SUCCESS);
    };
    let pid = nix::unistd::Pid::from_raw(
        i32::try_from(info.pid).context("the server's pid is out of range")?,
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
        .with_context(|| format!("signalling the built-in cloud (pid {})", info.pid))?;
    let started = Instant::now();
    while is_serving(dir)? {
        if started.elapsed() > STOP_TIMEOUT {
            bail!(
                "the built-in cloud (pid {}) did not stop within {} s",
                info.pid,
                STOP_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if json {
        println!(
            "{}",
            json!({
                "stopped": true, "pid": info.pid,
                "terminated": left.terminated, "live": left.live,
            })
        );
    } else {
        let instances = if left.terminated > 0 {
            format!("its {} instances were terminated first", left.terminated)
        } else if left.live == 0 {
            "it had no live instances".to_string()
        } else if info.backend == "simulated" {
            format!("its {} simulated instances ended with it", left.live)
        } else {
            format!(
                "its {} live instances keep running and are re-adopted at the next start",
                left.live
            )
        };
        println!("stopped the built-in cloud (pid {}); {instances}", info.pid);
    }
    Ok(ExitCode::SUCCESS)
}

async fn console_output(dir: &Path, id: &str) -> Result<ExitCode> {
    let endpoint = require_running(dir)?;
    let output = endpoint.client()?.console_output(id).await?;
    std::io::stdout().write_all(&output)?;
    Ok(ExitCode::SUCCESS)
}

/// What `endstate metadata` prints without paths.
const METADATA_SUMMARY: &[&str] = &[
    "instance-id",
    "instance-type",
    "ami-id",
    "local-ipv4",
    "placement/availability-zone",
    "placement/region",
];

/// The IMDS path of a `metadata` argument.
fn metadata_path(path: &str) -> String {
    match path {
        "user-data" => "/latest/user-data".to_string(),
        "identity" => "/latest/dynamic/instance-identity/document".to_string(),
        other if other.starts_with('/') => other.to_string(),
        other => format!("/latest/meta-data/{other}"),
    }
}

/// `endstate metadata`: reads this instance's metadata with the AWS SDK's
/// IMDS client (IMDSv2 session tokens; the endpoint from
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT` or the SDK's default).
pub async fn metadata(paths: &[String], json: bool) -> Result<ExitCode> {
    let client = aws_config::imds::Client::builder().build();
    let wanted: Vec<String> = if paths.is_empty() {
        METADATA_SUMMARY.iter().map(|p| p.to_string()).collect()
    } else {
        paths.to_vec()
    };
    let mut values = serde_json::Map::new();
    for path in &wanted {
        let value = client
            .get(metadata_path(path))
            .await
            .with_context(|| format!("reading {path} from the instance metadata service"))?;
        values.insert(
            path.clone(),
            serde_json::Value::String(value.as_ref().to_string()),
        );
    }
    if json {
        println!("{}", serde_json::Value::Object(values));
    } else if paths.len() == 1 {
        let value = values
            .values()
            .next()
            .and_then(|v| v.as_str())
            .unwrap_or("");
        print!("{value}");
        if !value.ends_with('\n') {
            println!();
        }
    } else {
        for (path, value) in &values {
            println!("{path:<28} {}", value.as_str().unwrap_or(""));
        }
    }
    Ok(ExitCode::SUCCESS)
}
