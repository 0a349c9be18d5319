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
            for (old, new) in current.groups.iter().zip(&resolved.groups) {
                if old.image_id != new.image_id {
                    if let Some(channel) = &new.image_channel {
                        self.events
                            .one(
                                Record::new(
                                    &new.name,
                                    "image_channel_moved",
                                    channel.to_string(),
                                    format!(
                                        "{channel} moved from {} to {}",
                                        old.image_id, new.image_id
                                    ),
                                )
                                .with(json!({ "from": old.image_id, "to": new.image_id })),
                            )
                            .await;
                    }
                }
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
