//! The planning algorithm: per group, classify the live instances (as
//! desired, or outdated and why), then scale and replace in phases that keep
//! the group inside its [`BudgetLimits`] at every moment; retag what is
//! otherwise right; terminate what belongs to groups gone from the spec.

use std::collections::{BTreeMap, BTreeSet};

use endstate_model::{tags, Group, Spec};
use sha2::{Digest, Sha256};

use crate::budget::BudgetLimits;
use crate::observed::{Instance, InstanceState, Observed};
use crate::types::*;

/// The tag that lists, comma-separated, the user tag keys endstate set on an
/// instance, so that a key removed from the spec is removed from the
/// instance and tags set by others are left alone.
pub const MANAGED_TAG_KEYS: &str = "endstate:tags";

/// Knobs of the planner that are not part of the spec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanOptions {
    /// A plan that reduces a group by more than this share of its live
    /// instances needs consent. Default 0.5.
    pub mass_terminate_share: f64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            mass_terminate_share: 0.5,
        }
    }
}

/// Every tag an instance of `group` should carry: the user's tags plus the
/// owner tags. The executor sets exactly these at launch, the planner
/// compares against them, so the two cannot disagree.
pub fn desired_tags(spec: &Spec, group: &Group) -> BTreeMap<String, String> {
    let mut desired = group.tags.clone();
    desired.insert(tags::PROJECT.into(), spec.project.clone());
    desired.insert(tags::GROUP.into(), group.name.clone());
    desired.insert(tags::ENVIRONMENT.into(), spec.environment.clone());
    desired.insert(tags::LAUNCH_HASH.into(), group.launch_hash());
    desired.insert(tags::GENERATION.into(), group.generation());
    let keys: Vec<&str> = group.tags.keys().map(String::as_str).collect();
    desired.insert(MANAGED_TAG_KEYS.into(), keys.join(","));
    desired
}

/// A hash of what a saved plan depends on: the owned live instances, their
/// image, type and tags. `apply FILE` refuses when it changed.
pub fn observed_fingerprint(observed: &Observed) -> String {
    let mut live: Vec<&Instance> = observed
        .instances
        .iter()
        .filter(|i| !i.state.is_gone())
        .collect();
    live.sort_by(|a, b| a.id.cmp(&b.id));
    let mut hasher = Sha256::new();
    for instance in live {
        hasher.update(instance.id.as_bytes());
        hasher.update([0]);
        hasher.update(instance.image_id.as_bytes());
        hasher.update([0]);
        hasher.update(instance.instance_type.as_bytes());
        for (key, value) in &instance.tags {
            hasher.update([1]);
            hasher.update(key.as_bytes());
            hasher.update([0]);
            hasher.update(value.as_bytes());
        }
        hasher.update([2]);
    }
    hex::encode(hasher.finalize())
}

/// What the controller of `endstate serve` knows about instances beyond
/// what EC2 reports: which are unhealthy (replace them, within the budget)
/// and which a scale-in chose to remove. `plan` has none of either.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdicts {
    /// Instance id → why it is unhealthy.
    pub unhealthy: BTreeMap<String, String>,
    /// Instance id → why a scale-in removes it (it counts as surplus).
    pub retire: BTreeMap<String, String>,
}

/// Plans the changes that take `observed` to `spec`.
pub fn plan(spec: &Spec, observed: &Observed, options: &PlanOptions) -> Plan {
    plan_with(spec, observed, &Verdicts::default(), options)
}

/// [`plan`], with the controller's verdicts on instances: unhealthy ones
/// are replaced like outdated ones (launch first when the ceiling allows,
/// never below the floor), retired ones are removed as surplus.
pub fn plan_with(
    spec: &Spec,
    observed: &Observed,
    verdicts: &Verdicts,
    options: &PlanOptions,
) -> Plan {
    let mut by_group: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
    for instance in &observed.instances {
        if instance.tag(tags::PROJECT) != Some(spec.project.as_str()) || instance.state.is_gone() {
            continue;
        }
        let group = instance.tag(tags::GROUP).unwrap_or("");
        by_group.entry(group).or_default().push(instance);
    }

    let mut waves = Waves::default();
    let mut summaries = Vec::new();
    let mut consent = Vec::new();
    let mut notes = Vec::new();

    for group in &spec.groups {
        let instances = by_group.remove(group.name.as_str()).unwrap_or_default();
        let outcome = plan_group(spec, group, &instances, verdicts, &mut waves);
        let live = instances.iter().filter(|i| i.state.is_live()).count() as u32;
        let reduction = live.saturating_sub(group.capacity.desired);
        if live > 0 && f64::from(reduction) > options.mass_terminate_share * f64::from(live) {
            consent.push(ConsentNeeded::MassTerminate {
                group: group.name.clone(),
                terminating: reduction,
                live,
                limit_share: options.mass_terminate_share,
            });
        }
        notes.extend(outcome.notes);
        summaries.push(outcome.summary);
    }

    // What is left belongs to groups the spec no longer has.
    for (group, instances) in by_group {
        let mut summary = GroupSummary {
            group: group.to_string(),
            in_spec: false,
            ..GroupSummary::default()
        };
        for instance in &instances {
            count_state(&mut summary, instance.state);
            summary.terminate += 1;
            waves.terminate(0, terminate(instance, TerminateReason::NotInSpec));
        }
        let live = summary.running + summary.pending;
        if live > 0 {
            consent.push(ConsentNeeded::GroupRemoved {
                group: group.to_string(),
                live,
            });
        }
        summaries.push(summary);
    }

    Plan {
        version: PLAN_VERSION,
        project: spec.project.clone(),
        environment: spec.environment.clone(),
        spec_hash: spec.hash.clone(),
        observed_fingerprint: observed_fingerprint(observed),
        groups: summaries,
        phases: waves.into_phases(),
        consent,
        notes,
    }
}

fn count_state(summary: &mut GroupSummary, state: InstanceState) {
    match state {
        InstanceState::Running => summary.running += 1,
        InstanceState::Pending => summary.pending += 1,
        _ => {}
    }
}

fn terminate(instance: &Instance, reason: TerminateReason) -> Terminate {
    Terminate {
        instance_id: instance.id.clone(),
        group: instance.tag(tags::GROUP).unwrap_or("").to_string(),
        zone: instance.zone.clone(),
        reason,
    }
}

/// Why an instance cannot stay, or `None` when it is as desired.
/// `launch_hash` is the group's, computed once by the caller.
fn outdated_reason(
    group: &Group,
    launch_hash: &str,
    verdicts: &Verdicts,
    instance: &Instance,
) -> Option<TerminateReason> {
    if !instance.state.is_live() {
        return Some(TerminateReason::NotRunning {
            state: instance.state.to_string(),
        });
    }
    if let Some(reason) = verdicts.retire.get(&instance.id) {
        return Some(TerminateReason::ScaleIn {
            reason: reason.clone(),
        });
    }
    if let Some(reason) = verdicts.unhealthy.get(&instance.id) {
        return Some(TerminateReason::Unhealthy {
            reason: reason.clone(),
        });
    }
    if instance.image_id != group.image_id {
        return Some(TerminateReason::WrongImage {
            has: instance.image_id.clone(),
            wants: group.image_id.clone(),
        });
    }
    if !group.instance_types.contains(&instance.instance_type) {
        return Some(TerminateReason::WrongType {
            has: instance.instance_type.clone(),
            wants: group.instance_types.clone(),
        });
    }
    if !group.zones.iter().any(|z| z.name == instance.zone) {
        return Some(TerminateReason::WrongZone {
            has: instance.zone.clone(),
        });
    }
    if instance.tag(tags::LAUNCH_HASH) != Some(launch_hash) {
        return Some(TerminateReason::LaunchChanged);
    }
    None
}

struct GroupOutcome {
    summary: GroupSummary,
    notes: Vec<String>,
}

/// Phases are built as numbered waves; wave k's launches run before wave
/// k's terminations, which run before wave k+1. Groups share waves, so one
/// wave's RunInstances calls for several groups go out together.
#[derive(Default)]
struct Waves {
    waves: Vec<Wave>,
    retags: Vec<Retag>,
}

#[derive(Default)]
struct Wave {
    /// Terminations that must come before this wave's launches (no surge room).
    terminate_first: Vec<Terminate>,
    launches: Vec<Launch>,
    terminations: Vec<Terminate>,
}

impl Waves {
    fn wave(&mut self, index: usize) -> &mut Wave {
        while self.waves.len() <= index {
            self.waves.push(Wave::default());
        }
        &mut self.waves[index]
    }

    /// A termination after the wave's launches have run.
    fn terminate(&mut self, index: usize, action: Terminate) {
        self.wave(index).terminations.push(action);
    }

    /// A termination before the wave's launches: for instances that serve
    /// nothing (not running) or that the group has too many of anyway, so
    /// that the launches after them never push the group over its ceiling.
    fn terminate_first(&mut self, index: usize, action: Terminate) {
        self.wave(index).terminate_first.push(action);
    }

    fn into_phases(self) -> Vec<Phase> {
        let mut phases = Vec::new();
        if !self.retags.is_empty() {
            phases.push(Phase::Retag(self.retags));
        }
        for wave in self.waves {
            if !wave.terminate_first.is_empty() {
                phases.push(Phase::Terminate(wave.terminate_first));
            }
            if !wave.launches.is_empty() {
                phases.push(Phase::Launch(wave.launches));
            }
            if !wave.terminations.is_empty() {
                phases.push(Phase::Terminate(wave.terminations));
            }
        }
        phases
    }
}

/// Per-zone counts used to balance launches and pick terminations.
struct ZoneCounts<'a> {
    group: &'a Group,
    counts: BTreeMap<&'a str, u32>,
}

impl<'a> ZoneCounts<'a> {
    fn new(group: &'a Group, current: &[&Instance]) -> Self {
        let mut counts: BTreeMap<&str, u32> =
            group.zones.iter().map(|z| (z.name.as_str(), 0)).collect();
        for instance in current {
            if let Some(count) = counts.get_mut(instance.zone.as_str()) {
                *count += 1;
            }
        }
        Self { group, counts }
    }

    /// Splits `n` new instances over the zones, each to the zone with the
    /// fewest (ties to the zone listed first), as launches.
    fn launches(&mut self, n: u32, reason: &LaunchReason) -> Vec<Launch> {
        let mut per_zone: BTreeMap<usize, u32> = BTreeMap::new();
        for _ in 0..n {
            let Some((index, zone)) = self
                .group
                .zones
                .iter()
                .enumerate()
                .min_by_key(|(index, zone)| (self.counts[zone.name.as_str()], *index))
            else {
                break;
            };
            *self.counts.entry(zone.name.as_str()).or_default() += 1;
            *per_zone.entry(index).or_default() += 1;
        }
        per_zone
            .into_iter()
            .map(|(index, count)| {
                let zone = &self.group.zones[index];
                Launch {
                    group: self.group.name.clone(),
                    zone: zone.name.clone(),
                    subnet_id: zone.subnet_ids.first().cloned(),
                    count,
                    reason: reason.clone(),
                }
            })
            .collect()
    }
}

/// Picks `n` instances to remove from `pool`, each from the zone that has
/// the most left; within a zone, pending before running, newest first, then
/// the smallest id (for determinism). O(pool log pool + n × zones).
fn pick_balanced<'a>(pool: &mut Vec<&'a Instance>, n: u32) -> Vec<&'a Instance> {
    if n == 0 || pool.is_empty() {
        return Vec::new();
    }
    type Key<'k> = (bool, &'k str, std::cmp::Reverse<&'k str>);
    let key = |i: &'a Instance| -> Key<'a> {
        (
            i.state == InstanceState::Pending,
            i.launch_time.as_str(),
            std::cmp::Reverse(i.id.as_str()),
        )
    };
    // Per zone, in ascending removal priority: the next to go is last.
    let mut by_zone: BTreeMap<&str, Vec<&'a Instance>> = BTreeMap::new();
    for instance in pool.iter() {
        by_zone
            .entry(instance.zone.as_str())
            .or_default()
            .push(instance);
    }
    for list in by_zone.values_mut() {
        list.sort_by(|a, b| key(a).cmp(&key(b)));
    }
    let mut picked = Vec::new();
    for _ in 0..n {
        let Some(zone) = by_zone
            .iter()
            .filter_map(|(zone, list)| list.last().map(|top| (list.len(), key(top), *zone)))
            .max()
            .map(|(_, _, zone)| zone)
        else {
            break;
        };
        if let Some(instance) = by_zone.get_mut(zone).and_then(Vec::pop) {
            picked.push(instance);
        }
    }
    let gone: BTreeSet<&str> = picked.iter().map(|i| i.id.as_str()).collect();
    pool.retain(|i| !gone.contains(i.id.as_str()));
    picked
}

fn plan_group(
    spec: &Spec,
    group: &Group,
    instances: &[&Instance],
    verdicts: &Verdicts,
    waves: &mut Waves,
) -> GroupOutcome {
    let desired = group.capacity.desired;
    let limits = BudgetLimits::new(&group.capacity, &group.budget);
    let mut summary = GroupSummary {
        group: group.name.clone(),
        desired,
        in_spec: true,
        ..GroupSummary::default()
    };
    let mut notes = Vec::new();

    let launch_hash = group.launch_hash();
    let mut current: Vec<&Instance> = Vec::new();
    let mut outdated: Vec<(&Instance, TerminateReason)> = Vec::new();
    for instance in instances {
        count_state(&mut summary, instance.state);
        match outdated_reason(group, &launch_hash, verdicts, instance) {
            None => current.push(instance),
            Some(reason) => outdated.push((instance, reason)),
        }
    }
    summary.outdated = outdated
        .iter()
        .filter(|(instance, _)| instance.state.is_live())
        .count() as u32;

    // Instances that are not live (stopped, stopping) are not capacity:
    // they go in the first wave, whatever the budget, since they serve nothing.
    let mut old: Vec<(&Instance, TerminateReason)> = Vec::new();
    for (instance, reason) in outdated {
        if instance.state.is_live() {
            old.push((instance, reason));
        } else {
            waves.terminate_first(0, terminate(instance, reason));
            summary.terminate += 1;
        }
    }

    plan_retags(spec, group, &current, waves, &mut summary);

    let mut zones = ZoneCounts::new(group, &current);
    let mut new_count = current.len() as u32;

    // Too many current instances: remove the surplus (old ones go below).
    if new_count > desired {
        let live = new_count + old.len() as u32;
        let mut pool = current.clone();
        for instance in pick_balanced(&mut pool, new_count - desired) {
            waves.terminate_first(
                0,
                terminate(instance, TerminateReason::OverCapacity { live, desired }),
            );
            summary.terminate += 1;
        }
        new_count = desired;
    }

    // Old instances over desired capacity go at once: the group stays at
    // desired, which is never below the floor.
    let surplus_old = (new_count + old.len() as u32).saturating_sub(desired);
    if surplus_old > 0 {
        let mut pool: Vec<&Instance> = old.iter().map(|(i, _)| *i).collect();
        let removed: BTreeSet<&str> = pick_balanced(&mut pool, surplus_old)
            .into_iter()
            .map(|i| i.id.as_str())
            .collect();
        let live = new_count + old.len() as u32;
        old.retain(|(instance, reason)| {
            if removed.contains(instance.id.as_str()) {
                let reason = match reason {
                    TerminateReason::NotRunning { .. }
                    | TerminateReason::ScaleIn { .. }
                    | TerminateReason::Unhealthy { .. } => reason.clone(),
                    _ => TerminateReason::OverCapacity { live, desired },
                };
                waves.terminate_first(0, terminate(instance, reason));
                summary.terminate += 1;
                false
            } else {
                true
            }
        });
    }

    // Replace old instances and fill up to desired, wave by wave, within the budget.
    let mut old_pool: Vec<&Instance> = old.iter().map(|(i, _)| *i).collect();
    let reasons: BTreeMap<&str, TerminateReason> = old
        .iter()
        .map(|(i, r)| (i.id.as_str(), r.clone()))
        .collect();
    let mut wave = 0;
    while new_count < desired || !old_pool.is_empty() {
        let old_count = old_pool.len() as u32;
        let live = new_count + old_count;
        let reason = if old_count > 0 {
            LaunchReason::Replacement {
                outdated: old_count,
            }
        } else {
            LaunchReason::BelowDesired { live, desired }
        };
        let add = if old_count == 0 {
            desired - new_count
        } else {
            limits.may_add(live).min(desired - new_count)
        };
        let mut remove_first = 0;
        if add == 0 && old_count > 0 {
            remove_first = limits.may_remove(live).min(old_count);
            if remove_first == 0 {
                notes.push(format!(
                    "group {}: {} outdated instances cannot be replaced: the disruption budget allows neither surge above {} nor fewer than {} running",
                    group.name, old_count, limits.ceiling, limits.floor
                ));
                break;
            }
            for instance in pick_balanced(&mut old_pool, remove_first) {
                let reason = reasons[instance.id.as_str()].clone();
                waves.terminate_first(wave, terminate(instance, reason));
                summary.terminate += 1;
            }
        }
        let add = if remove_first > 0 {
            limits.may_add(live - remove_first).min(desired - new_count)
        } else {
            add
        };
        let launches = zones.launches(add, &reason);
        summary.launch += add;
        new_count += add;
        waves.wave(wave).launches.extend(launches);
        if remove_first == 0 {
            let live_after = new_count + old_pool.len() as u32;
            let excess = live_after.saturating_sub(desired);
            let remove = limits
                .may_remove(live_after)
                .min(excess)
                .min(old_pool.len() as u32);
            for instance in pick_balanced(&mut old_pool, remove) {
                let reason = reasons[instance.id.as_str()].clone();
                waves.terminate(wave, terminate(instance, reason));
                summary.terminate += 1;
            }
            if add == 0 && remove == 0 {
                notes.push(format!(
                    "group {}: {} outdated instances cannot be replaced within the disruption budget",
                    group.name,
                    old_pool.len()
                ));
                break;
            }
        }
        wave += 1;
    }

    GroupOutcome { summary, notes }
}

/// Tags to set and tag keys to remove: one retag call's worth.
type TagChange = (BTreeMap<String, String>, Vec<String>);

fn plan_retags(
    spec: &Spec,
    group: &Group,
    current: &[&Instance],
    waves: &mut Waves,
    summary: &mut GroupSummary,
) {
    let desired = desired_tags(spec, group);
    // Instances needing the same change are retagged in one call.
    let mut changes: BTreeMap<TagChange, Vec<String>> = BTreeMap::new();
    for instance in current {
        let set: BTreeMap<String, String> = desired
            .iter()
            .filter(|(key, value)| instance.tags.get(*key) != Some(*value))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let remove: Vec<String> = instance
            .tag(MANAGED_TAG_KEYS)
            .unwrap_or("")
            .split(',')
            .filter(|key| {
                !key.is_empty() && !desired.contains_key(*key) && instance.tags.contains_key(*key)
            })
            .map(String::from)
            .collect();
        if !set.is_empty() || !remove.is_empty() {
            changes
                .entry((set, remove))
                .or_default()
                .push(instance.id.clone());
        }
    }
    for ((set, remove), instance_ids) in changes {
        summary.retag += instance_ids.len() as u32;
        waves.retags.push(Retag {
            group: group.name.clone(),
            instance_ids,
            set,
            remove,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use endstate_model::{Capacity, DisruptionBudget, MetadataOptions, Provider, Zone};

    fn spec(groups: Vec<Group>) -> Spec {
        Spec {
            load_balancers: Vec::new(),
            project: "shop".into(),
            environment: "default".into(),
            provider: Provider::Aws {
                region: "us-east-1".into(),
                endpoint: None,
                profile: None,
            },
            groups,
            hash: "h".into(),
            roles: Default::default(),
            recipes: Default::default(),
        }
    }

    fn group(name: &str, min: u32, desired: u32, max: u32) -> Group {
        Group {
            name: name.into(),
            image_id: "ami-11111111".into(),
            image_channel: None,
            instance_types: vec!["t3.micro".into(), "t3a.micro".into()],
            capacity: Capacity { min, desired, max },
            zones: vec![
                Zone {
                    name: "us-east-1a".into(),
                    subnet_ids: vec!["subnet-a".into()],
                },
                Zone {
                    name: "us-east-1b".into(),
                    subnet_ids: vec![],
                },
            ],
            security_group_ids: vec![],
            key_name: None,
            iam_instance_profile: None,
            root_volume: None,
            metadata: MetadataOptions::default(),
            tags: [("team".to_string(), "web".to_string())].into(),
            user_data: None,
            budget: DisruptionBudget::default(),
            health_check: None,
            brake: Default::default(),
            scaling: Default::default(),
            load_balancer: None,
            rollout: None,
            roles: Vec::new(),
        }
    }

    /// Instances as the executor would have launched them for `group`.
    fn running(spec: &Spec, group: &Group, n: usize, first_id: usize) -> Vec<Instance> {
        (0..n)
            .map(|k| Instance {
                id: format!("i-{:017x}", first_id + k),
                image_id: group.image_id.clone(),
                instance_type: group.instance_types[0].clone(),
                zone: group.zones[k % group.zones.len()].name.clone(),
                subnet_id: None,
                state: InstanceState::Running,
                launch_time: format!("2026-01-01T00:00:{:02}Z", k % 60),
                private_ip: None,
                client_token: None,
                tags: desired_tags(spec, group),
            })
            .collect()
    }

    /// Replays the phases over the live count and returns (min running,
    /// max live) seen at any moment, assuming every launch runs.
    fn replay(plan: &Plan, group: &str, live: u32) -> (u32, u32) {
        let (mut live, mut low, mut high) = (live, live, live);
        for phase in &plan.phases {
            match phase {
                Phase::Launch(launches) => {
                    live += launches
                        .iter()
                        .filter(|l| l.group == group)
                        .map(|l| l.count)
                        .sum::<u32>();
                }
                Phase::Terminate(terminations) => {
                    live -= terminations.iter().filter(|t| t.group == group).count() as u32;
                }
                Phase::Retag(_) => {}
            }
            low = low.min(live);
            high = high.max(live);
        }
        (low, high)
    }

    #[test]
    fn empty_world_launches_desired_balanced_over_zones() {
        let s = spec(vec![group("web", 1, 5, 10)]);
        let p = plan(&s, &Observed::default(), &PlanOptions::default());
        assert_eq!(p.phases.len(), 1);
        let Phase::Launch(launches) = &p.phases[0] else {
            panic!("expected launches, got {:?}", p.phases[0]);
        };
        let counts: Vec<(&str, u32)> = launches
            .iter()
            .map(|l| (l.zone.as_str(), l.count))
            .collect();
        assert_eq!(counts, vec![("us-east-1a", 3), ("us-east-1b", 2)]);
        assert_eq!(launches[0].subnet_id.as_deref(), Some("subnet-a"));
        assert_eq!(
            launches[0].to_string(),
            "group web: launch 3 in us-east-1a: 0 of 5 desired instances live"
        );
    }

    #[test]
    fn unhealthy_instances_are_replaced_launch_first_within_the_budget() {
        let g = group("web", 2, 5, 10);
        let s = spec(vec![g.clone()]);
        let observed = Observed {
            instances: running(&s, &g, 5, 0),
        };
        let mut verdicts = Verdicts::default();
        for id in ["i-00000000000000000", "i-00000000000000001"] {
            verdicts
                .unhealthy
                .insert(id.to_string(), "3 failed probes".to_string());
        }
        let p = plan_with(&s, &observed, &verdicts, &PlanOptions::default());
        // Max surge is 1 (10% of 5): one launch, then one termination, twice.
        let kinds: Vec<(&str, u32)> = p
            .phases
            .iter()
            .map(|phase| match phase {
                Phase::Launch(_) => ("launch", phase.instance_count()),
                Phase::Terminate(_) => ("terminate", phase.instance_count()),
                Phase::Retag(_) => ("retag", phase.instance_count()),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("launch", 1),
                ("terminate", 1),
                ("launch", 1),
                ("terminate", 1)
            ]
        );
        assert_eq!(replay(&p, "web", 5), (5, 6));
        let Phase::Terminate(gone) = &p.phases[1] else {
            panic!("{:?}", p.phases);
        };
        assert_eq!(gone[0].reason.to_string(), "unhealthy: 3 failed probes");
        // Without verdicts, the same world is converged.
        assert!(plan(&s, &observed, &PlanOptions::default()).is_empty());
    }

    #[test]
    fn a_scale_in_removes_exactly_the_instances_it_chose() {
        let mut g = group("web", 1, 3, 10);
        let s = spec(vec![g.clone()]);
        let instances = running(&s, &g, 5, 0);
        g.capacity.desired = 3;
        let mut verdicts = Verdicts::default();
        for id in ["i-00000000000000002", "i-00000000000000004"] {
            verdicts.retire.insert(id.to_string(), "oldest".to_string());
        }
        let p = plan_with(
            &s,
            &Observed { instances },
            &verdicts,
            &PlanOptions::default(),
        );
        let mut gone: Vec<&str> = p
            .phases
            .iter()
            .flat_map(|phase| match phase {
                Phase::Terminate(list) => list.iter().map(|t| t.instance_id.as_str()).collect(),
                _ => Vec::new(),
            })
            .collect();
        gone.sort_unstable();
        assert_eq!(gone, ["i-00000000000000002", "i-00000000000000004"]);
        assert!(p
            .phases
            .iter()
            .all(|phase| !matches!(phase, Phase::Launch(_))));
    }

    #[test]
    fn converged_world_plans_nothing() {
        let g = group("web", 1, 5, 10);
        let s = spec(vec![g.clone()]);
        let observed = Observed {
            instances: running(&s, &g, 5, 0),
        };
        let p = plan(&s, &observed, &PlanOptions::default());
        assert!(p.is_empty(), "{:?}", p.phases);
        assert!(p.consent.is_empty());
    }

    #[test]
    fn scaling_up_launches_exactly_the_difference() {
        let g = group("web", 1, 200, 300);
        let s = spec(vec![g.clone()]);
        let observed = Observed {
            instances: running(&s, &g, 200, 0),
        };
        let mut bigger = g.clone();
        bigger.capacity.desired = 250;
        let p = plan(&spec(vec![bigger]), &observed, &PlanOptions::default());
        assert_eq!(p.totals(), (50, 0, 0));
    }

    #[test]
    fn scaling_down_picks_from_the_fuller_zone_and_needs_consent_past_half() {
        let g = group("web", 0, 10, 10);
        let s = spec(vec![g.clone()]);
        let observed = Observed {
            instances: running(&s, &g, 10, 0),
        };
        let mut smaller = g.clone();
        smaller.capacity.desired = 7;
        let p = plan(
            &spec(vec![smaller.clone()]),
            &observed,
            &PlanOptions::default(),
        );
        assert_eq!(p.totals(), (0, 3, 0));
        assert!(p.consent.is_empty());
        smaller.capacity.desired = 4;
        let p = plan(&spec(vec![smaller]), &observed, &PlanOptions::default());
        assert_eq!(p.totals(), (0, 6, 0));
        assert_eq!(
            p.consent[0].to_string(),
            "group web: the plan removes 6 of 10 live instances, more than 50%"
        );
    }

    #[test]
    fn new_image_replaces_within_the_budget() {
        let g = group("web", 180, 200, 250);
        let s = spec(vec![g.clone()]);
        let observed = Observed {
            instances: running(&s, &g, 200, 0),
        };
        let mut new = g.clone();
        new.image_id = "ami-22222222".into();
        let p = plan(&spec(vec![new.clone()]), &observed, &PlanOptions::default());
        assert_eq!(p.totals(), (200, 200, 0));
        let limits = BudgetLimits::new(&new.capacity, &new.budget);
        let (low, high) = replay(&p, "web", 200);
        assert!(low >= limits.floor && low >= 180, "dropped to {low}");
        assert!(high <= limits.ceiling, "rose to {high}");
        assert!(
            p.consent.is_empty(),
            "a replacement is not a mass termination"
        );
        let Phase::Terminate(first) = &p.phases[1] else {
            panic!("expected terminations after the first launches");
        };
        assert_eq!(
            first[0].reason.to_string(),
            "wrong image (ami-11111111, wants ami-22222222)"
        );
    }

    #[test]
    fn replacement_without_surge_room_terminates_first_within_the_floor() {
        let mut g = group("web", 0, 10, 10);
        g.budget.max_surge = Some(0);
        let s = spec(vec![g.clone()]);
        let observed = Observed {
            instances: running(&s, &g, 10, 0),
        };
        let mut new = g.clone();
        new.instance_types = vec!["m5.large".into()];
        let p = plan(&spec(vec![new]), &observed, &PlanOptions::default());
        assert_eq!(p.totals(), (10, 10, 0));
        let (low, high) = replay(&p, "web", 10);
        assert_eq!((low, high), (9, 10));
    }

    #[test]
    fn a_budget_with_no_room_says_so_instead_of_acting() {
        let mut g = group("web", 3, 3, 3);
        g.budget.min_healthy_share = 1.0;
        let s = spec(vec![g.clone()]);
        let observed = Observed {
            instances: running(&s, &g, 3, 0),
        };
        let mut new = g.clone();
        new.image_id = "ami-33333333".into();
        let p = plan(&spec(vec![new]), &observed, &PlanOptions::default());
        assert!(p.is_empty());
        assert_eq!(p.notes.len(), 1, "{:?}", p.notes);
    }

    #[test]
    fn renamed_group_needs_consent_for_the_vanished_one() {
        let g = group("web", 1, 4, 8);
        let s = spec(vec![g.clone()]);
        let observed = Observed {
            instances: running(&s, &g, 4, 0),
        };
        let mut renamed = g.clone();
        renamed.name = "frontend".into();
        let p = plan(&spec(vec![renamed]), &observed, &PlanOptions::default());
        assert_eq!(p.totals(), (4, 4, 0));
        assert_eq!(
            p.consent,
            vec![ConsentNeeded::GroupRemoved {
                group: "web".into(),
                live: 4
            }]
        );
    }

    #[test]
    fn changed_tags_retag_in_place_and_removed_keys_go() {
        let g = group("web", 1, 4, 8);
        let s = spec(vec![g.clone()]);
        let observed = Observed {
            instances: running(&s, &g, 4, 0),
        };
        let mut retagged = g.clone();
        retagged.tags = [("owner".to_string(), "ops".to_string())].into();
        let p = plan(&spec(vec![retagged]), &observed, &PlanOptions::default());
        assert_eq!(p.totals(), (0, 0, 4));
        let Phase::Retag(retags) = &p.phases[0] else {
            panic!("expected a retag");
        };
        assert_eq!(retags.len(), 1, "one call for the same change");
        assert_eq!(retags[0].remove, vec!["team".to_string()]);
        assert_eq!(retags[0].set.get("owner").map(String::as_str), Some("ops"));
    }

    #[test]
    fn stopped_instances_are_replaced_and_foreign_projects_ignored() {
        let g = group("web", 1, 2, 4);
        let s = spec(vec![g.clone()]);
        let mut instances = running(&s, &g, 2, 0);
        instances[0].state = InstanceState::Stopped;
        let mut foreign = running(&s, &g, 1, 100);
        foreign[0].tags.insert(tags::PROJECT.into(), "other".into());
        instances.extend(foreign);
        let p = plan(&s, &Observed { instances }, &PlanOptions::default());
        assert_eq!(p.totals(), (1, 1, 0));
    }

    #[test]
    fn fingerprint_ignores_pending_to_running_but_not_tags() {
        let g = group("web", 1, 2, 4);
        let s = spec(vec![g.clone()]);
        let mut observed = Observed {
            instances: running(&s, &g, 2, 0),
        };
        let before = observed_fingerprint(&observed);
        observed.instances[0].state = InstanceState::Pending;
        assert_eq!(before, observed_fingerprint(&observed));
        observed.instances[0].tags.insert("x".into(), "y".into());
        assert_ne!(before, observed_fingerprint(&observed));
    }
}
