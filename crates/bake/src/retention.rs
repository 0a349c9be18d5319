//! Which of a recipe's images retention keeps and which it removes, and
//! why — a pure decision over the [`Catalog`], the images in use and the
//! time, so that `--dry-run` and the real run decide alike.
//!
//! Kept, whatever the policy: an image in use (by a group of the spec, a
//! saved plan or an instance that is not terminated), the head of any of
//! its channels, an image not `available` yet, and an image of unknown
//! age that no count rule removes. With a policy, a version is also kept
//! when it is among the N newest of its recipe or the N last promoted to
//! one of its channels (`versions: N`), or younger than the duration
//! (`younger_than`); with no rule set, every image is kept. An image
//! holding a prefix of the steps (a layered backend's cache) is kept when
//! a kept image was baked from it, following `endstate:parent`.
//!
//! Not here: removing (the command deregisters, with the storage).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::catalog::{Catalog, ImageRecord};

/// `keep:` of a recipe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub versions: Option<u32>,
    pub younger_than: Option<Duration>,
}

/// What retention decided for one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub image: String,
    pub version: Option<String>,
    pub created: Option<String>,
    pub keep: bool,
    pub reason: String,
}

/// The decisions for every image of `recipe`, newest first. `in_use`
/// maps an image id to who uses it (`group web`, `instance i-…`).
pub fn decide(
    catalog: &Catalog,
    recipe: &str,
    policy: &Policy,
    in_use: &BTreeMap<String, Vec<String>>,
    now: OffsetDateTime,
) -> Vec<Decision> {
    let images: Vec<&ImageRecord> = catalog
        .images()
        .iter()
        .filter(|i| i.recipe() == Some(recipe))
        .collect();
    let newest: BTreeSet<&str> = policy.versions.map_or_else(BTreeSet::new, |n| {
        let mut keep: BTreeSet<&str> = images
            .iter()
            .filter(|i| i.version().is_some())
            .take(n as usize)
            .map(|i| i.id.as_str())
            .collect();
        let channels: BTreeSet<&str> = images.iter().flat_map(|i| i.channels()).collect();
        for channel in channels {
            let mut promoted: Vec<(&str, &str)> = images
                .iter()
                .filter_map(|i| i.promoted(channel).map(|at| (at, i.id.as_str())))
                .collect();
            promoted.sort_unstable_by(|a, b| b.cmp(a));
            keep.extend(promoted.iter().take(n as usize).map(|(_, id)| *id));
        }
        keep
    });
    let heads: BTreeMap<&str, Vec<&str>> = {
        let mut heads: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (channel_recipe, channels) in catalog.channels() {
            if channel_recipe != recipe {
                continue;
            }
            for channel in channels {
                if let Some(head) = catalog.head(recipe, channel) {
                    heads.entry(head.id.as_str()).or_default().push(channel);
                }
            }
        }
        heads
    };

    let mut decisions: Vec<Decision> = images
        .iter()
        .map(|image| {
            let (keep, reason) = judge(image, policy, in_use, &heads, &newest, now);
            Decision {
                image: image.id.clone(),
                version: image.version().map(str::to_string),
                created: image.created.clone(),
                keep,
                reason,
            }
        })
        .collect();

    // A prefix image stays while a kept image was baked from it.
    loop {
        let kept_parents: BTreeSet<String> = decisions
            .iter()
            .filter(|d| d.keep)
            .filter_map(|d| catalog.image(&d.image)?.parent().map(str::to_string))
            .collect();
        let mut changed = false;
        for decision in decisions.iter_mut().filter(|d| !d.keep) {
            if kept_parents.contains(&decision.image) {
                decision.keep = true;
                decision.reason = "a kept image was baked from it".to_string();
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    decisions
}

/// One image's verdict, before its children are considered.
fn judge(
    image: &ImageRecord,
    policy: &Policy,
    in_use: &BTreeMap<String, Vec<String>>,
    heads: &BTreeMap<&str, Vec<&str>>,
    newest: &BTreeSet<&str>,
    now: OffsetDateTime,
) -> (bool, String) {
    if let Some(users) = in_use.get(&image.id).filter(|u| !u.is_empty()) {
        return (true, format!("in use by {}", users.join(", ")));
    }
    if let Some(channels) = heads.get(image.id.as_str()) {
        return (true, format!("head of {}", channels.join(", ")));
    }
    if image.state != "available" && image.state != "failed" {
        return (true, format!("{}: not finished", image.state));
    }
    if image.state == "failed" {
        return (false, "failed".to_string());
    }
    if policy.versions.is_none() && policy.younger_than.is_none() {
        return (true, "no retention rule".to_string());
    }
    if image.version().is_none() {
        return (
            false,
            "holds a prefix of the steps that no kept image was baked from".to_string(),
        );
    }
    if let Some(n) = policy.versions {
        if newest.contains(image.id.as_str()) {
            return (true, format!("among the {n} newest"));
        }
    }
    let age = image
        .created
        .as_deref()
        .and_then(|c| OffsetDateTime::parse(c, &Rfc3339).ok())
        .map(|created| now - created);
    if let Some(limit) = policy.younger_than {
        match age {
            None => return (true, "its age is unknown".to_string()),
            Some(age) if age < limit => {
                return (true, format!("younger than {}", human(limit)));
            }
            Some(_) => {}
        }
    }
    let mut why = Vec::new();
    if let Some(n) = policy.versions {
        why.push(format!("not among the {n} newest"));
    }
    if let Some(limit) = policy.younger_than {
        why.push(format!("older than {}", human(limit)));
    }
    (false, why.join(" and "))
}

/// A duration as the spec spells it (`14d`, `36h`, `90m`, `30s`).
fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        s if s % 86_400 == 0 && s > 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 && s > 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

    use super::*;
    use crate::catalog::tests::image;

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse("2026-11-30T00:00:00Z", &Rfc3339).unwrap()
    }

    /// Five versions of `web`, one a day from the 21st (ami-5 newest),
    /// ami-2 head of stable, and a prefix image ami-p that ami-1 and
    /// ami-5 were baked from.
    fn catalog() -> Catalog {
        let mut images = vec![image(
            "ami-p",
            "2026-11-20T00:00:00.000Z",
            &[
                "endstate:recipe=web",
                "endstate:prefix=p",
                "endstate:steps=1",
            ],
        )];
        for n in 1..=5 {
            let mut tags = vec![
                "endstate:recipe=web".to_string(),
                format!("endstate:version=v{n}"),
                format!("endstate:prefix=v{n}"),
            ];
            if n == 1 || n == 5 {
                tags.push("endstate:parent=ami-p".to_string());
            }
            if n == 2 {
                tags.push("endstate:channel:stable=2026-11-22T01:00:00Z".to_string());
            }
            let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
            images.push(image(
                &format!("ami-{n}"),
                &format!("2026-11-2{n}T00:00:00.000Z"),
                &tags,
            ));
        }
        Catalog::new(images)
    }

    fn kept(decisions: &[Decision]) -> Vec<&str> {
        decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.image.as_str())
            .collect()
    }

    #[test]
    fn without_a_rule_everything_is_kept() {
        let decisions = decide(
            &catalog(),
            "web",
            &Policy::default(),
            &BTreeMap::new(),
            now(),
        );
        assert_eq!(decisions.len(), 6);
        assert!(decisions.iter().all(|d| d.keep), "{decisions:#?}");
    }

    #[test]
    fn the_newest_the_heads_what_is_used_and_their_prefixes_stay() {
        let in_use = BTreeMap::from([("ami-1".to_string(), vec!["group web".to_string()])]);
        let policy = Policy {
            versions: Some(1),
            younger_than: None,
        };
        let decisions = decide(&catalog(), "web", &policy, &in_use, now());
        assert_eq!(kept(&decisions), ["ami-5", "ami-2", "ami-1", "ami-p"]);
        let reason = |id: &str| {
            decisions
                .iter()
                .find(|d| d.image == id)
                .unwrap()
                .reason
                .clone()
        };
        assert_eq!(reason("ami-1"), "in use by group web");
        assert_eq!(reason("ami-2"), "head of stable");
        assert_eq!(reason("ami-5"), "among the 1 newest");
        assert_eq!(reason("ami-p"), "a kept image was baked from it");
        assert_eq!(reason("ami-3"), "not among the 1 newest");
    }

    #[test]
    fn an_age_rule_keeps_the_young_and_a_prefix_goes_with_its_last_child() {
        let policy = Policy {
            versions: None,
            younger_than: Some(Duration::from_secs(6 * 86_400)),
        };
        // Younger than 6 days on the 30th: created after the 24th.
        let decisions = decide(&catalog(), "web", &policy, &BTreeMap::new(), now());
        assert_eq!(kept(&decisions), ["ami-5", "ami-2", "ami-p"]);
        let gone = decisions.iter().find(|d| d.image == "ami-3").unwrap();
        assert_eq!(gone.reason, "older than 6d");

        let mut images: Vec<ImageRecord> = catalog().images().to_vec();
        images.retain(|i| i.id != "ami-5");
        let decisions = decide(
            &Catalog::new(images),
            "web",
            &policy,
            &BTreeMap::new(),
            now(),
        );
        assert_eq!(kept(&decisions), ["ami-2"]);
    }
}
