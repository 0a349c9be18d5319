//! [`FakeProvider`]: an in-memory fake of EC2 behind the [`Provider`]
//! trait, for unit tests of the layers above (planner glue, executor,
//! controller). It is a fake, not a simulator: no timing, no eventual
//! consistency, no rate limits — the built-in cloud's `simulated` backend is
//! for those.
//!
//! What it does reproduce: ids `i-` + 17 hex digits; ClientToken
//! idempotency (the same token and request return the same instances, the
//! same token with another request fails with `IdempotentParameterMismatch`);
//! tag, state, id, zone and type filters with `*`/`?` wildcards; pages of
//! 1,000; the lifecycle one step per describe (`pending` → `running`,
//! `shutting-down` → `terminated`). Test knobs: injected faults for the next
//! N calls of an operation (optionally only launches of one zone/type), a
//! per-zone capacity, CPU utilization per instance (what the built-in
//! cloud's `DescribeInstanceUtilization` would report), and a log of calls.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::{
    Filter, Image, Instance, InstanceState, InstanceUtilization, LaunchRequest, Operation,
    Provider, ProviderError,
};

/// DescribeInstances page size, as EC2's maximum.
const PAGE_SIZE: usize = 1000;

/// The window [`FakeProvider::set_utilization`] reports.
const FAKE_WINDOW_SECONDS: f64 = 2.0;
/// The time [`FakeProvider::set_utilization`] reports as sampled.
const FAKE_SAMPLED_AT: &str = "2026-11-27T12:00:00Z";

/// What an injected fault does to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// The endpoint answers with an EC2 error; nothing happens.
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The connection is refused; nothing happens (`outcome_unknown` false).
    ConnectionRefused,
    /// No answer within the timeout, and nothing happened
    /// (`outcome_unknown` true).
    Timeout,
    /// The call takes effect but its answer is lost (`outcome_unknown`
    /// true): the case creates must survive.
    LostResponse,
}

/// A fault for the next `times` matching calls of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedFault {
    pub operation: Operation,
    pub times: u32,
    /// For RunInstances: only launches into this zone (`None`: any).
    pub zone: Option<String>,
    /// For RunInstances: only launches of this type (`None`: any).
    pub instance_type: Option<String>,
    pub kind: FaultKind,
}

impl InjectedFault {
    /// An EC2 error answer for the next call of `operation`.
    pub fn api(
        operation: Operation,
        status: u16,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(
            operation,
            FaultKind::Api {
                status,
                code: code.into(),
                message: message.into(),
            },
        )
    }

    /// Any fault for the next call of `operation`.
    pub fn new(operation: Operation, kind: FaultKind) -> Self {
        Self {
            operation,
            times: 1,
            zone: None,
            instance_type: None,
            kind,
        }
    }

    /// `RequestLimitExceeded` (HTTP 503) for the next call of `operation`.
    pub fn throttle(operation: Operation) -> Self {
        Self::api(
            operation,
            503,
            "RequestLimitExceeded",
            "Request limit exceeded.",
        )
    }

    /// `InsufficientInstanceCapacity` (HTTP 500, a server error in EC2's
    /// table) for the next launch of `instance_type` in `zone`.
    pub fn capacity(zone: impl Into<String>, instance_type: impl Into<String>) -> Self {
        let (zone, instance_type) = (zone.into(), instance_type.into());
        let message = format!(
            "We currently do not have sufficient {instance_type} capacity in the Availability Zone you requested ({zone})."
        );
        Self::api(
            Operation::RunInstances,
            500,
            "InsufficientInstanceCapacity",
            message,
        )
        .for_launch(zone, instance_type)
    }

    /// Applies to the next `times` matching calls instead of one.
    pub fn times(mut self, times: u32) -> Self {
        self.times = times;
        self
    }

    /// Only launches of `instance_type` into `zone` match.
    pub fn for_launch(mut self, zone: impl Into<String>, instance_type: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self.instance_type = Some(instance_type.into());
        self
    }

    fn matches(&self, operation: Operation, launch: Option<&LaunchRequest>) -> bool {
        if self.operation != operation || self.times == 0 {
            return false;
        }
        match launch {
            Some(launch) => {
                self.zone.as_ref().is_none_or(|z| *z == launch.zone)
                    && self
                        .instance_type
                        .as_ref()
                        .is_none_or(|t| *t == launch.instance_type)
            }
            None => true,
        }
    }
}

/// One call the fake received, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeCall {
    pub operation: Operation,
    /// RunInstances: the request.
    pub launch: Option<LaunchRequest>,
    /// DescribeInstances: the filters and token.
    pub filters: Vec<Filter>,
    pub next_token: Option<String>,
    /// Terminate / tag calls and DescribeImages: the ids.
    pub ids: Vec<String>,
    /// The EC2 error code (or `Transport`) the call failed with.
    pub error: Option<String>,
}

impl FakeCall {
    fn new(operation: Operation) -> Self {
        Self {
            operation,
            launch: None,
            filters: Vec::new(),
            next_token: None,
            ids: Vec::new(),
            error: None,
        }
    }
}

#[derive(Debug)]
struct TokenRecord {
    /// The request that first used the token, with the token cleared.
    request: LaunchRequest,
    ids: Vec<String>,
}

#[derive(Debug, Default)]
struct FakeState {
    /// In launch order.
    instances: Vec<Instance>,
    index: HashMap<String, usize>,
    tokens: HashMap<String, TokenRecord>,
    faults: Vec<InjectedFault>,
    capacity: HashMap<String, u32>,
    images: BTreeMap<String, Image>,
    calls: Vec<FakeCall>,
    launched: u64,
    utilization: BTreeMap<String, InstanceUtilization>,
}

/// An in-memory fake of EC2 (see the module docs).
#[derive(Debug)]
pub struct FakeProvider {
    zones: Vec<String>,
    state: Mutex<FakeState>,
}

impl Default for FakeProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeProvider {
    /// A fake of region us-east-1 with zones a, b and c.
    pub fn new() -> Self {
        Self::with_zones(["us-east-1a", "us-east-1b", "us-east-1c"])
    }

    /// A fake with the given zone names.
    pub fn with_zones(zones: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            zones: zones.into_iter().map(Into::into).collect(),
            state: Mutex::new(FakeState::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        // A panicking test thread cannot leave the state half-updated in a
        // way later assertions would misread; ignore poisoning.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a fault; faults match in the order they were added.
    pub fn inject(&self, fault: InjectedFault) {
        self.state().faults.push(fault);
    }

    /// Fails the next `times` calls of `operation` with an EC2 error.
    pub fn fail_next(
        &self,
        operation: Operation,
        times: u32,
        status: u16,
        code: &str,
        message: &str,
    ) {
        self.inject(InjectedFault::api(operation, status, code, message).times(times));
    }

    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// At most `capacity` live (pending or running) instances in `zone`; a
    /// launch beyond fails whole with `InsufficientInstanceCapacity`.
    pub fn set_zone_capacity(&self, zone: impl Into<String>, capacity: u32) {
        self.state().capacity.insert(zone.into(), capacity);
    }

    /// Makes an image known to DescribeImages.
    pub fn add_image(&self, image: Image) {
        self.state().images.insert(image.id.clone(), image);
    }

    /// What `instance_utilization` reports for `id` from now on: `percent`
    /// of one core over a 2-second window, the CPU seconds growing by that
    /// window's share at each call, sampled at a fixed time.
    pub fn set_utilization(&self, id: impl Into<String>, percent: f64) {
        let id = id.into();
        let mut s = self.state();
        let cpu_seconds = s.utilization.get(&id).map_or(0.0, |u| u.cpu_seconds);
        s.utilization.insert(
            id.clone(),
            InstanceUtilization {
                instance_id: id,
                cpu_utilization: percent,
                cpu_seconds: cpu_seconds + percent / 100.0 * FAKE_WINDOW_SECONDS,
                window_seconds: FAKE_WINDOW_SECONDS,
                sampled_at: FAKE_SAMPLED_AT.to_string(),
            },
        );
    }

    /// What `instance_utilization` reports for `utilization.instance_id`,
    /// every field as given.
    pub fn set_instance_utilization(&self, utilization: InstanceUtilization) {
        self.state()
            .utilization
            .insert(utilization.instance_id.clone(), utilization);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.state().calls.clone()
    }

    /// Forgets the call log.
    pub fn clear_calls(&self) {
        self.state().calls.clear();
    }

    /// Calls so far per operation, as [`crate::ec2::Ec2Client::request_counts`].
    pub fn request_counts(&self) -> BTreeMap<Operation, u64> {
        let mut counts = BTreeMap::new();
        for call in &self.state().calls {
            *counts.entry(call.operation).or_insert(0) += 1;
        }
        counts
    }

    /// Every instance in any state, in launch order, without advancing the
    /// lifecycle.
    pub fn instances(&self) -> Vec<Instance> {
        self.state().instances.clone()
    }

    /// Forces an instance's state (a crash, a stop made outside endstate).
    /// Returns false if the id is unknown.
    pub fn set_state(&self, id: &str, state: InstanceState) -> bool {
        let mut s = self.state();
        match s.index.get(id).copied() {
            Some(i) => {
                s.instances[i].state = state;
                true
            }
            None => false,
        }
    }

    /// Logs the call and applies the first matching fault, if any. Returns
    /// `Err` for faults that stop the call, and whether the response must be
    /// lost after the call takes effect.
    fn begin(&self, s: &mut FakeState, mut call: FakeCall) -> Result<bool, ProviderError> {
        let operation = call.operation;
        let fault = s
            .faults
            .iter_mut()
            .find(|f| f.matches(operation, call.launch.as_ref()))
            .map(|f| {
                f.times -= 1;
                f.kind.clone()
            });
        s.faults.retain(|f| f.times > 0);
        let result = match fault {
            None => Ok(false),
            Some(FaultKind::LostResponse) => Ok(true),
            Some(FaultKind::Api {
                status,
                code,
                message,
            }) => Err(api(operation, status, &code, message)),
            Some(FaultKind::ConnectionRefused) => Err(ProviderError::Transport {
                operation,
                message: "connection refused (injected)".to_string(),
                outcome_unknown: false,
            }),
            Some(FaultKind::Timeout) => Err(ProviderError::Transport {
                operation,
                message: "timed out (injected)".to_string(),
                outcome_unknown: true,
            }),
        };
        if let Err(e) = &result {
            call.error = Some(e.code().unwrap_or("Transport").to_string());
        }
        s.calls.push(call);
        result
    }

    /// Ends a call: records its error in the log, and replaces a success by
    /// a lost response if the fault said so.
    fn finish<T>(
        &self,
        s: &mut FakeState,
        lose: bool,
        result: Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let operation = s.calls.last().map(|c| c.operation);
        let result = match (lose, result, operation) {
            (true, Ok(_), Some(operation)) => Err(ProviderError::Transport {
                operation,
                message: "connection reset after the request was sent (injected)".to_string(),
                outcome_unknown: true,
            }),
            (_, result, _) => result,
        };
        if let (Err(e), Some(call)) = (&result, s.calls.last_mut()) {
            call.error = Some(e.code().unwrap_or("Transport").to_string());
        }
        result
    }

    fn launch(
        &self,
        s: &mut FakeState,
        request: &LaunchRequest,
    ) -> Result<Vec<Instance>, ProviderError> {
        let operation = Operation::RunInstances;
        let mut fingerprint = request.clone();
        fingerprint.client_token.clear();
        if !request.client_token.is_empty() {
            if let Some(record) = s.tokens.get(&request.client_token) {
                if record.request != fingerprint {
                    return Err(api(
                        operation,
                        400,
                        "IdempotentParameterMismatch",
                        format!(
                            "The client token {} was used before with different parameters.",
                            request.client_token
                        ),
                    ));
                }
                return Ok(record
                    .ids
                    .iter()
                    .filter_map(|id| s.index.get(id))
                    .map(|&i| s.instances[i].clone())
                    .collect());
            }
        }
        if request.count == 0 {
            return Err(api(
                operation,
                400,
                "InvalidParameterValue",
                "MinCount must be at least 1.",
            ));
        }
        if !self.zones.contains(&request.zone) {
            return Err(api(
                operation,
                400,
                "InvalidParameterValue",
                format!("Invalid availability zone: [{}]", request.zone),
            ));
        }
        if let Some(&capacity) = s.capacity.get(&request.zone) {
            let live = s
                .instances
                .iter()
                .filter(|i| i.zone == request.zone && i.state.is_live())
                .count() as u64;
            if live + u64::from(request.count) > u64::from(capacity) {
                return Err(api(
                    operation,
                    500,
                    "InsufficientInstanceCapacity",
                    format!(
                        "We currently do not have sufficient {} capacity in the Availability Zone you requested ({}).",
                        request.instance_type, request.zone
                    ),
                ));
            }
        }
        let launch_time = now_rfc3339();
        let mut launched = Vec::with_capacity(request.count as usize);
        for _ in 0..request.count {
            s.launched += 1;
            let n = s.launched;
            let instance = Instance {
                id: instance_id(n),
                image_id: request.image_id.clone(),
                instance_type: request.instance_type.clone(),
                zone: request.zone.clone(),
                subnet_id: request.subnet_id.clone(),
                state: InstanceState::Pending,
                launch_time: launch_time.clone(),
                private_ip: Some(format!(
                    "10.{}.{}.{}",
                    (n >> 16) & 0xff,
                    (n >> 8) & 0xff,
                    n & 0xff
                )),
                client_token: Some(request.client_token.clone()).filter(|t| !t.is_empty()),
                tags: request.tags.clone(),
            };
            s.index.insert(instance.id.clone(), s.instances.len());
            s.instances.push(instance.clone());
            launched.push(instance);
        }
        if !request.client_token.is_empty() {
            s.tokens.insert(
                request.client_token.clone(),
                TokenRecord {
                    request: fingerprint,
                    ids: launched.iter().map(|i| i.id.clone()).collect(),
                },
            );
        }
        Ok(launched)
    }

    fn check_ids(s: &FakeState, operation: Operation, ids: &[String]) -> Result<(), ProviderError> {
        let missing: Vec<&str> = ids
            .iter()
            .filter(|id| !s.index.contains_key(*id))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(api(
            operation,
            400,
            "InvalidInstanceID.NotFound",
            format!("The instance IDs '{}' do not exist", missing.join(", ")),
        ))
    }
}

fn api(operation: Operation, status: u16, code: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::Api {
        operation,
        status,
        code: code.to_string(),
        message: message.into(),
        request_id: Some("fake-request".to_string()),
    }
}

/// `i-` and 17 hex digits, distinct for distinct `n` (splitmix64 is a
/// bijection; the low nibble of `n` makes the 17th digit).
fn instance_id(n: u64) -> String {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let value = (u128::from(z) << 4) | u128::from(n & 0xf);
    format!("i-{value:017x}")
}

fn now_rfc3339() -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].000Z");
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_string())
}

/// EC2's filter wildcards: `*` any run, `?` one character.
fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether `instance` passes `filter`; `Err` for a filter EC2 would not
/// know (the fake supports a subset).
fn filter_matches(instance: &Instance, filter: &Filter) -> Result<bool, String> {
    let any = |value: &str| {
        filter
            .values
            .iter()
            .any(|pattern| glob_match(pattern, value))
    };
    Ok(if let Some(key) = filter.name.strip_prefix("tag:") {
        instance.tags.get(key).is_some_and(|v| any(v))
    } else {
        match filter.name.as_str() {
            "tag-key" => instance.tags.keys().any(|k| any(k)),
            "instance-state-name" => any(instance.state.as_str()),
            "instance-id" => any(&instance.id),
            "availability-zone" => any(&instance.zone),
            "instance-type" => any(&instance.instance_type),
            "image-id" => any(&instance.image_id),
            "client-token" => instance.client_token.as_deref().is_some_and(any),
            "subnet-id" => instance.subnet_id.as_deref().is_some_and(any),
            other => return Err(format!("The filter '{other}' is invalid")),
        }
    })
}

#[async_trait]
impl Provider for FakeProvider {
    async fn run_instances(&self, request: &LaunchRequest) -> Result<Vec<Instance>, ProviderError> {
        let mut s = self.state();
        let mut call = FakeCall::new(Operation::RunInstances);
        call.launch = Some(request.clone());
        let lose = self.begin(&mut s, call)?;
        let result = self.launch(&mut s, request);
        self.finish(&mut s, lose, result)
    }

    async fn describe_instances_page(
        &self,
        filters: &[Filter],
        next_token: Option<&str>,
    ) -> Result<(Vec<Instance>, Option<String>), ProviderError> {
        let operation = Operation::DescribeInstances;
        let mut s = self.state();
        let mut call = FakeCall::new(operation);
        call.filters = filters.to_vec();
        call.next_token = next_token.map(str::to_string);
        let lose = self.begin(&mut s, call)?;
        // One lifecycle step per describe.
        for instance in &mut s.instances {
            instance.state = match instance.state {
                InstanceState::Pending => InstanceState::Running,
                InstanceState::ShuttingDown => InstanceState::Terminated,
                InstanceState::Stopping => InstanceState::Stopped,
                other => other,
            };
        }
        let result = (|| {
            let start = match next_token {
                None => 0,
                Some(token) => token
                    .strip_prefix("fake-page-")
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| {
                        api(
                            operation,
                            400,
                            "InvalidParameterValue",
                            format!("Invalid NextToken: {token}"),
                        )
                    })?,
            };
            let mut matching = Vec::new();
            for instance in &s.instances {
                let mut keep = true;
                for filter in filters {
                    if !filter_matches(instance, filter)
                        .map_err(|m| api(operation, 400, "InvalidParameterValue", m))?
                    {
                        keep = false;
                        break;
                    }
                }
                if keep {
                    matching.push(instance);
                }
            }
            let page: Vec<Instance> = matching
                .iter()
                .skip(start)
                .take(PAGE_SIZE)
                .map(|&i| i.clone())
                .collect();
            let end = start + page.len();
            let next = (end < matching.len()).then(|| format!("fake-page-{end}"));
            Ok((page, next))
        })();
        self.finish(&mut s, lose, result)
    }

    async fn terminate_instances(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, InstanceState)>, ProviderError> {
        let operation = Operation::TerminateInstances;
        let mut s = self.state();
        let mut call = FakeCall::new(operation);
        call.ids = ids.to_vec();
        let lose = self.begin(&mut s, call)?;
        let result = Self::check_ids(&s, operation, ids).map(|()| {
            let positions: Vec<usize> = ids
                .iter()
                .filter_map(|id| s.index.get(id).copied())
                .collect();
            positions
                .into_iter()
                .map(|i| {
                    let instance = &mut s.instances[i];
                    if !instance.state.is_gone() {
                        instance.state = InstanceState::ShuttingDown;
                    }
                    (instance.id.clone(), instance.state)
                })
                .collect()
        });
        self.finish(&mut s, lose, result)
    }

    async fn create_tags(
        &self,
        ids: &[String],
        tags: &BTreeMap<String, String>,
    ) -> Result<(), ProviderError> {
        let operation = Operation::CreateTags;
        let mut s = self.state();
        let mut call = FakeCall::new(operation);
        call.ids = ids.to_vec();
        let lose = self.begin(&mut s, call)?;
        let result = Self::check_ids(&s, operation, ids).map(|()| {
            for id in ids {
                if let Some(i) = s.index.get(id).copied() {
                    s.instances[i]
                        .tags
                        .extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        });
        self.finish(&mut s, lose, result)
    }

    async fn delete_tags(&self, ids: &[String], keys: &[String]) -> Result<(), ProviderError> {
        let operation = Operation::DeleteTags;
        let mut s = self.state();
        let mut call = FakeCall::new(operation);
        call.ids = ids.to_vec();
        let lose = self.begin(&mut s, call)?;
        let result = Self::check_ids(&s, operation, ids).map(|()| {
            for id in ids {
                if let Some(i) = s.index.get(id).copied() {
                    for key in keys {
                        s.instances[i].tags.remove(key);
                    }
                }
            }
        });
        self.finish(&mut s, lose, result)
    }

    async fn describe_images(&self, ids: &[String]) -> Result<Vec<Image>, ProviderError> {
        let operation = Operation::DescribeImages;
        let mut s = self.state();
        let mut call = FakeCall::new(operation);
        call.ids = ids.to_vec();
        let lose = self.begin(&mut s, call)?;
        let missing: Vec<&str> = ids
            .iter()
            .filter(|id| !s.images.contains_key(*id))
            .map(String::as_str)
            .collect();
        let result = if missing.is_empty() {
            Ok(ids
                .iter()
                .filter_map(|id| s.images.get(id).cloned())
                .collect())
        } else {
            Err(api(
                operation,
                400,
                "InvalidAMIID.NotFound",
                format!("The image id '[{}]' does not exist", missing.join(", ")),
            ))
        };
        self.finish(&mut s, lose, result)
    }

    async fn describe_availability_zones(&self) -> Result<Vec<String>, ProviderError> {
        let mut s = self.state();
        let lose = self.begin(&mut s, FakeCall::new(Operation::DescribeAvailabilityZones))?;
        let result = Ok(self.zones.clone());
        self.finish(&mut s, lose, result)
    }

    /// The utilization set for `ids` (every one set when empty); ids
    /// never set are absent, as instances the cloud has not sampled yet.
    async fn instance_utilization(
        &self,
        ids: &[String],
    ) -> Result<Vec<InstanceUtilization>, ProviderError> {
        let mut s = self.state();
        let mut call = FakeCall::new(Operation::DescribeInstanceUtilization);
        call.ids = ids.to_vec();
        let lose = self.begin(&mut s, call)?;
        let result = Ok(s
            .utilization
            .values()
            .filter(|u| ids.is_empty() || ids.contains(&u.instance_id))
            .cloned()
            .collect());
        self.finish(&mut s, lose, result)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn launch(count: u32, zone: &str, token: &str) -> LaunchRequest {
        LaunchRequest {
            image_id: "ami-1".into(),
            instance_type: "t3.micro".into(),
            count,
            zone: zone.into(),
            subnet_id: None,
            security_group_ids: vec![],
            key_name: None,
            iam_instance_profile: None,
            root_volume: None,
            metadata: Default::default(),
            user_data: None,
            tags: [("endstate:project".to_string(), "demo".to_string())]
                .into_iter()
                .collect(),
            client_token: token.into(),
        }
    }

    async fn describe_all(fake: &FakeProvider, filters: &[Filter]) -> (Vec<Instance>, usize) {
        crate::describe_all(fake, filters).await.unwrap()
    }

    #[test]
    fn ids_look_like_ec2_and_are_distinct() {
        let ids: std::collections::HashSet<String> = (1..=10_000).map(instance_id).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(20) {
            assert_eq!(id.len(), 19, "{id}");
            assert!(id[2..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("web-*", "web-1"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(glob_match("*b*", "abc"));
        assert!(!glob_match("web", "web-1"));
    }

    #[tokio::test]
    async fn client_token_returns_the_same_instances() {
        let fake = FakeProvider::new();
        let first = fake
            .run_instances(&launch(3, "us-east-1a", "tok-1"))
            .await
            .unwrap();
        let again = fake
            .run_instances(&launch(3, "us-east-1a", "tok-1"))
            .await
            .unwrap();
        assert_eq!(
            first.iter().map(|i| &i.id).collect::<Vec<_>>(),
            again.iter().map(|i| &i.id).collect::<Vec<_>>()
        );
        assert_eq!(fake.instances().len(), 3);
        let err = fake
            .run_instances(&launch(2, "us-east-1a", "tok-1"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("IdempotentParameterMismatch"));
        fake.run_instances(&launch(2, "us-east-1a", "tok-2"))
            .await
            .unwrap();
        assert_eq!(fake.instances().len(), 5);
    }

    #[tokio::test]
    async fn lifecycle_advances_one_step_per_describe() {
        let fake = FakeProvider::new();
        let launched = fake
            .run_instances(&launch(2, "us-east-1b", "t"))
            .await
            .unwrap();
        assert!(launched.iter().all(|i| i.state == InstanceState::Pending));
        let (seen, _) = describe_all(&fake, &[]).await;
        assert!(seen.iter().all(|i| i.state == InstanceState::Running));
        let changes = fake
            .terminate_instances(&[launched[0].id.clone()])
            .await
            .unwrap();
        assert_eq!(
            changes,
            vec![(launched[0].id.clone(), InstanceState::ShuttingDown)]
        );
        let running = [Filter::new("instance-state-name", ["pending", "running"])];
        let (live, _) = describe_all(&fake, &running).await;
        assert_eq!(live.len(), 1);
        let (all, _) = describe_all(&fake, &[]).await;
        assert_eq!(all[0].state, InstanceState::Terminated);
        let err = fake
            .terminate_instances(&["i-00000000000000000".into()])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("InvalidInstanceID.NotFound"));
    }

    #[tokio::test]
    async fn pages_of_one_thousand_and_tag_filters() {
        let fake = FakeProvider::new();
        fake.run_instances(&launch(1000, "us-east-1a", "a"))
            .await
            .unwrap();
        fake.run_instances(&launch(500, "us-east-1b", "b"))
            .await
            .unwrap();
        let mut other = launch(7, "us-east-1c", "c");
        other.tags.insert("endstate:project".into(), "other".into());
        fake.run_instances(&other).await.unwrap();
        let (demo, pages) = describe_all(&fake, &[Filter::tag("endstate:project", "demo")]).await;
        assert_eq!((demo.len(), pages), (1500, 2));
        let (others, pages) = describe_all(&fake, &[Filter::tag("endstate:project", "oth*")]).await;
        assert_eq!((others.len(), pages), (7, 1));
        let err = fake
            .describe_instances_page(&[Filter::new("no-such-filter", ["x"])], None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("InvalidParameterValue"));
    }

    #[tokio::test]
    async fn tags_are_created_and_deleted() {
        let fake = FakeProvider::new();
        let ids: Vec<String> = fake
            .run_instances(&launch(2, "us-east-1a", ""))
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        let tags = [("role".to_string(), "web".to_string())]
            .into_iter()
            .collect();
        fake.create_tags(&ids, &tags).await.unwrap();
        let (web, _) = describe_all(&fake, &[Filter::tag("role", "web")]).await;
        assert_eq!(web.len(), 2);
        fake.delete_tags(&ids[..1], &["role".to_string()])
            .await
            .unwrap();
        let (web, _) = describe_all(&fake, &[Filter::new("tag-key", ["role"])]).await;
        assert_eq!(web.len(), 1);
    }

    #[tokio::test]
    async fn injected_faults_and_capacity() {
        let fake = FakeProvider::new();
        fake.inject(InjectedFault::capacity("us-east-1a", "t3.micro").times(2));
        for _ in 0..2 {
            let err = fake
                .run_instances(&launch(1, "us-east-1a", ""))
                .await
                .unwrap_err();
            assert!(err.is_capacity());
        }
        // Other zones are unaffected, and the fault is used up.
        fake.run_instances(&launch(1, "us-east-1b", ""))
            .await
            .unwrap();
        fake.run_instances(&launch(1, "us-east-1a", ""))
            .await
            .unwrap();

        fake.set_zone_capacity("us-east-1c", 3);
        fake.run_instances(&launch(3, "us-east-1c", ""))
            .await
            .unwrap();
        let err = fake
            .run_instances(&launch(1, "us-east-1c", ""))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("InsufficientInstanceCapacity"));

        fake.fail_next(
            Operation::DescribeInstances,
            1,
            503,
            "RequestLimitExceeded",
            "slow down",
        );
        assert!(fake
            .describe_instances_page(&[], None)
            .await
            .unwrap_err()
            .is_throttle());
        assert!(fake.describe_instances_page(&[], None).await.is_ok());

        let counts = fake.request_counts();
        assert_eq!(counts[&Operation::RunInstances], 6);
        assert_eq!(counts[&Operation::DescribeInstances], 2);
        let failed: Vec<_> = fake.calls().into_iter().filter_map(|c| c.error).collect();
        assert_eq!(
            failed,
            [
                "InsufficientInstanceCapacity",
                "InsufficientInstanceCapacity",
                "InsufficientInstanceCapacity",
                "RequestLimitExceeded"
            ]
        );
    }

    #[tokio::test]
    async fn lost_response_takes_effect_and_the_token_recovers_it() {
        let fake = FakeProvider::new();
        fake.inject(InjectedFault::new(
            Operation::RunInstances,
            FaultKind::LostResponse,
        ));
        let err = fake
            .run_instances(&launch(2, "us-east-1a", "intent-1"))
            .await
            .unwrap_err();
        assert!(err.outcome_unknown());
        assert_eq!(fake.instances().len(), 2);
        let retried = fake
            .run_instances(&launch(2, "us-east-1a", "intent-1"))
            .await
            .unwrap();
        assert_eq!(retried.len(), 2);
        assert_eq!(fake.instances().len(), 2);

        fake.inject(InjectedFault::new(
            Operation::TerminateInstances,
            FaultKind::ConnectionRefused,
        ));
        let err = fake
            .terminate_instances(&[retried[0].id.clone()])
            .await
            .unwrap_err();
        assert!(!err.outcome_unknown());
        assert!(fake
            .instances()
            .iter()
            .all(|i| i.state == InstanceState::Pending));
    }

    #[tokio::test]
    async fn utilization_is_what_the_test_set_and_absent_until_set() {
        let fake = FakeProvider::new();
        assert!(fake.instance_utilization(&[]).await.unwrap().is_empty());
        fake.set_utilization("i-busy", 150.0);
        fake.set_utilization("i-idle", 2.5);
        fake.set_utilization("i-busy", 90.0);
        let all = fake.instance_utilization(&[]).await.unwrap();
        assert_eq!(all.len(), 2);
        let busy = &fake
            .instance_utilization(&["i-busy".to_string(), "i-never".to_string()])
            .await
            .unwrap()[0];
        assert_eq!(busy.instance_id, "i-busy");
        assert_eq!(busy.cpu_utilization, 90.0);
        // 150% then 90% of two-second windows.
        assert!((busy.cpu_seconds - 4.8).abs() < 1e-9, "{busy:?}");
        assert_eq!(busy.window_seconds, 2.0);
        fake.fail_next(
            Operation::DescribeInstanceUtilization,
            1,
            503,
            "RequestLimitExceeded",
            "slow down",
        );
        assert!(fake
            .instance_utilization(&[])
            .await
            .unwrap_err()
            .is_throttle());
        assert_eq!(
            fake.request_counts()
                .get(&Operation::DescribeInstanceUtilization),
            Some(&4)
        );
    }
}
