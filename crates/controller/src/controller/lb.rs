//! The controller's side of a group's load balancer: ensuring the spec's
//! load balancer, its listener, the deregistration delay and one target
//! group per generation exist (every create is idempotent by name, so a
//! restart repeats them safely); registering the group's running
//! instances in their generation's target group; draining targets before
//! they are terminated; setting the listener's weights.
//!
//! ARNs are cached per group in memory (a restart reads them again); the
//! cache is dropped when a call fails, so the next reconcile starts over.
//! Not here: deciding what to roll out (the `rollout` driver) or the data
//! plane (`endstate-lb`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use std::sync::Arc;

use endstate_exec::{ApplyReport, ExecError, Executor};
use endstate_model::{tags, Group, LoadBalancerSpec, Spec};
use endstate_plan::{Instance, InstanceState, Phase, Plan, TerminateReason};
use endstate_provider::elbv2::{
    ForwardAction, LoadBalancing, TargetDescription, TargetGroupSpec, WeightedTargetGroup,
};
use endstate_provider::ProviderError;

use super::{lock, Inner};
use crate::rollout::{target_group_health_check, target_group_name};

/// What a group's load balancer is, once ensured.
#[derive(Debug, Clone, Default)]
pub(crate) struct LbCache {
    pub listener_arn: String,
    pub port: u16,
    pub deregistration_delay: Duration,
    /// Generation → target group ARN.
    pub target_groups: BTreeMap<String, String>,
    /// The listener's weights as last set (target group ARN → weight).
    pub forward: Option<Vec<(String, u32)>>,
}

/// The generation an instance belongs to (`""` when untagged: launched
/// before generations were tagged).
pub(crate) fn generation_of(instance: &Instance) -> &str {
    instance.tag(tags::GENERATION).unwrap_or("")
}

/// Why a group's load balancer cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LbError {
    #[error("the spec has no load balancer {0} (the group names it)")]
    NotInSpec(String),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl Inner {
    fn lb_cached(&self, group: &str) -> Option<LbCache> {
        lock(&self.lb_cache).get(group).cloned()
    }

    pub(crate) fn forget_lb(&self, group: &str) {
        lock(&self.lb_cache).remove(group);
    }

    /// Ensures the group's load balancer, its listener on the spec's port,
    /// and the target group of `generation` (with the deregistration
    /// delay). A new listener forwards to that target group.
    pub(crate) async fn ensure_lb(
        &self,
        lb: &dyn LoadBalancing,
        spec: &Spec,
        group: &Group,
        generation: &str,
    ) -> Result<LbCache, LbError> {
        let Some(wanted) = group.load_balancer.as_ref() else {
            return Err(LbError::NotInSpec(String::new()));
        };
        let lb_spec: &LoadBalancerSpec = spec
            .load_balancers
            .iter()
            .find(|l| l.name == wanted.name)
            .ok_or_else(|| LbError::NotInSpec(wanted.name.clone()))?;
        if let Some(cache) = self.lb_cached(&group.name) {
            if cache.port == lb_spec.port
                && cache.deregistration_delay == lb_spec.deregistration_delay
            {
                if cache.target_groups.contains_key(generation) {
                    return Ok(cache);
                }
                self.target_group(lb, spec, group, generation).await?;
                return self
                    .lb_cached(&group.name)
                    .ok_or_else(|| LbError::NotInSpec(wanted.name.clone()));
            }
        }
        let result = self
            .ensure_lb_uncached(lb, spec, group, lb_spec, generation)
            .await;
        if result.is_err() {
            self.forget_lb(&group.name);
        }
        result
    }

    async fn ensure_lb_uncached(
        &self,
        lb: &dyn LoadBalancing,
        spec: &Spec,
        group: &Group,
        lb_spec: &LoadBalancerSpec,
        generation: &str,
    ) -> Result<LbCache, LbError> {
        let found = lb
            .describe_load_balancers(std::slice::from_ref(&lb_spec.name))
            .await?;
        let balancer = match found.into_iter().next() {
            Some(found) => found,
            None => {
                let subnets: Vec<String> = group
                    .zones
                    .iter()
                    .filter_map(|z| z.subnet_ids.first().cloned())
                    .collect();
                lb.create_load_balancer(
                    &lb_spec.name,
                    &subnets,
                    &[(tags::PROJECT.to_string(), spec.project.clone())],
                )
                .await?
            }
        };
        lock(&self.lb_cache).insert(
            group.name.clone(),
            LbCache {
                port: lb_spec.port,
                deregistration_delay: lb_spec.deregistration_delay,
                ..LbCache::default()
            },
        );
        let tg = self.target_group(lb, spec, group, generation).await?;
        let listeners = lb.describe_listeners(&balancer.arn).await?;
        let listener = match listeners.into_iter().find(|l| l.port == lb_spec.port) {
            Some(listener) => listener,
            None => {
                lb.create_listener(
                    &balancer.arn,
                    lb_spec.port,
                    &ForwardAction {
                        target_groups: vec![WeightedTargetGroup {
                            target_group_arn: tg.clone(),
                            weight: 100,
                        }],
                    },
                )
                .await?
            }
        };
        let mut groups = lock(&self.lb_cache);
        let cache = groups.entry(group.name.clone()).or_default();
        cache.listener_arn = listener.arn.clone();
        cache.forward = Some(
            listener
                .default_action
                .target_groups
                .iter()
                .map(|w| (w.target_group_arn.clone(), w.weight))
                .collect(),
        );
        Ok(cache.clone())
    }

    /// The target group of `generation` for the group (created if needed,
    /// its deregistration delay set), cached.
    pub(crate) async fn target_group(
        &self,
        lb: &dyn LoadBalancing,
        spec: &Spec,
        group: &Group,
        generation: &str,
    ) -> Result<String, ProviderError> {
        if let Some(arn) = self
            .lb_cached(&group.name)
            .and_then(|c| c.target_groups.get(generation).cloned())
        {
            return Ok(arn);
        }
        let port = group.load_balancer.as_ref().map(|l| l.port).unwrap_or(80);
        let created = lb
            .create_target_group(&TargetGroupSpec {
                name: target_group_name(&group.name, generation),
                port,
                vpc_id: None,
                health_check: target_group_health_check(group),
                tags: vec![
                    (tags::PROJECT.to_string(), spec.project.clone()),
                    (tags::GROUP.to_string(), group.name.clone()),
                    (tags::GENERATION.to_string(), generation.to_string()),
                ],
            })
            .await?;
        let delay = self
            .lb_cached(&group.name)
            .map(|c| c.deregistration_delay)
            .unwrap_or(Duration::from_secs(300));
        lb.set_deregistration_delay(
            &created.arn,
            u32::try_from(delay.as_secs()).unwrap_or(u32::MAX),
        )
        .await?;
        if let Some(cache) = lock(&self.lb_cache).get_mut(&group.name) {
            cache
                .target_groups
                .insert(generation.to_string(), created.arn.clone());
        }
        Ok(created.arn)
    }

    /// Registers the running instances among `instances` whose generation
    /// is `generation` in `tg` (those not yet registered); deregisters,
    /// without waiting, targets that are no longer live. Returns the ids
    /// newly registered.
    pub(crate) async fn register_running(
        &self,
        lb: &dyn LoadBalancing,
        tg: &str,
        generation: &str,
        instances: &[Instance],
    ) -> Result<Vec<String>, ProviderError> {
        let health = lb.describe_target_health(tg).await?;
        let registered: BTreeSet<&str> = health
            .iter()
            .filter(|h| h.state != "draining")
            .map(|h| h.target.id.as_str())
            .collect();
        let running: Vec<&Instance> = instances
            .iter()
            .filter(|i| i.state == InstanceState::Running && generation_of(i) == generation)
            .collect();
        let missing: Vec<TargetDescription> = running
            .iter()
            .filter(|i| !registered.contains(i.id.as_str()))
            .map(|i| TargetDescription {
                id: i.id.clone(),
                port: None,
            })
            .collect();
        if !missing.is_empty() {
            lb.register_targets(tg, &missing).await?;
        }
        let live: BTreeSet<&str> = instances
            .iter()
            .filter(|i| i.state.is_live())
            .map(|i| i.id.as_str())
            .collect();
        let gone: Vec<TargetDescription> = health
            .iter()
            .filter(|h| h.state != "draining" && !live.contains(h.target.id.as_str()))
            .map(|h| h.target.clone())
            .collect();
        if !gone.is_empty() {
            lb.deregister_targets(tg, &gone).await?;
        }
        Ok(missing.into_iter().map(|t| t.id).collect())
    }

    /// Target id → ELBv2 state (`healthy`, `initial`, …) in `tg`.
    pub(crate) async fn target_states(
        &self,
        lb: &dyn LoadBalancing,
        tg: &str,
    ) -> Result<BTreeMap<String, String>, ProviderError> {
        Ok(lb
            .describe_target_health(tg)
            .await?
            .into_iter()
            .map(|h| (h.target.id, h.state))
            .collect())
    }

    /// Deregisters `ids` from `tg`; with `wait`, until DescribeTargetHealth
    /// no longer lists them (draining done), at most the deregistration
    /// delay (and one poll more). Returns false when the controller is
    /// stopping.
    pub(crate) async fn drain(
        &self,
        lb: &dyn LoadBalancing,
        tg: &str,
        ids: &[String],
        wait: bool,
        delay: Duration,
    ) -> Result<bool, ProviderError> {
        if ids.is_empty() {
            return Ok(true);
        }
        // Only what the group lists can be deregistered (ELBv2 refuses the
        // rest with InvalidTarget): a rollback may come before the new
        // generation was ever registered.
        let listed: BTreeSet<String> = lb
            .describe_target_health(tg)
            .await?
            .into_iter()
            .map(|h| h.target.id)
            .collect();
        let ids: Vec<String> = ids
            .iter()
            .filter(|id| listed.contains(*id))
            .cloned()
            .collect();
        if ids.is_empty() {
            return Ok(true);
        }
        let targets: Vec<TargetDescription> = ids
            .iter()
            .map(|id| TargetDescription {
                id: id.clone(),
                port: None,
            })
            .collect();
        lb.deregister_targets(tg, &targets).await?;
        if !wait {
            return Ok(true);
        }
        let end = self.clock.now() + delay + self.options.rollout_poll;
        let ids: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        loop {
            let listed = lb.describe_target_health(tg).await?;
            if !listed.iter().any(|h| ids.contains(h.target.id.as_str())) {
                return Ok(true);
            }
            if self.clock.now() >= end {
                return Ok(true);
            }
            if !self.pause_for(self.options.rollout_poll).await {
                return Ok(false);
            }
        }
    }

    /// Sets the listener to forward by `weights` (target group ARN →
    /// weight), unless it already does.
    pub(crate) async fn set_forward(
        &self,
        lb: &dyn LoadBalancing,
        group: &str,
        weights: Vec<(String, u32)>,
    ) -> Result<bool, ProviderError> {
        let Some(cache) = self.lb_cached(group) else {
            return Ok(false);
        };
        let mut sorted = weights.clone();
        sorted.sort();
        let mut current = cache.forward.clone().unwrap_or_default();
        current.sort();
        if current == sorted {
            return Ok(false);
        }
        let action = ForwardAction {
            target_groups: weights
                .iter()
                .map(|(arn, weight)| WeightedTargetGroup {
                    target_group_arn: arn.clone(),
                    weight: *weight,
                })
                .collect(),
        };
        let result = lb.modify_listener(&cache.listener_arn, &action).await;
        match result {
            Ok(_) => {
                if let Some(cache) = lock(&self.lb_cache).get_mut(group) {
                    cache.forward = Some(weights);
                }
                Ok(true)
            }
            Err(error) => {
                self.forget_lb(group);
                Err(error)
            }
        }
    }

    /// Deletes the target group of `generation` (after its instances are
    /// gone); a target group already gone is fine.
    pub(crate) async fn delete_target_group(
        &self,
        lb: &dyn LoadBalancing,
        group: &str,
        generation: &str,
    ) -> Result<(), ProviderError> {
        let arn = self
            .lb_cached(group)
            .and_then(|c| c.target_groups.get(generation).cloned());
        if let Some(arn) = arn {
            lb.delete_target_group(&arn).await?;
            if let Some(cache) = lock(&self.lb_cache).get_mut(group) {
                cache.target_groups.remove(generation);
            }
        }
        Ok(())
    }

    /// The generations whose target groups the group's cache knows.
    pub(crate) fn lb_cache_generations(&self, group: &str) -> Vec<String> {
        self.lb_cached(group)
            .map(|c| c.target_groups.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Runs `plan` phase by phase; before a termination phase, its
    /// instances are deregistered from their generation's target group —
    /// unhealthy ones (replaced) without waiting, the others (scale-in,
    /// surplus) waiting until draining is done.
    pub(crate) async fn apply_draining(
        &self,
        executor: &Executor,
        spec: &Arc<Spec>,
        plan: &Plan,
        lb: Option<&Arc<dyn LoadBalancing>>,
        generations: &BTreeMap<String, String>,
    ) -> Result<ApplyReport, ExecError> {
        let Some(lb) = lb else {
            return executor.apply(&self.session, spec, plan).await;
        };
        let group = plan
            .phases
            .iter()
            .find_map(|p| match p {
                Phase::Terminate(list) => list.first().map(|t| t.group.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let cache = self.lb_cached(&group);
        let mut report = ApplyReport::default();
        for phase in &plan.phases {
            if let (Phase::Terminate(list), Some(cache)) = (phase, &cache) {
                let mut wait: BTreeMap<&str, Vec<String>> = BTreeMap::new();
                let mut now: BTreeMap<&str, Vec<String>> = BTreeMap::new();
                for termination in list {
                    let Some(tg) = generations
                        .get(&termination.instance_id)
                        .and_then(|g| cache.target_groups.get(g))
                    else {
                        continue;
                    };
                    let bucket = if matches!(termination.reason, TerminateReason::Unhealthy { .. })
                    {
                        &mut now
                    } else {
                        &mut wait
                    };
                    bucket
                        .entry(tg.as_str())
                        .or_default()
                        .push(termination.instance_id.clone());
                }
                for (tg, ids) in now {
                    self.drain(lb.as_ref(), tg, &ids, false, cache.deregistration_delay)
                        .await?;
                }
                for (tg, ids) in wait {
                    if !self
                        .drain(lb.as_ref(), tg, &ids, true, cache.deregistration_delay)
                        .await?
                    {
                        report.interrupted = true;
                        return Ok(report);
                    }
                }
            }
            let one = Plan {
                phases: vec![phase.clone()],
                ..plan.clone()
            };
            let done = executor.apply(&self.session, spec, &one).await?;
            report.launched.extend(done.launched);
            report.terminated.extend(done.terminated);
            report.retagged += done.retagged;
            report.fallbacks += done.fallbacks;
            report.failed_to_run.extend(done.failed_to_run);
            if done.interrupted {
                report.interrupted = true;
                break;
            }
        }
        Ok(report)
    }

    /// Sleeps `span` on the controller's clock; false when the controller
    /// stops meanwhile.
    pub(crate) async fn pause_for(&self, span: Duration) -> bool {
        let mut stop = self.stop.subscribe();
        if *stop.borrow() {
            return false;
        }
        tokio::select! {
            _ = stop.changed() => false,
            () = self.clock.sleep(span) => !self.stopping(),
        }
    }
}
