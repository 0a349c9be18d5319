//! The EC2 actions endstate speaks, as request structs, each to and from its
//! Query-protocol form parameters: the client calls `to_params()`, a server
//! calls [`Ec2Request::from_params`].
//!
//! `from_params` checks structure only (names, numbers, booleans, base64);
//! EC2's semantic rules (MinCount <= MaxCount, MaxResults 5..=1000, no
//! MaxResults with InstanceIds) are the server's to enforce. Parameters an
//! action does not take are rejected with `UnknownParameter` rather than
//! ignored.

use base64::Engine as _;

use crate::error::WireError;
use crate::form::Params;

/// The Query API version endstate speaks.
pub const API_VERSION: &str = "2016-11-15";

/// A key/value tag.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

impl Tag {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// A `Filter.N` of a describe call: `Name` and its `Value.M`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

/// User data as raw bytes; base64 only on the wire. Debug shows the length,
/// never the content: user data routinely carries secrets.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct UserData(pub Vec<u8>);

impl UserData {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The standard (padded) base64 EC2 expects.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.0)
    }

    /// Decodes EC2's base64 (whitespace tolerated, as line-wrapped input is
    /// common).
    pub fn from_base64(text: &str) -> Result<Self, WireError> {
        let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map(UserData)
            .map_err(|_| WireError::InvalidUserData)
    }
}

impl std::fmt::Debug for UserData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserData(<{} bytes redacted>)", self.0.len())
    }
}

/// `BlockDeviceMapping.N.Ebs.*`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EbsBlockDevice {
    pub volume_size: Option<u32>,
    pub volume_type: Option<String>,
    pub delete_on_termination: Option<bool>,
}

/// `BlockDeviceMapping.N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDeviceMapping {
    pub device_name: String,
    pub ebs: Option<EbsBlockDevice>,
}

/// `MetadataOptions.*` of RunInstances; also reported per instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceMetadataOptions {
    /// `required` (IMDSv2 only) or `optional`.
    pub http_tokens: Option<String>,
    pub http_put_response_hop_limit: Option<u32>,
    /// `enabled` or `disabled`.
    pub http_endpoint: Option<String>,
    /// `enabled` or `disabled`: whether the instance's tags are served
    /// under `meta-data/tags/instance/`.
    pub instance_metadata_tags: Option<String>,
}

/// `TagSpecification.N`: tags applied at creation to one resource type
/// (`instance`, `volume`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagSpecification {
    pub resource_type: String,
    pub tags: Vec<Tag>,
}

/// RunInstances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInstancesRequest {
    pub image_id: String,
    pub instance_type: Option<String>,
    pub min_count: u32,
    pub max_count: u32,
    pub client_token: Option<String>,
    /// `Placement.AvailabilityZone`.
    pub availability_zone: Option<String>,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    pub key_name: Option<String>,
    /// `IamInstanceProfile.Name`.
    pub iam_instance_profile_name: Option<String>,
    pub user_data: Option<UserData>,
    pub block_device_mappings: Vec<BlockDeviceMapping>,
    pub metadata_options: Option<InstanceMetadataOptions>,
    pub tag_specifications: Vec<TagSpecification>,
}

/// DescribeInstances.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeInstancesRequest {
    pub instance_ids: Vec<String>,
    pub filters: Vec<Filter>,
    pub max_results: Option<u32>,
    pub next_token: Option<String>,
}

/// TerminateInstances.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TerminateInstancesRequest {
    pub instance_ids: Vec<String>,
}

/// CreateTags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateTagsRequest {
    pub resource_ids: Vec<String>,
    pub tags: Vec<Tag>,
}

/// One tag of DeleteTags: the key, and a value to match if given (`Some("")`
/// deletes only a tag whose value is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTag {
    pub key: String,
    pub value: Option<String>,
}

/// DeleteTags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteTagsRequest {
    pub resource_ids: Vec<String>,
    pub tags: Vec<DeleteTag>,
}

/// DescribeImages. `owners` are account ids or `self`; without ids or
/// owners EC2 lists every image the caller may launch, public ones
/// included. `max_results` (EC2 takes 1..=1000) cannot be combined with
/// `image_ids`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeImagesRequest {
    pub image_ids: Vec<String>,
    pub owners: Vec<String>,
    pub filters: Vec<Filter>,
    pub max_results: Option<u32>,
    pub next_token: Option<String>,
}

/// DescribeAvailabilityZones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeAvailabilityZonesRequest {
    pub zone_names: Vec<String>,
    pub filters: Vec<Filter>,
    pub all_availability_zones: Option<bool>,
}

/// StopInstances.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StopInstancesRequest {
    pub instance_ids: Vec<String>,
    pub force: Option<bool>,
}

/// StartInstances.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartInstancesRequest {
    pub instance_ids: Vec<String>,
}

/// RebootInstances.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RebootInstancesRequest {
    pub instance_ids: Vec<String>,
}

/// DescribeInstanceStatus.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeInstanceStatusRequest {
    pub instance_ids: Vec<String>,
    pub filters: Vec<Filter>,
    pub max_results: Option<u32>,
    pub next_token: Option<String>,
    /// EC2 reports only running instances unless this is true.
    pub include_all_instances: Option<bool>,
}

/// GetConsoleOutput.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GetConsoleOutputRequest {
    pub instance_id: String,
    /// EC2 returns only the most recent 64 KB either way; `Latest` asks for
    /// the latest output of a running instance (Nitro only on EC2).
    pub latest: Option<bool>,
}

/// CreateImage: an image from an instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateImageRequest {
    pub instance_id: String,
    /// 3–128 characters, unique per account and region.
    pub name: String,
    pub description: Option<String>,
    /// When false (the default), EC2 stops the instance, images it, and
    /// starts it again.
    pub no_reboot: Option<bool>,
    pub tag_specifications: Vec<TagSpecification>,
}

/// DeregisterImage.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeregisterImageRequest {
    pub image_id: String,
}

/// DeleteSnapshot: an EBS snapshot, such as one an image was made of
/// (EC2 refuses while a registered image still uses it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteSnapshotRequest {
    pub snapshot_id: String,
}

/// ModifyInstanceMetadataOptions: the options of one instance's metadata
/// service; fields left `None` keep their value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModifyInstanceMetadataOptionsRequest {
    pub instance_id: String,
    pub options: InstanceMetadataOptions,
}

/// DescribeInstanceUtilization: **an endstate extension, not an EC2
/// action.** EC2 publishes no metrics through its own API (CloudWatch
/// does); the built-in cloud's process backend measures each instance's
/// CPU itself and answers this, so that a controller reads utilization
/// with the client it uses for EC2's actions. No `InstanceId.N` means
/// every instance. Other endpoints answer `InvalidAction` or
/// `UnsupportedOperation`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeInstanceUtilizationRequest {
    pub instance_ids: Vec<String>,
}

/// BakeImage: **an endstate extension, not an EC2 action.** A
/// volume-style bake, as Aminator does it: the built-in cloud's process
/// backend runs `user_data` (as a first boot would, with no services)
/// against a copy of `source_image_id`'s root, without booting an
/// instance, and registers what it changed as a new image on top of the
/// source's. The answer comes at once with the image `pending`; it turns
/// `available` when the script succeeded and `failed` when it did not
/// (the image stays until DeregisterImage, as a failed EC2 image does).
/// [`GetBakeOutputRequest`] reads the script's output meanwhile. EC2 and
/// the simulated backend answer `InvalidAction` or `UnsupportedOperation`:
/// there, bakes are instance-style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BakeImageRequest {
    pub source_image_id: String,
    /// 3–128 characters, unique among the cloud's images, as CreateImage's.
    pub name: String,
    pub description: Option<String>,
    /// What runs, in any format a first boot accepts (a `#!` script, a
    /// `#cloud-config`, MIME multipart), base64 on the wire.
    pub user_data: UserData,
}

/// GetBakeOutput: **an endstate extension, not an EC2 action.** The
/// output so far of a [`BakeImageRequest`]'s script, as GetConsoleOutput
/// gives an instance's: base64 of at most the last 64 KiB.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GetBakeOutputRequest {
    pub image_id: String,
}

/// `impl Request` for an action whose only parameter is its list of
/// instance ids (`InstanceId.N`).
macro_rules! instance_ids_request {
    ($name:ident, $action:literal) => {
        impl Request for $name {
            const ACTION: &'static str = $action;
            const PARAMETERS: &'static [&'static str] = &["InstanceId"];

            fn write_params(&self, p: &mut Params) {
                p.insert_list("InstanceId", &self.instance_ids);
            }

            fn read_params(p: &Params) -> Result<Self, WireError> {
                Ok(Self {
                    instance_ids: p.list("InstanceId")?,
                })
            }
        }
    };
}

/// A request struct: its action name and its form parameters.
pub trait Request: Sized {
    /// The `Action` parameter.
    const ACTION: &'static str;

    /// The action's own parameters, without `Action` and `Version`.
    fn write_params(&self, params: &mut Params);

    /// Reads the action's own parameters (`Action` and `Version` already
    /// checked).
    fn read_params(params: &Params) -> Result<Self, WireError>;

    /// The first segments of the parameter names the action takes.
    const PARAMETERS: &'static [&'static str];

    /// All parameters, `Action` and `Version` included: what a client sends.
    fn to_params(&self) -> Params {
        let mut params = Params::new();
        params.insert("Action", Self::ACTION);
        params.insert("Version", API_VERSION);
        self.write_params(&mut params);
        params
    }

    /// Parses a request of this action from its parameters.
    fn from_params(params: &Params) -> Result<Self, WireError> {
        let action = params.require("Action")?;
        if action != Self::ACTION {
            return Err(WireError::InvalidParameterValue {
                name: "Action".to_string(),
                reason: format!("expected {}, got {action}", Self::ACTION),
            });
        }
        check_version(params)?;
        check_known(params, Self::PARAMETERS)?;
        Self::read_params(params)
    }
}

/// Any request endstate speaks: what a server dispatches on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ec2Request {
    /// Boxed: it is several times larger than the others.
    RunInstances(Box<RunInstancesRequest>),
    DescribeInstances(DescribeInstancesRequest),
    TerminateInstances(TerminateInstancesRequest),
    CreateTags(CreateTagsRequest),
    DeleteTags(DeleteTagsRequest),
    DescribeImages(DescribeImagesRequest),
    DescribeAvailabilityZones(DescribeAvailabilityZonesRequest),
    StopInstances(StopInstancesRequest),
    StartInstances(StartInstancesRequest),
    RebootInstances(RebootInstancesRequest),
    DescribeInstanceStatus(DescribeInstanceStatusRequest),
    GetConsoleOutput(GetConsoleOutputRequest),
    CreateImage(CreateImageRequest),
    DeregisterImage(DeregisterImageRequest),
    DeleteSnapshot(DeleteSnapshotRequest),
    ModifyInstanceMetadataOptions(ModifyInstanceMetadataOptionsRequest),
    /// endstate's extension (not EC2's): see the request type.
    DescribeInstanceUtilization(DescribeInstanceUtilizationRequest),
    /// endstate's extension (not EC2's): see the request type.
    BakeImage(BakeImageRequest),
    /// endstate's extension (not EC2's): see the request type.
    GetBakeOutput(GetBakeOutputRequest),
}

impl Ec2Request {
    /// Parses any supported action from its form parameters.
    pub fn from_params(params: &Params) -> Result<Self, WireError> {
        Ok(match params.require("Action")? {
            RunInstancesRequest::ACTION => {
                Ec2Request::RunInstances(Box::new(RunInstancesRequest::from_params(params)?))
            }
            DescribeInstancesRequest::ACTION => {
                Ec2Request::DescribeInstances(DescribeInstancesRequest::from_params(params)?)
            }
            TerminateInstancesRequest::ACTION => {
                Ec2Request::TerminateInstances(TerminateInstancesRequest::from_params(params)?)
            }
            CreateTagsRequest::ACTION => {
                Ec2Request::CreateTags(CreateTagsRequest::from_params(params)?)
            }
            DeleteTagsRequest::ACTION => {
                Ec2Request::DeleteTags(DeleteTagsRequest::from_params(params)?)
            }
            DescribeImagesRequest::ACTION => {
                Ec2Request::DescribeImages(DescribeImagesRequest::from_params(params)?)
            }
            DescribeAvailabilityZonesRequest::ACTION => Ec2Request::DescribeAvailabilityZones(
                DescribeAvailabilityZonesRequest::from_params(params)?,
            ),
            StopInstancesRequest::ACTION => {
                Ec2Request::StopInstances(StopInstancesRequest::from_params(params)?)
            }
            StartInstancesRequest::ACTION => {
                Ec2Request::StartInstances(StartInstancesRequest::from_params(params)?)
            }
            RebootInstancesRequest::ACTION => {
                Ec2Request::RebootInstances(RebootInstancesRequest::from_params(params)?)
            }
            DescribeInstanceStatusRequest::ACTION => Ec2Request::DescribeInstanceStatus(
                DescribeInstanceStatusRequest::from_params(params)?,
            ),
            GetConsoleOutputRequest::ACTION => {
                Ec2Request::GetConsoleOutput(GetConsoleOutputRequest::from_params(params)?)
            }
            CreateImageRequest::ACTION => {
                Ec2Request::CreateImage(CreateImageRequest::from_params(params)?)
            }
            DeregisterImageRequest::ACTION => {
                Ec2Request::DeregisterImage(DeregisterImageRequest::from_params(params)?)
            }
            DeleteSnapshotRequest::ACTION => {
                Ec2Request::DeleteSnapshot(DeleteSnapshotRequest::from_params(params)?)
            }
            ModifyInstanceMetadataOptionsRequest::ACTION => {
                Ec2Request::ModifyInstanceMetadataOptions(
                    ModifyInstanceMetadataOptionsRequest::from_params(params)?,
                )
            }
            DescribeInstanceUtilizationRequest::ACTION => Ec2Request::DescribeInstanceUtilization(
                DescribeInstanceUtilizationRequest::from_params(params)?,
            ),
            BakeImageRequest::ACTION => {
                Ec2Request::BakeImage(BakeImageRequest::from_params(params)?)
            }
            GetBakeOutputRequest::ACTION => {
                Ec2Request::GetBakeOutput(GetBakeOutputRequest::from_params(params)?)
            }
            other => return Err(WireError::InvalidAction(other.to_string())),
        })
    }

    /// Parses a form body.
    pub fn from_form(body: &str) -> Result<Self, WireError> {
        Self::from_params(&Params::from_form(body)?)
    }

    /// The action name.
    pub fn action(&self) -> &'static str {
        match self {
            Ec2Request::RunInstances(_) => RunInstancesRequest::ACTION,
            Ec2Request::DescribeInstances(_) => DescribeInstancesRequest::ACTION,
            Ec2Request::TerminateInstances(_) => TerminateInstancesRequest::ACTION,
            Ec2Request::CreateTags(_) => CreateTagsRequest::ACTION,
            Ec2Request::DeleteTags(_) => DeleteTagsRequest::ACTION,
            Ec2Request::DescribeImages(_) => DescribeImagesRequest::ACTION,
            Ec2Request::DescribeAvailabilityZones(_) => DescribeAvailabilityZonesRequest::ACTION,
            Ec2Request::StopInstances(_) => StopInstancesRequest::ACTION,
            Ec2Request::StartInstances(_) => StartInstancesRequest::ACTION,
            Ec2Request::RebootInstances(_) => RebootInstancesRequest::ACTION,
            Ec2Request::DescribeInstanceStatus(_) => DescribeInstanceStatusRequest::ACTION,
            Ec2Request::GetConsoleOutput(_) => GetConsoleOutputRequest::ACTION,
            Ec2Request::CreateImage(_) => CreateImageRequest::ACTION,
            Ec2Request::DeregisterImage(_) => DeregisterImageRequest::ACTION,
            Ec2Request::DeleteSnapshot(_) => DeleteSnapshotRequest::ACTION,
            Ec2Request::ModifyInstanceMetadataOptions(_) => {
                ModifyInstanceMetadataOptionsRequest::ACTION
            }
            Ec2Request::DescribeInstanceUtilization(_) => {
                DescribeInstanceUtilizationRequest::ACTION
            }
            Ec2Request::BakeImage(_) => BakeImageRequest::ACTION,
            Ec2Request::GetBakeOutput(_) => GetBakeOutputRequest::ACTION,
        }
    }

    /// The form parameters, `Action` and `Version` included.
    pub fn to_params(&self) -> Params {
        match self {
            Ec2Request::RunInstances(r) => r.to_params(),
            Ec2Request::DescribeInstances(r) => r.to_params(),
            Ec2Request::TerminateInstances(r) => r.to_params(),
            Ec2Request::CreateTags(r) => r.to_params(),
            Ec2Request::DeleteTags(r) => r.to_params(),
            Ec2Request::DescribeImages(r) => r.to_params(),
            Ec2Request::DescribeAvailabilityZones(r) => r.to_params(),
            Ec2Request::StopInstances(r) => r.to_params(),
            Ec2Request::StartInstances(r) => r.to_params(),
            Ec2Request::RebootInstances(r) => r.to_params(),
            Ec2Request::DescribeInstanceStatus(r) => r.to_params(),
            Ec2Request::GetConsoleOutput(r) => r.to_params(),
            Ec2Request::CreateImage(r) => r.to_params(),
            Ec2Request::DeregisterImage(r) => r.to_params(),
            Ec2Request::DeleteSnapshot(r) => r.to_params(),
            Ec2Request::ModifyInstanceMetadataOptions(r) => r.to_params(),
            Ec2Request::DescribeInstanceUtilization(r) => r.to_params(),
            Ec2Request::BakeImage(r) => r.to_params(),
            Ec2Request::GetBakeOutput(r) => r.to_params(),
        }
    }
}

fn check_version(params: &Params) -> Result<(), WireError> {
    match params.get("Version") {
        None => Err(WireError::MissingParameter("Version".to_string())),
        Some(API_VERSION) => Ok(()),
        Some(other) => Err(WireError::InvalidParameterValue {
            name: "Version".to_string(),
            reason: format!("unsupported API version {other}; this endpoint speaks {API_VERSION}"),
        }),
    }
}

fn check_known(params: &Params, known: &[&str]) -> Result<(), WireError> {
    let mut all = Vec::with_capacity(known.len() + 2);
    all.extend_from_slice(&["Action", "Version"]);
    all.extend_from_slice(known);
    params.reject_unknown(&all)
}

fn write_tags(params: &mut Params, prefix: &str, tags: &[Tag]) {
    for (i, tag) in tags.iter().enumerate() {
        params.insert(format!("{prefix}.{}.Key", i + 1), tag.key.as_str());
        params.insert(format!("{prefix}.{}.Value", i + 1), tag.value.as_str());
    }
}

/// Tags under `prefix`; a missing `Value` reads as "" (EC2 allows it).
fn read_tags(params: &Params, prefix: &str) -> Result<Vec<Tag>, WireError> {
    params
        .indices(prefix)?
        .into_iter()
        .map(|n| {
            Ok(Tag {
                key: params.require(&format!("{prefix}.{n}.Key"))?.to_string(),
                value: params
                    .get(&format!("{prefix}.{n}.Value"))
                    .unwrap_or("")
                    .to_string(),
            })
        })
        .collect()
}

fn write_filters(params: &mut Params, filters: &[Filter]) {
    for (i, filter) in filters.iter().enumerate() {
        params.insert(format!("Filter.{}.Name", i + 1), filter.name.as_str());
        params.insert_list(&format!("Filter.{}.Value", i + 1), &filter.values);
    }
}

fn read_filters(params: &Params) -> Result<Vec<Filter>, WireError> {
    params
        .indices("Filter")?
        .into_iter()
        .map(|n| {
            Ok(Filter {
                name: params.require(&format!("Filter.{n}.Name"))?.to_string(),
                values: params.list(&format!("Filter.{n}.Value"))?,
            })
        })
        .collect()
}

/// Metadata options as parameters: `MetadataOptions.HttpTokens` (prefix
/// `MetadataOptions.`, RunInstances) or `HttpTokens` (no prefix,
/// ModifyInstanceMetadataOptions), and so on.
fn write_metadata_options(p: &mut Params, prefix: &str, m: &InstanceMetadataOptions) {
    p.insert_opt(format!("{prefix}HttpTokens"), m.http_tokens.as_deref());
    p.insert_opt(
        format!("{prefix}HttpPutResponseHopLimit"),
        m.http_put_response_hop_limit.map(|h| h.to_string()),
    );
    p.insert_opt(format!("{prefix}HttpEndpoint"), m.http_endpoint.as_deref());
    p.insert_opt(
        format!("{prefix}InstanceMetadataTags"),
        m.instance_metadata_tags.as_deref(),
    );
}

/// Reads what [`write_metadata_options`] writes.
fn read_metadata_options(p: &Params, prefix: &str) -> Result<InstanceMetadataOptions, WireError> {
    Ok(InstanceMetadataOptions {
        http_tokens: owned(p.get(&format!("{prefix}HttpTokens"))),
        http_put_response_hop_limit: p.get_u32(&format!("{prefix}HttpPutResponseHopLimit"))?,
        http_endpoint: owned(p.get(&format!("{prefix}HttpEndpoint"))),
        instance_metadata_tags: owned(p.get(&format!("{prefix}InstanceMetadataTags"))),
    })
}

fn write_tag_specifications(p: &mut Params, specifications: &[TagSpecification]) {
    for (i, spec) in specifications.iter().enumerate() {
        let prefix = format!("TagSpecification.{}", i + 1);
        p.insert(
            format!("{prefix}.ResourceType"),
            spec.resource_type.as_str(),
        );
        write_tags(p, &format!("{prefix}.Tag"), &spec.tags);
    }
}

fn read_tag_specifications(p: &Params) -> Result<Vec<TagSpecification>, WireError> {
    p.indices("TagSpecification")?
        .into_iter()
        .map(|n| {
            let prefix = format!("TagSpecification.{n}");
            Ok(TagSpecification {
                resource_type: p.require(&format!("{prefix}.ResourceType"))?.to_string(),
                tags: read_tags(p, &format!("{prefix}.Tag"))?,
            })
        })
        .collect()
}

fn required_u32(params: &Params, name: &str) -> Result<u32, WireError> {
    params
        .get_u32(name)?
        .ok_or_else(|| WireError::MissingParameter(name.to_string()))
}

fn owned(value: Option<&str>) -> Option<String> {
    value.map(str::to_string)
}

impl Request for RunInstancesRequest {
    const ACTION: &'static str = "RunInstances";
    const PARAMETERS: &'static [&'static str] = &[
        "ImageId",
        "InstanceType",
        "MinCount",
        "MaxCount",
        "ClientToken",
        "Placement",
        "SubnetId",
        "SecurityGroupId",
        "KeyName",
        "IamInstanceProfile",
        "UserData",
        "BlockDeviceMapping",
        "MetadataOptions",
        "TagSpecification",
    ];

    fn write_params(&self, p: &mut Params) {
        p.insert("ImageId", self.image_id.as_str());
        p.insert_opt("InstanceType", self.instance_type.as_deref());
        p.insert("MinCount", self.min_count.to_string());
        p.insert("MaxCount", self.max_count.to_string());
        p.insert_opt("ClientToken", self.client_token.as_deref());
        p.insert_opt(
            "Placement.AvailabilityZone",
            self.availability_zone.as_deref(),
        );
        p.insert_opt("SubnetId", self.subnet_id.as_deref());
        p.insert_list("SecurityGroupId", &self.security_group_ids);
        p.insert_opt("KeyName", self.key_name.as_deref());
        p.insert_opt(
            "IamInstanceProfile.Name",
            self.iam_instance_profile_name.as_deref(),
        );
        p.insert_opt("UserData", self.user_data.as_ref().map(UserData::to_base64));
        for (i, mapping) in self.block_device_mappings.iter().enumerate() {
            let prefix = format!("BlockDeviceMapping.{}", i + 1);
            p.insert(format!("{prefix}.DeviceName"), mapping.device_name.as_str());
            if let Some(ebs) = &mapping.ebs {
                p.insert_opt(
                    format!("{prefix}.Ebs.VolumeSize"),
                    ebs.volume_size.map(|s| s.to_string()),
                );
                p.insert_opt(
                    format!("{prefix}.Ebs.VolumeType"),
                    ebs.volume_type.as_deref(),
                );
                p.insert_opt(
                    format!("{prefix}.Ebs.DeleteOnTermination"),
                    ebs.delete_on_termination.map(|d| d.to_string()),
                );
            }
        }
        if let Some(m) = &self.metadata_options {
            write_metadata_options(p, "MetadataOptions.", m);
        }
        write_tag_specifications(p, &self.tag_specifications);
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        let block_device_mappings = p
            .indices("BlockDeviceMapping")?
            .into_iter()
            .map(|n| {
                let prefix = format!("BlockDeviceMapping.{n}");
                let ebs_prefix = format!("{prefix}.Ebs.");
                let has_ebs = p.iter().any(|(k, _)| k.starts_with(&ebs_prefix));
                let ebs = if has_ebs {
                    Some(EbsBlockDevice {
                        volume_size: p.get_u32(&format!("{prefix}.Ebs.VolumeSize"))?,
                        volume_type: owned(p.get(&format!("{prefix}.Ebs.VolumeType"))),
                        delete_on_termination: p
                            .get_bool(&format!("{prefix}.Ebs.DeleteOnTermination"))?,
                    })
                } else {
                    None
                };
                Ok(BlockDeviceMapping {
                    device_name: p.require(&format!("{prefix}.DeviceName"))?.to_string(),
                    ebs,
                })
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        let metadata_options = if p.iter().any(|(k, _)| k.starts_with("MetadataOptions.")) {
            Some(read_metadata_options(p, "MetadataOptions.")?)
        } else {
            None
        };
        let tag_specifications = read_tag_specifications(p)?;
        Ok(Self {
            image_id: p.require("ImageId")?.to_string(),
            instance_type: owned(p.get("InstanceType")),
            min_count: required_u32(p, "MinCount")?,
            max_count: required_u32(p, "MaxCount")?,
            client_token: owned(p.get("ClientToken")),
            availability_zone: owned(p.get("Placement.AvailabilityZone")),
            subnet_id: owned(p.get("SubnetId")),
            security_group_ids: p.list("SecurityGroupId")?,
            key_name: owned(p.get("KeyName")),
            iam_instance_profile_name: owned(p.get("IamInstanceProfile.Name")),
            user_data: p.get("UserData").map(UserData::from_base64).transpose()?,
            block_device_mappings,
            metadata_options,
            tag_specifications,
        })
    }
}

impl Request for DescribeInstancesRequest {
    const ACTION: &'static str = "DescribeInstances";
    const PARAMETERS: &'static [&'static str] =
        &["InstanceId", "Filter", "MaxResults", "NextToken"];

    fn write_params(&self, p: &mut Params) {
        p.insert_list("InstanceId", &self.instance_ids);
        write_filters(p, &self.filters);
        p.insert_opt("MaxResults", self.max_results.map(|m| m.to_string()));
        p.insert_opt("NextToken", self.next_token.as_deref());
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            instance_ids: p.list("InstanceId")?,
            filters: read_filters(p)?,
            max_results: p.get_u32("MaxResults")?,
            next_token: owned(p.get("NextToken")),
        })
    }
}

instance_ids_request!(TerminateInstancesRequest, "TerminateInstances");

impl Request for CreateTagsRequest {
    const ACTION: &'static str = "CreateTags";
    const PARAMETERS: &'static [&'static str] = &["ResourceId", "Tag"];

    fn write_params(&self, p: &mut Params) {
        p.insert_list("ResourceId", &self.resource_ids);
        write_tags(p, "Tag", &self.tags);
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            resource_ids: p.list("ResourceId")?,
            tags: read_tags(p, "Tag")?,
        })
    }
}

impl Request for DeleteTagsRequest {
    const ACTION: &'static str = "DeleteTags";
    const PARAMETERS: &'static [&'static str] = &["ResourceId", "Tag"];

    fn write_params(&self, p: &mut Params) {
        p.insert_list("ResourceId", &self.resource_ids);
        for (i, tag) in self.tags.iter().enumerate() {
            p.insert(format!("Tag.{}.Key", i + 1), tag.key.as_str());
            p.insert_opt(format!("Tag.{}.Value", i + 1), tag.value.as_deref());
        }
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        let tags = p
            .indices("Tag")?
            .into_iter()
            .map(|n| {
                Ok(DeleteTag {
                    key: p.require(&format!("Tag.{n}.Key"))?.to_string(),
                    value: owned(p.get(&format!("Tag.{n}.Value"))),
                })
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        Ok(Self {
            resource_ids: p.list("ResourceId")?,
            tags,
        })
    }
}

impl Request for DescribeImagesRequest {
    const ACTION: &'static str = "DescribeImages";
    const PARAMETERS: &'static [&'static str] =
        &["ImageId", "Owner", "Filter", "MaxResults", "NextToken"];

    fn write_params(&self, p: &mut Params) {
        p.insert_list("ImageId", &self.image_ids);
        p.insert_list("Owner", &self.owners);
        write_filters(p, &self.filters);
        p.insert_opt("MaxResults", self.max_results.map(|m| m.to_string()));
        p.insert_opt("NextToken", self.next_token.as_deref());
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            image_ids: p.list("ImageId")?,
            owners: p.list("Owner")?,
            filters: read_filters(p)?,
            max_results: p.get_u32("MaxResults")?,
            next_token: owned(p.get("NextToken")),
        })
    }
}

impl Request for DescribeAvailabilityZonesRequest {
    const ACTION: &'static str = "DescribeAvailabilityZones";
    const PARAMETERS: &'static [&'static str] = &["ZoneName", "Filter", "AllAvailabilityZones"];

    fn write_params(&self, p: &mut Params) {
        p.insert_list("ZoneName", &self.zone_names);
        write_filters(p, &self.filters);
        p.insert_opt(
            "AllAvailabilityZones",
            self.all_availability_zones.map(|a| a.to_string()),
        );
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            zone_names: p.list("ZoneName")?,
            filters: read_filters(p)?,
            all_availability_zones: p.get_bool("AllAvailabilityZones")?,
        })
    }
}

impl Request for StopInstancesRequest {
    const ACTION: &'static str = "StopInstances";
    const PARAMETERS: &'static [&'static str] = &["InstanceId", "Force"];

    fn write_params(&self, p: &mut Params) {
        p.insert_list("InstanceId", &self.instance_ids);
        p.insert_opt("Force", self.force.map(|f| f.to_string()));
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            instance_ids: p.list("InstanceId")?,
            force: p.get_bool("Force")?,
        })
    }
}

instance_ids_request!(StartInstancesRequest, "StartInstances");

instance_ids_request!(RebootInstancesRequest, "RebootInstances");

instance_ids_request!(
    DescribeInstanceUtilizationRequest,
    "DescribeInstanceUtilization"
);

impl Request for DescribeInstanceStatusRequest {
    const ACTION: &'static str = "DescribeInstanceStatus";
    const PARAMETERS: &'static [&'static str] = &[
        "InstanceId",
        "Filter",
        "MaxResults",
        "NextToken",
        "IncludeAllInstances",
    ];

    fn write_params(&self, p: &mut Params) {
        p.insert_list("InstanceId", &self.instance_ids);
        write_filters(p, &self.filters);
        p.insert_opt("MaxResults", self.max_results.map(|m| m.to_string()));
        p.insert_opt("NextToken", self.next_token.as_deref());
        p.insert_opt(
            "IncludeAllInstances",
            self.include_all_instances.map(|a| a.to_string()),
        );
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            instance_ids: p.list("InstanceId")?,
            filters: read_filters(p)?,
            max_results: p.get_u32("MaxResults")?,
            next_token: owned(p.get("NextToken")),
            include_all_instances: p.get_bool("IncludeAllInstances")?,
        })
    }
}

impl Request for GetConsoleOutputRequest {
    const ACTION: &'static str = "GetConsoleOutput";
    const PARAMETERS: &'static [&'static str] = &["InstanceId", "Latest"];

    fn write_params(&self, p: &mut Params) {
        p.insert("InstanceId", self.instance_id.as_str());
        p.insert_opt("Latest", self.latest.map(|l| l.to_string()));
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            instance_id: p.require("InstanceId")?.to_string(),
            latest: p.get_bool("Latest")?,
        })
    }
}

impl Request for CreateImageRequest {
    const ACTION: &'static str = "CreateImage";
    const PARAMETERS: &'static [&'static str] = &[
        "InstanceId",
        "Name",
        "Description",
        "NoReboot",
        "TagSpecification",
        "BlockDeviceMapping",
    ];

    fn write_params(&self, p: &mut Params) {
        p.insert("InstanceId", self.instance_id.as_str());
        p.insert("Name", self.name.as_str());
        p.insert_opt("Description", self.description.as_deref());
        p.insert_opt("NoReboot", self.no_reboot.map(|n| n.to_string()));
        write_tag_specifications(p, &self.tag_specifications);
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            instance_id: p.require("InstanceId")?.to_string(),
            name: p.require("Name")?.to_string(),
            description: owned(p.get("Description")),
            no_reboot: p.get_bool("NoReboot")?,
            tag_specifications: read_tag_specifications(p)?,
        })
    }
}

impl Request for BakeImageRequest {
    const ACTION: &'static str = "BakeImage";
    const PARAMETERS: &'static [&'static str] =
        &["SourceImageId", "Name", "Description", "UserData"];

    fn write_params(&self, p: &mut Params) {
        p.insert("SourceImageId", self.source_image_id.as_str());
        p.insert("Name", self.name.as_str());
        p.insert_opt("Description", self.description.as_deref());
        p.insert("UserData", self.user_data.to_base64());
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            source_image_id: p.require("SourceImageId")?.to_string(),
            name: p.require("Name")?.to_string(),
            description: owned(p.get("Description")),
            user_data: UserData::from_base64(p.require("UserData")?)?,
        })
    }
}

impl Request for GetBakeOutputRequest {
    const ACTION: &'static str = "GetBakeOutput";
    const PARAMETERS: &'static [&'static str] = &["ImageId"];

    fn write_params(&self, p: &mut Params) {
        p.insert("ImageId", self.image_id.as_str());
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            image_id: p.require("ImageId")?.to_string(),
        })
    }
}

impl Request for DeregisterImageRequest {
    const ACTION: &'static str = "DeregisterImage";
    const PARAMETERS: &'static [&'static str] = &["ImageId"];

    fn write_params(&self, p: &mut Params) {
        p.insert("ImageId", self.image_id.as_str());
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            image_id: p.require("ImageId")?.to_string(),
        })
    }
}

impl Request for DeleteSnapshotRequest {
    const ACTION: &'static str = "DeleteSnapshot";
    const PARAMETERS: &'static [&'static str] = &["SnapshotId"];

    fn write_params(&self, p: &mut Params) {
        p.insert("SnapshotId", self.snapshot_id.as_str());
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            snapshot_id: p.require("SnapshotId")?.to_string(),
        })
    }
}

impl Request for ModifyInstanceMetadataOptionsRequest {
    const ACTION: &'static str = "ModifyInstanceMetadataOptions";
    const PARAMETERS: &'static [&'static str] = &[
        "InstanceId",
        "HttpTokens",
        "HttpPutResponseHopLimit",
        "HttpEndpoint",
        "InstanceMetadataTags",
        "HttpProtocolIpv6",
    ];

    fn write_params(&self, p: &mut Params) {
        p.insert("InstanceId", self.instance_id.as_str());
        write_metadata_options(p, "", &self.options);
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            instance_id: p.require("InstanceId")?.to_string(),
            options: read_metadata_options(p, "")?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    pub(crate) fn full_run_instances() -> RunInstancesRequest {
        RunInstancesRequest {
            image_id: "ami-12c6146b".into(),
            instance_type: Some("t3.micro".into()),
            min_count: 3,
            max_count: 3,
            client_token: Some("intent-0001".into()),
            availability_zone: Some("us-east-1a".into()),
            subnet_id: Some("subnet-1".into()),
            security_group_ids: vec!["sg-1".into(), "sg-2".into()],
            key_name: Some("ops".into()),
            iam_instance_profile_name: Some("web".into()),
            user_data: Some(UserData(b"#!/bin/sh\necho hi & bye\n".to_vec())),
            block_device_mappings: vec![BlockDeviceMapping {
                device_name: "/dev/xvda".into(),
                ebs: Some(EbsBlockDevice {
                    volume_size: Some(20),
                    volume_type: Some("gp3".into()),
                    delete_on_termination: Some(true),
                }),
            }],
            metadata_options: Some(InstanceMetadataOptions {
                http_tokens: Some("required".into()),
                http_put_response_hop_limit: Some(2),
                http_endpoint: Some("enabled".into()),
                instance_metadata_tags: Some("enabled".into()),
            }),
            tag_specifications: vec![
                TagSpecification {
                    resource_type: "instance".into(),
                    tags: vec![
                        Tag::new("endstate:project", "demo"),
                        Tag::new("Name", "a b"),
                    ],
                },
                TagSpecification {
                    resource_type: "volume".into(),
                    tags: vec![Tag::new("endstate:project", "demo")],
                },
            ],
        }
    }

    fn roundtrip<R: Request + std::fmt::Debug + PartialEq>(request: R) -> Params {
        let params = request.to_params();
        let again = R::from_params(&params).unwrap();
        assert_eq!(again, request);
        assert_eq!(again.to_params(), params);
        // Through the form encoding too, as a server would receive it.
        let decoded = Params::from_form(&params.to_form()).unwrap();
        assert_eq!(decoded, params);
        params
    }

    #[test]
    fn run_instances_roundtrips_with_every_field() {
        let params = roundtrip(full_run_instances());
        assert_eq!(params.get("Action"), Some("RunInstances"));
        assert_eq!(params.get("Version"), Some("2016-11-15"));
        assert_eq!(params.get("MinCount"), Some("3"));
        assert_eq!(params.get("Placement.AvailabilityZone"), Some("us-east-1a"));
        assert_eq!(params.get("SecurityGroupId.2"), Some("sg-2"));
        assert_eq!(params.get("IamInstanceProfile.Name"), Some("web"));
        assert_eq!(
            params.get("UserData"),
            Some("IyEvYmluL3NoCmVjaG8gaGkgJiBieWUK")
        );
        assert_eq!(
            params.get("BlockDeviceMapping.1.DeviceName"),
            Some("/dev/xvda")
        );
        assert_eq!(
            params.get("BlockDeviceMapping.1.Ebs.VolumeSize"),
            Some("20")
        );
        assert_eq!(
            params.get("BlockDeviceMapping.1.Ebs.DeleteOnTermination"),
            Some("true")
        );
        assert_eq!(params.get("MetadataOptions.HttpTokens"), Some("required"));
        assert_eq!(
            params.get("MetadataOptions.HttpPutResponseHopLimit"),
            Some("2")
        );
        assert_eq!(params.get("MetadataOptions.HttpEndpoint"), Some("enabled"));
        assert_eq!(
            params.get("TagSpecification.1.ResourceType"),
            Some("instance")
        );
        assert_eq!(params.get("TagSpecification.1.Tag.2.Value"), Some("a b"));
        assert_eq!(
            params.get("TagSpecification.2.ResourceType"),
            Some("volume")
        );
    }

    #[test]
    fn minimal_run_instances_roundtrips() {
        let params = roundtrip(RunInstancesRequest {
            image_id: "ami-1".into(),
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
        });
        assert_eq!(params.len(), 5);
    }

    #[test]
    fn other_requests_roundtrip() {
        let p = roundtrip(DescribeInstancesRequest {
            instance_ids: vec![],
            filters: vec![
                Filter {
                    name: "tag:endstate:project".into(),
                    values: vec!["demo".into()],
                },
                Filter {
                    name: "instance-state-name".into(),
                    values: vec!["pending".into(), "running".into()],
                },
            ],
            max_results: Some(1000),
            next_token: Some("tok/en+=".into()),
        });
        assert_eq!(p.get("Filter.2.Value.2"), Some("running"));
        roundtrip(DescribeInstancesRequest {
            instance_ids: vec!["i-1".into(), "i-2".into()],
            ..Default::default()
        });
        roundtrip(TerminateInstancesRequest {
            instance_ids: (0..12).map(|i| format!("i-{i}")).collect(),
        });
        roundtrip(CreateTagsRequest {
            resource_ids: vec!["i-1".into()],
            tags: vec![Tag::new("a", ""), Tag::new("b", "c")],
        });
        let p = roundtrip(DeleteTagsRequest {
            resource_ids: vec!["i-1".into()],
            tags: vec![
                DeleteTag {
                    key: "a".into(),
                    value: None,
                },
                DeleteTag {
                    key: "b".into(),
                    value: Some(String::new()),
                },
            ],
        });
        assert_eq!(p.get("Tag.1.Value"), None);
        assert_eq!(p.get("Tag.2.Value"), Some(""));
        roundtrip(DescribeImagesRequest {
            image_ids: vec!["ami-1".into()],
            owners: vec!["self".into()],
            ..Default::default()
        });
        let p = roundtrip(DescribeImagesRequest {
            owners: vec!["self".into()],
            filters: vec![
                Filter {
                    name: "tag:endstate:bake".into(),
                    values: vec!["web".into()],
                },
                Filter {
                    name: "tag-key".into(),
                    values: vec!["endstate:parent".into()],
                },
                Filter {
                    name: "state".into(),
                    values: vec!["available".into(), "pending".into()],
                },
            ],
            max_results: Some(1000),
            next_token: Some("tok".into()),
            ..Default::default()
        });
        assert_eq!(p.get("Owner.1"), Some("self"));
        assert_eq!(p.get("Filter.3.Value.2"), Some("pending"));
        assert_eq!(p.get("MaxResults"), Some("1000"));
        roundtrip(DescribeAvailabilityZonesRequest {
            zone_names: vec!["us-east-1a".into()],
            filters: vec![],
            all_availability_zones: Some(false),
        });
    }

    #[test]
    fn lifecycle_and_status_requests_roundtrip_and_dispatch() {
        let p = roundtrip(StopInstancesRequest {
            instance_ids: vec!["i-1".into(), "i-2".into()],
            force: Some(true),
        });
        assert_eq!(p.get("InstanceId.2"), Some("i-2"));
        assert_eq!(p.get("Force"), Some("true"));
        roundtrip(StopInstancesRequest {
            instance_ids: vec!["i-1".into()],
            force: None,
        });
        roundtrip(StartInstancesRequest {
            instance_ids: vec!["i-1".into()],
        });
        roundtrip(RebootInstancesRequest {
            instance_ids: vec!["i-1".into()],
        });
        let p = roundtrip(DescribeInstanceStatusRequest {
            instance_ids: vec![],
            filters: vec![Filter {
                name: "availability-zone".into(),
                values: vec!["us-east-1a".into()],
            }],
            max_results: Some(5),
            next_token: Some("t".into()),
            include_all_instances: Some(true),
        });
        assert_eq!(p.get("IncludeAllInstances"), Some("true"));
        for request in [
            Ec2Request::StopInstances(StopInstancesRequest {
                instance_ids: vec!["i-1".into()],
                force: Some(false),
            }),
            Ec2Request::StartInstances(StartInstancesRequest {
                instance_ids: vec!["i-1".into()],
            }),
            Ec2Request::RebootInstances(RebootInstancesRequest {
                instance_ids: vec!["i-1".into()],
            }),
            Ec2Request::DescribeInstanceStatus(DescribeInstanceStatusRequest {
                instance_ids: vec!["i-1".into()],
                ..Default::default()
            }),
        ] {
            let parsed = Ec2Request::from_form(&request.to_params().to_form()).unwrap();
            assert_eq!(parsed, request);
        }
        let err = Ec2Request::from_form(
            "Action=StartInstances&Version=2016-11-15&InstanceId.1=i-1&Force=true",
        )
        .unwrap_err();
        assert_eq!(err, WireError::UnknownParameter("Force".into()));
    }

    #[test]
    fn image_console_and_metadata_requests_roundtrip_and_dispatch() {
        let p = roundtrip(GetConsoleOutputRequest {
            instance_id: "i-1".into(),
            latest: Some(true),
        });
        assert_eq!(p.get("Action"), Some("GetConsoleOutput"));
        let p = roundtrip(CreateImageRequest {
            instance_id: "i-1".into(),
            name: "web v2".into(),
            description: Some("baked".into()),
            no_reboot: Some(true),
            tag_specifications: vec![TagSpecification {
                resource_type: "image".into(),
                tags: vec![Tag::new("channel", "stable")],
            }],
        });
        assert_eq!(p.get("TagSpecification.1.Tag.1.Key"), Some("channel"));
        roundtrip(DeregisterImageRequest {
            image_id: "ami-1".into(),
        });
        let p = roundtrip(DeleteSnapshotRequest {
            snapshot_id: "snap-1".into(),
        });
        assert_eq!(p.get("Action"), Some("DeleteSnapshot"));
        assert_eq!(p.get("SnapshotId"), Some("snap-1"));
        let p = roundtrip(ModifyInstanceMetadataOptionsRequest {
            instance_id: "i-1".into(),
            options: InstanceMetadataOptions {
                http_tokens: Some("required".into()),
                instance_metadata_tags: Some("enabled".into()),
                ..InstanceMetadataOptions::default()
            },
        });
        assert_eq!(p.get("HttpTokens"), Some("required"));
        assert_eq!(p.get("HttpEndpoint"), None);
        for form in [
            "Action=GetConsoleOutput&Version=2016-11-15&InstanceId=i-1",
            "Action=CreateImage&Version=2016-11-15&InstanceId=i-1&Name=n",
            "Action=DeregisterImage&Version=2016-11-15&ImageId=ami-1",
            "Action=DeleteSnapshot&Version=2016-11-15&SnapshotId=snap-1",
            "Action=ModifyInstanceMetadataOptions&Version=2016-11-15&InstanceId=i-1&HttpTokens=required",
        ] {
            let request = Ec2Request::from_form(form).unwrap();
            assert_eq!(Ec2Request::from_params(&request.to_params()).unwrap(), request);
        }
        assert!(
            Ec2Request::from_form("Action=CreateImage&Version=2016-11-15&InstanceId=i-1").is_err()
        );
        assert_eq!(
            Ec2Request::from_form("Action=DeleteSnapshot&Version=2016-11-15").unwrap_err(),
            WireError::MissingParameter("SnapshotId".into())
        );
    }

    #[test]
    fn bake_requests_roundtrip_and_dispatch() {
        let p = roundtrip(BakeImageRequest {
            source_image_id: "ami-0123456789abcdef0".into(),
            name: "web-1a2b".into(),
            description: Some("baked".into()),
            user_data: UserData(b"#!/bin/sh\necho hi\n".to_vec()),
        });
        assert_eq!(p.get("Action"), Some("BakeImage"));
        assert_eq!(p.get("UserData"), Some("IyEvYmluL3NoCmVjaG8gaGkK"));
        let request = Ec2Request::from_params(&p).unwrap();
        assert_eq!(request.action(), "BakeImage");
        assert_eq!(request.to_params(), p);
        let missing =
            Params::from_form("Action=BakeImage&Version=2016-11-15&SourceImageId=ami-1&Name=web")
                .unwrap();
        let error = Ec2Request::from_params(&missing).unwrap_err().to_string();
        assert!(error.contains("UserData"), "{error}");
        let p = roundtrip(GetBakeOutputRequest {
            image_id: "ami-1".into(),
        });
        let request = Ec2Request::from_params(&p).unwrap();
        assert_eq!(request.action(), "GetBakeOutput");
        assert_eq!(request.to_params(), p);
    }

    #[test]
    fn instance_utilization_request_roundtrips_and_dispatches() {
        let p = roundtrip(DescribeInstanceUtilizationRequest {
            instance_ids: vec!["i-1".into(), "i-2".into()],
        });
        assert_eq!(p.get("Action"), Some("DescribeInstanceUtilization"));
        assert_eq!(p.get("InstanceId.2"), Some("i-2"));
        let all = roundtrip(DescribeInstanceUtilizationRequest::default());
        assert_eq!(all.get("InstanceId.1"), None);
        let request = Ec2Request::from_form(
            "Action=DescribeInstanceUtilization&Version=2016-11-15&InstanceId.1=i-9",
        )
        .unwrap();
        assert_eq!(request.action(), "DescribeInstanceUtilization");
        assert_eq!(
            request,
            Ec2Request::DescribeInstanceUtilization(DescribeInstanceUtilizationRequest {
                instance_ids: vec!["i-9".into()],
            })
        );
        assert_eq!(
            Ec2Request::from_params(&request.to_params()).unwrap(),
            request
        );
        let err = Ec2Request::from_form(
            "Action=DescribeInstanceUtilization&Version=2016-11-15&MaxResults=5",
        )
        .unwrap_err();
        assert_eq!(err, WireError::UnknownParameter("MaxResults".into()));
    }

    #[test]
    fn dispatch_by_action() {
        let request = Ec2Request::TerminateInstances(TerminateInstancesRequest {
            instance_ids: vec!["i-1".into()],
        });
        let parsed = Ec2Request::from_form(&request.to_params().to_form()).unwrap();
        assert_eq!(parsed, request);
        assert_eq!(parsed.action(), "TerminateInstances");
    }

    #[test]
    fn bad_requests_are_refused_with_ec2_codes() {
        let err =
            Ec2Request::from_form("Action=FrobnicateInstances&Version=2016-11-15").unwrap_err();
        assert_eq!(err.code(), "InvalidAction");
        let err = Ec2Request::from_form("Version=2016-11-15").unwrap_err();
        assert_eq!(err.code(), "MissingParameter");
        let err =
            Ec2Request::from_form("Action=RunInstances&Version=2016-11-15&MinCount=1&MaxCount=1")
                .unwrap_err();
        assert_eq!(err, WireError::MissingParameter("ImageId".into()));
        let err = Ec2Request::from_form(
            "Action=RunInstances&Version=2016-11-15&ImageId=ami-1&MinCount=x&MaxCount=1",
        )
        .unwrap_err();
        assert_eq!(err.code(), "InvalidParameterValue");
        let err = Ec2Request::from_form(
            "Action=RunInstances&Version=2016-11-15&ImageId=ami-1&MinCount=1&MaxCount=1&UserData=!!!",
        )
        .unwrap_err();
        assert_eq!(err.code(), "InvalidUserData.Malformed");
        let err = Ec2Request::from_form(
            "Action=TerminateInstances&Version=2016-11-15&InstanceId.1=i-1&DryRun=true",
        )
        .unwrap_err();
        assert_eq!(err, WireError::UnknownParameter("DryRun".into()));
        let err =
            Ec2Request::from_form("Action=TerminateInstances&Version=2014-01-01&InstanceId.1=i-1")
                .unwrap_err();
        assert_eq!(err.code(), "InvalidParameterValue");
        let xml = err.to_response("req-1").to_xml();
        assert!(xml.contains("<Code>InvalidParameterValue</Code>"), "{xml}");
    }

    #[test]
    fn run_instances_debug_redacts_user_data() {
        let debug = format!("{:?}", full_run_instances());
        assert!(debug.contains("UserData(<24 bytes redacted>)"), "{debug}");
        assert!(!debug.contains("echo"), "{debug}");
    }
}
