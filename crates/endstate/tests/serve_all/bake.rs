//! `endstate bake` and `endstate images`, end to end on the built-in
//! cloud's process backend (root: build instances really boot and run
//! their steps), with the real binary:
//!
//! - a three-level lineage (base → runtime → app, with file, shell and
//!   role steps) bakes; an instance of the group naming `app@stable` has
//!   every step's files; baking again bakes nothing; changing only the app
//!   step bakes only that step's image, on the runtime image;
//! - `images` shows the new head and the group's instance behind it;
//! - retention keeps the old app image while an instance runs it, and
//!   removes it with its layer once nothing uses it;
//! - a failing step fails the bake naming the step with its output, and
//!   leaves no image holding it and no build instance (the steps before it
//!   stay baked, as the prefix the next bake starts from);
//! - the same lineage bakes volume-style (`--builder volume`): no instance
//!   at all, the same files in an instance of the head, a no-op again, one
//!   layer for a changed step, and a failing step named with its output,
//!   its failed image deregistered and its bake's root removed.
//!
//! Bounded: every wait has a deadline.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::time::Duration;

use serde_json::Value;

use crate::common::controller::{wait_for, Project, ONE_CLOUD_AT_A_TIME};

/// The process backend's starter image.
const BASE_IMAGE: &str = "ami-0e5c0f5d3b1e2a4f6";

fn spec(app: &str, extra_recipe: &str) -> String {
    format!(
        r#"project: bakes
provider:
  local: {{}}
roles:
  runtime:
    resources:
      - {{ kind: directory, name: dir, path: /opt/runtime, mode: "0755" }}
      - {{ kind: file, name: conf, path: /opt/runtime/runtime.conf, content: "runtime=1\n", mode: "0640" }}
recipes:
  base:
    from: {BASE_IMAGE}
    steps:
      - {{ name: motd, file: {{ path: /etc/baked/base.txt, content: "base\n", mode: "0644" }} }}
      - {{ name: tools, shell: "mkdir -p /opt/base && echo tools > /opt/base/tools.txt" }}
  runtime:
    from: base
    steps:
      - {{ name: runtime, role: runtime }}
  app:
    from: runtime
    channels: [stable]
    keep: {{ versions: 1 }}
    steps:
      - {{ name: app, shell: "mkdir -p /srv/app && echo {app} > /srv/app/version" }}
{extra_recipe}groups:
  web:
    image: app@stable
    instance_type: t3.micro
    capacity: {{ min: 1, desired: 1, max: 2 }}
    zones: [us-east-1a]
    user_data:
      script: |
        #!/bin/sh
        cat /etc/baked/base.txt /opt/base/tools.txt /opt/runtime/runtime.conf /srv/app/version > /srv/seen.txt
"#
    )
}

const BROKEN: &str = r#"  broken:
    from: base
    steps:
      - { name: fine, shell: "true" }
      - { name: compile, shell: "echo cc: fatal error: no input files >&2; exit 3" }
"#;

/// `endstate bake --json` for `recipes`; its JSON and whether it passed.
fn bake(project: &Project, recipes: &[&str]) -> (bool, Value, String) {
    bake_with(project, recipes, &[])
}

/// [`bake`] with more arguments.
fn bake_with(project: &Project, recipes: &[&str], extra: &[&str]) -> (bool, Value, String) {
    let mut args = vec![
        "bake",
        "--json",
        "--poll-interval",
        "0.2",
        "--timeout",
        "120",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(recipes);
    let output = project.command(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("bake printed no JSON ({e}):\n{stdout}\n{stderr}"));
    (output.status.success(), json, stderr)
}

fn recipe<'v>(answer: &'v Value, name: &str) -> &'v Value {
    answer["recipes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["recipe"] == name)
        .unwrap_or_else(|| panic!("no {name} in {answer}"))
}

/// The cloud's images with an `endstate:recipe` tag: id → recipe.
fn baked_images(project: &Project) -> Vec<(String, String)> {
    let answer = project.aws(&[
        "ec2",
        "describe-images",
        "--owners",
        "self",
        "--filters",
        "Name=tag-key,Values=endstate:recipe",
    ]);
    let mut images: Vec<(String, String)> = answer["Images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let recipe = i["Tags"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["Key"] == "endstate:recipe")
                .and_then(|t| t["Value"].as_str())
                .unwrap_or_default();
            (
                i["ImageId"].as_str().unwrap().to_string(),
                recipe.to_string(),
            )
        })
        .collect();
    images.sort();
    images
}

/// Instances (any state) whose tags name `recipe` as what they build.
fn build_instances(project: &Project, recipe: &str) -> Vec<(String, String)> {
    let answer = project.aws(&[
        "ec2",
        "describe-instances",
        "--filters",
        &format!("Name=tag:endstate:recipe,Values={recipe}"),
    ]);
    answer["Reservations"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["Instances"].as_array().unwrap().iter())
        .map(|i| {
            (
                i["InstanceId"].as_str().unwrap().to_string(),
                i["State"]["Name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn layers(project: &Project) -> usize {
    std::fs::read_dir(project.cloud_dir.path().join("layers"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lineage_bakes_once_rebuilds_only_what_changed_and_prunes_what_nothing_uses() {
    let _one = ONE_CLOUD_AT_A_TIME.lock().await;
    let project = Project::new();
    project.write_spec(&spec("v1", ""));

    // The whole lineage: base (two steps, an image each: the process
    // backend's images are layers), runtime, app.
    let (ok, first, stderr) = bake(&project, &[]);
    assert!(ok, "{first}\n{stderr}");
    for name in ["base", "runtime", "app"] {
        assert_eq!(recipe(&first, name)["existing"], false, "{first}");
    }
    assert_eq!(
        recipe(&first, "base")["images"].as_array().unwrap().len(),
        2
    );
    let runtime_image = recipe(&first, "runtime")["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    let app_v1 = recipe(&first, "app")["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        recipe(&first, "app")["parent_image"],
        runtime_image.as_str()
    );
    assert_eq!(baked_images(&project).len(), 4);
    let manifest = project.dir.path().join(".endstate/bakes").join(format!(
        "app-{}.json",
        &recipe(&first, "app")["version"].as_str().unwrap()[..16]
    ));
    assert!(manifest.exists(), "no manifest at {}", manifest.display());
    assert!(build_instances(&project, "app")
        .iter()
        .all(|(_, s)| s == "terminated"));

    // An instance of app@stable has every step's files.
    project.ok(&["apply", "--json"]);
    assert_eq!(
        seen_by_the_group(&project, &app_v1).await,
        "base\ntools\nruntime=1\nv1\n"
    );

    // Again: nothing to bake.
    let images_before = baked_images(&project);
    let (ok, again, stderr) = bake(&project, &[]);
    assert!(ok, "{again}\n{stderr}");
    for name in ["base", "runtime", "app"] {
        assert_eq!(recipe(&again, name)["existing"], true, "{again}");
    }
    assert_eq!(baked_images(&project), images_before);

    // Only the app step changes: only its image is baked, on runtime's.
    project.write_spec(&spec("v2", ""));
    let (ok, changed, stderr) = bake(&project, &["app"]);
    assert!(ok, "{changed}\n{stderr}");
    assert_eq!(recipe(&changed, "base")["existing"], true);
    assert_eq!(recipe(&changed, "runtime")["existing"], true);
    let app = recipe(&changed, "app");
    assert_eq!(app["existing"], false);
    assert_eq!(app["images"].as_array().unwrap().len(), 1);
    assert_eq!(app["parent_image"], runtime_image.as_str());
    let app_v2 = app["image_id"].as_str().unwrap().to_string();
    assert_eq!(baked_images(&project).len(), 5);

    // The plan replaces the group's instance with one of the new head.
    let plan = project.ok(&["plan", "--json"]);
    assert!(
        plan.contains("\"replacement\"") && plan.contains(&format!("\"wants\":\"{app_v2}\"")),
        "{plan}"
    );

    // The new head, and the group's instance behind it.
    let listing: Value = serde_json::from_str(&project.ok(&["images", "--json"])).unwrap();
    let app_view = listing["recipes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["recipe"] == "app")
        .unwrap();
    assert_eq!(app_view["channels"]["stable"], app_v2.as_str(), "{listing}");
    assert_eq!(listing["groups"][0]["head"], app_v2.as_str(), "{listing}");
    assert_eq!(listing["groups"][0]["behind"], 1, "{listing}");

    // Retention keeps one version, but v1 runs: it stays.
    let prune: Value = serde_json::from_str(&project.ok(&["images", "prune", "--json"])).unwrap();
    let v1 = prune["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image_id"] == app_v1.as_str())
        .unwrap();
    assert_eq!(v1["keep"], true, "{prune}");
    assert!(
        v1["reason"].as_str().unwrap().starts_with("in use by"),
        "{prune}"
    );
    assert_eq!(baked_images(&project).len(), 5);

    // Once nothing runs it, v1 goes, with its layer. (An instance that
    // is shutting down still counts as using its image.)
    project.ok(&["destroy", "--yes", "--json"]);
    wait_for(
        "the group's instance terminated",
        Duration::from_secs(60),
        &project,
        async || {
            let live = project.aws(&[
                "ec2",
                "describe-instances",
                "--filters",
                "Name=instance-state-name,Values=pending,running,shutting-down,stopping,stopped",
            ]);
            live["Reservations"].as_array()?.is_empty().then_some(())
        },
    )
    .await;
    let dry: Value =
        serde_json::from_str(&project.ok(&["images", "prune", "--dry-run", "--json"])).unwrap();
    assert!(
        dry["images"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["image_id"] == app_v1.as_str() && i["keep"] == false),
        "{dry}"
    );
    assert_eq!(baked_images(&project).len(), 5, "a dry run removes nothing");
    let layers_before = layers(&project);
    let pruned: Value = serde_json::from_str(&project.ok(&["images", "prune", "--json"])).unwrap();
    let removed: Vec<&str> = pruned["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["removed"] == true)
        .map(|i| i["image_id"].as_str().unwrap())
        .collect();
    assert_eq!(removed, [app_v1.as_str()], "{pruned}");
    assert!(baked_images(&project).iter().all(|(id, _)| *id != app_v1));
    assert_eq!(
        layers(&project),
        layers_before - 1,
        "the image's layer went with it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_is_named_with_its_output_and_leaves_nothing_behind() {
    let _one = ONE_CLOUD_AT_A_TIME.lock().await;
    let project = Project::new();
    project.write_spec(&spec("v1", BROKEN));
    let (ok, answer, _) = bake(&project, &["broken"]);
    assert!(!ok, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("step compile failed with exit status 3")
            && error.contains("cc: fatal error: no input files"),
        "{error}"
    );
    assert_eq!(recipe(&answer, "base")["existing"], false);
    // One step per image on this layered backend: the step that passed is
    // kept as a prefix (the next bake starts from it); nothing holds the
    // failed step, and both build instances are gone.
    let broken: Vec<(String, String)> = baked_images(&project)
        .into_iter()
        .filter(|(_, r)| r == "broken")
        .collect();
    assert_eq!(broken.len(), 1, "{broken:?}");
    let tags = project.aws(&["ec2", "describe-images", "--image-ids", &broken[0].0]);
    let steps = tags["Images"][0]["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["Key"] == "endstate:steps")
        .map(|t| t["Value"].clone());
    assert_eq!(steps, Some(Value::from("1")), "{tags}");
    let builders = build_instances(&project, "broken");
    assert_eq!(builders.len(), 2, "{builders:?}");
    assert!(
        builders
            .iter()
            .all(|(_, s)| s == "terminated" || s == "shutting-down"),
        "{builders:?}"
    );
}

/// Every instance the cloud knows, in any state.
fn all_instances(project: &Project) -> Vec<Value> {
    let answer = project.aws(&["ec2", "describe-instances"]);
    answer["Reservations"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["Instances"].as_array().unwrap().iter().cloned())
        .collect()
}

/// What the running instance of group `web` wrote from the baked files.
async fn seen_by_the_group(project: &Project, image: &str) -> String {
    wait_for(
        "the group's instance ran its user data",
        Duration::from_secs(60),
        project,
        async || {
            let instances = project.aws(&[
                "ec2",
                "describe-instances",
                "--filters",
                "Name=tag:endstate:group,Values=web",
                "Name=instance-state-name,Values=running",
            ]);
            let id = instances["Reservations"][0]["Instances"][0]["InstanceId"].as_str()?;
            let launched = instances["Reservations"][0]["Instances"][0]["ImageId"].as_str()?;
            assert_eq!(launched, image);
            std::fs::read_to_string(
                project
                    .cloud_dir
                    .path()
                    .join("instances")
                    .join(id)
                    .join("upper/srv/seen.txt"),
            )
            .ok()
            .filter(|t| t.lines().count() == 4)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lineage_bakes_volume_style_with_no_instance_and_rebuilds_only_what_changed() {
    let _one = ONE_CLOUD_AT_A_TIME.lock().await;
    let project = Project::new();
    project.write_spec(&spec("v1", BROKEN));
    let volume = ["--builder", "volume"];

    let (ok, first, stderr) = bake_with(&project, &["app"], &volume);
    assert!(ok, "{first}\n{stderr}");
    for name in ["base", "runtime", "app"] {
        let manifest = recipe(&first, name);
        assert_eq!(manifest["existing"], false, "{first}");
        assert_eq!(manifest["builder"], "volume", "{first}");
        for image in manifest["images"].as_array().unwrap() {
            assert_eq!(image["build_instance"], Value::Null, "{first}");
            assert!(image["phases"]["provision"].as_f64().is_some(), "{first}");
        }
    }
    assert_eq!(baked_images(&project).len(), 4);
    assert!(
        all_instances(&project).is_empty(),
        "a volume-style bake boots nothing"
    );
    let runtime_image = recipe(&first, "runtime")["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    let app_v1 = recipe(&first, "app")["image_id"]
        .as_str()
        .unwrap()
        .to_string();

    // An instance of app@stable has every step's files, the role's too.
    project.ok(&["apply", "--json"]);
    assert_eq!(
        seen_by_the_group(&project, &app_v1).await,
        "base\ntools\nruntime=1\nv1\n"
    );

    // Again: nothing to bake, whichever the builder.
    let images_before = baked_images(&project);
    let (ok, again, stderr) = bake_with(&project, &["app"], &volume);
    assert!(ok, "{again}\n{stderr}");
    for name in ["base", "runtime", "app"] {
        assert_eq!(recipe(&again, name)["existing"], true, "{again}");
    }
    assert_eq!(baked_images(&project), images_before);

    // Only the app step changes: one layer, on runtime's image.
    project.write_spec(&spec("v2", BROKEN));
    let layers_before = layers(&project);
    let (ok, changed, stderr) = bake_with(&project, &["app"], &volume);
    assert!(ok, "{changed}\n{stderr}");
    let app = recipe(&changed, "app");
    assert_eq!(app["existing"], false);
    assert_eq!(app["images"].as_array().unwrap().len(), 1);
    assert_eq!(app["parent_image"], runtime_image.as_str());
    assert_eq!(baked_images(&project).len(), 5);
    assert_eq!(layers(&project), layers_before + 1, "one new layer");

    // A failing step: named with its output; its image (failed) is
    // deregistered, the step before it stays as a prefix, and no bake's
    // root is left on disk.
    let (ok, broken, _) = bake_with(&project, &["broken"], &volume);
    assert!(!ok, "{broken}");
    let error = broken["error"].as_str().unwrap();
    assert!(
        error.contains("step compile failed with exit status 3")
            && error.contains("cc: fatal error: no input files"),
        "{error}"
    );
    let kept: Vec<(String, String)> = baked_images(&project)
        .into_iter()
        .filter(|(_, r)| r == "broken")
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let unfinished = project.aws(&[
        "ec2",
        "describe-images",
        "--owners",
        "self",
        "--filters",
        "Name=state,Values=pending,failed",
    ]);
    assert_eq!(
        unfinished["Images"],
        Value::Array(Vec::new()),
        "{unfinished}"
    );
    let bakes = project.cloud_dir.path().join("bakes");
    let leftovers: Vec<String> = std::fs::read_dir(&bakes)
        .unwrap()
        .flatten()
        .flat_map(|bake| std::fs::read_dir(bake.path()).unwrap().flatten())
        .map(|entry| entry.file_name().to_string_lossy().to_string())
        .filter(|name| name != "console.log")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The group's one instance is the only instance there ever was.
    assert_eq!(all_instances(&project).len(), 1);
    project.ok(&["destroy", "--yes", "--json"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_replaces_a_group_when_its_channel_head_moves() {
    let _one = ONE_CLOUD_AT_A_TIME.lock().await;
    let mut project = Project::new();
    project.write_spec(&spec("v1", ""));
    let (ok, first, stderr) = bake(&project, &["app"]);
    assert!(ok, "{first}\n{stderr}");
    let app_v1 = recipe(&first, "app")["image_id"]
        .as_str()
        .unwrap()
        .to_string();

    let client = project
        .start_with(&[], &[("ENDSTATE_CHANNEL_POLL", "0.5")])
        .await;
    let on_image = |image: String| {
        let project = &project;
        async move || {
            let instances = project.aws(&[
                "ec2",
                "describe-instances",
                "--filters",
                "Name=tag:endstate:group,Values=web",
                "Name=instance-state-name,Values=pending,running",
            ]);
            let live: Vec<&Value> = instances["Reservations"]
                .as_array()?
                .iter()
                .flat_map(|r| r["Instances"].as_array().into_iter().flatten())
                .collect();
            (live.len() == 1 && live[0]["ImageId"] == image.as_str()).then_some(())
        }
    };
    wait_for(
        "the group's instance on app v1",
        Duration::from_secs(60),
        &project,
        on_image(app_v1.clone()),
    )
    .await;

    // A new head: the controller sees it and replaces the instance. (The
    // recipe's new version is baked from a file of its own, so that the
    // spec in force changes only by its channel's head.)
    std::fs::write(project.dir.path().join("bake-v2.yaml"), spec("v2", "")).unwrap();
    let (ok, second, stderr) = bake(&project, &["-f", "bake-v2.yaml", "app"]);
    assert!(ok, "{second}\n{stderr}");
    let app_v2 = recipe(&second, "app")["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(
        "the group's instance replaced by one of app v2",
        Duration::from_secs(90),
        &project,
        on_image(app_v2.clone()),
    )
    .await;
    let events = crate::common::controller::all_events(&client, 0).await;
    let moved = crate::common::controller::of_kind(&events, "image_channel_moved");
    assert_eq!(
        moved.len(),
        1,
        "{moved:#?}\n{:#?}",
        crate::common::controller::of_kind(&events, "spec_loaded")
    );
    assert_eq!(moved[0].subject, "app@stable");
    assert!(
        moved[0].reason.contains(&app_v1) && moved[0].reason.contains(&app_v2),
        "{:?}",
        moved[0]
    );
}
