//! The rollout driver: runs a group's rollout inside its reconcile loop
//! (so the rollout is the one owner of the group's capacity while it runs:
//! healing and scaling only record meanwhile), one persisted phase after
//! another — blue-green (launch beside, wait healthy, canary weights,
//! switch, watch, keep the old, scale it down) or rolling (batches within
//! max surge and max unavailable) — and the rollback when the new
//! generation fails its health checks or its error rate.
//!
//! Every step is idempotent and re-reads the world first: a restarted
//! controller resumes from the persisted [`RolloutRecord`], launches only
//! what is missing, registers everything again and sets the weights again.
//! Launches go through the executor (journaled, ClientTokens);
//! terminations through its journaled `terminate`, after the targets were
//! drained. The pure decisions live in [`crate::rollout`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use endstate_exec::{observe_group, ExecError};
use endstate_model::rollout::{Rollout, Strategy};
use endstate_model::{Group, Spec};
use endstate_plan::{BudgetLimits, Instance, LaunchReason, Phase, Plan, PLAN_VERSION};
use endstate_provider::elbv2::LoadBalancing;
use serde_json::{json, Value};

use super::lb::{generation_of, LbCache};
use super::{lock, Inner};
use crate::events::Record;
use crate::group::with_desired;
use crate::rollout::{
    balanced_launches, effective_group, error_rate_exceeded, requested_group, rolling_limits,
    rolling_step, strategy_name, weights_by_count, LaunchSettings, Pin, RollingStep, RolloutPhase,
    RolloutRecord, Settled,
};
use crate::view::{ApiError, RolloutView};

/// How a step of the driver ended.
enum Flow {
    /// The record moved on: run the next phase.
    Next,
    /// The controller is stopping: the record is persisted, resume later.
    Stopped,
    /// The rollout (or its rollback) is over.
    Finished,
}

/// A failed check of the new generation.
type Failure = String;

/// One rollout run: what it works with.
pub(super) struct Run {
    pub inner: Arc<Inner>,
    pub lb: Arc<dyn LoadBalancing>,
    pub name: String,
    pub spec: Arc<Spec>,
    /// The effective group (capacity, zones, health, rollout config).
    pub group: Group,
    pub config: Rollout,
    pub record: RolloutRecord,
    pub cache: LbCache,
    /// The generation asked for now (for the pin after a rollback).
    pub requested: String,
}

fn ms(at: Duration) -> i64 {
    i64::try_from(at.as_millis()).unwrap_or(i64::MAX)
}

impl Run {
    fn now(&self) -> Duration {
        self.inner.clock.now()
    }

    fn new_group(&self) -> Group {
        self.record.to_settings.apply_to(&self.group)
    }

    fn old_group(&self) -> Option<Group> {
        self.record
            .from_settings
            .as_ref()
            .map(|s| s.apply_to(&self.group))
    }

    /// The group's own budget surge (≥ 1): how many instances one
    /// scale-down phase takes at most.
    fn phase_size(&self) -> usize {
        let capacity = endstate_model::Capacity {
            desired: self.record.desired,
            ..self.group.capacity.clone()
        };
        let limits = BudgetLimits::new(&capacity, &self.group.budget);
        usize::try_from(limits.ceiling.saturating_sub(self.record.desired).max(1)).unwrap_or(1)
    }

    /// Records an event of this rollout (data carries from and to).
    async fn event(&mut self, kind: &'static str, reason: String, data: Value) {
        let mut all = json!({
            "from": self.record.from,
            "to": self.record.to,
            "strategy": self.record.strategy,
        });
        if let (Some(all), Value::Object(extra)) = (all.as_object_mut(), data) {
            all.extend(extra);
        }
        self.record.last_event = Some(kind.to_string());
        self.inner
            .events
            .one(Record::new(self.name.clone(), kind, self.name.clone(), reason).with(all))
            .await;
    }

    /// Stores the record in the group's state (before anything of the
    /// phase is done).
    async fn save(&self) {
        if let Some(runtime) = lock(&self.inner.groups).get_mut(&self.name) {
            runtime.persisted.rollout = Some(self.record.clone());
        }
        self.inner.persist(&self.name).await;
    }

    /// Moves to `phase`: persisted, then `rollout_phase`.
    async fn enter(&mut self, phase: RolloutPhase) {
        self.record.phase = phase;
        self.record.phase_started_ms = ms(self.now());
        self.save().await;
        self.event(
            "rollout_phase",
            format!(
                "rollout {} → {}: {}",
                self.record.from,
                self.record.to,
                phase.as_str()
            ),
            json!({ "phase": phase.as_str() }),
        )
        .await;
    }

    fn phase_elapsed(&self) -> Duration {
        let started = u64::try_from(self.record.phase_started_ms).unwrap_or(0);
        self.now().saturating_sub(Duration::from_millis(started))
    }

    /// Paused by a person: the rollout stops where it is (persisted) and
    /// resumes with the group.
    fn paused(&self) -> bool {
        lock(&self.inner.groups)
            .get(&self.name)
            .is_some_and(|g| g.persisted.paused.is_some())
    }

    fn rollback_requested(&self) -> bool {
        lock(&self.inner.groups)
            .get(&self.name)
            .is_some_and(|g| g.rollback_requested)
    }

    async fn observe(&self) -> Result<Vec<Instance>, ExecError> {
        Ok(observe_group(self.inner.provider.as_ref(), &self.spec.project, &self.name).await?)
    }

    async fn tg(&self, generation: &str) -> Result<String, ExecError> {
        let group = if generation == self.record.to {
            self.new_group()
        } else {
            self.old_group().unwrap_or_else(|| self.group.clone())
        };
        Ok(self
            .inner
            .target_group(self.lb.as_ref(), &self.spec, &group, generation)
            .await?)
    }

    /// Launches `count` instances of `settings`' generation, balanced over
    /// the zones, through the executor (journaled, waited for until they
    /// run). Records a `launched` event per zone.
    async fn launch(
        &mut self,
        target: &Group,
        live: &[&Instance],
        count: u32,
        replacing: u32,
    ) -> Result<(), ExecError> {
        let generation = target.generation();
        let mut per_zone: BTreeMap<String, u32> = BTreeMap::new();
        for instance in live.iter().filter(|i| generation_of(i) == generation) {
            *per_zone.entry(instance.zone.clone()).or_default() += 1;
        }
        let launches = balanced_launches(
            target,
            &per_zone,
            count,
            LaunchReason::Replacement {
                outdated: replacing,
            },
        );
        if launches.is_empty() {
            return Ok(());
        }
        let planned = with_desired(target, self.record.desired);
        let sub = Arc::new(Spec {
            groups: vec![planned],
            load_balancers: self.spec.load_balancers.clone(),
            ..(*self.spec).clone()
        });
        let plan = Plan {
            version: PLAN_VERSION,
            project: self.spec.project.clone(),
            environment: self.spec.environment.clone(),
            spec_hash: self.spec.hash.clone(),
            observed_fingerprint: String::new(),
            groups: Vec::new(),
            phases: vec![Phase::Launch(launches)],
            consent: Vec::new(),
            notes: Vec::new(),
        };
        let collect = Arc::new(endstate_exec::Collect::default());
        let executor = self.inner.executor(collect.clone());
        let result = executor.apply(&self.inner.session, &sub, &plan).await;
        for event in collect.events() {
            if let endstate_exec::Event::Launched { zone, ids, .. } = event {
                self.inner
                    .events
                    .one(
                        Record::new(
                            self.name.clone(),
                            "launched",
                            ids.join(","),
                            format!(
                                "launched {} of generation {generation} in {zone} for the rollout {} → {}",
                                ids.len(),
                                self.record.from,
                                self.record.to
                            ),
                        )
                        .with(json!({
                            "ids": ids,
                            "zone": zone,
                            "generation": generation,
                            "from": self.record.from,
                            "to": self.record.to,
                        })),
                    )
                    .await;
            }
        }
        result.map(drop)
    }

    /// Drains `ids` from `tg` (waiting for draining when `wait`), then
    /// terminates them (journaled), in phases of at most `phase_size`.
    async fn scale_down(
        &mut self,
        tg: Option<&str>,
        ids: &[String],
        wait: bool,
        why: &str,
    ) -> Result<bool, ExecError> {
        let size = self.phase_size();
        for chunk in ids.chunks(size) {
            if let Some(tg) = tg {
                let delay = self.cache.deregistration_delay;
                if !self
                    .inner
                    .drain(self.lb.as_ref(), tg, chunk, wait, delay)
                    .await?
                {
                    return Ok(false);
                }
            }
            let executor = self.inner.executor(Arc::new(endstate_exec::Silent));
            let done = executor
                .terminate(&self.inner.session, &self.name, chunk)
                .await?;
            let records = done
                .into_iter()
                .map(|id| {
                    Record::new(self.name.clone(), "terminated", id, why.to_string())
                        .with(json!({ "from": self.record.from, "to": self.record.to }))
                })
                .collect();
            self.inner.events.record(records).await;
        }
        Ok(true)
    }

    /// Sets the listener's weights by generation; records
    /// `traffic_shifted` when they changed.
    async fn shift(&mut self, weights: BTreeMap<String, u32>) -> Result<(), ExecError> {
        let mut by_arn = Vec::new();
        for (generation, weight) in &weights {
            by_arn.push((self.tg(generation).await?, *weight));
        }
        let changed = self
            .inner
            .set_forward(self.lb.as_ref(), &self.name, by_arn)
            .await?;
        if self
            .record
            .weights
            .get(&self.record.to)
            .copied()
            .unwrap_or(0)
            == 0
            && weights.get(&self.record.to).copied().unwrap_or(0) > 0
            && self.record.traffic_at_ms.is_none()
        {
            self.record.traffic_at_ms = Some(ms(self.now()));
        }
        if changed || self.record.weights != weights {
            self.record.weights = weights.clone();
            self.save().await;
            let text: Vec<String> = weights.iter().map(|(g, w)| format!("{g}: {w}")).collect();
            self.event(
                "traffic_shifted",
                format!("listener weights now {}", text.join(", ")),
                json!({ "weights": weights }),
            )
            .await;
        }
        Ok(())
    }

    /// One look at the new generation's health and error rate in its
    /// target group: a failure, or fine.
    async fn check_new(&self) -> Result<Option<Failure>, ExecError> {
        if self.rollback_requested() {
            return Ok(Some("rollback requested through the API".into()));
        }
        let tg = self.tg(&self.record.to).await?;
        let states = self.inner.target_states(self.lb.as_ref(), &tg).await?;
        if let Some((id, _)) = states.iter().find(|(_, s)| s.as_str() == "unhealthy") {
            return Ok(Some(format!(
                "instance {id} of generation {} is unhealthy in its target group",
                self.record.to
            )));
        }
        let Some(since) = self.record.traffic_at_ms else {
            return Ok(None);
        };
        let since = Duration::from_millis(u64::try_from(since).unwrap_or(0));
        let window = self.now().saturating_sub(since).as_secs().clamp(1, 60);
        match self
            .lb
            .target_group_request_counts(&tg, u32::try_from(window).unwrap_or(60))
            .await
        {
            Ok(counts) => Ok(error_rate_exceeded(
                counts.requests,
                counts.server_errors,
                self.config.max_error_rate,
            )
            .map(|rate| {
                format!(
                    "error rate of generation {} is {:.1}% ({} of {} requests in {window} s answered 5xx), above {:.1}%",
                    self.record.to,
                    rate * 100.0,
                    counts.server_errors,
                    counts.requests,
                    self.config.max_error_rate * 100.0
                )
            })),
            Err(error) if error.is_unsupported() => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Watches the new generation for `span` (from the phase's start):
    /// a failure, or `None` when it passed. `Err(None)`-like stop is a
    /// `Flow::Stopped`.
    async fn watch(&mut self, span: Duration) -> Result<Result<(), Failure>, Flow> {
        loop {
            if self.paused() {
                return Err(Flow::Stopped);
            }
            match self.check_new().await {
                Ok(Some(failure)) => return Ok(Err(failure)),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(group = %self.name, %error, "checking the new generation failed");
                }
            }
            if self.phase_elapsed() >= span {
                return Ok(Ok(()));
            }
            let wait = self
                .inner
                .options
                .rollout_poll
                .min(span.saturating_sub(self.phase_elapsed()))
                .max(Duration::from_millis(1));
            if !self.inner.pause_for(wait).await {
                return Err(Flow::Stopped);
            }
        }
    }

    /// Runs the rollout from its persisted phase to its end (or until the
    /// controller stops).
    pub(super) async fn run(mut self) -> Result<(), ExecError> {
        loop {
            let flow = match self.record.phase {
                RolloutPhase::Launching => self.launching().await?,
                RolloutPhase::WaitingHealthy => self.waiting_healthy().await?,
                RolloutPhase::Canary => self.canary().await?,
                RolloutPhase::Watching => self.watching().await?,
                RolloutPhase::KeepingOld => self.keeping_old().await?,
                RolloutPhase::ScalingDownOld => self.scaling_down_old().await?,
                RolloutPhase::Rolling => self.rolling().await?,
                RolloutPhase::RollingWatch => self.rolling_watch().await?,
                RolloutPhase::RollingBack => self.rolling_back().await?,
                RolloutPhase::Failed => {
                    if self.rollback_requested() {
                        self.start_rollback("rollback requested through the API".into())
                            .await;
                        Flow::Next
                    } else {
                        Flow::Finished
                    }
                }
            };
            match flow {
                Flow::Next => continue,
                Flow::Stopped | Flow::Finished => return Ok(()),
            }
        }
    }

    /// The new generation failed: `rollout_failed`, then the rollback
    /// (automatic, or asked for), or held in `failed`.
    async fn fail(&mut self, reason: Failure) -> Flow {
        self.record.failure = Some(reason.clone());
        let rollback = self.config.auto_rollback || self.rollback_requested();
        let then = if rollback {
            "rolling back"
        } else {
            "automatic rollback is off: the group is held until `endstate rollback` or a change of the group in the spec"
        };
        self.event(
            "rollout_failed",
            format!(
                "rollout {} → {} failed: {reason}; {then}",
                self.record.from, self.record.to
            ),
            json!({ "reason": reason, "auto_rollback": self.config.auto_rollback }),
        )
        .await;
        if rollback {
            self.start_rollback(reason).await;
        } else {
            self.enter(RolloutPhase::Failed).await;
        }
        Flow::Next
    }

    async fn start_rollback(&mut self, reason: String) {
        self.event(
            "rollback_started",
            format!(
                "rolling back from generation {} to {}: {reason}",
                self.record.to, self.record.from
            ),
            json!({ "reason": reason }),
        )
        .await;
        self.enter(RolloutPhase::RollingBack).await;
    }

    // ---- blue-green -------------------------------------------------

    async fn launching(&mut self) -> Result<Flow, ExecError> {
        let instances = self.observe().await?;
        let live: Vec<&Instance> = instances.iter().filter(|i| i.state.is_live()).collect();
        let new = live
            .iter()
            .filter(|i| generation_of(i) == self.record.to)
            .count();
        let old = live.len() - new;
        let missing = self
            .record
            .desired
            .saturating_sub(u32::try_from(new).unwrap_or(u32::MAX));
        let target = self.new_group();
        if missing > 0 {
            self.launch(
                &target,
                &live,
                missing,
                u32::try_from(old).unwrap_or(u32::MAX),
            )
            .await?;
        }
        self.enter(RolloutPhase::WaitingHealthy).await;
        Ok(Flow::Next)
    }

    async fn waiting_healthy(&mut self) -> Result<Flow, ExecError> {
        let tg = self.tg(&self.record.to.clone()).await?;
        // A target group is health-checked only once a listener names it
        // (as on ELBv2): name the new one with weight 0 while waiting. No
        // traffic moves, so no `traffic_shifted`.
        if !self.record.weights.contains_key(&self.record.to) && !self.record.from.is_empty() {
            let mut weights = self.record.weights.clone();
            if weights.is_empty() {
                weights.insert(self.record.from.clone(), 100);
            }
            weights.insert(self.record.to.clone(), 0);
            let mut by_arn = Vec::new();
            for (generation, weight) in &weights {
                by_arn.push((self.tg(generation).await?, *weight));
            }
            self.inner
                .set_forward(self.lb.as_ref(), &self.name, by_arn)
                .await?;
            self.record.weights = weights;
            self.save().await;
        }
        loop {
            if self.paused() {
                return Ok(Flow::Stopped);
            }
            if self.rollback_requested() {
                return Ok(self.fail("rollback requested through the API".into()).await);
            }
            let instances = self.observe().await?;
            let registered = self
                .inner
                .register_running(self.lb.as_ref(), &tg, &self.record.to, &instances)
                .await?;
            if !registered.is_empty() {
                self.event(
                    "targets_registered",
                    format!(
                        "registered {} of generation {} in its target group",
                        registered.len(),
                        self.record.to
                    ),
                    json!({ "ids": registered, "generation": self.record.to, "target_group": tg }),
                )
                .await;
            }
            let states = self.inner.target_states(self.lb.as_ref(), &tg).await?;
            let new: Vec<&Instance> = instances
                .iter()
                .filter(|i| i.state.is_live() && generation_of(i) == self.record.to)
                .collect();
            let healthy = new
                .iter()
                .filter(|i| states.get(&i.id).map(String::as_str) == Some("healthy"))
                .count();
            let desired = usize::try_from(self.record.desired).unwrap_or(usize::MAX);
            if healthy >= desired {
                self.event(
                    "targets_healthy",
                    format!(
                        "all {healthy} instances of generation {} are healthy in its target group",
                        self.record.to
                    ),
                    json!({ "healthy": healthy, "generation": self.record.to }),
                )
                .await;
                self.record.canary_step = 0;
                self.enter(RolloutPhase::Canary).await;
                return Ok(Flow::Next);
            }
            if self.phase_elapsed() >= self.config.healthy_timeout {
                let states: BTreeMap<&str, &str> = new
                    .iter()
                    .map(|i| {
                        (
                            i.id.as_str(),
                            states
                                .get(&i.id)
                                .map(String::as_str)
                                .unwrap_or("unregistered"),
                        )
                    })
                    .collect();
                return Ok(self
                    .fail(format!(
                        "generation {} not healthy within {} s: {healthy} of {desired} healthy ({})",
                        self.record.to,
                        self.config.healthy_timeout.as_secs(),
                        states
                            .iter()
                            .map(|(id, s)| format!("{id} {s}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                    .await);
            }
            if (new.len()) < desired && !instances.is_empty() {
                // An instance of the new generation died meanwhile:
                // launch what is missing (within the same deadline).
                let live: Vec<&Instance> = instances.iter().filter(|i| i.state.is_live()).collect();
                let old = live.len() - new.len();
                let missing = u32::try_from(desired - new.len()).unwrap_or(0);
                let target = self.new_group();
                self.launch(&target, &live, missing, u32::try_from(old).unwrap_or(0))
                    .await?;
                continue;
            }
            if !self.inner.pause_for(self.inner.options.rollout_poll).await {
                return Ok(Flow::Stopped);
            }
        }
    }

    fn canary_weights(&self) -> (Vec<u32>, Duration) {
        match &self.config.strategy {
            Strategy::BlueGreen {
                canary,
                canary_pause,
                ..
            } => (canary.clone(), *canary_pause),
            Strategy::Rolling { .. } => (Vec::new(), Duration::ZERO),
        }
    }

    async fn canary(&mut self) -> Result<Flow, ExecError> {
        let (steps, hold) = self.canary_weights();
        while self.record.canary_step < steps.len() {
            let w = steps[self.record.canary_step].min(100);
            let mut weights = BTreeMap::from([(self.record.to.clone(), w)]);
            // Untagged old instances (launched before generations were
            // tagged) have no target group to weigh.
            if !self.record.from.is_empty() {
                weights.insert(self.record.from.clone(), 100 - w);
            }
            self.shift(weights).await?;
            match self.watch(hold).await {
                Err(flow) => return Ok(flow),
                Ok(Err(failure)) => return Ok(self.fail(failure).await),
                Ok(Ok(())) => {}
            }
            self.record.canary_step += 1;
            self.record.phase_started_ms = ms(self.now());
            self.save().await;
        }
        // The switch: every request that starts after ModifyListener
        // returned goes to the new generation.
        let weights = BTreeMap::from([(self.record.to.clone(), 100)]);
        self.shift(weights.clone()).await?;
        self.record.switched_at_ms = Some(ms(self.now()));
        self.event(
            "traffic_switched",
            format!(
                "the listener forwards every request to generation {}",
                self.record.to
            ),
            json!({ "weights": weights }),
        )
        .await;
        self.enter(RolloutPhase::Watching).await;
        Ok(Flow::Next)
    }

    /// Watches the new generation for the rollout's `watch`; `None` when
    /// it passed (and `rollout_watch_passed` is recorded), else the flow
    /// to return (stopped, or the failure handled).
    async fn watch_passed(&mut self) -> Result<Option<Flow>, ExecError> {
        match self.watch(self.config.watch).await {
            Err(flow) => return Ok(Some(flow)),
            Ok(Err(failure)) => return Ok(Some(self.fail(failure).await)),
            Ok(Ok(())) => {}
        }
        self.event(
            "rollout_watch_passed",
            format!(
                "generation {} stayed healthy and under the error rate for {} s",
                self.record.to,
                self.config.watch.as_secs()
            ),
            json!({ "watch_seconds": self.config.watch.as_secs_f64() }),
        )
        .await;
        Ok(None)
    }

    async fn watching(&mut self) -> Result<Flow, ExecError> {
        // A restart lands here with weights possibly not set yet.
        let weights = BTreeMap::from([(self.record.to.clone(), 100)]);
        self.shift(weights).await?;
        if let Some(flow) = self.watch_passed().await? {
            return Ok(flow);
        }
        self.enter(RolloutPhase::KeepingOld).await;
        Ok(Flow::Next)
    }

    async fn keeping_old(&mut self) -> Result<Flow, ExecError> {
        let keep = match &self.config.strategy {
            Strategy::BlueGreen { keep_old_for, .. } => *keep_old_for,
            Strategy::Rolling { .. } => Duration::ZERO,
        };
        match self.watch(keep).await {
            Err(flow) => return Ok(flow),
            Ok(Err(failure)) => return Ok(self.fail(failure).await),
            Ok(Ok(())) => {}
        }
        self.enter(RolloutPhase::ScalingDownOld).await;
        Ok(Flow::Next)
    }

    async fn scaling_down_old(&mut self) -> Result<Flow, ExecError> {
        let instances = self.observe().await?;
        let mut by_generation: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for instance in instances.iter().filter(|i| !i.state.is_gone()) {
            let generation = generation_of(instance);
            if generation != self.record.to {
                by_generation
                    .entry(generation.to_string())
                    .or_default()
                    .push(instance.id.clone());
            }
        }
        let mut count = 0;
        for (generation, ids) in &by_generation {
            let tg = if generation.is_empty() {
                None
            } else {
                Some(self.tg(generation).await?)
            };
            let why = format!(
                "generation {generation} replaced by {} (blue-green)",
                self.record.to
            );
            if !self.scale_down(tg.as_deref(), ids, true, &why).await? {
                return Ok(Flow::Stopped);
            }
            count += ids.len();
            if !generation.is_empty() {
                self.inner
                    .delete_target_group(self.lb.as_ref(), &self.name, generation)
                    .await?;
            }
        }
        self.event(
            "old_generation_scaled_down",
            format!(
                "generation {} drained and terminated ({count} instances)",
                self.record.from
            ),
            json!({ "terminated": count }),
        )
        .await;
        self.complete().await;
        Ok(Flow::Finished)
    }

    async fn complete(&mut self) {
        let started = u64::try_from(self.record.started_at_ms).unwrap_or(0);
        let took = self.now().saturating_sub(Duration::from_millis(started));
        if let Some(runtime) = lock(&self.inner.groups).get_mut(&self.name) {
            if let Some(settings) = &self.record.from_settings {
                runtime.persisted.previous = Some(Settled {
                    generation: self.record.from.clone(),
                    settings: settings.clone(),
                });
            }
            runtime.persisted.settled = Some(Settled {
                generation: self.record.to.clone(),
                settings: self.record.to_settings.clone(),
            });
            runtime.persisted.rollout = None;
            runtime.rollback_requested = false;
        }
        self.inner.persist(&self.name).await;
        self.event(
            "rollout_completed",
            format!(
                "rollout {} → {} completed in {:.1} s",
                self.record.from,
                self.record.to,
                took.as_secs_f64()
            ),
            json!({ "duration_seconds": took.as_secs_f64() }),
        )
        .await;
    }

    // ---- rolling ------------------------------------------------------

    /// Rolling batches towards `target` (the new generation, or the old
    /// one when rolling back). Returns a failure of the new generation
    /// (only when rolling forward), or the flow.
    async fn roll_towards(
        &mut self,
        target: &Group,
        forward: bool,
    ) -> Result<Result<Flow, Failure>, ExecError> {
        let (max_surge, max_unavailable, pause) = match &self.config.strategy {
            Strategy::Rolling {
                max_surge,
                max_unavailable,
                pause,
            } => (*max_surge, *max_unavailable, *pause),
            Strategy::BlueGreen { .. } => {
                let surge = u32::try_from(self.phase_size()).unwrap_or(1);
                (
                    endstate_model::Amount::Count(surge),
                    endstate_model::Amount::Count(0),
                    Duration::ZERO,
                )
            }
        };
        let desired = self.record.desired;
        let limits = rolling_limits(desired, max_surge, max_unavailable);
        let generation = target.generation();
        let mut stalled_since = self.now();
        loop {
            if self.paused() {
                return Ok(Ok(Flow::Stopped));
            }
            if forward {
                if let Some(failure) = self.check_new().await? {
                    return Ok(Err(failure));
                }
            }
            let instances = self.observe().await?;
            let live: Vec<&Instance> = instances.iter().filter(|i| i.state.is_live()).collect();
            // Every generation present is registered in its target group;
            // serving = healthy there.
            let mut generations: BTreeMap<String, Vec<&Instance>> = BTreeMap::new();
            for instance in &live {
                generations
                    .entry(generation_of(instance).to_string())
                    .or_default()
                    .push(instance);
            }
            generations.entry(generation.clone()).or_default();
            let mut healthy: BTreeMap<String, u32> = BTreeMap::new();
            let mut states: BTreeMap<String, String> = BTreeMap::new();
            for g in generations.keys() {
                if g.is_empty() {
                    continue;
                }
                let tg = self.tg(g).await?;
                let registered = self
                    .inner
                    .register_running(self.lb.as_ref(), &tg, g, &instances)
                    .await?;
                if !registered.is_empty() {
                    self.event(
                        "targets_registered",
                        format!("registered {} of generation {g}", registered.len()),
                        json!({ "ids": registered, "generation": g, "target_group": tg }),
                    )
                    .await;
                }
                let s = self.inner.target_states(self.lb.as_ref(), &tg).await?;
                let n = generations[g]
                    .iter()
                    .filter(|i| s.get(&i.id).map(String::as_str) == Some("healthy"))
                    .count();
                healthy.insert(g.clone(), u32::try_from(n).unwrap_or(0));
                states.extend(s);
            }
            if let Some(weights) = weights_by_count(&healthy) {
                self.shift(weights).await?;
            }
            let new_live = u32::try_from(generations[&generation].len()).unwrap_or(0);
            let old_live = u32::try_from(live.len()).unwrap_or(0) - new_live;
            let serving: u32 = healthy.values().sum();
            match rolling_step(limits, desired, new_live, old_live, serving) {
                RollingStep::Done => return Ok(Ok(Flow::Next)),
                RollingStep::Launch(n) => {
                    self.launch(target, &live, n, old_live).await?;
                    stalled_since = self.now();
                }
                RollingStep::Remove(n) => {
                    // Not serving first, then the oldest.
                    let mut old: Vec<&&Instance> = live
                        .iter()
                        .filter(|i| generation_of(i) != generation)
                        .collect();
                    old.sort_by_key(|i| {
                        (
                            states.get(&i.id).map(String::as_str) == Some("healthy"),
                            i.launch_time.clone(),
                        )
                    });
                    let chosen: Vec<&Instance> = old
                        .into_iter()
                        .take(usize::try_from(n).unwrap_or(0))
                        .copied()
                        .collect();
                    let mut by_generation: BTreeMap<String, Vec<String>> = BTreeMap::new();
                    for i in chosen {
                        by_generation
                            .entry(generation_of(i).to_string())
                            .or_default()
                            .push(i.id.clone());
                    }
                    // The listener's weights follow the healthy counts as
                    // they will be after this removal, set before the
                    // deregistration: a generation whose last serving
                    // target is about to drain must already have weight 0,
                    // or its requests would find no target.
                    let mut after = healthy.clone();
                    for (g, ids) in &by_generation {
                        let removed = ids
                            .iter()
                            .filter(|id| states.get(*id).map(String::as_str) == Some("healthy"))
                            .count();
                        if let Some(h) = after.get_mut(g) {
                            *h = h.saturating_sub(u32::try_from(removed).unwrap_or(u32::MAX));
                        }
                    }
                    if let Some(weights) = weights_by_count(&after) {
                        self.shift(weights).await?;
                    }
                    for (g, ids) in by_generation {
                        let tg = if g.is_empty() {
                            None
                        } else {
                            Some(self.tg(&g).await?)
                        };
                        let why = format!("generation {g} replaced by {generation} (rolling)");
                        if !self.scale_down(tg.as_deref(), &ids, true, &why).await? {
                            return Ok(Ok(Flow::Stopped));
                        }
                    }
                    stalled_since = self.now();
                    if !pause.is_zero() && !self.inner.pause_for(pause).await {
                        return Ok(Ok(Flow::Stopped));
                    }
                }
                RollingStep::Wait => {
                    if self.now().saturating_sub(stalled_since) >= self.config.healthy_timeout {
                        let reason = format!(
                            "generation {generation}: launched instances not healthy within {} s ({serving} serving, {} needed)",
                            self.config.healthy_timeout.as_secs(),
                            limits.floor
                        );
                        if forward {
                            return Ok(Err(reason));
                        }
                        return Err(ExecError::PlanMismatch(reason));
                    }
                    if !self.inner.pause_for(self.inner.options.rollout_poll).await {
                        return Ok(Ok(Flow::Stopped));
                    }
                }
            }
        }
    }

    async fn rolling(&mut self) -> Result<Flow, ExecError> {
        let target = self.new_group();
        match self.roll_towards(&target, true).await? {
            Err(failure) => Ok(self.fail(failure).await),
            Ok(Flow::Next) => {
                let weights = BTreeMap::from([(self.record.to.clone(), 100)]);
                self.shift(weights).await?;
                self.record.switched_at_ms = Some(ms(self.now()));
                self.event(
                    "traffic_switched",
                    format!(
                        "every instance is of generation {}; the listener forwards to it alone",
                        self.record.to
                    ),
                    json!({ "weights": { self.record.to.clone(): 100 } }),
                )
                .await;
                self.enter(RolloutPhase::RollingWatch).await;
                Ok(Flow::Next)
            }
            Ok(flow) => Ok(flow),
        }
    }

    async fn rolling_watch(&mut self) -> Result<Flow, ExecError> {
        if let Some(flow) = self.watch_passed().await? {
            return Ok(flow);
        }
        let generations: Vec<String> = self
            .inner
            .lb_cache_generations(&self.name)
            .into_iter()
            .filter(|g| *g != self.record.to)
            .collect();
        for generation in generations {
            self.inner
                .delete_target_group(self.lb.as_ref(), &self.name, &generation)
                .await?;
        }
        self.complete().await;
        Ok(Flow::Finished)
    }

    // ---- rollback -----------------------------------------------------

    async fn rolling_back(&mut self) -> Result<Flow, ExecError> {
        let reason = self
            .record
            .failure
            .clone()
            .unwrap_or_else(|| "rollback".into());
        let blue_green =
            self.record.strategy == "blue_green" && self.record.phase.old_still_there();
        let instances = self.observe().await?;
        let old_live = instances
            .iter()
            .filter(|i| i.state.is_live() && generation_of(i) == self.record.from)
            .count();
        let from_group = self.old_group();
        if blue_green || old_live >= usize::try_from(self.record.desired).unwrap_or(0) {
            // The old generation is all there: switch back at once, then
            // scale the new one down.
            if !self.record.from.is_empty() {
                let weights = BTreeMap::from([(self.record.from.clone(), 100)]);
                self.shift(weights).await?;
            }
            let had_traffic = self.record.traffic_at_ms.is_some();
            let new: Vec<String> = instances
                .iter()
                .filter(|i| !i.state.is_gone() && generation_of(i) == self.record.to)
                .map(|i| i.id.clone())
                .collect();
            let tg = self.tg(&self.record.to.clone()).await?;
            let why = format!("rolled back: {reason}");
            if !self.scale_down(Some(&tg), &new, had_traffic, &why).await? {
                return Ok(Flow::Stopped);
            }
        } else {
            let Some(from_group) = from_group else {
                return Ok(self.held_unknown_settings(&reason).await);
            };
            match self.roll_towards(&from_group, false).await? {
                Ok(Flow::Next) => {
                    let weights = BTreeMap::from([(self.record.from.clone(), 100)]);
                    self.shift(weights).await?;
                }
                Ok(flow) => return Ok(flow),
                Err(failure) => return Err(ExecError::PlanMismatch(failure)),
            }
        }
        self.inner
            .delete_target_group(self.lb.as_ref(), &self.name, &self.record.to)
            .await?;
        self.finish_rollback(&reason).await;
        Ok(Flow::Finished)
    }

    /// A rolling rollback to a generation whose settings were never seen:
    /// the group is paused, and says why.
    async fn held_unknown_settings(&mut self, reason: &str) -> Flow {
        let pause = format!(
            "rollout to {} failed ({reason}) and the settings of generation {} are unknown, so it cannot be relaunched; change the spec or deploy, then resume",
            self.record.to, self.record.from
        );
        if let Some(runtime) = lock(&self.inner.groups).get_mut(&self.name) {
            runtime.persisted.paused = Some(pause.clone());
            runtime.persisted.rollout = None;
            runtime.rollback_requested = false;
        }
        self.inner.persist(&self.name).await;
        self.event("group_paused", pause, json!({})).await;
        Flow::Finished
    }

    async fn finish_rollback(&mut self, reason: &str) {
        let pin = match (&self.record.from_settings, self.record.pin_after_rollback) {
            (Some(settings), true) => Some(Pin {
                requested: self.requested.clone(),
                generation: self.record.from.clone(),
                settings: settings.clone(),
                reason: reason.to_string(),
            }),
            _ => None,
        };
        let pinned = pin.is_some();
        if let Some(runtime) = lock(&self.inner.groups).get_mut(&self.name) {
            if pin.is_some() {
                runtime.persisted.pin = pin;
            }
            if let Some(settings) = &self.record.from_settings {
                runtime.persisted.settled = Some(Settled {
                    generation: self.record.from.clone(),
                    settings: settings.clone(),
                });
            }
            runtime.persisted.rollout = None;
            runtime.rollback_requested = false;
        }
        self.inner.persist(&self.name).await;
        let text = if pinned {
            format!(
                "rolled back to generation {}; the group stays at it until the group changes in the spec or `endstate deploy` names another image",
                self.record.from
            )
        } else {
            format!("rolled back to generation {}", self.record.from)
        };
        self.event(
            "rollback_completed",
            text,
            json!({
                "reason": reason,
                "pinned": pinned.then(|| self.record.from.clone()),
                "retry": "change the group in the spec, or `endstate deploy GROUP --image …`",
            }),
        )
        .await;
    }
}

/// A new rollout record: from the generation most live instances have
/// (other than the target), to the effective group's.
pub(super) fn new_record(
    group: &Group,
    instances: &[Instance],
    settled: Option<&Settled>,
    desired: u32,
    trigger: &str,
    now: Duration,
) -> RolloutRecord {
    let to = group.generation();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for instance in instances.iter().filter(|i| i.state.is_live()) {
        let g = generation_of(instance);
        if g != to {
            *counts.entry(g).or_default() += 1;
        }
    }
    let from = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(g, _)| g.to_string())
        .unwrap_or_default();
    let from_settings = settled
        .filter(|s| s.generation == from)
        .map(|s| s.settings.clone());
    let config = crate::rollout::rollout_of(group);
    let phase = match config.strategy {
        Strategy::Rolling { .. } => RolloutPhase::Rolling,
        Strategy::BlueGreen { .. } => RolloutPhase::Launching,
    };
    RolloutRecord {
        strategy: strategy_name(&config.strategy).to_string(),
        trigger: trigger.to_string(),
        from,
        to,
        from_settings,
        to_settings: LaunchSettings::of(group),
        desired,
        phase,
        canary_step: 0,
        weights: BTreeMap::new(),
        started_at_ms: ms(now),
        phase_started_ms: ms(now),
        switched_at_ms: None,
        traffic_at_ms: None,
        failure: None,
        pin_after_rollback: true,
        last_event: None,
    }
}

/// Whether the group's live instances call for a rollout to `group`'s
/// generation: some live instance is of another generation. An untagged
/// instance (launched before generations were tagged) whose image, type
/// and launch settings are the group's is not: the planner retags it.
pub(super) fn needs_rollout(instances: &[Instance], group: &Group) -> bool {
    let generation = group.generation();
    let launch_hash = group.launch_hash();
    instances.iter().filter(|i| i.state.is_live()).any(|i| {
        match i.tag(endstate_model::tags::GENERATION) {
            Some(g) => g != generation,
            None => {
                !(i.image_id == group.image_id
                    && group.instance_types.contains(&i.instance_type)
                    && i.tag(endstate_model::tags::LAUNCH_HASH) == Some(launch_hash.as_str()))
            }
        }
    })
}

/// How a reconcile of a group goes, seen from its load balancer.
pub(super) enum LbPath {
    /// No load balancer (or none usable): the planner's plain path.
    None,
    /// Behind its load balancer, no rollout: the planner's path, with
    /// registration and draining.
    Plain(Arc<dyn LoadBalancing>),
    /// A rollout ran (to its end, or until the controller stops).
    Rollout,
}

impl Inner {
    /// The group the controller works to now: the spec's, with the
    /// `deploy` override and the rollback pin when they still apply; stale
    /// ones (the spec's group changed since) are dropped and persisted.
    pub(super) async fn effective_group(&self, name: &str, spec_group: &Group) -> Group {
        let (group, changed) = {
            let mut groups = lock(&self.groups);
            let Some(runtime) = groups.get_mut(name) else {
                return spec_group.clone();
            };
            let mut changed = false;
            let spec_generation = spec_group.generation();
            if runtime
                .persisted
                .deploy
                .as_ref()
                .is_some_and(|d| d.spec_generation != spec_generation)
            {
                runtime.persisted.deploy = None;
                changed = true;
            }
            let requested = requested_group(spec_group, runtime.persisted.deploy.as_ref());
            let requested_generation = requested.generation();
            if runtime
                .persisted
                .pin
                .as_ref()
                .is_some_and(|p| p.requested != requested_generation)
            {
                runtime.persisted.pin = None;
                changed = true;
            }
            (
                effective_group(
                    spec_group,
                    runtime.persisted.deploy.as_ref(),
                    runtime.persisted.pin.as_ref(),
                ),
                changed,
            )
        };
        if changed {
            self.persist(name).await;
        }
        group
    }

    /// Says once why a group's load balancer cannot be used.
    async fn lb_unavailable(&self, name: &str, problem: String) {
        let new = lock(&self.groups)
            .get_mut(name)
            .map(|g| g.lb_problem.replace(problem.clone()) != Some(problem.clone()))
            .unwrap_or(false);
        if new {
            self.events
                .one(
                    Record::new(
                        name,
                        "load_balancer_unavailable",
                        name,
                        format!("{problem}; the group is reconciled without its load balancer (no rollouts, no draining)"),
                    )
                    .with(json!({ "error": problem })),
                )
                .await;
        }
    }

    /// The load balancer's part of a reconcile: ensure it, then run the
    /// rollout in progress or the one the live generations call for, or
    /// (none) register the running instances and forward everything to
    /// the group's generation.
    pub(super) async fn load_balanced(
        self: &Arc<Self>,
        name: &str,
        spec: &Arc<Spec>,
        spec_group: &Group,
        group: &Group,
        instances: &[Instance],
    ) -> Result<LbPath, ExecError> {
        if group.load_balancer.is_none() {
            return Ok(LbPath::None);
        }
        let Some(lb) = self.load_balancing.clone() else {
            self.lb_unavailable(
                name,
                format!(
                    "group {name} names load balancer {} but the provider offers no ELBv2 API",
                    group
                        .load_balancer
                        .as_ref()
                        .map(|l| l.name.as_str())
                        .unwrap_or("")
                ),
            )
            .await;
            return Ok(LbPath::None);
        };
        let generation = group.generation();
        let cache = match self.ensure_lb(lb.as_ref(), spec, group, &generation).await {
            Ok(cache) => cache,
            Err(super::lb::LbError::Provider(error)) if !error.is_unsupported() => {
                return Err(error.into())
            }
            Err(error) => {
                self.lb_unavailable(name, format!("group {name}: {error}"))
                    .await;
                return Ok(LbPath::None);
            }
        };
        if let Some(runtime) = lock(&self.groups).get_mut(name) {
            runtime.lb_problem = None;
        }
        let requested = {
            let groups = lock(&self.groups);
            let deploy = groups.get(name).and_then(|g| g.persisted.deploy.clone());
            requested_group(spec_group, deploy.as_ref()).generation()
        };
        let (record, settled, desired, trigger) = {
            let mut groups = lock(&self.groups);
            let Some(runtime) = groups.get_mut(name) else {
                return Ok(LbPath::None);
            };
            (
                runtime.persisted.rollout.clone(),
                runtime.persisted.settled.clone(),
                runtime.capacity.desired,
                runtime.next_trigger.clone(),
            )
        };
        let config = crate::rollout::rollout_of(group);
        let mut fresh = false;
        let record = match record {
            Some(mut record) => {
                // A failed rollout held without automatic rollback, or one
                // the spec went back on: roll back, without a pin, so the
                // next reconcile can roll out what is asked now.
                let superseded = record.phase == RolloutPhase::Failed && requested != record.to;
                let reverted =
                    generation == record.from && record.phase != RolloutPhase::RollingBack;
                if superseded || reverted {
                    record.pin_after_rollback = false;
                    record.failure = Some(format!(
                        "superseded: generation {generation} is asked for now"
                    ));
                    record.phase = RolloutPhase::RollingBack;
                }
                Some(record)
            }
            None if needs_rollout(instances, group) => {
                fresh = true;
                let trigger = trigger
                    .filter(|(_, asked)| *asked == generation)
                    .map(|(trigger, _)| trigger)
                    .unwrap_or_else(|| "spec".into());
                Some(new_record(
                    group,
                    instances,
                    settled.as_ref(),
                    desired,
                    &trigger,
                    self.clock.now(),
                ))
            }
            None => None,
        };
        let Some(record) = record else {
            let tg = cache
                .target_groups
                .get(&generation)
                .cloned()
                .unwrap_or_default();
            self.register_running(lb.as_ref(), &tg, &generation, instances)
                .await?;
            self.set_forward(lb.as_ref(), name, vec![(tg, 100)]).await?;
            let settled = Settled {
                generation: generation.clone(),
                settings: LaunchSettings::of(group),
            };
            let changed = lock(&self.groups).get_mut(name).is_some_and(|runtime| {
                // What was asked for is there (a request made meanwhile,
                // for another generation, stays).
                if runtime
                    .next_trigger
                    .as_ref()
                    .is_some_and(|(_, asked)| *asked == generation)
                {
                    runtime.next_trigger = None;
                }
                if runtime.persisted.settled.as_ref() == Some(&settled) {
                    false
                } else {
                    runtime.persisted.settled = Some(settled.clone());
                    true
                }
            });
            if changed {
                self.persist(name).await;
            }
            return Ok(LbPath::Plain(lb));
        };
        let mut run = Run {
            inner: Arc::clone(self),
            lb,
            name: name.to_string(),
            spec: Arc::clone(spec),
            group: group.clone(),
            config,
            record,
            cache,
            requested,
        };
        if fresh {
            if let Some(runtime) = lock(&self.groups).get_mut(name) {
                if runtime
                    .next_trigger
                    .as_ref()
                    .is_some_and(|(_, asked)| *asked == run.record.to)
                {
                    runtime.next_trigger = None;
                }
                runtime.rollback_requested = false;
            }
            let (from, to, strategy, trigger) = (
                run.record.from.clone(),
                run.record.to.clone(),
                run.record.strategy.clone(),
                run.record.trigger.clone(),
            );
            run.save().await;
            run.event(
                "rollout_started",
                format!(
                    "rollout of group {name} from generation {from} to {to} ({strategy}, trigger: {trigger}), {} instances",
                    run.record.desired
                ),
                json!({ "trigger": trigger, "desired": run.record.desired }),
            )
            .await;
            let phase = run.record.phase;
            run.enter(phase).await;
        } else if run.record.phase == RolloutPhase::RollingBack
            && run.record.last_event.as_deref() != Some("rollback_started")
            && run
                .record
                .failure
                .as_deref()
                .is_some_and(|f| f.starts_with("superseded"))
        {
            let reason = run.record.failure.clone().unwrap_or_default();
            run.event(
                "rollback_started",
                format!("rolling back to generation {}: {reason}", run.record.from),
                json!({ "reason": reason }),
            )
            .await;
            run.save().await;
        }
        run.run().await?;
        Ok(LbPath::Rollout)
    }
}

fn at_ms(at_ms: i64) -> String {
    crate::events::rfc3339_ms(at_ms)
}

impl Inner {
    /// The rollout view of a group (`idle` when none runs, `pending` when
    /// the group's generation differs from what the last one settled on).
    pub(super) fn rollout_view(&self, name: &str) -> Result<RolloutView, ApiError> {
        let (_, spec_group) = self
            .group_spec(name)
            .ok_or_else(|| ApiError::NotFound(format!("no group {name}")))?;
        let groups = lock(&self.groups);
        let runtime = groups
            .get(name)
            .ok_or_else(|| ApiError::NotFound(format!("no group {name}")))?;
        let persisted = &runtime.persisted;
        let group = effective_group(
            &spec_group,
            persisted.deploy.as_ref(),
            persisted.pin.as_ref(),
        );
        let config = crate::rollout::rollout_of(&group);
        let pinned = persisted.pin.as_ref().map(|p| p.generation.clone());
        let deploy_image = persisted.deploy.as_ref().map(|d| d.image.clone());
        Ok(match &persisted.rollout {
            Some(record) => RolloutView {
                group: name.to_string(),
                phase: record.phase.as_str().to_string(),
                strategy: record.strategy.clone(),
                trigger: Some(record.trigger.clone()),
                from: Some(record.from.clone()),
                to: record.to.clone(),
                weights: record.weights.clone(),
                started_at: Some(at_ms(record.started_at_ms)),
                switched_at: record.switched_at_ms.map(at_ms),
                last_event: record.last_event.clone(),
                failure: record.failure.clone(),
                pinned,
                deploy_image,
            },
            None => {
                let generation = group.generation();
                let current = persisted.settled.as_ref().map(|s| s.generation.clone());
                let asked = runtime
                    .next_trigger
                    .as_ref()
                    .filter(|(_, asked)| *asked == generation)
                    .map(|(trigger, _)| trigger.clone());
                // Asked for and not started yet, or the spec's group moved
                // away from the generation the group settled on.
                let pending = group.load_balancer.is_some()
                    && (asked.is_some() || current.as_ref().is_some_and(|c| *c != generation));
                RolloutView {
                    group: name.to_string(),
                    phase: if pending { "pending" } else { "idle" }.to_string(),
                    strategy: strategy_name(&config.strategy).to_string(),
                    trigger: if pending {
                        Some(asked.unwrap_or_else(|| "spec".into()))
                    } else {
                        None
                    },
                    from: if pending { current } else { None },
                    to: generation,
                    weights: BTreeMap::new(),
                    started_at: None,
                    switched_at: None,
                    last_event: None,
                    failure: None,
                    pinned,
                    deploy_image,
                }
            }
        })
    }

    pub(super) async fn deploy(&self, name: &str, image: &str) -> Result<RolloutView, ApiError> {
        let image = image.trim();
        if image.is_empty() || image.chars().any(char::is_whitespace) {
            return Err(ApiError::Invalid(format!(
                "deploy: image {image:?} is not an image id (ami-…)"
            )));
        }
        let (_, spec_group) = self
            .group_spec(name)
            .ok_or_else(|| ApiError::NotFound(format!("no group {name}")))?;
        if spec_group.load_balancer.is_none() {
            return Err(ApiError::Conflict(format!(
                "group {name} has no load balancer: deploy rolls out behind one; change the group's image in the spec instead"
            )));
        }
        {
            let mut groups = lock(&self.groups);
            let runtime = groups
                .get_mut(name)
                .ok_or_else(|| ApiError::NotFound(format!("no group {name}")))?;
            let deploy = crate::rollout::DeployOverride {
                image: image.to_string(),
                spec_generation: spec_group.generation(),
            };
            let asked = requested_group(&spec_group, Some(&deploy)).generation();
            runtime.persisted.deploy = Some(deploy);
            runtime.next_trigger = Some(("deploy".into(), asked));
            runtime.trigger("api: deploy");
        }
        self.persist(name).await;
        self.events
            .one(
                Record::new(
                    name,
                    "deploy_requested",
                    name,
                    format!("deploy of image {image} requested through the API"),
                )
                .with(json!({ "image": image })),
            )
            .await;
        self.rollout_view(name)
    }

    pub(super) async fn rollback(&self, name: &str) -> Result<RolloutView, ApiError> {
        let (_, spec_group) = self
            .group_spec(name)
            .ok_or_else(|| ApiError::NotFound(format!("no group {name}")))?;
        let what = {
            let mut groups = lock(&self.groups);
            let runtime = groups
                .get_mut(name)
                .ok_or_else(|| ApiError::NotFound(format!("no group {name}")))?;
            match runtime.persisted.rollout.as_ref().map(|r| r.phase) {
                Some(RolloutPhase::ScalingDownOld) => {
                    return Err(ApiError::Conflict(format!(
                        "group {name}: the old generation is being scaled down; roll back once the rollout completed"
                    )))
                }
                Some(RolloutPhase::RollingBack) => {
                    return Err(ApiError::Conflict(format!(
                        "group {name} is already rolling back"
                    )))
                }
                Some(_) => {
                    runtime.rollback_requested = true;
                    runtime.trigger("api: rollback");
                    "rollback of the rollout in progress requested through the API".to_string()
                }
                None => {
                    let requested =
                        requested_group(&spec_group, runtime.persisted.deploy.as_ref());
                    let current = effective_group(
                        &spec_group,
                        runtime.persisted.deploy.as_ref(),
                        runtime.persisted.pin.as_ref(),
                    )
                    .generation();
                    match runtime.persisted.previous.clone() {
                        Some(previous) if previous.generation != current => {
                            runtime.persisted.pin = Some(Pin {
                                requested: requested.generation(),
                                generation: previous.generation.clone(),
                                settings: previous.settings,
                                reason: "rollback requested through the API".into(),
                            });
                            runtime.next_trigger =
                                Some(("rollback".into(), previous.generation.clone()));
                            runtime.trigger("api: rollback");
                            format!(
                                "rollback to generation {} requested through the API",
                                previous.generation
                            )
                        }
                        _ => {
                            return Err(ApiError::Conflict(format!(
                                "group {name} has nothing to roll back to: no rollout is in progress and no earlier generation was recorded"
                            )))
                        }
                    }
                }
            }
        };
        self.persist(name).await;
        self.events
            .one(Record::new(name, "rollback_requested", name, what))
            .await;
        self.rollout_view(name)
    }
}
