//! The resolved desired state: what the planner and executor consume once a
//! spec has been parsed, overlaid with its environment, interpolated and
//! validated. Nothing here knows about YAML or positions.

use std::collections::BTreeMap;

use endstate_config::Role;
use endstate_scaling::schedule::ScheduledActionConfig;
use endstate_scaling::step::StepScalingConfig;
use endstate_scaling::target::TargetTrackingConfig;
use serde::{Deserialize, Serialize};

use crate::health::{BrakeConfig, HealthCheck};
use crate::recipe::{ChannelRef, Recipe};
use crate::rollout::{GroupLoadBalancer, LoadBalancerSpec, Rollout};

/// Tag keys endstate puts on everything it creates. Observed state is read
/// by these tags, never one call per resource.
pub mod tags {
    /// The project that owns the resource.
    pub const PROJECT: &str = "endstate:project";
    /// The group inside the project.
    pub const GROUP: &str = "endstate:group";
    /// The environment the spec was planned for (`default` without `-e`).
    pub const ENVIRONMENT: &str = "endstate:environment";
    /// The launch intent that created the instance (journal id).
    pub const INTENT: &str = "endstate:intent";
    /// [`Group::launch_hash`](crate::Group::launch_hash) of the launch
    /// settings; a change means replacement.
    pub const LAUNCH_HASH: &str = "endstate:launch";
    /// [`Group::generation`](crate::Group::generation): the version of the
    /// group an instance belongs to (image, instance types, launch
    /// settings). Rollouts tell old from new by it, and the load balancer
    /// names it in `x-endstate-generation`.
    pub const GENERATION: &str = "endstate:generation";
}

/// A validated spec for one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub project: String,
    /// `default` when no environment was chosen.
    pub environment: String,
    pub provider: Provider,
    pub groups: Vec<Group>,
    /// The load balancers groups name (`load_balancers:`), by name order.
    pub load_balancers: Vec<LoadBalancerSpec>,
    /// The roles groups list (`roles:`), by name. Their string values may
    /// hold secret placeholders (see [`crate::roles`]), never values.
    /// Absent in JSON written before roles existed.
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// The golden-image recipes (`recipes:`), by name. Absent in JSON
    /// written before recipes existed, and left out of JSON when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub recipes: BTreeMap<String, Recipe>,
    /// A hash over the resolved spec (secrets as references, not values).
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Provider {
    Aws {
        region: String,
        /// An EC2-compatible endpoint URL (moto, the built-in cloud); `None`
        /// means AWS's regional endpoint.
        endpoint: Option<String>,
        /// A named profile from the shared config files.
        profile: Option<String>,
    },
    /// The built-in cloud on this machine (`endstate cloud serve`), started
    /// in the background when none is running.
    Local {
        /// The region the built-in cloud calls itself (zones are the
        /// region's name and `a`, `b`, `c`). Default `us-east-1`.
        region: String,
        /// The cloud's directory (state, images, instances); `None` means
        /// `$ENDSTATE_CLOUD_DIR`, else the user's data directory.
        dir: Option<String>,
    },
}

impl Spec {
    /// The roles `group` lists, in its order; a name the spec does not
    /// declare (impossible in a loaded spec) is skipped.
    pub fn group_roles(&self, group: &Group) -> Vec<&Role> {
        group
            .roles
            .iter()
            .filter_map(|name| self.roles.get(name))
            .collect()
    }
}

impl Provider {
    /// The region every zone of the spec must be in.
    pub fn region(&self) -> &str {
        match self {
            Provider::Aws { region, .. } | Provider::Local { region, .. } => region,
        }
    }
}

/// The region of `provider: local` when the spec names none.
pub const LOCAL_DEFAULT_REGION: &str = "us-east-1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    pub min: u32,
    pub desired: u32,
    pub max: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    pub name: String,
    /// Subnets in this zone, used in order.
    pub subnet_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootVolume {
    pub size_gib: u32,
    /// gp3, gp2, io1, io2, st1, sc1, standard.
    pub volume_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataOptions {
    /// IMDSv2 session tokens required (`HttpTokens=required`). Default true.
    pub tokens_required: bool,
    /// `HttpPutResponseHopLimit`, 1..=64. Default 2.
    pub hop_limit: u8,
}

impl Default for MetadataOptions {
    fn default() -> Self {
        Self {
            tokens_required: true,
            hop_limit: 2,
        }
    }
}

/// How far a replacement may disturb a group: the one budget every path that
/// replaces instances (apply, healing, rollouts, rollback) obeys.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DisruptionBudget {
    /// The share of desired capacity that must stay running, 0.0..=1.0.
    /// Default 0.9.
    pub min_healthy_share: f64,
    /// How many instances above desired may run during a replacement
    /// (still capped by the group's max). Default: 10% of desired, at least 1.
    pub max_surge: Option<u32>,
}

impl Default for DisruptionBudget {
    fn default() -> Self {
        Self {
            min_healthy_share: 0.9,
            max_surge: None,
        }
    }
}

/// A reference to a secret, resolved at apply time and never stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "from", content = "name", rename_all = "snake_case")]
pub enum SecretRef {
    /// `env:NAME`
    Env(String),
    /// `file:PATH`
    File(String),
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{path}"),
        }
    }
}

/// One piece of user data text: literal text, or a secret spliced in at apply
/// time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserDataPart {
    Text(String),
    Secret(SecretRef),
    /// A secret inside a YAML block scalar of emitted `#cloud-config`: each
    /// line of its value after the first gets `indent` spaces, so that a
    /// value of several lines (a PEM key) stays inside the block.
    IndentedSecret {
        secret: SecretRef,
        indent: usize,
    },
}

/// User data as resolved from the spec: the final text, as parts so that
/// secrets stay references until apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserData {
    pub parts: Vec<UserDataPart>,
    /// sha256 of the text with secrets written as `${secret:REF}`: what plans
    /// and tags show instead of the content.
    pub template_hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    /// The image as the spec wrote it (after interpolation): an AMI id, or
    /// `RECIPE@CHANNEL` when [`Group::image_channel`] is set. Resolving a
    /// channel to the image id at its head is the plan's job (a later
    /// task); until then this holds the reference's text.
    pub image_id: String,
    /// `image: RECIPE@CHANNEL`: the head of a channel of one of the spec's
    /// recipes. Absent in JSON when `None` (and in JSON written before
    /// recipes existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_channel: Option<ChannelRef>,
    /// In order of preference; the executor falls back to the next on
    /// InsufficientInstanceCapacity.
    pub instance_types: Vec<String>,
    pub capacity: Capacity,
    pub zones: Vec<Zone>,
    pub security_group_ids: Vec<String>,
    pub key_name: Option<String>,
    pub iam_instance_profile: Option<String>,
    pub root_volume: Option<RootVolume>,
    pub metadata: MetadataOptions,
    /// User tags (owner tags are added by the executor).
    pub tags: BTreeMap<String, String>,
    pub user_data: Option<UserData>,
    pub budget: DisruptionBudget,
    /// How `endstate serve` tells healthy instances from unhealthy ones;
    /// `None`: by EC2's instance state and status checks alone.
    pub health_check: Option<HealthCheck>,
    /// When correlated failures pause replacement (`replacement_brake:`).
    pub brake: BrakeConfig,
    /// The auto-scaling policies `endstate serve` applies.
    pub scaling: Scaling,
    /// The load balancer the group's instances serve behind, and their port.
    pub load_balancer: Option<GroupLoadBalancer>,
    /// How `endstate serve` moves the group to a new generation; `None`
    /// without a load balancer (the planner's replacement within the
    /// disruption budget), [`Rollout::default_rolling`] when the spec has a
    /// load balancer but no `rollout:`.
    pub rollout: Option<Rollout>,
    /// The roles (names under the spec's `roles:`) configured on the
    /// group's instances, in the order the group lists them (the engine's
    /// tie-break between resources). Their version is
    /// [`Group::roles_hash`], not part of [`Group::launch_hash`]: a role
    /// change is pushed to or pulled by running instances, not a reason
    /// for new ones.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A group's auto-scaling policies, in the types of `endstate-scaling`
/// (validated by its own functions when the spec is loaded). Empty: the
/// group keeps the capacity the spec gives it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    pub target_tracking: Vec<TargetTrackingConfig>,
    pub step: Vec<StepScalingConfig>,
    pub scheduled: Vec<ScheduledActionConfig>,
}

impl Scaling {
    /// Whether the group has no policy at all.
    pub fn is_empty(&self) -> bool {
        self.target_tracking.is_empty() && self.step.is_empty() && self.scheduled.is_empty()
    }
}

impl Group {
    /// A hash of the launch settings that, when changed, require new
    /// instances: user data template, network, volume, metadata options.
    /// Image and instance type are compared on their own (so that a plan can
    /// say "wrong image"), and tags change in place, so neither is part of it;
    /// nor are the health check, the brake and scaling, which steer
    /// `endstate serve` and never need new instances.
    pub fn launch_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let launch = serde_json::json!({
            "zones": self.zones,
            "security_group_ids": self.security_group_ids,
            "key_name": self.key_name,
            "iam_instance_profile": self.iam_instance_profile,
            "root_volume": self.root_volume,
            "metadata": self.metadata,
            "user_data": self.user_data.as_ref().map(|u| &u.template_hash),
        });
        let digest = Sha256::digest(launch.to_string().as_bytes());
        hex::encode(&digest[..8])
    }

    /// The version of the group's configuration: a hash of the roles it
    /// lists, in order, as `roles` declares them (secrets as references,
    /// so a secret's new value is not a new version, as for user data).
    /// Empty roles hash too, so that dropping the last role is a change.
    pub fn roles_hash(&self, roles: &BTreeMap<String, Role>) -> String {
        use sha2::{Digest, Sha256};
        let listed: Vec<(&String, Option<&Role>)> = self
            .roles
            .iter()
            .map(|name| (name, roles.get(name)))
            .collect();
        let digest = Sha256::digest(serde_json::json!(listed).to_string().as_bytes());
        hex::encode(&digest[..8])
    }

    /// The group's version: a hash of the image (and its channel
    /// reference, when it names one), the instance types and
    /// [`Group::launch_hash`] — everything whose change needs new
    /// instances. Instances carry it in [`tags::GENERATION`]. A group
    /// without a channel hashes as it did before channels existed, so that
    /// its instances keep their generation.
    pub fn generation(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut generation = serde_json::json!({
            "image_id": self.image_id,
            "instance_types": self.instance_types,
            "launch_hash": self.launch_hash(),
        });
        if let Some(channel) = &self.image_channel {
            generation["image_channel"] = serde_json::json!(channel);
        }
        let digest = Sha256::digest(generation.to_string().as_bytes());
        hex::encode(&digest[..4])
    }
}
