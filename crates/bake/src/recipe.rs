//! Baking one recipe whose parent image is known: nothing when its version
//! exists already; else, on a layered backend, one image per step from the
//! longest prefix of its steps already baked (so changing the last step
//! rebuilds only that step), or, elsewhere, one image of all the steps.
//! Every image it makes carries the catalog's tags ([`crate::catalog`]);
//! the last also the recipe's version, its user tags, and the head of each
//! of its channels.
//!
//! Not here: the order of a lineage and the parent's image (the caller
//! bakes parents first), turning the spec's steps into [`Step`]s.

use std::collections::BTreeMap;

use serde::Serialize;

use endstate_model::recipe::Builder;

use crate::builder::{bake, BakeError, BakeRequest, BuildCloud, Waits};
use crate::catalog::{
    Catalog, CHANNEL_TAG_PREFIX, PARENT_TAG, PREFIX_TAG, RECIPE_TAG, STEPS_TAG, VERSION_TAG,
};
use crate::{builder::Baked, Step};

/// How many hex digits of a prefix name an image.
const NAME_HASH_LEN: usize = 16;

/// One recipe, prepared for baking.
#[derive(Debug, Clone)]
pub struct RecipeBake {
    pub recipe: String,
    /// The recipe's full version (the last of `prefixes`).
    pub version: String,
    /// The hash of the first `i + 1` steps on the parent, one per step.
    pub prefixes: Vec<String>,
    pub steps: Vec<Step>,
    /// The image the first step starts from.
    pub parent_image: String,
    /// The recipe's own tags, for its final image.
    pub tags: BTreeMap<String, String>,
    /// The channels whose head the new image becomes.
    pub channels: Vec<String>,
    /// Instance-style or volume-style.
    pub builder: Builder,
}

/// What baking a recipe did.
#[derive(Debug, Clone, Serialize)]
pub struct RecipeOutcome {
    pub recipe: String,
    pub version: String,
    /// The image holding every step.
    pub image_id: String,
    /// The image the recipe's steps started from.
    pub parent_image: String,
    /// Nothing was baked: the version existed.
    pub existing: bool,
    /// How many steps came from an image baked before.
    pub reused_steps: usize,
    /// The images made, in order (one per step on a layered backend).
    pub bakes: Vec<StepsBaked>,
}

/// One image a recipe bake made.
#[derive(Debug, Clone, Serialize)]
pub struct StepsBaked {
    /// The steps it added, by name.
    pub steps: Vec<String>,
    #[serde(flatten)]
    pub baked: Baked,
}

/// Bakes `recipe` on `cloud` (see the module doc). `now` (RFC 3339, UTC)
/// dates the channel promotions; `nonce` makes each launch of this run
/// its own.
#[allow(clippy::too_many_arguments)] // One call site, each argument a distinct input.
pub async fn bake_recipe(
    cloud: &dyn BuildCloud,
    catalog: &Catalog,
    recipe: &RecipeBake,
    layered: bool,
    now: &str,
    nonce: &str,
    waits: &Waits,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<RecipeOutcome, BakeError> {
    let mut outcome = RecipeOutcome {
        recipe: recipe.recipe.clone(),
        version: recipe.version.clone(),
        image_id: String::new(),
        parent_image: recipe.parent_image.clone(),
        existing: false,
        reused_steps: 0,
        bakes: Vec::new(),
    };
    if let Some(image) = catalog.version(&recipe.recipe, &recipe.version) {
        progress(&format!(
            "{}: version {} is {} already: nothing to bake",
            recipe.recipe,
            short(&recipe.version),
            image.id
        ));
        outcome.image_id = image.id.clone();
        outcome.existing = true;
        return Ok(outcome);
    }

    // Where to start: the longest prefix baked before, on a layered
    // backend; the parent image otherwise.
    let mut from = recipe.parent_image.clone();
    let mut done = 0;
    if layered {
        for (i, prefix) in recipe.prefixes.iter().enumerate().rev() {
            if let Some(image) = catalog.prefix(&recipe.recipe, prefix) {
                from = image.id.clone();
                done = i + 1;
                break;
            }
        }
        if done > 0 {
            progress(&format!(
                "{}: steps 1–{done} are {from} already; baking from there",
                recipe.recipe
            ));
        }
    }
    outcome.reused_steps = done;

    let total = recipe.steps.len();
    while done < total {
        let upto = if layered { done + 1 } else { total };
        let last = upto == total;
        let prefix = &recipe.prefixes[upto - 1];
        let steps = &recipe.steps[done..upto];
        let mut image_tags = BTreeMap::from([
            (RECIPE_TAG.to_string(), recipe.recipe.clone()),
            (PREFIX_TAG.to_string(), prefix.clone()),
            (STEPS_TAG.to_string(), upto.to_string()),
            (PARENT_TAG.to_string(), from.clone()),
        ]);
        if last {
            image_tags.extend(recipe.tags.clone());
            image_tags.insert(VERSION_TAG.to_string(), recipe.version.clone());
            for channel in &recipe.channels {
                image_tags.insert(format!("{CHANNEL_TAG_PREFIX}{channel}"), now.to_string());
            }
        }
        let name = format!("{}-{}", recipe.recipe, short(prefix));
        let request = BakeRequest {
            parent_image: from.clone(),
            steps: steps.to_vec(),
            name: name.clone(),
            description: format!(
                "endstate bake of {}: steps {}–{upto} of {total}",
                recipe.recipe,
                done + 1
            ),
            instance_tags: BTreeMap::from([
                ("Name".to_string(), format!("endstate-bake {name}")),
                (RECIPE_TAG.to_string(), recipe.recipe.clone()),
            ]),
            image_tags,
            nonce: format!("{}{}", short(prefix), nonce),
            builder: recipe.builder,
        };
        let names: Vec<String> = steps.iter().map(|s| s.name.clone()).collect();
        let recipe_name = &recipe.recipe;
        let baked = bake(cloud, &request, waits, &|phase, detail| {
            progress(&format!(
                "{recipe_name}: {} ({phase}) {detail}",
                names.join(", ")
            ));
        })
        .await?;
        from = baked.image_id.clone();
        outcome.bakes.push(StepsBaked {
            steps: names,
            baked,
        });
        done = upto;
    }
    outcome.image_id = from;
    Ok(outcome)
}

/// The first hex digits of a hash, for names and messages.
pub fn short(hash: &str) -> &str {
    hash.get(..NAME_HASH_LEN).unwrap_or(hash)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

    use std::time::Duration;

    use super::*;
    use crate::fake::FakeBuildCloud;
    use crate::Action;

    fn shell(name: &str, script: &str) -> Step {
        Step {
            name: name.to_string(),
            action: Action::Shell {
                script: script.to_string(),
            },
        }
    }

    /// A recipe of three steps whose prefixes are `p1`, `p2`, `last`.
    fn recipe(last: &str) -> RecipeBake {
        RecipeBake {
            recipe: "app".to_string(),
            version: last.to_string(),
            prefixes: vec!["p1".to_string(), "p2".to_string(), last.to_string()],
            steps: vec![
                shell("one", "echo 1 >> \"$ROOT/log\""),
                shell("two", "echo 2 >> \"$ROOT/log\""),
                shell("three", &format!("echo {last} >> \"$ROOT/log\"")),
            ],
            parent_image: "ami-00000000000000001".to_string(),
            tags: BTreeMap::from([("team".to_string(), "web".to_string())]),
            channels: vec!["stable".to_string()],
            builder: Builder::Instance,
        }
    }

    fn waits() -> Waits {
        Waits {
            poll: Duration::from_millis(1),
            ..Waits::default()
        }
    }

    async fn run(cloud: &FakeBuildCloud, recipe: &RecipeBake, layered: bool) -> RecipeOutcome {
        let catalog = Catalog::new(cloud.images());
        bake_recipe(
            cloud,
            &catalog,
            recipe,
            layered,
            "2026-11-28T00:00:00Z",
            "n",
            &waits(),
            &|_| {},
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn layered_a_step_per_image_then_a_no_op_then_only_the_changed_step() {
        let root = tempfile::tempdir().unwrap();
        let cloud = FakeBuildCloud::running_in(root.path());

        let first = run(&cloud, &recipe("v1"), true).await;
        assert_eq!(
            (first.existing, first.reused_steps, first.bakes.len()),
            (false, 0, 3)
        );
        let images = cloud.images();
        assert_eq!(images.len(), 3);
        // Each image starts from the one before; only the last is the version.
        assert_eq!(images[1].parent(), Some(images[0].id.as_str()));
        assert_eq!(images[2].parent(), Some(images[1].id.as_str()));
        assert_eq!(images[0].parent(), Some("ami-00000000000000001"));
        assert_eq!(images[0].version(), None);
        assert_eq!(images[2].version(), Some("v1"));
        assert_eq!(images[2].tags["team"], "web");
        assert_eq!(images[2].promoted("stable"), Some("2026-11-28T00:00:00Z"));
        assert_eq!(images[1].promoted("stable"), None);
        assert_eq!(first.image_id, images[2].id);
        assert_eq!(
            std::fs::read_to_string(root.path().join("log")).unwrap(),
            "1\n2\nv1\n"
        );

        cloud.clear_calls();
        let again = run(&cloud, &recipe("v1"), true).await;
        assert!(again.existing);
        assert_eq!(again.image_id, first.image_id);
        assert!(cloud.calls().is_empty(), "{:?}", cloud.calls());

        let changed = run(&cloud, &recipe("v2"), true).await;
        assert_eq!((changed.reused_steps, changed.bakes.len()), (2, 1));
        assert_eq!(changed.bakes[0].steps, ["three"]);
        assert_eq!(cloud.calls()[0], format!("launch {}", images[1].id));
        assert_eq!(
            std::fs::read_to_string(root.path().join("log")).unwrap(),
            "1\n2\nv1\nv2\n"
        );
    }

    #[tokio::test]
    async fn volume_style_bakes_a_layer_per_step_with_no_instance() {
        let root = tempfile::tempdir().unwrap();
        let cloud = FakeBuildCloud::running_in(root.path());
        let volume = |last: &str| RecipeBake {
            builder: Builder::Volume,
            ..recipe(last)
        };
        let first = run(&cloud, &volume("v1"), true).await;
        assert_eq!(first.bakes.len(), 3);
        assert!(first.bakes.iter().all(|b| b.baked.build_instance.is_none()));
        let calls = cloud.calls();
        assert!(
            calls
                .iter()
                .all(|c| !c.starts_with("launch") && !c.starts_with("terminate")),
            "{calls:?}"
        );
        let images = cloud.images();
        assert_eq!(images[2].parent(), Some(images[1].id.as_str()));
        assert_eq!(images[2].version(), Some("v1"));
        cloud.clear_calls();
        let changed = run(&cloud, &volume("v2"), true).await;
        assert_eq!((changed.reused_steps, changed.bakes.len()), (2, 1));
        assert_eq!(
            cloud.calls()[0],
            format!("bake_volume {} app-v2", images[1].id)
        );
    }

    #[tokio::test]
    async fn unlayered_one_image_of_every_step() {
        let root = tempfile::tempdir().unwrap();
        let cloud = FakeBuildCloud::running_in(root.path());
        let outcome = run(&cloud, &recipe("v1"), false).await;
        assert_eq!(outcome.bakes.len(), 1);
        assert_eq!(outcome.bakes[0].steps, ["one", "two", "three"]);
        let images = cloud.images();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].prefix(), Some("v1"));
        assert_eq!(images[0].tags[STEPS_TAG], "3");
    }
}
