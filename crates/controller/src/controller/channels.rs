//! Image channels in `endstate serve`: a group that names its image as
//! `RECIPE@CHANNEL` runs the image at the channel's head. Every spec the
//! controller adopts (file, API) has its channels resolved first, and the
//! heads are looked at again every `channel_poll`: when one moved, the
//! spec with the new images is adopted — the group's generation changed,
//! so its instances are replaced, through its rollout strategy when it
//! has one. A spec naming a channel without a head is refused, naming the
//! channel, and the spec in force stays.
//!
//! Not here: where heads come from ([`ChannelHeads`], implemented by the
//! binary over the bake's image catalog).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use endstate_model::recipe::ChannelRef;
use endstate_model::Spec;
use serde_json::json;

use super::Inner;
use crate::events::Record;

/// The images at the head of image channels.
#[async_trait]
pub trait ChannelHeads: Send + Sync + std::fmt::Debug {
    /// The head of each of `channels` that has one.
    async fn heads(&self, channels: &[ChannelRef]) -> Result<BTreeMap<ChannelRef, String>, String>;
}

/// `spec` with its groups' channels resolved by `heads`.
pub(super) async fn resolve(
    spec: Spec,
    heads: Option<&Arc<dyn ChannelHeads>>,
) -> Result<Spec, String> {
    let channels = spec.image_channels();
    if channels.is_empty() {
        return Ok(spec);
    }
    let Some(heads) = heads else {
        return Err(format!(
            "the spec names image channels ({}) and this controller has no image catalog to find their heads in",
            channels
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let found = heads
        .heads(&channels)
        .await
        .map_err(|e| format!("reading the image channels' heads: {e}"))?;
    let mut spec = spec;
    spec.resolve_channels(&found).map_err(|missing| {
        format!(
            "image {missing}: channel {} of recipe {} has no image yet; run: endstate bake {}",
            missing.channel, missing.recipe, missing.recipe
        )
    })?;
    Ok(spec)
}

impl Inner {
    /// An `image_channel_moved` event for each group of `new` that names
    /// the same channel as in `current` and gets another image: whether
    /// the head's move was seen by the channels' watch or came with a
    /// spec adopted after it.
    pub(super) async fn record_moved_channels(&self, current: &Spec, new: &Spec) {
        for group in &new.groups {
            let Some(channel) = &group.image_channel else {
                continue;
            };
            let Some(old) = current
                .groups
                .iter()
                .find(|g| g.name == group.name && g.image_channel.as_ref() == Some(channel))
            else {
                continue;
            };
            if old.image_id == group.image_id {
                continue;
            }
            self.events
                .one(
                    Record::new(
                        &group.name,
                        "image_channel_moved",
                        channel.to_string(),
                        format!(
                            "{channel} moved from {} to {}",
                            old.image_id, group.image_id
                        ),
                    )
                    .with(json!({ "from": old.image_id, "to": group.image_id })),
                )
                .await;
        }
    }

    /// Every `channel_poll`, the heads of the spec's channels; a moved
    /// head puts the spec with the new images in force.
    pub(super) async fn watch_channels(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                () = self.clock.sleep(self.options.channel_poll) => {}
            }
            if self.spec().image_channels().is_empty() {
                continue;
            }
            // The spec in force is read, resolved and replaced under the
            // adoption lock: a spec adopted meanwhile is never undone.
            let _adopting = self.adopting.lock().await;
            let current = self.spec();
            let resolved =
                match resolve((*current).clone(), self.options.channel_heads.as_ref()).await {
                    Ok(resolved) => resolved,
                    Err(error) => {
                        tracing::warn!(%error, "image channels not read; the spec in force stays");
                        continue;
                    }
                };
            if resolved.hash == current.hash {
                continue;
            }
            if let Err(error) = self.adopt_held(resolved, "image channels").await {
                self.events
                    .one(Record::new(
                        "",
                        "spec_rejected",
                        "image channels",
                        error.to_string(),
                    ))
                    .await;
            }
        }
    }
}
