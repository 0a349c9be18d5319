//! The built-in cloud's Elastic Load Balancing v2: [`LoadBalancers`], the
//! semantics of the ELBv2 actions rollouts use (load balancers, target
//! groups and their attributes, targets and their health, listeners with
//! weighted forward actions, and endstate's extension
//! `DescribeTargetGroupRequestCounts`), over records (`records`) and, for a
//! backend whose instances really serve, data planes (`planes`: an
//! `endstate_lb::LoadBalancer` per listener on the balancer's own loopback
//! address).
//!
//! One async mutex orders every call: a call's change to the records, to
//! the data planes and to `cloud.db` is whole before the next call starts
//! (ModifyListener answers only once the data plane routes by the new
//! weights). The records are saved whole, as JSON, after each change.
//!
//! Without data planes (the simulated backend, whose instances' addresses
//! are not real) the API and its records are the same, but nothing is
//! probed or forwarded: every target is `unavailable`.
//!
//! Not here: HTTP, signatures and the protocol's encoding (the server's and
//! `endstate_wire::elbv2`'s), instances (reached through
//! [`InstanceDirectory`]).

mod planes;
mod records;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use endstate_clock::SharedClock;
use endstate_lb::TargetState;
use endstate_wire::elbv2::{
    ForwardAction, Listener, LoadBalancer, TargetDescription, TargetGroup, TargetGroupHealthCheck,
    TargetGroupRequestCounts, TargetHealthDescription,
};
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use planes::CLAIM_PORT;

use crate::store::Store;
use planes::{forwardable, Planes};
use records::{
    arn_prefix, check_forward, check_name, check_port, listener_arn, load_balancer_arn,
    target_group_arn, HealthCheckRecord, ListenerRecord, LoadBalancerRecord, State,
    TargetGroupRecord, TargetRecord, DEFAULT_DELAY_SECONDS,
};

/// The tag whose value names an instance's deployment generation (the
/// model's `tags::GENERATION`; the cloud does not depend on the model).
pub const GENERATION_TAG: &str = "endstate:generation";

/// The longest window `DescribeTargetGroupRequestCounts` answers for (the
/// data plane keeps an hour of per-second counts).
pub const MAX_COUNT_WINDOW_SECONDS: u32 = 3600;

/// An error an ELBv2 action answers with, as ELBv2's error document names
/// it. The `Display` text is the message the client sees, except for
/// [`Elbv2Error::Internal`], which is logged and replaced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Elbv2Error {
    #[error("{0}")]
    LoadBalancerNotFound(String),
    #[error("{0}")]
    TargetGroupNotFound(String),
    #[error("{0}")]
    ListenerNotFound(String),
    #[error("{0}")]
    DuplicateLoadBalancerName(String),
    #[error("{0}")]
    DuplicateTargetGroupName(String),
    #[error("{0}")]
    DuplicateListener(String),
    /// An instance that does not exist, is terminated, or has no port.
    #[error("{0}")]
    InvalidTarget(String),
    /// A target group a listener forwards to, or a balancer with listeners
    /// that is in the way of an action.
    #[error("{0}")]
    ResourceInUse(String),
    #[error("{0}")]
    ValidationError(String),
    #[error("{0}")]
    InvalidConfigurationRequest(String),
    #[error("{0}")]
    UnsupportedProtocol(String),
    #[error("{0}")]
    TooManyLoadBalancers(String),
    /// A bug or an I/O failure of this server: logged, never sent.
    #[error("internal: {0}")]
    Internal(String),
}

impl Elbv2Error {
    /// ELBv2's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Elbv2Error::LoadBalancerNotFound(_) => "LoadBalancerNotFound",
            Elbv2Error::TargetGroupNotFound(_) => "TargetGroupNotFound",
            Elbv2Error::ListenerNotFound(_) => "ListenerNotFound",
            Elbv2Error::DuplicateLoadBalancerName(_) => "DuplicateLoadBalancerName",
            Elbv2Error::DuplicateTargetGroupName(_) => "DuplicateTargetGroupName",
            Elbv2Error::DuplicateListener(_) => "DuplicateListener",
            Elbv2Error::InvalidTarget(_) => "InvalidTarget",
            Elbv2Error::ResourceInUse(_) => "ResourceInUse",
            Elbv2Error::ValidationError(_) => "ValidationError",
            Elbv2Error::InvalidConfigurationRequest(_) => "InvalidConfigurationRequest",
            Elbv2Error::UnsupportedProtocol(_) => "UnsupportedProtocol",
            Elbv2Error::TooManyLoadBalancers(_) => "TooManyLoadBalancers",
            Elbv2Error::Internal(_) => "InternalFailure",
        }
    }

    /// The HTTP status ELBv2 answers with: 400 for the caller's mistakes
    /// (not-found included), 500 for ours.
    pub fn status(&self) -> u16 {
        match self {
            Elbv2Error::Internal(_) => 500,
            _ => 400,
        }
    }

    /// `Sender` or `Receiver`, the error document's `Type`.
    pub fn fault(&self) -> &'static str {
        match self {
            Elbv2Error::Internal(_) => "Receiver",
            _ => "Sender",
        }
    }

    /// The message the client sees: internal details stay in the log.
    pub fn client_message(&self) -> String {
        match self {
            Elbv2Error::Internal(_) => "An internal error has occurred".to_string(),
            other => other.to_string(),
        }
    }
}

/// What the load balancers need to know of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    /// Shutting down or terminated: it cannot be registered, and is
    /// deregistered from every group.
    pub gone: bool,
    /// Its private address, if it has a real one (the simulated backend's
    /// are not real: `None`).
    pub address: Option<IpAddr>,
    /// Its [`GENERATION_TAG`].
    pub generation: Option<String>,
}

/// Where the load balancers look up instances.
pub trait InstanceDirectory: Send + Sync {
    /// `None` when there is no such instance.
    fn instance(&self, id: &str) -> Option<InstanceView>;
}

/// A target group to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTargetGroup {
    pub name: String,
    /// `HTTP` (the only protocol here).
    pub protocol: String,
    pub port: u16,
    pub vpc_id: Option<String>,
    pub health_check: TargetGroupHealthCheck,
    pub tags: Vec<(String, String)>,
}

/// A page of target groups and the marker of the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroupPage {
    pub target_groups: Vec<TargetGroup>,
    pub next_marker: Option<String>,
}

/// Which target groups DescribeTargetGroups asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetGroupQuery {
    pub load_balancer_arn: Option<String>,
    pub names: Vec<String>,
    pub arns: Vec<String>,
    pub marker: Option<String>,
    /// 1 to 400; default 400.
    pub page_size: Option<u32>,
}

struct Inner {
    state: State,
    planes: Option<Planes>,
}

/// The ELBv2 service of one built-in cloud. Share it behind an `Arc`.
pub struct LoadBalancers {
    arn_prefix: String,
    inner: Arc<Mutex<Inner>>,
    store: Option<Arc<Store>>,
}

impl std::fmt::Debug for LoadBalancers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadBalancers")
            .field("arn_prefix", &self.arn_prefix)
            .finish_non_exhaustive()
    }
}

impl LoadBalancers {
    /// The API and its records only, in memory: nothing is probed or
    /// forwarded (every target `unavailable`).
    pub fn api_only(region: &str, account_id: &str) -> Self {
        Self {
            arn_prefix: arn_prefix(region, account_id),
            inner: Arc::new(Mutex::new(Inner {
                state: State::default(),
                planes: None,
            })),
            store: None,
        }
    }

    /// With data planes on `clock`, the records restored from `store` (when
    /// given) and saved to it. The data planes are restored on a task of
    /// the current tokio runtime, which every call waits for (it holds the
    /// lock from the start): addresses and ports are bound again, and a
    /// load balancer whose address another process took gets a new one.
    pub(crate) fn with_data_planes(
        region: &str,
        account_id: &str,
        clock: SharedClock,
        store: Option<Arc<Store>>,
    ) -> Result<Self, crate::store::StoreError> {
        let state = match &store {
            Some(store) => match store.elbv2_state()? {
                Some(json) => serde_json::from_str(&json).map_err(|e| {
                    crate::store::StoreError::Corrupt(format!("the ELBv2 records: {e}"))
                })?,
                None => State::default(),
            },
            None => State::default(),
        };
        let inner = Arc::new(Mutex::new(Inner {
            state: State::default(),
            planes: Some(Planes::new(clock)),
        }));
        let guard = Arc::clone(&inner)
            .try_lock_owned()
            .map_err(|e| crate::store::StoreError::Corrupt(format!("ELBv2 lock: {e}")))?;
        let service = Self {
            arn_prefix: arn_prefix(region, account_id),
            inner,
            store,
        };
        let store = service.store.clone();
        tokio::spawn(restore(guard, state, store));
        Ok(service)
    }

    /// Saves the records (after a change).
    fn save(&self, state: &State) -> Result<(), Elbv2Error> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let json = serde_json::to_string(state)
            .map_err(|e| Elbv2Error::Internal(format!("serializing the ELBv2 records: {e}")))?;
        store
            .save_elbv2_state(&json)
            .map_err(|e| Elbv2Error::Internal(format!("saving the ELBv2 records: {e}")))
    }

    /// CreateLoadBalancer: idempotent by name (the existing one is returned).
    pub async fn create_load_balancer(
        &self,
        name: &str,
        tags: &[(String, String)],
    ) -> Result<LoadBalancer, Elbv2Error> {
        check_name("Name", name)?;
        if name.starts_with("internal-") {
            return Err(Elbv2Error::ValidationError(format!(
                "Name: '{name}' may not begin with 'internal-'"
            )));
        }
        let mut inner = self.inner.lock().await;
        if let Some(existing) = inner.state.load_balancers.values().find(|l| l.name == name) {
            return Ok(existing.to_wire());
        }
        let arn = load_balancer_arn(&self.arn_prefix, name);
        let address = match &mut inner.planes {
            Some(planes) => Some(planes.claim(&arn, None).await?),
            None => None,
        };
        let record = LoadBalancerRecord {
            arn: arn.clone(),
            name: name.to_string(),
            address,
            tags: tags.to_vec(),
        };
        let answer = record.to_wire();
        inner.state.load_balancers.insert(arn, record);
        self.save(&inner.state)?;
        Ok(answer)
    }

    /// DescribeLoadBalancers: all, or those named by ARN or name (any
    /// unknown one is LoadBalancerNotFound, as ELBv2).
    pub async fn describe_load_balancers(
        &self,
        arns: &[String],
        names: &[String],
    ) -> Result<Vec<LoadBalancer>, Elbv2Error> {
        let inner = self.inner.lock().await;
        let all = &inner.state.load_balancers;
        if arns.is_empty() && names.is_empty() {
            return Ok(all.values().map(LoadBalancerRecord::to_wire).collect());
        }
        let mut found = Vec::new();
        for arn in arns {
            let record = all.get(arn).ok_or_else(|| {
                Elbv2Error::LoadBalancerNotFound(format!("Load balancer '{arn}' not found"))
            })?;
            found.push(record.to_wire());
        }
        for name in names {
            let record = all.values().find(|l| &l.name == name).ok_or_else(|| {
                Elbv2Error::LoadBalancerNotFound(format!("Load balancers '[{name}]' not found"))
            })?;
            found.push(record.to_wire());
        }
        Ok(found)
    }

    /// DeleteLoadBalancer: its listeners go with it; an unknown ARN is not
    /// an error (ELBv2's rule).
    pub async fn delete_load_balancer(&self, arn: &str) -> Result<(), Elbv2Error> {
        let mut inner = self.inner.lock().await;
        let inner = &mut *inner;
        if inner.state.load_balancers.remove(arn).is_none() {
            return Ok(());
        }
        let listeners: Vec<String> = inner
            .state
            .listeners
            .values()
            .filter(|l| l.load_balancer_arn == arn)
            .map(|l| l.arn.clone())
            .collect();
        for listener in &listeners {
            inner.state.listeners.remove(listener);
        }
        self.save(&inner.state)?;
        if let Some(planes) = &mut inner.planes {
            for listener in &listeners {
                planes.stop_listener(listener).await;
            }
            planes.release(arn);
        }
        Ok(())
    }

    /// CreateTargetGroup: a group of the same name and settings is returned
    /// as it is; the same name with other settings is DuplicateTargetGroupName.
    pub async fn create_target_group(
        &self,
        spec: &NewTargetGroup,
    ) -> Result<TargetGroup, Elbv2Error> {
        check_name("Name", &spec.name)?;
        check_port("Port", spec.port)?;
        if !spec.protocol.eq_ignore_ascii_case("HTTP") {
            return Err(Elbv2Error::UnsupportedProtocol(format!(
                "Protocol: '{}' is not supported by the built-in cloud (HTTP)",
                spec.protocol
            )));
        }
        let health_check = HealthCheckRecord::from(&spec.health_check);
        health_check.to_check()?;
        let mut inner = self.inner.lock().await;
        if let Some(existing) = inner
            .state
            .target_groups
            .values()
            .find(|g| g.name == spec.name)
        {
            if existing.port == spec.port
                && existing.health_check == health_check
                && existing.vpc_id == spec.vpc_id
            {
                return Ok(existing.to_wire(&inner.state));
            }
            return Err(Elbv2Error::DuplicateTargetGroupName(format!(
                "A target group with the same name '{}' exists, but with different settings",
                spec.name
            )));
        }
        let arn = target_group_arn(&self.arn_prefix, &spec.name);
        let record = TargetGroupRecord {
            arn: arn.clone(),
            name: spec.name.clone(),
            port: spec.port,
            vpc_id: spec.vpc_id.clone(),
            health_check,
            tags: spec.tags.clone(),
            deregistration_delay_seconds: DEFAULT_DELAY_SECONDS,
            targets: Default::default(),
        };
        inner.state.target_groups.insert(arn.clone(), record);
        self.save(&inner.state)?;
        Ok(inner.state.target_groups[&arn].to_wire(&inner.state))
    }

    /// DescribeTargetGroups, in pages (in ARN order; the marker is the last
    /// ARN of the previous page).
    pub async fn describe_target_groups(
        &self,
        query: &TargetGroupQuery,
    ) -> Result<TargetGroupPage, Elbv2Error> {
        let page_size = query.page_size.unwrap_or(400);
        if !(1..=400).contains(&page_size) {
            return Err(Elbv2Error::ValidationError(format!(
                "PageSize: {page_size} is outside 1 to 400"
            )));
        }
        let inner = self.inner.lock().await;
        let state = &inner.state;
        if let Some(lb) = &query.load_balancer_arn {
            if !state.load_balancers.contains_key(lb) {
                return Err(Elbv2Error::LoadBalancerNotFound(format!(
                    "Load balancer '{lb}' not found"
                )));
            }
        }
        for arn in &query.arns {
            if !state.target_groups.contains_key(arn) {
                return Err(Elbv2Error::TargetGroupNotFound(format!(
                    "Target groups '[{arn}]' not found"
                )));
            }
        }
        for name in &query.names {
            if !state.target_groups.values().any(|g| &g.name == name) {
                return Err(Elbv2Error::TargetGroupNotFound(format!(
                    "One or more target groups not found: '{name}'"
                )));
            }
        }
        let matching: Vec<TargetGroup> = state
            .target_groups
            .values()
            .filter(|g| query.arns.is_empty() || query.arns.contains(&g.arn))
            .filter(|g| query.names.is_empty() || query.names.contains(&g.name))
            .map(|g| g.to_wire(state))
            .filter(|g| {
                query
                    .load_balancer_arn
                    .as_ref()
                    .is_none_or(|lb| g.load_balancer_arns.contains(lb))
            })
            .filter(|g| query.marker.as_ref().is_none_or(|m| &g.arn > m))
            .collect();
        let size = usize::try_from(page_size).unwrap_or(400);
        let next_marker = (matching.len() > size).then(|| matching[size - 1].arn.clone());
        Ok(TargetGroupPage {
            target_groups: matching.into_iter().take(size).collect(),
            next_marker,
        })
    }

    /// DeleteTargetGroup: ResourceInUse while a listener forwards to it; an
    /// unknown ARN is not an error.
    pub async fn delete_target_group(&self, arn: &str) -> Result<(), Elbv2Error> {
        let mut inner = self.inner.lock().await;
        if inner.state.is_forwarded_to(arn) {
            return Err(Elbv2Error::ResourceInUse(format!(
                "Target group '{arn}' is currently in use by a listener or a rule"
            )));
        }
        if inner.state.target_groups.remove(arn).is_some() {
            self.save(&inner.state)?;
        }
        Ok(())
    }

    /// ModifyTargetGroupAttributes: `deregistration_delay.timeout_seconds`
    /// (0 to 3600) is the one attribute held; others are refused. Answers
    /// the attributes as they now are.
    pub async fn modify_target_group_attributes(
        &self,
        arn: &str,
        attributes: &[(String, String)],
    ) -> Result<Vec<(String, String)>, Elbv2Error> {
        const DELAY: &str = "deregistration_delay.timeout_seconds";
        let mut delay = None;
        for (key, value) in attributes {
            if key != DELAY {
                return Err(Elbv2Error::InvalidConfigurationRequest(format!(
                    "Attributes: '{key}' is not supported by the built-in cloud (only {DELAY})"
                )));
            }
            match value.parse::<u32>() {
                Ok(seconds) if seconds <= 3600 => delay = Some(seconds),
                _ => {
                    return Err(Elbv2Error::ValidationError(format!(
                        "Attributes: {DELAY} '{value}' is not a number of seconds from 0 to 3600"
                    )))
                }
            }
        }
        let mut inner = self.inner.lock().await;
        let inner = &mut *inner;
        let group = inner
            .state
            .target_groups
            .get_mut(arn)
            .ok_or_else(|| not_found_group(arn))?;
        if let Some(seconds) = delay {
            group.deregistration_delay_seconds = seconds;
            if let Some(planes) = &inner.planes {
                planes.set_deregistration_delay(arn, seconds)?;
            }
        }
        let now = group.deregistration_delay_seconds.to_string();
        self.save(&inner.state)?;
        Ok(vec![(DELAY.to_string(), now)])
    }

    /// RegisterTargets: instances of this cloud that are not shutting down
    /// or terminated; each target's generation is its [`GENERATION_TAG`]
    /// (else the group's name). Registering again updates the port.
    pub async fn register_targets(
        &self,
        arn: &str,
        targets: &[TargetDescription],
        instances: &dyn InstanceDirectory,
    ) -> Result<(), Elbv2Error> {
        let mut inner = self.inner.lock().await;
        let inner = &mut *inner;
        let group = inner
            .state
            .target_groups
            .get_mut(arn)
            .ok_or_else(|| not_found_group(arn))?;
        let mut added = Vec::new();
        for target in targets {
            let view = instances
                .instance(&target.id)
                .filter(|v| !v.gone)
                .ok_or_else(|| {
                    Elbv2Error::InvalidTarget(format!(
                        "The following targets are not in a running state and cannot be registered: '{}'",
                        target.id
                    ))
                })?;
            let port = target.port.unwrap_or(group.port);
            check_port("Targets.member.N.Port", port)?;
            added.push((
                target.id.clone(),
                TargetRecord {
                    port,
                    address: view.address,
                    generation: view.generation.unwrap_or_else(|| group.name.clone()),
                },
            ));
        }
        for (id, record) in &added {
            group.targets.insert(id.clone(), record.clone());
        }
        self.save(&inner.state)?;
        if let Some(planes) = &inner.planes {
            planes.register(arn, &added)?;
        }
        Ok(())
    }

    /// DeregisterTargets: each target drains (no new request; dropped when
    /// idle or after the group's deregistration delay). Unregistered ids
    /// are InvalidTarget, as ELBv2.
    pub async fn deregister_targets(
        &self,
        arn: &str,
        targets: &[TargetDescription],
    ) -> Result<(), Elbv2Error> {
        let mut inner = self.inner.lock().await;
        let inner = &mut *inner;
        let group = inner
            .state
            .target_groups
            .get_mut(arn)
            .ok_or_else(|| not_found_group(arn))?;
        if let Some(missing) = targets.iter().find(|t| !group.targets.contains_key(&t.id)) {
            return Err(Elbv2Error::InvalidTarget(format!(
                "The following targets are not registered in target group '{arn}': '{}'",
                missing.id
            )));
        }
        let ids: Vec<String> = targets.iter().map(|t| t.id.clone()).collect();
        for id in &ids {
            group.targets.remove(id);
        }
        self.save(&inner.state)?;
        if let Some(planes) = &inner.planes {
            planes.deregister(arn, &ids)?;
        }
        Ok(())
    }

    /// DescribeTargetHealth of every registered target (and of those still
    /// draining), or of the named ones.
    pub async fn describe_target_health(
        &self,
        arn: &str,
        only: &[TargetDescription],
    ) -> Result<Vec<TargetHealthDescription>, Elbv2Error> {
        let inner = self.inner.lock().await;
        let group = inner
            .state
            .target_groups
            .get(arn)
            .ok_or_else(|| not_found_group(arn))?;
        let probed = inner.planes.as_ref().and_then(|p| p.health(arn));
        let mut answer = Vec::new();
        for (id, target) in &group.targets {
            let (state, reason, description) = if inner.planes.is_none()
                || !forwardable(target.address)
            {
                (
                    "unavailable",
                    Some("Target.HealthCheckDisabled".to_string()),
                    Some(match target.address {
                        Some(a) => format!("The built-in cloud probes and forwards only to loopback addresses, and {a} is not one"),
                        None => "The simulated backend's instances serve nothing: health checks and forwarding are off".to_string(),
                    }),
                )
            } else {
                match probed.as_ref().and_then(|p| p.iter().find(|h| &h.id == id)) {
                    None => (
                        "unused",
                        Some("Target.NotInUse".to_string()),
                        Some("Target group is not configured to receive traffic from the load balancer".to_string()),
                    ),
                    Some(health) => (
                        state_name(health.state),
                        (!health.reason.is_empty()).then(|| health.reason.clone()),
                        (!health.description.is_empty()).then(|| health.description.clone()),
                    ),
                }
            };
            answer.push(TargetHealthDescription {
                target: TargetDescription {
                    id: id.clone(),
                    port: Some(target.port),
                },
                state: state.to_string(),
                reason,
                description,
            });
        }
        for health in probed.iter().flatten() {
            if health.state == TargetState::Draining && !group.targets.contains_key(&health.id) {
                answer.push(TargetHealthDescription {
                    target: TargetDescription {
                        id: health.id.clone(),
                        port: None,
                    },
                    state: "draining".to_string(),
                    reason: Some("Target.DeregistrationInProgress".to_string()),
                    description: Some("Target deregistration is in progress".to_string()),
                });
            }
        }
        if !only.is_empty() {
            answer.retain(|h| only.iter().any(|t| t.id == h.target.id));
        }
        Ok(answer)
    }

    /// CreateListener (HTTP, a forward action): binds (the balancer's
    /// address, `port`) and routes by the weights before answering. The
    /// same port and action again returns the listener; another action on
    /// a used port is DuplicateListener.
    pub async fn create_listener(
        &self,
        load_balancer_arn: &str,
        protocol: &str,
        port: u16,
        action: &ForwardAction,
    ) -> Result<Listener, Elbv2Error> {
        check_port("Port", port)?;
        if port == CLAIM_PORT {
            return Err(Elbv2Error::ValidationError(format!(
                "Port: {CLAIM_PORT} is reserved by the built-in cloud for its load balancers' addresses"
            )));
        }
        if !protocol.eq_ignore_ascii_case("HTTP") {
            return Err(Elbv2Error::UnsupportedProtocol(format!(
                "Protocol: '{protocol}' is not supported by the built-in cloud (HTTP)"
            )));
        }
        check_forward(action)?;
        let mut inner = self.inner.lock().await;
        let inner = &mut *inner;
        let balancer = inner
            .state
            .load_balancers
            .get(load_balancer_arn)
            .ok_or_else(|| {
                Elbv2Error::LoadBalancerNotFound(format!(
                    "Load balancer '{load_balancer_arn}' not found"
                ))
            })?;
        let address = balancer.address;
        let forward = forward_pairs(action);
        check_groups_exist(&inner.state, &forward)?;
        if let Some(existing) = inner
            .state
            .listeners
            .values()
            .find(|l| l.load_balancer_arn == load_balancer_arn && l.port == port)
        {
            if existing.forward == forward {
                return Ok(existing.to_wire());
            }
            return Err(Elbv2Error::DuplicateListener(format!(
                "A listener already exists on port {port} of load balancer '{load_balancer_arn}'"
            )));
        }
        let arn = listener_arn(load_balancer_arn);
        if let (Some(planes), Some(address)) = (&mut inner.planes, address) {
            planes
                .start_listener(&inner.state, &arn, address, port, &forward, false)
                .await?;
        }
        let record = ListenerRecord {
            arn: arn.clone(),
            load_balancer_arn: load_balancer_arn.to_string(),
            port,
            forward,
        };
        let answer = record.to_wire();
        inner.state.listeners.insert(arn, record);
        self.save(&inner.state)?;
        Ok(answer)
    }

    /// DescribeListeners of a load balancer, or the named ones.
    pub async fn describe_listeners(
        &self,
        load_balancer_arn: Option<&str>,
        arns: &[String],
    ) -> Result<Vec<Listener>, Elbv2Error> {
        let inner = self.inner.lock().await;
        let state = &inner.state;
        if let Some(lb) = load_balancer_arn {
            if !state.load_balancers.contains_key(lb) {
                return Err(Elbv2Error::LoadBalancerNotFound(format!(
                    "Load balancer '{lb}' not found"
                )));
            }
        }
        if let Some(missing) = arns.iter().find(|a| !state.listeners.contains_key(*a)) {
            return Err(Elbv2Error::ListenerNotFound(format!(
                "Listener '{missing}' not found"
            )));
        }
        Ok(state
            .listeners
            .values()
            .filter(|l| load_balancer_arn.is_none_or(|lb| l.load_balancer_arn == lb))
            .filter(|l| arns.is_empty() || arns.contains(&l.arn))
            .map(ListenerRecord::to_wire)
            .collect())
    }

    /// ModifyListener's forward action: answers only once the data plane
    /// routes by the new weights (every request that starts afterwards
    /// uses them).
    pub async fn modify_listener(
        &self,
        arn: &str,
        action: &ForwardAction,
    ) -> Result<Listener, Elbv2Error> {
        check_forward(action)?;
        let mut inner = self.inner.lock().await;
        let inner = &mut *inner;
        if !inner.state.listeners.contains_key(arn) {
            return Err(Elbv2Error::ListenerNotFound(format!(
                "Listener '{arn}' not found"
            )));
        }
        let forward = forward_pairs(action);
        check_groups_exist(&inner.state, &forward)?;
        if let Some(planes) = &mut inner.planes {
            let has_plane = inner
                .state
                .listeners
                .get(arn)
                .and_then(|l| inner.state.load_balancers.get(&l.load_balancer_arn))
                .is_some_and(|b| b.address.is_some());
            if has_plane {
                planes.set_forward(&inner.state, arn, &forward).await?;
            }
        }
        let listener = inner
            .state
            .listeners
            .get_mut(arn)
            .ok_or_else(|| Elbv2Error::Internal(format!("listener {arn} vanished")))?;
        listener.forward = forward;
        let answer = listener.to_wire();
        self.save(&inner.state)?;
        Ok(answer)
    }

    /// endstate's extension DescribeTargetGroupRequestCounts: responses and
    /// 5xx responses of the group over the last `window_seconds` (1 to
    /// 3600), counted by the data planes (0 without them).
    pub async fn target_group_request_counts(
        &self,
        arn: &str,
        window_seconds: u32,
    ) -> Result<TargetGroupRequestCounts, Elbv2Error> {
        if !(1..=MAX_COUNT_WINDOW_SECONDS).contains(&window_seconds) {
            return Err(Elbv2Error::ValidationError(format!(
                "WindowSeconds: {window_seconds} is outside 1 to {MAX_COUNT_WINDOW_SECONDS}"
            )));
        }
        let inner = self.inner.lock().await;
        if !inner.state.target_groups.contains_key(arn) {
            return Err(not_found_group(arn));
        }
        let (requests, server_errors) = inner.planes.as_ref().map_or((0, 0), |p| {
            p.counts(arn, Duration::from_secs(u64::from(window_seconds)))
        });
        Ok(TargetGroupRequestCounts {
            target_group_arn: arn.to_string(),
            window_seconds,
            requests,
            server_errors,
        })
    }

    /// Deregisters (drains) every target whose instance is gone (shutting
    /// down, terminated, or unknown) from every group. The process backend
    /// calls this after TerminateInstances and every second, so a freed
    /// address that a new instance gets is never sent the old one's traffic.
    pub async fn deregister_gone(&self, instances: &dyn InstanceDirectory) {
        let mut inner = self.inner.lock().await;
        let inner = &mut *inner;
        let mut changed = false;
        for group in inner.state.target_groups.values_mut() {
            let gone: Vec<String> = group
                .targets
                .keys()
                .filter(|id| instances.instance(id).is_none_or(|v| v.gone))
                .cloned()
                .collect();
            if gone.is_empty() {
                continue;
            }
            changed = true;
            for id in &gone {
                group.targets.remove(id);
            }
            if let Some(planes) = &inner.planes {
                if let Err(e) = planes.deregister(&group.arn, &gone) {
                    tracing::error!(error = %e, group = %group.arn, "deregistering terminated instances");
                }
            }
            tracing::info!(group = %group.arn, targets = ?gone, "terminated instances deregistered");
        }
        if changed {
            if let Err(e) = self.save(&inner.state) {
                tracing::error!(error = %e, "saving the ELBv2 records");
            }
        }
    }
}

/// Binds every load balancer's address and every listener again, holding
/// the lock (taken before any call could be served) until done.
async fn restore(mut guard: OwnedMutexGuard<Inner>, state: State, store: Option<Arc<Store>>) {
    let inner = &mut *guard;
    inner.state = state;
    let Some(planes) = &mut inner.planes else {
        return;
    };
    let mut moved = false;
    for balancer in inner.state.load_balancers.values_mut() {
        match planes.claim(&balancer.arn, balancer.address).await {
            Ok(address) => {
                moved |= balancer.address != Some(address);
                balancer.address = Some(address);
            }
            Err(e) => {
                tracing::error!(error = %e, load_balancer = %balancer.arn, "restoring a load balancer's address");
                balancer.address = None;
            }
        }
    }
    let listeners: Vec<ListenerRecord> = inner.state.listeners.values().cloned().collect();
    for listener in listeners {
        let address = inner
            .state
            .load_balancers
            .get(&listener.load_balancer_arn)
            .and_then(|b| b.address);
        let Some(address) = address else { continue };
        if let Err(e) = planes
            .start_listener(
                &inner.state,
                &listener.arn,
                address,
                listener.port,
                &listener.forward,
                true,
            )
            .await
        {
            tracing::error!(error = %e, listener = %listener.arn, "restoring a listener");
        }
    }
    if moved {
        if let Some(store) = store {
            match serde_json::to_string(&inner.state) {
                Ok(json) => {
                    if let Err(e) = store.save_elbv2_state(&json) {
                        tracing::error!(error = %e, "saving the ELBv2 records");
                    }
                }
                Err(e) => tracing::error!(error = %e, "serializing the ELBv2 records"),
            }
        }
    }
    tracing::info!(
        load_balancers = inner.state.load_balancers.len(),
        listeners = inner.state.listeners.len(),
        "load balancers restored"
    );
}

fn not_found_group(arn: &str) -> Elbv2Error {
    Elbv2Error::TargetGroupNotFound(format!("Target groups '[{arn}]' not found"))
}

fn forward_pairs(action: &ForwardAction) -> Vec<(String, u32)> {
    action
        .target_groups
        .iter()
        .map(|g| (g.target_group_arn.clone(), g.weight))
        .collect()
}

fn check_groups_exist(state: &State, forward: &[(String, u32)]) -> Result<(), Elbv2Error> {
    match forward
        .iter()
        .find(|(arn, _)| !state.target_groups.contains_key(arn))
    {
        Some((arn, _)) => Err(not_found_group(arn)),
        None => Ok(()),
    }
}

fn state_name(state: TargetState) -> &'static str {
    match state {
        TargetState::Initial => "initial",
        TargetState::Healthy => "healthy",
        TargetState::Unhealthy => "unhealthy",
        TargetState::Draining => "draining",
        TargetState::Unused => "unused",
    }
}
