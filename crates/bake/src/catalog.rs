//! What the cloud holds of endstate's bakes, read from image tags alone
//! (so it is the same on EC2 and on the built-in cloud, and needs no state
//! file): which image is which recipe version, which images hold a prefix
//! of a recipe's steps (the cache of a layered backend), what each was
//! baked from, and each channel's head.
//!
//! Tags written on every baked image:
//! - `endstate:recipe` — the recipe's name;
//! - `endstate:prefix` — the hash of the steps the image holds (the
//!   recipe's version when it holds them all);
//! - `endstate:steps` — how many of the recipe's steps it holds;
//! - `endstate:version` — only on an image holding every step: the
//!   recipe's version;
//! - `endstate:parent` — the image it was baked from;
//! - `endstate:channel:NAME` — when it was made the head of channel NAME
//!   (RFC 3339, UTC); the newest such image is the head.
//!
//! Not here: deciding what to bake (the bake command) or to remove
//! ([`crate::retention`]).

use std::collections::BTreeMap;

use serde::Serialize;

/// The recipe an image was baked for.
pub const RECIPE_TAG: &str = "endstate:recipe";
/// The hash of the steps an image holds.
pub const PREFIX_TAG: &str = "endstate:prefix";
/// How many of its recipe's steps an image holds.
pub const STEPS_TAG: &str = "endstate:steps";
/// The recipe version of an image holding every step.
pub const VERSION_TAG: &str = "endstate:version";
/// The image a baked image started from.
pub const PARENT_TAG: &str = "endstate:parent";
/// Followed by a channel's name: when the image became its head.
pub const CHANNEL_TAG_PREFIX: &str = "endstate:channel:";

/// One image as the cloud describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageRecord {
    pub id: String,
    pub name: Option<String>,
    /// `available`, `pending`, `failed`, …
    pub state: String,
    /// When the image was made (RFC 3339), when the cloud says.
    pub created: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl ImageRecord {
    /// The recipe it was baked for, if endstate baked it.
    pub fn recipe(&self) -> Option<&str> {
        self.tags.get(RECIPE_TAG).map(String::as_str)
    }

    /// The recipe version, when it holds every step of its recipe.
    pub fn version(&self) -> Option<&str> {
        self.tags.get(VERSION_TAG).map(String::as_str)
    }

    /// The hash of the steps it holds.
    pub fn prefix(&self) -> Option<&str> {
        self.tags.get(PREFIX_TAG).map(String::as_str)
    }

    /// The image it was baked from.
    pub fn parent(&self) -> Option<&str> {
        self.tags.get(PARENT_TAG).map(String::as_str)
    }

    /// When it became the head of `channel`, if it ever did.
    pub fn promoted(&self, channel: &str) -> Option<&str> {
        self.tags
            .get(&format!("{CHANNEL_TAG_PREFIX}{channel}"))
            .map(String::as_str)
    }

    /// The channels it was ever head of.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.tags
            .keys()
            .filter_map(|k| k.strip_prefix(CHANNEL_TAG_PREFIX))
    }

    fn available(&self) -> bool {
        self.state == "available"
    }
}

/// The baked images of one account and region (or one built-in cloud).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    images: Vec<ImageRecord>,
}

impl Catalog {
    /// The images endstate baked among `images` (any others are dropped).
    pub fn new(images: Vec<ImageRecord>) -> Self {
        let mut images: Vec<ImageRecord> = images
            .into_iter()
            .filter(|i| i.recipe().is_some())
            .collect();
        // Newest first; images without a date last, by id for stability.
        images.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Catalog { images }
    }

    /// Every baked image, newest first.
    pub fn images(&self) -> &[ImageRecord] {
        &self.images
    }

    /// The image of `id`.
    pub fn image(&self, id: &str) -> Option<&ImageRecord> {
        self.images.iter().find(|i| i.id == id)
    }

    /// The available image of `recipe` at `version`.
    pub fn version(&self, recipe: &str, version: &str) -> Option<&ImageRecord> {
        self.images
            .iter()
            .find(|i| i.available() && i.recipe() == Some(recipe) && i.version() == Some(version))
    }

    /// The available image of `recipe` holding the steps whose hash is
    /// `prefix`.
    pub fn prefix(&self, recipe: &str, prefix: &str) -> Option<&ImageRecord> {
        self.images
            .iter()
            .find(|i| i.available() && i.recipe() == Some(recipe) && i.prefix() == Some(prefix))
    }

    /// The images of `recipe` holding all its steps, newest first.
    pub fn versions<'a>(&'a self, recipe: &'a str) -> impl Iterator<Item = &'a ImageRecord> {
        self.images
            .iter()
            .filter(move |i| i.recipe() == Some(recipe) && i.version().is_some())
    }

    /// The head of `recipe@channel`: of its available images ever made
    /// head of the channel, the one made head last.
    pub fn head(&self, recipe: &str, channel: &str) -> Option<&ImageRecord> {
        self.images
            .iter()
            .filter(|i| i.available() && i.recipe() == Some(recipe))
            .filter_map(|i| i.promoted(channel).map(|at| (at, i)))
            .max_by(|(a, _), (b, _)| a.cmp(b))
            .map(|(_, i)| i)
    }

    /// The recipes with baked images, and each one's channels.
    pub fn channels(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut channels: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for image in &self.images {
            if let Some(recipe) = image.recipe() {
                let list = channels.entry(recipe).or_default();
                for channel in image.channels() {
                    if !list.contains(&channel) {
                        list.push(channel);
                    }
                }
            }
        }
        for list in channels.values_mut() {
            list.sort_unstable();
        }
        channels
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A baked image for tests: `tags` as `key=value`.
    pub(crate) fn image(id: &str, created: &str, tags: &[&str]) -> ImageRecord {
        ImageRecord {
            id: id.to_string(),
            name: Some(format!("name-{id}")),
            state: "available".to_string(),
            created: Some(created.to_string()),
            tags: tags
                .iter()
                .map(|t| {
                    let (k, v) = t.split_once('=').unwrap_or((t, ""));
                    (k.to_string(), v.to_string())
                })
                .collect(),
        }
    }

    #[test]
    fn versions_prefixes_and_heads_come_from_the_tags() {
        let catalog = Catalog::new(vec![
            image(
                "ami-1",
                "2026-11-01T00:00:00.000Z",
                &[
                    "endstate:recipe=web",
                    "endstate:prefix=p1",
                    "endstate:steps=1",
                ],
            ),
            image(
                "ami-2",
                "2026-11-02T00:00:00.000Z",
                &[
                    "endstate:recipe=web",
                    "endstate:prefix=v2",
                    "endstate:version=v2",
                    "endstate:channel:stable=2026-11-02T00:00:00Z",
                ],
            ),
            image(
                "ami-3",
                "2026-11-03T00:00:00.000Z",
                &[
                    "endstate:recipe=web",
                    "endstate:prefix=v3",
                    "endstate:version=v3",
                    "endstate:channel:stable=2026-11-01T00:00:00Z",
                    "endstate:channel:canary=2026-11-03T00:00:00Z",
                ],
            ),
            image("ami-other", "2026-11-04T00:00:00.000Z", &["Name=not ours"]),
        ]);
        assert_eq!(catalog.images().len(), 3);
        assert_eq!(
            catalog.version("web", "v2").map(|i| i.id.as_str()),
            Some("ami-2")
        );
        assert_eq!(catalog.version("api", "v2"), None);
        assert_eq!(
            catalog.prefix("web", "p1").map(|i| i.id.as_str()),
            Some("ami-1")
        );
        let versions: Vec<&str> = catalog.versions("web").map(|i| i.id.as_str()).collect();
        assert_eq!(versions, ["ami-3", "ami-2"]);
        // ami-3 was made head of stable before ami-2 was: ami-2 is the head.
        assert_eq!(
            catalog.head("web", "stable").map(|i| i.id.as_str()),
            Some("ami-2")
        );
        assert_eq!(
            catalog.head("web", "canary").map(|i| i.id.as_str()),
            Some("ami-3")
        );
        assert_eq!(catalog.channels()["web"], ["canary", "stable"]);
    }

    #[test]
    fn images_not_available_are_neither_versions_nor_heads() {
        let mut pending = image(
            "ami-p",
            "2026-11-05T00:00:00.000Z",
            &[
                "endstate:recipe=web",
                "endstate:version=v9",
                "endstate:channel:stable=2026-11-05T00:00:00Z",
            ],
        );
        pending.state = "pending".to_string();
        let catalog = Catalog::new(vec![pending]);
        assert_eq!(catalog.version("web", "v9"), None);
        assert_eq!(catalog.head("web", "stable"), None);
    }
}
