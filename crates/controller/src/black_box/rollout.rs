//! Rollouts of `endstate serve` over the in-memory `FakeProvider` (EC2) and
//! `FakeLoadBalancing` (ELBv2, written here: target groups whose targets
//! turn healthy, stay initial or fail by the generation's image, draining
//! for the deregistration delay, a listener's weights, request counts with
//! a per-image 5xx share), with a real SQLite state, on a `ManualClock`.
//!
//! - blue-green: the events in order, the listener switched, the old
//!   generation drained and gone; then a rollback through the API rolls
//!   the previous generation out again;
//! - a new generation that never turns healthy is rolled back, never got
//!   traffic, and the group is pinned (no retry loop);
//! - a generation answering 5xx above the threshold during the canary is
//!   rolled back by the error-rate check;
//! - rolling: max surge and max unavailable hold at every ELBv2 call;
//! - a controller restarted mid-rollout resumes without launching again;
//! - scaling only records while a rollout owns the group;
//! - a scale-in drains its targets (the deregistration delay) before
//!   terminating them;
//! - without automatic rollback a failed rollout is held until rolled back;
//! - a paused group holds its rollout where it is;
//! - an endpoint without ELBv2 is reported once, and the group is still
//!   reconciled (without its load balancer).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use endstate_clock::{Clock, ManualClock, SharedClock};
use endstate_controller::view::{ControllerApi, EventView, MetricSample};
use endstate_controller::{Controller, Options, Parts, SpecSource};
use endstate_exec::{ApplyOptions, Session};
use endstate_model::rollout::{Amount, Rollout, Strategy};
use endstate_model::{tags, GroupLoadBalancer, LoadBalancerSpec, Spec};
use endstate_provider::elbv2::{
    ForwardAction, Listener, LoadBalancer, LoadBalancing, TargetDescription, TargetGroup,
    TargetGroupRequestCounts, TargetGroupSpec, TargetHealthDescription,
};
use endstate_provider::fake::FakeProvider;
use endstate_provider::{Provider, ProviderError};
use endstate_state::{RunKind, RunOutcome, SqliteStore, Store};

// ---- the fake ELBv2 ----------------------------------------------------

/// How targets of an image behave.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Healthy `healthy_after` after registration.
    Healthy,
    /// Unhealthy once judged.
    Failing,
    /// Healthy, but this share of requests answers 5xx.
    Errors(f64),
}

#[derive(Debug, Clone)]
struct FakeTarget {
    registered_at: Duration,
    deregistered_at: Option<Duration>,
}

#[derive(Debug, Clone)]
struct FakeTargetGroup {
    group: TargetGroup,
    generation: String,
    delay: Duration,
    targets: BTreeMap<String, FakeTarget>,
}

#[derive(Default)]
struct FakeElbState {
    balancers: BTreeMap<String, LoadBalancer>,
    target_groups: BTreeMap<String, FakeTargetGroup>,
    listener: Option<Listener>,
    behaviour: BTreeMap<String, Behaviour>,
    /// Targets stay `initial` while this holds.
    hold_initial: bool,
    /// Answer every call `InvalidAction`, as an endpoint without ELBv2.
    refuse: bool,
    /// Every ModifyListener/CreateListener action, in order.
    actions: Vec<BTreeMap<String, u32>>,
    /// When each instance was first deregistered (from any target group).
    deregistered: BTreeMap<String, Duration>,
    calls: Vec<&'static str>,
}

/// What a test checks at every ELBv2 call.
type Check = Box<dyn Fn(&FakeLoadBalancing) + Send + Sync>;

/// ELBv2 in memory. `check` runs before every call (and after
/// deregistrations).
struct FakeLoadBalancing {
    clock: SharedClock,
    ec2: Arc<FakeProvider>,
    healthy_after: Duration,
    state: Mutex<FakeElbState>,
    check: Mutex<Option<Check>>,
}

fn api_error(code: &str, message: String) -> ProviderError {
    ProviderError::Api {
        operation: endstate_provider::Operation::Elbv2("test"),
        status: 400,
        code: code.into(),
        message,
        request_id: None,
    }
}

impl FakeLoadBalancing {
    fn new(clock: SharedClock, ec2: Arc<FakeProvider>) -> Arc<Self> {
        Arc::new(Self {
            clock,
            ec2,
            healthy_after: Duration::from_secs(2),
            state: Mutex::new(FakeElbState::default()),
            check: Mutex::new(None),
        })
    }

    fn behave(&self, image: &str, behaviour: Behaviour) {
        self.state
            .lock()
            .unwrap()
            .behaviour
            .insert(image.into(), behaviour);
    }

    fn hold_initial(&self, hold: bool) {
        self.state.lock().unwrap().hold_initial = hold;
    }

    fn image_of(&self, instance: &str) -> String {
        self.ec2
            .instances()
            .into_iter()
            .find(|i| i.id == instance)
            .map(|i| i.image_id)
            .unwrap_or_default()
    }

    fn target_state(&self, state: &FakeElbState, id: &str, target: &FakeTarget) -> String {
        let now = self.clock.now();
        if target.deregistered_at.is_some() {
            return "draining".into();
        }
        let behaviour = state
            .behaviour
            .get(&self.image_of(id))
            .copied()
            .unwrap_or(Behaviour::Healthy);
        if state.hold_initial || now < target.registered_at + self.healthy_after {
            return "initial".into();
        }
        match behaviour {
            Behaviour::Failing => "unhealthy".into(),
            Behaviour::Healthy | Behaviour::Errors(_) => "healthy".into(),
        }
    }

    /// Live instances, and those serving (healthy and not draining in some
    /// target group).
    fn live_and_serving(&self) -> (usize, usize) {
        let live: BTreeSet<String> = self
            .ec2
            .instances()
            .into_iter()
            .filter(|i| i.state.is_live())
            .map(|i| i.id)
            .collect();
        let state = self.state.lock().unwrap();
        let mut serving = BTreeSet::new();
        for tg in state.target_groups.values() {
            for (id, target) in &tg.targets {
                if live.contains(id) && self.target_state(&state, id, target) == "healthy" {
                    serving.insert(id.clone());
                }
            }
        }
        (live.len(), serving.len())
    }

    /// The listener's weights by generation now.
    fn weights(&self) -> BTreeMap<String, u32> {
        let state = self.state.lock().unwrap();
        state
            .listener
            .as_ref()
            .map(|l| Self::by_generation(&state, &l.default_action))
            .unwrap_or_default()
    }

    fn by_generation(state: &FakeElbState, action: &ForwardAction) -> BTreeMap<String, u32> {
        action
            .target_groups
            .iter()
            .map(|w| {
                (
                    state
                        .target_groups
                        .get(&w.target_group_arn)
                        .map(|t| t.generation.clone())
                        .unwrap_or_default(),
                    w.weight,
                )
            })
            .collect()
    }

    fn actions(&self) -> Vec<BTreeMap<String, u32>> {
        self.state.lock().unwrap().actions.clone()
    }

    fn target_group_generations(&self) -> BTreeSet<String> {
        self.state
            .lock()
            .unwrap()
            .target_groups
            .values()
            .map(|t| t.generation.clone())
            .collect()
    }

    fn call(&self, name: &'static str) -> Result<(), ProviderError> {
        self.run_check();
        let mut state = self.state.lock().unwrap();
        state.calls.push(name);
        if state.refuse {
            return Err(api_error(
                "InvalidAction",
                format!("{name} is not an action of this endpoint"),
            ));
        }
        Ok(())
    }

    fn run_check(&self) {
        if let Some(check) = self.check.lock().unwrap().as_ref() {
            check(self);
        }
    }

    /// Forgets targets whose draining is over.
    fn expire(&self, state: &mut FakeElbState) {
        let now = self.clock.now();
        for tg in state.target_groups.values_mut() {
            let delay = tg.delay;
            tg.targets
                .retain(|_, t| t.deregistered_at.is_none_or(|at| now < at + delay));
        }
    }
}

#[async_trait]
impl LoadBalancing for FakeLoadBalancing {
    async fn create_load_balancer(
        &self,
        name: &str,
        _subnet_ids: &[String],
        tags: &[(String, String)],
    ) -> Result<LoadBalancer, ProviderError> {
        self.call("CreateLoadBalancer")?;
        let mut state = self.state.lock().unwrap();
        let lb = state
            .balancers
            .entry(name.into())
            .or_insert_with(|| LoadBalancer {
                arn: format!("arn:lb/{name}"),
                name: name.into(),
                dns_name: "127.0.0.1".into(),
                state: "active".into(),
                tags: tags.to_vec(),
            });
        Ok(lb.clone())
    }

    async fn describe_load_balancers(
        &self,
        names: &[String],
    ) -> Result<Vec<LoadBalancer>, ProviderError> {
        self.call("DescribeLoadBalancers")?;
        let state = self.state.lock().unwrap();
        Ok(names
            .iter()
            .filter_map(|n| state.balancers.get(n).cloned())
            .collect())
    }

    async fn delete_load_balancer(&self, _arn: &str) -> Result<(), ProviderError> {
        self.call("DeleteLoadBalancer")?;
        Ok(())
    }

    async fn create_target_group(
        &self,
        spec: &TargetGroupSpec,
    ) -> Result<TargetGroup, ProviderError> {
        self.call("CreateTargetGroup")?;
        assert!(spec.name.len() <= 32, "{}", spec.name);
        let mut state = self.state.lock().unwrap();
        let arn = format!("arn:tg/{}", spec.name);
        let generation = spec
            .tags
            .iter()
            .find(|(k, _)| k == tags::GENERATION)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let tg = state
            .target_groups
            .entry(arn.clone())
            .or_insert_with(|| FakeTargetGroup {
                group: TargetGroup {
                    arn: arn.clone(),
                    name: spec.name.clone(),
                    protocol: "HTTP".into(),
                    port: spec.port,
                    vpc_id: None,
                    health_check: spec.health_check.clone(),
                    load_balancer_arns: Vec::new(),
                    tags: spec.tags.clone(),
                },
                generation,
                delay: Duration::from_secs(300),
                targets: BTreeMap::new(),
            });
        Ok(tg.group.clone())
    }

    async fn describe_target_groups(
        &self,
        _load_balancer_arn: Option<&str>,
    ) -> Result<Vec<TargetGroup>, ProviderError> {
        self.call("DescribeTargetGroups")?;
        let state = self.state.lock().unwrap();
        Ok(state
            .target_groups
            .values()
            .map(|t| t.group.clone())
            .collect())
    }

    async fn delete_target_group(&self, arn: &str) -> Result<(), ProviderError> {
        self.call("DeleteTargetGroup")?;
        let mut state = self.state.lock().unwrap();
        let used = state.listener.as_ref().is_some_and(|l| {
            l.default_action
                .target_groups
                .iter()
                .any(|w| w.target_group_arn == arn)
        });
        if used {
            return Err(api_error(
                "ResourceInUse",
                format!("target group {arn} is in use by a listener"),
            ));
        }
        state.target_groups.remove(arn);
        Ok(())
    }

    async fn set_deregistration_delay(&self, arn: &str, seconds: u32) -> Result<(), ProviderError> {
        self.call("ModifyTargetGroupAttributes")?;
        let mut state = self.state.lock().unwrap();
        if let Some(tg) = state.target_groups.get_mut(arn) {
            tg.delay = Duration::from_secs(u64::from(seconds));
        }
        Ok(())
    }

    async fn register_targets(
        &self,
        target_group_arn: &str,
        targets: &[TargetDescription],
    ) -> Result<(), ProviderError> {
        self.call("RegisterTargets")?;
        let now = self.clock.now();
        let mut state = self.state.lock().unwrap();
        let tg = state
            .target_groups
            .get_mut(target_group_arn)
            .ok_or_else(|| api_error("TargetGroupNotFound", target_group_arn.into()))?;
        for target in targets {
            tg.targets.insert(
                target.id.clone(),
                FakeTarget {
                    registered_at: now,
                    deregistered_at: None,
                },
            );
        }
        Ok(())
    }

    async fn deregister_targets(
        &self,
        target_group_arn: &str,
        targets: &[TargetDescription],
    ) -> Result<(), ProviderError> {
        self.call("DeregisterTargets")?;
        let now = self.clock.now();
        {
            let mut state = self.state.lock().unwrap();
            let tg = state
                .target_groups
                .get_mut(target_group_arn)
                .ok_or_else(|| api_error("TargetGroupNotFound", target_group_arn.into()))?;
            let mut gone = Vec::new();
            for target in targets {
                if let Some(t) = tg.targets.get_mut(&target.id) {
                    t.deregistered_at.get_or_insert(now);
                    gone.push(target.id.clone());
                }
            }
            for id in gone {
                state.deregistered.entry(id).or_insert(now);
            }
        }
        self.run_check();
        Ok(())
    }

    async fn describe_target_health(
        &self,
        target_group_arn: &str,
    ) -> Result<Vec<TargetHealthDescription>, ProviderError> {
        self.call("DescribeTargetHealth")?;
        let mut state = self.state.lock().unwrap();
        self.expire(&mut state);
        let tg = state
            .target_groups
            .get(target_group_arn)
            .ok_or_else(|| api_error("TargetGroupNotFound", target_group_arn.into()))?;
        Ok(tg
            .targets
            .iter()
            .map(|(id, target)| TargetHealthDescription {
                target: TargetDescription {
                    id: id.clone(),
                    port: None,
                },
                state: self.target_state(&state, id, target),
                reason: None,
                description: None,
            })
            .collect())
    }

    async fn create_listener(
        &self,
        load_balancer_arn: &str,
        port: u16,
        action: &ForwardAction,
    ) -> Result<Listener, ProviderError> {
        self.call("CreateListener")?;
        let mut state = self.state.lock().unwrap();
        if let Some(listener) = &state.listener {
            return Ok(listener.clone());
        }
        let listener = Listener {
            arn: format!("{load_balancer_arn}/listener/{port}"),
            load_balancer_arn: load_balancer_arn.into(),
            protocol: "HTTP".into(),
            port,
            default_action: action.clone(),
        };
        let weights = Self::by_generation(&state, action);
        state.actions.push(weights);
        state.listener = Some(listener.clone());
        Ok(listener)
    }

    async fn describe_listeners(
        &self,
        _load_balancer_arn: &str,
    ) -> Result<Vec<Listener>, ProviderError> {
        self.call("DescribeListeners")?;
        Ok(self
            .state
            .lock()
            .unwrap()
            .listener
            .iter()
            .cloned()
            .collect())
    }

    async fn modify_listener(
        &self,
        _listener_arn: &str,
        action: &ForwardAction,
    ) -> Result<Listener, ProviderError> {
        self.call("ModifyListener")?;
        let mut state = self.state.lock().unwrap();
        for w in &action.target_groups {
            if !state.target_groups.contains_key(&w.target_group_arn) {
                return Err(api_error("TargetGroupNotFound", w.target_group_arn.clone()));
            }
        }
        let weights = Self::by_generation(&state, action);
        state.actions.push(weights);
        let listener = state.listener.as_mut().unwrap();
        listener.default_action = action.clone();
        Ok(listener.clone())
    }

    async fn target_group_request_counts(
        &self,
        target_group_arn: &str,
        window_seconds: u32,
    ) -> Result<TargetGroupRequestCounts, ProviderError> {
        self.call("DescribeTargetGroupRequestCounts")?;
        let state = self.state.lock().unwrap();
        let weight = state
            .listener
            .as_ref()
            .and_then(|l| {
                l.default_action
                    .target_groups
                    .iter()
                    .find(|w| w.target_group_arn == target_group_arn)
            })
            .map(|w| w.weight)
            .unwrap_or(0);
        // 100 requests a second at the listener, split by weight.
        let requests = u64::from(weight) * u64::from(window_seconds);
        // The 5xx share of the image the group's targets run.
        let share = state
            .target_groups
            .get(target_group_arn)
            .and_then(|tg| {
                let id = tg.targets.keys().next()?;
                match state.behaviour.get(&self.image_of(id)) {
                    Some(Behaviour::Errors(share)) => Some(*share),
                    _ => None,
                }
            })
            .unwrap_or(0.0);
        Ok(TargetGroupRequestCounts {
            target_group_arn: target_group_arn.into(),
            window_seconds,
            requests,
            server_errors: (requests as f64 * share) as u64,
        })
    }
}

/// The EC2 fake as the controller sees it: every call goes to the
/// `FakeProvider`, with the load balancer's check run before and after it,
/// and terminations recorded with their time.
struct CheckedEc2 {
    ec2: Arc<FakeProvider>,
    elb: Arc<FakeLoadBalancing>,
    terminated: Mutex<Vec<(String, Duration)>>,
}

impl CheckedEc2 {
    async fn around<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        self.elb.run_check();
        let result = call.await;
        self.elb.run_check();
        result
    }
}

#[async_trait]
impl Provider for CheckedEc2 {
    async fn run_instances(
        &self,
        request: &endstate_provider::LaunchRequest,
    ) -> Result<Vec<endstate_provider::Instance>, ProviderError> {
        self.around(self.ec2.run_instances(request)).await
    }

    async fn describe_instances_page(
        &self,
        filters: &[endstate_provider::Filter],
        next_token: Option<&str>,
    ) -> Result<(Vec<endstate_provider::Instance>, Option<String>), ProviderError> {
        self.around(self.ec2.describe_instances_page(filters, next_token))
            .await
    }

    async fn terminate_instances(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, endstate_provider::InstanceState)>, ProviderError> {
        let now = self.elb.clock.now();
        self.terminated
            .lock()
            .unwrap()
            .extend(ids.iter().map(|id| (id.clone(), now)));
        self.around(self.ec2.terminate_instances(ids)).await
    }

    async fn create_tags(
        &self,
        ids: &[String],
        tags: &BTreeMap<String, String>,
    ) -> Result<(), ProviderError> {
        self.around(self.ec2.create_tags(ids, tags)).await
    }

    async fn delete_tags(&self, ids: &[String], keys: &[String]) -> Result<(), ProviderError> {
        self.around(self.ec2.delete_tags(ids, keys)).await
    }

    async fn describe_images(
        &self,
        ids: &[String],
    ) -> Result<Vec<endstate_provider::Image>, ProviderError> {
        self.around(self.ec2.describe_images(ids)).await
    }

    async fn describe_availability_zones(&self) -> Result<Vec<String>, ProviderError> {
        self.around(self.ec2.describe_availability_zones()).await
    }

    async fn describe_instance_status(
        &self,
        ids: &[String],
    ) -> Result<Vec<endstate_provider::InstanceStatusCheck>, ProviderError> {
        self.around(self.ec2.describe_instance_status(ids)).await
    }

    async fn instance_utilization(
        &self,
        ids: &[String],
    ) -> Result<Vec<endstate_provider::InstanceUtilization>, ProviderError> {
        self.around(self.ec2.instance_utilization(ids)).await
    }
}

// ---- the world ---------------------------------------------------------

fn now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
}

fn blue_green(canary: Vec<u32>) -> Rollout {
    Rollout {
        strategy: Strategy::BlueGreen {
            canary,
            canary_pause: Duration::from_secs(10),
            keep_old_for: Duration::from_secs(10),
        },
        healthy_timeout: Duration::from_secs(30),
        watch: Duration::from_secs(10),
        auto_rollback: true,
        max_error_rate: 0.05,
    }
}

/// A group `web` of 5 in two zones behind load balancer `front`.
fn spec(rollout: Rollout, scaling: &str) -> Spec {
    let text = format!(
        r#"project: shop
provider:
  aws: {{ region: us-east-1, endpoint: "http://127.0.0.1:1" }}
groups:
  web:
    image: ami-00000000000000001
    instance_type: t3.micro
    capacity: {{ min: 5, desired: 5, max: 10 }}
    zones: [us-east-1a, us-east-1b]
{scaling}
"#
    );
    let mut spec = endstate_model::load_str(&text, Path::new("spec.yaml"), Path::new("."), None)
        .unwrap_or_else(|d| panic!("{d}"));
    spec.load_balancers = vec![LoadBalancerSpec {
        name: "front".into(),
        port: 8080,
        deregistration_delay: Duration::from_secs(2),
    }];
    spec.groups[0].load_balancer = Some(GroupLoadBalancer {
        name: "front".into(),
        port: 8000,
    });
    spec.groups[0].rollout = Some(rollout);
    spec
}

const V1: &str = "ami-00000000000000001";

struct World {
    clock: ManualClock,
    fake: Arc<FakeProvider>,
    elb: Arc<FakeLoadBalancing>,
    ec2: Arc<CheckedEc2>,
    controller: Option<Controller>,
    session: Option<Arc<Session>>,
    store: Arc<dyn Store>,
    spec: Spec,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(spec: Spec) -> Self {
        Self::start_with(spec, |_| {}).await
    }

    /// [`World::start`], with the fake ELBv2 set up by `prepare` first.
    async fn start_with(spec: Spec, prepare: impl FnOnce(&FakeLoadBalancing)) -> Self {
        let clock = ManualClock::new(now());
        let shared: SharedClock = Arc::new(clock.clone());
        let fake = Arc::new(FakeProvider::with_zones(["us-east-1a", "us-east-1b"]));
        let elb = FakeLoadBalancing::new(Arc::clone(&shared), Arc::clone(&fake));
        prepare(&elb);
        let ec2 = Arc::new(CheckedEc2 {
            ec2: Arc::clone(&fake),
            elb: Arc::clone(&elb),
            terminated: Mutex::new(Vec::new()),
        });
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("state.db"), Arc::clone(&shared)).unwrap());
        let mut world = Self {
            clock,
            fake,
            elb,
            ec2,
            controller: None,
            session: None,
            store,
            spec,
            _dir: dir,
        };
        world.boot().await;
        world
    }

    /// Starts a controller on the world's state.
    async fn boot(&mut self) {
        let shared: SharedClock = Arc::new(self.clock.clone());
        let session = Arc::new(
            Session::begin(
                Arc::clone(&self.store),
                Arc::clone(&shared),
                "endstate serve",
                Duration::from_secs(60),
                RunKind::Serve,
                &self.spec.hash,
                &self.spec.environment,
            )
            .await
            .unwrap(),
        );
        let provider: Arc<dyn Provider> = self.ec2.clone();
        let load_balancing: Arc<dyn LoadBalancing> = self.elb.clone();
        let controller = Controller::start(
            Parts {
                clock: shared,
                provider,
                load_balancing: Some(load_balancing),
                api_calls: Box::new(BTreeMap::new),
                store: Arc::clone(&self.store),
                session: Arc::clone(&session),
                spec: self.spec.clone(),
                source: SpecSource {
                    path: None,
                    environment: None,
                },
                options: Options {
                    period: Duration::from_secs(5),
                    observe_every: Duration::from_secs(1),
                    rollout_poll: Duration::from_millis(500),
                    apply: ApplyOptions {
                        poll_interval: Duration::from_millis(500),
                        ..ApplyOptions::default()
                    },
                    ..Options::default()
                },
            },
            Controller::counters(),
        )
        .await
        .unwrap();
        self.controller = Some(controller);
        self.session = Some(session);
    }

    /// Stops the controller and releases its lease, as a killed-and-
    /// restarted `serve` would find it (the lease taken over).
    async fn restart(&mut self) {
        let controller = self.controller.take().unwrap();
        controller.shutdown().await;
        drop(controller);
        let mut session = self.session.take().unwrap();
        let session = loop {
            match Arc::try_unwrap(session) {
                Ok(session) => break session,
                Err(still) => {
                    session = still;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        session
            .finish(RunOutcome::Succeeded, serde_json::json!({}))
            .await
            .unwrap();
        self.boot().await;
    }

    fn api(&self) -> &Controller {
        self.controller.as_ref().unwrap()
    }

    fn live(&self) -> Vec<endstate_provider::Instance> {
        self.fake
            .instances()
            .into_iter()
            .filter(|i| i.state.is_live())
            .collect()
    }

    fn live_images(&self) -> BTreeMap<String, usize> {
        let mut images = BTreeMap::new();
        for i in self.live() {
            *images.entry(i.image_id).or_default() += 1;
        }
        images
    }

    fn launched(&self) -> usize {
        self.fake.instances().len()
    }

    async fn run_until(&self, limit: Duration, mut done: impl FnMut(&Self) -> bool) {
        let end = self.clock.now() + limit;
        while !done(self) {
            assert!(
                self.clock.now() < end,
                "not done after {limit:?} of clock time; events: {:#?}",
                self.kinds()
            );
            self.step().await;
        }
    }

    async fn run_for(&self, span: Duration) {
        let end = self.clock.now() + span;
        while self.clock.now() < end {
            self.step().await;
        }
    }

    async fn step(&self) {
        self.clock.advance(Duration::from_millis(500));
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    fn events(&self) -> Vec<EventView> {
        self.api().events_after(0, 100_000, None).unwrap()
    }

    fn kinds(&self) -> Vec<String> {
        self.events().into_iter().map(|e| e.kind).collect()
    }

    fn count(&self, kind: &str) -> usize {
        self.events().iter().filter(|e| e.kind == kind).count()
    }

    /// The generation tag the live instances carry, by image.
    fn generation_of_image(&self, image: &str) -> String {
        self.fake
            .instances()
            .into_iter()
            .find(|i| i.image_id == image)
            .and_then(|i| i.tags.get(tags::GENERATION).cloned())
            .unwrap()
    }

    /// Converges the group on v1, registered and healthy behind the
    /// balancer.
    async fn settle_v1(&self) -> String {
        self.run_until(Duration::from_secs(60), |w| {
            w.live_images().get(V1) == Some(&5) && w.elb.live_and_serving().1 == 5
        })
        .await;
        let v1 = self.generation_of_image(V1);
        assert_eq!(self.elb.weights(), BTreeMap::from([(v1.clone(), 100)]));
        v1
    }
}

/// The kinds of `events` among `wanted`, in order, consecutive repeats
/// once.
fn sequence(events: &[String], wanted: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for kind in events {
        if wanted.contains(&kind.as_str()) && out.last() != Some(kind) {
            out.push(kind.clone());
        }
    }
    out
}

// ---- the tests ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_switches_after_the_canary_then_scales_the_old_down_and_rolls_back_on_request() {
    let world = World::start(spec(blue_green(vec![25, 50]), "")).await;
    let v1 = world.settle_v1().await;
    const V2: &str = "ami-00000000000000002";
    let view = world.api().deploy("web", V2).await.unwrap();
    assert_eq!(view.deploy_image.as_deref(), Some(V2));
    world
        .run_until(Duration::from_secs(120), |w| {
            w.count("rollout_completed") == 1
        })
        .await;
    let v2 = world.generation_of_image(V2);
    let kinds = world.kinds();
    assert_eq!(
        sequence(
            &kinds,
            &[
                "rollout_started",
                "targets_registered",
                "targets_healthy",
                "traffic_shifted",
                "traffic_switched",
                "rollout_watch_passed",
                "old_generation_scaled_down",
                "rollout_completed",
            ]
        ),
        vec![
            "rollout_started",
            "targets_registered",
            "targets_healthy",
            "traffic_shifted",
            "traffic_switched",
            "rollout_watch_passed",
            "old_generation_scaled_down",
            "rollout_completed",
        ],
        "{kinds:#?}"
    );
    let events = world.events();
    let started = events.iter().find(|e| e.kind == "rollout_started").unwrap();
    assert_eq!(started.data["from"], v1.as_str());
    assert_eq!(started.data["to"], v2.as_str());
    assert_eq!(started.data["strategy"], "blue_green");
    assert_eq!(started.data["trigger"], "deploy");
    let shifted: Vec<&EventView> = events
        .iter()
        .filter(|e| e.kind == "traffic_shifted")
        .collect();
    assert_eq!(shifted[0].data["weights"][&v2], 25);
    assert_eq!(shifted[0].data["weights"][&v1], 75);
    assert_eq!(shifted[1].data["weights"][&v2], 50);
    // The listener went 100/0 → 75/25 → 50/50 → 0/100, never back.
    let actions = world.elb.actions();
    assert_eq!(
        actions.last().unwrap(),
        &BTreeMap::from([(v2.clone(), 100)])
    );
    assert_eq!(world.live_images(), BTreeMap::from([(V2.to_string(), 5)]));
    assert_eq!(
        world.elb.target_group_generations(),
        BTreeSet::from([v2.clone()]),
        "the old target group is deleted"
    );
    // Both zones: the new generation is balanced.
    let zones: BTreeSet<String> = world.live().into_iter().map(|i| i.zone).collect();
    assert_eq!(zones.len(), 2);
    let idle = world.api().rollout("web").unwrap();
    assert_eq!(
        (idle.phase.as_str(), idle.to.as_str()),
        ("idle", v2.as_str())
    );

    // After completion, a rollback is a rollout back to v1.
    let back = world.api().rollback("web").await.unwrap();
    assert_eq!(back.pinned.as_deref(), Some(v1.as_str()));
    world
        .run_until(Duration::from_secs(120), |w| {
            w.count("rollout_completed") == 2
        })
        .await;
    assert_eq!(world.live_images(), BTreeMap::from([(V1.to_string(), 5)]));
    let second = world
        .events()
        .into_iter()
        .filter(|e| e.kind == "rollout_started")
        .nth(1)
        .unwrap();
    assert_eq!(second.data["trigger"], "rollback");
    assert_eq!(second.data["to"], v1.as_str());
    // Nothing left to roll back to but v2 again: that is allowed once more;
    // with no rollout and no earlier generation, 409 (tested in the API).
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_that_never_turns_healthy_is_rolled_back_and_pinned() {
    let world = World::start(spec(blue_green(vec![10]), "")).await;
    let v1 = world.settle_v1().await;
    const V3: &str = "ami-00000000000000003";
    world.elb.behave(V3, Behaviour::Failing);
    world.api().deploy("web", V3).await.unwrap();
    world
        .run_until(Duration::from_secs(120), |w| {
            w.count("rollback_completed") == 1
        })
        .await;
    let v3 = world.generation_of_image(V3);
    let events = world.events();
    let failed = events.iter().find(|e| e.kind == "rollout_failed").unwrap();
    assert!(
        failed.data["reason"]
            .as_str()
            .unwrap()
            .contains("not healthy within 30 s"),
        "{failed:#?}"
    );
    let kinds = world.kinds();
    assert_eq!(
        sequence(
            &kinds,
            &[
                "rollout_started",
                "rollout_failed",
                "rollback_started",
                "rollback_completed"
            ]
        ),
        vec![
            "rollout_started",
            "rollout_failed",
            "rollback_started",
            "rollback_completed"
        ]
    );
    // v3 never got a request.
    assert!(
        world
            .elb
            .actions()
            .iter()
            .all(|a| a.get(&v3).copied().unwrap_or(0) == 0),
        "{:?}",
        world.elb.actions()
    );
    world
        .run_until(Duration::from_secs(30), |w| {
            w.live_images() == BTreeMap::from([(V1.to_string(), 5)])
        })
        .await;
    let done = events
        .iter()
        .find(|e| e.kind == "rollback_completed")
        .unwrap();
    assert_eq!(done.data["pinned"], v1.as_str());
    assert!(done.reason.contains("until the group changes in the spec"));
    // Pinned: no retry of v3 in a loop.
    world.run_for(Duration::from_secs(60)).await;
    assert_eq!(world.count("rollout_started"), 1, "{:#?}", world.kinds());
    assert_eq!(world.live_images(), BTreeMap::from([(V1.to_string(), 5)]));
    let view = world.api().rollout("web").unwrap();
    assert_eq!(view.pinned.as_deref(), Some(v1.as_str()));
    assert_eq!(view.phase, "idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_answering_too_many_5xx_is_rolled_back_by_the_error_rate() {
    let world = World::start(spec(blue_green(vec![10]), "")).await;
    let v1 = world.settle_v1().await;
    const V4: &str = "ami-00000000000000004";
    world.elb.behave(V4, Behaviour::Errors(0.10));
    world.api().deploy("web", V4).await.unwrap();
    world
        .run_until(Duration::from_secs(120), |w| {
            w.count("rollback_completed") == 1
        })
        .await;
    let v4 = world.generation_of_image(V4);
    let events = world.events();
    let failed = events.iter().find(|e| e.kind == "rollout_failed").unwrap();
    let reason = failed.data["reason"].as_str().unwrap();
    assert!(
        reason.contains("error rate") && reason.contains("10.0%"),
        "{reason}"
    );
    // It failed during the canary: the switch never happened.
    assert_eq!(world.count("traffic_switched"), 0);
    assert_eq!(world.elb.weights(), BTreeMap::from([(v1.clone(), 100)]));
    assert!(world.elb.actions().iter().any(|a| a.get(&v4) == Some(&10)));
    world
        .run_until(Duration::from_secs(30), |w| {
            w.live_images() == BTreeMap::from([(V1.to_string(), 5)])
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_keeps_surge_and_unavailability_at_every_call() {
    let rolling = Rollout {
        strategy: Strategy::Rolling {
            max_surge: Amount::Percent(25),
            max_unavailable: Amount::Percent(25),
            pause: Duration::from_secs(1),
        },
        ..Rollout::default_rolling()
    };
    let world = World::start(spec(rolling, "")).await;
    world.settle_v1().await;
    // desired 5: surge ⌈1.25⌉ = 2, unavailable ⌊1.25⌋ = 1.
    let worst = Arc::new(Mutex::new((0usize, usize::MAX)));
    {
        let worst = Arc::clone(&worst);
        *world.elb.check.lock().unwrap() = Some(Box::new(move |elb: &FakeLoadBalancing| {
            let (live, serving) = elb.live_and_serving();
            // Recorded, not asserted here: this runs in the controller's
            // task, whose panic the test would only see as a stall.
            let mut w = worst.lock().unwrap();
            w.0 = w.0.max(live);
            w.1 = w.1.min(serving);
        }));
    }
    const V2: &str = "ami-00000000000000002";
    world.api().deploy("web", V2).await.unwrap();
    world
        .run_until(Duration::from_secs(300), |w| {
            w.count("rollout_completed") == 1
        })
        .await;
    assert_eq!(world.live_images(), BTreeMap::from([(V2.to_string(), 5)]));
    // At every ELBv2 and EC2 call: live ≤ 5 + 2, serving ≥ 5 − 1; and both bounds
    // were reached (the budget was used, not just respected).
    let (max_live, min_serving) = *worst.lock().unwrap();
    assert_eq!(max_live, 7, "most live at any call (5 + surge 2)");
    assert_eq!(min_serving, 4, "fewest serving at any call (5 - 1)");
    let v2 = world.generation_of_image(V2);
    assert_eq!(world.elb.weights(), BTreeMap::from([(v2, 100)]));
    let started = world
        .events()
        .into_iter()
        .find(|e| e.kind == "rollout_started")
        .unwrap();
    assert_eq!(started.data["strategy"], "rolling");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_resumes_the_rollout_without_launching_again() {
    let mut world = World::start(spec(blue_green(Vec::new()), "")).await;
    world.settle_v1().await;
    const V2: &str = "ami-00000000000000002";
    world.elb.hold_initial(true);
    world.api().deploy("web", V2).await.unwrap();
    world
        .run_until(Duration::from_secs(60), |w| {
            w.live_images().get(V2) == Some(&5) && w.count("targets_registered") >= 1
        })
        .await;
    assert_eq!(world.launched(), 10);
    assert_eq!(world.api().rollout("web").unwrap().phase, "waiting_healthy");
    world.restart().await;
    assert_eq!(world.api().rollout("web").unwrap().phase, "waiting_healthy");
    world.run_for(Duration::from_secs(5)).await;
    world.elb.hold_initial(false);
    world
        .run_until(Duration::from_secs(120), |w| {
            w.count("rollout_completed") == 1
        })
        .await;
    assert_eq!(world.launched(), 10, "no instance launched twice");
    assert_eq!(world.count("rollout_started"), 1);
    assert_eq!(world.live_images(), BTreeMap::from([(V2.to_string(), 5)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_only_records_while_a_rollout_owns_the_group() {
    let world = World::start(spec(
        blue_green(Vec::new()),
        r#"    scaling:
      target_tracking:
        - metric: requests
          target: 100
          scale_out_cooldown: 0
          scale_in_cooldown: 0
          instance_warmup: 0"#,
    ))
    .await;
    world.settle_v1().await;
    const V2: &str = "ami-00000000000000002";
    world.elb.hold_initial(true);
    world.api().deploy("web", V2).await.unwrap();
    world
        .run_until(Duration::from_secs(60), |w| {
            w.live_images().get(V2) == Some(&5)
        })
        .await;
    // 5 instances at 200 each against a target of 100: 10 wanted.
    world
        .api()
        .put_metrics(vec![MetricSample {
            group: "web".into(),
            instance: None,
            metric: "requests".into(),
            value: 200.0,
        }])
        .await
        .unwrap();
    world
        .run_until(Duration::from_secs(30), |w| w.count("scaled") >= 1)
        .await;
    assert_eq!(world.api().group("web").unwrap().desired, 10);
    world.run_for(Duration::from_secs(10)).await;
    assert_eq!(world.live().len(), 10, "5 old + 5 new, nothing for scaling");
    assert_eq!(world.launched(), 10);
    world.elb.hold_initial(false);
    world
        .run_until(Duration::from_secs(120), |w| {
            w.count("rollout_completed") == 1
        })
        .await;
    // Then the scale-out happens, in the new generation.
    world
        .run_until(Duration::from_secs(60), |w| {
            w.live_images() == BTreeMap::from([(V2.to_string(), 10)])
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_in_drains_its_targets_before_terminating_them() {
    let mut spec = spec(
        blue_green(Vec::new()),
        r#"    scaling:
      target_tracking:
        - metric: requests
          target: 100
          scale_out_cooldown: 0
          scale_in_cooldown: 0
          instance_warmup: 0"#,
    );
    spec.groups[0].capacity.min = 2;
    let world = World::start(spec).await;
    world.settle_v1().await;
    // 5 instances at 20 each against a target of 100: down to min 2.
    world
        .api()
        .put_metrics(vec![MetricSample {
            group: "web".into(),
            instance: None,
            metric: "requests".into(),
            value: 20.0,
        }])
        .await
        .unwrap();
    world
        .run_until(Duration::from_secs(120), |w| w.live().len() == 2)
        .await;
    let terminated = world.ec2.terminated.lock().unwrap().clone();
    assert_eq!(terminated.len(), 3, "{terminated:?}");
    let deregistered = world.elb.state.lock().unwrap().deregistered.clone();
    for (id, at) in &terminated {
        let drained_from = deregistered
            .get(id)
            .unwrap_or_else(|| panic!("{id} terminated without being deregistered"));
        assert!(
            *at >= *drained_from + Duration::from_secs(2),
            "{id} terminated {:?} after its deregistration, before the 2 s delay",
            at.saturating_sub(*drained_from)
        );
    }
    assert_eq!(world.count("rollout_started"), 0);
    // The survivors still serve.
    assert_eq!(world.elb.live_and_serving(), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_automatic_rollback_a_failed_rollout_is_held_until_rolled_back() {
    let mut rollout = blue_green(Vec::new());
    rollout.auto_rollback = false;
    rollout.healthy_timeout = Duration::from_secs(10);
    let world = World::start(spec(rollout, "")).await;
    let v1 = world.settle_v1().await;
    const V3: &str = "ami-00000000000000003";
    world.elb.behave(V3, Behaviour::Failing);
    world.api().deploy("web", V3).await.unwrap();
    world
        .run_until(Duration::from_secs(60), |w| w.count("rollout_failed") == 1)
        .await;
    world.run_for(Duration::from_secs(20)).await;
    let view = world.api().rollout("web").unwrap();
    assert_eq!(view.phase, "failed");
    assert!(view.failure.unwrap().contains("not healthy within 10 s"));
    assert_eq!(world.count("rollback_started"), 0, "held, not rolled back");
    assert_eq!(
        world.live_images(),
        BTreeMap::from([(V1.to_string(), 5), (V3.to_string(), 5)])
    );
    // The failed generation may still be named, with weight 0: no traffic.
    let carrying: BTreeMap<String, u32> = world
        .elb
        .weights()
        .into_iter()
        .filter(|(_, w)| *w > 0)
        .collect();
    assert_eq!(carrying, BTreeMap::from([(v1.clone(), 100)]));
    world.api().rollback("web").await.unwrap();
    world
        .run_until(Duration::from_secs(60), |w| {
            w.count("rollback_completed") == 1
                && w.live_images() == BTreeMap::from([(V1.to_string(), 5)])
        })
        .await;
    assert_eq!(
        world.api().rollout("web").unwrap().pinned.as_deref(),
        Some(v1.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_group_holds_its_rollout_where_it_is() {
    let world = World::start(spec(blue_green(Vec::new()), "")).await;
    world.settle_v1().await;
    const V2: &str = "ami-00000000000000002";
    world.elb.hold_initial(true);
    world.api().deploy("web", V2).await.unwrap();
    world
        .run_until(Duration::from_secs(60), |w| {
            w.count("targets_registered") >= 1
        })
        .await;
    world.api().pause("web", "looking at it").await.unwrap();
    world.elb.hold_initial(false);
    world.run_for(Duration::from_secs(30)).await;
    assert_eq!(world.count("targets_healthy"), 0, "{:#?}", world.kinds());
    assert_eq!(world.api().rollout("web").unwrap().phase, "waiting_healthy");
    world.api().resume("web").await.unwrap();
    world
        .run_until(Duration::from_secs(120), |w| {
            w.count("rollout_completed") == 1
        })
        .await;
    assert_eq!(world.live_images(), BTreeMap::from([(V2.to_string(), 5)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_without_elbv2_is_said_once_and_the_group_still_reconciles() {
    let spec = spec(blue_green(Vec::new()), "");
    let world = World::start_with(spec, |elb| elb.state.lock().unwrap().refuse = true).await;
    world
        .run_until(Duration::from_secs(60), |w| {
            w.live_images() == BTreeMap::from([(V1.to_string(), 5)])
        })
        .await;
    world.run_for(Duration::from_secs(20)).await;
    let events = world.events();
    let said: Vec<&EventView> = events
        .iter()
        .filter(|e| e.kind == "load_balancer_unavailable")
        .collect();
    assert_eq!(said.len(), 1, "said once: {:#?}", world.kinds());
    assert!(
        said[0].reason.contains("InvalidAction"),
        "{}",
        said[0].reason
    );
    assert_eq!(world.count("reconcile_failed"), 0);
}
