//! `endstate serve` (the controller and its HTTP API), the commands that
//! talk to a running controller (`metric put`, `group pause|resume`, and
//! `apply` handing a spec over), and `endstate token`.
//!
//! A running controller is found through `serve.json` beside the state
//! (its URL and PID); the API token through `ENDSTATE_API_TOKEN`, else the
//! `api-token` file the controller wrote at its first start (mode 0600).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use endstate_clock::SystemClock;
use endstate_controller::client::Client;
use endstate_controller::view::{MetricSample, SpecSubmission};
use endstate_controller::{Controller, Options, Parts, SpecSource, ThrottleCounter};
use endstate_exec::{ApplyOptions, Reporter, Session};
use endstate_model::Spec;
use endstate_state::{RunKind, RunOutcome, StateError, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::args::{ApiArgs, GroupCommand, MetricCommand, SpecArgs, StateArgs, TokenCommand};
use crate::cloud::write_private;
use crate::commands::{load_balancing, open_store, provider, state_path, stop_signal, LEASE};

/// What a running controller writes beside the state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeInfo {
    pub url: String,
    pub pid: u32,
    pub project: String,
}

fn serve_info_path(state: &Path) -> PathBuf {
    state.with_file_name("serve.json")
}

fn token_path(state: &Path) -> PathBuf {
    state.with_file_name("api-token")
}

/// The running controller for this state, if any: `serve.json` names a
/// process that is alive.
pub fn running(state: &Path) -> Option<ServeInfo> {
    let bytes = std::fs::read(serve_info_path(state)).ok()?;
    let info: ServeInfo = serde_json::from_slice(&bytes).ok()?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(info.pid).ok()?);
    nix::sys::signal::kill(pid, None).ok()?;
    Some(info)
}

fn client_for(state: &Path) -> Result<Client> {
    let Some(info) = running(state) else {
        bail!(
            "no endstate serve is running for the state {} (no live serve.json beside it)",
            state.display()
        );
    };
    client_of(info, state)
}

/// A client of the running controller `info` describes, with the token
/// from `ENDSTATE_API_TOKEN` or the state's `api-token` file.
pub(crate) fn client_of(info: ServeInfo, state: &Path) -> Result<Client> {
    let token = match std::env::var("ENDSTATE_API_TOKEN") {
        Ok(token) if !token.is_empty() => token,
        _ => std::fs::read_to_string(token_path(state))
            .with_context(|| {
                format!(
                    "no API token: set ENDSTATE_API_TOKEN, or run as the user who started serve ({} is theirs)",
                    token_path(state).display()
                )
            })?
            .trim()
            .to_string(),
    };
    Ok(Client::new(info.url, token))
}

fn seconds(value: f64, name: &str) -> Result<Duration> {
    if !(value.is_finite() && value > 0.0) {
        bail!("--{name} must be a positive number of seconds, not {value}");
    }
    Ok(Duration::from_secs_f64(value))
}

pub struct ServeArgs {
    pub spec: SpecArgs,
    pub state: StateArgs,
    pub api: ApiArgs,
    pub listen: String,
    pub period: f64,
    pub observe_interval: f64,
    pub allow_mass_terminate: bool,
}

pub async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let listen: std::net::SocketAddr = args
        .listen
        .parse()
        .with_context(|| format!("--listen {}: not an address:port", args.listen))?;
    if !listen.ip().is_loopback() {
        bail!("--listen {listen}: the API binds loopback addresses only (127.0.0.0/8, ::1)");
    }
    let options = Options {
        period: seconds(args.period, "period")?,
        observe_every: seconds(args.observe_interval, "observe-interval")?,
        allow_mass_terminate: args.allow_mass_terminate,
        apply: ApplyOptions {
            poll_interval: Duration::from_secs_f64(args.api.poll_interval.max(0.05)),
            ..ApplyOptions::default()
        },
        ..Options::default()
    };
    let spec: Spec = crate::commands::load_resolved_spec(&args.spec).await?;
    let clock = SystemClock::shared();
    let counters = Controller::counters();
    let reporter: Arc<dyn Reporter> = Arc::new(ThrottleCounter(Arc::clone(&counters)));
    let governor = provider(
        &spec,
        &args.spec.file,
        &args.api,
        reporter,
        Arc::clone(&clock),
    )
    .await?;
    let load_balancing = load_balancing(&spec, &args.spec.file).await?;
    // `endstate agent`s are verified with the cloud's identity key.
    let options = Options {
        agent_identity_key: crate::agent::identity_key(&spec, &args.spec.file)?,
        agent_check_in: crate::agent::check_in_override()?.unwrap_or(options.agent_check_in),
        channel_heads: Some(Arc::new(
            crate::bake_cmd::catalog_heads(&spec, &args.spec.file).await?,
        )),
        channel_poll: crate::bake_cmd::channel_poll_override()?.unwrap_or(options.channel_poll),
        ..options
    };
    let state = state_path(&args.spec, &args.state);
    let store = open_store(&state, Arc::clone(&clock))?;
    let session = match Session::begin(
        Arc::clone(&store),
        Arc::clone(&clock),
        "endstate serve",
        LEASE,
        RunKind::Serve,
        &spec.hash,
        &spec.environment,
    )
    .await
    {
        Ok(session) => Arc::new(session),
        Err(endstate_exec::ExecError::State(locked @ StateError::Locked { .. })) => {
            bail!("{locked} (state {}); one writer at a time", state.display())
        }
        Err(error) => return Err(error.into()),
    };
    let first_token = {
        let store = Arc::clone(&store);
        tokio::task::spawn_blocking(move || -> Result<Option<String>> {
            if store.token_count()? > 0 {
                return Ok(None);
            }
            let (_, token) = store.create_token("initial")?;
            Ok(Some(token))
        })
        .await??
    };
    if let Some(token) = &first_token {
        write_private(&token_path(&state), format!("{token}\n").as_bytes())?;
        eprintln!(
            "Created the first API token; it is in {} (readable by you only). More: endstate token create NAME",
            token_path(&state).display()
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the API to {listen}"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let calls = Arc::clone(&governor);
    let controller = Controller::start(
        Parts {
            clock,
            provider: governor,
            load_balancing,
            api_calls: Box::new(move || calls.stats().calls),
            store,
            session: Arc::clone(&session),
            source: SpecSource {
                path: Some(args.spec.file.clone()),
                environment: args.spec.environment.clone(),
            },
            spec: spec.clone(),
            options,
        },
        counters,
    )
    .await?;
    let info = ServeInfo {
        url: url.clone(),
        pid: std::process::id(),
        project: spec.project.clone(),
    };
    write_private(&serve_info_path(&state), &serde_json::to_vec_pretty(&info)?)?;
    println!(
        "endstate serve: project {} ({} groups), API at {url}",
        spec.project,
        spec.groups.len()
    );
    let watched = controller.clone();
    let (why_tx, why_rx) = tokio::sync::oneshot::channel::<Option<String>>();
    let shutdown = async move {
        let why = tokio::select! {
            () = stop_signal() => None,
            reason = watched.failed() => Some(reason),
        };
        let _ = why_tx.send(why);
    };
    endstate_controller::api::serve(listener, controller.api(), shutdown).await?;
    let failed = why_rx.await.ok().flatten();
    controller.shutdown().await;
    // The controller's tasks have ended; this was the last handle on the
    // session besides ours.
    drop(controller);
    let give_up = tokio::time::Instant::now() + Duration::from_secs(5);
    let _ = std::fs::remove_file(serve_info_path(&state));
    // A task that began as the controller stopped may hold it a moment longer.
    let mut session = session;
    let session = loop {
        match Arc::try_unwrap(session) {
            Ok(session) => break session,
            Err(shared) => {
                session = shared;
                if tokio::time::Instant::now() > give_up {
                    bail!("the controller's session is still shared; its lock expires by itself");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    match failed {
        None => {
            session.finish(RunOutcome::Succeeded, json!({})).await?;
            println!("endstate serve: stopped");
            Ok(ExitCode::SUCCESS)
        }
        Some(reason) => {
            let _ = session
                .finish(RunOutcome::Failed(reason.clone()), json!({}))
                .await;
            bail!("endstate serve stopped: {reason}")
        }
    }
}

/// `endstate apply` while a controller owns the project: hands it the
/// spec, then follows its events until every group is as desired.
pub async fn hand_over(
    args: &SpecArgs,
    state: &Path,
    allow_mass_terminate: bool,
    json_output: bool,
) -> Result<ExitCode> {
    let client = client_for(state)?;
    let yaml = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let last = latest_seq(&client).await?;
    // Progress counts only from reconciles that start after the hand-over.
    let view = client
        .submit_spec(&SpecSubmission {
            yaml,
            environment: args.environment.clone(),
            file_name: Some(args.file.display().to_string()),
            allow_mass_terminate,
        })
        .await
        .map_err(|e| anyhow::anyhow!("the controller refused the spec: {e}"))?;
    // Progress counts only from reconciles planned with this spec.
    let before = view.reconcile_seq;
    if !json_output {
        println!(
            "A controller runs for project {}; handed it spec {} and following its progress.",
            view.project, view.hash
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(900);
    let mut seen = last;
    loop {
        let events = client.events_after(seen, 1_000, None).await?;
        for event in &events {
            seen = seen.max(event.seq);
            if json_output {
                println!("{}", serde_json::to_string(event)?);
            } else if event.kind != "probe_failed" {
                println!("  {} {:<22} {}", event.group, event.kind, event.reason);
            }
        }
        let groups = client.groups().await?;
        let converged = groups.iter().all(|g| {
            g.live == g.desired
                && g.unhealthy == 0
                && g.last_reconcile.as_ref().is_some_and(|r| {
                    r.id > before && r.error.is_none() && r.launched == 0 && r.terminated == 0
                })
                && !g.paused
        });
        if converged && events.is_empty() {
            if !json_output {
                println!("Converged: {} groups as desired.", groups.len());
            }
            return Ok(ExitCode::SUCCESS);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the controller has not converged after 15 minutes; follow it with its API (GET /v1/groups)");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The sequence number of the newest event: progress counts from after it.
pub(crate) async fn latest_seq(client: &Client) -> Result<i64> {
    let mut after = 0;
    loop {
        let page = client.events_after(after, 1_000, None).await?;
        match page.last() {
            Some(event) => after = event.seq,
            None => return Ok(after),
        }
    }
}

pub async fn metric(
    command: MetricCommand,
    spec: &SpecArgs,
    state: &StateArgs,
) -> Result<ExitCode> {
    let client = client_for(&state_path(spec, state))?;
    match command {
        MetricCommand::Put {
            group,
            metric,
            value,
            instance,
        } => {
            let accepted = client
                .put_metrics(&[MetricSample {
                    group,
                    instance,
                    metric,
                    value,
                }])
                .await?;
            println!("accepted {accepted} sample");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn group(command: GroupCommand, spec: &SpecArgs, state: &StateArgs) -> Result<ExitCode> {
    let client = client_for(&state_path(spec, state))?;
    let view = match command {
        GroupCommand::Pause { group, reason } => client.pause(&group, Some(&reason)).await?,
        GroupCommand::Resume { group } => client.resume(&group).await?,
    };
    println!(
        "group {}: {}; {} live of {} desired ({} healthy, {} unhealthy)",
        view.name,
        if view.paused { "paused" } else { "active" },
        view.live,
        view.desired,
        view.healthy,
        view.unhealthy
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn token(command: TokenCommand, spec: &SpecArgs, state: &StateArgs) -> Result<ExitCode> {
    let path = state_path(spec, state);
    let store: Arc<dyn Store> = open_store(&path, SystemClock::shared())?;
    match command {
        TokenCommand::Create { name, json } => {
            let (info, token) = store.create_token(&name)?;
            if json {
                println!(
                    "{}",
                    json!({ "id": info.id, "name": info.name, "token": token })
                );
            } else {
                println!("{token}");
                eprintln!(
                    "token {} ({}) created; it is shown only now",
                    info.id, info.name
                );
            }
        }
        TokenCommand::List { json } => {
            let tokens = store.list_tokens()?;
            if json {
                println!("{}", serde_json::to_string(&tokens)?);
            } else {
                for t in tokens {
                    println!(
                        "{:>4}  {:<20} {}",
                        t.id,
                        t.name,
                        if t.revoked { "revoked" } else { "active" }
                    );
                }
            }
        }
        TokenCommand::Revoke { id } => {
            if store.revoke_token(id)? {
                println!("token {id} revoked");
            } else {
                bail!("no token {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
