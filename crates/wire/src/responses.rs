//! The responses to the actions in `crate::requests`, each to XML (what a
//! server sends) and from XML (what a client reads, with `roxmltree`).
//!
//! Only the fields endstate uses are modelled; parsing ignores the rest
//! (moto and EC2 send dozens more per instance). Writing emits EC2's element
//! names and nesting so that the aws CLI and AWS SDKs can read our server.

use std::collections::BTreeMap;

use base64::Engine as _;
use roxmltree::Node;

use crate::error::WireError;
use crate::requests::{InstanceMetadataOptions, Tag};
use crate::xml::{self, XmlWriter};

/// A response document: its root element, and both directions.
pub trait Response: Sized {
    /// The root element (`DescribeInstancesResponse`, ...).
    const ROOT: &'static str;

    /// The document a server sends.
    fn to_xml(&self) -> String;

    /// Parses the document a server sent.
    fn from_xml(text: &str) -> Result<Self, WireError>;
}

/// A response that lists instance state changes (TerminateInstances,
/// StopInstances, StartInstances): its struct and both directions.
macro_rules! state_change_response {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            pub request_id: Option<String>,
            pub instances: Vec<InstanceStateChange>,
        }

        impl Response for $name {
            const ROOT: &'static str = stringify!($name);

            fn to_xml(&self) -> String {
                write_state_changes(Self::ROOT, &self.request_id, &self.instances)
            }

            fn from_xml(text: &str) -> Result<Self, WireError> {
                let (request_id, instances) = read_state_changes(Self::ROOT, text)?;
                Ok(Self {
                    request_id,
                    instances,
                })
            }
        }
    };
}

/// A response that carries nothing but `<return>true</return>`: its struct
/// and both directions.
macro_rules! return_response {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            pub request_id: Option<String>,
        }

        impl Response for $name {
            const ROOT: &'static str = stringify!($name);

            fn to_xml(&self) -> String {
                write_return(Self::ROOT, &self.request_id)
            }

            fn from_xml(text: &str) -> Result<Self, WireError> {
                Ok(Self {
                    request_id: read_return(Self::ROOT, text)?,
                })
            }
        }
    };
}

/// `instanceState` / `currentState` / `previousState`: EC2's numeric code
/// and name (`0 pending`, `16 running`, `32 shutting-down`, `48 terminated`,
/// `64 stopping`, `80 stopped`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStateInfo {
    pub code: u16,
    pub name: String,
}

impl InstanceStateInfo {
    /// The state named `name` with EC2's code for it (0 for names EC2 does
    /// not define).
    pub fn named(name: &str) -> Self {
        let code = match name {
            "pending" => 0,
            "running" => 16,
            "shutting-down" => 32,
            "terminated" => 48,
            "stopping" => 64,
            "stopped" => 80,
            _ => 0,
        };
        Self {
            code,
            name: name.to_string(),
        }
    }

    fn write(&self, w: &mut XmlWriter, element: &str) {
        w.open(element);
        w.leaf("code", &self.code.to_string());
        w.leaf("name", &self.name);
        w.close(element);
    }

    fn read(node: Node<'_, '_>, element: &str) -> Result<Self, WireError> {
        let state = xml::required_child(node, element)?;
        Ok(Self {
            // The low byte is the state; the high byte is internal to EC2.
            code: xml::number::<u16>(state, "code")?.unwrap_or(0) & 0xff,
            name: xml::required_text(state, "name")?,
        })
    }
}

/// One instance as EC2 describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub instance_id: String,
    pub image_id: String,
    pub instance_type: String,
    pub state: InstanceStateInfo,
    /// `placement/availabilityZone`.
    pub availability_zone: String,
    /// ISO 8601, as EC2 writes it (`2026-11-27T15:29:14.000Z`).
    pub launch_time: String,
    pub subnet_id: Option<String>,
    pub vpc_id: Option<String>,
    pub private_ip_address: Option<String>,
    pub client_token: Option<String>,
    pub key_name: Option<String>,
    pub ami_launch_index: Option<u32>,
    pub tags: Vec<Tag>,
    pub metadata_options: Option<InstanceMetadataOptions>,
}

impl Instance {
    fn write(&self, w: &mut XmlWriter) {
        w.open("item");
        w.leaf("instanceId", &self.instance_id);
        w.leaf("imageId", &self.image_id);
        self.state.write(w, "instanceState");
        w.leaf_opt("keyName", self.key_name.as_deref());
        w.leaf_opt(
            "amiLaunchIndex",
            self.ami_launch_index.map(|i| i.to_string()).as_deref(),
        );
        w.leaf("instanceType", &self.instance_type);
        w.leaf("launchTime", &self.launch_time);
        w.open("placement");
        w.leaf("availabilityZone", &self.availability_zone);
        w.leaf("tenancy", "default");
        w.close("placement");
        w.leaf_opt("subnetId", self.subnet_id.as_deref());
        w.leaf_opt("vpcId", self.vpc_id.as_deref());
        w.leaf_opt("privateIpAddress", self.private_ip_address.as_deref());
        w.leaf_opt("clientToken", self.client_token.as_deref());
        write_tag_set(w, &self.tags);
        if let Some(m) = &self.metadata_options {
            write_metadata_options(w, "metadataOptions", "applied", m);
        }
        w.close("item");
    }

    fn read(node: Node<'_, '_>) -> Result<Self, WireError> {
        let placement = xml::required_child(node, "placement")?;
        let metadata_options = xml::child(node, "metadataOptions")
            .map(read_metadata_options)
            .transpose()?;
        Ok(Self {
            instance_id: xml::required_text(node, "instanceId")?,
            image_id: xml::text(node, "imageId").unwrap_or_default(),
            instance_type: xml::text(node, "instanceType").unwrap_or_default(),
            state: InstanceStateInfo::read(node, "instanceState")?,
            availability_zone: xml::required_text(placement, "availabilityZone")?,
            launch_time: xml::text(node, "launchTime").unwrap_or_default(),
            subnet_id: xml::text_nonempty(node, "subnetId"),
            vpc_id: xml::text_nonempty(node, "vpcId"),
            private_ip_address: xml::text_nonempty(node, "privateIpAddress"),
            client_token: xml::text_nonempty(node, "clientToken"),
            key_name: xml::text_nonempty(node, "keyName"),
            ami_launch_index: xml::number(node, "amiLaunchIndex")?,
            tags: read_tag_set(node)?,
            metadata_options,
        })
    }
}

fn write_tag_set(w: &mut XmlWriter, tags: &[Tag]) {
    if tags.is_empty() {
        w.empty("tagSet");
        return;
    }
    w.open("tagSet");
    for tag in tags {
        w.open("item");
        w.leaf("key", &tag.key);
        w.leaf("value", &tag.value);
        w.close("item");
    }
    w.close("tagSet");
}

fn read_tag_set(node: Node<'_, '_>) -> Result<Vec<Tag>, WireError> {
    xml::items(node, "tagSet")
        .map(|item| {
            Ok(Tag {
                key: xml::required_text(item, "key")?,
                value: xml::text(item, "value").unwrap_or_default(),
            })
        })
        .collect()
}

/// A reservation: the instances one RunInstances call launched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub reservation_id: String,
    pub owner_id: String,
    pub instances: Vec<Instance>,
}

impl Reservation {
    /// The reservation's own elements, without a wrapper (RunInstances puts
    /// them at the root, DescribeInstances in an `item`).
    fn write_fields(&self, w: &mut XmlWriter) {
        w.leaf("reservationId", &self.reservation_id);
        w.leaf("ownerId", &self.owner_id);
        w.empty("groupSet");
        w.open("instancesSet");
        for instance in &self.instances {
            instance.write(w);
        }
        w.close("instancesSet");
    }

    fn read(node: Node<'_, '_>) -> Result<Self, WireError> {
        Ok(Self {
            reservation_id: xml::text(node, "reservationId").unwrap_or_default(),
            owner_id: xml::text(node, "ownerId").unwrap_or_default(),
            instances: xml::items(node, "instancesSet")
                .map(Instance::read)
                .collect::<Result<_, _>>()?,
        })
    }
}

fn write_request_id(w: &mut XmlWriter, request_id: &Option<String>) {
    w.leaf_opt("requestId", request_id.as_deref());
}

fn read_request_id(root: Node<'_, '_>) -> Option<String> {
    xml::text_nonempty(root, "requestId")
}

/// RunInstances' answer: one reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInstancesResponse {
    pub request_id: Option<String>,
    pub reservation: Reservation,
}

impl Response for RunInstancesResponse {
    const ROOT: &'static str = "RunInstancesResponse";

    fn to_xml(&self) -> String {
        let mut w = XmlWriter::document();
        w.open_root(Self::ROOT);
        write_request_id(&mut w, &self.request_id);
        self.reservation.write_fields(&mut w);
        w.close(Self::ROOT);
        w.finish()
    }

    fn from_xml(text: &str) -> Result<Self, WireError> {
        let doc = xml::parse(text)?;
        let root = xml::root(&doc, Self::ROOT)?;
        Ok(Self {
            request_id: read_request_id(root),
            reservation: Reservation::read(root)?,
        })
    }
}

/// One page of DescribeInstances.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeInstancesResponse {
    pub request_id: Option<String>,
    pub reservations: Vec<Reservation>,
    pub next_token: Option<String>,
}

impl DescribeInstancesResponse {
    /// The instances of every reservation, in order.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.reservations.iter().flat_map(|r| r.instances.iter())
    }
}

impl Response for DescribeInstancesResponse {
    const ROOT: &'static str = "DescribeInstancesResponse";

    fn to_xml(&self) -> String {
        let mut w = XmlWriter::document();
        w.open_root(Self::ROOT);
        write_request_id(&mut w, &self.request_id);
        w.open("reservationSet");
        for reservation in &self.reservations {
            w.open("item");
            reservation.write_fields(&mut w);
            w.close("item");
        }
        w.close("reservationSet");
        w.leaf_opt("nextToken", self.next_token.as_deref());
        w.close(Self::ROOT);
        w.finish()
    }

    fn from_xml(text: &str) -> Result<Self, WireError> {
        let doc = xml::parse(text)?;
        let root = xml::root(&doc, Self::ROOT)?;
        Ok(Self {
            request_id: read_request_id(root),
            reservations: xml::items(root, "reservationSet")
                .map(Reservation::read)
                .collect::<Result<_, _>>()?,
            next_token: xml::text_nonempty(root, "nextToken"),
        })
    }
}

/// One instance's state change in TerminateInstances' answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStateChange {
    pub instance_id: String,
    pub current_state: InstanceStateInfo,
    pub previous_state: InstanceStateInfo,
}

state_change_response!(
    /// TerminateInstances' answer.
    TerminateInstancesResponse
);

/// Writes the answer of an action that changes instance states
/// (Terminate, Stop, Start): an `instancesSet` of state changes.
fn write_state_changes(
    root: &str,
    request_id: &Option<String>,
    changes: &[InstanceStateChange],
) -> String {
    let mut w = XmlWriter::document();
    w.open_root(root);
    write_request_id(&mut w, request_id);
    w.open("instancesSet");
    for change in changes {
        w.open("item");
        w.leaf("instanceId", &change.instance_id);
        change.current_state.write(&mut w, "currentState");
        change.previous_state.write(&mut w, "previousState");
        w.close("item");
    }
    w.close("instancesSet");
    w.close(root);
    w.finish()
}

/// Reads such an answer: its request id and state changes.
fn read_state_changes(
    root_name: &str,
    text: &str,
) -> Result<(Option<String>, Vec<InstanceStateChange>), WireError> {
    let doc = xml::parse(text)?;
    let root = xml::root(&doc, root_name)?;
    let instances = xml::items(root, "instancesSet")
        .map(|item| {
            Ok(InstanceStateChange {
                instance_id: xml::required_text(item, "instanceId")?,
                current_state: InstanceStateInfo::read(item, "currentState")?,
                previous_state: InstanceStateInfo::read(item, "previousState")?,
            })
        })
        .collect::<Result<_, WireError>>()?;
    Ok((read_request_id(root), instances))
}

state_change_response!(
    /// StopInstances' answer.
    StopInstancesResponse
);

state_change_response!(
    /// StartInstances' answer.
    StartInstancesResponse
);

return_response!(
    /// RebootInstances' answer.
    RebootInstancesResponse
);

/// One instance of DescribeInstanceStatus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    pub instance_id: String,
    pub availability_zone: String,
    pub state: InstanceStateInfo,
    /// `systemStatus/status`: `ok`, `impaired`, `initializing`,
    /// `insufficient-data` or `not-applicable`.
    pub system_status: String,
    /// `instanceStatus/status`, the same values.
    pub instance_status: String,
}

/// One page of DescribeInstanceStatus.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeInstanceStatusResponse {
    pub request_id: Option<String>,
    pub statuses: Vec<InstanceStatus>,
    pub next_token: Option<String>,
}

fn write_status_summary(w: &mut XmlWriter, element: &str, status: &str) {
    w.open(element);
    w.leaf("status", status);
    w.open("details");
    w.open("item");
    w.leaf("name", "reachability");
    // EC2 reports the check's own status as `passed`, `failed` or
    // `initializing`; `not-applicable` when the instance is not running.
    let check = match status {
        "ok" => "passed",
        "impaired" => "failed",
        other => other,
    };
    w.leaf("status", check);
    w.close("item");
    w.close("details");
    w.close(element);
}

fn read_status_summary(node: Node<'_, '_>, element: &str) -> Result<String, WireError> {
    xml::required_text(xml::required_child(node, element)?, "status")
}

impl Response for DescribeInstanceStatusResponse {
    const ROOT: &'static str = "DescribeInstanceStatusResponse";

    fn to_xml(&self) -> String {
        let mut w = XmlWriter::document();
        w.open_root(Self::ROOT);
        write_request_id(&mut w, &self.request_id);
        w.open("instanceStatusSet");
        for status in &self.statuses {
            w.open("item");
            w.leaf("instanceId", &status.instance_id);
            w.leaf("availabilityZone", &status.availability_zone);
            status.state.write(&mut w, "instanceState");
            write_status_summary(&mut w, "systemStatus", &status.system_status);
            write_status_summary(&mut w, "instanceStatus", &status.instance_status);
            w.close("item");
        }
        w.close("instanceStatusSet");
        w.leaf_opt("nextToken", self.next_token.as_deref());
        w.close(Self::ROOT);
        w.finish()
    }

    fn from_xml(text: &str) -> Result<Self, WireError> {
        let doc = xml::parse(text)?;
        let root = xml::root(&doc, Self::ROOT)?;
        let statuses = xml::items(root, "instanceStatusSet")
            .map(|item| {
                Ok(InstanceStatus {
                    instance_id: xml::required_text(item, "instanceId")?,
                    availability_zone: xml::text(item, "availabilityZone").unwrap_or_default(),
                    state: InstanceStateInfo::read(item, "instanceState")?,
                    system_status: read_status_summary(item, "systemStatus")?,
                    instance_status: read_status_summary(item, "instanceStatus")?,
                })
            })
            .collect::<Result<_, WireError>>()?;
        Ok(Self {
            request_id: read_request_id(root),
            statuses,
            next_token: xml::text_nonempty(root, "nextToken"),
        })
    }
}

/// An instance's metadata options as EC2 writes them, in `element`, with
/// `state` (`applied` on an instance, `pending` right after a change).
fn write_metadata_options(
    w: &mut XmlWriter,
    element: &str,
    state: &str,
    m: &InstanceMetadataOptions,
) {
    w.open(element);
    w.leaf("state", state);
    w.leaf_opt("httpTokens", m.http_tokens.as_deref());
    w.leaf_opt(
        "httpPutResponseHopLimit",
        m.http_put_response_hop_limit
            .map(|h| h.to_string())
            .as_deref(),
    );
    w.leaf_opt("httpEndpoint", m.http_endpoint.as_deref());
    w.leaf_opt("instanceMetadataTags", m.instance_metadata_tags.as_deref());
    w.close(element);
}

/// Reads what [`write_metadata_options`] writes (the state is not kept).
fn read_metadata_options(m: Node<'_, '_>) -> Result<InstanceMetadataOptions, WireError> {
    Ok(InstanceMetadataOptions {
        http_tokens: xml::text_nonempty(m, "httpTokens"),
        http_put_response_hop_limit: xml::number(m, "httpPutResponseHopLimit")?,
        http_endpoint: xml::text_nonempty(m, "httpEndpoint"),
        instance_metadata_tags: xml::text_nonempty(m, "instanceMetadataTags"),
    })
}

/// Writes `<requestId/><return>true</return>`, the answer of actions that
/// return nothing else.
fn write_return(root: &str, request_id: &Option<String>) -> String {
    let mut w = XmlWriter::document();
    w.open_root(root);
    write_request_id(&mut w, request_id);
    w.leaf("return", "true");
    w.close(root);
    w.finish()
}

/// Reads such an answer. `<return>` may be absent (moto omits it); a
/// `false` is an error, as the action did not take effect.
fn read_return(root_name: &str, text: &str) -> Result<Option<String>, WireError> {
    let doc = xml::parse(text)?;
    let root = xml::root(&doc, root_name)?;
    if xml::text(root, "return").is_some_and(|r| r.trim() == "false") {
        return Err(WireError::Xml(format!("<{root_name}> returned false")));
    }
    Ok(read_request_id(root))
}

return_response!(
    /// CreateTags' answer.
    CreateTagsResponse
);

return_response!(
    /// DeleteTags' answer.
    DeleteTagsResponse
);

/// One image of DescribeImages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub image_id: String,
    pub name: Option<String>,
    /// `available`, `pending`, `failed`, ...
    pub state: String,
    pub owner_id: Option<String>,
    pub architecture: Option<String>,
    pub root_device_name: Option<String>,
    pub creation_date: Option<String>,
    pub tags: Vec<Tag>,
}

/// One `blockDeviceMapping` item of an image: a device and, for an EBS
/// device, the snapshot its volumes are made from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageBlockDevice {
    pub device_name: String,
    pub snapshot_id: Option<String>,
    pub volume_size: Option<u32>,
    pub volume_type: Option<String>,
    pub delete_on_termination: Option<bool>,
}

/// DescribeImages' answer.
///
/// The images' block devices are kept by image id beside the images, not
/// in [`Image`]: `Image` is built in many places (configured images,
/// restored records, fixtures) that know nothing of devices, and an image
/// absent from the map simply has none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeImagesResponse {
    pub request_id: Option<String>,
    pub images: Vec<Image>,
    /// Image id → its `blockDeviceMapping` items, in order.
    pub block_devices: BTreeMap<String, Vec<ImageBlockDevice>>,
    pub next_token: Option<String>,
}

impl DescribeImagesResponse {
    /// The block devices of the image `image_id` (none if it has none).
    pub fn devices_of(&self, image_id: &str) -> &[ImageBlockDevice] {
        self.block_devices
            .get(image_id)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The EBS snapshot ids of the image `image_id`, in device order.
    pub fn snapshot_ids_of(&self, image_id: &str) -> Vec<String> {
        self.devices_of(image_id)
            .iter()
            .filter_map(|d| d.snapshot_id.clone())
            .collect()
    }
}

fn write_block_devices(w: &mut XmlWriter, devices: &[ImageBlockDevice]) {
    if devices.is_empty() {
        w.empty("blockDeviceMapping");
        return;
    }
    w.open("blockDeviceMapping");
    for device in devices {
        w.open("item");
        w.leaf("deviceName", &device.device_name);
        w.open("ebs");
        w.leaf_opt("snapshotId", device.snapshot_id.as_deref());
        w.leaf_opt(
            "volumeSize",
            device.volume_size.map(|s| s.to_string()).as_deref(),
        );
        w.leaf_opt(
            "deleteOnTermination",
            device
                .delete_on_termination
                .map(|d| d.to_string())
                .as_deref(),
        );
        w.leaf_opt("volumeType", device.volume_type.as_deref());
        w.close("ebs");
        w.close("item");
    }
    w.close("blockDeviceMapping");
}

/// Reads an image's `blockDeviceMapping`; an item without `ebs` (an
/// instance-store or suppressed device) has no snapshot.
fn read_block_devices(image: Node<'_, '_>) -> Result<Vec<ImageBlockDevice>, WireError> {
    xml::items(image, "blockDeviceMapping")
        .map(|item| {
            let ebs = xml::child(item, "ebs");
            let delete_on_termination = ebs
                .and_then(|e| xml::text_nonempty(e, "deleteOnTermination"))
                .map(|d| match d.trim() {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    other => Err(WireError::Xml(format!(
                        "<deleteOnTermination> of an image's block device is {other:?}, not a boolean"
                    ))),
                })
                .transpose()?;
            Ok(ImageBlockDevice {
                device_name: xml::text(item, "deviceName").unwrap_or_default(),
                snapshot_id: ebs.and_then(|e| xml::text_nonempty(e, "snapshotId")),
                volume_size: match ebs {
                    Some(e) => xml::number::<u32>(e, "volumeSize")?,
                    None => None,
                },
                volume_type: ebs.and_then(|e| xml::text_nonempty(e, "volumeType")),
                delete_on_termination,
            })
        })
        .collect()
}

impl Response for DescribeImagesResponse {
    const ROOT: &'static str = "DescribeImagesResponse";

    fn to_xml(&self) -> String {
        let mut w = XmlWriter::document();
        w.open_root(Self::ROOT);
        write_request_id(&mut w, &self.request_id);
        w.open("imagesSet");
        for image in &self.images {
            w.open("item");
            w.leaf("imageId", &image.image_id);
            w.leaf("imageState", &image.state);
            w.leaf_opt("imageOwnerId", image.owner_id.as_deref());
            w.leaf_opt("creationDate", image.creation_date.as_deref());
            w.leaf_opt("architecture", image.architecture.as_deref());
            w.leaf("imageType", "machine");
            w.leaf_opt("name", image.name.as_deref());
            w.leaf("rootDeviceType", "ebs");
            w.leaf_opt("rootDeviceName", image.root_device_name.as_deref());
            write_block_devices(&mut w, self.devices_of(&image.image_id));
            write_tag_set(&mut w, &image.tags);
            w.close("item");
        }
        w.close("imagesSet");
        w.leaf_opt("nextToken", self.next_token.as_deref());
        w.close(Self::ROOT);
        w.finish()
    }

    fn from_xml(text: &str) -> Result<Self, WireError> {
        let doc = xml::parse(text)?;
        let root = xml::root(&doc, Self::ROOT)?;
        let mut block_devices = BTreeMap::new();
        let images = xml::items(root, "imagesSet")
            .map(|item| {
                let devices = read_block_devices(item)?;
                let image_id = xml::required_text(item, "imageId")?;
                if !devices.is_empty() {
                    block_devices.insert(image_id, devices);
                }
                Ok(Image {
                    image_id: xml::required_text(item, "imageId")?,
                    name: xml::text_nonempty(item, "name"),
                    state: xml::text(item, "imageState").unwrap_or_default(),
                    owner_id: xml::text_nonempty(item, "imageOwnerId"),
                    architecture: xml::text_nonempty(item, "architecture"),
                    root_device_name: xml::text_nonempty(item, "rootDeviceName"),
                    creation_date: xml::text_nonempty(item, "creationDate"),
                    tags: read_tag_set(item)?,
                })
            })
            .collect::<Result<_, WireError>>()?;
        Ok(Self {
            request_id: read_request_id(root),
            images,
            block_devices,
            next_token: xml::text_nonempty(root, "nextToken"),
        })
    }
}

/// One zone of DescribeAvailabilityZones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvailabilityZone {
    pub zone_name: String,
    pub zone_id: Option<String>,
    /// `available`, `impaired`, `unavailable`, ...
    pub state: String,
    pub region_name: String,
}

/// DescribeAvailabilityZones' answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeAvailabilityZonesResponse {
    pub request_id: Option<String>,
    pub zones: Vec<AvailabilityZone>,
}

impl Response for DescribeAvailabilityZonesResponse {
    const ROOT: &'static str = "DescribeAvailabilityZonesResponse";

    fn to_xml(&self) -> String {
        let mut w = XmlWriter::document();
        w.open_root(Self::ROOT);
        write_request_id(&mut w, &self.request_id);
        w.open("availabilityZoneInfo");
        for zone in &self.zones {
            w.open("item");
            w.leaf("zoneName", &zone.zone_name);
            w.leaf("zoneState", &zone.state);
            w.leaf("regionName", &zone.region_name);
            w.leaf_opt("zoneId", zone.zone_id.as_deref());
            w.leaf("zoneType", "availability-zone");
            w.empty("messageSet");
            w.close("item");
        }
        w.close("availabilityZoneInfo");
        w.close(Self::ROOT);
        w.finish()
    }

    fn from_xml(text: &str) -> Result<Self, WireError> {
        let doc = xml::parse(text)?;
        let root = xml::root(&doc, Self::ROOT)?;
        let zones = xml::items(root, "availabilityZoneInfo")
            .map(|item| {
                Ok(AvailabilityZone {
                    zone_name: xml::required_text(item, "zoneName")?,
                    zone_id: xml::text_nonempty(item, "zoneId"),
                    state: xml::text(item, "zoneState").unwrap_or_default(),
                    region_name: xml::text(item, "regionName").unwrap_or_default(),
                })
            })
            .collect::<Result<_, WireError>>()?;
        Ok(Self {
            request_id: read_request_id(root),
            zones,
        })
    }
}

/// `pub struct $name { request_id, $id, timestamp, output }`, its
/// `decoded_output` and its `Response`: an action that answers a
/// console-like output (base64 of at most the last 64 KiB) of the
/// resource `$id` (`<$tag>`).
macro_rules! output_response {
    ($(#[$doc:meta])* $name:ident, $id:ident, $tag:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            pub request_id: Option<String>,
            pub $id: String,
            /// When the output was last updated (ISO 8601).
            pub timestamp: Option<String>,
            /// Base64; `None` when nothing was written yet.
            pub output: Option<String>,
        }

        impl $name {
            /// The output bytes, decoded from base64 (line breaks
            /// tolerated); empty when nothing was written yet.
            pub fn decoded_output(&self) -> Result<Vec<u8>, WireError> {
                decode_output(self.output.as_deref(), Self::ROOT)
            }
        }

        impl Response for $name {
            const ROOT: &'static str = stringify!($name);

            fn to_xml(&self) -> String {
                let mut w = XmlWriter::document();
                w.open_root(Self::ROOT);
                write_request_id(&mut w, &self.request_id);
                w.leaf($tag, &self.$id);
                w.leaf_opt("timestamp", self.timestamp.as_deref());
                w.leaf_opt("output", self.output.as_deref());
                w.close(Self::ROOT);
                w.finish()
            }

            fn from_xml(text: &str) -> Result<Self, WireError> {
                let doc = xml::parse(text)?;
                let root = xml::root(&doc, Self::ROOT)?;
                Ok(Self {
                    request_id: read_request_id(root),
                    $id: xml::required_text(root, $tag)?,
                    timestamp: xml::text_nonempty(root, "timestamp"),
                    output: xml::text_nonempty(root, "output"),
                })
            }
        }
    };
}

output_response!(
    /// GetConsoleOutput's answer: the console text as EC2 sends it.
    GetConsoleOutputResponse,
    instance_id,
    "instanceId"
);

output_response!(
    /// GetBakeOutput's answer (endstate's extension, not EC2's; see
    /// `GetBakeOutputRequest`): a bake's output as GetConsoleOutput gives
    /// an instance's.
    GetBakeOutputResponse,
    image_id,
    "imageId"
);

/// An `<output>` element's bytes: base64 with line breaks tolerated;
/// empty when there is none.
fn decode_output(output: Option<&str>, root: &str) -> Result<Vec<u8>, WireError> {
    let Some(output) = output else {
        return Ok(Vec::new());
    };
    let compact: String = output
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| WireError::Xml(format!("<output> of {root} is not base64: {e}")))
}

/// One instance of DescribeInstanceUtilization's answer (endstate's
/// extension, not EC2's): its CPU over the last sampling window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InstanceUtilization {
    pub instance_id: String,
    /// Percent of one core over the window: one busy thread reads about
    /// 100, two about 200.
    pub cpu_utilization: f64,
    /// CPU seconds of the instance's processes as far as the cloud has
    /// seen them (what they had used when it first sampled them included).
    pub cpu_seconds: f64,
    /// The window's length in (wall) seconds.
    pub window_seconds: f64,
    /// When the window ended (RFC 3339).
    pub sampled_at: String,
}

/// DescribeInstanceUtilization's answer (endstate's extension, not EC2's;
/// see `DescribeInstanceUtilizationRequest`). Instances not sampled yet
/// are absent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DescribeInstanceUtilizationResponse {
    pub request_id: Option<String>,
    pub instances: Vec<InstanceUtilization>,
}

impl Response for DescribeInstanceUtilizationResponse {
    const ROOT: &'static str = "DescribeInstanceUtilizationResponse";

    fn to_xml(&self) -> String {
        let mut w = XmlWriter::document();
        w.open_root(Self::ROOT);
        write_request_id(&mut w, &self.request_id);
        w.open("instanceUtilizationSet");
        for i in &self.instances {
            w.open("item");
            w.leaf("instanceId", &i.instance_id);
            w.leaf("cpuUtilization", &i.cpu_utilization.to_string());
            w.leaf("cpuSeconds", &i.cpu_seconds.to_string());
            w.leaf("windowSeconds", &i.window_seconds.to_string());
            w.leaf("sampledAt", &i.sampled_at);
            w.close("item");
        }
        w.close("instanceUtilizationSet");
        w.close(Self::ROOT);
        w.finish()
    }

    fn from_xml(text: &str) -> Result<Self, WireError> {
        let doc = xml::parse(text)?;
        let root = xml::root(&doc, Self::ROOT)?;
        let number = |item: Node<'_, '_>, name: &str| -> Result<f64, WireError> {
            xml::number::<f64>(item, name)?.ok_or_else(|| {
                WireError::Xml(format!("<item> of instanceUtilizationSet has no <{name}>"))
            })
        };
        let instances = xml::items(root, "instanceUtilizationSet")
            .map(|item| {
                Ok(InstanceUtilization {
                    instance_id: xml::required_text(item, "instanceId")?,
                    cpu_utilization: number(item, "cpuUtilization")?,
                    cpu_seconds: number(item, "cpuSeconds")?,
                    window_seconds: number(item, "windowSeconds")?,
                    sampled_at: xml::required_text(item, "sampledAt")?,
                })
            })
            .collect::<Result<_, WireError>>()?;
        Ok(Self {
            request_id: read_request_id(root),
            instances,
        })
    }
}

/// `pub struct $name { request_id, image_id }` and its `Response`: an
/// action whose answer is the id of the image it made.
macro_rules! image_id_response {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            pub request_id: Option<String>,
            pub image_id: String,
        }

        impl Response for $name {
            const ROOT: &'static str = stringify!($name);

            fn to_xml(&self) -> String {
                let mut w = XmlWriter::document();
                w.open_root(Self::ROOT);
                write_request_id(&mut w, &self.request_id);
                w.leaf("imageId", &self.image_id);
                w.close(Self::ROOT);
                w.finish()
            }

            fn from_xml(text: &str) -> Result<Self, WireError> {
                let doc = xml::parse(text)?;
                let root = xml::root(&doc, Self::ROOT)?;
                Ok(Self {
                    request_id: read_request_id(root),
                    image_id: xml::required_text(root, "imageId")?,
                })
            }
        }
    };
}

image_id_response!(
    /// CreateImage's answer.
    CreateImageResponse
);

image_id_response!(
    /// BakeImage's answer (endstate's extension, not EC2's): the new
    /// image, `pending` until the bake's script ended.
    BakeImageResponse
);

return_response!(
    /// DeregisterImage's answer.
    DeregisterImageResponse
);

return_response!(
    /// DeleteSnapshot's answer.
    DeleteSnapshotResponse
);

/// ModifyInstanceMetadataOptions' answer: the options as they now are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModifyInstanceMetadataOptionsResponse {
    pub request_id: Option<String>,
    pub instance_id: String,
    pub options: InstanceMetadataOptions,
}

impl Response for ModifyInstanceMetadataOptionsResponse {
    const ROOT: &'static str = "ModifyInstanceMetadataOptionsResponse";

    fn to_xml(&self) -> String {
        let mut w = XmlWriter::document();
        w.open_root(Self::ROOT);
        write_request_id(&mut w, &self.request_id);
        w.leaf("instanceId", &self.instance_id);
        write_metadata_options(&mut w, "instanceMetadataOptions", "pending", &self.options);
        w.close(Self::ROOT);
        w.finish()
    }

    fn from_xml(text: &str) -> Result<Self, WireError> {
        let doc = xml::parse(text)?;
        let root = xml::root(&doc, Self::ROOT)?;
        Ok(Self {
            request_id: read_request_id(root),
            instance_id: xml::required_text(root, "instanceId")?,
            options: read_metadata_options(xml::required_child(root, "instanceMetadataOptions")?)?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn instance(id: &str, state: &str) -> Instance {
        Instance {
            instance_id: id.into(),
            image_id: "ami-1".into(),
            instance_type: "t3.micro".into(),
            state: InstanceStateInfo::named(state),
            availability_zone: "us-east-1a".into(),
            launch_time: "2026-11-27T15:29:14.000Z".into(),
            subnet_id: Some("subnet-1".into()),
            vpc_id: Some("vpc-1".into()),
            private_ip_address: Some("10.0.0.7".into()),
            client_token: Some("tok".into()),
            key_name: None,
            ami_launch_index: Some(0),
            tags: vec![
                Tag::new("endstate:project", "a & <b>"),
                Tag::new("empty", ""),
            ],
            metadata_options: Some(InstanceMetadataOptions {
                http_tokens: Some("required".into()),
                http_put_response_hop_limit: Some(2),
                http_endpoint: Some("enabled".into()),
                instance_metadata_tags: None,
            }),
        }
    }

    fn roundtrip<R: Response + std::fmt::Debug + PartialEq>(response: R) -> String {
        let xml = response.to_xml();
        let again = R::from_xml(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
        assert_eq!(again, response);
        xml
    }

    #[test]
    fn images_carry_their_snapshots_and_paging() {
        let image = |id: &str| Image {
            image_id: id.into(),
            name: Some(format!("bake-{id}")),
            state: "available".into(),
            owner_id: Some("123456789012".into()),
            architecture: None,
            root_device_name: Some("/dev/xvda".into()),
            creation_date: Some("2026-11-28T03:00:00.000Z".into()),
            tags: vec![Tag::new("endstate:bake", "web")],
        };
        let response = DescribeImagesResponse {
            request_id: Some("r".into()),
            images: vec![image("ami-1"), image("ami-2")],
            block_devices: BTreeMap::from([(
                "ami-1".to_string(),
                vec![
                    ImageBlockDevice {
                        device_name: "/dev/xvda".into(),
                        snapshot_id: Some("snap-1".into()),
                        volume_size: Some(8),
                        volume_type: Some("gp3".into()),
                        delete_on_termination: Some(true),
                    },
                    ImageBlockDevice {
                        device_name: "/dev/xvdb".into(),
                        snapshot_id: Some("snap-2".into()),
                        ..Default::default()
                    },
                ],
            )]),
            next_token: Some("page-2".into()),
        };
        let xml = roundtrip(response.clone());
        assert!(xml.contains("<snapshotId>snap-2</snapshotId>"), "{xml}");
        assert_eq!(response.snapshot_ids_of("ami-1"), ["snap-1", "snap-2"]);
        assert!(response.snapshot_ids_of("ami-2").is_empty());
        assert!(response.devices_of("ami-9").is_empty());
        let err = DescribeImagesResponse::from_xml(
            "<DescribeImagesResponse><imagesSet><item><imageId>ami-1</imageId>\
             <blockDeviceMapping><item><deviceName>/dev/xvda</deviceName><ebs>\
             <deleteOnTermination>maybe</deleteOnTermination></ebs></item></blockDeviceMapping>\
             </item></imagesSet></DescribeImagesResponse>",
        )
        .unwrap_err();
        assert!(err.to_string().contains("deleteOnTermination"), "{err}");
    }

    #[test]
    fn console_output_decodes_from_base64() {
        let mut response = GetConsoleOutputResponse {
            request_id: None,
            instance_id: "i-1".into(),
            timestamp: None,
            output: Some("aGVsbG8g\nd29ybGQK".into()),
        };
        assert_eq!(response.decoded_output().unwrap(), b"hello world\n");
        response.output = None;
        assert!(response.decoded_output().unwrap().is_empty());
        response.output = Some("!!".into());
        assert!(response.decoded_output().is_err());
    }

    #[test]
    fn instance_utilization_response_roundtrips() {
        let xml = roundtrip(DescribeInstanceUtilizationResponse {
            request_id: Some("r".into()),
            instances: vec![
                InstanceUtilization {
                    instance_id: "i-1".into(),
                    cpu_utilization: 12.5,
                    cpu_seconds: 3.2,
                    window_seconds: 2.0,
                    sampled_at: "2026-11-27T18:00:00Z".into(),
                },
                InstanceUtilization {
                    instance_id: "i-2".into(),
                    cpu_utilization: 199.75,
                    cpu_seconds: 0.0,
                    window_seconds: 2.013,
                    sampled_at: "2026-11-27T18:00:02Z".into(),
                },
            ],
        });
        assert!(
            xml.contains("<item><instanceId>i-1</instanceId><cpuUtilization>12.5</cpuUtilization><cpuSeconds>3.2</cpuSeconds><windowSeconds>2</windowSeconds><sampledAt>2026-11-27T18:00:00Z</sampledAt></item>"),
            "{xml}"
        );
        roundtrip(DescribeInstanceUtilizationResponse::default());
        let err = DescribeInstanceUtilizationResponse::from_xml(
            "<DescribeInstanceUtilizationResponse><instanceUtilizationSet><item>\
             <instanceId>i-1</instanceId><cpuUtilization>lots</cpuUtilization>\
             </item></instanceUtilizationSet></DescribeInstanceUtilizationResponse>",
        )
        .unwrap_err();
        assert!(err.to_string().contains("cpuUtilization"), "{err}");
    }

    #[test]
    fn image_console_and_metadata_responses_roundtrip() {
        roundtrip(GetConsoleOutputResponse {
            request_id: Some("r".into()),
            instance_id: "i-1".into(),
            timestamp: Some("2026-11-27T18:00:00.000Z".into()),
            output: Some("aGVsbG8=".into()),
        });
        roundtrip(CreateImageResponse {
            request_id: Some("r".into()),
            image_id: "ami-1".into(),
        });
        let xml = roundtrip(BakeImageResponse {
            request_id: Some("r".into()),
            image_id: "ami-2".into(),
        });
        assert!(xml.contains("<BakeImageResponse"), "{xml}");
        let bake = roundtrip(GetBakeOutputResponse {
            request_id: Some("r".into()),
            image_id: "ami-2".into(),
            timestamp: Some("2026-11-28T07:00:00.000Z".into()),
            output: Some("aGVsbG8g\nd29ybGQK".into()),
        });
        let bake = GetBakeOutputResponse::from_xml(&bake).unwrap();
        assert_eq!(bake.decoded_output().unwrap(), b"hello world\n");
        roundtrip(DeregisterImageResponse {
            request_id: Some("r".into()),
        });
        let xml = roundtrip(DeleteSnapshotResponse {
            request_id: Some("r".into()),
        });
        assert!(xml.contains("<DeleteSnapshotResponse"), "{xml}");
        roundtrip(ModifyInstanceMetadataOptionsResponse {
            request_id: None,
            instance_id: "i-1".into(),
            options: InstanceMetadataOptions {
                http_tokens: Some("required".into()),
                http_put_response_hop_limit: Some(2),
                http_endpoint: Some("enabled".into()),
                instance_metadata_tags: Some("disabled".into()),
            },
        });
    }

    #[test]
    fn responses_roundtrip_through_xml() {
        let reservation = Reservation {
            reservation_id: "r-1".into(),
            owner_id: "123456789012".into(),
            instances: vec![instance("i-1", "pending"), instance("i-2", "pending")],
        };
        let xml = roundtrip(RunInstancesResponse {
            request_id: Some("req-1".into()),
            reservation: reservation.clone(),
        });
        assert!(xml.contains("xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\""));
        roundtrip(DescribeInstancesResponse {
            request_id: Some("req-2".into()),
            reservations: vec![reservation.clone(), reservation],
            next_token: Some("next".into()),
        });
        roundtrip(DescribeInstancesResponse::default());
        roundtrip(TerminateInstancesResponse {
            request_id: Some("req-3".into()),
            instances: vec![InstanceStateChange {
                instance_id: "i-1".into(),
                current_state: InstanceStateInfo::named("shutting-down"),
                previous_state: InstanceStateInfo::named("running"),
            }],
        });
        let xml = roundtrip(CreateTagsResponse {
            request_id: Some("req-4".into()),
        });
        assert!(xml.contains("<return>true</return>"));
        roundtrip(DeleteTagsResponse {
            request_id: Some("req-5".into()),
        });
        roundtrip(DescribeImagesResponse {
            request_id: Some("req-6".into()),
            images: vec![Image {
                image_id: "ami-1".into(),
                name: Some("web-base-1".into()),
                state: "available".into(),
                owner_id: Some("123456789012".into()),
                architecture: Some("x86_64".into()),
                root_device_name: Some("/dev/xvda".into()),
                creation_date: Some("2026-11-27T15:29:14.000Z".into()),
                tags: vec![],
            }],
            ..Default::default()
        });
        roundtrip(DescribeAvailabilityZonesResponse {
            request_id: Some("req-7".into()),
            zones: vec![AvailabilityZone {
                zone_name: "us-east-1a".into(),
                zone_id: Some("use1-az6".into()),
                state: "available".into(),
                region_name: "us-east-1".into(),
            }],
        });
    }

    #[test]
    fn lifecycle_and_status_responses_roundtrip() {
        let change = InstanceStateChange {
            instance_id: "i-1".into(),
            current_state: InstanceStateInfo::named("stopping"),
            previous_state: InstanceStateInfo::named("running"),
        };
        roundtrip(StopInstancesResponse {
            request_id: Some("req-1".into()),
            instances: vec![change],
        });
        roundtrip(StartInstancesResponse {
            request_id: Some("req-2".into()),
            instances: vec![InstanceStateChange {
                instance_id: "i-1".into(),
                current_state: InstanceStateInfo::named("pending"),
                previous_state: InstanceStateInfo::named("stopped"),
            }],
        });
        let xml = roundtrip(RebootInstancesResponse {
            request_id: Some("req-3".into()),
        });
        assert!(xml.contains("<return>true</return>"));
        let xml = roundtrip(DescribeInstanceStatusResponse {
            request_id: Some("req-4".into()),
            statuses: vec![
                InstanceStatus {
                    instance_id: "i-1".into(),
                    availability_zone: "us-east-1a".into(),
                    state: InstanceStateInfo::named("running"),
                    system_status: "ok".into(),
                    instance_status: "impaired".into(),
                },
                InstanceStatus {
                    instance_id: "i-2".into(),
                    availability_zone: "us-east-1b".into(),
                    state: InstanceStateInfo::named("stopped"),
                    system_status: "not-applicable".into(),
                    instance_status: "not-applicable".into(),
                },
            ],
            next_token: Some("n".into()),
        });
        assert!(xml.contains("<status>failed</status>"), "{xml}");
        roundtrip(DescribeInstanceStatusResponse::default());
        // A stop answer is not a start answer.
        let stop = StopInstancesResponse::default().to_xml();
        assert!(StartInstancesResponse::from_xml(&stop).is_err());
    }

    #[test]
    fn return_false_is_an_error() {
        let xml = "<CreateTagsResponse><requestId>r</requestId><return>false</return></CreateTagsResponse>";
        assert!(CreateTagsResponse::from_xml(xml).is_err());
    }

    #[test]
    fn wrong_root_is_an_error() {
        let xml = DeleteTagsResponse::default().to_xml();
        assert!(CreateTagsResponse::from_xml(&xml).is_err());
    }
}
