//! The [`Executor`]: runs a plan's phases through a provider.
//!
//! - Launches: one RunInstances per group-and-zone batch (split at 1,000),
//!   owner tags in the same call. Each call is journaled first as an intent;
//!   its ClientToken derives from the intent id, and its instances carry the
//!   intent id as a tag, so an unknown outcome is resolved by reading (by
//!   tag) before anything is tried again, and a rerun after a crash finds
//!   what the crashed run made. On InsufficientInstanceCapacity it tries the
//!   group's next instance type, then its other zones, and says so.
//! - After a launch phase it waits until the new instances run; after a
//!   termination phase, until the terminations were accepted: this is what
//!   keeps the disruption budget between phases.
//! - Ctrl-C (the cancel signal) stops new launches; calls in flight finish
//!   and are recorded.
//!
//! It does not decide what to do — the plan does — and it does not throttle
//! or retry by itself: the [`Governor`](crate::Governor) it is given does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use endstate_clock::SharedClock;
use endstate_model::{tags, Group, Spec};
use endstate_plan::{desired_tags, Launch, Phase, Plan, Retag, Terminate};
use endstate_provider::{Filter, Instance, InstanceState, LaunchRequest, Provider, ProviderError};
use endstate_state::{Intent, IntentKind};
use serde_json::json;
use tokio::sync::{watch, Semaphore};

use crate::observe::describe_all;
use crate::report::{Event, Reporter};
use crate::session::Session;
use crate::ExecError;

/// EC2 takes up to 1,000 ids per TerminateInstances and its launch bucket
/// holds 1,000 instances: no call asks for more.
pub const MAX_BATCH: u32 = 1_000;

/// Knobs of the executor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApplyOptions {
    /// RunInstances calls in flight at once.
    pub max_concurrency: usize,
    /// How long to wait for launched instances to run.
    pub wait_timeout: Duration,
    /// How often to read while waiting.
    pub poll_interval: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            max_concurrency: 8,
            wait_timeout: Duration::from_secs(900),
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ApplyReport {
    pub launched: Vec<String>,
    pub terminated: Vec<String>,
    pub retagged: usize,
    /// Launches that went to another type or zone for lack of capacity.
    pub fallbacks: u32,
    /// Open intents of earlier runs that were resolved first.
    pub recovered: u32,
    /// Launched instances that died before running.
    pub failed_to_run: Vec<String>,
    pub interrupted: bool,
}

/// The ClientToken of a launch intent: unique per intent, so a rerun of the
/// same intent repeats it and a new intent never meets one EC2 remembers.
pub fn client_token(intent: &str) -> String {
    format!("es-{intent}")
}

/// Applies plans through a (governed) provider.
#[derive(Clone)]
pub struct Executor {
    provider: Arc<dyn Provider>,
    clock: SharedClock,
    reporter: Arc<dyn Reporter>,
    options: ApplyOptions,
    cancel: watch::Receiver<bool>,
}

struct LaunchOutcome {
    /// The journal entry of the call that launched `ids`, still open.
    intent: Option<endstate_state::IntentId>,
    ids: Vec<String>,
    fallbacks: u32,
}

impl Executor {
    pub fn new(
        provider: Arc<dyn Provider>,
        clock: SharedClock,
        reporter: Arc<dyn Reporter>,
        options: ApplyOptions,
        cancel: watch::Receiver<bool>,
    ) -> Self {
        Self {
            provider,
            clock,
            reporter,
            options,
            cancel,
        }
    }

    fn cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Resolves the intents earlier runs left open, before anything is
    /// planned: a launch that was sent is looked for by its intent tag, and
    /// if it is not there, it is sent again with the same ClientToken (which
    /// EC2 answers with the instances it already made, if it made them).
    /// A launch that was only recorded never went out and is abandoned, and
    /// so are open terminations and retags, which the new plan redoes.
    pub async fn recover(&self, session: &Session, spec: &Spec) -> Result<u32, ExecError> {
        let mut resolved = 0;
        for intent in session.open_intents().await? {
            let outcome = match intent.kind {
                IntentKind::Launch if intent.status == endstate_state::IntentStatus::Sent => {
                    self.recover_launch(session, spec, &intent).await?
                }
                IntentKind::Launch => {
                    session
                        .abandon(&intent.id, "never sent: the run stopped before the call")
                        .await?;
                    "abandoned (never sent)".to_string()
                }
                IntentKind::Terminate | IntentKind::Tag => {
                    session
                        .abandon(
                            &intent.id,
                            "superseded: the new plan redoes what is still needed",
                        )
                        .await?;
                    "abandoned (replanned)".to_string()
                }
            };
            self.reporter.event(&Event::Recovered {
                intent: intent.id.to_string(),
                kind: intent.kind.to_string(),
                outcome,
            });
            resolved += 1;
        }
        Ok(resolved)
    }

    async fn find_by_intent(&self, intent: &str) -> Result<Vec<Instance>, ProviderError> {
        describe_all(self.provider.as_ref(), &[Filter::tag(tags::INTENT, intent)]).await
    }

    async fn recover_launch(
        &self,
        session: &Session,
        spec: &Spec,
        intent: &Intent,
    ) -> Result<String, ExecError> {
        let found = self.find_by_intent(intent.id.as_str()).await?;
        if !found.is_empty() {
            let ids: Vec<String> = found.iter().map(|i| i.id.clone()).collect();
            self.complete_when_visible(session, spec, intent, &ids, "found by tag")
                .await?;
            return Ok(format!("found {} instances by tag", ids.len()));
        }
        let Some(group) = spec.groups.iter().find(|g| g.name == intent.group) else {
            session
                .abandon(
                    &intent.id,
                    "group no longer in the spec and nothing found by tag",
                )
                .await?;
            return Ok("abandoned (group gone, nothing found)".into());
        };
        let detail = &intent.detail;
        let count = detail["count"].as_u64().unwrap_or(0) as u32;
        let instance_type = detail["instance_type"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let zone = intent.zone.clone().unwrap_or_default();
        if count == 0 || instance_type.is_empty() || zone.is_empty() {
            session
                .abandon(&intent.id, "journal entry lacks count, type or zone")
                .await?;
            return Ok("abandoned (incomplete journal entry)".into());
        }
        let request = self.launch_request(
            spec,
            group,
            &zone,
            detail["subnet_id"].as_str().map(str::to_string),
            &instance_type,
            count,
            intent.id.as_str(),
        )?;
        let ids = self.send_launch(&request, intent.id.as_str()).await?;
        self.complete_when_visible(session, spec, intent, &ids, "resent with the same token")
            .await?;
        Ok(format!("resent with its token: {} instances", ids.len()))
    }

    /// Completes a recovered launch intent once its instances show in
    /// DescribeInstances: until then a plan could not see them and would
    /// launch their places again.
    async fn complete_when_visible(
        &self,
        session: &Session,
        spec: &Spec,
        intent: &Intent,
        ids: &[String],
        how: &str,
    ) -> Result<(), ExecError> {
        self.wait_running(
            &spec.project,
            &[intent.group.as_str()],
            ids,
            &mut ApplyReport::default(),
        )
        .await?;
        session
            .complete(&intent.id, json!({ "instances": ids, "resolved": how }))
            .await
    }

    #[allow(clippy::too_many_arguments)]
    fn launch_request(
        &self,
        spec: &Spec,
        group: &Group,
        zone: &str,
        subnet_id: Option<String>,
        instance_type: &str,
        count: u32,
        intent: &str,
    ) -> Result<LaunchRequest, ExecError> {
        let mut launch_tags = desired_tags(spec, group);
        launch_tags.insert(tags::INTENT.into(), intent.to_string());
        let user_data = match &group.user_data {
            Some(user_data) => Some(user_data.render().map_err(|e| ExecError::UserData {
                group: group.name.clone(),
                message: e.to_string(),
            })?),
            None => None,
        };
        Ok(LaunchRequest {
            image_id: group.image_id.clone(),
            instance_type: instance_type.to_string(),
            count,
            zone: zone.to_string(),
            subnet_id,
            security_group_ids: group.security_group_ids.clone(),
            key_name: group.key_name.clone(),
            iam_instance_profile: group.iam_instance_profile.clone(),
            root_volume: group.root_volume.clone(),
            metadata: group.metadata.clone(),
            user_data,
            tags: launch_tags,
            client_token: client_token(intent),
        })
    }

    /// Sends a journaled launch; an unknown outcome is resolved by reading
    /// by intent tag, and only if nothing is found is the call sent again,
    /// with the same token.
    async fn send_launch(
        &self,
        request: &LaunchRequest,
        intent: &str,
    ) -> Result<Vec<String>, ProviderError> {
        let mut unknown_outcomes = 0;
        loop {
            match self.provider.run_instances(request).await {
                Ok(instances) => return Ok(instances.into_iter().map(|i| i.id).collect()),
                Err(error) if error.outcome_unknown() && unknown_outcomes < 5 => {
                    unknown_outcomes += 1;
                    let found = self.find_by_intent(intent).await?;
                    if !found.is_empty() {
                        self.reporter.event(&Event::Resolved {
                            intent: intent.to_string(),
                            found: found.len(),
                        });
                        return Ok(found.into_iter().map(|i| i.id).collect());
                    }
                    tracing::warn!(%error, intent, "launch outcome unknown and nothing found by tag; sending again with the same token");
                }
                Err(error) if error.code() == Some("IdempotentParameterMismatch") => {
                    // EC2 remembers the token with other parameters: the
                    // first call did land. Its instances will show up by tag.
                    return self.await_by_intent(intent).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn await_by_intent(&self, intent: &str) -> Result<Vec<String>, ProviderError> {
        let deadline = self.clock.now() + self.options.wait_timeout;
        loop {
            let found = self.find_by_intent(intent).await?;
            if !found.is_empty() || self.clock.now() >= deadline {
                return Ok(found.into_iter().map(|i| i.id).collect());
            }
            self.clock.sleep(self.options.poll_interval).await;
        }
    }

    /// One launch action: journal, call, fall back on capacity errors.
    async fn launch(
        &self,
        session: &Session,
        spec: &Spec,
        action: &Launch,
        count: u32,
    ) -> Result<LaunchOutcome, ExecError> {
        let group = spec
            .groups
            .iter()
            .find(|g| g.name == action.group)
            .ok_or_else(|| {
                ExecError::PlanMismatch(format!("group {} is not in the spec", action.group))
            })?;
        // Candidates: the planned zone with each type in order, then the
        // group's other zones.
        let mut candidates: Vec<(String, Option<String>, String)> = Vec::new();
        for zone in std::iter::once((action.zone.clone(), action.subnet_id.clone())).chain(
            group
                .zones
                .iter()
                .filter(|z| z.name != action.zone)
                .map(|z| (z.name.clone(), z.subnet_ids.first().cloned())),
        ) {
            for instance_type in &group.instance_types {
                candidates.push((zone.0.clone(), zone.1.clone(), instance_type.clone()));
            }
        }
        let mut fallbacks = 0;
        let mut last_error = None;
        for (index, (zone, subnet_id, instance_type)) in candidates.iter().enumerate() {
            // Ctrl-C: a launch not yet journaled is not in flight; skip it.
            if self.cancelled() {
                return Ok(LaunchOutcome {
                    intent: None,
                    ids: Vec::new(),
                    fallbacks,
                });
            }
            if index > 0 {
                fallbacks += 1;
                let (previous_zone, _, previous_type) = &candidates[index - 1];
                self.reporter.event(&Event::FallingBack {
                    group: group.name.clone(),
                    from: format!("{previous_type} in {previous_zone}"),
                    to: format!("{instance_type} in {zone}"),
                    reason: last_error
                        .as_ref()
                        .map(|e: &ProviderError| e.to_string())
                        .unwrap_or_default(),
                });
            }
            let intent = session
                .record_intent(
                    IntentKind::Launch,
                    &group.name,
                    Some(zone),
                    json!({
                        "count": count,
                        "instance_type": instance_type,
                        "image_id": group.image_id,
                        "subnet_id": subnet_id,
                    }),
                )
                .await?;
            crate::crash::point("intent-recorded");
            let request = self.launch_request(
                spec,
                group,
                zone,
                subnet_id.clone(),
                instance_type,
                count,
                intent.id.as_str(),
            )?;
            session.mark_sent(&intent.id).await?;
            crate::crash::point("intent-sent");
            self.reporter.event(&Event::Launching {
                group: group.name.clone(),
                zone: zone.clone(),
                instance_type: instance_type.clone(),
                count,
                intent: intent.id.to_string(),
            });
            match self.send_launch(&request, intent.id.as_str()).await {
                Ok(ids) => {
                    // The intent stays open (sent) until its instances
                    // show in DescribeInstances: see `launch_phase`.
                    crate::crash::point("launch-returned");
                    self.reporter.event(&Event::Launched {
                        group: group.name.clone(),
                        zone: zone.clone(),
                        ids: ids.clone(),
                    });
                    return Ok(LaunchOutcome {
                        intent: Some(intent.id),
                        ids,
                        fallbacks,
                    });
                }
                Err(error) if error.is_capacity() => {
                    session.abandon(&intent.id, &error.to_string()).await?;
                    last_error = Some(error);
                }
                Err(error) => {
                    // The call failed for good and was never accepted: the
                    // intent is closed so that no rerun resends it.
                    if !error.outcome_unknown() {
                        session.abandon(&intent.id, &error.to_string()).await?;
                    }
                    return Err(error.into());
                }
            }
        }
        Err(ExecError::NoCapacity {
            group: group.name.clone(),
            tried: candidates.len(),
            last: last_error.map(|e| e.to_string()).unwrap_or_default(),
        })
    }

    async fn launch_phase(
        &self,
        session: &Arc<Session>,
        spec: &Arc<Spec>,
        launches: &[Launch],
        report: &mut ApplyReport,
    ) -> Result<(), ExecError> {
        let semaphore = Arc::new(Semaphore::new(self.options.max_concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for action in launches {
            let mut remaining = action.count;
            while remaining > 0 {
                let count = remaining.min(MAX_BATCH);
                remaining -= count;
                let permit = Arc::clone(&semaphore)
                    .acquire_owned()
                    .await
                    .map_err(|_| ExecError::PlanMismatch("launch semaphore closed".into()))?;
                if self.cancelled() || session.lost_lock() {
                    drop(permit);
                    break;
                }
                let (this, session, spec, action) = (
                    self.clone(),
                    Arc::clone(session),
                    Arc::clone(spec),
                    action.clone(),
                );
                tasks.spawn(async move {
                    let outcome = this.launch(&session, &spec, &action, count).await;
                    drop(permit);
                    outcome
                });
            }
        }
        let mut first_error = None;
        let mut launched = Vec::new();
        let mut open_intents = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(outcome)) => {
                    report.fallbacks += outcome.fallbacks;
                    if let Some(intent) = outcome.intent {
                        open_intents.push((intent, outcome.ids.clone()));
                    }
                    launched.extend(outcome.ids);
                }
                Ok(Err(error)) => {
                    first_error.get_or_insert(error);
                }
                Err(join) => {
                    first_error.get_or_insert(ExecError::PlanMismatch(format!(
                        "launch task failed: {join}"
                    )));
                }
            }
        }
        report.launched.extend(launched.iter().cloned());
        if let Some(error) = first_error {
            return Err(error);
        }
        let groups: Vec<&str> = launches.iter().map(|l| l.group.as_str()).collect();
        self.wait_running(&spec.project, &groups, &launched, report)
            .await?;
        crate::crash::point("launch-waited");
        // Only now can every later read see these instances: an intent
        // closed earlier could, after a crash, let a plan launch them again.
        for (intent, ids) in open_intents {
            session
                .complete(&intent, json!({ "instances": ids }))
                .await?;
        }
        crate::crash::point("launch-completed");
        Ok(())
    }

    /// Waits until every id runs (or has died: it is reported, and the next
    /// plan replaces it).
    async fn wait_running(
        &self,
        project: &str,
        groups: &[&str],
        ids: &[String],
        report: &mut ApplyReport,
    ) -> Result<(), ExecError> {
        if ids.is_empty() {
            return Ok(());
        }
        let wanted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        let deadline = self.clock.now() + self.options.wait_timeout;
        // Only the plan's groups are read: a controller reconciling one
        // group of a hundred does not read the other ninety-nine each poll.
        let groups: BTreeSet<&str> = groups.iter().copied().collect();
        let filters = [
            Filter::tag(tags::PROJECT, project),
            Filter::new(format!("tag:{}", tags::GROUP), groups),
        ];
        loop {
            // Every state, terminated included: an instance that died before
            // running must settle the wait, not stall it.
            let observed = describe_all(self.provider.as_ref(), &filters).await?;
            let mut per_group: BTreeMap<String, (u32, u32)> = BTreeMap::new();
            let mut settled = 0;
            let mut dead = Vec::new();
            for instance in observed.iter().filter(|i| wanted.contains(i.id.as_str())) {
                let entry = per_group
                    .entry(instance.tag(tags::GROUP).unwrap_or("").to_string())
                    .or_default();
                match instance.state {
                    InstanceState::Running => {
                        entry.0 += 1;
                        settled += 1;
                    }
                    InstanceState::Pending => entry.1 += 1,
                    _ => {
                        settled += 1;
                        dead.push(instance.id.clone());
                    }
                }
            }
            for (group, (running, pending)) in per_group {
                self.reporter.event(&Event::Waiting {
                    group,
                    running,
                    pending,
                    expected: wanted.len() as u32,
                });
            }
            if settled == wanted.len() {
                report.failed_to_run.extend(dead);
                return Ok(());
            }
            if self.clock.now() >= deadline {
                return Err(ExecError::WaitTimedOut {
                    waiting_for: wanted.len() - settled,
                    after: self.options.wait_timeout,
                });
            }
            self.clock.sleep(self.options.poll_interval).await;
        }
    }

    async fn terminate_phase(
        &self,
        session: &Session,
        terminations: &[Terminate],
        report: &mut ApplyReport,
    ) -> Result<(), ExecError> {
        let mut by_group: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for t in terminations {
            by_group
                .entry(t.group.as_str())
                .or_default()
                .push(t.instance_id.clone());
        }
        for (group, ids) in by_group {
            for chunk in ids.chunks(MAX_BATCH as usize) {
                if session.lost_lock() {
                    return Err(ExecError::LostLock);
                }
                let terminated = self.terminate(session, group, chunk).await?;
                report.terminated.extend(terminated);
            }
        }
        Ok(())
    }

    /// Terminates `ids` of `group` in one journaled call.
    pub async fn terminate(
        &self,
        session: &Session,
        group: &str,
        ids: &[String],
    ) -> Result<Vec<String>, ExecError> {
        let intent = session
            .record_intent(
                IntentKind::Terminate,
                group,
                None,
                json!({ "instances": ids }),
            )
            .await?;
        crate::crash::point("terminate-recorded");
        session.mark_sent(&intent.id).await?;
        let states = self.provider.terminate_instances(ids).await?;
        crate::crash::point("terminate-returned");
        session
            .complete(&intent.id, json!({ "instances": ids }))
            .await?;
        crate::crash::point("terminate-completed");
        let ids: Vec<String> = states.into_iter().map(|(id, _)| id).collect();
        self.reporter.event(&Event::Terminated {
            group: group.to_string(),
            ids: ids.clone(),
        });
        Ok(ids)
    }

    async fn retag_phase(
        &self,
        session: &Session,
        retags: &[Retag],
        report: &mut ApplyReport,
    ) -> Result<(), ExecError> {
        for retag in retags {
            for chunk in retag.instance_ids.chunks(MAX_BATCH as usize) {
                let intent = session
                    .record_intent(
                        IntentKind::Tag,
                        &retag.group,
                        None,
                        json!({ "instances": chunk, "set": retag.set.keys().collect::<Vec<_>>(), "remove": retag.remove }),
                    )
                    .await?;
                session.mark_sent(&intent.id).await?;
                if !retag.set.is_empty() {
                    self.provider.create_tags(chunk, &retag.set).await?;
                }
                if !retag.remove.is_empty() {
                    self.provider.delete_tags(chunk, &retag.remove).await?;
                }
                crate::crash::point("retag-returned");
                session
                    .complete(&intent.id, json!({ "instances": chunk.len() }))
                    .await?;
                report.retagged += chunk.len();
                self.reporter.event(&Event::Retagged {
                    group: retag.group.clone(),
                    count: chunk.len(),
                });
            }
        }
        Ok(())
    }

    /// Runs every phase of `plan` in order. Stops early, with `interrupted`
    /// set, when cancelled between phases or launches.
    pub async fn apply(
        &self,
        session: &Arc<Session>,
        spec: &Arc<Spec>,
        plan: &Plan,
    ) -> Result<ApplyReport, ExecError> {
        let mut report = ApplyReport::default();
        let phases = plan.phases.len();
        for (index, phase) in plan.phases.iter().enumerate() {
            if self.cancelled() {
                break;
            }
            if session.lost_lock() {
                return Err(ExecError::LostLock);
            }
            self.reporter.event(&Event::PhaseStarted {
                index: index + 1,
                of: phases,
                kind: match phase {
                    Phase::Launch(_) => "launch",
                    Phase::Terminate(_) => "terminate",
                    Phase::Retag(_) => "retag",
                },
                instances: phase.instance_count(),
            });
            match phase {
                Phase::Launch(launches) => {
                    self.launch_phase(session, spec, launches, &mut report)
                        .await?
                }
                Phase::Terminate(terminations) => {
                    self.terminate_phase(session, terminations, &mut report)
                        .await?
                }
                Phase::Retag(retags) => self.retag_phase(session, retags, &mut report).await?,
            }
        }
        // Whoever cancelled has said so (the binary, on Ctrl-C); the report
        // carries it from here.
        report.interrupted = self.cancelled();
        Ok(report)
    }
}
