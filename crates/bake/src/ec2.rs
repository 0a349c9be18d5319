//! [`BuildCloud`] over EC2 (AWS, moto, the built-in cloud): the launch
//! with the build settings, the instance and image states, console,
//! StopInstances, CreateImage, CreateTags, TerminateInstances, and
//! DeregisterImage followed by DeleteSnapshot of the image's snapshots;
//! and the built-in cloud's BakeImage and GetBakeOutput for volume-style
//! bakes.
//! Calls that may be repeated safely are retried a few times on a
//! throttle or a retryable error (RunInstances too: its client token makes
//! a repeat the same launch); CreateImage is not (a repeat would make a
//! second image or fail on the name).
//!
//! Also [`list_baked`], the catalog's images, and [`deregister`], an image
//! with its storage. Not here: what to call when
//! (the builder).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use endstate_model::{MetadataOptions, RootVolume};
use endstate_provider::images::{
    BakeImageRequest, CreateImageRequest, ImageFilter, ImageInfo, Images, UserData,
};
use endstate_provider::{Filter, LaunchRequest, Provider, ProviderError};

use crate::builder::BuildCloud;
use crate::catalog::{ImageRecord, RECIPE_TAG};

/// How often a retryable call is tried.
const ATTEMPTS: u32 = 5;
/// The first pause between tries; it doubles.
const FIRST_PAUSE: Duration = Duration::from_millis(200);

/// Where build instances run.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    pub instance_type: String,
    pub zone: String,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    pub iam_instance_profile: Option<String>,
    pub root_volume: Option<RootVolume>,
}

/// EC2 as a [`BuildCloud`].
pub struct Ec2BuildCloud<'a> {
    pub provider: &'a dyn Provider,
    pub images: &'a dyn Images,
    pub settings: BuildSettings,
}

/// Runs `call` until it succeeds, fails for good, or was tried
/// [`ATTEMPTS`] times; the error's text.
async fn retried<T, F, Fut>(what: &str, mut call: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    let mut pause = FIRST_PAUSE;
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(error) if attempt < ATTEMPTS && error.is_retryable() => {
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(error) => return Err(format!("{what}: {error}")),
        }
    }
}

fn record(info: ImageInfo) -> ImageRecord {
    ImageRecord {
        id: info.id,
        name: info.name,
        state: info.state,
        created: info.creation_date,
        tags: info.tags,
    }
}

/// Every image of this account that endstate baked.
pub async fn list_baked(images: &dyn Images) -> Result<Vec<ImageRecord>, String> {
    let filter = ImageFilter {
        tag_keys: vec![RECIPE_TAG.to_string()],
        ..ImageFilter::default()
    };
    let found = retried("DescribeImages", || images.describe_images_by(&filter)).await?;
    Ok(found.into_iter().map(record).collect())
}

/// The image `id`; `None` when the cloud does not know it.
async fn image(images: &dyn Images, id: &str) -> Result<Option<ImageInfo>, String> {
    let filter = ImageFilter::ids([id]);
    match images.describe_images_by(&filter).await {
        Ok(found) => Ok(found.into_iter().find(|i| i.id == id)),
        Err(error) if error.code() == Some("InvalidAMIID.NotFound") => Ok(None),
        Err(error) if error.is_retryable() => {
            retried("DescribeImages", || images.describe_images_by(&filter))
                .await
                .map(|found| found.into_iter().find(|i| i.id == id))
        }
        Err(error) => Err(format!("DescribeImages: {error}")),
    }
}

/// DeregisterImage of `image`, then DeleteSnapshot of its snapshots: the
/// image and its storage (a bake's clean-up, and retention's). An image
/// the cloud does not know is gone already.
pub async fn deregister(images: &dyn Images, image: &str) -> Result<(), String> {
    let Some(info) = self::image(images, image).await? else {
        return Ok(());
    };
    retried("DeregisterImage", || images.deregister_image(image)).await?;
    for snapshot in &info.snapshot_ids {
        retried("DeleteSnapshot", || images.delete_snapshot(snapshot)).await?;
    }
    Ok(())
}

#[async_trait]
impl BuildCloud for Ec2BuildCloud<'_> {
    async fn launch(
        &self,
        image: &str,
        user_data: &[u8],
        tags: &BTreeMap<String, String>,
        client_token: &str,
    ) -> Result<String, String> {
        let request = LaunchRequest {
            image_id: image.to_string(),
            instance_type: self.settings.instance_type.clone(),
            count: 1,
            zone: self.settings.zone.clone(),
            subnet_id: self.settings.subnet_id.clone(),
            security_group_ids: self.settings.security_group_ids.clone(),
            key_name: None,
            iam_instance_profile: self.settings.iam_instance_profile.clone(),
            root_volume: self.settings.root_volume.clone(),
            metadata: MetadataOptions::default(),
            user_data: Some(user_data.to_vec()),
            tags: tags.clone(),
            client_token: client_token.chars().take(64).collect(),
        };
        let launched = retried("RunInstances", || self.provider.run_instances(&request)).await?;
        launched
            .into_iter()
            .next()
            .map(|i| i.id)
            .ok_or_else(|| "RunInstances: no instance in the answer".to_string())
    }

    async fn instance_state(&self, instance: &str) -> Result<Option<String>, String> {
        let filters = [Filter::new("instance-id", [instance])];
        let (found, _) = retried("DescribeInstances", || {
            self.provider.describe_instances_page(&filters, None)
        })
        .await?;
        Ok(found
            .into_iter()
            .find(|i| i.id == instance)
            .map(|i| i.state.as_str().to_string()))
    }

    async fn console(&self, instance: &str) -> Result<String, String> {
        retried("GetConsoleOutput", || self.images.console_output(instance)).await
    }

    async fn stop(&self, instance: &str) -> Result<(), String> {
        let ids = [instance.to_string()];
        retried("StopInstances", || self.images.stop_instances(&ids))
            .await
            .map(drop)
    }

    async fn create_image(
        &self,
        instance: &str,
        name: &str,
        description: &str,
    ) -> Result<String, String> {
        let request = CreateImageRequest {
            instance_id: instance.to_string(),
            name: name.to_string(),
            description: Some(description.to_string()),
            no_reboot: true,
            ..CreateImageRequest::default()
        };
        self.images
            .create_image(&request)
            .await
            .map_err(|e| format!("CreateImage: {e}"))
    }

    async fn image_state(&self, image: &str) -> Result<Option<String>, String> {
        Ok(self::image(self.images, image).await?.map(|i| i.state))
    }

    async fn tag(&self, image: &str, tags: &BTreeMap<String, String>) -> Result<(), String> {
        let ids = [image.to_string()];
        retried("CreateTags", || self.provider.create_tags(&ids, tags)).await
    }

    async fn terminate(&self, instance: &str) -> Result<(), String> {
        let ids = [instance.to_string()];
        retried("TerminateInstances", || {
            self.provider.terminate_instances(&ids)
        })
        .await
        .map(drop)
    }

    async fn deregister(&self, image: &str) -> Result<(), String> {
        deregister(self.images, image).await
    }

    /// Not retried: a repeat would be a second bake (or fail on the name).
    async fn bake_volume(
        &self,
        image: &str,
        user_data: &[u8],
        name: &str,
        description: &str,
    ) -> Result<String, String> {
        let request = BakeImageRequest {
            source_image_id: image.to_string(),
            name: name.to_string(),
            description: Some(description.to_string()),
            user_data: UserData(user_data.to_vec()),
        };
        self.images.bake_image(&request).await.map_err(|e| {
            // EC2 answers `InvalidAction`; moto, an HTML page (no EC2 code).
            let unknown_action = e.is_unsupported()
                || matches!(e.code(), Some(code) if code == "InvalidAction" || code.starts_with("Http"));
            if unknown_action {
                format!(
                    "BakeImage: {e}; volume-style bakes need the built-in cloud's process backend (use builder: instance elsewhere)"
                )
            } else {
                format!("BakeImage: {e}")
            }
        })
    }

    async fn bake_output(&self, image: &str) -> Result<String, String> {
        retried("GetBakeOutput", || self.images.bake_output(image)).await
    }
}
