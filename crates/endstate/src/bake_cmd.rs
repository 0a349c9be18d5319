//! `endstate bake` and `endstate images`: golden images from the spec's
//! `recipes:`.
//!
//! - `bake [RECIPE…]` bakes each recipe after its parents (a lineage is
//!   baked from the top), each a no-op when its version exists, on a
//!   layered backend (the built-in cloud) from the longest prefix of its
//!   steps already baked; it writes a manifest per recipe
//!   (`.endstate/bakes/RECIPE-VERSION.json` next to the spec) and prints
//!   it with `--json`. Each recipe bakes instance-style, or volume-style
//!   (`builder: volume` or `--builder volume`, the built-in cloud only).
//! - `images` shows the lineage, each version with its channels, each
//!   channel's head, and which groups and instances run which version —
//!   a group behind its channel's head is drift.
//! - `images prune [--dry-run]` applies each recipe's `keep:`: never an
//!   image a group, a saved plan (`--plan`) or an instance that is not
//!   terminated uses; deregistering removes the image's storage too.
//!
//! Also [`resolve_channels`], which turns the groups' `RECIPE@CHANNEL`
//! into the head's image id before a plan. Not here: the bake engine
//! (`endstate_bake`), recipes and versions (`endstate_model::recipe`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use endstate_bake::builder::Waits;
use endstate_bake::catalog::Catalog;
use endstate_bake::ec2::{deregister, list_baked, BuildSettings, Ec2BuildCloud};
use endstate_bake::recipe::{bake_recipe, short, RecipeBake, RecipeOutcome};
use endstate_bake::retention::{decide, Decision, Policy};
use endstate_bake::{Action, Step};
use endstate_model::recipe::{
    Builder as RecipeBuilder, ChannelRef, FileContent, Parent, Recipe, StepAction,
};
use endstate_model::{tags, Spec};
use endstate_provider::ec2::Ec2Client;
use endstate_provider::images::Images;
use endstate_provider::Provider;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::args::{BakeArgs, BuilderArg, ImagesAction, ImagesArgs};
use crate::commands::load_spec;

/// The manifest of one recipe's bake.
#[derive(Debug, Serialize)]
struct Manifest<'a> {
    recipe: &'a str,
    version: &'a str,
    image_id: &'a str,
    parent_image: &'a str,
    parent_recipe: Option<&'a str>,
    /// `instance`: launched, provisioned through user data, imaged;
    /// `volume`: the steps run on a copy of the parent's root.
    builder: RecipeBuilder,
    /// The images are layers: one per step, reused by prefix.
    layered: bool,
    existing: bool,
    reused_steps: usize,
    steps: Vec<ManifestStep<'a>>,
    /// Each image made: its steps and each phase's seconds.
    images: Vec<ManifestImage>,
    started_at: String,
    seconds: f64,
}

#[derive(Debug, Serialize)]
struct ManifestStep<'a> {
    name: &'a str,
    hash: &'a str,
    prefix: &'a str,
}

#[derive(Debug, Serialize)]
struct ManifestImage {
    image_id: String,
    /// None for a volume-style bake.
    build_instance: Option<String>,
    steps: Vec<String>,
    phases: BTreeMap<String, f64>,
}

/// The EC2 client for the spec's provider, ungoverned (a bake makes a few
/// calls a second), and whether its images are layered.
async fn client(spec: &Spec, spec_file: &Path) -> Result<(Ec2Client, bool)> {
    let layered = matches!(spec.provider, endstate_model::Provider::Local { .. });
    Ok((crate::commands::ec2_client(spec, spec_file).await?, layered))
}

/// Runs `endstate bake`.
pub async fn bake(args: BakeArgs) -> Result<ExitCode> {
    let spec = load_spec(&args.spec)?;
    let order = bake_order(&spec, &args.recipes, &args.spec.file)?;
    let builders = builders(&spec, &order, args.builder, &args.spec.file)?;
    let (ec2, layered) = client(&spec, &args.spec.file).await?;
    let zone = match args.zone.clone() {
        Some(zone) => zone,
        None => ec2
            .describe_availability_zones()
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("the region has no availability zone to bake in"))?,
    };
    let cloud = Ec2BuildCloud {
        provider: &ec2,
        images: &ec2,
        settings: BuildSettings {
            instance_type: args.instance_type.clone(),
            zone,
            subnet_id: args.subnet.clone(),
            security_group_ids: args.security_groups.clone(),
            iam_instance_profile: None,
            root_volume: None,
        },
    };
    let mut catalog = Catalog::new(list_baked(&ec2).await.map_err(|e| anyhow!(e))?);
    let waits = Waits {
        poll: std::time::Duration::from_secs_f64(args.poll_interval.clamp(0.05, 60.0)),
        provision: std::time::Duration::from_secs(args.timeout),
        ..Waits::default()
    };
    let spec_dir = args.spec.file.parent().unwrap_or(Path::new("."));
    let manifests_dir = spec_dir.join(".endstate").join("bakes");
    let nonce = nonce();

    let mut images: BTreeMap<&str, String> = BTreeMap::new();
    let mut manifests = Vec::new();
    let mut failed = None;
    for recipe in &order {
        let started = Instant::now();
        let started_at = now_rfc3339();
        let version = recipe
            .version(&spec)
            .map_err(|e| anyhow!("recipe {}: {e}", recipe.name))?;
        let (parent_image, parent_recipe) = match &recipe.from {
            Parent::Image(id) => (id.clone(), None),
            Parent::Recipe(name) => (
                images.get(name.as_str()).cloned().ok_or_else(|| {
                    anyhow!("recipe {}: its parent {name} was not baked", recipe.name)
                })?,
                Some(name.as_str()),
            ),
        };
        let bake = RecipeBake {
            recipe: recipe.name.clone(),
            version: version.full().to_string(),
            prefixes: version.prefixes.clone(),
            steps: steps_of(&spec, recipe, spec_dir)?,
            parent_image,
            tags: recipe.tags.clone(),
            channels: recipe.channels.clone(),
            builder: builders[&recipe.name],
        };
        let json = args.json;
        let outcome = bake_recipe(
            &cloud,
            &catalog,
            &bake,
            layered,
            &started_at,
            &nonce,
            &waits,
            &|line| {
                if !json {
                    eprintln!("  {line}");
                }
            },
        )
        .await;
        let outcome: RecipeOutcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                failed = Some(format!("recipe {}: {error}", recipe.name));
                break;
            }
        };
        let manifest = Manifest {
            recipe: &recipe.name,
            version: version.full(),
            image_id: &outcome.image_id,
            parent_image: &outcome.parent_image,
            parent_recipe,
            builder: builders[&recipe.name],
            layered,
            existing: outcome.existing,
            reused_steps: outcome.reused_steps,
            steps: recipe
                .steps
                .iter()
                .zip(&version.step_hashes)
                .zip(&version.prefixes)
                .map(|((step, hash), prefix)| ManifestStep {
                    name: &step.name,
                    hash,
                    prefix,
                })
                .collect(),
            images: outcome
                .bakes
                .iter()
                .map(|b| ManifestImage {
                    image_id: b.baked.image_id.clone(),
                    build_instance: b.baked.build_instance.clone(),
                    steps: b.steps.clone(),
                    phases: b
                        .baked
                        .phases
                        .iter()
                        .map(|(phase, took)| (phase.to_string(), took.as_secs_f64()))
                        .collect(),
                })
                .collect(),
            started_at,
            seconds: started.elapsed().as_secs_f64(),
        };
        let value = serde_json::to_value(&manifest)?;
        if !outcome.existing {
            std::fs::create_dir_all(&manifests_dir)
                .with_context(|| format!("creating {}", manifests_dir.display()))?;
            let path = manifests_dir.join(format!("{}-{}.json", recipe.name, version.short()));
            crate::cloud::write_private(&path, &serde_json::to_vec_pretty(&value)?)?;
        }
        if !args.json {
            println!(
                "{}: {} version {} ({}, {:.1} s)",
                recipe.name,
                outcome.image_id,
                version.short(),
                if outcome.existing {
                    "existed: nothing baked".to_string()
                } else if outcome.reused_steps > 0 {
                    format!(
                        "baked {} of {} steps, {} reused",
                        recipe.steps.len() - outcome.reused_steps,
                        recipe.steps.len(),
                        outcome.reused_steps
                    )
                } else {
                    format!("baked {} steps", recipe.steps.len())
                },
                manifest.seconds
            );
        }
        manifests.push(value);
        images.insert(&recipe.name, outcome.image_id.clone());
        // The next recipe may reuse what this one made.
        catalog = Catalog::new(list_baked(&ec2).await.map_err(|e| anyhow!(e))?);
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "ok": failed.is_none(), "recipes": manifests, "error": failed })
        );
    }
    match failed {
        None => Ok(ExitCode::SUCCESS),
        Some(error) if args.json => {
            eprintln!("error: {error}");
            Ok(ExitCode::FAILURE)
        }
        Some(error) => bail!(error),
    }
}

/// How each recipe of `order` bakes: `--builder`, else its `builder:`,
/// else instance-style. Volume-style needs the built-in cloud: on any
/// other provider it is refused before anything is called.
fn builders(
    spec: &Spec,
    order: &[&Recipe],
    flag: Option<BuilderArg>,
    file: &Path,
) -> Result<BTreeMap<String, RecipeBuilder>> {
    let local = matches!(spec.provider, endstate_model::Provider::Local { .. });
    let mut builders = BTreeMap::new();
    for recipe in order {
        let builder = flag
            .map(RecipeBuilder::from)
            .or(recipe.builder)
            .unwrap_or(RecipeBuilder::Instance);
        if builder == RecipeBuilder::Volume && !local {
            bail!(
                "{}: recipe {}: volume-style bakes need the built-in cloud (provider: local); on EC2 a bake is instance-style (builder: instance)",
                file.display(),
                recipe.name
            );
        }
        builders.insert(recipe.name.clone(), builder);
    }
    Ok(builders)
}

/// The recipes to bake for `wanted` (all when empty), each after its
/// parents, each once.
fn bake_order<'a>(spec: &'a Spec, wanted: &[String], file: &Path) -> Result<Vec<&'a Recipe>> {
    let wanted: Vec<&str> = if wanted.is_empty() {
        spec.recipes.keys().map(String::as_str).collect()
    } else {
        wanted.iter().map(String::as_str).collect()
    };
    if wanted.is_empty() {
        bail!("{}: no recipes: nothing to bake", file.display());
    }
    let mut order: Vec<&Recipe> = Vec::new();
    for name in wanted {
        if spec.recipe(name).is_none() {
            let known: Vec<&str> = spec.recipes.keys().map(String::as_str).collect();
            bail!(
                "{}: no recipe `{name}`; the spec declares {}",
                file.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
        for recipe in spec.lineage(name).map_err(|e| anyhow!("{e}"))? {
            if !order.iter().any(|r| r.name == recipe.name) {
                order.push(recipe);
            }
        }
    }
    Ok(order)
}

/// A recipe's steps as the builder runs them: files read (and checked
/// against the hash they were loaded with), roles resolved into the
/// document `config apply --resolved` reads — refused when a role would
/// carry a secret into the image.
fn steps_of(spec: &Spec, recipe: &Recipe, spec_dir: &Path) -> Result<Vec<Step>> {
    recipe
        .steps
        .iter()
        .map(|step| {
            let at = || format!("recipe {}: step {}", recipe.name, step.name);
            let action = match &step.action {
                StepAction::File(file) => Action::File {
                    path: file.path.clone(),
                    mode: match &file.mode {
                        Some(mode) => endstate_config::validate::parse_mode(mode)
                            .map_err(|e| anyhow!("{}: mode: {e}", at()))?,
                        None => 0o644,
                    },
                    content: match &file.content {
                        FileContent::Inline(text) => text.clone().into_bytes(),
                        FileContent::Source(source) => source
                            .read_verified()
                            .with_context(at)?,
                    },
                },
                StepAction::Shell(script) => Action::Shell {
                    script: script.clone(),
                },
                StepAction::Role(name) => {
                    let role = spec
                        .roles
                        .get(name)
                        .ok_or_else(|| anyhow!("{}: no role `{name}`", at()))?;
                    if !endstate_model::roles::role_secrets(role).is_empty() {
                        bail!(
                            "{}: role {name} uses secrets, and an image is no place for one; deliver them at boot (user data, the agent)",
                            at()
                        );
                    }
                    // The version covers the sources as they were loaded:
                    // a file changed since would bake something else.
                    for source in recipe.role_sources(name) {
                        source.read_verified().with_context(at)?;
                    }
                    let role = crate::push::inline_sources(role.clone(), spec_dir)
                        .with_context(at)?;
                    let document = crate::config_cmd::ResolvedRoles {
                        roles: vec![role],
                        secrets: Vec::new(),
                    };
                    Action::Role {
                        role: name.clone(),
                        document: serde_json::to_vec(&document)?,
                    }
                }
            };
            Ok(Step {
                name: step.name.clone(),
                action,
            })
        })
        .collect()
}

/// Sets each group's `image_id` from its `RECIPE@CHANNEL`: the image at
/// the channel's head, read from the spec's cloud. An error names the
/// group when a channel has no head yet.
pub async fn resolve_groups(spec: &mut Spec, spec_file: &Path) -> Result<()> {
    if spec.groups.iter().all(|g| g.image_channel.is_none()) {
        return Ok(());
    }
    let (ec2, _) = client(spec, spec_file).await?;
    resolve_channels(spec, &ec2).await
}

/// [`resolve_groups`] with the cloud's image calls given.
pub async fn resolve_channels(spec: &mut Spec, images: &dyn Images) -> Result<()> {
    let catalog = Catalog::new(list_baked(images).await.map_err(|e| anyhow!(e))?);
    spec.resolve_channels(&heads(&catalog, &spec.image_channels()))
        .map_err(|missing| {
            anyhow!(
                "image {missing}: channel {} of recipe {} has no image yet; run: endstate bake {}",
                missing.channel,
                missing.recipe,
                missing.recipe
            )
        })
}

/// The head of each of `channels` that has one.
fn heads(catalog: &Catalog, channels: &[ChannelRef]) -> BTreeMap<ChannelRef, String> {
    channels
        .iter()
        .filter_map(|c| {
            catalog
                .head(&c.recipe, &c.channel)
                .map(|head| (c.clone(), head.id.clone()))
        })
        .collect()
}

/// The heads of image channels for `endstate serve`, read from the cloud's
/// baked images each time it asks.
pub struct CatalogHeads(pub Ec2Client);

impl std::fmt::Debug for CatalogHeads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CatalogHeads")
    }
}

#[async_trait::async_trait]
impl endstate_controller::controller::ChannelHeads for CatalogHeads {
    async fn heads(
        &self,
        channels: &[ChannelRef],
    ) -> std::result::Result<BTreeMap<ChannelRef, String>, String> {
        let catalog = Catalog::new(list_baked(&self.0).await?);
        Ok(heads(&catalog, channels))
    }
}

/// `ENDSTATE_CHANNEL_POLL` (seconds), how often `endstate serve` reads
/// the channels' heads again, when set.
pub fn channel_poll_override() -> Result<Option<std::time::Duration>> {
    match std::env::var("ENDSTATE_CHANNEL_POLL") {
        Err(_) => Ok(None),
        Ok(text) => match text.parse::<f64>() {
            Ok(seconds) if (0.1..=86_400.0).contains(&seconds) => {
                Ok(Some(std::time::Duration::from_secs_f64(seconds)))
            }
            _ => bail!("ENDSTATE_CHANNEL_POLL={text}: seconds between 0.1 and 86400"),
        },
    }
}

/// The channel heads of the spec's cloud, for `endstate serve`.
pub async fn catalog_heads(spec: &Spec, spec_file: &Path) -> Result<CatalogHeads> {
    Ok(CatalogHeads(client(spec, spec_file).await?.0))
}

/// Runs `endstate images` and `endstate images prune`.
pub async fn images(args: ImagesArgs) -> Result<ExitCode> {
    let spec = load_spec(&args.spec)?;
    let (ec2, _) = client(&spec, &args.spec.file).await?;
    let catalog = Catalog::new(list_baked(&ec2).await.map_err(|e| anyhow!(e))?);
    let instances = live_instances(&ec2).await?;
    match args.action {
        None => list(&spec, &catalog, &instances, args.json),
        Some(ImagesAction::Prune { dry_run, plans }) => {
            prune(
                &spec, &ec2, &catalog, &instances, &plans, dry_run, args.json,
            )
            .await
        }
    }
}

/// Every instance of the account that is not terminated.
async fn live_instances(provider: &dyn Provider) -> Result<Vec<endstate_provider::Instance>> {
    let (instances, _) = endstate_provider::describe_all(provider, &[]).await?;
    Ok(instances
        .into_iter()
        .filter(|i| i.state != endstate_provider::InstanceState::Terminated)
        .collect())
}

#[derive(Debug, Serialize)]
struct RecipeView {
    recipe: String,
    from: String,
    children: Vec<String>,
    version: Option<String>,
    channels: BTreeMap<String, Option<String>>,
    images: Vec<VersionView>,
}

#[derive(Debug, Serialize)]
struct VersionView {
    image_id: String,
    version: Option<String>,
    steps: Option<String>,
    created: Option<String>,
    heads: Vec<String>,
    /// The spec's current version of the recipe.
    current: bool,
    instances: usize,
}

#[derive(Debug, Serialize)]
struct GroupView {
    group: String,
    image: String,
    /// Instances per image id.
    instances: BTreeMap<String, usize>,
    /// The group's channel head, when it names a channel.
    head: Option<String>,
    /// Instances not on the head.
    behind: usize,
}

fn list(
    spec: &Spec,
    catalog: &Catalog,
    instances: &[endstate_provider::Instance],
    json: bool,
) -> Result<ExitCode> {
    let mut per_image: BTreeMap<&str, usize> = BTreeMap::new();
    for instance in instances {
        *per_image.entry(instance.image_id.as_str()).or_default() += 1;
    }
    let mut recipes = Vec::new();
    for recipe in spec.recipes.values() {
        let current = recipe.version(spec).ok().map(|v| v.full().to_string());
        let children = spec
            .recipes
            .values()
            .filter(|r| r.from == Parent::Recipe(recipe.name.clone()))
            .map(|r| r.name.clone())
            .collect();
        let channels = recipe
            .channels
            .iter()
            .map(|c| {
                (
                    c.clone(),
                    catalog.head(&recipe.name, c).map(|i| i.id.clone()),
                )
            })
            .collect::<BTreeMap<_, _>>();
        let images = catalog
            .images()
            .iter()
            .filter(|i| i.recipe() == Some(recipe.name.as_str()) && i.version().is_some())
            .map(|i| VersionView {
                image_id: i.id.clone(),
                version: i.version().map(str::to_string),
                steps: i.tags.get(endstate_bake::catalog::STEPS_TAG).cloned(),
                created: i.created.clone(),
                heads: channels
                    .iter()
                    .filter(|(_, head)| head.as_deref() == Some(i.id.as_str()))
                    .map(|(c, _)| c.clone())
                    .collect(),
                current: current.as_deref() == i.version(),
                instances: per_image.get(i.id.as_str()).copied().unwrap_or(0),
            })
            .collect();
        recipes.push(RecipeView {
            recipe: recipe.name.clone(),
            from: match &recipe.from {
                Parent::Image(id) => id.clone(),
                Parent::Recipe(name) => format!("recipe {name}"),
            },
            children,
            version: current,
            channels,
            images,
        });
    }
    let mut groups = Vec::new();
    for group in &spec.groups {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for instance in instances.iter().filter(|i| {
            i.tag(tags::PROJECT) == Some(spec.project.as_str())
                && i.tag(tags::GROUP) == Some(group.name.as_str())
        }) {
            *counts.entry(instance.image_id.clone()).or_default() += 1;
        }
        let head = group
            .image_channel
            .as_ref()
            .and_then(|c| catalog.head(&c.recipe, &c.channel))
            .map(|i| i.id.clone());
        let target = head.clone().unwrap_or_else(|| group.image_id.clone());
        let behind = counts
            .iter()
            .filter(|(image, _)| **image != target)
            .map(|(_, n)| n)
            .sum();
        groups.push(GroupView {
            group: group.name.clone(),
            image: group
                .image_channel
                .as_ref()
                .map_or_else(|| group.image_id.clone(), ToString::to_string),
            instances: counts,
            head,
            behind,
        });
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "recipes": recipes, "groups": groups })
        );
        return Ok(ExitCode::SUCCESS);
    }
    // The lineage as a tree, from the recipes baked from an image.
    let roots: Vec<&RecipeView> = recipes
        .iter()
        .filter(|r| !r.from.starts_with("recipe "))
        .collect();
    fn print_tree(recipes: &[RecipeView], recipe: &RecipeView, depth: usize) {
        let indent = "  ".repeat(depth);
        println!(
            "{indent}{} (from {}) version {}",
            recipe.recipe,
            recipe.from,
            recipe.version.as_deref().map_or("?", short)
        );
        for (channel, head) in &recipe.channels {
            println!(
                "{indent}  @{channel}: {}",
                head.as_deref().unwrap_or("no image yet")
            );
        }
        for image in &recipe.images {
            let version = image.version.as_deref().map_or("?", short);
            let mut notes = Vec::new();
            if image.current {
                notes.push("current".to_string());
            }
            if !image.heads.is_empty() {
                notes.push(format!("head of {}", image.heads.join(", ")));
            }
            if image.instances > 0 {
                notes.push(format!("{} instances", image.instances));
            }
            println!(
                "{indent}  {} {version} {}{}",
                image.image_id,
                image.created.as_deref().unwrap_or(""),
                if notes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", notes.join("; "))
                }
            );
        }
        if recipe.images.is_empty() {
            println!("{indent}  (not baked)");
        }
        for child in &recipe.children {
            if let Some(child) = recipes.iter().find(|r| &r.recipe == child) {
                print_tree(recipes, child, depth + 1);
            }
        }
    }
    for root in roots {
        print_tree(&recipes, root, 0);
    }
    for group in &groups {
        let on: Vec<String> = group
            .instances
            .iter()
            .map(|(image, n)| format!("{n} on {image}"))
            .collect();
        println!(
            "group {} image {}: {}{}",
            group.group,
            group.image,
            if on.is_empty() {
                "no instances".to_string()
            } else {
                on.join(", ")
            },
            match (&group.head, group.behind) {
                (Some(head), n) if n > 0 => format!(" — {n} behind the head {head}"),
                _ => String::new(),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The images in use, each with who uses it.
fn in_use(
    spec: &Spec,
    catalog: &Catalog,
    instances: &[endstate_provider::Instance],
    plans: &[PathBuf],
) -> Result<BTreeMap<String, Vec<String>>> {
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for group in &spec.groups {
        let image = match &group.image_channel {
            Some(channel) => catalog
                .head(&channel.recipe, &channel.channel)
                .map(|i| i.id.clone()),
            None => Some(group.image_id.clone()),
        };
        if let Some(image) = image {
            users
                .entry(image)
                .or_default()
                .push(format!("group {}", group.name));
        }
    }
    for instance in instances {
        users
            .entry(instance.image_id.clone())
            .or_default()
            .push(format!("instance {}", instance.id));
    }
    for path in plans {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading plan {}", path.display()))?;
        let plan: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a saved endstate plan", path.display()))?;
        let mut found = BTreeSet::new();
        collect_image_ids(&plan, &mut found);
        for image in found {
            users
                .entry(image)
                .or_default()
                .push(format!("plan {}", path.display()));
        }
    }
    Ok(users)
}

/// Every `image_id` value anywhere in a saved plan.
fn collect_image_ids(value: &serde_json::Value, found: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                if key == "image_id" {
                    if let Some(id) = value.as_str() {
                        found.insert(id.to_string());
                    }
                }
                collect_image_ids(value, found);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                collect_image_ids(item, found);
            }
        }
        _ => {}
    }
}

async fn prune(
    spec: &Spec,
    ec2: &Ec2Client,
    catalog: &Catalog,
    instances: &[endstate_provider::Instance],
    plans: &[PathBuf],
    dry_run: bool,
    json: bool,
) -> Result<ExitCode> {
    let users = in_use(spec, catalog, instances, plans)?;
    let now = OffsetDateTime::now_utc();
    let mut report: Vec<(String, Decision, Option<String>)> = Vec::new();
    let mut failures = 0;
    for recipe in spec.recipes.values() {
        let policy = Policy {
            versions: recipe.keep.versions,
            younger_than: recipe.keep.younger_than,
        };
        for decision in decide(catalog, &recipe.name, &policy, &users, now) {
            let mut error = None;
            if !decision.keep && !dry_run {
                if let Err(e) = deregister(ec2, &decision.image).await {
                    failures += 1;
                    error = Some(e);
                }
            }
            report.push((recipe.name.clone(), decision, error));
        }
    }
    if json {
        let items: Vec<serde_json::Value> = report
            .iter()
            .map(|(recipe, d, error)| {
                serde_json::json!({
                    "recipe": recipe, "image_id": d.image, "version": d.version,
                    "created": d.created, "keep": d.keep, "reason": d.reason,
                    "removed": !d.keep && !dry_run && error.is_none(), "error": error,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "dry_run": dry_run, "images": items })
        );
    } else {
        for (recipe, d, error) in &report {
            let verb = match (d.keep, dry_run, error) {
                (true, _, _) => "keep",
                (false, true, _) => "would remove",
                (false, false, None) => "removed",
                (false, false, Some(_)) => "FAILED to remove",
            };
            println!(
                "{recipe}: {verb} {} {}: {}{}",
                d.image,
                d.version.as_deref().map_or("(prefix)", short),
                d.reason,
                error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
        let gone = report.iter().filter(|(_, d, _)| !d.keep).count();
        println!(
            "{gone} image{} {}",
            if gone == 1 { "" } else { "s" },
            if dry_run {
                "would go (dry run: nothing removed)"
            } else {
                "removed"
            }
        );
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Letters and digits unique to this run.
fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

    use super::*;

    #[test]
    fn image_ids_are_found_anywhere_in_a_saved_plan() {
        let plan = serde_json::json!({
            "actions": [{"launch": {"image_id": "ami-1"}}, {"nested": [{"image_id": "ami-2"}]}],
            "image_id": "ami-3"
        });
        let mut found = BTreeSet::new();
        collect_image_ids(&plan, &mut found);
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            ["ami-1", "ami-2", "ami-3"]
        );
    }
}
