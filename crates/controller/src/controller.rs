//! The controller: one reconcile loop per group on the core's planner and
//! executor, an observer that reads the project's instances (paged, by tag),
//! their status checks and CPU, a health checker per group, scaling, and the
//! spec's file watch — all under one state lease held for the controller's
//! life, so `endstate apply` and the controller never act at once.
//!
//! Triggers of a group's reconcile: a spec change (file or API), an
//! observation that differs from the desired state, a health transition
//! (after a settle delay of one probe interval, so that failures detected
//! together are judged together by the brake), a scaling decision, the API
//! (resume), and a period. One reconcile per group at a time; errors back
//! off exponentially. Every action is recorded as an event with its reason.
//!
//! A group behind a load balancer has its targets registered in its
//! generation's target group and drained before they are terminated
//! ([`lb`]); when its live instances are of another generation than the
//! group's, its reconcile runs a rollout instead of the planner's plain
//! replacement ([`rollout`]).
//!
//! Not here: planning (`plan`), calling EC2 (`exec`, `provider`), the
//! health and scaling rules themselves (`health`, `scaling`), HTTP (`api`).

mod channels;
mod lb;
mod rollout;

pub use channels::ChannelHeads;

use rollout::LbPath;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use endstate_clock::SharedClock;
use endstate_exec::{observe_group, ApplyOptions, ExecError, Executor, Reporter, Session};
use endstate_health::{Checker, EventKind};
use endstate_model::{tags, Group, Spec};
use endstate_plan::{
    plan_with, Instance, InstanceState, Launch, LaunchReason, Observed, Phase, Plan, PlanOptions,
};
use endstate_provider::elbv2::LoadBalancing;
use endstate_provider::Provider;
use endstate_scaling::schedule::ScheduledAction;
use endstate_state::Store;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::agent::{AgentRefusal, AgentService, Placement};
use crate::api::types::{
    AgentConfig, AgentReport, AgentReportAccepted, AgentSessionRequest, AgentSessionResponse,
    NonceResponse,
};
use crate::events::{rfc3339_ms, EventLog, Record};
use crate::group::{with_desired, GroupRuntime, Persisted};
use crate::metrics::{Counters, Gauges, Samples};
use crate::view::*;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The controller's knobs (not part of the spec).
#[derive(Debug, Clone)]
pub struct Options {
    /// Every group is reconciled at least this often. Default 60 s.
    pub period: Duration,
    /// How often the project's instances, status checks and CPU are read.
    /// Default 5 s.
    pub observe_every: Duration,
    /// How often the spec file is checked for changes. Default 1 s.
    pub spec_poll: Duration,
    /// First and longest wait after a failed reconcile. Default 1 s, 60 s.
    pub backoff: (Duration, Duration),
    /// A metric sample older than this is ignored. Default 60 s.
    pub metric_freshness: Duration,
    /// Probes in flight at once, per group.
    pub probe_concurrency: usize,
    pub apply: ApplyOptions,
    pub plan: PlanOptions,
    /// How often a rollout looks at its targets, health and error rate.
    /// Default 1 s.
    pub rollout_poll: Duration,
    /// Allow plans that remove more than half of a group, or a whole group.
    pub allow_mass_terminate: bool,
    /// The cloud's Ed25519 public key that verifies the identity documents
    /// agents present (`endstate cloud status` prints it); `None`: agents
    /// are refused.
    pub agent_identity_key: Option<[u8; 32]>,
    /// Agents check in about this often (± 20%). Default 60 s.
    pub agent_check_in: Duration,
    /// The longest `GET /v1/agent/config` waits for a change. Default 30 s.
    pub agent_long_poll: Duration,
    /// Where the heads of image channels (`image: RECIPE@CHANNEL`) are
    /// read; `None` refuses a spec that names a channel.
    pub channel_heads: Option<Arc<dyn ChannelHeads>>,
    /// How often the channels' heads are read again. Default 30 s.
    pub channel_poll: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            period: Duration::from_secs(60),
            observe_every: Duration::from_secs(5),
            spec_poll: Duration::from_secs(1),
            backoff: (Duration::from_secs(1), Duration::from_secs(60)),
            metric_freshness: Duration::from_secs(60),
            probe_concurrency: 64,
            apply: ApplyOptions::default(),
            plan: PlanOptions::default(),
            rollout_poll: Duration::from_secs(1),
            allow_mass_terminate: false,
            agent_identity_key: None,
            agent_check_in: Duration::from_secs(60),
            agent_long_poll: Duration::from_secs(30),
            channel_heads: None,
            channel_poll: Duration::from_secs(30),
        }
    }
}

/// Where the spec comes from.
#[derive(Debug, Clone)]
pub struct SpecSource {
    /// The file watched for changes; `None` when the spec only comes
    /// through the API.
    pub path: Option<PathBuf>,
    pub environment: Option<String>,
}

/// What the controller is built from.
pub struct Parts {
    pub clock: SharedClock,
    /// The (governed) provider every call goes through.
    pub provider: Arc<dyn Provider>,
    /// ELBv2, for groups behind a load balancer; `None` when the spec has
    /// no load balancers (or the provider has no ELBv2: such groups get
    /// an event saying so).
    pub load_balancing: Option<Arc<dyn LoadBalancing>>,
    /// EC2 API calls by action so far (the governor's count), for `/metrics`.
    pub api_calls: Box<dyn Fn() -> BTreeMap<String, u64> + Send + Sync>,
    pub store: Arc<dyn Store>,
    /// The lease, held for the controller's life.
    pub session: Arc<Session>,
    pub spec: Spec,
    pub source: SpecSource,
    pub options: Options,
}

/// A running controller. [`Controller::shutdown`] stops it.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

struct SpecState {
    spec: Arc<Spec>,
    view: SpecView,
    schedules: BTreeMap<String, Vec<ScheduledAction>>,
    /// Content hash of the file as last read, to notice edits.
    file_digest: Option<u64>,
}

struct Inner {
    clock: SharedClock,
    provider: Arc<dyn Provider>,
    load_balancing: Option<Arc<dyn LoadBalancing>>,
    /// Each group's load balancer, target groups and weights, as ensured.
    lb_cache: Mutex<BTreeMap<String, lb::LbCache>>,
    api_calls: Box<dyn Fn() -> BTreeMap<String, u64> + Send + Sync>,
    store: Arc<dyn Store>,
    session: Arc<Session>,
    events: EventLog,
    samples: Samples,
    counters: Arc<Counters>,
    options: Options,
    source: SpecSource,
    spec: RwLock<SpecState>,
    groups: Mutex<BTreeMap<String, GroupRuntime>>,
    reconcile_seq: AtomicU64,
    status_supported: AtomicBool,
    utilization_supported: AtomicBool,
    /// Groups gone from the spec whose instances wait for consent.
    orphans_reported: Mutex<BTreeSet<String>>,
    stop: watch::Sender<bool>,
    /// The executor's cancel signal: turned on at shutdown, so launches in
    /// flight finish and nothing new starts.
    cancel: watch::Receiver<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    adopting: tokio::sync::Mutex<()>,
    /// The spec hash a submission allowed mass termination for (only that
    /// spec gets it).
    consent_for: Mutex<Option<String>>,
    /// Set when the lease was lost: everything stops.
    failed: Mutex<Option<String>>,
    /// Nonces, sessions and bindings of `endstate agent`s.
    agents: AgentService,
    /// Bumped whenever a new spec is in force, to wake agents' long polls.
    spec_generation: watch::Sender<u64>,
}

/// The error a controller stopped with.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("{0}")]
    Spec(String),
}

/// Schedules of every group, parsed (time zones read) once per spec.
fn schedules(spec: &Spec) -> Result<BTreeMap<String, Vec<ScheduledAction>>, String> {
    let mut all = BTreeMap::new();
    for group in &spec.groups {
        let mut actions = Vec::new();
        for config in &group.scaling.scheduled {
            let action = ScheduledAction::from_config(config).map_err(|e| {
                format!(
                    "group {}: scheduled action {}: {e}",
                    group.name, config.name
                )
            })?;
            actions.push(action);
        }
        all.insert(group.name.clone(), actions);
    }
    Ok(all)
}

fn spec_view(spec: &Spec, source: &str, at: Duration, reconcile_seq: u64) -> SpecView {
    SpecView {
        project: spec.project.clone(),
        environment: spec.environment.clone(),
        hash: spec.hash.clone(),
        source: source.to_string(),
        loaded_at: rfc3339_ms(i64::try_from(at.as_millis()).unwrap_or(i64::MAX)),
        groups: spec.groups.iter().map(|g| g.name.clone()).collect(),
        reconcile_seq,
    }
}

fn digest(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// Forwards the executor's launches and terminations to the reconcile that
/// runs it. (Throttle waits are the governor's to report: see
/// [`ThrottleCounter`].)
struct ReconcileReporter {
    done: mpsc::UnboundedSender<endstate_exec::Event>,
}

impl Reporter for ReconcileReporter {
    fn event(&self, event: &endstate_exec::Event) {
        match event {
            endstate_exec::Event::Launched { .. }
            | endstate_exec::Event::Terminated { .. }
            | endstate_exec::Event::FallingBack { .. } => {
                // The reconcile outlives its executor: sending cannot fail
                // while anyone reads, and nobody needs it after.
                let _ = self.done.send(event.clone());
            }
            _ => {}
        }
    }
}

/// Turns what the executor reports during one reconcile into events, each
/// with the plan's reason for it; counts what was launched and terminated.
struct ActionRecords<'p> {
    group: &'p str,
    reconcile: u64,
    /// Per zone, the plan's launch there.
    launches: BTreeMap<&'p str, &'p Launch>,
    /// Per instance, why the plan terminates it.
    terminations: BTreeMap<&'p str, String>,
    /// The unhealthy instances this reconcile replaces.
    replaces: Vec<&'p String>,
    launched: u32,
    terminated: u32,
}

impl<'p> ActionRecords<'p> {
    fn new(
        group: &'p str,
        reconcile: u64,
        plan: &'p Plan,
        verdicts: &'p endstate_plan::Verdicts,
    ) -> Self {
        let mut launches = BTreeMap::new();
        let mut terminations = BTreeMap::new();
        for phase in &plan.phases {
            match phase {
                Phase::Launch(list) => {
                    for launch in list {
                        launches.insert(launch.zone.as_str(), launch);
                    }
                }
                Phase::Terminate(list) => {
                    for t in list {
                        terminations.insert(t.instance_id.as_str(), t.reason.to_string());
                    }
                }
                Phase::Retag(_) => {}
            }
        }
        Self {
            group,
            reconcile,
            launches,
            terminations,
            replaces: verdicts.unhealthy.keys().collect(),
            launched: 0,
            terminated: 0,
        }
    }

    fn of(&mut self, event: &endstate_exec::Event) -> Vec<Record> {
        let (name, id) = (self.group, self.reconcile);
        match event {
            endstate_exec::Event::Launched { zone, ids, .. } => {
                self.launched += u32::try_from(ids.len()).unwrap_or(0);
                let reason = self.launches.get(zone.as_str()).map(|l| &l.reason);
                let replaces = &self.replaces;
                let (kind, text) =
                    match reason {
                        Some(LaunchReason::Replacement { outdated }) if !replaces.is_empty() => (
                            "replacement_launched",
                            format!(
                            "launched {} in {zone} to replace {} ({outdated} to replace in all)",
                            ids.len(),
                            replaces.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                        ),
                        Some(LaunchReason::Replacement { outdated }) => (
                            "replacement_launched",
                            format!(
                                "launched {} in {zone} to replace {outdated} outdated",
                                ids.len()
                            ),
                        ),
                        Some(LaunchReason::BelowDesired { live, desired }) => (
                            "launched",
                            format!(
                                "launched {} in {zone}: {live} live, {desired} desired",
                                ids.len()
                            ),
                        ),
                        None => ("launched", format!("launched {} in {zone}", ids.len())),
                    };
                vec![Record::new(name, kind, ids.join(","), text).with(
                    json!({ "reconcile": id, "ids": ids, "zone": zone, "replaces": replaces }),
                )]
            }
            endstate_exec::Event::Terminated { ids, .. } => {
                self.terminated += u32::try_from(ids.len()).unwrap_or(0);
                ids.iter()
                    .map(|instance| {
                        let reason = self
                            .terminations
                            .get(instance.as_str())
                            .cloned()
                            .unwrap_or_else(|| "terminated".into());
                        Record::new(name, "terminated", instance.clone(), reason)
                            .with(json!({ "reconcile": id }))
                    })
                    .collect()
            }
            endstate_exec::Event::FallingBack {
                from, to, reason, ..
            } => vec![Record::new(
                name,
                "capacity_fallback",
                name,
                format!("{from} → {to}: {reason}"),
            )
            .with(json!({ "reconcile": id }))],
            _ => Vec::new(),
        }
    }
}

/// The reporter the governor gets: counts throttles.
pub struct ThrottleCounter(pub Arc<Counters>);

impl Reporter for ThrottleCounter {
    fn event(&self, event: &endstate_exec::Event) {
        if let endstate_exec::Event::Throttled {
            action, by_server, ..
        } = event
        {
            self.0.throttled(action, *by_server);
        }
    }
}

impl Controller {
    /// The counters a governor's [`ThrottleCounter`] should feed; pass the
    /// same to [`Controller::start`] through [`Parts`]' reporter.
    pub fn counters() -> Arc<Counters> {
        Arc::new(Counters::default())
    }

    /// Resolves what earlier runs left open, restores each group's state,
    /// and starts every loop. Must run inside a tokio runtime.
    pub async fn start(parts: Parts, counters: Arc<Counters>) -> Result<Self, ControllerError> {
        let schedules = schedules(&parts.spec).map_err(ControllerError::Spec)?;
        let (stop, _) = watch::channel(false);
        let (cancel_tx, cancel) = watch::channel(false);
        let now = parts.clock.now();
        let file_digest = parts
            .source
            .path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .map(|b| digest(&b));
        let source_name = parts
            .source
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "api".into());
        let spec = Arc::new(parts.spec);
        let agent_key = parts.options.agent_identity_key;
        let agent_check_in = parts.options.agent_check_in;
        let agent_bindings: BTreeMap<String, String> = parts
            .session
            .group_states()
            .await
            .map_err(ControllerError::Exec)?
            .get(crate::agent::BINDINGS_STATE_KEY)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let inner = Arc::new(Inner {
            events: EventLog::new(Arc::clone(&parts.session), Arc::clone(&parts.clock)),
            clock: parts.clock,
            provider: parts.provider,
            load_balancing: parts.load_balancing,
            lb_cache: Mutex::new(BTreeMap::new()),
            api_calls: parts.api_calls,
            store: parts.store,
            session: parts.session,
            samples: Samples::default(),
            counters,
            options: parts.options,
            source: parts.source,
            spec: RwLock::new(SpecState {
                view: spec_view(&spec, &source_name, now, 0),
                spec: Arc::clone(&spec),
                schedules,
                file_digest,
            }),
            groups: Mutex::new(BTreeMap::new()),
            reconcile_seq: AtomicU64::new(0),
            status_supported: AtomicBool::new(true),
            utilization_supported: AtomicBool::new(true),
            orphans_reported: Mutex::new(BTreeSet::new()),
            stop,
            cancel,
            tasks: Mutex::new(Vec::new()),
            adopting: tokio::sync::Mutex::new(()),
            consent_for: Mutex::new(None),
            failed: Mutex::new(None),
            agents: AgentService::new(agent_key, agent_check_in, agent_bindings),
            spec_generation: watch::channel(0).0,
        });
        // Keep the cancel sender alive as long as the stop signal: shutdown
        // flips both.
        {
            let mut stop_rx = inner.stop.subscribe();
            tokio::spawn(async move {
                let _ = stop_rx.changed().await;
                let _ = cancel_tx.send(true);
            });
        }

        let executor = inner.executor(Arc::new(endstate_exec::Silent));
        let recovered = executor.recover(&inner.session, &spec).await?;
        inner
            .events
            .one(
                Record::new(
                    "",
                    "controller_started",
                    spec.hash.clone(),
                    format!(
                        "controller started for project {} ({} groups); {recovered} open intents of earlier runs resolved",
                        spec.project,
                        spec.groups.len()
                    ),
                )
                .with(json!({ "recovered": recovered, "environment": spec.environment })),
            )
            .await;

        let persisted = inner
            .session
            .group_states()
            .await
            .map_err(ControllerError::Exec)?;
        for group in &spec.groups {
            let state: Persisted = persisted
                .get(&group.name)
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            inner.add_group(group, state);
        }
        let controller = Self {
            inner: Arc::clone(&inner),
        };
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(Inner::observe_loop(Arc::clone(&inner))));
        tasks.push(tokio::spawn(Inner::watch_lease(Arc::clone(&inner))));
        if inner.source.path.is_some() {
            tasks.push(tokio::spawn(Inner::watch_spec(Arc::clone(&inner))));
        }
        if inner.options.channel_heads.is_some() {
            tasks.push(tokio::spawn(Inner::watch_channels(Arc::clone(&inner))));
        }
        lock(&inner.tasks).extend(tasks);
        Ok(controller)
    }

    /// The interface the HTTP API serves.
    pub fn api(&self) -> Arc<dyn ControllerApi> {
        Arc::new(self.clone())
    }

    /// Resolves when the controller stopped by itself (the lease lost):
    /// the reason.
    pub async fn failed(&self) -> String {
        let mut stop = self.inner.stop.subscribe();
        loop {
            if let Some(reason) = lock(&self.inner.failed).clone() {
                return reason;
            }
            if stop.changed().await.is_err() {
                return "stopped".into();
            }
        }
    }

    /// Stops every loop (a reconcile in flight finishes its calls and
    /// records them; no new launch starts) and the health checkers.
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.inner.tasks));
        for task in tasks {
            let _ = task.await;
        }
        let checkers: Vec<Checker> = lock(&self.inner.groups)
            .values_mut()
            .filter_map(|g| g.checker.take())
            .collect();
        for checker in checkers {
            checker.stop().await;
        }
        self.inner
            .events
            .one(Record::new(
                "",
                "controller_stopped",
                "",
                "controller stopped",
            ))
            .await;
    }
}

impl Inner {
    fn executor(&self, reporter: Arc<dyn Reporter>) -> Executor {
        Executor::new(
            Arc::clone(&self.provider),
            Arc::clone(&self.clock),
            reporter,
            self.options.apply,
            self.cancel.clone(),
        )
    }

    /// Mass termination was allowed: for the whole run (`--allow-mass-terminate`),
    /// or for the spec in force by its submission.
    fn consent_given(&self) -> bool {
        self.options.allow_mass_terminate
            || lock(&self.consent_for).as_deref() == Some(self.spec().hash.as_str())
    }

    /// How long an instance stays unhealthy before it is replaced, so that
    /// failures detected together reach the brake together: one probe
    /// interval, or one observation when only EC2's view judges.
    fn settle(&self, check: Option<&endstate_health::HealthCheck>) -> Duration {
        check
            .map(|c| c.interval())
            .unwrap_or(self.options.observe_every)
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn spec(&self) -> Arc<Spec> {
        Arc::clone(&self.spec.read().unwrap_or_else(|p| p.into_inner()).spec)
    }

    fn group_spec(&self, name: &str) -> Option<(Arc<Spec>, Group)> {
        let spec = self.spec();
        let group = spec.groups.iter().find(|g| g.name == name)?.clone();
        Some((spec, group))
    }

    fn trigger(&self, group: &str, why: &str) {
        if let Some(runtime) = lock(&self.groups).get_mut(group) {
            runtime.trigger(why);
        }
    }

    /// Adds a group's runtime, its checker, and its reconcile loop.
    fn add_group(self: &Arc<Self>, group: &Group, persisted: Persisted) {
        let mut runtime = GroupRuntime::new(group, persisted);
        runtime.checker = self.start_checker(group);
        runtime.triggers.push("start".into());
        let wake = Arc::clone(&runtime.wake);
        lock(&self.groups).insert(group.name.clone(), runtime);
        let task = tokio::spawn(Self::group_loop(Arc::clone(self), group.name.clone(), wake));
        lock(&self.tasks).push(task);
    }

    fn start_checker(self: &Arc<Self>, group: &Group) -> Option<Checker> {
        let check = group.health_check.clone()?;
        let (tx, rx) = mpsc::channel(1_024);
        match Checker::start(
            check,
            Vec::new(),
            Arc::clone(&self.clock),
            self.options.probe_concurrency,
            tx,
        ) {
            Ok(checker) => {
                let rounds = checker.rounds();
                let task = tokio::spawn(Self::health_events(
                    Arc::clone(self),
                    group.name.clone(),
                    rx,
                    rounds,
                ));
                lock(&self.tasks).push(task);
                Some(checker)
            }
            Err(error) => {
                tracing::error!(group = %group.name, %error, "cannot start the health checker");
                None
            }
        }
    }

    /// Persists a group's state under the lease.
    async fn persist(&self, group: &str) {
        let state = lock(&self.groups)
            .get(group)
            .map(|g| serde_json::to_value(&g.persisted).unwrap_or_default());
        if let Some(state) = state {
            if let Err(error) = self.session.put_group_state(group, state).await {
                self.fail(format!("cannot write group state: {error}"));
            }
        }
    }

    fn fail(&self, reason: String) {
        tracing::error!("{reason}");
        let mut failed = lock(&self.failed);
        if failed.is_none() {
            *failed = Some(reason);
        }
        self.stop.send_replace(true);
    }

    async fn group_loop(self: Arc<Self>, name: String, wake: Arc<tokio::sync::Notify>) {
        let mut stop = self.stop.subscribe();
        let mut backoff: Option<Duration> = None;
        let mut first = true;
        loop {
            if !first {
                match backoff {
                    // After an error, only the backoff ends the wait: the
                    // triggers that come meanwhile are kept for the retry.
                    Some(wait) => tokio::select! {
                        _ = stop.changed() => return,
                        () = self.clock.sleep(wait) => {
                            if let Some(runtime) = lock(&self.groups).get_mut(&name) {
                                runtime.triggers.push("retry".into());
                            }
                        }
                    },
                    None => tokio::select! {
                        _ = stop.changed() => return,
                        () = wake.notified() => {}
                        () = self.clock.sleep(self.options.period) => {
                            if let Some(runtime) = lock(&self.groups).get_mut(&name) {
                                runtime.triggers.push("period".into());
                            }
                        }
                    },
                }
            }
            first = false;
            if self.stopping() {
                return;
            }
            // This loop's group: not one removed and added again since,
            // which has a loop of its own.
            let mine = lock(&self.groups)
                .get(&name)
                .is_some_and(|g| !g.stopped && Arc::ptr_eq(&g.wake, &wake));
            if !mine {
                return;
            }
            match self.reconcile(&name).await {
                Ok(()) => backoff = None,
                Err(error) => {
                    if matches!(error, ExecError::LostLock) {
                        self.fail("the state lease was taken over by another run; the controller stopped acting".into());
                        return;
                    }
                    let next = backoff
                        .map(|b| (b * 2).min(self.options.backoff.1))
                        .unwrap_or(self.options.backoff.0);
                    self.events
                        .one(
                            Record::new(
                                name.clone(),
                                "reconcile_failed",
                                name.clone(),
                                format!(
                                    "reconcile failed: {error}; retrying in {} s",
                                    next.as_secs_f64()
                                ),
                            )
                            .with(json!({ "retry_in_seconds": next.as_secs_f64() })),
                        )
                        .await;
                    backoff = Some(next);
                }
            }
        }
    }

    /// One reconcile of one group: observe it, plan with the controller's
    /// verdicts, carry the plan out, record why.
    async fn reconcile(self: &Arc<Self>, name: &str) -> Result<(), ExecError> {
        let Some((spec, spec_group)) = self.group_spec(name) else {
            return Ok(());
        };
        let group = self.effective_group(name, &spec_group).await;
        let (triggers, paused) = {
            let mut groups = lock(&self.groups);
            let Some(runtime) = groups.get_mut(name) else {
                return Ok(());
            };
            (
                std::mem::take(&mut runtime.triggers),
                runtime.persisted.paused.clone(),
            )
        };
        if paused.is_some() {
            return Ok(());
        }
        let started = self.clock.now();
        let instances = observe_group(self.provider.as_ref(), &spec.project, name).await?;
        let now = self.clock.now();
        let settle = self.settle(group.health_check.as_ref());
        let (verdicts, desired, health_events) = {
            let mut groups = lock(&self.groups);
            let Some(runtime) = groups.get_mut(name) else {
                return Ok(());
            };
            let statuses = runtime.statuses.clone();
            // EC2's view reaches the brake before any replacement is chosen.
            let events = runtime.observe(&group, instances.clone(), &statuses, now);
            let (verdicts, desired) = runtime.verdicts(&group, now, settle);
            (verdicts, desired, events)
        };
        self.report_health(name, health_events, "ec2").await;

        let generations: BTreeMap<String, String> = instances
            .iter()
            .map(|i| (i.id.clone(), lb::generation_of(i).to_string()))
            .collect();
        let balanced = match self
            .load_balanced(name, &spec, &spec_group, &group, &instances)
            .await?
        {
            LbPath::Rollout => {
                let id = self.reconcile_seq.fetch_add(1, Ordering::SeqCst) + 1;
                let trigger = if triggers.is_empty() {
                    "period".to_string()
                } else {
                    triggers.join("; ")
                };
                self.finish_reconcile(name, id, started, &trigger, 0, 0, None);
                return Ok(());
            }
            LbPath::Plain(lb) => Some(lb),
            LbPath::None => None,
        };

        let sub = Arc::new(Spec {
            groups: vec![with_desired(&group, desired)],
            ..(*spec).clone()
        });
        let plan = plan_with(&sub, &Observed { instances }, &verdicts, &self.options.plan);
        let id = self.reconcile_seq.fetch_add(1, Ordering::SeqCst) + 1;
        let trigger = if triggers.is_empty() {
            "period".to_string()
        } else {
            triggers.join("; ")
        };
        if plan.is_empty() {
            self.finish_reconcile(name, id, started, &trigger, 0, 0, None);
            return Ok(());
        }
        // The blast-radius guard is for the spec's own numbers: a reduction
        // that scaling policies or scheduled actions (declared in the spec)
        // decided needs no further consent.
        let scaled = desired != group.capacity.desired;
        let consent: Vec<String> = plan
            .consent
            .iter()
            .filter(|c| {
                !(scaled && matches!(c, endstate_plan::ConsentNeeded::MassTerminate { .. }))
            })
            .map(|c| c.to_string())
            .collect();
        if !consent.is_empty() && !self.consent_given() {
            let reason = format!(
                "not acting: {} (submit the spec with allow_mass_terminate, or start serve with --allow-mass-terminate)",
                consent.join("; ")
            );
            let repeated = lock(&self.groups)
                .get_mut(name)
                .map(|g| g.last_consent.replace(reason.clone()) == Some(reason.clone()))
                .unwrap_or(false);
            if !repeated {
                self.events
                    .one(Record::new(name, "consent_needed", name, reason))
                    .await;
            }
            self.finish_reconcile(
                name,
                id,
                started,
                &trigger,
                0,
                0,
                Some("consent needed".into()),
            );
            return Ok(());
        }
        if let Some(runtime) = lock(&self.groups).get_mut(name) {
            runtime.last_consent = None;
        }

        let (launch_count, terminate_count, _) = plan.totals();
        self.events
            .one(
                Record::new(
                    name,
                    "reconcile_started",
                    name,
                    format!(
                        "reconcile {id} ({trigger}): launch {launch_count}, terminate {terminate_count}"
                    ),
                )
                .with(json!({
                    "reconcile": id,
                    "trigger": trigger,
                    "launch": launch_count,
                    "terminate": terminate_count,
                    "unhealthy": verdicts.unhealthy.keys().collect::<Vec<_>>(),
                    "retire": verdicts.retire.keys().collect::<Vec<_>>(),
                    "desired": desired,
                })),
            )
            .await;
        // Launches and terminations are recorded as the executor reports
        // them, while the plan runs: the event stream shows progress live.
        let (done, mut actions) = mpsc::unbounded_channel();
        let executor = self.executor(Arc::new(ReconcileReporter { done }));
        let apply = self.apply_draining(&executor, &sub, &plan, balanced.as_ref(), &generations);
        tokio::pin!(apply);
        let mut record = ActionRecords::new(name, id, &plan, &verdicts);
        let result = loop {
            tokio::select! {
                biased;
                Some(event) = actions.recv() => {
                    self.events.record(record.of(&event)).await;
                }
                result = &mut apply => break result,
            }
        };
        let mut rest = Vec::new();
        while let Ok(event) = actions.try_recv() {
            rest.extend(record.of(&event));
        }
        self.events.record(rest).await;
        let (launched, terminated) = (record.launched, record.terminated);
        let error = result.as_ref().err().map(|e| e.to_string());
        self.events
            .one(
                Record::new(
                    name,
                    "reconcile_finished",
                    name,
                    match &error {
                        None => format!("reconcile {id}: launched {launched}, terminated {terminated}"),
                        Some(e) => format!("reconcile {id} failed after launching {launched} and terminating {terminated}: {e}"),
                    },
                )
                .with(json!({ "reconcile": id, "launched": launched, "terminated": terminated, "error": error })),
            )
            .await;
        self.finish_reconcile(name, id, started, &trigger, launched, terminated, error);
        if launched > 0 && result.is_ok() {
            // The new instances run: probe them from now, not from the
            // observer's next read.
            let instances = observe_group(self.provider.as_ref(), &spec.project, name).await?;
            let now = self.clock.now();
            let events = match lock(&self.groups).get_mut(name) {
                Some(runtime) => {
                    let statuses = runtime.statuses.clone();
                    let events = runtime.observe(&group, instances.clone(), &statuses, now);
                    runtime.retarget(now);
                    events
                }
                None => Vec::new(),
            };
            self.report_health(name, events, "ec2").await;
            if let Some(lb) = &balanced {
                // The new instances serve behind the load balancer now.
                let generation = group.generation();
                let tg = self
                    .target_group(lb.as_ref(), &spec, &group, &generation)
                    .await?;
                self.register_running(lb.as_ref(), &tg, &generation, &instances)
                    .await?;
            }
        }
        result.map(|_| ())
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_reconcile(
        &self,
        name: &str,
        id: u64,
        started: Duration,
        trigger: &str,
        launched: u32,
        terminated: u32,
        error: Option<String>,
    ) {
        let now = self.clock.now();
        let took = now.saturating_sub(started);
        self.counters
            .reconciled(name, took.as_secs_f64(), error.is_none());
        if let Some(runtime) = lock(&self.groups).get_mut(name) {
            runtime.reconciles += 1;
            runtime.last_reconcile = Some(ReconcileView {
                id,
                at: rfc3339_ms(i64::try_from(now.as_millis()).unwrap_or(i64::MAX)),
                duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                trigger: trigger.to_string(),
                launched,
                terminated,
                error,
            });
        }
    }

    /// Takes a probe round's events in (the runtime feeds the brake) and
    /// reports them.
    async fn handle_health(self: &Arc<Self>, group: &str, events: Vec<endstate_health::Event>) {
        let absorbed = match lock(&self.groups).get_mut(group) {
            Some(runtime) => runtime.absorb(events, true),
            None => return,
        };
        self.report_health(group, absorbed, "probe").await;
    }

    /// Records health events already taken in (and the brake's), counts
    /// them, and schedules the reconcile that replaces what turned
    /// unhealthy, one settle delay (a probe interval) later.
    async fn report_health(
        self: &Arc<Self>,
        group: &str,
        events: Vec<endstate_health::Event>,
        source: &str,
    ) {
        if events.is_empty() {
            return;
        }
        let settle = self.settle(lock(&self.groups).get(group).and_then(|g| g.check.as_ref()));
        let mut records = Vec::new();
        let mut turned_unhealthy = Vec::new();
        for event in events {
            let data = match event.kind {
                EventKind::ProbeFailed => {
                    self.counters.probe_failed(group);
                    json!({ "source": source })
                }
                EventKind::InstanceHealthy => {
                    self.counters.health_transition(group, "healthy");
                    json!({ "source": source })
                }
                EventKind::InstanceUnhealthy => {
                    self.counters.health_transition(group, "unhealthy");
                    turned_unhealthy.push(event.subject.clone());
                    json!({ "source": source })
                }
                EventKind::ReplacementPaused | EventKind::ReplacementResumed => Value::Null,
            };
            records.push(
                Record::new(group, event.kind.as_str(), event.subject, event.reason).with(data),
            );
        }
        self.events.record(records).await;
        if !turned_unhealthy.is_empty() {
            let inner = Arc::clone(self);
            let group = group.to_string();
            let why = format!("health: {} unhealthy", turned_unhealthy.join(", "));
            self.spawn(async move {
                let mut stop = inner.stop.subscribe();
                tokio::select! {
                    _ = stop.changed() => {}
                    () = inner.clock.sleep(settle) => inner.trigger(&group, &why),
                }
            });
        }
    }

    /// Runs `task` until the controller stops; finished tasks are dropped
    /// from the list as new ones come.
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(tokio::spawn(task));
    }

    /// Takes a checker's events in, a probe round at a time (the rest of a
    /// round's events are collected before acting, so instances that fail
    /// together reach the brake together).
    async fn health_events(
        self: Arc<Self>,
        group: String,
        mut events: mpsc::Receiver<endstate_health::Event>,
        mut rounds: watch::Receiver<u64>,
    ) {
        let mut stop = self.stop.subscribe();
        loop {
            let first = tokio::select! {
                _ = stop.changed() => return,
                event = events.recv() => match event {
                    Some(event) => event,
                    None => return,
                },
            };
            let mut batch = vec![first];
            loop {
                tokio::select! {
                    biased;
                    event = events.recv() => match event {
                        Some(event) => batch.push(event),
                        None => break,
                    },
                    changed = rounds.changed() => {
                        if changed.is_err() { break; }
                        while let Ok(event) = events.try_recv() {
                            batch.push(event);
                        }
                        break;
                    }
                }
            }
            rounds.borrow_and_update();
            self.handle_health(&group, batch).await;
        }
    }

    /// Stops everything as soon as the heartbeat finds the lease taken
    /// over, whether or not a reconcile is under way.
    async fn watch_lease(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        loop {
            if self.session.lost_lock() {
                self.fail(
                    "the state lease was taken over by another run; the controller stopped acting"
                        .into(),
                );
                return;
            }
            tokio::select! {
                _ = stop.changed() => return,
                () = self.clock.sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn observe_loop(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        loop {
            if let Err(error) = self.observe_once().await {
                tracing::warn!(%error, "observing the project failed");
            }
            tokio::select! {
                _ = stop.changed() => return,
                () = self.clock.sleep(self.options.observe_every) => {}
            }
        }
    }

    /// Reads every instance of the project (paged, by tag), their status
    /// checks and CPU; updates each group's health, probes and scaling; and
    /// triggers the reconciles that the observation calls for.
    async fn observe_once(self: &Arc<Self>) -> Result<(), ExecError> {
        let spec = self.spec();
        let observed = endstate_exec::observe(self.provider.as_ref(), &spec.project).await?;
        let live_ids: Vec<String> = observed
            .instances
            .iter()
            .filter(|i| i.state.is_live())
            .map(|i| i.id.clone())
            .collect();
        let ours: BTreeSet<&str> = live_ids.iter().map(String::as_str).collect();
        let mut statuses = BTreeMap::new();
        if self.status_supported.load(Ordering::Relaxed) && !live_ids.is_empty() {
            // Up to 1,000 instances, by id in calls of 100; beyond, every
            // instance in pages of 1,000 (fewer calls), kept when ours.
            let batches: Vec<&[String]> = if live_ids.len() > 1_000 {
                vec![&[]]
            } else {
                live_ids.chunks(endstate_provider::STATUS_BATCH).collect()
            };
            for chunk in batches {
                match self.provider.describe_instance_status(chunk).await {
                    Ok(list) => {
                        for status in list {
                            if ours.contains(status.instance_id.as_str()) {
                                statuses.insert(status.instance_id, status.instance_status);
                            }
                        }
                    }
                    Err(error) if error.is_unsupported() => {
                        self.status_supported.store(false, Ordering::Relaxed);
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "DescribeInstanceStatus failed");
                        break;
                    }
                }
            }
        }
        let now = self.clock.now();
        let mut group_of: BTreeMap<&str, &str> = BTreeMap::new();
        for instance in &observed.instances {
            group_of.insert(
                instance.id.as_str(),
                instance.tag(tags::GROUP).unwrap_or(""),
            );
        }
        if self.utilization_supported.load(Ordering::Relaxed) && !live_ids.is_empty() {
            match self.provider.instance_utilization(&live_ids).await {
                Ok(list) => {
                    for sample in list {
                        if let Some(group) = group_of.get(sample.instance_id.as_str()) {
                            self.samples.put(
                                group,
                                "cpu",
                                Some(&sample.instance_id),
                                sample.cpu_utilization,
                                now,
                            );
                        }
                    }
                }
                Err(error) if error.is_unsupported() => {
                    self.utilization_supported.store(false, Ordering::Relaxed);
                }
                Err(error) => tracing::warn!(%error, "reading instance CPU failed"),
            }
        }

        self.prune_agent_bindings(&observed.instances).await;
        let mut by_group: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
        for instance in observed.instances {
            let group = instance.tag(tags::GROUP).unwrap_or("").to_string();
            by_group.entry(group).or_default().push(instance);
        }
        let schedules = self
            .spec
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .schedules
            .clone();
        for group in &spec.groups {
            let instances = by_group.remove(&group.name).unwrap_or_default();
            self.observe_group(group, instances, &statuses, &schedules, now)
                .await;
        }
        self.orphans(&spec, by_group).await?;
        Ok(())
    }

    /// Forgets the agent bindings of the instances that this complete
    /// observation of the project shows terminated, or does not show at
    /// all, and persists the bindings left: an instance id is bound only
    /// while the instance exists.
    async fn prune_agent_bindings(&self, observed: &[Instance]) {
        let existing: BTreeSet<&str> = observed
            .iter()
            .filter(|i| i.state != InstanceState::Terminated)
            .map(|i| i.id.as_str())
            .collect();
        let unbound = self
            .agents
            .prune_bindings(|instance| existing.contains(instance));
        if unbound.is_empty() {
            return;
        }
        if let Err(error) = self.persist_agent_bindings().await {
            // Kept in memory; the next pruning or binding persists them.
            tracing::warn!(%error, "persisting the pruned agent bindings failed");
        }
        let group_of: BTreeMap<&str, &str> = observed
            .iter()
            .map(|i| (i.id.as_str(), i.tag(tags::GROUP).unwrap_or("")))
            .collect();
        let records = unbound
            .into_iter()
            .map(|instance| {
                let (group, why) = match group_of.get(instance.as_str()) {
                    Some(group) => (group.to_string(), "terminated"),
                    None => (String::new(), "no longer observed"),
                };
                Record::new(
                    group,
                    "agent_unbound",
                    instance.clone(),
                    format!("instance {instance} is {why}: its agent binding is forgotten"),
                )
            })
            .collect();
        self.events.record(records).await;
    }

    /// Writes the agent bindings as they are now.
    async fn persist_agent_bindings(&self) -> Result<(), AgentRefusal> {
        self.agents
            .persist_bindings(|bindings| async move {
                let value = serde_json::to_value(&bindings)
                    .map_err(|e| AgentRefusal::Internal(format!("agent bindings: {e}")))?;
                self.session
                    .put_group_state(crate::agent::BINDINGS_STATE_KEY, value)
                    .await
                    .map_err(|e| AgentRefusal::Internal(format!("persisting agent bindings: {e}")))
            })
            .await
    }

    async fn observe_group(
        self: &Arc<Self>,
        group: &Group,
        instances: Vec<Instance>,
        statuses: &BTreeMap<String, String>,
        schedules: &BTreeMap<String, Vec<ScheduledAction>>,
        now: Duration,
    ) {
        let ids: BTreeSet<String> = instances.iter().map(|i| i.id.clone()).collect();
        self.samples.retain_instances(&group.name, &ids);
        let (health_events, activities, drift) = {
            let mut groups = lock(&self.groups);
            let Some(runtime) = groups.get_mut(&group.name) else {
                return;
            };
            let health_events = runtime.observe(group, instances, statuses, now);
            runtime.statuses = runtime
                .instances
                .iter()
                .filter_map(|i| statuses.get(&i.id).map(|s| (i.id.clone(), s.clone())))
                .collect();
            runtime.retarget(now);
            let empty = Vec::new();
            let actions = schedules.get(&group.name).unwrap_or(&empty);
            let activities = if runtime.persisted.paused.is_some() {
                Vec::new()
            } else {
                runtime.evaluate_scaling(
                    group,
                    actions,
                    &self.samples,
                    now,
                    self.options.metric_freshness,
                )
            };
            let live = u32::try_from(runtime.live().count()).unwrap_or(u32::MAX);
            let not_running = runtime.instances.iter().any(|i| !i.state.is_live());
            let drift = (live != runtime.capacity.desired || not_running).then(|| {
                format!(
                    "observed: {live} live, {} desired",
                    runtime.capacity.desired
                )
            });
            (health_events, activities, drift)
        };
        self.report_health(&group.name, health_events, "ec2").await;
        let scaled = activities.iter().any(|a| a.from != a.to);
        if !activities.is_empty() {
            // The new capacity is stored before any reconcile acts on it:
            // a controller killed during the scale-out resumes it.
            self.persist(&group.name).await;
            let records = activities
                .iter()
                .map(|activity| {
                    let kind = if activity.policy.starts_with("scheduled:") {
                        "scheduled_action"
                    } else {
                        "scaled"
                    };
                    Record::new(
                        group.name.clone(),
                        kind,
                        group.name.clone(),
                        activity.reason.clone(),
                    )
                    .with(json!({ "policy": activity.policy, "from": activity.from, "to": activity.to }))
                })
                .collect();
            self.events.record(records).await;
        }
        if let Some(runtime) = lock(&self.groups).get_mut(&group.name) {
            if let Some(drift) = drift {
                runtime.trigger(drift);
            }
            if scaled {
                runtime.trigger("scaling");
            }
        }
    }

    /// Instances of groups gone from the spec: terminated when consent was
    /// given, reported once otherwise.
    async fn orphans(
        self: &Arc<Self>,
        spec: &Spec,
        by_group: BTreeMap<String, Vec<Instance>>,
    ) -> Result<(), ExecError> {
        for (group, instances) in by_group {
            let live: Vec<String> = instances
                .iter()
                .filter(|i| !i.state.is_gone())
                .map(|i| i.id.clone())
                .collect();
            if live.is_empty() {
                continue;
            }
            if !self.consent_given() {
                if lock(&self.orphans_reported).insert(group.clone()) {
                    self.events
                        .one(Record::new(
                            group.clone(),
                            "consent_needed",
                            group.clone(),
                            format!(
                                "group {group} is not in the spec of project {} but has {} instances; not terminating them without consent (allow_mass_terminate)",
                                spec.project,
                                live.len()
                            ),
                        ))
                        .await;
                }
                continue;
            }
            let executor = self.executor(Arc::new(endstate_exec::Silent));
            for chunk in live.chunks(endstate_exec::MAX_BATCH as usize) {
                let ids = executor.terminate(&self.session, &group, chunk).await?;
                let records = ids
                    .into_iter()
                    .map(|id| {
                        Record::new(group.clone(), "terminated", id, "group is not in the spec")
                    })
                    .collect();
                self.events.record(records).await;
            }
        }
        Ok(())
    }

    async fn watch_spec(self: Arc<Self>) {
        let Some(path) = self.source.path.clone() else {
            return;
        };
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                () = self.clock.sleep(self.options.spec_poll) => {}
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let digest = digest(&bytes);
            let known = self
                .spec
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .file_digest;
            if known == Some(digest) {
                continue;
            }
            self.spec
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .file_digest = Some(digest);
            match endstate_model::load(&path, self.source.environment.as_deref()) {
                Ok(spec) => {
                    if let Err(error) = self.adopt(spec, &path.display().to_string()).await {
                        self.events
                            .one(Record::new(
                                "",
                                "spec_rejected",
                                path.display().to_string(),
                                error.to_string(),
                            ))
                            .await;
                    }
                }
                Err(diagnostics) => {
                    self.events
                        .one(Record::new(
                            "",
                            "spec_rejected",
                            path.display().to_string(),
                            format!("the changed spec does not validate; keeping the one in force:\n{diagnostics}"),
                        ))
                        .await;
                }
            }
        }
    }

    /// Puts a validated spec in force: new groups start, changed ones take
    /// their new settings, removed ones stop (their instances are then
    /// orphans); every group reconciles at once.
    async fn adopt(self: &Arc<Self>, spec: Spec, source: &str) -> Result<SpecView, ApiError> {
        // One adoption at a time (the file watch, the API and the image
        // channels' watch may race); the channels are resolved under it,
        // so that a head read earlier never puts an older image back.
        let _adopting = self.adopting.lock().await;
        self.adopt_held(spec, source).await
    }

    /// [`Inner::adopt`], the caller holding `adopting`.
    async fn adopt_held(self: &Arc<Self>, spec: Spec, source: &str) -> Result<SpecView, ApiError> {
        let spec = channels::resolve(spec, self.options.channel_heads.as_ref())
            .await
            .map_err(ApiError::Invalid)?;
        let current = self.spec();
        if spec.project == current.project {
            self.record_moved_channels(&current, &spec).await;
        }
        if spec.project != current.project {
            return Err(ApiError::Conflict(format!(
                "the spec is for project {}, this controller serves {}",
                spec.project, current.project
            )));
        }
        let schedules = schedules(&spec).map_err(ApiError::Invalid)?;
        if spec.hash == current.hash {
            return Ok(self
                .spec
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .view
                .clone());
        }
        let now = self.clock.now();
        let view = spec_view(
            &spec,
            source,
            now,
            self.reconcile_seq.load(Ordering::SeqCst),
        );
        let spec = Arc::new(spec);
        {
            let mut state = self.spec.write().unwrap_or_else(|p| p.into_inner());
            state.spec = Arc::clone(&spec);
            state.view = view.clone();
            state.schedules = schedules;
        }
        self.spec_generation.send_modify(|g| *g += 1);
        let mut restart = Vec::new();
        let mut retired = Vec::new();
        let mut added = Vec::new();
        {
            let mut groups = lock(&self.groups);
            for group in &spec.groups {
                match groups.get_mut(&group.name) {
                    Some(runtime) => {
                        if runtime.respec(group) {
                            retired.extend(runtime.checker.take());
                            restart.push(group.clone());
                        }
                    }
                    None => added.push(group.clone()),
                }
            }
            let names: BTreeSet<&str> = spec.groups.iter().map(|g| g.name.as_str()).collect();
            let removed: Vec<String> = groups
                .keys()
                .filter(|n| !names.contains(n.as_str()))
                .cloned()
                .collect();
            for name in removed {
                if let Some(mut runtime) = groups.remove(&name) {
                    runtime.stopped = true;
                    runtime.wake.notify_one();
                    retired.extend(runtime.checker.take());
                }
            }
        }
        for checker in retired {
            checker.stop().await;
        }
        for group in restart {
            let checker = self.start_checker(&group);
            if let Some(runtime) = lock(&self.groups).get_mut(&group.name) {
                runtime.checker = checker;
            }
        }
        for group in &added {
            self.add_group(group, Persisted::default());
        }
        lock(&self.orphans_reported).clear();
        self.events
            .one(
                Record::new("", "spec_loaded", spec.hash.clone(), format!("spec {} from {source} is in force", spec.hash))
                    .with(json!({ "groups": view.groups, "added": added.iter().map(|g| &g.name).collect::<Vec<_>>() })),
            )
            .await;
        for group in &spec.groups {
            self.persist(&group.name).await;
            self.trigger(&group.name, "spec");
        }
        Ok(view)
    }

    fn gauges(&self) -> Gauges {
        let mut gauges = Gauges {
            api_calls: (self.api_calls)(),
            ..Gauges::default()
        };
        for (name, runtime) in lock(&self.groups).iter() {
            gauges
                .desired
                .insert(name.clone(), runtime.capacity.desired);
            for instance in &runtime.instances {
                *gauges
                    .instances
                    .entry((name.clone(), instance.state.to_string()))
                    .or_default() += 1;
            }
            let view = runtime.view();
            for (health, count) in [
                ("healthy", view.healthy),
                ("unhealthy", view.unhealthy),
                ("initial", view.initial),
            ] {
                gauges
                    .health
                    .insert((name.clone(), health.to_string()), u64::from(count));
            }
        }
        gauges
    }
}

fn not_found(what: &str, name: &str) -> ApiError {
    ApiError::NotFound(format!("no {what} {name}"))
}

#[async_trait::async_trait]
impl ControllerApi for Controller {
    fn spec(&self) -> SpecView {
        self.inner
            .spec
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .view
            .clone()
    }

    fn groups(&self) -> Vec<GroupView> {
        lock(&self.inner.groups)
            .values()
            .map(|g| g.view())
            .collect()
    }

    fn group(&self, name: &str) -> Result<GroupView, ApiError> {
        lock(&self.inner.groups)
            .get(name)
            .map(|g| g.view())
            .ok_or_else(|| not_found("group", name))
    }

    fn instances(&self, group: Option<&str>) -> Result<Vec<InstanceView>, ApiError> {
        let groups = lock(&self.inner.groups);
        if let Some(name) = group {
            if !groups.contains_key(name) {
                return Err(not_found("group", name));
            }
        }
        let mut out = Vec::new();
        for (name, runtime) in groups.iter() {
            if group.is_some_and(|g| g != name) {
                continue;
            }
            for instance in &runtime.instances {
                let cpu = self.inner.samples.latest(name, "cpu", &instance.id);
                out.push(runtime.instance_view(instance, cpu));
            }
        }
        Ok(out)
    }

    async fn plan(&self, group: Option<&str>) -> Result<Plan, ApiError> {
        let spec = self.inner.spec();
        if let Some(name) = group {
            if !spec.groups.iter().any(|g| g.name == name) {
                return Err(not_found("group", name));
            }
        }
        let observed = endstate_exec::observe(self.inner.provider.as_ref(), &spec.project)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let now = self.inner.clock.now();
        let mut groups = Vec::new();
        let mut verdicts = endstate_plan::Verdicts::default();
        {
            let runtimes = lock(&self.inner.groups);
            for g in &spec.groups {
                if group.is_some_and(|name| name != g.name) {
                    continue;
                }
                match runtimes.get(&g.name) {
                    Some(runtime) => {
                        // What the controller works to: with a deploy's
                        // image or a rollback's pin.
                        let g = &crate::rollout::effective_group(
                            g,
                            runtime.persisted.deploy.as_ref(),
                            runtime.persisted.pin.as_ref(),
                        );
                        let settle = self.inner.settle(g.health_check.as_ref());
                        let (v, desired) = runtime.verdicts(g, now, settle);
                        verdicts.unhealthy.extend(v.unhealthy);
                        verdicts.retire.extend(v.retire);
                        groups.push(with_desired(g, desired));
                    }
                    None => groups.push(g.clone()),
                }
            }
        }
        let names: BTreeSet<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        let instances = observed
            .instances
            .into_iter()
            .filter(|i| group.is_none() || names.contains(i.tag(tags::GROUP).unwrap_or("")))
            .collect();
        let sub = Spec {
            load_balancers: Vec::new(),
            groups,
            ..(*spec).clone()
        };
        Ok(plan_with(
            &sub,
            &Observed { instances },
            &verdicts,
            &self.inner.options.plan,
        ))
    }

    fn events_after(
        &self,
        after: i64,
        limit: usize,
        group: Option<&str>,
    ) -> Result<Vec<EventView>, ApiError> {
        self.inner
            .store
            .events_after(after, limit, group)
            .map(|events| events.into_iter().map(crate::events::view).collect())
            .map_err(|e| ApiError::Internal(e.to_string()))
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<EventView> {
        self.inner.events.subscribe()
    }

    fn scaling_activity(&self, group: Option<&str>) -> Result<Vec<ScalingActivityView>, ApiError> {
        let groups = lock(&self.inner.groups);
        if let Some(name) = group {
            if !groups.contains_key(name) {
                return Err(not_found("group", name));
            }
        }
        let mut out: Vec<ScalingActivityView> = groups
            .iter()
            .filter(|(name, _)| group.is_none_or(|g| g == name.as_str()))
            .flat_map(|(_, g)| g.activity.iter().cloned())
            .collect();
        out.sort_by(|a, b| a.at.cmp(&b.at));
        Ok(out)
    }

    async fn pause(&self, group: &str, reason: &str) -> Result<GroupView, ApiError> {
        let reason = if reason.trim().is_empty() {
            "paused through the API".to_string()
        } else {
            reason.to_string()
        };
        {
            let mut groups = lock(&self.inner.groups);
            let runtime = groups
                .get_mut(group)
                .ok_or_else(|| not_found("group", group))?;
            runtime.persisted.paused = Some(reason.clone());
        }
        self.inner.persist(group).await;
        self.inner
            .events
            .one(Record::new(
                group,
                "group_paused",
                group,
                format!("paused: {reason}"),
            ))
            .await;
        self.group(group)
    }

    async fn resume(&self, group: &str) -> Result<GroupView, ApiError> {
        let now = self.inner.clock.now();
        let brake = {
            let mut groups = lock(&self.inner.groups);
            let runtime = groups
                .get_mut(group)
                .ok_or_else(|| not_found("group", group))?;
            runtime.persisted.paused = None;
            let brake = runtime.brake.resume(now);
            runtime.trigger("api: resume");
            brake
        };
        self.inner.persist(group).await;
        let mut records = vec![Record::new(
            group,
            "group_resumed",
            group,
            "resumed through the API",
        )];
        if let Some(event) = brake {
            records.push(Record::new(group, event.kind.as_str(), group, event.reason));
        }
        self.inner.events.record(records).await;
        self.group(group)
    }

    async fn submit_spec(&self, submission: SpecSubmission) -> Result<SpecView, ApiError> {
        let base_dir: PathBuf = self
            .inner
            .source
            .path
            .as_ref()
            .and_then(|p| p.parent())
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let file_name = PathBuf::from(submission.file_name.as_deref().unwrap_or("spec.yaml"));
        let environment = submission
            .environment
            .clone()
            .or_else(|| self.inner.source.environment.clone());
        let spec = endstate_model::load_str(
            &submission.yaml,
            &file_name,
            &base_dir,
            environment.as_deref(),
        )
        .map_err(|diagnostics| ApiError::Invalid(diagnostics.to_string()))?;
        if submission.allow_mass_terminate {
            *lock(&self.inner.consent_for) = Some(spec.hash.clone());
        }
        self.inner.adopt(spec, "api").await
    }

    async fn put_metrics(&self, samples: Vec<MetricSample>) -> Result<usize, ApiError> {
        let now = self.inner.clock.now();
        let groups: BTreeSet<String> = lock(&self.inner.groups).keys().cloned().collect();
        for sample in &samples {
            if !groups.contains(&sample.group) {
                return Err(not_found("group", &sample.group));
            }
            if !sample.value.is_finite() {
                return Err(ApiError::Invalid(format!(
                    "metric {} of group {}: value {} is not a finite number",
                    sample.metric, sample.group, sample.value
                )));
            }
            if sample.metric.is_empty() {
                return Err(ApiError::Invalid("a sample's metric name is empty".into()));
            }
        }
        for sample in &samples {
            self.inner.samples.put(
                &sample.group,
                &sample.metric,
                sample.instance.as_deref(),
                sample.value,
                now,
            );
        }
        Ok(samples.len())
    }

    async fn set_protection(
        &self,
        group: &str,
        instance: &str,
        protected: bool,
    ) -> Result<InstanceView, ApiError> {
        let view = {
            let mut groups = lock(&self.inner.groups);
            let runtime = groups
                .get_mut(group)
                .ok_or_else(|| not_found("group", group))?;
            let Some(found) = runtime.instances.iter().find(|i| i.id == instance).cloned() else {
                return Err(not_found(&format!("instance in group {group}:"), instance));
            };
            if protected {
                runtime.persisted.protected.insert(instance.to_string());
            } else {
                runtime.persisted.protected.remove(instance);
            }
            runtime.instance_view(&found, None)
        };
        self.inner.persist(group).await;
        self.inner
            .events
            .one(Record::new(
                group,
                "protection_changed",
                instance,
                if protected {
                    "protected from scale-in"
                } else {
                    "no longer protected from scale-in"
                },
            ))
            .await;
        Ok(view)
    }

    async fn deploy(&self, group: &str, image: &str) -> Result<RolloutView, ApiError> {
        self.inner.deploy(group, image).await
    }

    async fn rollback(&self, group: &str) -> Result<RolloutView, ApiError> {
        self.inner.rollback(group).await
    }

    fn rollout(&self, group: &str) -> Result<RolloutView, ApiError> {
        self.inner.rollout_view(group)
    }

    fn verify_token(&self, token: &str) -> bool {
        matches!(self.inner.store.verify_token(token), Ok(Some(_)))
    }

    fn prometheus(&self) -> String {
        self.inner.counters.exposition(&self.inner.gauges())
    }

    async fn agent_nonce(&self) -> Result<NonceResponse, AgentRefusal> {
        self.inner.agents.nonce(self.inner.clock.now())
    }

    async fn agent_session(
        &self,
        request: AgentSessionRequest,
    ) -> Result<AgentSessionResponse, AgentRefusal> {
        let inner = &self.inner;
        let instance = inner.agents.verify_proof(&request, inner.clock.now())?;
        let placement = inner.placement(&instance);
        let (session, bindings) =
            inner
                .agents
                .open_session(&instance, &request.agent_key, placement.as_ref())?;
        if bindings.is_some() {
            inner.persist_agent_bindings().await?;
            inner
                .events
                .one(Record::new(
                    session.group.clone(),
                    "agent_bound",
                    instance.clone(),
                    format!("instance {instance} bound to its agent on first use"),
                ))
                .await;
        }
        Ok(session)
    }

    async fn agent_config(
        &self,
        token: &str,
        after: Option<&str>,
    ) -> Result<AgentConfig, AgentRefusal> {
        let inner = &self.inner;
        let instance = inner.agents.instance_of(token)?;
        let mut generation = inner.spec_generation.subscribe();
        let deadline = tokio::time::Instant::now()
            + inner.agents.hold(&instance, inner.options.agent_long_poll);
        loop {
            generation.borrow_and_update();
            let config = inner.agent_config(&instance)?;
            if after != Some(config.version.as_str()) {
                return Ok(config);
            }
            tokio::select! {
                changed = generation.changed() => {
                    if changed.is_err() {
                        return Ok(config);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return Ok(config),
            }
        }
    }

    async fn agent_report(
        &self,
        token: &str,
        report: AgentReport,
    ) -> Result<AgentReportAccepted, AgentRefusal> {
        let inner = &self.inner;
        let instance = inner.agents.instance_of(token)?;
        let group = inner
            .placement(&instance)
            .map(|p| p.group)
            .unwrap_or_default();
        let resources = &report.report.resources;
        let changed = resources
            .iter()
            .filter(|r| r.status == endstate_config::report::Status::Changed)
            .count();
        let failed = resources
            .iter()
            .filter(|r| r.status == endstate_config::report::Status::Failed)
            .count();
        let ok = report.report.outcome == endstate_config::Outcome::Ok;
        let kind = if ok {
            "config_converged"
        } else {
            "config_failed"
        };
        let reason = if ok {
            format!(
                "instance {instance} converged configuration {}: {} resources, {changed} changed",
                report.version,
                resources.len()
            )
        } else {
            format!(
                "instance {instance} failed to converge configuration {}: {:?}, {failed} of {} resources failed",
                report.version,
                report.report.outcome,
                resources.len()
            )
        };
        inner
            .events
            .one(
                Record::new(group, kind, instance.clone(), reason).with(json!({
                    "version": report.version,
                    "resources": resources.len(),
                    "changed": changed,
                    "failed": failed,
                    "errors": report.report.errors.len(),
                    "duration_ms": report.report.duration_ms,
                })),
            )
            .await;
        Ok(AgentReportAccepted {
            recorded: kind.to_string(),
        })
    }
}

impl Inner {
    /// Where `instance` is, at the last observation.
    fn placement(&self, instance: &str) -> Option<Placement> {
        let spec = self.spec();
        let groups = lock(&self.groups);
        groups.iter().find_map(|(name, runtime)| {
            runtime
                .instances
                .iter()
                .find(|i| i.id == instance)
                .map(|i| Placement {
                    group: name.clone(),
                    state: i.state.as_str().to_string(),
                    has_roles: spec
                        .groups
                        .iter()
                        .any(|g| g.name == *name && !g.roles.is_empty()),
                })
        })
    }

    /// The configuration `instance` is served now; its sessions end when
    /// it may have none.
    fn agent_config(&self, instance: &str) -> Result<AgentConfig, AgentRefusal> {
        let placement = self.placement(instance);
        let placement = match crate::agent::admit(instance, placement.as_ref()) {
            Ok(placement) => placement.clone(),
            Err(refusal) => {
                // A session belongs to an instance that was observed in a
                // group with roles: one now refused, or gone, loses it.
                self.agents.end_sessions(instance);
                return Err(refusal);
            }
        };
        let (version, roles, redact) = crate::agent::group_roles(&self.spec(), &placement.group)?;
        Ok(AgentConfig {
            instance_id: instance.to_string(),
            check_in_seconds: self.agents.check_in(instance, &version).as_secs_f64(),
            group: placement.group,
            version,
            roles,
            redact,
        })
    }
}
