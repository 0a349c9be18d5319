//! `endstate agent`: the pull model of configuration management, run on an
//! instance. It proves to `endstate serve` which instance it runs on (the
//! identity document and a server nonce signed by the instance metadata
//! service), watches its group's roles by long poll, converges them with
//! the configuration engine, reports, and keeps the last configuration it
//! received (0600, in its state directory) to go on converging it on its
//! check-in schedule while the server is away.
//!
//! Also here: the key `serve` verifies agents with ([`identity_key`]).
//! Not here: what the server decides (`endstate_controller::agent`), the
//! engine (`endstate_config`).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use endstate_config::{Engine, FactsOptions, Outcome, Report, Secrets};
use endstate_controller::api::types::{AgentConfig, AgentReport, AgentSessionRequest};
use endstate_controller::client::{Client, ClientError};
use endstate_model::Spec;

/// How long the server may hold a config request (its limit is 30 s).
const LONG_POLL: Duration = Duration::from_secs(30);
/// The longest wait between attempts while the server is away, before the
/// server ever assigned a check-in.
const DEFAULT_CHECK_IN: Duration = Duration::from_secs(60);
/// The environment variable with the cloud's identity public key (base64).
pub const IDENTITY_KEY_ENV: &str = "ENDSTATE_AGENT_IDENTITY_KEY";

pub struct AgentArgs {
    pub server: String,
    pub imds_endpoint: Option<String>,
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub once: bool,
}

/// The key `endstate serve` verifies agents' identity documents with:
/// `$ENDSTATE_AGENT_IDENTITY_KEY` (base64), else, for `provider: local`,
/// the running built-in cloud's (`endstate cloud status` prints it). None
/// for AWS: EC2's documents are not signed with Ed25519.
pub fn identity_key(spec: &Spec, spec_file: &Path) -> Result<Option<[u8; 32]>> {
    let text = match std::env::var(IDENTITY_KEY_ENV) {
        Ok(text) if !text.is_empty() => Some(text),
        _ => match &spec.provider {
            endstate_model::Provider::Local { region, dir } => {
                let base = spec_file.parent().unwrap_or(Path::new("."));
                let dir = crate::cloud::resolve_dir(None, dir.as_deref().map(|d| (base, d)))?;
                crate::cloud::ensure_running(&dir, region, true)?
                    .info
                    .identity_public_key
            }
            endstate_model::Provider::Aws { .. } => None,
        },
    };
    let Some(text) = text else { return Ok(None) };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .with_context(|| format!("{IDENTITY_KEY_ENV}: not base64"))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{IDENTITY_KEY_ENV}: not a 32-byte Ed25519 public key"))?;
    Ok(Some(key))
}

/// The environment variable that sets agents' check-in period (seconds),
/// 60 by default: shorter for tests and benchmarks.
pub const CHECK_IN_ENV: &str = "ENDSTATE_AGENT_CHECK_IN";

/// `$ENDSTATE_AGENT_CHECK_IN`, if set.
pub fn check_in_override() -> Result<Option<Duration>> {
    match std::env::var(CHECK_IN_ENV) {
        Ok(text) if !text.is_empty() => {
            let seconds: f64 = text
                .trim()
                .parse()
                .with_context(|| format!("{CHECK_IN_ENV}={text}: not a number of seconds"))?;
            if !(seconds.is_finite() && seconds >= 1.0) {
                bail!("{CHECK_IN_ENV}={text}: must be at least 1 second");
            }
            Ok(Some(Duration::from_secs_f64(seconds)))
        }
        _ => Ok(None),
    }
}

/// What the agent keeps in its state directory.
struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    fn open(dir: &Path) -> Result<StateDir> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--state-dir {}: cannot create it", dir.display()))?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    /// Writes `bytes` to `name` atomically, 0600.
    fn write_private(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.dir.join(name);
        let temporary = self.dir.join(format!(".{name}.tmp"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .with_context(|| format!("{}: cannot write", temporary.display()))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("{}: cannot write", temporary.display()))?;
        std::fs::rename(&temporary, &path)
            .with_context(|| format!("{}: cannot rename into place", path.display()))
    }

    /// The agent's own secret, made on first use.
    fn agent_key(&self) -> Result<String> {
        let path = self.dir.join("agent-key");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let key = text.trim().to_string();
            if key.len() >= 32 {
                return Ok(key);
            }
        }
        let mut bytes = [0u8; 32];
        getrandom_fill(&mut bytes)?;
        let key = hex::encode(bytes);
        self.write_private("agent-key", key.as_bytes())?;
        Ok(key)
    }

    fn last_config(&self) -> Option<AgentConfig> {
        let bytes = std::fs::read(self.dir.join("config.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn save_config(&self, config: &AgentConfig) -> Result<()> {
        self.write_private("config.json", &serde_json::to_vec(config)?)
    }
}

/// Random bytes from the kernel (`/dev/urandom`).
fn getrandom_fill(buffer: &mut [u8]) -> Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buffer))
        .context("/dev/urandom: cannot read random bytes")
}

/// The instance metadata service, IMDSv2.
struct Imds {
    http: reqwest::Client,
    endpoint: String,
}

impl Imds {
    async fn get(&self, path: &str) -> Result<String> {
        let url = format!("{}{path}", self.endpoint);
        let token = self
            .http
            .put(format!("{}/latest/api/token", self.endpoint))
            .header("x-aws-ec2-metadata-token-ttl-seconds", "60")
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("instance metadata service {}: token", self.endpoint))?
            .text()
            .await?;
        let response = self
            .http
            .get(&url)
            .header("x-aws-ec2-metadata-token", token)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .with_context(|| format!("GET {url}"))?;
        if !status.is_success() {
            bail!("GET {url}: {status}");
        }
        Ok(body)
    }
}

/// One agent: its server, metadata service and state.
struct Agent {
    server: Client,
    imds: Imds,
    state: StateDir,
    root: PathBuf,
    imds_endpoint: String,
    key: String,
    /// The facts of the last gathering, and when, kept fresh by
    /// [`refresh_facts`] every check-in: a converge reuses them, so a role
    /// change sent to a whole fleet at once costs its metadata services
    /// nothing and waits on none, and a fact's change (a tag) is seen
    /// within a check-in.
    facts: Arc<std::sync::Mutex<Option<(endstate_config::Facts, Instant)>>>,
}

impl Agent {
    /// Opens a session: the proof, and the session's client.
    async fn authenticate(&self) -> Result<Client> {
        let nonce = self.server.agent_nonce().await?.nonce;
        let document = self
            .imds
            .get("/latest/dynamic/instance-identity/document")
            .await?;
        let signature = self
            .imds
            .get("/latest/dynamic/instance-identity/signature")
            .await?;
        let nonce_signature = self
            .imds
            .get(&format!("/latest/dynamic/instance-identity/nonce/{nonce}"))
            .await?;
        let session = self
            .server
            .agent_session(&AgentSessionRequest {
                document,
                signature,
                nonce,
                nonce_signature,
                agent_key: self.key.clone(),
            })
            .await?;
        eprintln!(
            "endstate agent: session opened for {} (group {})",
            session.instance_id, session.group
        );
        Ok(self.server.with_token(session.token))
    }

    /// Converges `config` (off the async threads); returns the report.
    /// Facts are gathered again when they are older than `facts_for` (or
    /// there are none); when gathering fails, older facts still serve.
    async fn converge(&self, config: &AgentConfig, facts_for: Duration) -> Report {
        let roles = config.roles.clone();
        let root = self.root.clone();
        let imds_endpoint = self.imds_endpoint.clone();
        let secrets = config.redact.clone();
        let cached = self.facts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let fresh = cached
            .as_ref()
            .filter(|(_, at)| at.elapsed() < facts_for)
            .map(|(facts, _)| facts.clone());
        let run = tokio::task::spawn_blocking(move || {
            let facts = match fresh {
                Some(facts) => (facts, false),
                None => {
                    let mut facts_options = FactsOptions::new(&root);
                    facts_options.imds_endpoint = Some(imds_endpoint);
                    match endstate_config::gather(&facts_options) {
                        Ok(facts) => (facts, true),
                        Err(e) => match cached {
                            Some((facts, _)) => {
                                eprintln!("endstate agent: facts: {e}; the last ones serve");
                                (facts, false)
                            }
                            None => return Err(e.to_string()),
                        },
                    }
                }
            };
            let mut options = endstate_config::Options::new(&root);
            let mut redact = Secrets::new();
            for value in secrets {
                redact.insert(value);
            }
            options.secrets = redact;
            Ok((Engine::run(&roles, &facts.0, &options), facts))
        })
        .await;
        let run = match run {
            Ok(Ok((report, (facts, gathered)))) => {
                if gathered {
                    *self.facts.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((facts, Instant::now()));
                }
                Ok(Ok(report))
            }
            Ok(Err(message)) => Ok(Err(message)),
            Err(e) => Err(e),
        };
        let report = match run {
            Ok(Ok(report)) => report,
            Ok(Err(message)) => failed_report(&self.root, format!("facts: {message}")),
            Err(e) => failed_report(&self.root, format!("the run panicked: {e}")),
        };
        eprintln!(
            "endstate agent: converged {} ({:?}, {} resources, {} ms){}",
            config.version,
            report.outcome,
            report.resources.len(),
            report.duration_ms,
            if report.errors.is_empty() {
                String::new()
            } else {
                format!(": {}", report.errors.join("; "))
            }
        );
        report
    }
}

/// A report of a run that could not start.
fn failed_report(root: &Path, error: String) -> Report {
    Report {
        started: String::new(),
        duration_ms: 0,
        root: root.display().to_string(),
        noop: false,
        outcome: Outcome::Failed,
        errors: vec![error],
        resources: Vec::new(),
    }
}

/// The server refused the session (its token, or the instance): open
/// another rather than retry the same.
fn session_refused(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<ClientError>()
        .and_then(ClientError::status)
        .is_some_and(|status| status == 401 || status == 403)
}

pub async fn run(args: AgentArgs) -> Result<ExitCode> {
    let imds_endpoint = args
        .imds_endpoint
        .clone()
        .or_else(endstate_config::facts::imds_endpoint_from_env)
        .context("no instance metadata service: pass --imds-endpoint or set AWS_EC2_METADATA_SERVICE_ENDPOINT")?
        .trim_end_matches('/')
        .to_string();
    let state = StateDir::open(&args.state_dir)?;
    let key = state.agent_key()?;
    let agent = Agent {
        server: Client::new(args.server.clone(), ""),
        imds: Imds {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
            endpoint: imds_endpoint.clone(),
        },
        state,
        root: args.root.clone(),
        imds_endpoint,
        key,
        facts: Arc::new(std::sync::Mutex::new(None)),
    };
    if args.once {
        return once(&agent).await;
    }
    watch(&agent).await
}

/// `--once`: authenticate, converge what the server serves now, report.
async fn once(agent: &Agent) -> Result<ExitCode> {
    let session = agent.authenticate().await?;
    let config = session.agent_config(None, LONG_POLL).await?;
    agent.state.save_config(&config)?;
    let report = agent.converge(&config, Duration::ZERO).await;
    let ok = report.outcome == Outcome::Ok;
    session
        .agent_report(&AgentReport {
            version: config.version.clone(),
            report,
        })
        .await?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Gathers the facts again every `period` (a fifth of it spread by
/// instance), off the watch loop: so that no converge waits on the
/// metadata service, however slow it is under a fleet's load. A failed
/// gathering keeps the facts there are.
async fn refresh_facts(
    root: PathBuf,
    imds_endpoint: String,
    facts: Arc<std::sync::Mutex<Option<(endstate_config::Facts, Instant)>>>,
    period: Arc<AtomicU64>,
    instance: String,
) {
    let spread = endstate_controller::agent::spread(&instance, "facts");
    loop {
        let every = Duration::from_millis(period.load(Ordering::Relaxed));
        tokio::time::sleep(every.mul_f64(0.8 + 0.2 * spread)).await;
        let (root, endpoint) = (root.clone(), imds_endpoint.clone());
        let gathered = tokio::task::spawn_blocking(move || {
            let mut options = FactsOptions::new(&root);
            options.imds_endpoint = Some(endpoint);
            endstate_config::gather(&options)
        })
        .await;
        match gathered {
            Ok(Ok(fresh)) => {
                *facts.lock().unwrap_or_else(|p| p.into_inner()) = Some((fresh, Instant::now()));
            }
            Ok(Err(e)) => eprintln!("endstate agent: facts: {e}; the last ones serve"),
            Err(e) => eprintln!("endstate agent: facts: {e}"),
        }
    }
}

/// The agent's life: watch, converge on change and on check-in, report;
/// while the server is away, converge the last configuration on its
/// check-in schedule and try again.
async fn watch(agent: &Agent) -> Result<ExitCode> {
    let mut current = agent.state.last_config();
    let mut converged_at: Option<Instant> = None;
    if let Some(config) = &current {
        // What was last received applies at once, server or not; the
        // server is asked after a delay spread by instance over a fifth of
        // the check-in period, so agents restarted together (a fleet's
        // reboot) do not all open sessions at the same moment.
        agent.converge(config, Duration::ZERO).await;
        converged_at = Some(Instant::now());
        let period = Duration::from_secs_f64(config.check_in_seconds);
        let fraction = endstate_controller::agent::spread(&config.instance_id, "start");
        tokio::time::sleep(period.mul_f64(0.2 * fraction)).await;
    }
    let mut session: Option<Client> = None;
    let mut failures: u32 = 0;
    let mut pending_report: Option<AgentReport> = None;
    // After a failed converge: when to try again (sooner than the check-in),
    // and how many failed in a row.
    let mut retry_at: Option<Instant> = None;
    let mut failed_runs: u32 = 0;
    let refresh_period = Arc::new(AtomicU64::new(DEFAULT_CHECK_IN.as_millis() as u64));
    let mut refresher: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let check_in = current.as_ref().map_or(DEFAULT_CHECK_IN, |c| {
            Duration::from_secs_f64(c.check_in_seconds)
        });
        refresh_period.store(
            u64::try_from(check_in.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if let (None, Some(config)) = (&refresher, &current) {
            refresher = Some(tokio::spawn(refresh_facts(
                agent.root.clone(),
                agent.imds_endpoint.clone(),
                Arc::clone(&agent.facts),
                Arc::clone(&refresh_period),
                config.instance_id.clone(),
            )));
        }
        let step: Result<()> = async {
            if session.is_none() {
                session = Some(agent.authenticate().await?);
            }
            let client = session.as_ref().context("no session")?;
            if let Some(report) = pending_report.take() {
                client.agent_report(&report).await?;
            }
            let after = current.as_ref().map(|c| c.version.clone());
            // A retry due sooner than the long poll's end shortens it.
            let wait = retry_at.map_or(LONG_POLL, |at| {
                at.saturating_duration_since(Instant::now())
                    .clamp(Duration::from_millis(100), LONG_POLL)
            });
            let config = client.agent_config(after.as_deref(), wait).await?;
            failures = 0;
            let changed = current.as_ref() != Some(&config);
            let due = converged_at.is_none_or(|at| at.elapsed() >= check_in);
            let retry = retry_at.is_some_and(|at| Instant::now() >= at);
            if changed || due || retry {
                agent.state.save_config(&config)?;
                // The facts come from the refresher, which gathers them
                // every check-in; a retry gathers them again itself.
                let facts_for = if retry {
                    Duration::ZERO
                } else if due {
                    check_in.saturating_mul(2)
                } else {
                    Duration::MAX
                };
                let report = agent.converge(&config, facts_for).await;
                converged_at = Some(Instant::now());
                if report.outcome == Outcome::Failed {
                    failed_runs = failed_runs.saturating_add(1);
                    let backoff = Duration::from_secs(1u64 << failed_runs.min(5)).min(check_in);
                    retry_at = Some(Instant::now() + backoff);
                } else {
                    failed_runs = 0;
                    retry_at = None;
                }
                let report = AgentReport {
                    version: config.version.clone(),
                    report,
                };
                current = Some(config);
                if let Err(e) = client.agent_report(&report).await {
                    pending_report = Some(report);
                    return Err(e.into());
                }
            }
            Ok(())
        }
        .await;
        let Err(error) = step else { continue };
        eprintln!("endstate agent: {error:#}");
        if session_refused(&error) {
            session = None;
        }
        failures = failures.saturating_add(1);
        // The server is away (or refused): keep converging what we have on
        // the check-in schedule, and try again after a backoff that grows
        // to the check-in delay, with full jitter so agents spread out (a
        // restarted server is not met by all of them at once).
        if let Some(config) = &current {
            if converged_at.is_none_or(|at| at.elapsed() >= check_in) {
                agent.converge(config, Duration::ZERO).await;
                converged_at = Some(Instant::now());
            }
        }
        let ceiling = Duration::from_secs(1u64 << failures.min(6)).min(check_in);
        let mut byte = [0u8; 2];
        getrandom_fill(&mut byte)?;
        let fraction = f64::from(u16::from_be_bytes(byte)) / f64::from(u16::MAX);
        tokio::time::sleep(ceiling.mul_f64(fraction).max(Duration::from_millis(100))).await;
        if failures >= 3 {
            session = None;
        }
    }
}

/// Dispatches `endstate agent`.
pub async fn run_command(command: crate::args::AgentCommand) -> Result<ExitCode> {
    let crate::args::AgentCommand::Agent {
        server,
        imds_endpoint,
        root,
        state_dir,
        once,
    } = command;
    run(AgentArgs {
        server,
        imds_endpoint,
        root,
        state_dir,
        once,
    })
    .await
}
