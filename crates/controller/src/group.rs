//! One group as the controller holds it between reconciles: the capacity it
//! keeps the group at (the spec's, moved by scaling), a person's pause, the
//! brake, each instance's health, the last observation, and what must
//! survive a restart ([`Persisted`]).
//!
//! The decisions here are pure functions of that state and the time passed
//! in: which instances are unhealthy enough to replace ([`GroupRuntime::verdicts`])
//! and what scaling wants ([`GroupRuntime::evaluate_scaling`]). Nothing here
//! calls EC2, sleeps or records events; the controller does.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use endstate_health::{
    Brake, BrakeConfig, Checker, Ec2State, Ec2Status, EventKind, HealthCheck, HealthStatus,
    InstanceHealth, ProbeTarget, Target,
};
use endstate_model::{tags, Group};
use endstate_plan::{Instance, InstanceState, Verdicts};
use endstate_scaling::combine::{combine, Vote};
use endstate_scaling::schedule::{apply_action, due, ScheduledAction};
use endstate_scaling::select::{select_for_scale_in, InstanceInfo};
use endstate_scaling::target::{Activity, Direction, Sample};
use endstate_scaling::{Capacity, UnixSeconds};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::metrics::Samples;
use crate::rollout::{DeployOverride, Pin, RolloutRecord, Settled};
use crate::view::{GroupView, InstanceView, ReconcileView, ScalingActivityView};

/// How many scaling activities a group keeps in memory for the API.
const ACTIVITY_KEPT: usize = 200;

/// What the controller remembers about a group across restarts (stored as
/// JSON in the state database, under the lease).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    /// The spec's capacity when `capacity` was derived from it: a restart
    /// with a changed spec starts again from the spec.
    pub spec_capacity: Option<Capacity>,
    pub capacity: Option<Capacity>,
    pub paused: Option<String>,
    #[serde(default)]
    pub protected: BTreeSet<String>,
    pub last_activity: Option<Activity>,
    /// Scheduled actions have been applied up to here.
    pub schedule_checked_until: Option<UnixSeconds>,
    /// The rollout in progress (behind a load balancer), phase by phase.
    #[serde(default)]
    pub rollout: Option<RolloutRecord>,
    /// `deploy`'s image, until the spec's group changes.
    #[serde(default)]
    pub deploy: Option<DeployOverride>,
    /// After a rollback: the generation the group stays at.
    #[serde(default)]
    pub pin: Option<Pin>,
    /// The generation the group last converged on, with its settings (what
    /// a rollout from it rolls back to).
    #[serde(default)]
    pub settled: Option<Settled>,
    /// The generation before the last completed rollout (what
    /// `POST /v1/groups/{group}/rollback` returns to afterwards).
    #[serde(default)]
    pub previous: Option<Settled>,
}

/// A group's capacity in the spec, as scaling reads it.
pub fn spec_capacity(group: &Group) -> Capacity {
    Capacity {
        min: group.capacity.min,
        max: group.capacity.max,
        desired: group.capacity.desired,
    }
}

/// `group` as the planner should see it: the desired capacity the
/// controller holds it to, with min and max widened to contain it (a
/// scale-in blocked by protection plans above the held desired).
pub fn with_desired(group: &Group, desired: u32) -> Group {
    let mut planned = group.clone();
    planned.capacity.min = planned.capacity.min.min(desired);
    planned.capacity.max = planned.capacity.max.max(desired);
    planned.capacity.desired = desired;
    planned
}

/// Seconds since the Unix epoch of an RFC 3339 time, as EC2 writes launch times.
pub fn parse_time(rfc3339: &str) -> Option<Duration> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?;
    let nanos = u64::try_from(t.unix_timestamp_nanos()).ok()?;
    Some(Duration::from_nanos(nanos))
}

pub fn unix(at: Duration) -> UnixSeconds {
    i64::try_from(at.as_secs()).unwrap_or(i64::MAX)
}

/// The health check EC2-only judgement uses when the group has none of its
/// own: its grace period (300 s) is what matters.
fn ec2_only_check(group: &Group) -> HealthCheck {
    group
        .health_check
        .clone()
        .unwrap_or_else(|| HealthCheck::new(ProbeTarget::Tcp { port: 1 }))
}

fn ec2_state(state: InstanceState) -> Ec2State {
    match state {
        InstanceState::Pending => Ec2State::Pending,
        InstanceState::Running => Ec2State::Running,
        InstanceState::ShuttingDown => Ec2State::ShuttingDown,
        InstanceState::Terminated => Ec2State::Terminated,
        InstanceState::Stopping => Ec2State::Stopping,
        InstanceState::Stopped => Ec2State::Stopped,
    }
}

/// EC2's status-check name to the health machine's.
pub fn ec2_status(name: &str) -> Option<Ec2Status> {
    Some(match name {
        "ok" => Ec2Status::Ok,
        "impaired" => Ec2Status::Impaired,
        "initializing" => Ec2Status::Initializing,
        "insufficient-data" => Ec2Status::InsufficientData,
        "not-applicable" => Ec2Status::NotApplicable,
        _ => return None,
    })
}

/// One instance's combined health: EC2's verdict first, then the probes'.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub status: HealthStatus,
    pub reason: Option<String>,
    /// When it turned unhealthy (for the settle delay before replacement).
    pub since: Option<Duration>,
}

/// A group between reconciles.
pub struct GroupRuntime {
    pub name: String,
    pub persisted: Persisted,
    pub capacity: Capacity,
    pub brake: Brake,
    brake_config: BrakeConfig,
    pub check: Option<HealthCheck>,
    pub checker: Option<Checker>,
    /// The latest probe verdict per instance (from the checker's events).
    pub probe: BTreeMap<String, (HealthStatus, String, Duration)>,
    /// EC2's view per instance (state and status checks).
    pub ec2: BTreeMap<String, InstanceHealth>,
    /// When EC2's view turned each instance unhealthy.
    ec2_since: BTreeMap<String, Duration>,
    /// EC2's status check per instance at the last observation.
    pub statuses: BTreeMap<String, String>,
    /// Live instances (and stopped ones) at the last observation.
    pub instances: Vec<Instance>,
    pub reconciles: u64,
    pub last_reconcile: Option<ReconcileView>,
    pub activity: VecDeque<ScalingActivityView>,
    /// Why the next reconcile runs (filled by triggers, emptied by it).
    pub triggers: Vec<String>,
    pub wake: Arc<Notify>,
    pub stopped: bool,
    /// The last consent_needed reason recorded, so it is said once.
    pub last_consent: Option<String>,
    /// `POST /v1/groups/{group}/rollback` during a rollout: the rollout
    /// driver switches back at its next look.
    pub rollback_requested: bool,
    /// What asks for the next rollout (`deploy`, `rollback`) and the
    /// generation it asks for; a rollout to another one is the spec's.
    pub next_trigger: Option<(String, String)>,
    /// Why the group's load balancer cannot be used, as last reported (said
    /// once).
    pub lb_problem: Option<String>,
}

impl GroupRuntime {
    pub fn new(group: &Group, persisted: Persisted) -> Self {
        let spec = spec_capacity(group);
        let capacity = match (persisted.spec_capacity, persisted.capacity) {
            (Some(was), Some(capacity)) if was == spec => capacity,
            _ => spec,
        };
        let persisted = Persisted {
            spec_capacity: Some(spec),
            capacity: Some(capacity),
            ..persisted
        };
        Self {
            name: group.name.clone(),
            persisted,
            capacity,
            brake: Brake::new(group.name.clone(), group.brake),
            brake_config: group.brake,
            check: group.health_check.clone(),
            checker: None,
            probe: BTreeMap::new(),
            ec2: BTreeMap::new(),
            ec2_since: BTreeMap::new(),
            statuses: BTreeMap::new(),
            instances: Vec::new(),
            reconciles: 0,
            last_reconcile: None,
            activity: VecDeque::new(),
            triggers: Vec::new(),
            wake: Arc::new(Notify::new()),
            stopped: false,
            last_consent: None,
            rollback_requested: false,
            next_trigger: None,
            lb_problem: None,
        }
    }

    /// Takes a changed spec for the group in: a new spec capacity resets the
    /// scaled one; a changed brake configuration starts a new brake (an
    /// unchanged one keeps its state: a spec edit does not release it). Returns
    /// whether the health check changed (the caller restarts the checker).
    pub fn respec(&mut self, group: &Group) -> bool {
        let spec = spec_capacity(group);
        if self.persisted.spec_capacity != Some(spec) {
            self.capacity = spec;
            self.persisted.spec_capacity = Some(spec);
            self.persisted.capacity = Some(spec);
        }
        if self.brake_config != group.brake {
            self.brake = Brake::new(group.name.clone(), group.brake);
            self.brake_config = group.brake;
        }
        let changed = self.check != group.health_check;
        self.check = group.health_check.clone();
        changed
    }

    pub fn trigger(&mut self, why: impl Into<String>) {
        let why = why.into();
        if !self.triggers.contains(&why) {
            self.triggers.push(why);
        }
        self.wake.notify_one();
    }

    pub fn live(&self) -> impl Iterator<Item = &Instance> {
        self.instances.iter().filter(|i| i.state.is_live())
    }

    /// Feeds the latest observation in: EC2 states and status checks (by
    /// instance id; absent when DescribeInstanceStatus said nothing). EC2's
    /// view is taken of instances that are not going away (the controller's
    /// own terminations are not failures). Returns the health transitions
    /// EC2's view caused, already fed to the brake with the brake's own
    /// events after them (instances gone since the last observation are
    /// forgotten by it first).
    pub fn observe(
        &mut self,
        group: &Group,
        instances: Vec<Instance>,
        statuses: &BTreeMap<String, String>,
        now: Duration,
    ) -> Vec<endstate_health::Event> {
        let check = ec2_only_check(group);
        let staying: BTreeSet<&str> = instances
            .iter()
            .filter(|i| !i.state.is_gone())
            .map(|i| i.id.as_str())
            .collect();
        let size = u32::try_from(instances.iter().filter(|i| i.state.is_live()).count())
            .unwrap_or(u32::MAX);
        let mut events = Vec::new();
        let gone: Vec<String> = self
            .instances
            .iter()
            .filter(|i| !staying.contains(i.id.as_str()))
            .map(|i| i.id.clone())
            .collect();
        for id in gone {
            events.extend(self.brake.forget(&id, now, size));
        }
        self.ec2.retain(|id, _| staying.contains(id.as_str()));
        self.ec2_since.retain(|id, _| staying.contains(id.as_str()));
        self.probe.retain(|id, _| staying.contains(id.as_str()));
        let mut transitions = Vec::new();
        for instance in instances.iter().filter(|i| !i.state.is_gone()) {
            let launched = parse_time(&instance.launch_time).unwrap_or(now);
            let machine = self
                .ec2
                .entry(instance.id.clone())
                .or_insert_with(|| InstanceHealth::new(&instance.id, launched, &check));
            let status = statuses.get(&instance.id).and_then(|s| ec2_status(s));
            let was = machine.ec2_verdict().is_some();
            transitions.extend(machine.observe_ec2(now, ec2_state(instance.state), status));
            match (was, machine.ec2_verdict().is_some()) {
                (false, true) => {
                    self.ec2_since.insert(instance.id.clone(), now);
                }
                (true, false) => {
                    self.ec2_since.remove(&instance.id);
                }
                _ => {}
            }
        }
        self.instances = instances;
        events.extend(self.absorb(transitions, false));
        events
    }

    /// Hands the checker the running instances, by their addresses.
    pub fn retarget(&self, now: Duration) {
        let Some(checker) = &self.checker else {
            return;
        };
        let targets: Vec<Target> = self
            .instances
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .filter_map(|i| {
                let address: std::net::IpAddr = i.private_ip.as_deref()?.parse().ok()?;
                Some(Target {
                    id: i.id.clone(),
                    address,
                    launched_at: parse_time(&i.launch_time).unwrap_or(now),
                })
            })
            .collect();
        checker.set_targets(targets);
    }

    /// Takes health events in (from the probes, or EC2's view): the probe
    /// verdicts, and the brake, which they feed before any replacement is
    /// chosen. Returns them with the brake's own events after each.
    pub fn absorb(
        &mut self,
        events: Vec<endstate_health::Event>,
        from_probes: bool,
    ) -> Vec<endstate_health::Event> {
        let size = u32::try_from(self.live().count())
            .unwrap_or(u32::MAX)
            .max(1);
        let mut out = Vec::new();
        for event in events {
            if from_probes {
                let status = match event.kind {
                    EventKind::InstanceHealthy => Some(HealthStatus::Healthy),
                    EventKind::InstanceUnhealthy => Some(HealthStatus::Unhealthy),
                    _ => None,
                };
                if let Some(status) = status {
                    self.probe.insert(
                        event.subject.clone(),
                        (status, event.reason.clone(), event.at),
                    );
                }
            }
            let brake = self.brake.observe(&event, size);
            out.push(event);
            out.extend(brake);
        }
        out
    }

    /// The combined health of one instance: EC2's verdict while it stands,
    /// else the probes' (or, without a health check, running means healthy).
    pub fn health(&self, instance: &Instance) -> Health {
        let id = instance.id.as_str();
        if let Some(reason) = self.ec2.get(id).and_then(|m| m.ec2_verdict()) {
            return Health {
                status: HealthStatus::Unhealthy,
                reason: Some(reason.to_string()),
                since: self.ec2_since.get(id).copied(),
            };
        }
        if self.check.is_some() {
            return match self.probe.get(id) {
                Some((status, reason, at)) => Health {
                    status: *status,
                    reason: Some(reason.clone()),
                    since: (*status == HealthStatus::Unhealthy).then_some(*at),
                },
                None => Health {
                    status: HealthStatus::Initial,
                    reason: None,
                    since: None,
                },
            };
        }
        Health {
            status: if instance.state == InstanceState::Running {
                HealthStatus::Healthy
            } else {
                HealthStatus::Initial
            },
            reason: None,
            since: None,
        }
    }

    /// What the planner should know: the unhealthy instances to replace
    /// (none while the brake holds; only those unhealthy for at least
    /// `settle`, so that failures detected together are judged together),
    /// and the instances a scale-in removes (chosen by scaling's rules,
    /// protected ones never). Returns the verdicts and the desired capacity
    /// to plan with (above the held one when protection blocks a scale-in).
    pub fn verdicts(&self, group: &Group, now: Duration, settle: Duration) -> (Verdicts, u32) {
        let mut verdicts = Verdicts::default();
        let live: Vec<&Instance> = self.live().collect();
        if !self.brake.is_paused() {
            for instance in &live {
                let health = self.health(instance);
                if health.status == HealthStatus::Unhealthy
                    && health.since.is_none_or(|since| now >= since + settle)
                {
                    verdicts.unhealthy.insert(
                        instance.id.clone(),
                        health.reason.unwrap_or_else(|| "unhealthy".into()),
                    );
                }
            }
        }
        let desired = self.capacity.desired;
        let live_count = u32::try_from(live.len()).unwrap_or(u32::MAX);
        let marked = u32::try_from(verdicts.unhealthy.len()).unwrap_or(u32::MAX);
        let surplus = live_count.saturating_sub(desired).saturating_sub(marked);
        if surplus == 0 {
            return (verdicts, desired);
        }
        let launch_hash = group.launch_hash();
        let candidates: Vec<InstanceInfo> = live
            .iter()
            .filter(|i| !verdicts.unhealthy.contains_key(&i.id))
            .map(|i| InstanceInfo {
                id: i.id.clone(),
                zone: i.zone.clone(),
                launch_time: parse_time(&i.launch_time).map(unix).unwrap_or(0),
                launch_hash: i.tag(tags::LAUNCH_HASH).unwrap_or("").to_string(),
                protected_from_scale_in: self.persisted.protected.contains(&i.id),
            })
            .collect();
        let chosen = select_for_scale_in(&candidates, &launch_hash, surplus as usize);
        let blocked = surplus - u32::try_from(chosen.len()).unwrap_or(surplus);
        for termination in chosen {
            verdicts.retire.insert(termination.id, termination.reason);
        }
        (verdicts, desired + blocked)
    }

    /// Scheduled actions due since the last check, then every policy's vote
    /// combined: the new capacity and the activities that made it, or
    /// nothing when the desired capacity stays. `live_ids` are the running
    /// instances the samples are read for.
    pub fn evaluate_scaling(
        &mut self,
        group: &Group,
        schedules: &[ScheduledAction],
        samples: &Samples,
        now: Duration,
        fresh: Duration,
    ) -> Vec<ScalingActivityView> {
        let now_s = unix(now);
        let mut capacity = self.capacity;
        let mut activities = Vec::new();
        let mut record = |policy: String, from: Capacity, to: Capacity, reason: String| {
            activities.push(ScalingActivityView {
                at: crate::events::rfc3339_ms(now_s.saturating_mul(1000)),
                group: group.name.clone(),
                policy,
                from: from.desired,
                to: to.desired,
                reason,
            });
        };

        let checked = self.persisted.schedule_checked_until.unwrap_or(now_s);
        for firing in due(schedules, checked, now_s) {
            let action = &schedules[firing.action];
            match apply_action(capacity, action) {
                Ok((next, reason)) => {
                    record(format!("scheduled:{}", action.name), capacity, next, reason);
                    capacity = next;
                }
                Err(error) => record(
                    format!("scheduled:{}", action.name),
                    capacity,
                    capacity,
                    format!("not applied: {error}"),
                ),
            }
        }
        self.persisted.schedule_checked_until = Some(now_s);

        let running: Vec<&Instance> = self
            .instances
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .collect();
        let ids: Vec<String> = running.iter().map(|i| i.id.clone()).collect();
        let launch: BTreeMap<&str, UnixSeconds> = running
            .iter()
            .map(|i| {
                (
                    i.id.as_str(),
                    parse_time(&i.launch_time).map(unix).unwrap_or(now_s),
                )
            })
            .collect();
        let mut votes = Vec::new();
        for policy in &group.scaling.target_tracking {
            let values = samples.per_instance(&group.name, &policy.metric, &ids, now, fresh);
            let per_instance: BTreeMap<String, Sample> = values
                .into_iter()
                .map(|(id, value)| {
                    let launch_time = launch.get(id.as_str()).copied().unwrap_or(now_s);
                    (id, Sample { value, launch_time })
                })
                .collect();
            votes.push(Vote {
                policy: format!("target_tracking:{}", policy.metric),
                decision: endstate_scaling::target::evaluate(
                    policy,
                    &per_instance,
                    capacity,
                    self.persisted.last_activity,
                    now_s,
                ),
                scale_in_enabled: !policy.disable_scale_in,
            });
        }
        for policy in &group.scaling.step {
            let values = samples.per_instance(&group.name, &policy.metric, &ids, now, fresh);
            if values.is_empty() {
                continue;
            }
            let average = values.values().sum::<f64>() / values.len() as f64;
            let launch_times: Vec<UnixSeconds> = launch.values().copied().collect();
            votes.push(Vote {
                policy: format!("step:{}", policy.metric),
                decision: endstate_scaling::step::evaluate(
                    policy,
                    average,
                    &launch_times,
                    capacity,
                    self.persisted.last_activity,
                    now_s,
                ),
                scale_in_enabled: true,
            });
        }
        if let Some(decision) = combine(capacity, &votes) {
            if decision.new_desired != capacity.desired {
                let next = Capacity {
                    desired: decision.new_desired,
                    ..capacity
                };
                let policy = decision
                    .reason
                    .split(':')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(":");
                let policy = if votes.iter().any(|v| v.policy == policy) {
                    policy
                } else {
                    "bounds".to_string()
                };
                record(policy, capacity, next, decision.reason);
                capacity = next;
            }
        }

        if capacity != self.capacity {
            if capacity.desired != self.capacity.desired {
                self.persisted.last_activity = Some(Activity {
                    at: now_s,
                    direction: if capacity.desired > self.capacity.desired {
                        Direction::Out
                    } else {
                        Direction::In
                    },
                });
            }
            self.capacity = capacity;
            self.persisted.capacity = Some(capacity);
        }
        for activity in &activities {
            if self.activity.len() == ACTIVITY_KEPT {
                self.activity.pop_front();
            }
            self.activity.push_back(activity.clone());
        }
        activities
    }

    pub fn view(&self) -> GroupView {
        let mut view = GroupView {
            name: self.name.clone(),
            min: self.capacity.min,
            desired: self.capacity.desired,
            max: self.capacity.max,
            live: 0,
            healthy: 0,
            unhealthy: 0,
            initial: 0,
            paused: self.persisted.paused.is_some(),
            replacement_paused: match self.brake.state() {
                endstate_health::brake::BrakeState::Paused { reason, .. } => Some(reason.clone()),
                endstate_health::brake::BrakeState::Released => None,
            },
            reconciles: self.reconciles,
            last_reconcile: self.last_reconcile.clone(),
        };
        for instance in self.live() {
            view.live += 1;
            match self.health(instance).status {
                HealthStatus::Healthy => view.healthy += 1,
                HealthStatus::Unhealthy => view.unhealthy += 1,
                HealthStatus::Initial => view.initial += 1,
            }
        }
        view
    }

    pub fn instance_view(&self, instance: &Instance, cpu: Option<f64>) -> InstanceView {
        let health = self.health(instance);
        InstanceView {
            id: instance.id.clone(),
            group: self.name.clone(),
            state: instance.state.to_string(),
            zone: instance.zone.clone(),
            image_id: instance.image_id.clone(),
            instance_type: instance.instance_type.clone(),
            private_ip: instance.private_ip.clone(),
            launch_time: instance.launch_time.clone(),
            health: match health.status {
                HealthStatus::Healthy => "healthy",
                HealthStatus::Unhealthy => "unhealthy",
                HealthStatus::Initial => "initial",
            }
            .to_string(),
            health_reason: health.reason,
            protected: self.persisted.protected.contains(&instance.id),
            cpu,
        }
    }
}

#[cfg(test)]
mod tests;
