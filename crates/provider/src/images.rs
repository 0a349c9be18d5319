//! The image half of the provider interface: the EC2 calls an
//! instance-style bake makes (stop the build instance, read its console,
//! CreateImage, wait on DescribeImages, DeregisterImage and DeleteSnapshot
//! for retention) as the [`Images`] trait, implemented by
//! [`Ec2Client`] for any EC2-compatible endpoint (AWS, moto, the built-in
//! cloud).
//!
//! Like [`crate::Provider`]: one call is one request (DescribeImages'
//! paging aside), no retries, no rate limits; errors keep EC2's code, so
//! `is_throttle`, `is_retryable` and `is_not_found` classify them. Not
//! here: the bake's order of calls, its waiting and its journal (the bake
//! engine's), and launching or terminating (`Provider`'s).

use std::collections::BTreeMap;

use async_trait::async_trait;
pub use endstate_wire::{BakeImageRequest, UserData};
use endstate_wire::{BakeImageResponse, GetBakeOutputRequest, GetBakeOutputResponse};
use endstate_wire::{
    DeleteSnapshotRequest, DeleteSnapshotResponse, DeregisterImageRequest, DeregisterImageResponse,
    DescribeImagesRequest, DescribeImagesResponse, GetConsoleOutputRequest,
    GetConsoleOutputResponse, StopInstancesRequest, StopInstancesResponse, Tag, TagSpecification,
};

use crate::ec2::Ec2Client;
use crate::{InstanceState, Operation, ProviderError};

/// DescribeImages page size when no ids are named: EC2's maximum.
const IMAGE_PAGE_SIZE: u32 = 1000;

/// What CreateImage is asked: an image of `instance_id`, it and its
/// snapshots tagged at creation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateImageRequest {
    pub instance_id: String,
    /// 3–128 characters, unique among the account's images in the region.
    pub name: String,
    pub description: Option<String>,
    /// `false`: EC2 shuts the instance down to image it, then starts it
    /// again. A bake stops the instance first, so either is consistent.
    pub no_reboot: bool,
    /// The image's tags.
    pub tags: BTreeMap<String, String>,
    /// The tags of the snapshots EC2 makes for it; none sends no snapshot
    /// tag specification (moto 5.2.5 fails CreateImage with one: it has not
    /// implemented them).
    pub snapshot_tags: BTreeMap<String, String>,
}

/// Which images DescribeImages lists. Every field narrows the list; the
/// empty filter means "the account's own images" (`Owner=self`), never
/// every public image, which is what EC2 answers without ids or owners.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageFilter {
    /// Image ids; when given, EC2 answers for exactly these (an unknown id
    /// is an `InvalidAMIID.NotFound` error) and no owner is implied.
    pub ids: Vec<String>,
    /// Account ids or `self`; empty means `self` unless `ids` are given.
    pub owners: Vec<String>,
    /// `name` filter values (EC2's `*` and `?` wildcards allowed).
    pub names: Vec<String>,
    /// `tag:KEY` = value, each one more condition.
    pub tags: BTreeMap<String, String>,
    /// `tag-key`: images carrying any of these keys, whatever the value.
    pub tag_keys: Vec<String>,
    /// `state`: `available`, `pending`, `failed`, ...
    pub states: Vec<String>,
}

impl ImageFilter {
    /// The account's own images carrying `key` = `value`.
    pub fn tagged(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            tags: BTreeMap::from([(key.into(), value.into())]),
            ..Self::default()
        }
    }

    /// The images `ids`.
    pub fn ids(ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            ids: ids.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// The DescribeImages request for this filter (the first page).
    fn to_request(&self) -> DescribeImagesRequest {
        let owners = if self.owners.is_empty() && self.ids.is_empty() {
            vec!["self".to_string()]
        } else {
            self.owners.clone()
        };
        let mut filters = Vec::new();
        let mut add = |name: String, values: &[String]| {
            if !values.is_empty() {
                filters.push(endstate_wire::Filter {
                    name,
                    values: values.to_vec(),
                });
            }
        };
        add("name".to_string(), &self.names);
        add("state".to_string(), &self.states);
        add("tag-key".to_string(), &self.tag_keys);
        for (key, value) in &self.tags {
            add(format!("tag:{key}"), std::slice::from_ref(value));
        }
        DescribeImagesRequest {
            image_ids: self.ids.clone(),
            owners,
            filters,
            // EC2 refuses MaxResults together with ImageIds.
            max_results: self.ids.is_empty().then_some(IMAGE_PAGE_SIZE),
            next_token: None,
        }
    }
}

/// An image as a bake and its retention need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
    pub name: Option<String>,
    /// `pending`, `available`, `failed`, ...
    pub state: String,
    /// ISO 8601, as EC2 reports it.
    pub creation_date: Option<String>,
    pub owner_id: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// The EBS snapshots of its block devices, in device order: what
    /// retention deletes after deregistering it. The built-in cloud's
    /// images have none (they are layers, freed by DeregisterImage).
    pub snapshot_ids: Vec<String>,
}

/// The image pipeline's EC2 calls.
#[async_trait]
pub trait Images: Send + Sync {
    /// StopInstances; returns each id's new state (`stopping`, or
    /// `stopped` for an instance already stopped).
    async fn stop_instances(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, InstanceState)>, ProviderError>;

    /// The instance's console output as text (invalid UTF-8 replaced),
    /// the latest the endpoint offers: `Latest=true`, and without it where
    /// the endpoint refuses it as unsupported. Empty when nothing was
    /// printed yet.
    async fn console_output(&self, id: &str) -> Result<String, ProviderError>;

    /// CreateImage; returns the new image's id (it starts `pending`).
    async fn create_image(&self, request: &CreateImageRequest) -> Result<String, ProviderError>;

    /// DescribeImages for `filter`, every page.
    async fn describe_images_by(
        &self,
        filter: &ImageFilter,
    ) -> Result<Vec<ImageInfo>, ProviderError>;

    /// DeregisterImage. Its snapshots stay until deleted.
    async fn deregister_image(&self, id: &str) -> Result<(), ProviderError>;

    /// DeleteSnapshot. EC2 refuses (`InvalidSnapshot.InUse`) while a
    /// registered image uses the snapshot: deregister first.
    async fn delete_snapshot(&self, id: &str) -> Result<(), ProviderError>;

    /// BakeImage, endstate's extension action (the built-in cloud's
    /// process backend; EC2 answers `InvalidAction`): a volume-style bake
    /// of `request.user_data` on a copy of the source image's root.
    /// Returns the new image's id; it is `pending` until the script ended,
    /// then `available` or `failed`.
    async fn bake_image(&self, request: &BakeImageRequest) -> Result<String, ProviderError>;

    /// GetBakeOutput, endstate's extension action: the output of a
    /// [`Images::bake_image`] so far, as text (invalid UTF-8 replaced).
    async fn bake_output(&self, image_id: &str) -> Result<String, ProviderError>;
}

/// The wire request for a provider-level [`CreateImageRequest`]: a tag
/// specification for the image and one for its snapshots, each only if it
/// has tags.
pub fn create_image_request(request: &CreateImageRequest) -> endstate_wire::CreateImageRequest {
    let tag_specifications = [
        ("image", &request.tags),
        ("snapshot", &request.snapshot_tags),
    ]
    .into_iter()
    .filter(|(_, tags)| !tags.is_empty())
    .map(|(resource_type, tags)| TagSpecification {
        resource_type: resource_type.to_string(),
        tags: tags.iter().map(|(k, v)| Tag::new(k, v)).collect(),
    })
    .collect();
    endstate_wire::CreateImageRequest {
        instance_id: request.instance_id.clone(),
        name: request.name.clone(),
        description: request.description.clone(),
        no_reboot: Some(request.no_reboot),
        tag_specifications,
    }
}

/// The images of one DescribeImages page, with their snapshot ids.
fn image_infos(response: &DescribeImagesResponse) -> Vec<ImageInfo> {
    response
        .images
        .iter()
        .map(|image| ImageInfo {
            id: image.image_id.clone(),
            name: image.name.clone(),
            state: image.state.clone(),
            creation_date: image.creation_date.clone(),
            owner_id: image.owner_id.clone(),
            tags: image
                .tags
                .iter()
                .map(|t| (t.key.clone(), t.value.clone()))
                .collect(),
            snapshot_ids: response.snapshot_ids_of(&image.image_id),
        })
        .collect()
}

/// Whether GetConsoleOutput's error may be a refusal of `Latest=true`.
fn refuses_latest(error: &ProviderError) -> bool {
    error.is_unsupported()
        || matches!(
            error,
            ProviderError::Api {
                status: 400..=499,
                ..
            }
        ) && !error.is_not_found()
            && !error.is_throttle()
            && !matches!(error.code(), Some(code) if code.starts_with("InvalidInstanceID"))
}

fn parse_state(operation: Operation, name: &str) -> Result<InstanceState, ProviderError> {
    InstanceState::parse(name).ok_or_else(|| ProviderError::Decode {
        operation,
        message: format!("unknown instance state {name:?}"),
    })
}

impl Ec2Client {
    async fn get_console_output(&self, id: &str, latest: bool) -> Result<String, ProviderError> {
        let operation = Operation::GetConsoleOutput;
        let request = GetConsoleOutputRequest {
            instance_id: id.to_string(),
            latest: latest.then_some(true),
        };
        let response: GetConsoleOutputResponse = self.call(operation, &request).await?;
        output_text(operation, response.decoded_output())
    }
}

/// A decoded console or bake output as text (invalid UTF-8 replaced).
fn output_text(
    operation: Operation,
    decoded: Result<Vec<u8>, endstate_wire::WireError>,
) -> Result<String, ProviderError> {
    let bytes = decoded.map_err(|e| ProviderError::Decode {
        operation,
        message: e.to_string(),
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[async_trait]
impl Images for Ec2Client {
    async fn stop_instances(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, InstanceState)>, ProviderError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let operation = Operation::StopInstances;
        let request = StopInstancesRequest {
            instance_ids: ids.to_vec(),
            force: None,
        };
        let response: StopInstancesResponse = self.call(operation, &request).await?;
        response
            .instances
            .into_iter()
            .map(|change| {
                Ok((
                    change.instance_id,
                    parse_state(operation, &change.current_state.name)?,
                ))
            })
            .collect()
    }

    async fn console_output(&self, id: &str) -> Result<String, ProviderError> {
        match self.get_console_output(id, true).await {
            // EC2 serves the latest output on Nitro instances only; on
            // others it refuses `Latest` (a client error whose code its
            // documentation does not name), and the buffered output is
            // what there is. An unknown instance or a throttle is no
            // reason to ask again at once.
            Err(e) if refuses_latest(&e) => self.get_console_output(id, false).await,
            other => other,
        }
    }

    async fn create_image(&self, request: &CreateImageRequest) -> Result<String, ProviderError> {
        let response: endstate_wire::CreateImageResponse = self
            .call(Operation::CreateImage, &create_image_request(request))
            .await?;
        Ok(response.image_id)
    }

    async fn describe_images_by(
        &self,
        filter: &ImageFilter,
    ) -> Result<Vec<ImageInfo>, ProviderError> {
        let mut request = filter.to_request();
        let mut images = Vec::new();
        loop {
            let response: DescribeImagesResponse =
                self.call(Operation::DescribeImages, &request).await?;
            images.extend(image_infos(&response));
            match response.next_token {
                Some(token) if !token.is_empty() && request.image_ids.is_empty() => {
                    request.next_token = Some(token);
                }
                _ => return Ok(images),
            }
        }
    }

    async fn deregister_image(&self, id: &str) -> Result<(), ProviderError> {
        let request = DeregisterImageRequest {
            image_id: id.to_string(),
        };
        let _: DeregisterImageResponse = self.call(Operation::DeregisterImage, &request).await?;
        Ok(())
    }

    async fn delete_snapshot(&self, id: &str) -> Result<(), ProviderError> {
        let request = DeleteSnapshotRequest {
            snapshot_id: id.to_string(),
        };
        let _: DeleteSnapshotResponse = self.call(Operation::DeleteSnapshot, &request).await?;
        Ok(())
    }

    async fn bake_image(&self, request: &BakeImageRequest) -> Result<String, ProviderError> {
        let response: BakeImageResponse = self.call(Operation::BakeImage, request).await?;
        Ok(response.image_id)
    }

    async fn bake_output(&self, image_id: &str) -> Result<String, ProviderError> {
        let operation = Operation::GetBakeOutput;
        let request = GetBakeOutputRequest {
            image_id: image_id.to_string(),
        };
        let response: GetBakeOutputResponse = self.call(operation, &request).await?;
        output_text(operation, response.decoded_output())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use endstate_wire::Request as _;

    use super::*;

    #[test]
    fn create_image_tags_the_image_and_its_snapshots() {
        let request = CreateImageRequest {
            instance_id: "i-1".into(),
            name: "web-1".into(),
            description: Some("baked".into()),
            no_reboot: true,
            tags: BTreeMap::from([("endstate:bake".to_string(), "web".to_string())]),
            snapshot_tags: BTreeMap::from([("endstate:bake".to_string(), "web".to_string())]),
        };
        let params = create_image_request(&request).to_params();
        for (name, value) in [
            ("Action", "CreateImage"),
            ("InstanceId", "i-1"),
            ("Name", "web-1"),
            ("Description", "baked"),
            ("NoReboot", "true"),
            ("TagSpecification.1.ResourceType", "image"),
            ("TagSpecification.2.ResourceType", "snapshot"),
            ("TagSpecification.2.Tag.1.Key", "endstate:bake"),
            ("TagSpecification.2.Tag.1.Value", "web"),
        ] {
            assert_eq!(params.get(name), Some(value), "{name}");
        }
        let image_only = create_image_request(&CreateImageRequest {
            snapshot_tags: BTreeMap::new(),
            ..request.clone()
        });
        assert_eq!(image_only.tag_specifications.len(), 1);
        assert_eq!(image_only.tag_specifications[0].resource_type, "image");
        let untagged = create_image_request(&CreateImageRequest {
            tags: BTreeMap::new(),
            snapshot_tags: BTreeMap::new(),
            ..request
        });
        assert!(untagged.tag_specifications.is_empty());
    }

    #[test]
    fn image_filters_default_to_the_accounts_own_images() {
        let request = ImageFilter::default().to_request();
        assert_eq!(request.owners, ["self"]);
        assert_eq!(request.max_results, Some(1000));
        assert!(request.filters.is_empty());

        let mut filter = ImageFilter::tagged("endstate:bake", "web");
        filter.tag_keys = vec!["endstate:parent".into()];
        filter.names = vec!["web-*".into()];
        filter.states = vec!["available".into()];
        let params = filter.to_request().to_params();
        for (name, value) in [
            ("Owner.1", "self"),
            ("Filter.1.Name", "name"),
            ("Filter.1.Value.1", "web-*"),
            ("Filter.2.Name", "state"),
            ("Filter.3.Name", "tag-key"),
            ("Filter.3.Value.1", "endstate:parent"),
            ("Filter.4.Name", "tag:endstate:bake"),
            ("Filter.4.Value.1", "web"),
        ] {
            assert_eq!(params.get(name), Some(value), "{name}");
        }

        // Ids alone: no owner implied, no MaxResults (EC2 refuses it with ids).
        let request = ImageFilter::ids(["ami-1"]).to_request();
        assert!(request.owners.is_empty());
        assert_eq!(request.max_results, None);
        assert_eq!(request.image_ids, ["ami-1"]);
    }

    #[test]
    fn not_found_codes_are_recognised() {
        let error = |code: &str| ProviderError::Api {
            operation: Operation::DeleteSnapshot,
            status: 400,
            code: code.to_string(),
            message: String::new(),
            request_id: None,
        };
        assert!(error("InvalidSnapshot.NotFound").is_not_found());
        assert!(error("InvalidAMIID.NotFound").is_not_found());
        assert!(!error("InvalidSnapshot.InUse").is_not_found());
        assert!(!error("InvalidSnapshot.InUse").is_retryable());
        assert_eq!(Operation::DeleteSnapshot.action(), "DeleteSnapshot");
        let refused = |status: u16, code: &str| {
            refuses_latest(&ProviderError::Api {
                operation: Operation::GetConsoleOutput,
                status,
                code: code.to_string(),
                message: String::new(),
                request_id: None,
            })
        };
        assert!(refused(400, "UnsupportedOperation"));
        assert!(refused(400, "InvalidParameterCombination"));
        assert!(!refused(400, "InvalidInstanceID.NotFound"));
        assert!(!refused(400, "InvalidInstanceID.Malformed"));
        assert!(!refused(503, "RequestLimitExceeded"));
        assert!(!refused(500, "InternalError"));
        assert_eq!(Operation::StopInstances.action(), "StopInstances");
    }
}
