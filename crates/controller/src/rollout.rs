//! Rollouts of a group behind a load balancer, as data and pure decisions:
//! what a rollout remembers across restarts ([`RolloutRecord`], stored in
//! the group's persisted JSON at every phase change), the launch settings
//! one generation is made of ([`LaunchSettings`]), the group the
//! controller works to once `deploy` overrides and rollback pins are
//! applied ([`effective_group`]), target group names, the target group's
//! health check, zone-balanced launches, and one batch of a rolling update
//! ([`rolling_step`], within the core's budget limits).
//!
//! Not here: calling ELBv2 or EC2, waiting, events (the controller's
//! `rollout` driver does those), and the load balancer's data plane
//! (`endstate-lb`).

use std::collections::BTreeMap;

use endstate_model::rollout::{Amount, Rollout, Strategy};
use endstate_model::{
    Capacity, DisruptionBudget, Group, MetadataOptions, RootVolume, UserData, Zone,
};
use endstate_plan::{BudgetLimits, Launch, LaunchReason};
use endstate_provider::elbv2::TargetGroupHealthCheck;
use serde::{Deserialize, Serialize};

use endstate_model::health::ProbeTarget;

/// ELBv2's limit on a target group's name.
pub const TARGET_GROUP_NAME_MAX: usize = 32;

/// Below this many requests in the window, an error rate is not judged
/// (one failed request of three is noise, not a verdict).
pub const MIN_REQUESTS_FOR_ERROR_RATE: u64 = 20;

/// Everything of a group that makes one generation: what
/// [`Group::generation`] hashes. Applying it to a group gives that
/// generation back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchSettings {
    pub image_id: String,
    pub instance_types: Vec<String>,
    pub zones: Vec<Zone>,
    pub security_group_ids: Vec<String>,
    pub key_name: Option<String>,
    pub iam_instance_profile: Option<String>,
    pub root_volume: Option<RootVolume>,
    pub metadata: MetadataOptions,
    /// References and hashes only: secrets stay references.
    pub user_data: Option<UserData>,
}

impl LaunchSettings {
    pub fn of(group: &Group) -> Self {
        Self {
            image_id: group.image_id.clone(),
            instance_types: group.instance_types.clone(),
            zones: group.zones.clone(),
            security_group_ids: group.security_group_ids.clone(),
            key_name: group.key_name.clone(),
            iam_instance_profile: group.iam_instance_profile.clone(),
            root_volume: group.root_volume.clone(),
            metadata: group.metadata.clone(),
            user_data: group.user_data.clone(),
        }
    }

    /// `group` with these settings (capacity, health, scaling and the rest
    /// stay the group's own).
    pub fn apply_to(&self, group: &Group) -> Group {
        Group {
            image_id: self.image_id.clone(),
            instance_types: self.instance_types.clone(),
            zones: self.zones.clone(),
            security_group_ids: self.security_group_ids.clone(),
            key_name: self.key_name.clone(),
            iam_instance_profile: self.iam_instance_profile.clone(),
            root_volume: self.root_volume.clone(),
            metadata: self.metadata.clone(),
            user_data: self.user_data.clone(),
            ..group.clone()
        }
    }

    pub fn generation(&self, group: &Group) -> String {
        self.apply_to(group).generation()
    }
}

/// `POST /v1/groups/{group}/deploy`: another image for the group, until
/// the spec's group changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployOverride {
    pub image: String,
    /// The spec group's generation when the override was made.
    pub spec_generation: String,
}

/// After a rollback: the group stays at `settings` until what was asked
/// for (the spec's group with its deploy override) changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    /// The generation asked for when the pin was made.
    pub requested: String,
    /// The generation pinned to.
    pub generation: String,
    pub settings: LaunchSettings,
    pub reason: String,
}

/// A generation and its settings (the one last converged on, or the one
/// before the last completed rollout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settled {
    pub generation: String,
    pub settings: LaunchSettings,
}

/// The spec's group with its deploy override applied (when the override
/// was made for this spec group).
pub fn requested_group(spec_group: &Group, deploy: Option<&DeployOverride>) -> Group {
    match deploy {
        Some(o) if o.spec_generation == spec_group.generation() => Group {
            image_id: o.image.clone(),
            ..spec_group.clone()
        },
        _ => spec_group.clone(),
    }
}

/// The group the controller works to: [`requested_group`], then the
/// rollback pin when it was made for what is requested now.
pub fn effective_group(
    spec_group: &Group,
    deploy: Option<&DeployOverride>,
    pin: Option<&Pin>,
) -> Group {
    let requested = requested_group(spec_group, deploy);
    match pin {
        Some(pin) if pin.requested == requested.generation() => pin.settings.apply_to(&requested),
        _ => requested,
    }
}

/// Where a rollout is. Stored as snake_case text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutPhase {
    /// Blue-green: launching the new generation beside the old.
    Launching,
    /// Blue-green: waiting until every new target is healthy.
    WaitingHealthy,
    /// Blue-green: traffic shifted to a canary weight, held and watched.
    Canary,
    /// Blue-green: all traffic on the new generation, watched.
    Watching,
    /// Blue-green: the old generation kept for an instant rollback.
    KeepingOld,
    /// Blue-green: the old generation drained and terminated.
    ScalingDownOld,
    /// Rolling: replacing in batches.
    Rolling,
    /// Rolling: the last batch done, watched.
    RollingWatch,
    /// Going back to the old generation.
    RollingBack,
    /// Failed without automatic rollback: held until a rollback or a new
    /// spec.
    Failed,
}

impl RolloutPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutPhase::Launching => "launching",
            RolloutPhase::WaitingHealthy => "waiting_healthy",
            RolloutPhase::Canary => "canary",
            RolloutPhase::Watching => "watching",
            RolloutPhase::KeepingOld => "keeping_old",
            RolloutPhase::ScalingDownOld => "scaling_down_old",
            RolloutPhase::Rolling => "rolling",
            RolloutPhase::RollingWatch => "rolling_watch",
            RolloutPhase::RollingBack => "rolling_back",
            RolloutPhase::Failed => "failed",
        }
    }

    /// Before the old generation is gone: a rollback is an instant switch
    /// back.
    pub fn old_still_there(self) -> bool {
        !matches!(self, RolloutPhase::ScalingDownOld)
    }
}

/// A rollout in progress, as persisted in the group's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// `rolling` or `blue_green`.
    pub strategy: String,
    /// `spec`, `deploy`, `rollback` (through the API after completion).
    pub trigger: String,
    pub from: String,
    pub to: String,
    /// `None` when the old generation's settings were never seen (its
    /// instances predate the controller): a rolling rollback cannot
    /// relaunch it.
    pub from_settings: Option<LaunchSettings>,
    pub to_settings: LaunchSettings,
    /// The capacity the rollout launches at (the group's when it started).
    pub desired: u32,
    pub phase: RolloutPhase,
    /// Blue-green: the canary weight index reached.
    #[serde(default)]
    pub canary_step: usize,
    /// The listener's weights by generation, as last set.
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    pub started_at_ms: i64,
    pub phase_started_ms: i64,
    /// When the listener's switch to the new generation was acknowledged.
    pub switched_at_ms: Option<i64>,
    /// When the new generation first got traffic (error rates count from
    /// here).
    pub traffic_at_ms: Option<i64>,
    /// Why it failed (set once it did).
    pub failure: Option<String>,
    /// Whether a rollback ends with a pin (automatic and API rollbacks do;
    /// the one that makes way for a newer spec does not).
    #[serde(default = "yes")]
    pub pin_after_rollback: bool,
    /// The kind of the last event of this rollout.
    pub last_event: Option<String>,
}

fn yes() -> bool {
    true
}

/// The strategy's name as events and views write it.
pub fn strategy_name(strategy: &Strategy) -> &'static str {
    match strategy {
        Strategy::Rolling { .. } => "rolling",
        Strategy::BlueGreen { .. } => "blue_green",
    }
}

/// A group's rollout configuration: its own, or the default rolling one.
pub fn rollout_of(group: &Group) -> Rollout {
    group
        .rollout
        .clone()
        .unwrap_or_else(Rollout::default_rolling)
}

/// `{group}-{generation}`, the group's name shortened so the whole is at
/// most 32 characters (ELBv2's limit) and no `-` is doubled or trailing.
pub fn target_group_name(group: &str, generation: &str) -> String {
    let room = TARGET_GROUP_NAME_MAX.saturating_sub(generation.len() + 1);
    let mut base: String = group
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(room)
        .collect();
    while base.ends_with('-') {
        base.pop();
    }
    if base.is_empty() {
        format!("g-{generation}")
    } else {
        format!("{base}-{generation}")
    }
}

/// The target group's health check from the group's: the same probe,
/// interval, timeout and thresholds; none → HTTP GET / on the traffic
/// port with ELB's defaults.
pub fn target_group_health_check(group: &Group) -> TargetGroupHealthCheck {
    let traffic_port = group.load_balancer.as_ref().map(|l| l.port);
    let port = |p: u16| {
        if Some(p) == traffic_port {
            "traffic-port".to_string()
        } else {
            p.to_string()
        }
    };
    match &group.health_check {
        Some(check) => {
            let (protocol, port, path, matcher) = match &check.probe {
                ProbeTarget::Http {
                    port: p,
                    path,
                    expected,
                } => (
                    "HTTP",
                    port(*p),
                    Some(path.clone()),
                    Some(expected.to_string()),
                ),
                ProbeTarget::Tcp { port: p } => ("TCP", port(*p), None, None),
            };
            TargetGroupHealthCheck {
                protocol: protocol.to_string(),
                port,
                path,
                interval_seconds: u32::try_from(check.interval_seconds).unwrap_or(u32::MAX),
                timeout_seconds: u32::try_from(check.timeout_seconds).unwrap_or(u32::MAX),
                healthy_threshold: check.healthy_threshold,
                unhealthy_threshold: check.unhealthy_threshold,
                matcher,
            }
        }
        None => TargetGroupHealthCheck {
            protocol: "HTTP".to_string(),
            port: "traffic-port".to_string(),
            path: Some("/".to_string()),
            interval_seconds: 30,
            timeout_seconds: 5,
            healthy_threshold: 5,
            unhealthy_threshold: 2,
            matcher: Some("200".to_string()),
        },
    }
}

/// Launches that bring `have` (live instances of the generation per zone)
/// to `count` more instances, spread so the zones end as even as
/// possible (the emptiest zone first; ties in the group's zone order).
pub fn balanced_launches(
    group: &Group,
    have: &BTreeMap<String, u32>,
    count: u32,
    reason: LaunchReason,
) -> Vec<Launch> {
    if group.zones.is_empty() || count == 0 {
        return Vec::new();
    }
    let mut now: Vec<u32> = group
        .zones
        .iter()
        .map(|z| have.get(&z.name).copied().unwrap_or(0))
        .collect();
    let mut add = vec![0u32; group.zones.len()];
    for _ in 0..count {
        let mut best = 0;
        for i in 1..now.len() {
            if now[i] < now[best] {
                best = i;
            }
        }
        now[best] += 1;
        add[best] += 1;
    }
    group
        .zones
        .iter()
        .zip(add)
        .filter(|(_, n)| *n > 0)
        .map(|(zone, n)| Launch {
            group: group.name.clone(),
            zone: zone.name.clone(),
            subnet_id: zone.subnet_ids.first().cloned(),
            count: n,
            reason: reason.clone(),
        })
        .collect()
}

/// A rolling update's bounds for `desired` instances, as the core's
/// budget limits: ceiling = desired + max surge (live never above),
/// floor = desired − max unavailable (serving never below). Both zero
/// (which validation refuses) would stall: a surge of 1 is used then.
pub fn rolling_limits(desired: u32, max_surge: Amount, max_unavailable: Amount) -> BudgetLimits {
    let mut surge = max_surge.round_up(desired);
    let unavailable = max_unavailable.round_down(desired).min(desired);
    if surge == 0 && unavailable == 0 {
        surge = 1;
    }
    let floor = desired - unavailable;
    let share = if desired == 0 {
        0.0
    } else {
        f64::from(floor) / f64::from(desired)
    };
    let limits = BudgetLimits::new(
        &Capacity {
            min: floor,
            desired,
            max: desired.saturating_add(surge),
        },
        &DisruptionBudget {
            min_healthy_share: share,
            max_surge: Some(surge),
        },
    );
    debug_assert_eq!(limits.floor, floor);
    limits
}

/// What one batch of a rolling update does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollingStep {
    /// Launch this many of the new generation.
    Launch(u32),
    /// Drain and terminate this many of the old generation.
    Remove(u32),
    /// Wait (new instances are not serving yet).
    Wait,
    /// Only the new generation is left, at desired.
    Done,
}

/// One batch's decision from what is observed now: `new_live`/`old_live`
/// live instances of each generation, `serving` of them healthy in the
/// load balancer. Launches keep live ≤ ceiling; removals keep serving ≥
/// floor (every removed old instance may have been serving).
pub fn rolling_step(
    limits: BudgetLimits,
    desired: u32,
    new_live: u32,
    old_live: u32,
    serving: u32,
) -> RollingStep {
    let live = new_live + old_live;
    if old_live == 0 && new_live >= desired {
        return RollingStep::Done;
    }
    let wanted = desired.saturating_sub(new_live);
    let may_add = limits.may_add(live);
    if wanted > 0 && may_add > 0 {
        return RollingStep::Launch(wanted.min(may_add));
    }
    if old_live > 0 {
        // Every old instance removed may have been serving.
        let remove = limits.may_remove(serving).min(old_live);
        if remove > 0 {
            return RollingStep::Remove(remove);
        }
    }
    RollingStep::Wait
}

/// Listener weights for generations with `counts` healthy targets each
/// (ELBv2 takes 0..=999; scaled down when larger). All zero: `None`.
pub fn weights_by_count(counts: &BTreeMap<String, u32>) -> Option<BTreeMap<String, u32>> {
    let max = counts.values().copied().max().unwrap_or(0);
    if max == 0 {
        return None;
    }
    Some(
        counts
            .iter()
            .map(|(g, &n)| {
                let w = if max > 999 {
                    (u64::from(n) * 999 / u64::from(max)) as u32
                } else {
                    n
                };
                (g.clone(), w)
            })
            .collect(),
    )
}

/// The error rate judged from `requests` and `server_errors`, when there
/// are enough requests to judge: `Some(rate)` above `max`.
pub fn error_rate_exceeded(requests: u64, server_errors: u64, max: f64) -> Option<f64> {
    if requests < MIN_REQUESTS_FOR_ERROR_RATE {
        return None;
    }
    let rate = server_errors as f64 / requests as f64;
    (rate > max).then_some(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_group_names_fit_elbv2s_limit() {
        assert_eq!(target_group_name("web", "0123abcd"), "web-0123abcd");
        let long = "a-very-long-group-name-that-goes-on";
        let name = target_group_name(long, "0123abcd");
        assert!(name.len() <= 32, "{name}");
        assert!(name.ends_with("-0123abcd"));
        assert!(!name.contains("--"), "{name}");
        // Truncation landing on a dash drops it.
        let name = target_group_name("abcdefghijklmnopqrstuvw-xyz", "0123abcd");
        assert_eq!(name, "abcdefghijklmnopqrstuvw-0123abcd");
        let name = target_group_name("abcdefghijklmnopqrstuv-xyz", "0123abcd");
        assert_eq!(name, "abcdefghijklmnopqrstuv-0123abcd");
    }

    #[test]
    fn rolling_limits_follow_the_amounts() {
        let l = rolling_limits(5, Amount::Percent(25), Amount::Percent(25));
        // 25% of 5: surge rounds up to 2, unavailable down to 1.
        assert_eq!((l.floor, l.ceiling), (4, 7));
        let l = rolling_limits(5, Amount::Count(0), Amount::Count(0));
        assert_eq!((l.floor, l.ceiling), (5, 6));
        let l = rolling_limits(10, Amount::Count(0), Amount::Percent(30));
        assert_eq!((l.floor, l.ceiling), (7, 10));
    }

    /// Simulates a whole rolling update (every launch turns healthy before
    /// the next step) and checks the bounds at every step.
    #[test]
    fn rolling_steps_stay_within_surge_and_unavailability() {
        for (desired, surge, unavailable) in [
            (5, Amount::Count(1), Amount::Count(0)),
            (5, Amount::Count(0), Amount::Count(1)),
            (5, Amount::Percent(25), Amount::Percent(25)),
            (10, Amount::Count(3), Amount::Count(2)),
            (1, Amount::Count(1), Amount::Count(0)),
            (3, Amount::Count(0), Amount::Count(3)),
        ] {
            let limits = rolling_limits(desired, surge, unavailable);
            let (mut new, mut old) = (0u32, desired);
            let mut steps = 0;
            loop {
                steps += 1;
                assert!(
                    steps < 100,
                    "no progress for {desired} {surge:?} {unavailable:?}"
                );
                match rolling_step(limits, desired, new, old, new + old) {
                    RollingStep::Launch(n) => {
                        new += n;
                        assert!(new + old <= limits.ceiling);
                    }
                    RollingStep::Remove(n) => {
                        old -= n;
                        assert!(new + old >= limits.floor);
                    }
                    RollingStep::Wait => panic!("stalled at {new} new, {old} old"),
                    RollingStep::Done => break,
                }
            }
            assert_eq!((new, old), (desired, 0));
        }
    }

    #[test]
    fn rolling_waits_while_new_instances_are_not_serving() {
        let limits = rolling_limits(5, Amount::Count(1), Amount::Count(0));
        // One new launched, not healthy: serving 5 of 6, floor 5.
        assert_eq!(rolling_step(limits, 5, 1, 5, 5), RollingStep::Wait);
        assert_eq!(rolling_step(limits, 5, 1, 5, 6), RollingStep::Remove(1));
    }

    #[test]
    fn error_rates_need_enough_requests() {
        assert_eq!(error_rate_exceeded(10, 5, 0.05), None);
        assert_eq!(error_rate_exceeded(100, 5, 0.05), None);
        assert_eq!(error_rate_exceeded(100, 10, 0.05), Some(0.1));
    }

    fn group() -> Group {
        let text = r#"project: p
provider:
  aws: { region: us-east-1 }
groups:
  web:
    image: ami-00000000000000001
    instance_type: t3.micro
    capacity: { min: 1, desired: 5, max: 9 }
    zones: [us-east-1a, us-east-1b, us-east-1c]
"#;
        endstate_model::load_str(
            text,
            std::path::Path::new("spec.yaml"),
            std::path::Path::new("."),
            None,
        )
        .unwrap_or_else(|d| panic!("{d}"))
        .groups
        .remove(0)
    }

    #[test]
    fn deploy_overrides_and_pins_last_until_the_spec_group_changes() {
        let spec = group();
        let deploy = DeployOverride {
            image: "ami-00000000000000002".into(),
            spec_generation: spec.generation(),
        };
        let deployed = effective_group(&spec, Some(&deploy), None);
        assert_eq!(deployed.image_id, "ami-00000000000000002");
        assert_ne!(deployed.generation(), spec.generation());
        // Pinned back to the spec's own settings while v2 is asked for.
        let pin = Pin {
            requested: deployed.generation(),
            generation: spec.generation(),
            settings: LaunchSettings::of(&spec),
            reason: "failed".into(),
        };
        let pinned = effective_group(&spec, Some(&deploy), Some(&pin));
        assert_eq!(pinned.generation(), spec.generation());
        // A new spec image: the override and the pin no longer apply.
        let changed = Group {
            image_id: "ami-00000000000000003".into(),
            ..spec.clone()
        };
        let now = effective_group(&changed, Some(&deploy), Some(&pin));
        assert_eq!(now.generation(), changed.generation());
        assert_eq!(
            LaunchSettings::of(&spec).generation(&changed),
            spec.generation()
        );
    }

    #[test]
    fn launches_fill_the_emptiest_zones_first() {
        let g = group();
        let have = BTreeMap::from([("us-east-1a".to_string(), 2)]);
        let launches = balanced_launches(&g, &have, 4, LaunchReason::Replacement { outdated: 5 });
        let counts: Vec<(&str, u32)> = launches
            .iter()
            .map(|l| (l.zone.as_str(), l.count))
            .collect();
        assert_eq!(counts, vec![("us-east-1b", 2), ("us-east-1c", 2)]);
    }

    #[test]
    fn weights_follow_healthy_counts() {
        let counts = BTreeMap::from([("a".to_string(), 3), ("b".to_string(), 2)]);
        assert_eq!(weights_by_count(&counts), Some(counts.clone()));
        let none = BTreeMap::from([("a".to_string(), 0)]);
        assert_eq!(weights_by_count(&none), None);
    }
}
