//! One function per command: resolve the arguments (read the spec, open the
//! state, build the governed EC2 client), call the libraries, print.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use endstate_clock::{SharedClock, SystemClock};
use endstate_exec::{
    observe, ApplyOptions, Executor, Governor, RateLimits, Reporter, RetryPolicy, Session, Silent,
};
use endstate_model::{tags, Spec};
use endstate_plan::{plan, InstanceState, Observed, Plan, PlanOptions, PLAN_VERSION};
use endstate_provider::ec2::{Ec2Client, Ec2Config};
use endstate_state::{RunKind, RunOutcome, SqliteStore, Store};
use serde_json::json;

use crate::args::{ApiArgs, Command, RateLimitMode, SpecArgs, StateArgs};
use crate::output::{render_plan, Progress};

/// How long a run's lease lasts without a heartbeat.
pub(crate) const LEASE: Duration = Duration::from_secs(60);

pub async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Init {
            path,
            project,
            force,
        } => init(&path, &project, force),
        Command::Validate { spec, json } => validate(&spec, json),
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&endstate_model::json_schema())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            spec,
            api,
            out,
            json,
        } => plan_command(&spec, &api, out.as_deref(), json).await,
        Command::Apply {
            plan,
            spec,
            state,
            api,
            allow_mass_terminate,
            json,
        } => {
            apply(
                plan.as_deref(),
                &spec,
                &state,
                &api,
                allow_mass_terminate,
                json,
            )
            .await
        }
        Command::Destroy {
            spec,
            state,
            api,
            yes,
            json,
        } => destroy(&spec, &state, &api, yes, json).await,
        Command::Status {
            spec,
            state,
            api,
            json,
        } => status(&spec, &state, &api, json).await,
        Command::Serve {
            spec,
            state,
            api,
            listen,
            period,
            observe_interval,
            allow_mass_terminate,
        } => {
            crate::serve::serve(crate::serve::ServeArgs {
                spec,
                state,
                api,
                listen,
                period,
                observe_interval,
                allow_mass_terminate,
            })
            .await
        }
        Command::Token {
            command,
            spec,
            state,
        } => crate::serve::token(command, &spec, &state).await,
        Command::Metric {
            command,
            spec,
            state,
        } => crate::serve::metric(command, &spec, &state).await,
        Command::Group {
            command,
            spec,
            state,
        } => crate::serve::group(command, &spec, &state).await,
        Command::Cloud { command } => crate::cloud::run(command).await,
        Command::Metadata { paths, json } => crate::cloud::metadata(&paths, json).await,
    }
}

fn init(path: &Path, project: &str, force: bool) -> Result<ExitCode> {
    if path.exists() && !force {
        bail!("{} exists; use --force to overwrite it", path.display());
    }
    std::fs::write(path, endstate_model::starter_spec(project))
        .with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}; next: endstate validate -f {0}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Loads the spec, or prints every diagnostic and fails.
pub(crate) fn load_spec(args: &SpecArgs) -> Result<Spec> {
    endstate_model::load(&args.file, args.environment.as_deref()).map_err(|diagnostics| {
        anyhow::anyhow!(
            "{diagnostics}\n{} error{} in the spec; nothing was done",
            diagnostics.len(),
            if diagnostics.len() == 1 { "" } else { "s" }
        )
    })
}

/// Loads the spec, then sets the image of each group that names a
/// `RECIPE@CHANNEL` to the channel's head (one DescribeImages; none when
/// no group names a channel).
pub(crate) async fn load_resolved_spec(args: &SpecArgs) -> Result<Spec> {
    let mut spec = load_spec(args)?;
    crate::bake_cmd::resolve_groups(&mut spec, &args.file).await?;
    Ok(spec)
}

fn validate(args: &SpecArgs, json: bool) -> Result<ExitCode> {
    match endstate_model::load(&args.file, args.environment.as_deref()) {
        Ok(spec) => {
            if json {
                println!(
                    "{}",
                    json!({ "valid": true, "errors": [], "spec_hash": spec.hash })
                );
            } else {
                let desired: u32 = spec.groups.iter().map(|g| g.capacity.desired).sum();
                println!(
                    "{}: valid ({} group{}, {desired} instances desired, environment {})",
                    args.file.display(),
                    spec.groups.len(),
                    if spec.groups.len() == 1 { "" } else { "s" },
                    spec.environment
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(diagnostics) => {
            if json {
                let errors: Vec<_> = diagnostics
                    .iter()
                    .map(|d| {
                        json!({
                            "file": d.file, "line": d.line, "column": d.column,
                            "message": d.message, "expected": d.expected,
                        })
                    })
                    .collect();
                println!("{}", json!({ "valid": false, "errors": errors }));
            } else {
                eprintln!("{diagnostics}");
                eprintln!("{} error(s)", diagnostics.len());
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The EC2 client for the spec's provider, not governed (starting the
/// built-in cloud for `provider: local` when it is not running).
pub(crate) async fn ec2_client(spec: &Spec, spec_file: &Path) -> Result<Ec2Client> {
    Ok(match &spec.provider {
        endstate_model::Provider::Aws {
            region,
            endpoint,
            profile,
        } => {
            let mut config = Ec2Config::new(region.clone());
            config.endpoint = endpoint.clone();
            config.profile = profile.clone();
            Ec2Client::new(config).await?
        }
        endstate_model::Provider::Local { region, dir } => {
            let base = spec_file.parent().unwrap_or(Path::new("."));
            let dir = crate::cloud::resolve_dir(None, dir.as_deref().map(|d| (base, d)))?;
            crate::cloud::ensure_running(&dir, region, true)?.client()?
        }
    })
}

/// The EC2 client for the spec's provider, wrapped in the governor.
pub(crate) async fn provider(
    spec: &Spec,
    spec_file: &Path,
    api: &ApiArgs,
    reporter: Arc<dyn Reporter>,
    clock: SharedClock,
) -> Result<Arc<Governor>> {
    let client = ec2_client(spec, spec_file).await?;
    let limits = match api.rate_limits {
        RateLimitMode::Ec2 => RateLimits::ec2_defaults(),
        RateLimitMode::Off => RateLimits::unlimited(),
    };
    Ok(Arc::new(Governor::new(
        Arc::new(client),
        clock,
        &limits,
        RetryPolicy::default(),
        reporter,
    )))
}

/// The ELBv2 client for the spec's provider, for the rollouts of
/// `endstate serve`; `None` when the spec declares no load balancers.
/// Not governed: rollouts make a few calls a second at most.
pub(crate) async fn load_balancing(
    spec: &Spec,
    spec_file: &Path,
) -> Result<Option<Arc<dyn endstate_provider::elbv2::LoadBalancing>>> {
    if spec.load_balancers.is_empty() {
        return Ok(None);
    }
    let client = match &spec.provider {
        endstate_model::Provider::Aws {
            region,
            endpoint,
            profile,
        } => {
            let mut config = Ec2Config::new(region.clone());
            config.endpoint = endpoint.clone();
            config.profile = profile.clone();
            endstate_provider::elbv2::Elbv2Client::new(config).await?
        }
        endstate_model::Provider::Local { region, dir } => {
            let base = spec_file.parent().unwrap_or(Path::new("."));
            let dir = crate::cloud::resolve_dir(None, dir.as_deref().map(|d| (base, d)))?;
            let cloud = crate::cloud::ensure_running(&dir, region, true)?;
            endstate_provider::elbv2::Elbv2Client::with_static_credentials(
                Ec2Config::new(cloud.info.region.clone()).with_endpoint(cloud.info.url.clone()),
                cloud.credentials.access_key_id.clone(),
                cloud.credentials.secret_access_key.clone(),
                None,
            )?
        }
    };
    Ok(Some(Arc::new(client)))
}

pub(crate) fn state_path(spec: &SpecArgs, state: &StateArgs) -> PathBuf {
    state.state.clone().unwrap_or_else(|| {
        spec.file
            .parent()
            .unwrap_or(Path::new("."))
            .join(".endstate")
            .join("state.db")
    })
}

pub(crate) fn open_store(path: &Path, clock: SharedClock) -> Result<Arc<dyn Store>> {
    let store = SqliteStore::open(path, clock)
        .with_context(|| format!("opening state {}", path.display()))?;
    Ok(Arc::new(store))
}

async fn plan_command(
    args: &SpecArgs,
    api: &ApiArgs,
    out: Option<&Path>,
    json: bool,
) -> Result<ExitCode> {
    let spec = load_resolved_spec(args).await?;
    let clock = SystemClock::shared();
    let provider = provider(&spec, &args.file, api, Arc::new(Silent), clock).await?;
    let observed = observe(provider.as_ref(), &spec.project).await?;
    let plan = plan(&spec, &observed, &PlanOptions::default());
    if let Some(out) = out {
        std::fs::write(out, serde_json::to_vec_pretty(&plan)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if json {
        let mut value = serde_json::to_value(&plan)?;
        value["api_calls"] = serde_json::to_value(provider.stats().calls)?;
        println!("{value}");
    } else {
        print!("{}", render_plan(&plan));
        if let Some(out) = out {
            println!("Saved to {}; run: endstate apply {0}", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_saved_plan(path: &Path) -> Result<Plan> {
    let bytes = std::fs::read(path).with_context(|| format!("reading plan {}", path.display()))?;
    let plan: Plan = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a saved endstate plan", path.display()))?;
    if plan.version != PLAN_VERSION {
        bail!(
            "{} is a version {} plan; this endstate reads version {PLAN_VERSION}",
            path.display(),
            plan.version
        );
    }
    Ok(plan)
}

/// A channel that turns true on Ctrl-C (SIGINT) or SIGTERM.
fn cancel_on_signals(reporter: Arc<dyn Reporter>) -> tokio::sync::watch::Receiver<bool> {
    let (sender, receiver) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        stop_signal().await;
        reporter.event(&endstate_exec::Event::Interrupted);
        let _ = sender.send(true);
    });
    receiver
}

/// Returns on the first Ctrl-C (SIGINT) or SIGTERM.
pub async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// What apply and destroy both work with: the governed client, the state
/// lock held for this run, an executor that stops on Ctrl-C, and progress.
struct Mutation {
    provider: Arc<Governor>,
    session: Session,
    executor: Executor,
    progress: Arc<Progress>,
}

/// Builds the client, takes the state lock for a run of `kind`, and wires
/// the executor to the signals and the progress display.
async fn begin_mutation(
    spec: &Spec,
    args: &SpecArgs,
    state: &StateArgs,
    api: &ApiArgs,
    json: bool,
    kind: RunKind,
) -> Result<Mutation> {
    let clock = SystemClock::shared();
    let progress = Arc::new(Progress::new(json));
    let reporter: Arc<dyn Reporter> = progress.clone();
    let provider = provider(
        spec,
        &args.file,
        api,
        Arc::clone(&reporter),
        Arc::clone(&clock),
    )
    .await?;
    let store = open_store(&state_path(args, state), Arc::clone(&clock))?;
    let session = Session::begin(
        store,
        Arc::clone(&clock),
        &format!("endstate {}", kind.as_str()),
        LEASE,
        kind,
        &spec.hash,
        &spec.environment,
    )
    .await?;
    let cancel = cancel_on_signals(Arc::clone(&reporter));
    let executor = Executor::new(
        provider.clone(),
        clock,
        reporter,
        ApplyOptions {
            poll_interval: Duration::from_secs_f64(api.poll_interval.max(0.05)),
            ..ApplyOptions::default()
        },
        cancel,
    );
    Ok(Mutation {
        provider,
        session,
        executor,
        progress,
    })
}

async fn apply(
    saved: Option<&Path>,
    args: &SpecArgs,
    state: &StateArgs,
    api: &ApiArgs,
    allow_mass_terminate: bool,
    json: bool,
) -> Result<ExitCode> {
    let spec = Arc::new(load_resolved_spec(args).await?);
    if crate::serve::running(&state_path(args, state)).is_some() {
        if saved.is_some() {
            bail!("endstate serve owns this project: it acts on specs, not saved plans; run `endstate apply` without a plan file to hand it the spec");
        }
        return crate::serve::hand_over(args, &state_path(args, state), allow_mass_terminate, json)
            .await;
    }
    let saved = saved.map(read_saved_plan).transpose()?;
    if let Some(saved) = &saved {
        if saved.spec_hash != spec.hash {
            bail!("the spec changed since this plan was made (hash {} now, {} in the plan); plan again", spec.hash, saved.spec_hash);
        }
    }
    let Mutation {
        provider,
        session,
        executor,
        progress,
    } = begin_mutation(&spec, args, state, api, json, RunKind::Apply).await?;
    let session = Arc::new(session);
    let result = async {
        let recovered = executor.recover(&session, &spec).await?;
        let observed = observe(provider.as_ref(), &spec.project).await?;
        let fresh = plan(&spec, &observed, &PlanOptions::default());
        let plan = match saved {
            Some(saved) => {
                if saved.observed_fingerprint != fresh.observed_fingerprint {
                    bail!("the instances changed since this plan was made; plan again");
                }
                saved
            }
            None => fresh,
        };
        if !plan.consent.is_empty() && !allow_mass_terminate {
            let reasons: Vec<String> = plan.consent.iter().map(|c| c.to_string()).collect();
            bail!(
                "refusing to apply without --allow-mass-terminate:\n  {}\nnothing was done",
                reasons.join("\n  ")
            );
        }
        if !json {
            print!("{}", render_plan(&plan));
        }
        let mut report = executor.apply(&session, &spec, &plan).await?;
        report.recovered = recovered;
        Ok((plan, report))
    }
    .await;
    progress.finish();
    let session = Arc::try_unwrap(session)
        .map_err(|_| anyhow::anyhow!("the apply session is still shared"))?;
    match result {
        Ok((plan, report)) => {
            let outcome = if report.interrupted {
                RunOutcome::Interrupted
            } else {
                RunOutcome::Succeeded
            };
            let summary = json!({ "report": report, "calls": provider.stats() });
            session.finish(outcome, summary.clone()).await?;
            if json {
                println!(
                    "{}",
                    json!({ "plan": plan, "report": report, "api": provider.stats() })
                );
            } else {
                println!(
                    "Applied: {} launched, {} terminated, {} retagged{}{}.",
                    report.launched.len(),
                    report.terminated.len(),
                    report.retagged,
                    if report.fallbacks > 0 {
                        format!(", {} capacity fallbacks", report.fallbacks)
                    } else {
                        String::new()
                    },
                    if report.interrupted {
                        " (interrupted: run apply again to finish)"
                    } else {
                        ""
                    }
                );
                if !report.failed_to_run.is_empty() {
                    println!(
                        "{} launched instances died before running; the next apply replaces them.",
                        report.failed_to_run.len()
                    );
                }
            }
            Ok(if report.interrupted {
                ExitCode::from(130)
            } else {
                ExitCode::SUCCESS
            })
        }
        Err(error) => {
            let _ = session
                .finish(
                    RunOutcome::Failed(format!("{error:#}")),
                    json!({ "calls": provider.stats() }),
                )
                .await;
            Err(error)
        }
    }
}

async fn destroy(
    args: &SpecArgs,
    state: &StateArgs,
    api: &ApiArgs,
    yes: bool,
    json: bool,
) -> Result<ExitCode> {
    let spec = Arc::new(load_spec(args)?);
    let Mutation {
        provider,
        session,
        executor,
        progress,
    } = begin_mutation(&spec, args, state, api, json, RunKind::Destroy).await?;
    let result = async {
        // A crashed apply's launch in flight must be found first, or it would leak.
        executor.recover(&session, &spec).await?;
        let observed = observe(provider.as_ref(), &spec.project).await?;
        let live: Vec<_> = observed.instances.iter().filter(|i| !i.state.is_gone()).collect();
        if live.is_empty() {
            return Ok(Vec::new());
        }
        if !yes {
            use std::io::{BufRead, IsTerminal, Write};
            if !std::io::stdin().is_terminal() {
                bail!("destroy would terminate {} instances of project {}; pass --yes to confirm (no terminal to ask)", live.len(), spec.project);
            }
            print!("Terminate all {} instances of project {}? Type the project name to confirm: ", live.len(), spec.project);
            std::io::stdout().flush()?;
            let mut answer = String::new();
            std::io::stdin().lock().read_line(&mut answer)?;
            if answer.trim() != spec.project {
                bail!("not confirmed; nothing was done");
            }
        }
        let mut by_group: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for instance in live {
            by_group
                .entry(instance.tag(tags::GROUP).unwrap_or("").to_string())
                .or_default()
                .push(instance.id.clone());
        }
        let mut terminated = Vec::new();
        for (group, ids) in by_group {
            for chunk in ids.chunks(endstate_exec::MAX_BATCH as usize) {
                terminated.extend(executor.terminate(&session, &group, chunk).await?);
            }
        }
        Ok(terminated)
    }
    .await;
    progress.finish();
    match result {
        Ok(terminated) => {
            session
                .finish(
                    RunOutcome::Succeeded,
                    json!({ "terminated": terminated.len() }),
                )
                .await?;
            if json {
                println!(
                    "{}",
                    json!({ "terminated": terminated, "api": provider.stats() })
                );
            } else {
                println!("Destroyed: {} instances terminated.", terminated.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            let _ = session
                .finish(RunOutcome::Failed(format!("{error:#}")), json!({}))
                .await;
            Err(error)
        }
    }
}

async fn status(args: &SpecArgs, state: &StateArgs, api: &ApiArgs, json: bool) -> Result<ExitCode> {
    let spec = load_resolved_spec(args).await?;
    let clock = SystemClock::shared();
    let provider = provider(&spec, &args.file, api, Arc::new(Silent), Arc::clone(&clock)).await?;
    let observed: Observed = observe(provider.as_ref(), &spec.project).await?;
    let path = state_path(args, state);
    let lock = if path.exists() {
        open_store(&path, clock)?.lock_info()?
    } else {
        None
    };
    let mut groups: Vec<String> = spec.groups.iter().map(|g| g.name.clone()).collect();
    for instance in &observed.instances {
        let group = instance.tag(tags::GROUP).unwrap_or("").to_string();
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    let rows: Vec<serde_json::Value> = groups
        .iter()
        .map(|name| {
            let desired = spec
                .groups
                .iter()
                .find(|g| &g.name == name)
                .map(|g| g.capacity.desired);
            let members: Vec<_> = observed
                .instances
                .iter()
                .filter(|i| i.tag(tags::GROUP) == Some(name.as_str()))
                .collect();
            let count = |s: InstanceState| members.iter().filter(|i| i.state == s).count();
            let running = count(InstanceState::Running);
            let pending = count(InstanceState::Pending);
            json!({
                "group": name,
                "desired": desired,
                "pending": pending,
                "running": running,
                "other": members.len() - running - pending,
                "instances": members.iter().map(|i| json!({
                    "id": i.id, "zone": i.zone, "state": i.state, "type": i.instance_type,
                    "image": i.image_id, "launch_time": i.launch_time, "address": i.private_ip,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    if json {
        println!(
            "{}",
            json!({ "project": spec.project, "environment": spec.environment, "groups": rows, "lock": lock })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "project {} (environment {})",
        spec.project, spec.environment
    );
    println!(
        "{:<20} {:>8} {:>8} {:>8} {:>8}",
        "GROUP", "DESIRED", "PENDING", "RUNNING", "OTHER"
    );
    for row in &rows {
        println!(
            "{:<20} {:>8} {:>8} {:>8} {:>8}",
            row["group"].as_str().unwrap_or(""),
            row["desired"]
                .as_u64()
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".into()),
            row["pending"].to_string(),
            row["running"].to_string(),
            row["other"].to_string()
        );
    }
    let now = clock_now_secs();
    for row in &rows {
        for instance in row["instances"].as_array().into_iter().flatten() {
            println!(
                "  {} {:<20} {:<12} {:<14} {:<15} age {}",
                instance["id"].as_str().unwrap_or(""),
                instance["zone"].as_str().unwrap_or(""),
                instance["state"].as_str().unwrap_or(""),
                instance["type"].as_str().unwrap_or(""),
                instance["address"].as_str().unwrap_or("-"),
                age(instance["launch_time"].as_str().unwrap_or(""), now)
            );
        }
    }
    if let Some(lock) = lock {
        println!(
            "state lock held by {} (pid {} on {})",
            lock.holder.name, lock.holder.pid, lock.holder.host
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn clock_now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// "3m", "2h", "5d" since an RFC 3339 launch time.
fn age(launch_time: &str, now: i64) -> String {
    let Ok(at) =
        time::OffsetDateTime::parse(launch_time, &time::format_description::well_known::Rfc3339)
    else {
        return "?".into();
    };
    let secs = (now - at.unix_timestamp()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
