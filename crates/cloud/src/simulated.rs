//! The `simulated` backend: instances as in-memory records with EC2's
//! lifecycle on a shared clock (pending → running after a delay; stopping →
//! stopped; shutting-down → terminated), EC2's ClientToken semantics,
//! eventual consistency of DescribeInstances, EC2's token buckets, capacity
//! per zone and instance type, and seeded fault injection.
//!
//! States are computed lazily from when a record entered its phase, so
//! nothing ticks in the background and a `ManualClock` drives everything.
//! Instances are indexed by id, by ClientToken and by tag, so a tag-filtered
//! DescribeInstances page costs the page, not the fleet.
//!
//! This is also the one implementation of EC2's API semantics that the
//! `process` backend reuses: a `Runtime` is told of every launch, stop,
//! start, reboot and termination (and ends the transitional phases when it
//! says so), and a `Journal` is handed every change so that a store can
//! write it through and `SimulatedBackend::restore` brings the records
//! back. The simulated backend itself has neither, and pays nothing for them.
//!
//! Not here: anything that runs (the `process` backend's runtime), the
//! store itself (`store`), volumes, networks, and IMDS.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use endstate_clock::SharedClock;
use endstate_wire::limits::{BucketShape, RequestClass, ResourceClass, TokenBucket};
use endstate_wire::{
    AvailabilityZone, CreateImageRequest, CreateImageResponse, CreateTagsRequest,
    CreateTagsResponse, DeleteTag, DeleteTagsRequest, DeleteTagsResponse,
    DescribeAvailabilityZonesRequest, DescribeAvailabilityZonesResponse, DescribeImagesRequest,
    DescribeImagesResponse, DescribeInstanceStatusRequest, DescribeInstanceStatusResponse,
    DescribeInstancesRequest, DescribeInstancesResponse, Filter, Image, Instance,
    InstanceMetadataOptions, InstanceStateChange, InstanceStateInfo, InstanceStatus,
    RebootInstancesRequest, RebootInstancesResponse, Request as _, Reservation,
    RunInstancesRequest, RunInstancesResponse, StartInstancesRequest, StartInstancesResponse,
    StopInstancesRequest, StopInstancesResponse, Tag, TerminateInstancesRequest,
    TerminateInstancesResponse, UserData,
};
use endstate_wire::{
    BakeImageRequest, BakeImageResponse, GetBakeOutputRequest, GetBakeOutputResponse,
};
use endstate_wire::{
    DeleteSnapshotRequest, DeleteSnapshotResponse, DeregisterImageRequest, DeregisterImageResponse,
    GetConsoleOutputRequest, GetConsoleOutputResponse, ModifyInstanceMetadataOptionsRequest,
    ModifyInstanceMetadataOptionsResponse,
};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::backend::Backend;
use crate::elbv2::{InstanceDirectory, InstanceView, LoadBalancers, GENERATION_TAG};
use crate::error::ApiError;

/// EC2's limit on user data, before base64.
pub const MAX_USER_DATA_BYTES: usize = 16_384;

/// EC2's limit on tags per resource.
const MAX_TAGS: usize = 50;

/// The default instance type of RunInstances without one, as on EC2.
const DEFAULT_INSTANCE_TYPE: &str = "m1.small";

/// How long each transitional state lasts, in the clock's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// pending → running (launch and start).
    pub pending: Duration,
    /// stopping → stopped.
    pub stopping: Duration,
    /// shutting-down → terminated.
    pub shutting_down: Duration,
}

impl Default for Timings {
    /// Roughly what EC2 takes for a small Linux instance.
    fn default() -> Self {
        Self {
            pending: Duration::from_secs(15),
            stopping: Duration::from_secs(10),
            shutting_down: Duration::from_secs(10),
        }
    }
}

impl Timings {
    /// Phases that never end on the clock: a runtime ends them (the
    /// process backend's instances run when their top process says so).
    pub fn runtime_driven() -> Self {
        Self {
            pending: Duration::MAX,
            stopping: Duration::MAX,
            shutting_down: Duration::MAX,
        }
    }
}

/// Token bucket shapes per request class and per resource class.
#[derive(Debug, Clone, PartialEq)]
pub struct Throttling {
    pub requests: BTreeMap<RequestClass, BucketShape>,
    pub resources: BTreeMap<ResourceClass, BucketShape>,
}

impl Throttling {
    /// EC2's documented defaults (`endstate_wire::limits`).
    pub fn ec2_defaults() -> Self {
        Self {
            requests: RequestClass::ALL
                .iter()
                .map(|c| (*c, c.default_shape()))
                .collect(),
            resources: [
                ResourceClass::RunInstances,
                ResourceClass::TerminateInstances,
                ResourceClass::StartInstances,
                ResourceClass::StopInstances,
            ]
            .iter()
            .map(|c| (*c, c.default_shape()))
            .collect(),
        }
    }
}

/// Seeded fault injection: per action, the probability that a call fails
/// with `InternalError` (HTTP 500) before it takes effect; and the share of
/// instances that fail their instance status check once running.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Faults {
    pub seed: u64,
    /// Action name (`RunInstances`, ...) → rate in 0.0..=1.0.
    pub error_rates: BTreeMap<String, f64>,
    /// The share of instances (0.0..=1.0) whose instance status check turns
    /// `impaired` at some moment within `failure_window` of their start
    /// (at once when the window is zero). Which instances, and when, follow
    /// from the seed and the instance, so a run can be replayed.
    pub instance_failure_rate: f64,
    pub failure_window: Duration,
}

impl Faults {
    /// When, after it started running, instance `seq` fails its status
    /// check — `None` if it never does.
    fn instance_failure(&self, seq: u64) -> Option<Duration> {
        if self.instance_failure_rate <= 0.0 {
            return None;
        }
        let draw = scramble(seq ^ self.seed.rotate_left(17));
        let unit = |x: u64| (x >> 11) as f64 / (1u64 << 53) as f64;
        if unit(draw) >= self.instance_failure_rate {
            return None;
        }
        Some(self.failure_window.mul_f64(unit(scramble(draw))))
    }
}

/// Everything the simulated cloud is made of.
#[derive(Debug, Clone)]
pub struct SimulatedConfig {
    pub region: String,
    pub account_id: String,
    /// Zone names, in order; RunInstances without a zone picks the one with
    /// the most free capacity, the first on a tie.
    pub zones: Vec<String>,
    /// The images RunInstances accepts and DescribeImages lists.
    pub images: Vec<Image>,
    pub timings: Timings,
    /// How long a new instance stays missing from DescribeInstances and
    /// DescribeInstanceStatus (RunInstances' own answer has it at once).
    pub consistency_delay: Duration,
    /// How long a terminated instance still shows in filtered
    /// DescribeInstances listings (EC2: about an hour). By id it shows for
    /// as long as the cloud runs.
    pub terminated_visible_for: Duration,
    /// `None`: no throttling.
    pub throttling: Option<Throttling>,
    /// Live (not stopped, not terminated) instances allowed per
    /// (zone, instance type); a pair not listed is unlimited.
    pub capacity: BTreeMap<(String, String), u32>,
    pub faults: Faults,
    /// Mixed into instance and reservation ids, so that two clouds do not
    /// hand out the same ids (EC2's are unique). 0 in tests, for ids that
    /// repeat run after run.
    pub id_salt: u64,
}

impl SimulatedConfig {
    /// A region with three zones (`{region}a..c`), one image, EC2's
    /// default throttling and timings, no consistency delay, unlimited
    /// capacity, no faults.
    pub fn new(region: impl Into<String>) -> Self {
        let region = region.into();
        Self {
            zones: ["a", "b", "c"]
                .iter()
                .map(|z| format!("{region}{z}"))
                .collect(),
            region,
            account_id: "123456789012".to_string(),
            images: vec![Image {
                image_id: "ami-0e5c0f5d3b1e2a4f6".to_string(),
                name: Some("endstate-base".to_string()),
                state: "available".to_string(),
                owner_id: Some("123456789012".to_string()),
                architecture: Some("x86_64".to_string()),
                root_device_name: Some("/dev/xvda".to_string()),
                creation_date: Some("2026-11-01T00:00:00.000Z".to_string()),
                tags: vec![],
            }],
            timings: Timings::default(),
            consistency_delay: Duration::ZERO,
            terminated_visible_for: Duration::from_secs(3600),
            throttling: Some(Throttling::ec2_defaults()),
            capacity: BTreeMap::new(),
            faults: Faults::default(),
            id_salt: 0,
        }
    }
}

/// Where an instance is in its lifecycle. Transitional phases end on their
/// own after the configured time; `state` computes which applies now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Pending,
    Running,
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
}

impl Phase {
    const ALL: [Phase; 6] = [
        Phase::Pending,
        Phase::Running,
        Phase::Stopping,
        Phase::Stopped,
        Phase::ShuttingDown,
        Phase::Terminated,
    ];

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
            Phase::ShuttingDown => "shutting-down",
            Phase::Terminated => "terminated",
        }
    }

    /// Whether the instance holds capacity in its zone.
    pub(crate) fn is_live(self) -> bool {
        matches!(self, Phase::Pending | Phase::Running)
    }
}

/// One instance. User data is kept (the metadata service serves it) and
/// never printed: Debug of `UserData` shows its length.
#[derive(Debug, Clone)]
pub(crate) struct InstanceRecord {
    pub(crate) id: String,
    pub(crate) reservation_id: Arc<str>,
    pub(crate) image_id: String,
    pub(crate) instance_type: String,
    pub(crate) zone: String,
    pub(crate) key_name: Option<String>,
    pub(crate) subnet_id: Option<String>,
    pub(crate) client_token: Option<String>,
    pub(crate) launch_index: u32,
    /// Clock time of RunInstances.
    pub(crate) launched: Duration,
    pub(crate) phase: Phase,
    /// Clock time the phase began.
    pub(crate) since: Duration,
    /// Shared between the instances of one launch until one is retagged
    /// (copy on write): 100,000 instances need not hold 100,000 copies.
    pub(crate) tags: Arc<BTreeMap<String, String>>,
    pub(crate) metadata_options: Option<InstanceMetadataOptions>,
    pub(crate) user_data: Option<UserData>,
}

impl InstanceRecord {
    /// The phase at `now`, transitional phases having run their course.
    fn phase_at(&self, now: Duration, t: &Timings) -> Phase {
        let elapsed = now.saturating_sub(self.since);
        match self.phase {
            Phase::Pending if elapsed >= t.pending => Phase::Running,
            Phase::Stopping if elapsed >= t.stopping => Phase::Stopped,
            Phase::ShuttingDown if elapsed >= t.shutting_down => Phase::Terminated,
            p => p,
        }
    }

    /// Whether the instance terminated more than `retention` before `now`.
    fn terminated_before(&self, now: Duration, t: &Timings, retention: Duration) -> bool {
        let ended = match self.phase {
            Phase::Terminated => self.since,
            Phase::ShuttingDown => self.since.saturating_add(t.shutting_down),
            _ => return false,
        };
        now.saturating_sub(ended) > retention
    }

    /// Records the phase at `now` as the current one, keeping the time it
    /// began, so that the next transition starts from the right state.
    fn settle(&mut self, now: Duration, t: &Timings) {
        let phase = self.phase_at(now, t);
        if phase != self.phase {
            let lasted = match self.phase {
                Phase::Pending => t.pending,
                Phase::Stopping => t.stopping,
                Phase::ShuttingDown => t.shutting_down,
                _ => Duration::ZERO,
            };
            self.since = self.since.saturating_add(lasted);
            self.phase = phase;
        }
    }

    fn enter(&mut self, phase: Phase, now: Duration) {
        self.phase = phase;
        self.since = now;
    }
}

/// What a ClientToken was first used with, and what it made.
#[derive(Debug, Clone)]
pub(crate) struct TokenRecord {
    pub(crate) request: RunInstancesRequest,
    pub(crate) reservation_id: Arc<str>,
    pub(crate) seqs: Vec<u64>,
}

impl TokenRecord {
    /// The request as form parameters: how a journal stores it.
    pub(crate) fn request_form(&self) -> String {
        self.request.to_params().to_form()
    }

    pub(crate) fn request_from_form(form: &str) -> Result<RunInstancesRequest, String> {
        let params = endstate_wire::Params::from_form(form).map_err(|e| e.to_string())?;
        RunInstancesRequest::from_params(&params).map_err(|e| e.to_string())
    }
}

/// An image: what DescribeImages shows, and the layers a runtime made it of
/// (none in the simulated backend).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ImageRecord {
    pub(crate) image: Image,
    pub(crate) description: Option<String>,
    /// Layer digests, top first.
    pub(crate) layers: Vec<String>,
}

/// One change of the records, as a [`Journal`] receives it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    /// An instance, and the address a runtime gave it.
    Instance(u64, &'a InstanceRecord, Option<&'a str>),
    Token(&'a str, &'a TokenRecord),
    Image(&'a ImageRecord),
    ImageGone(&'a str),
    Counters {
        next_seq: u64,
        next_reservation: u64,
    },
}

/// Where the records' changes are written through (the process backend's
/// SQLite store). Called with the world's lock held, so changes arrive in
/// the order they were made; one call is one transaction.
pub(crate) trait Journal: Send + Sync + std::fmt::Debug + 'static {
    fn write(&self, changes: &[Change<'_>]) -> Result<(), String>;
}

/// What a runtime is told of a new instance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LaunchInfo<'a> {
    pub(crate) record: &'a InstanceRecord,
    /// The layers of the instance's image, top first.
    pub(crate) layers: &'a [String],
}

/// What makes instances real (the process backend's processes). Told of
/// every change after the records changed and were journaled, with the
/// world's lock held: methods return quickly and wait on their own tasks.
/// Transitional phases (pending, stopping, shutting-down) end when the
/// runtime calls `SimulatedBackend::advance`.
pub(crate) trait Runtime: Send + Sync + std::fmt::Debug + 'static {
    /// Makes the instance and starts it; answers its address.
    fn launch(&self, info: &LaunchInfo<'_>) -> Option<String>;
    fn stop(&self, id: &str);
    fn start(&self, id: &str);
    fn reboot(&self, id: &str);
    fn terminate(&self, id: &str);
    /// `(system, instance)` status of a running instance, or `None` for
    /// the default (`ok`).
    fn status(&self, id: &str) -> Option<(String, String)>;
    /// The instance's console output so far (`None`: nothing yet).
    fn console_output(&self, id: &str) -> Option<Vec<u8>>;
    /// Snapshots the instance into a new layer on top of `parent_layers`;
    /// answers the new image's layers, top first.
    fn create_image(&self, id: &str, parent_layers: &[String]) -> Result<Vec<String>, ApiError>;
    /// Frees the layers of a deregistered image that nothing uses any more;
    /// `kept`: the layers of the images that remain. A bake still running
    /// for it is ended.
    fn image_deregistered(&self, gone: &ImageRecord, kept: &BTreeSet<String>);
    /// Starts a volume-style bake of the pending image `image_id`: runs
    /// `user_data` on a copy of `parent_layers` and, when it ended, calls
    /// [`SimulatedBackend::bake_ended`]. Returns at once.
    fn bake(
        &self,
        image_id: &str,
        parent_layers: &[String],
        user_data: &[u8],
    ) -> Result<(), ApiError>;
    /// The bake's output so far (`None`: nothing yet, or no such bake).
    fn bake_output(&self, image_id: &str) -> Option<Vec<u8>>;
}

/// The records a journal kept, to start from again.
#[derive(Debug, Default)]
pub(crate) struct Restored {
    pub(crate) next_seq: u64,
    pub(crate) next_reservation: u64,
    /// Sequence number, record, address a runtime gave it.
    pub(crate) instances: Vec<(u64, InstanceRecord, Option<Arc<str>>)>,
    pub(crate) tokens: Vec<(String, TokenRecord)>,
    pub(crate) images: Vec<ImageRecord>,
}

/// Everything mutable, behind one lock.
#[derive(Debug)]
struct World {
    next_seq: u64,
    next_reservation: u64,
    /// By launch order: the order DescribeInstances pages in.
    instances: BTreeMap<u64, InstanceRecord>,
    by_id: HashMap<String, u64>,
    by_token: HashMap<String, TokenRecord>,
    /// Tag key → value → instances.
    by_tag: HashMap<String, HashMap<String, BTreeSet<u64>>>,
    /// Live instances per (zone, type).
    live: HashMap<(String, String), u32>,
    request_buckets: HashMap<RequestClass, TokenBucket>,
    resource_buckets: HashMap<ResourceClass, TokenBucket>,
    rng: StdRng,
    /// By image id: the configured images, then those CreateImage made.
    images: BTreeMap<String, ImageRecord>,
    /// The addresses a runtime gave instances; the others have one derived
    /// from their sequence number (`10.x.y.z`). Kept apart from the records
    /// so that the simulated backend's 100,000 records pay nothing for it.
    addresses: HashMap<u64, Arc<str>>,
}

/// The simulated backend. Share it behind an `Arc`.
#[derive(Debug)]
pub struct SimulatedBackend {
    config: SimulatedConfig,
    clock: SharedClock,
    world: Mutex<World>,
    runtime: Option<Arc<dyn Runtime>>,
    journal: Option<Arc<dyn Journal>>,
    /// ELBv2's API over this backend's instances: records only, since
    /// simulated instances serve nothing (the process backend has its own,
    /// with data planes).
    load_balancers: LoadBalancers,
}

/// A bijection on u64 that makes sequential numbers look like EC2's ids.
fn scramble(n: u64) -> u64 {
    n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5bd1_e995_0000_0000
}

fn instance_id(seq: u64, salt: u64) -> String {
    format!("i-0{:016x}", scramble(seq ^ salt))
}

fn is_hex_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|hex| {
        (hex.len() == 8 || hex.len() == 17) && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// `10.x.y.z` from the instance's sequence number.
fn private_ip(seq: u64) -> String {
    format!(
        "10.{}.{}.{}",
        (seq >> 16) & 0xff,
        (seq >> 8) & 0xff,
        seq & 0xff
    )
}

/// ISO 8601 with milliseconds, as EC2 writes times.
pub(crate) fn iso_time(since_epoch: Duration) -> String {
    let nanos = i128::try_from(since_epoch.as_nanos()).unwrap_or(0);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_string())
}

/// EC2's filter wildcards: `*` any run, `?` any one character.
fn glob_match(pattern: &str, text: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return pattern == text;
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn any_match(values: &[String], text: &str) -> bool {
    values.iter().any(|v| glob_match(v, text))
}

/// A DescribeImages filter, checked for a name EC2 knows (of those the
/// built-in cloud's images have).
#[derive(Debug)]
enum ImageFilter<'a> {
    /// `image-id`, `name`, `state`, `architecture`: a field's value
    /// against the filter's patterns.
    Field(&'a str, &'a [String]),
    /// `owner-id`, with `self` read as this account.
    Owner(Vec<String>),
    Tag(&'a str, &'a [String]),
    TagKey(&'a [String]),
}

impl<'a> ImageFilter<'a> {
    fn parse(filter: &'a Filter, account_id: &str) -> Result<Self, ApiError> {
        let values = filter.values.as_slice();
        Ok(match filter.name.as_str() {
            name @ ("image-id" | "name" | "state" | "architecture") => {
                ImageFilter::Field(name, values)
            }
            "owner-id" => ImageFilter::Owner(
                values
                    .iter()
                    .map(|v| {
                        if v == "self" {
                            account_id.to_string()
                        } else {
                            v.clone()
                        }
                    })
                    .collect(),
            ),
            "tag-key" => ImageFilter::TagKey(values),
            name => match name.strip_prefix("tag:") {
                Some(key) => ImageFilter::Tag(key, values),
                None => {
                    return Err(ApiError::InvalidParameterValue(format!(
                        "The filter '{name}' is invalid"
                    )))
                }
            },
        })
    }

    fn matches(&self, image: &Image) -> bool {
        match self {
            ImageFilter::Field(name, values) => {
                let value = match *name {
                    "image-id" => Some(image.image_id.as_str()),
                    "name" => image.name.as_deref(),
                    "state" => Some(image.state.as_str()),
                    "architecture" => image.architecture.as_deref(),
                    _ => None,
                };
                value.is_some_and(|v| any_match(values, v))
            }
            ImageFilter::Owner(owners) => image
                .owner_id
                .as_deref()
                .is_some_and(|o| any_match(owners, o)),
            ImageFilter::Tag(key, values) => image
                .tags
                .iter()
                .any(|t| t.key == *key && any_match(values, &t.value)),
            ImageFilter::TagKey(keys) => image.tags.iter().any(|t| any_match(keys, &t.key)),
        }
    }
}

/// A describe filter, checked for a name EC2 knows.
#[derive(Debug)]
enum InstanceFilter<'a> {
    Tag(&'a str, &'a [String]),
    TagKey(&'a [String]),
    State(&'a [String]),
    /// `instance-state-code`: the phases whose code (EC2's, as
    /// `InstanceStateInfo::named` gives it) a value matches, decided once
    /// per query rather than per instance.
    StateCode(Vec<Phase>),
    PrivateIp(&'a [String]),
    InstanceId(&'a [String]),
    Zone(&'a [String]),
    ClientToken(&'a [String]),
    ImageId(&'a [String]),
    InstanceType(&'a [String]),
}

impl<'a> InstanceFilter<'a> {
    fn parse(filter: &'a Filter) -> Result<Self, ApiError> {
        let values = filter.values.as_slice();
        Ok(match filter.name.as_str() {
            name if name.starts_with("tag:") => InstanceFilter::Tag(&name[4..], values),
            "tag-key" => InstanceFilter::TagKey(values),
            "instance-state-name" => InstanceFilter::State(values),
            "instance-state-code" => InstanceFilter::StateCode(
                Phase::ALL
                    .into_iter()
                    .filter(|p| {
                        any_match(values, &InstanceStateInfo::named(p.name()).code.to_string())
                    })
                    .collect(),
            ),
            "private-ip-address" => InstanceFilter::PrivateIp(values),
            "instance-id" => InstanceFilter::InstanceId(values),
            "availability-zone" => InstanceFilter::Zone(values),
            "client-token" => InstanceFilter::ClientToken(values),
            "image-id" => InstanceFilter::ImageId(values),
            "instance-type" => InstanceFilter::InstanceType(values),
            other => {
                return Err(ApiError::InvalidParameterValue(format!(
                    "The filter '{other}' is invalid"
                )))
            }
        })
    }

    /// Whether instance `seq` of `world`, in `phase`, passes the filter.
    fn matches(&self, world: &World, seq: u64, record: &InstanceRecord, phase: Phase) -> bool {
        match self {
            InstanceFilter::Tag(key, values) => {
                record.tags.get(*key).is_some_and(|v| any_match(values, v))
            }
            InstanceFilter::TagKey(values) => record.tags.keys().any(|k| any_match(values, k)),
            InstanceFilter::State(values) => any_match(values, phase.name()),
            InstanceFilter::StateCode(phases) => phases.contains(&phase),
            InstanceFilter::PrivateIp(values) => any_match(values, &world.private_address(seq)),
            InstanceFilter::InstanceId(values) => any_match(values, &record.id),
            InstanceFilter::Zone(values) => any_match(values, &record.zone),
            InstanceFilter::ClientToken(values) => record
                .client_token
                .as_deref()
                .is_some_and(|t| any_match(values, t)),
            InstanceFilter::ImageId(values) => any_match(values, &record.image_id),
            InstanceFilter::InstanceType(values) => any_match(values, &record.instance_type),
        }
    }
}

/// What a describe call asks for: exactly `ids`, or the instances matching
/// `filters`, a page at a time.
#[derive(Debug, Clone, Copy)]
struct PageQuery<'q> {
    ids: &'q [String],
    filters: &'q [Filter],
    max_results: Option<u32>,
    next_token: Option<&'q str>,
    /// Terminated instances older than this are left out of filtered
    /// listings.
    terminated_retention: Duration,
}

/// Instances an index allows: a set of the index itself, or one built for
/// the query.
enum Candidates<'a> {
    Borrowed(&'a BTreeSet<u64>),
    Owned(BTreeSet<u64>),
}

impl Candidates<'_> {
    fn set(&self) -> &BTreeSet<u64> {
        match self {
            Candidates::Borrowed(set) => set,
            Candidates::Owned(set) => set,
        }
    }

    fn len(&self) -> usize {
        self.set().len()
    }
}

/// The NextToken of a page that ends before instance `seq`.
fn page_token(seq: u64) -> String {
    format!("esn-{seq:x}")
}

fn parse_page_token(token: &str) -> Result<u64, ApiError> {
    token
        .strip_prefix("esn-")
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or_else(|| {
            ApiError::InvalidParameterValue(format!("Invalid value '{token}' for nextToken"))
        })
}

fn check_page_size(max_results: Option<u32>, ids: &[String]) -> Result<(), ApiError> {
    if let Some(max) = max_results {
        if !ids.is_empty() {
            return Err(ApiError::InvalidParameterCombination(
                "The parameter instancesSet cannot be used with the parameter maxResults"
                    .to_string(),
            ));
        }
        if !(5..=1000).contains(&max) {
            return Err(ApiError::InvalidParameterValue(format!(
                "Value ( {max} ) for parameter maxResults is invalid. Expecting a value between 5 and 1000."
            )));
        }
    }
    Ok(())
}

fn not_found(missing: &[&str]) -> ApiError {
    if let [one] = missing {
        ApiError::InstanceNotFound(format!("The instance ID '{one}' does not exist"))
    } else {
        ApiError::InstanceNotFound(format!(
            "The instance IDs '{}' do not exist",
            missing.join(", ")
        ))
    }
}

fn check_instance_ids(ids: &[String]) -> Result<(), ApiError> {
    if let Some(bad) = ids.iter().find(|id| !is_hex_id(id, "i-")) {
        return Err(ApiError::InstanceIdMalformed(bad.clone()));
    }
    Ok(())
}

/// EC2's answer to tags that would take a resource over [`MAX_TAGS`].
fn tag_limit_exceeded() -> ApiError {
    ApiError::TagLimitExceeded(format!(
        "The maximum number of tags for a resource has been reached: at most {MAX_TAGS}"
    ))
}

/// Whether a resource with tag keys `existing` would have more than
/// [`MAX_TAGS`] once `added` is set (a key it has already is overwritten,
/// not added).
fn exceeds_tag_limit<'k>(existing: impl Iterator<Item = &'k str>, added: &'k [Tag]) -> bool {
    let mut keys: BTreeSet<&str> = existing.collect();
    keys.extend(added.iter().map(|t| t.key.as_str()));
    keys.len() > MAX_TAGS
}

/// Refuses tag keys starting with `aws:`, in any case: EC2 reserves them
/// for its own tags, which no call may create or delete.
fn check_tag_keys<'k>(keys: impl IntoIterator<Item = &'k str>) -> Result<(), ApiError> {
    let reserved = |key: &&str| key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:"));
    match keys.into_iter().find(reserved) {
        Some(key) => Err(ApiError::InvalidParameterValue(format!(
            "Value ( {key} ) for parameter key is invalid. Tag keys starting with 'aws:' are reserved for internal use"
        ))),
        None => Ok(()),
    }
}

/// Whether DeleteTags with `wanted` removes the tag `key`=`value`: every
/// tag when none is named, as on EC2; a named key with a value only if the
/// value is the same.
fn deletes(wanted: &[DeleteTag], key: &str, value: &str) -> bool {
    wanted.is_empty()
        || wanted
            .iter()
            .any(|t| t.key == key && t.value.as_deref().is_none_or(|want| want == value))
}

/// Sets `tag` in an image's tags, overwriting the value of its key if
/// the image has the key already.
fn set_image_tag(tags: &mut Vec<Tag>, tag: &Tag) {
    match tags.iter_mut().find(|t| t.key == tag.key) {
        Some(existing) => existing.value.clone_from(&tag.value),
        None => tags.push(tag.clone()),
    }
}

fn instance_tags(request: &RunInstancesRequest) -> BTreeMap<String, String> {
    request
        .tag_specifications
        .iter()
        .filter(|s| s.resource_type == "instance")
        .flat_map(|s| s.tags.iter())
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect()
}

impl World {
    /// The address DescribeInstances reports for instance `seq`: the one a
    /// runtime gave it (the process backend's 127.100.x.y), else one
    /// derived from its sequence number.
    fn private_address(&self, seq: u64) -> Cow<'_, str> {
        match self.addresses.get(&seq) {
            Some(address) => Cow::Borrowed(address),
            None => Cow::Owned(private_ip(seq)),
        }
    }

    /// The resources a CreateTags or DeleteTags call names: the sequence
    /// numbers of its instances and the ids of its images. Every id is
    /// checked against the resource id patterns first, as EC2 does: one
    /// that matches none (`i-` and not hex digits, say) is `InvalidID`;
    /// then each must name an instance or image this cloud holds.
    fn tag_targets(&self, ids: &[String]) -> Result<(Vec<u64>, Vec<String>), ApiError> {
        let mut instance_ids = Vec::new();
        let mut image_ids = Vec::new();
        for id in ids {
            if is_hex_id(id, "i-") {
                instance_ids.push(id.clone());
            } else if is_hex_id(id, "ami-") {
                image_ids.push(id.clone());
            } else {
                return Err(ApiError::InvalidId(id.clone()));
            }
        }
        let mut seqs = self.lookup(&instance_ids, None)?;
        seqs.sort_unstable();
        seqs.dedup();
        if let Some(missing) = image_ids.iter().find(|id| !self.images.contains_key(*id)) {
            return Err(ApiError::ImageNotFound(missing.clone()));
        }
        image_ids.sort_unstable();
        image_ids.dedup();
        Ok((seqs, image_ids))
    }

    /// The image `id`: `InvalidAMIID.Malformed` or `.NotFound` otherwise.
    fn image(&self, id: &str) -> Result<&ImageRecord, ApiError> {
        if !is_hex_id(id, "ami-") {
            return Err(ApiError::ImageIdMalformed(id.to_string()));
        }
        self.images
            .get(id)
            .ok_or_else(|| ApiError::ImageNotFound(id.to_string()))
    }

    /// The image `id`, which something is to be made from: as
    /// [`World::image`], and `InvalidAMIID.Unavailable` unless it is
    /// `available`.
    fn available_image(&self, id: &str) -> Result<&ImageRecord, ApiError> {
        let image = self.image(id)?;
        if image.image.state != "available" {
            return Err(ApiError::ImageUnavailable(
                id.to_string(),
                image.image.state.clone(),
            ));
        }
        Ok(image)
    }

    /// A new image's name: 3–128 characters, and no image has it yet.
    fn check_new_image_name(&self, name: &str) -> Result<(), ApiError> {
        if !(3..=128).contains(&name.chars().count()) {
            return Err(ApiError::InvalidParameterValue(
                "AMI names must be between 3 and 128 characters long".to_string(),
            ));
        }
        if self
            .images
            .values()
            .any(|i| i.image.name.as_deref() == Some(name))
        {
            return Err(ApiError::InvalidAmiNameDuplicate(format!(
                "AMI name {name} is already in use by an existing AMI"
            )));
        }
        Ok(())
    }

    /// The journal's record of instance `seq`.
    fn change(&self, seq: u64) -> Option<Change<'_>> {
        let record = self.instances.get(&seq)?;
        Some(Change::Instance(
            seq,
            record,
            self.addresses.get(&seq).map(|a| &**a),
        ))
    }

    fn index_tag(&mut self, key: &str, value: &str, seq: u64) {
        self.by_tag
            .entry(key.to_string())
            .or_default()
            .entry(value.to_string())
            .or_default()
            .insert(seq);
    }

    fn unindex_tag(&mut self, key: &str, value: &str, seq: u64) {
        if let Some(values) = self.by_tag.get_mut(key) {
            if let Some(seqs) = values.get_mut(value) {
                seqs.remove(&seq);
                if seqs.is_empty() {
                    values.remove(value);
                }
            }
            if values.is_empty() {
                self.by_tag.remove(key);
            }
        }
    }

    fn live_count(&self, zone: &str, instance_type: &str) -> u32 {
        self.live
            .get(&(zone.to_string(), instance_type.to_string()))
            .copied()
            .unwrap_or(0)
    }

    fn add_live(&mut self, zone: &str, instance_type: &str, delta: i64) {
        let entry = self
            .live
            .entry((zone.to_string(), instance_type.to_string()))
            .or_insert(0);
        *entry = u32::try_from((i64::from(*entry) + delta).max(0)).unwrap_or(u32::MAX);
    }

    /// The sequence numbers of `ids`, or NotFound naming the missing ones.
    /// `visible_from`: instances launched after it do not exist yet (for
    /// describe calls under eventual consistency).
    fn lookup(&self, ids: &[String], visible_from: Option<Duration>) -> Result<Vec<u64>, ApiError> {
        check_instance_ids(ids)?;
        let mut seqs = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            match self.by_id.get(id) {
                Some(seq)
                    if visible_from.is_none_or(|cutoff| {
                        self.instances
                            .get(seq)
                            .is_some_and(|r| r.launched <= cutoff)
                    }) =>
                {
                    seqs.push(*seq)
                }
                _ => missing.push(id.as_str()),
            }
        }
        if missing.is_empty() {
            Ok(seqs)
        } else {
            Err(not_found(&missing))
        }
    }

    /// Candidates for `filters` from the indexes: the smallest set any
    /// indexed filter allows, borrowed from the index when one tag value
    /// gives it, or `None` (every instance).
    fn indexed_candidates(&self, filters: &[InstanceFilter<'_>]) -> Option<Candidates<'_>> {
        let exact = |values: &[String]| values.iter().all(|v| !v.contains(['*', '?']));
        let mut best: Option<Candidates<'_>> = None;
        for filter in filters {
            let set = match filter {
                InstanceFilter::Tag(key, values) => match self.by_tag.get(*key) {
                    None => Candidates::Owned(BTreeSet::new()),
                    Some(by_value) => match values {
                        [one] if exact(values) => match by_value.get(one) {
                            Some(seqs) => Candidates::Borrowed(seqs),
                            None => Candidates::Owned(BTreeSet::new()),
                        },
                        _ if exact(values) => Candidates::Owned(
                            values
                                .iter()
                                .filter_map(|v| by_value.get(v))
                                .flat_map(|s| s.iter().copied())
                                .collect(),
                        ),
                        _ => Candidates::Owned(
                            by_value
                                .iter()
                                .filter(|(v, _)| any_match(values, v))
                                .flat_map(|(_, s)| s.iter().copied())
                                .collect(),
                        ),
                    },
                },
                InstanceFilter::TagKey(values) => Candidates::Owned(
                    self.by_tag
                        .iter()
                        .filter(|(k, _)| any_match(values, k))
                        .flat_map(|(_, by_value)| by_value.values().flat_map(|s| s.iter().copied()))
                        .collect(),
                ),
                InstanceFilter::InstanceId(values) if exact(values) => Candidates::Owned(
                    values
                        .iter()
                        .filter_map(|v| self.by_id.get(v))
                        .copied()
                        .collect(),
                ),
                InstanceFilter::ClientToken(values) if exact(values) => Candidates::Owned(
                    values
                        .iter()
                        .filter_map(|v| self.by_token.get(v))
                        .flat_map(|t| t.seqs.iter().copied())
                        .collect(),
                ),
                _ => continue,
            };
            if best.as_ref().is_none_or(|b| set.len() < b.len()) {
                best = Some(set);
            }
        }
        best
    }

    /// One page of the instances matching `filters` (or exactly `ids`),
    /// from the token on, in launch order: their sequence numbers and the
    /// next page's token.
    fn select(
        &self,
        query: &PageQuery<'_>,
        cutoff: Duration,
        now: Duration,
        timings: &Timings,
        extra: impl Fn(Phase) -> bool,
    ) -> Result<(Vec<u64>, Option<String>), ApiError> {
        let PageQuery {
            ids,
            filters,
            max_results,
            next_token,
            terminated_retention,
        } = *query;
        check_page_size(max_results, ids)?;
        let filters = filters
            .iter()
            .map(InstanceFilter::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let start = next_token.map(parse_page_token).transpose()?.unwrap_or(0);
        let limit = max_results.map_or(usize::MAX, |m| m as usize);
        let visible = |seq: u64| -> Option<&InstanceRecord> {
            let record = self.instances.get(&seq)?;
            let phase = record.phase_at(now, timings);
            (record.launched <= cutoff
                && (!ids.is_empty()
                    || !record.terminated_before(now, timings, terminated_retention))
                && extra(phase)
                && filters.iter().all(|f| f.matches(self, seq, record, phase)))
            .then_some(record)
        };
        let mut page = Vec::new();
        let mut next = None;
        let mut consider = |seq: u64| -> bool {
            if visible(seq).is_none() {
                return true;
            }
            if page.len() == limit {
                next = Some(page_token(seq));
                return false;
            }
            page.push(seq);
            true
        };
        if !ids.is_empty() {
            let mut seqs = self.lookup(ids, Some(cutoff))?;
            seqs.sort_unstable();
            seqs.dedup();
            for seq in seqs {
                consider(seq);
            }
        } else if let Some(candidates) = self.indexed_candidates(&filters) {
            for seq in candidates.set().range(start..) {
                if !consider(*seq) {
                    break;
                }
            }
        } else {
            for seq in self.instances.range(start..).map(|(s, _)| *s) {
                if !consider(seq) {
                    break;
                }
            }
        }
        Ok((page, next))
    }
}

impl SimulatedBackend {
    /// An empty cloud on `clock`.
    pub fn new(config: SimulatedConfig, clock: SharedClock) -> Self {
        Self::restore(config, clock, None, None, Restored::default())
    }

    /// A cloud holding `restored`'s records (the configured images first,
    /// restored ones replacing them by id), telling `runtime` of changes
    /// and writing them to `journal`.
    pub(crate) fn restore(
        config: SimulatedConfig,
        clock: SharedClock,
        runtime: Option<Arc<dyn Runtime>>,
        journal: Option<Arc<dyn Journal>>,
        restored: Restored,
    ) -> Self {
        let now = clock.now();
        let (request_buckets, resource_buckets) = match &config.throttling {
            Some(t) => (
                t.requests
                    .iter()
                    .map(|(c, s)| (*c, TokenBucket::new(*s, now)))
                    .collect(),
                t.resources
                    .iter()
                    .map(|(c, s)| (*c, TokenBucket::new(*s, now)))
                    .collect(),
            ),
            None => (HashMap::new(), HashMap::new()),
        };
        let mut images: BTreeMap<String, ImageRecord> = config
            .images
            .iter()
            .map(|image| {
                (
                    image.image_id.clone(),
                    ImageRecord {
                        image: image.clone(),
                        description: None,
                        layers: vec![],
                    },
                )
            })
            .collect();
        images.extend(
            restored
                .images
                .into_iter()
                .map(|i| (i.image.image_id.clone(), i)),
        );
        let mut world = World {
            next_seq: restored.next_seq.max(1),
            next_reservation: restored.next_reservation.max(1),
            instances: BTreeMap::new(),
            by_id: HashMap::new(),
            by_token: restored.tokens.into_iter().collect(),
            by_tag: HashMap::new(),
            live: HashMap::new(),
            request_buckets,
            resource_buckets,
            rng: StdRng::seed_from_u64(config.faults.seed),
            images,
            addresses: HashMap::new(),
        };
        for (seq, record, address) in restored.instances {
            if let Some(address) = address {
                world.addresses.insert(seq, address);
            }
            for (k, v) in record.tags.iter() {
                world.index_tag(k, v, seq);
            }
            if record.phase.is_live() {
                world.add_live(&record.zone, &record.instance_type, 1);
            }
            world.next_seq = world.next_seq.max(seq + 1);
            world.by_id.insert(record.id.clone(), seq);
            world.instances.insert(seq, record);
        }
        let load_balancers = LoadBalancers::api_only(&config.region, &config.account_id);
        Self {
            config,
            clock,
            world: Mutex::new(world),
            runtime,
            journal,
            load_balancers,
        }
    }

    /// Writes `changes` through the journal, if there is one.
    fn journal(&self, changes: &[Change<'_>]) -> Result<(), ApiError> {
        match &self.journal {
            None => Ok(()),
            Some(journal) => journal
                .write(changes)
                .map_err(|e| ApiError::Internal(format!("the journal refused a write: {e}"))),
        }
    }

    /// Ends a transitional phase: `id` moves from `from` to `to` if it is
    /// in `from` (the runtime's word that a start, stop or termination
    /// is done). Answers whether it moved.
    pub(crate) fn advance(&self, id: &str, from: Phase, to: Phase) -> bool {
        let mut guard = self.lock();
        let world = &mut *guard;
        let Some(seq) = world.by_id.get(id).copied() else {
            return false;
        };
        let now = self.clock.now();
        let timings = self.config.timings;
        let Some(record) = world.instances.get_mut(&seq) else {
            return false;
        };
        record.settle(now, &timings);
        if record.phase != from {
            return false;
        }
        let (zone, instance_type) = (record.zone.clone(), record.instance_type.clone());
        record.enter(to, now);
        if from.is_live() != to.is_live() {
            world.add_live(&zone, &instance_type, if to.is_live() { 1 } else { -1 });
        }
        if let Some(change) = world.change(seq) {
            if let Err(e) = self.journal(&[change]) {
                tracing::error!(%id, error = %e, "phase change not journaled");
            }
        }
        true
    }

    /// Every instance's id, sequence number and phase now (for a runtime
    /// restoring its processes).
    pub(crate) fn phases(&self) -> Vec<(String, Phase)> {
        let mut guard = self.lock();
        let now = self.clock.now();
        let timings = self.config.timings;
        guard
            .instances
            .values_mut()
            .map(|r| {
                r.settle(now, &timings);
                (r.id.clone(), r.phase)
            })
            .collect()
    }

    /// A copy of one instance's record.
    pub(crate) fn record(&self, id: &str) -> Option<InstanceRecord> {
        let guard = self.lock();
        let seq = guard.by_id.get(id)?;
        let mut record = guard.instances.get(seq)?.clone();
        record.settle(self.clock.now(), &self.config.timings);
        Some(record)
    }

    /// The architecture of an image, if it is known.
    pub(crate) fn image_architecture(&self, image_id: &str) -> Option<String> {
        self.lock()
            .images
            .get(image_id)
            .and_then(|i| i.image.architecture.clone())
    }

    /// Adds or replaces an image record (a runtime's base image, whose
    /// layer changes when a new version builds a different tree), unless
    /// the same record is there already.
    ///
    /// Tags the record has already (CreateTags on the image) are kept: they
    /// are the user's, not the runtime's.
    pub(crate) fn put_image(&self, mut image: ImageRecord) -> Result<(), ApiError> {
        let mut guard = self.lock();
        if let Some(existing) = guard.images.get(&image.image.image_id) {
            image.image.tags.clone_from(&existing.image.tags);
        }
        if guard.images.get(&image.image.image_id) == Some(&image) {
            return Ok(());
        }
        self.journal(&[Change::Image(&image)])?;
        guard.images.insert(image.image.image_id.clone(), image);
        Ok(())
    }

    /// Every layer any image uses.
    pub(crate) fn image_layer_set(&self) -> BTreeSet<String> {
        self.lock()
            .images
            .values()
            .flat_map(|i| i.layers.iter().cloned())
            .collect()
    }

    /// Tells the runtime to make `id` (a pending instance whose spawn never
    /// happened, found at restore) and records its address.
    pub(crate) fn relaunch(&self, id: &str) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        let mut guard = self.lock();
        let world = &mut *guard;
        let Some(seq) = world.by_id.get(id).copied() else {
            return;
        };
        let Some(record) = world.instances.get(&seq) else {
            return;
        };
        let layers = world
            .images
            .get(&record.image_id)
            .map(|i| i.layers.clone())
            .unwrap_or_default();
        let address = runtime.launch(&LaunchInfo {
            record,
            layers: &layers,
        });
        if let Some(address) = address {
            world.addresses.insert(seq, address.into());
        }
        if let Some(change) = world.change(seq) {
            if let Err(e) = self.journal(&[change]) {
                tracing::error!(%id, error = %e, "relaunch not journaled");
            }
        }
    }

    pub fn config(&self) -> &SimulatedConfig {
        &self.config
    }

    /// How many instance records it holds (terminated ones included).
    pub fn len(&self) -> usize {
        self.lock().instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        // Every mutation below either completes or returns before changing
        // anything, so a panic cannot leave the world half-updated; the
        // poison flag carries no information worth refusing service for.
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a describe of `action` that the runtime answers (throttling
    /// and faults as for any describe) and checks that every one of `ids`
    /// names an instance (`InvalidInstanceID.NotFound` otherwise).
    pub(crate) fn admit_runtime_describe(
        &self,
        action: &str,
        ids: &[String],
    ) -> Result<(), ApiError> {
        let mut guard = self.lock();
        let world = &mut *guard;
        self.admit(world, action, false, 0)?;
        if !ids.is_empty() {
            world.lookup(ids, None)?;
        }
        Ok(())
    }

    /// BakeImage (endstate's extension): a `pending` image of
    /// `source_image_id`'s layers that the runtime's bake fills in. Only a
    /// backend with a runtime bakes; without one, `UnsupportedOperation`.
    pub(crate) fn bake_image(
        &self,
        request: &BakeImageRequest,
    ) -> Result<BakeImageResponse, ApiError> {
        let Some(runtime) = &self.runtime else {
            return Err(ApiError::UnsupportedOperation(
                "BakeImage is not supported by this backend".to_string(),
            ));
        };
        let mut guard = self.lock();
        let world = &mut *guard;
        self.admit(world, "BakeImage", false, 0)?;
        let parent = world.available_image(&request.source_image_id)?;
        world.check_new_image_name(&request.name)?;
        let now = self.clock.now();
        let parent_layers = parent.layers.clone();
        let image_id = image_id_for(&format!(
            "bake/{}/{}/{now:?}",
            request.source_image_id, request.name
        ));
        let image = ImageRecord {
            image: Image {
                image_id: image_id.clone(),
                name: Some(request.name.clone()),
                state: "pending".to_string(),
                owner_id: Some(self.config.account_id.clone()),
                architecture: parent.image.architecture.clone(),
                root_device_name: Some("/dev/xvda".to_string()),
                creation_date: Some(iso_time(now)),
                tags: Vec::new(),
            },
            description: request.description.clone(),
            layers: Vec::new(),
        };
        self.journal(&[Change::Image(&image)])?;
        world.images.insert(image_id.clone(), image);
        if let Err(e) = runtime.bake(&image_id, &parent_layers, &request.user_data.0) {
            // Nothing runs: the image never existed.
            self.journal(&[Change::ImageGone(&image_id)])?;
            world.images.remove(&image_id);
            return Err(e);
        }
        Ok(BakeImageResponse {
            request_id: None,
            image_id,
        })
    }

    /// GetBakeOutput (endstate's extension): the output of the image's
    /// bake, as GetConsoleOutput gives an instance's.
    pub(crate) fn get_bake_output(
        &self,
        request: &GetBakeOutputRequest,
    ) -> Result<GetBakeOutputResponse, ApiError> {
        let mut guard = self.lock();
        let world = &mut *guard;
        self.admit(world, "GetBakeOutput", false, 0)?;
        world.image(&request.image_id)?;
        let output = self
            .runtime
            .as_ref()
            .and_then(|rt| rt.bake_output(&request.image_id))
            .and_then(console_tail);
        Ok(GetBakeOutputResponse {
            request_id: None,
            image_id: request.image_id.clone(),
            timestamp: Some(iso_time(self.clock.now())),
            output,
        })
    }

    /// The runtime's word that the bake of `image_id` ended: the image
    /// becomes `available` with `layers` (top first), or `failed`. An image
    /// deregistered meanwhile stays gone; answers whether it was there.
    pub(crate) fn bake_ended(&self, image_id: &str, layers: Option<Vec<String>>) -> bool {
        let mut guard = self.lock();
        let Some(existing) = guard.images.get(image_id) else {
            return false;
        };
        let mut image = existing.clone();
        match layers {
            Some(layers) => {
                image.image.state = "available".to_string();
                image.layers = layers;
            }
            None => image.image.state = "failed".to_string(),
        }
        if let Err(e) = self.journal(&[Change::Image(&image)]) {
            tracing::error!(image = %image_id, error = %e, "bake's end not journaled");
        }
        guard.images.insert(image_id.to_string(), image);
        true
    }

    /// The images still `pending`: bakes a restart interrupted.
    pub(crate) fn pending_images(&self) -> Vec<String> {
        self.lock()
            .images
            .values()
            .filter(|i| i.image.state == "pending")
            .map(|i| i.image.image_id.clone())
            .collect()
    }

    /// Throttling, then fault injection, for one call of `action` costing
    /// `resources` instances.
    fn admit(
        &self,
        world: &mut World,
        action: &str,
        unfiltered_unpaged: bool,
        resources: usize,
    ) -> Result<(), ApiError> {
        let now = self.clock.now();
        let class = RequestClass::of(action, unfiltered_unpaged);
        if let Some(bucket) = world.request_buckets.get_mut(&class) {
            bucket
                .try_take(now, 1.0)
                .map_err(|_| ApiError::RequestLimitExceeded)?;
        }
        if let Some(class) = ResourceClass::of(action) {
            if let Some(bucket) = world.resource_buckets.get_mut(&class) {
                bucket
                    .try_take(now, resources as f64)
                    .map_err(|_| ApiError::RequestLimitExceeded)?;
            }
        }
        if let Some(rate) = self.config.faults.error_rates.get(action) {
            if world.rng.random::<f64>() < *rate {
                return Err(ApiError::InternalError);
            }
        }
        Ok(())
    }

    fn to_wire(&self, world: &World, seq: u64, record: &InstanceRecord, now: Duration) -> Instance {
        Instance {
            instance_id: record.id.clone(),
            image_id: record.image_id.clone(),
            instance_type: record.instance_type.clone(),
            state: InstanceStateInfo::named(record.phase_at(now, &self.config.timings).name()),
            availability_zone: record.zone.clone(),
            launch_time: iso_time(record.launched),
            subnet_id: record.subnet_id.clone(),
            vpc_id: None,
            private_ip_address: Some(world.private_address(seq).into_owned()),
            client_token: record.client_token.clone(),
            key_name: record.key_name.clone(),
            ami_launch_index: Some(record.launch_index),
            tags: record
                .tags
                .iter()
                .map(|(k, v)| Tag::new(k.clone(), v.clone()))
                .collect(),
            metadata_options: record.metadata_options.clone(),
        }
    }

    /// Instances grouped into reservations, consecutive instances of one
    /// reservation sharing an item (DescribeInstances pages by instance).
    fn reservations(&self, world: &World, seqs: &[u64], now: Duration) -> Vec<Reservation> {
        let mut out: Vec<Reservation> = Vec::new();
        for seq in seqs {
            let Some(record) = world.instances.get(seq) else {
                continue;
            };
            let instance = self.to_wire(world, *seq, record, now);
            match out.last_mut() {
                Some(r) if r.reservation_id == *record.reservation_id => r.instances.push(instance),
                _ => out.push(Reservation {
                    reservation_id: record.reservation_id.to_string(),
                    owner_id: self.config.account_id.clone(),
                    instances: vec![instance],
                }),
            }
        }
        out
    }

    /// The preamble of the paged describes (DescribeInstances,
    /// DescribeInstanceStatus): admits the call (an unfiltered one draws
    /// from its own bucket, as on EC2), then selects one page among the
    /// instances visible now whose phase `keep` accepts. The page, the next
    /// token and the time it was taken at.
    fn admit_page(
        &self,
        world: &mut World,
        action: &str,
        query: &PageQuery<'_>,
        keep: impl Fn(Phase) -> bool,
    ) -> Result<(Vec<u64>, Option<String>, Duration), ApiError> {
        let unfiltered =
            query.filters.is_empty() && query.max_results.is_none() && query.next_token.is_none();
        self.admit(world, action, unfiltered, 0)?;
        let now = self.clock.now();
        let cutoff = now.saturating_sub(self.config.consistency_delay);
        let (seqs, next_token) = world.select(query, cutoff, now, &self.config.timings, keep)?;
        Ok((seqs, next_token, now))
    }

    fn check_run(&self, world: &World, request: &RunInstancesRequest) -> Result<(), ApiError> {
        if request.min_count == 0 || request.min_count > request.max_count {
            return Err(ApiError::InvalidParameterValue(format!(
                "Invalid count: MinCount ({}) must be at least 1 and at most MaxCount ({})",
                request.min_count, request.max_count
            )));
        }
        world.available_image(&request.image_id)?;
        if let Some(t) = &request.instance_type {
            if !t.contains('.') || t.starts_with('.') || t.ends_with('.') {
                return Err(ApiError::InvalidParameterValue(format!(
                    "Invalid value '{t}' for InstanceType."
                )));
            }
        }
        if let Some(zone) = &request.availability_zone {
            if !self.config.zones.contains(zone) {
                return Err(ApiError::InvalidParameterValue(format!(
                    "Invalid availability zone: [{zone}]"
                )));
            }
        }
        if request
            .user_data
            .as_ref()
            .is_some_and(|u| u.as_bytes().len() > MAX_USER_DATA_BYTES)
        {
            return Err(ApiError::InvalidParameterValue(
                "User data is limited to 16384 bytes".to_string(),
            ));
        }
        if let Some(token) = &request.client_token {
            if token.len() > 64 || !token.is_ascii() {
                return Err(ApiError::InvalidParameterValue(
                    "Value for parameter clientToken is invalid: at most 64 ASCII characters"
                        .to_string(),
                ));
            }
        }
        check_tag_keys(
            request
                .tag_specifications
                .iter()
                .flat_map(|s| s.tags.iter().map(|t| t.key.as_str())),
        )?;
        if instance_tags(request).len() > MAX_TAGS {
            return Err(tag_limit_exceeded());
        }
        Ok(())
    }

    fn capacity_left(&self, world: &World, zone: &str, instance_type: &str) -> u32 {
        match self
            .config
            .capacity
            .get(&(zone.to_string(), instance_type.to_string()))
        {
            None => u32::MAX,
            Some(cap) => cap.saturating_sub(world.live_count(zone, instance_type)),
        }
    }

    /// Changes the phase of `ids` with `change` (which sees the settled
    /// phase and answers the new one or an error), after checking them all.
    fn change_states(
        &self,
        action: &str,
        ids: &[String],
        change: impl Fn(&InstanceRecord, Phase, u32) -> Result<Option<Phase>, ApiError>,
        effect: impl Fn(&dyn Runtime, &str, Phase, Option<Phase>),
    ) -> Result<Vec<InstanceStateChange>, ApiError> {
        if ids.is_empty() {
            return Err(
                endstate_wire::WireError::MissingParameter("InstanceId".to_string()).into(),
            );
        }
        if ids.len() > 1000 {
            return Err(ApiError::InvalidParameterValue(
                "At most 1000 instance ids may be given".to_string(),
            ));
        }
        let mut guard = self.lock();
        let world = &mut *guard;
        check_instance_ids(ids)?;
        self.admit(world, action, false, ids.len())?;
        let seqs = world.lookup(ids, None)?;
        let now = self.clock.now();
        let timings = self.config.timings;
        // Decide everything first, so an error changes nothing. Starts
        // within one call share the capacity left.
        let mut seen = BTreeSet::new();
        let mut claimed: HashMap<(String, String), u32> = HashMap::new();
        let mut plan = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if !seen.insert(seq) {
                continue;
            }
            if let Some(record) = world.instances.get_mut(&seq) {
                record.settle(now, &timings);
            }
            let Some(record) = world.instances.get(&seq) else {
                return Err(ApiError::Internal(format!(
                    "the id index names a missing instance {seq}"
                )));
            };
            let slot = (record.zone.clone(), record.instance_type.clone());
            let left = self
                .capacity_left(world, &slot.0, &slot.1)
                .saturating_sub(claimed.get(&slot).copied().unwrap_or(0));
            let after = change(record, record.phase, left)?;
            if after.is_some_and(Phase::is_live) && !record.phase.is_live() {
                *claimed.entry(slot.clone()).or_insert(0) += 1;
            }
            plan.push((seq, slot, record.id.clone(), record.phase, after));
        }
        let mut changes = Vec::with_capacity(plan.len());
        let mut effects = Vec::new();
        for (seq, (zone, instance_type), id, before, after) in plan {
            if self.runtime.is_some() {
                effects.push((seq, id.clone(), before, after));
            }
            if let Some(after) = after {
                if before.is_live() != after.is_live() {
                    world.add_live(&zone, &instance_type, if after.is_live() { 1 } else { -1 });
                }
                if let Some(record) = world.instances.get_mut(&seq) {
                    record.enter(after, now);
                }
            }
            changes.push(InstanceStateChange {
                instance_id: id,
                current_state: InstanceStateInfo::named(after.unwrap_or(before).name()),
                previous_state: InstanceStateInfo::named(before.name()),
            });
        }
        if self.journal.is_some() {
            let records: Vec<Change<'_>> = effects
                .iter()
                .filter(|(_, _, _, after)| after.is_some())
                .filter_map(|(seq, ..)| world.change(*seq))
                .collect();
            self.journal(&records)?;
        }
        if let Some(runtime) = &self.runtime {
            for (_, id, before, after) in &effects {
                effect(runtime.as_ref(), id, *before, *after);
            }
        }
        Ok(changes)
    }

    /// The record of one instance id (well formed, existing) for an action
    /// on it.
    fn one_instance<'w>(world: &'w World, id: &str) -> Result<(u64, &'w InstanceRecord), ApiError> {
        let seqs = world.lookup(&[id.to_string()], None)?;
        seqs.first()
            .and_then(|seq| world.instances.get(seq).map(|r| (*seq, r)))
            .ok_or_else(|| not_found(&[id]))
    }

    /// Journals the records of `seqs` (no journal: nothing to do).
    fn journal_instances(&self, world: &World, seqs: &[u64]) -> Result<(), ApiError> {
        if self.journal.is_none() {
            return Ok(());
        }
        let changes: Vec<Change<'_>> = seqs.iter().filter_map(|s| world.change(*s)).collect();
        self.journal(&changes)
    }

    /// Journals the records of `seqs` and the retagged `images` in one
    /// write (no journal: nothing to do).
    fn journal_tagged(
        &self,
        world: &World,
        seqs: &[u64],
        images: &[ImageRecord],
    ) -> Result<(), ApiError> {
        if self.journal.is_none() {
            return Ok(());
        }
        let changes: Vec<Change<'_>> = seqs
            .iter()
            .filter_map(|s| world.change(*s))
            .chain(images.iter().map(Change::Image))
            .collect();
        self.journal(&changes)
    }

    fn incorrect_state(id: &str, verb: &str, phase: Phase) -> ApiError {
        ApiError::IncorrectInstanceState(format!(
            "The instance '{id}' is not in a state from which it can be {verb} (it is {}).",
            phase.name()
        ))
    }
}

/// Simulated instances have no real address: their targets are never
/// probed or forwarded to.
impl InstanceDirectory for SimulatedBackend {
    fn instance(&self, id: &str) -> Option<InstanceView> {
        let record = self.record(id)?;
        Some(InstanceView {
            gone: matches!(record.phase, Phase::ShuttingDown | Phase::Terminated),
            address: None,
            generation: record.tags.get(GENERATION_TAG).cloned(),
        })
    }
}

impl Backend for SimulatedBackend {
    fn load_balancing(&self) -> Option<(&LoadBalancers, &dyn InstanceDirectory)> {
        Some((&self.load_balancers, self))
    }

    fn run_instances(
        &self,
        request: &RunInstancesRequest,
    ) -> Result<RunInstancesResponse, ApiError> {
        let mut guard = self.lock();
        let world = &mut *guard;
        self.admit(world, "RunInstances", false, request.max_count as usize)?;
        self.check_run(world, request)?;
        let now = self.clock.now();

        if let Some(token) = &request.client_token {
            if let Some(previous) = world.by_token.get(token) {
                if previous.request != *request {
                    return Err(ApiError::IdempotentParameterMismatch(format!(
                        "The client token '{token}' was used with different parameters"
                    )));
                }
                let reservation = Reservation {
                    reservation_id: previous.reservation_id.to_string(),
                    owner_id: self.config.account_id.clone(),
                    instances: previous
                        .seqs
                        .iter()
                        .filter_map(|s| {
                            world
                                .instances
                                .get(s)
                                .map(|r| self.to_wire(world, *s, r, now))
                        })
                        .collect(),
                };
                return Ok(RunInstancesResponse {
                    request_id: None,
                    reservation,
                });
            }
        }

        let instance_type = request
            .instance_type
            .clone()
            .unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.to_string());
        let zone = match &request.availability_zone {
            Some(zone) => zone.clone(),
            None => self
                .config
                .zones
                .iter()
                .max_by_key(|z| {
                    // Most free capacity; the first zone wins a tie.
                    (
                        self.capacity_left(world, z, &instance_type),
                        std::cmp::Reverse(*z),
                    )
                })
                .cloned()
                .ok_or_else(|| ApiError::Internal("no zones are configured".to_string()))?,
        };
        let left = self.capacity_left(world, &zone, &instance_type);
        if left < request.min_count {
            return Err(ApiError::InsufficientInstanceCapacity(format!(
                "We currently do not have sufficient {instance_type} capacity in the Availability Zone you requested ({zone}). Our system will be working on provisioning additional capacity. You can currently get {instance_type} capacity by not specifying an Availability Zone in your request or choosing a different Availability Zone."
            )));
        }
        let count = request.max_count.min(left);

        let reservation_id: Arc<str> = format!(
            "r-0{:016x}",
            scramble(world.next_reservation ^ 0xa5a5 ^ self.config.id_salt)
        )
        .into();
        world.next_reservation += 1;
        let tags = Arc::new(instance_tags(request));
        let mut seqs = Vec::with_capacity(count as usize);
        for launch_index in 0..count {
            let seq = world.next_seq;
            world.next_seq += 1;
            let record = InstanceRecord {
                id: instance_id(seq, self.config.id_salt),
                reservation_id: reservation_id.clone(),
                image_id: request.image_id.clone(),
                instance_type: instance_type.clone(),
                zone: zone.clone(),
                key_name: request.key_name.clone(),
                subnet_id: request.subnet_id.clone(),
                client_token: request.client_token.clone(),
                launch_index,
                launched: now,
                phase: Phase::Pending,
                since: now,
                tags: tags.clone(),
                metadata_options: request.metadata_options.clone(),
                user_data: request.user_data.clone(),
            };
            for (k, v) in tags.iter() {
                world.index_tag(k, v, seq);
            }
            world.by_id.insert(record.id.clone(), seq);
            world.instances.insert(seq, record);
            seqs.push(seq);
        }
        world.add_live(&zone, &instance_type, i64::from(count));
        if let Some(token) = &request.client_token {
            world.by_token.insert(
                token.clone(),
                TokenRecord {
                    request: request.clone(),
                    reservation_id: reservation_id.clone(),
                    seqs: seqs.clone(),
                },
            );
        }
        if self.journal.is_some() {
            let mut changes: Vec<Change<'_>> =
                seqs.iter().filter_map(|s| world.change(*s)).collect();
            if let Some((token, record)) = request
                .client_token
                .as_ref()
                .and_then(|t| world.by_token.get_key_value(t))
            {
                changes.push(Change::Token(token, record));
            }
            changes.push(Change::Counters {
                next_seq: world.next_seq,
                next_reservation: world.next_reservation,
            });
            if let Err(e) = self.journal(&changes) {
                // Not on disk, so not launched: undo it in memory too, so
                // that a retry with the same token launches afresh.
                for seq in &seqs {
                    if let Some(record) = world.instances.remove(seq) {
                        world.by_id.remove(&record.id);
                        for (k, v) in record.tags.iter() {
                            world.unindex_tag(k, v, *seq);
                        }
                    }
                }
                world.add_live(&zone, &instance_type, -i64::from(count));
                if let Some(token) = &request.client_token {
                    world.by_token.remove(token);
                }
                return Err(e);
            }
        }
        if let Some(runtime) = &self.runtime {
            let layers = world
                .images
                .get(&request.image_id)
                .map(|i| i.layers.clone())
                .unwrap_or_default();
            for seq in &seqs {
                let Some(record) = world.instances.get(seq) else {
                    continue;
                };
                let address = runtime.launch(&LaunchInfo {
                    record,
                    layers: &layers,
                });
                if let Some(address) = address {
                    world.addresses.insert(*seq, address.into());
                }
            }
            let changes: Vec<Change<'_>> = seqs.iter().filter_map(|s| world.change(*s)).collect();
            self.journal(&changes)?;
        }
        let instances = seqs
            .iter()
            .filter_map(|s| {
                world
                    .instances
                    .get(s)
                    .map(|r| self.to_wire(world, *s, r, now))
            })
            .collect();
        Ok(RunInstancesResponse {
            request_id: None,
            reservation: Reservation {
                reservation_id: reservation_id.to_string(),
                owner_id: self.config.account_id.clone(),
                instances,
            },
        })
    }

    fn describe_instances(
        &self,
        request: &DescribeInstancesRequest,
    ) -> Result<DescribeInstancesResponse, ApiError> {
        let mut guard = self.lock();
        let world = &mut *guard;
        let query = PageQuery {
            ids: &request.instance_ids,
            filters: &request.filters,
            max_results: request.max_results,
            next_token: request.next_token.as_deref(),
            terminated_retention: self.config.terminated_visible_for,
        };
        let (seqs, next_token, now) =
            self.admit_page(world, "DescribeInstances", &query, |_| true)?;
        Ok(DescribeInstancesResponse {
            request_id: None,
            reservations: self.reservations(world, &seqs, now),
            next_token,
        })
    }

    fn terminate_instances(
        &self,
        request: &TerminateInstancesRequest,
    ) -> Result<TerminateInstancesResponse, ApiError> {
        let instances = self.change_states(
            "TerminateInstances",
            &request.instance_ids,
            |_, phase, _| {
                Ok(match phase {
                    Phase::ShuttingDown | Phase::Terminated => None,
                    _ => Some(Phase::ShuttingDown),
                })
            },
            |runtime, id, _, after| {
                if after == Some(Phase::ShuttingDown) {
                    runtime.terminate(id);
                }
            },
        )?;
        Ok(TerminateInstancesResponse {
            request_id: None,
            instances,
        })
    }

    fn stop_instances(
        &self,
        request: &StopInstancesRequest,
    ) -> Result<StopInstancesResponse, ApiError> {
        let instances = self.change_states(
            "StopInstances",
            &request.instance_ids,
            |r, phase, _| match phase {
                Phase::Running => Ok(Some(Phase::Stopping)),
                Phase::Stopping | Phase::Stopped => Ok(None),
                other => Err(Self::incorrect_state(&r.id, "stopped", other)),
            },
            |runtime, id, _, after| {
                if after == Some(Phase::Stopping) {
                    runtime.stop(id);
                }
            },
        )?;
        Ok(StopInstancesResponse {
            request_id: None,
            instances,
        })
    }

    fn start_instances(
        &self,
        request: &StartInstancesRequest,
    ) -> Result<StartInstancesResponse, ApiError> {
        let instances = self.change_states("StartInstances", &request.instance_ids, |r, phase, left| {
            match phase {
                Phase::Stopped if left == 0 => Err(ApiError::InsufficientInstanceCapacity(format!(
                    "We currently do not have sufficient {} capacity in the Availability Zone you requested ({}).",
                    r.instance_type, r.zone
                ))),
                Phase::Stopped => Ok(Some(Phase::Pending)),
                Phase::Pending | Phase::Running => Ok(None),
                other => Err(Self::incorrect_state(&r.id, "started", other)),
            }
        }, |runtime, id, _, after| {
            if after == Some(Phase::Pending) {
                runtime.start(id);
            }
        })?;
        Ok(StartInstancesResponse {
            request_id: None,
            instances,
        })
    }

    fn reboot_instances(
        &self,
        request: &RebootInstancesRequest,
    ) -> Result<RebootInstancesResponse, ApiError> {
        // A simulated reboot is instant: the instance stays running.
        self.change_states(
            "RebootInstances",
            &request.instance_ids,
            |r, phase, _| match phase {
                Phase::Running | Phase::Pending => Ok(None),
                other => Err(Self::incorrect_state(&r.id, "rebooted", other)),
            },
            |runtime, id, before, _| {
                if before == Phase::Running {
                    runtime.reboot(id);
                }
            },
        )?;
        Ok(RebootInstancesResponse { request_id: None })
    }

    fn create_tags(&self, request: &CreateTagsRequest) -> Result<CreateTagsResponse, ApiError> {
        let mut guard = self.lock();
        let world = &mut *guard;
        self.admit(world, "CreateTags", false, 0)?;
        if request.resource_ids.is_empty() {
            return Err(
                endstate_wire::WireError::MissingParameter("ResourceId".to_string()).into(),
            );
        }
        let (seqs, image_ids) = world.tag_targets(&request.resource_ids)?;
        check_tag_keys(request.tags.iter().map(|t| t.key.as_str()))?;
        // Decide everything first, so an error changes nothing.
        for seq in &seqs {
            let Some(record) = world.instances.get(seq) else {
                continue;
            };
            if exceeds_tag_limit(record.tags.keys().map(String::as_str), &request.tags) {
                return Err(tag_limit_exceeded());
            }
        }
        let mut images = Vec::with_capacity(image_ids.len());
        for id in &image_ids {
            let Some(image) = world.images.get(id) else {
                continue;
            };
            let existing = image.image.tags.iter().map(|t| t.key.as_str());
            if exceeds_tag_limit(existing, &request.tags) {
                return Err(tag_limit_exceeded());
            }
            let mut image = image.clone();
            for tag in &request.tags {
                set_image_tag(&mut image.image.tags, tag);
            }
            images.push(image);
        }
        for seq in &seqs {
            let seq = *seq;
            for tag in &request.tags {
                let old = world.instances.get_mut(&seq).and_then(|r| {
                    Arc::make_mut(&mut r.tags).insert(tag.key.clone(), tag.value.clone())
                });
                if let Some(old) = old {
                    world.unindex_tag(&tag.key, &old, seq);
                }
                world.index_tag(&tag.key, &tag.value, seq);
            }
        }
        // Images change like CreateImage's: journaled, then kept.
        self.journal_tagged(world, &seqs, &images)?;
        for image in images {
            world.images.insert(image.image.image_id.clone(), image);
        }
        Ok(CreateTagsResponse { request_id: None })
    }

    fn delete_tags(&self, request: &DeleteTagsRequest) -> Result<DeleteTagsResponse, ApiError> {
        let mut guard = self.lock();
        let world = &mut *guard;
        self.admit(world, "DeleteTags", false, 0)?;
        if request.resource_ids.is_empty() {
            return Err(
                endstate_wire::WireError::MissingParameter("ResourceId".to_string()).into(),
            );
        }
        let (seqs, image_ids) = world.tag_targets(&request.resource_ids)?;
        check_tag_keys(request.tags.iter().map(|t| t.key.as_str()))?;
        let images: Vec<ImageRecord> = image_ids
            .iter()
            .filter_map(|id| world.images.get(id))
            .filter(|i| {
                i.image
                    .tags
                    .iter()
                    .any(|t| deletes(&request.tags, &t.key, &t.value))
            })
            .map(|i| {
                let mut image = i.clone();
                image
                    .image
                    .tags
                    .retain(|t| !deletes(&request.tags, &t.key, &t.value));
                image
            })
            .collect();
        for seq in seqs.iter().copied() {
            let Some(record) = world.instances.get_mut(&seq) else {
                continue;
            };
            let doomed: Vec<(String, String)> = record
                .tags
                .iter()
                .filter(|(k, v)| deletes(&request.tags, k, v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (k, _) in &doomed {
                Arc::make_mut(&mut record.tags).remove(k);
            }
            for (k, v) in doomed {
                world.unindex_tag(&k, &v, seq);
            }
        }
        self.journal_tagged(world, &seqs, &images)?;
        for image in images {
            world.images.insert(image.image.image_id.clone(), image);
        }
        Ok(DeleteTagsResponse { request_id: None })
    }

    fn describe_images(
        &self,
        request: &DescribeImagesRequest,
    ) -> Result<DescribeImagesResponse, ApiError> {
        let mut guard = self.lock();
        self.admit(&mut guard, "DescribeImages", false, 0)?;
        if let Some(max) = request.max_results {
            if !request.image_ids.is_empty() {
                return Err(ApiError::InvalidParameterCombination(
                    "The parameter imageIdsSet cannot be used with the parameter maxResults"
                        .to_string(),
                ));
            }
            if !(1..=1000).contains(&max) {
                return Err(ApiError::InvalidParameterValue(format!(
                    "Value ({max}) for parameter maxResults is invalid. Expected a value between 1 and 1000."
                )));
            }
        }
        for id in &request.image_ids {
            if !is_hex_id(id, "ami-") {
                return Err(ApiError::ImageIdMalformed(id.clone()));
            }
            if !guard.images.contains_key(id) {
                return Err(ApiError::ImageNotFound(id.clone()));
            }
        }
        let filters = request
            .filters
            .iter()
            .map(|f| ImageFilter::parse(f, &self.config.account_id))
            .collect::<Result<Vec<_>, _>>()?;
        // `self` is this account; any other owner (an account id, an alias
        // such as `amazon`) is compared with the image's owner as given.
        let owners: Vec<&str> = request
            .owners
            .iter()
            .map(|o| match o.as_str() {
                "self" => self.config.account_id.as_str(),
                other => other,
            })
            .collect();
        let limit = request.max_results.map_or(usize::MAX, |m| m as usize);
        let after = request.next_token.as_deref();
        let mut images = Vec::new();
        let mut next_token = None;
        for image in guard.images.values().map(|i| &i.image) {
            // Pages run in image-id order; the token is the last id given.
            if after.is_some_and(|token| image.image_id.as_str() <= token) {
                continue;
            }
            if !request.image_ids.is_empty() && !request.image_ids.contains(&image.image_id) {
                continue;
            }
            if !owners.is_empty() && !owners.iter().any(|o| image.owner_id.as_deref() == Some(*o)) {
                continue;
            }
            if !filters.iter().all(|f| f.matches(image)) {
                continue;
            }
            if images.len() == limit {
                next_token = images.last().map(|i: &Image| i.image_id.clone());
                break;
            }
            images.push(image.clone());
        }
        Ok(DescribeImagesResponse {
            request_id: None,
            images,
            // The built-in cloud's images have no EBS snapshots.
            block_devices: BTreeMap::new(),
            next_token,
        })
    }

    /// No snapshots exist here: a well-formed id is unknown, as on EC2.
    fn delete_snapshot(
        &self,
        request: &DeleteSnapshotRequest,
    ) -> Result<DeleteSnapshotResponse, ApiError> {
        let mut guard = self.lock();
        self.admit(&mut guard, "DeleteSnapshot", false, 0)?;
        if !is_hex_id(&request.snapshot_id, "snap-") {
            return Err(ApiError::SnapshotIdMalformed(request.snapshot_id.clone()));
        }
        Err(ApiError::SnapshotNotFound(request.snapshot_id.clone()))
    }

    fn describe_availability_zones(
        &self,
        request: &DescribeAvailabilityZonesRequest,
    ) -> Result<DescribeAvailabilityZonesResponse, ApiError> {
        let mut guard = self.lock();
        self.admit(&mut guard, "DescribeAvailabilityZones", false, 0)?;
        drop(guard);
        for name in &request.zone_names {
            if !self.config.zones.contains(name) {
                return Err(ApiError::InvalidParameterValue(format!(
                    "The zone '{name}' does not exist in the region"
                )));
            }
        }
        let zones = self
            .config
            .zones
            .iter()
            .filter(|z| request.zone_names.is_empty() || request.zone_names.contains(z))
            .map(|z| AvailabilityZone {
                zone_name: z.clone(),
                zone_id: None,
                state: "available".to_string(),
                region_name: self.config.region.clone(),
            })
            .filter(|z| {
                request.filters.iter().all(|f| {
                    let value = match f.name.as_str() {
                        "zone-name" => &z.zone_name,
                        "state" => &z.state,
                        "region-name" => &z.region_name,
                        _ => return false,
                    };
                    any_match(&f.values, value)
                })
            })
            .collect();
        Ok(DescribeAvailabilityZonesResponse {
            request_id: None,
            zones,
        })
    }

    fn describe_instance_status(
        &self,
        request: &DescribeInstanceStatusRequest,
    ) -> Result<DescribeInstanceStatusResponse, ApiError> {
        let mut guard = self.lock();
        let world = &mut *guard;
        let include_all = request.include_all_instances.unwrap_or(false);
        let query = PageQuery {
            ids: &request.instance_ids,
            filters: &request.filters,
            max_results: request.max_results,
            next_token: request.next_token.as_deref(),
            terminated_retention: self.config.terminated_visible_for,
        };
        let (seqs, next_token, now) =
            self.admit_page(world, "DescribeInstanceStatus", &query, |phase| {
                include_all || phase == Phase::Running
            })?;
        let statuses = seqs
            .iter()
            .filter_map(|seq| world.instances.get(seq).map(|r| (seq, r)))
            .map(|(seq, r)| {
                let phase = r.phase_at(now, &self.config.timings);
                let (system_status, instance_status) = match phase {
                    Phase::Running => self
                        .runtime
                        .as_ref()
                        .and_then(|rt| rt.status(&r.id))
                        .unwrap_or_else(|| {
                            let running_since = match r.phase {
                                Phase::Pending => r.since + self.config.timings.pending,
                                _ => r.since,
                            };
                            let failed = self
                                .config
                                .faults
                                .instance_failure(*seq)
                                .is_some_and(|after| now >= running_since + after);
                            let instance = if failed { "impaired" } else { "ok" };
                            ("ok".to_string(), instance.to_string())
                        }),
                    _ => ("not-applicable".to_string(), "not-applicable".to_string()),
                };
                InstanceStatus {
                    instance_id: r.id.clone(),
                    availability_zone: r.zone.clone(),
                    state: InstanceStateInfo::named(phase.name()),
                    system_status,
                    instance_status,
                }
            })
            .collect();
        Ok(DescribeInstanceStatusResponse {
            request_id: None,
            statuses,
            next_token,
        })
    }

    fn get_console_output(
        &self,
        request: &GetConsoleOutputRequest,
    ) -> Result<GetConsoleOutputResponse, ApiError> {
        let mut guard = self.lock();
        let world = &mut *guard;
        self.admit(world, "GetConsoleOutput", false, 0)?;
        Self::one_instance(world, &request.instance_id)?;
        let output = self
            .runtime
            .as_ref()
            .and_then(|rt| rt.console_output(&request.instance_id))
            .and_then(console_tail);
        Ok(GetConsoleOutputResponse {
            request_id: None,
            instance_id: request.instance_id.clone(),
            timestamp: Some(iso_time(self.clock.now())),
            output,
        })
    }

    fn create_image(&self, request: &CreateImageRequest) -> Result<CreateImageResponse, ApiError> {
        let mut guard = self.lock();
        let world = &mut *guard;
        self.admit(world, "CreateImage", false, 0)?;
        let (_, record) = Self::one_instance(world, &request.instance_id)?;
        let now = self.clock.now();
        let phase = record.phase_at(now, &self.config.timings);
        if !matches!(phase, Phase::Running | Phase::Stopped) {
            return Err(Self::incorrect_state(&record.id, "imaged", phase));
        }
        world.check_new_image_name(&request.name)?;
        // EC2 tags the image and its snapshots at creation; the built-in
        // cloud's images have no snapshots, so their tags go nowhere.
        if let Some(other) = request
            .tag_specifications
            .iter()
            .find(|s| !matches!(s.resource_type.as_str(), "image" | "snapshot"))
        {
            return Err(ApiError::InvalidParameterValue(format!(
                "'{}' is not a valid taggable resource type for this operation.",
                other.resource_type
            )));
        }
        check_tag_keys(
            request
                .tag_specifications
                .iter()
                .flat_map(|s| s.tags.iter().map(|t| t.key.as_str())),
        )?;
        let mut tags = Vec::new();
        for tag in request
            .tag_specifications
            .iter()
            .filter(|s| s.resource_type == "image")
            .flat_map(|s| s.tags.iter())
        {
            set_image_tag(&mut tags, tag);
        }
        if tags.len() > MAX_TAGS {
            return Err(tag_limit_exceeded());
        }
        let parent = world.images.get(&record.image_id);
        let architecture = parent.and_then(|p| p.image.architecture.clone());
        let parent_layers = parent.map(|p| p.layers.clone()).unwrap_or_default();
        let image_id = image_id_for(&format!("{}/{}/{:?}", record.id, request.name, now));
        let layers = match &self.runtime {
            Some(runtime) => runtime.create_image(&record.id, &parent_layers)?,
            None => parent_layers,
        };
        let image = ImageRecord {
            image: Image {
                image_id: image_id.clone(),
                name: Some(request.name.clone()),
                state: "available".to_string(),
                owner_id: Some(self.config.account_id.clone()),
                architecture,
                root_device_name: Some("/dev/xvda".to_string()),
                creation_date: Some(iso_time(now)),
                tags,
            },
            description: request.description.clone(),
            layers,
        };
        self.journal(&[Change::Image(&image)])?;
        world.images.insert(image_id.clone(), image);
        Ok(CreateImageResponse {
            request_id: None,
            image_id,
        })
    }

    fn deregister_image(
        &self,
        request: &DeregisterImageRequest,
    ) -> Result<DeregisterImageResponse, ApiError> {
        let mut guard = self.lock();
        let world = &mut *guard;
        self.admit(world, "DeregisterImage", false, 0)?;
        world.image(&request.image_id)?;
        self.journal(&[Change::ImageGone(&request.image_id)])?;
        if let Some(gone) = world.images.remove(&request.image_id) {
            if let Some(runtime) = &self.runtime {
                let kept = world
                    .images
                    .values()
                    .flat_map(|i| i.layers.iter().cloned())
                    .collect();
                runtime.image_deregistered(&gone, &kept);
            }
        }
        Ok(DeregisterImageResponse { request_id: None })
    }

    fn modify_instance_metadata_options(
        &self,
        request: &ModifyInstanceMetadataOptionsRequest,
    ) -> Result<ModifyInstanceMetadataOptionsResponse, ApiError> {
        let mut guard = self.lock();
        let world = &mut *guard;
        self.admit(world, "ModifyInstanceMetadataOptions", false, 0)?;
        let (seq, _) = Self::one_instance(world, &request.instance_id)?;
        let wanted = &request.options;
        for (name, value, allowed) in [
            ("HttpTokens", &wanted.http_tokens, ["required", "optional"]),
            (
                "HttpEndpoint",
                &wanted.http_endpoint,
                ["enabled", "disabled"],
            ),
            (
                "InstanceMetadataTags",
                &wanted.instance_metadata_tags,
                ["enabled", "disabled"],
            ),
        ] {
            if let Some(v) = value {
                if !allowed.contains(&v.as_str()) {
                    return Err(ApiError::InvalidParameterValue(format!(
                        "Value ({v}) for parameter {name} is invalid"
                    )));
                }
            }
        }
        if let Some(hops) = wanted.http_put_response_hop_limit {
            if !(1..=64).contains(&hops) {
                return Err(ApiError::InvalidParameterValue(format!(
                    "Value ({hops}) for parameter HttpPutResponseHopLimit is invalid: 1 to 64"
                )));
            }
        }
        let Some(record) = world.instances.get_mut(&seq) else {
            return Err(not_found(&[request.instance_id.as_str()]));
        };
        let mut options = record.metadata_options.clone().unwrap_or_default();
        if wanted.http_tokens.is_some() {
            options.http_tokens = wanted.http_tokens.clone();
        }
        if wanted.http_put_response_hop_limit.is_some() {
            options.http_put_response_hop_limit = wanted.http_put_response_hop_limit;
        }
        if wanted.http_endpoint.is_some() {
            options.http_endpoint = wanted.http_endpoint.clone();
        }
        if wanted.instance_metadata_tags.is_some() {
            options.instance_metadata_tags = wanted.instance_metadata_tags.clone();
        }
        record.metadata_options = Some(options.clone());
        self.journal_instances(world, &[seq])?;
        Ok(ModifyInstanceMetadataOptionsResponse {
            request_id: None,
            instance_id: request.instance_id.clone(),
            options,
        })
    }
}

/// An image id from a seed: `ami-0` and 16 hex digits of its SHA-256.
/// The output a console or bake action answers: base64 of the most recent
/// 64 KiB (what EC2 keeps); `None` when nothing was written.
fn console_tail(bytes: Vec<u8>) -> Option<String> {
    const KEEP: usize = 64 * 1024;
    if bytes.is_empty() {
        return None;
    }
    let tail = &bytes[bytes.len().saturating_sub(KEEP)..];
    Some(UserData(tail.to_vec()).to_base64())
}

pub(crate) fn image_id_for(seed: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(seed.as_bytes());
    format!("ami-0{}", &hex::encode(digest)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_ec2_filters() {
        assert!(glob_match("web-*", "web-1"));
        assert!(glob_match("w?b", "web"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("web-*", "api-1"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("a*c", "abd"));
    }

    #[test]
    fn ids_look_like_ec2_and_are_unique() {
        let ids: BTreeSet<String> = (1..10_000).map(|n| instance_id(n, 0)).collect();
        let salted: BTreeSet<String> = (1..10_000).map(|n| instance_id(n, 0x5eed)).collect();
        assert_eq!(salted.len(), 9_999, "unique under a salt too");
        assert!(ids.is_disjoint(&salted), "another salt, other ids");
        assert_eq!(ids.len(), 9_999);
        assert!(ids.iter().all(|id| is_hex_id(id, "i-")));
        assert!(!is_hex_id("i-xyz", "i-"));
        assert!(is_hex_id("ami-12c6146b", "ami-"));
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn images_console_and_metadata_options_in_the_simulated_backend() {
        let clock = Arc::new(endstate_clock::ManualClock::new(Duration::from_secs(
            1_795_780_800,
        )));
        let backend = SimulatedBackend::new(SimulatedConfig::new("us-east-1"), clock.clone());
        let base = backend.config().images[0].image_id.clone();
        let run = RunInstancesRequest {
            image_id: base.clone(),
            instance_type: None,
            min_count: 1,
            max_count: 1,
            client_token: None,
            availability_zone: None,
            subnet_id: None,
            security_group_ids: vec![],
            key_name: None,
            iam_instance_profile_name: None,
            user_data: None,
            block_device_mappings: vec![],
            metadata_options: None,
            tag_specifications: vec![],
        };
        let id = backend.run_instances(&run).unwrap().reservation.instances[0]
            .instance_id
            .clone();
        let create = CreateImageRequest {
            instance_id: id.clone(),
            name: "golden".to_string(),
            description: None,
            no_reboot: None,
            tag_specifications: vec![endstate_wire::TagSpecification {
                resource_type: "image".to_string(),
                tags: vec![Tag::new("role", "web")],
            }],
        };
        // Pending: not yet.
        assert!(matches!(
            backend.create_image(&create),
            Err(ApiError::IncorrectInstanceState(_))
        ));
        clock.advance(Duration::from_secs(60));
        // Tag keys starting with aws: are refused before anything is made.
        let mut reserved = create.clone();
        reserved.tag_specifications[0].tags = vec![Tag::new("AWS:role", "web")];
        assert!(matches!(
            backend.create_image(&reserved),
            Err(ApiError::InvalidParameterValue(_))
        ));
        assert_eq!(backend.lock().images.len(), 1);
        let image = backend.create_image(&create).unwrap().image_id;
        assert!(is_hex_id(&image, "ami-"));
        assert!(matches!(
            backend.create_image(&create),
            Err(ApiError::InvalidAmiNameDuplicate(_))
        ));
        let described = backend
            .describe_images(&DescribeImagesRequest {
                image_ids: vec![image.clone()],
                ..Default::default()
            })
            .unwrap()
            .images;
        assert_eq!(described[0].tags, vec![Tag::new("role", "web")]);
        let mut from_image = run.clone();
        from_image.image_id = image.clone();
        backend.run_instances(&from_image).unwrap();
        backend
            .deregister_image(&DeregisterImageRequest {
                image_id: image.clone(),
            })
            .unwrap();
        assert!(matches!(
            backend.run_instances(&from_image),
            Err(ApiError::ImageNotFound(_))
        ));
        let console = backend
            .get_console_output(&GetConsoleOutputRequest {
                instance_id: id.clone(),
                latest: None,
            })
            .unwrap();
        assert_eq!(console.output, None);
        let modified = backend
            .modify_instance_metadata_options(&ModifyInstanceMetadataOptionsRequest {
                instance_id: id.clone(),
                options: InstanceMetadataOptions {
                    http_tokens: Some("required".to_string()),
                    ..Default::default()
                },
            })
            .unwrap();
        assert_eq!(modified.options.http_tokens.as_deref(), Some("required"));
        let described = backend
            .describe_instances(&DescribeInstancesRequest {
                instance_ids: vec![id],
                ..Default::default()
            })
            .unwrap();
        let options = described.reservations[0].instances[0]
            .metadata_options
            .clone()
            .unwrap();
        assert_eq!(options.http_tokens.as_deref(), Some("required"));
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn images_are_found_by_owner_tag_name_and_state_in_pages() {
        let clock = Arc::new(endstate_clock::ManualClock::new(Duration::from_secs(
            1_795_780_800,
        )));
        let mut config = SimulatedConfig::new("us-east-1");
        config.throttling = None;
        config.images[0].owner_id = Some("amazon".to_string());
        let backend = SimulatedBackend::new(config, clock.clone());
        let run = RunInstancesRequest {
            image_id: backend.config().images[0].image_id.clone(),
            instance_type: None,
            min_count: 1,
            max_count: 1,
            client_token: None,
            availability_zone: None,
            subnet_id: None,
            security_group_ids: vec![],
            key_name: None,
            iam_instance_profile_name: None,
            user_data: None,
            block_device_mappings: vec![],
            metadata_options: None,
            tag_specifications: vec![],
        };
        let id = backend.run_instances(&run).unwrap().reservation.instances[0]
            .instance_id
            .clone();
        clock.advance(Duration::from_secs(60));
        let create = |name: &str, tags: Vec<Tag>, resource_type: &str| CreateImageRequest {
            instance_id: id.clone(),
            name: name.to_string(),
            description: Some("baked".to_string()),
            no_reboot: Some(true),
            tag_specifications: vec![endstate_wire::TagSpecification {
                resource_type: resource_type.to_string(),
                tags,
            }],
        };
        assert!(matches!(
            backend.create_image(&create("web-0", vec![], "instance")),
            Err(ApiError::InvalidParameterValue(_))
        ));
        let mut made = Vec::new();
        for (name, bake) in [("web-1", "web"), ("web-2", "web"), ("api-1", "api")] {
            let mut request = create(name, vec![Tag::new("endstate:bake", bake)], "image");
            request
                .tag_specifications
                .push(endstate_wire::TagSpecification {
                    resource_type: "snapshot".to_string(),
                    tags: vec![Tag::new("ignored", "no snapshots here")],
                });
            made.push(backend.create_image(&request).unwrap().image_id);
            clock.advance(Duration::from_secs(1));
        }
        let names = |request: DescribeImagesRequest| {
            let response = backend.describe_images(&request).unwrap();
            assert!(response.block_devices.is_empty());
            let mut names: Vec<String> =
                response.images.into_iter().filter_map(|i| i.name).collect();
            names.sort();
            names
        };
        let filter = |name: &str, values: &[&str]| Filter {
            name: name.to_string(),
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        let owned = |filters: Vec<Filter>| DescribeImagesRequest {
            owners: vec!["self".to_string()],
            filters,
            ..Default::default()
        };
        assert_eq!(names(owned(vec![])), ["api-1", "web-1", "web-2"]);
        assert_eq!(
            names(DescribeImagesRequest {
                owners: vec!["amazon".to_string()],
                ..Default::default()
            }),
            ["endstate-base"]
        );
        assert_eq!(
            names(owned(vec![filter("tag:endstate:bake", &["web"])])),
            ["web-1", "web-2"]
        );
        assert_eq!(
            names(owned(vec![filter("tag-key", &["endstate:*"])])),
            ["api-1", "web-1", "web-2"]
        );
        assert_eq!(
            names(owned(vec![
                filter("name", &["web-?"]),
                filter("state", &["available"]),
                filter("owner-id", &["self"]),
            ])),
            ["web-1", "web-2"]
        );
        assert!(names(owned(vec![filter("state", &["pending"])])).is_empty());
        assert!(matches!(
            backend.describe_images(&owned(vec![filter("description", &["baked"])])),
            Err(ApiError::InvalidParameterValue(_))
        ));

        // Pages of two in id order, the token the last id given.
        let mut seen = Vec::new();
        let mut next_token = None;
        let mut pages = 0;
        loop {
            let response = backend
                .describe_images(&DescribeImagesRequest {
                    max_results: Some(2),
                    next_token: next_token.take(),
                    ..owned(vec![])
                })
                .unwrap();
            pages += 1;
            seen.extend(response.images.into_iter().map(|i| i.image_id));
            match response.next_token {
                Some(token) => next_token = Some(token),
                None => break,
            }
        }
        made.sort();
        assert_eq!((seen, pages), (made.clone(), 2));
        assert!(matches!(
            backend.describe_images(&DescribeImagesRequest {
                image_ids: vec![made[0].clone()],
                max_results: Some(5),
                ..Default::default()
            }),
            Err(ApiError::InvalidParameterCombination(_))
        ));
        assert!(matches!(
            backend.describe_images(&DescribeImagesRequest {
                max_results: Some(0),
                ..Default::default()
            }),
            Err(ApiError::InvalidParameterValue(_))
        ));

        for (snapshot, code) in [
            ("snap-0123456789abcdef0", "InvalidSnapshot.NotFound"),
            ("snap-nothex", "InvalidSnapshotID.Malformed"),
            ("vol-0123456789abcdef0", "InvalidSnapshotID.Malformed"),
        ] {
            let error = backend
                .delete_snapshot(&DeleteSnapshotRequest {
                    snapshot_id: snapshot.to_string(),
                })
                .unwrap_err();
            assert_eq!(error.code(), code, "{snapshot}");
        }
    }

    #[derive(Debug)]
    struct RefusingJournal;

    impl Journal for RefusingJournal {
        fn write(&self, _: &[Change<'_>]) -> Result<(), String> {
            Err("disk full".to_string())
        }
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_launch_the_journal_refuses_is_not_kept() {
        let clock = Arc::new(endstate_clock::ManualClock::new(Duration::from_secs(1)));
        let backend = SimulatedBackend::restore(
            SimulatedConfig::new("us-east-1"),
            clock,
            None,
            Some(Arc::new(RefusingJournal)),
            Restored::default(),
        );
        let run = RunInstancesRequest {
            image_id: backend.config().images[0].image_id.clone(),
            instance_type: None,
            min_count: 2,
            max_count: 2,
            client_token: Some("t".to_string()),
            availability_zone: None,
            subnet_id: None,
            security_group_ids: vec![],
            key_name: None,
            iam_instance_profile_name: None,
            user_data: None,
            block_device_mappings: vec![],
            metadata_options: None,
            tag_specifications: vec![endstate_wire::TagSpecification {
                resource_type: "instance".to_string(),
                tags: vec![Tag::new("k", "v")],
            }],
        };
        assert!(matches!(
            backend.run_instances(&run),
            Err(ApiError::Internal(_))
        ));
        assert!(backend.is_empty());
        let world = backend.lock();
        assert!(world.by_token.is_empty() && world.by_tag.is_empty() && world.by_id.is_empty());
        assert!(world.live.values().all(|n| *n == 0));
    }

    #[test]
    fn iso_time_has_milliseconds() {
        assert_eq!(
            iso_time(Duration::from_millis(1_795_000_000_123)),
            "2026-11-18T11:06:40.123Z"
        );
    }
}
