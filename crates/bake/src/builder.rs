//! The two builders. Instance-style, as Packer does it but with no SSH:
//! launch a build instance from the parent image with the provisioning
//! script as its user data, read its progress from the console until every
//! step ended, stop it, CreateImage, wait until the image is available,
//! tag it, and terminate the build instance. Volume-style, as Aminator
//! does it: the built-in cloud runs the same script on a copy of the
//! parent image's root without booting anything (BakeImage), the builder
//! reads its progress from the bake's output (GetBakeOutput) until the
//! image is available, and tags it. Both talk to the cloud through
//! [`BuildCloud`], the few calls a bake needs.
//!
//! Whatever happens after the launch, the build instance is terminated,
//! and an image made by a bake that then failed is deregistered (with its
//! storage): a failed bake leaves nothing behind, and when the clean-up
//! itself fails the error names what was left. Not here: which steps,
//! versions and caching (the caller), the EC2 client behind the port.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use endstate_model::recipe::Builder;
use serde::Serialize;

use crate::console::{read_progress, Progress};
use crate::script::{provisioning_script, ScriptError};
use crate::Step;

/// The calls a bake makes, one request each (the implementation retries
/// what its client retries). Errors are the cloud's message.
#[async_trait]
pub trait BuildCloud: Send + Sync {
    /// RunInstances of one instance of `image` with `user_data` and
    /// `tags`; its id.
    async fn launch(
        &self,
        image: &str,
        user_data: &[u8],
        tags: &BTreeMap<String, String>,
        client_token: &str,
    ) -> Result<String, String>;
    /// The instance's state name (`pending`, `running`, `stopped`, …);
    /// `None` when the cloud does not know it.
    async fn instance_state(&self, instance: &str) -> Result<Option<String>, String>;
    /// The instance's console output, as text.
    async fn console(&self, instance: &str) -> Result<String, String>;
    /// StopInstances.
    async fn stop(&self, instance: &str) -> Result<(), String>;
    /// CreateImage of the instance; the new image's id.
    async fn create_image(
        &self,
        instance: &str,
        name: &str,
        description: &str,
    ) -> Result<String, String>;
    /// The image's state (`pending`, `available`, `failed`, …); `None`
    /// when the cloud does not know it.
    async fn image_state(&self, image: &str) -> Result<Option<String>, String>;
    /// CreateTags on the image.
    async fn tag(&self, image: &str, tags: &BTreeMap<String, String>) -> Result<(), String>;
    /// TerminateInstances.
    async fn terminate(&self, instance: &str) -> Result<(), String>;
    /// DeregisterImage, and its storage with it (snapshots on EC2).
    async fn deregister(&self, image: &str) -> Result<(), String>;
    /// BakeImage (the built-in cloud's extension): `user_data` run on a
    /// copy of `image`'s root; the new image's id (`pending` until the
    /// script ended, then `available` or `failed`).
    async fn bake_volume(
        &self,
        image: &str,
        user_data: &[u8],
        name: &str,
        description: &str,
    ) -> Result<String, String>;
    /// The output of a volume-style bake so far, as text.
    async fn bake_output(&self, image: &str) -> Result<String, String>;
}

/// A phase of a bake, for progress and the manifest's times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Launch,
    Provision,
    Stop,
    Image,
    Tag,
    CleanUp,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Launch => "launch",
            Phase::Provision => "provision",
            Phase::Stop => "stop",
            Phase::Image => "image",
            Phase::Tag => "tag",
            Phase::CleanUp => "clean-up",
        })
    }
}

/// How long each wait may take, and how often it looks.
#[derive(Debug, Clone)]
pub struct Waits {
    pub poll: Duration,
    pub provision: Duration,
    pub stop: Duration,
    pub image: Duration,
}

impl Default for Waits {
    fn default() -> Self {
        Waits {
            poll: Duration::from_secs(2),
            provision: Duration::from_secs(30 * 60),
            stop: Duration::from_secs(10 * 60),
            image: Duration::from_secs(30 * 60),
        }
    }
}

/// One image to bake.
#[derive(Debug, Clone)]
pub struct BakeRequest {
    /// The image the build instance starts from.
    pub parent_image: String,
    pub steps: Vec<Step>,
    /// The new image's name (unique per account and region on EC2).
    pub name: String,
    pub description: String,
    /// Tags of the build instance (what it is building, for clean-up by
    /// hand) and of the new image.
    pub instance_tags: BTreeMap<String, String>,
    pub image_tags: BTreeMap<String, String>,
    /// Letters and digits; marks this bake's console lines, and with the
    /// name makes the launch idempotent.
    pub nonce: String,
    /// Instance-style or volume-style.
    pub builder: Builder,
}

/// What a bake made.
#[derive(Debug, Clone, Serialize)]
pub struct Baked {
    pub image_id: String,
    /// The instance it ran on (none for a volume-style bake).
    pub build_instance: Option<String>,
    /// Each phase and how long it took, in order.
    pub phases: Vec<(Phase, Duration)>,
}

/// Why a bake failed. Nothing is left behind unless `left_behind` says so.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{cause}{}", left_behind_text(.left_behind))]
pub struct BakeError {
    pub cause: Cause,
    /// What the clean-up could not remove (instance and image ids).
    pub left_behind: Vec<String>,
}

fn left_behind_text(left: &[String]) -> String {
    if left.is_empty() {
        String::new()
    } else {
        format!(
            "; the clean-up failed and left {} (remove by hand)",
            left.join(", ")
        )
    }
}

/// The first thing that went wrong.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Cause {
    #[error("{0}")]
    Script(#[from] ScriptError),
    #[error("{phase}: {message}")]
    Cloud { phase: Phase, message: String },
    #[error("step {step} failed with exit status {code}:\n{output}")]
    StepFailed {
        step: String,
        code: i32,
        output: String,
    },
    #[error("{phase}: {what} after {} s", .waited.as_secs())]
    Timeout {
        phase: Phase,
        what: String,
        waited: Duration,
    },
}

/// Bakes `request` on `cloud`, telling `progress` each phase as it starts.
pub async fn bake(
    cloud: &dyn BuildCloud,
    request: &BakeRequest,
    waits: &Waits,
    progress: &(dyn Fn(Phase, &str) + Sync),
) -> Result<Baked, BakeError> {
    let script = provisioning_script(&request.nonce, &request.steps).map_err(|e| BakeError {
        cause: e.into(),
        left_behind: Vec::new(),
    })?;
    if request.builder == Builder::Volume {
        return bake_volume(cloud, request, &script, waits, progress).await;
    }
    let mut phases = Vec::new();
    let started = Instant::now();
    progress(Phase::Launch, &request.parent_image);
    let token = format!("bake-{}", request.nonce);
    let instance = cloud
        .launch(
            &request.parent_image,
            script.as_bytes(),
            &request.instance_tags,
            &token,
        )
        .await
        .map_err(|message| BakeError {
            cause: Cause::Cloud {
                phase: Phase::Launch,
                message,
            },
            left_behind: Vec::new(),
        })?;
    phases.push((Phase::Launch, started.elapsed()));

    let mut image = None;
    let outcome = build(
        cloud,
        request,
        waits,
        progress,
        &instance,
        &mut image,
        &mut phases,
    )
    .await;

    let cleaning = Instant::now();
    progress(Phase::CleanUp, &instance);
    let mut left_behind = Vec::new();
    if cloud.terminate(&instance).await.is_err() {
        left_behind.push(instance.clone());
    }
    match outcome {
        Ok(image_id) => {
            phases.push((Phase::CleanUp, cleaning.elapsed()));
            if !left_behind.is_empty() {
                report_left_behind(progress, &left_behind);
            }
            Ok(Baked {
                image_id,
                build_instance: Some(instance),
                phases,
            })
        }
        Err(cause) => {
            if let Some(image) = image {
                if cloud.deregister(&image).await.is_err() {
                    left_behind.push(image);
                }
            }
            Err(BakeError { cause, left_behind })
        }
    }
}

/// The volume-style bake: BakeImage, its output read until the steps
/// ended and the image is available, then the tags. A failed bake's image
/// is deregistered.
async fn bake_volume(
    cloud: &dyn BuildCloud,
    request: &BakeRequest,
    script: &str,
    waits: &Waits,
    progress: &(dyn Fn(Phase, &str) + Sync),
) -> Result<Baked, BakeError> {
    let mut phases = Vec::new();
    let started = Instant::now();
    progress(Phase::Provision, &request.parent_image);
    let image = cloud
        .bake_volume(
            &request.parent_image,
            script.as_bytes(),
            &request.name,
            &request.description,
        )
        .await
        .map_err(|message| BakeError {
            cause: Cause::Cloud {
                phase: Phase::Provision,
                message,
            },
            left_behind: Vec::new(),
        })?;
    let outcome = provision_volume(
        cloud,
        request,
        waits,
        progress,
        &image,
        started,
        &mut phases,
    )
    .await;
    match outcome {
        Ok(()) => Ok(Baked {
            image_id: image,
            build_instance: None,
            phases,
        }),
        Err(cause) => {
            let cleaning = Instant::now();
            progress(Phase::CleanUp, &image);
            let left_behind = match cloud.deregister(&image).await {
                Ok(()) => Vec::new(),
                Err(_) => vec![image],
            };
            phases.push((Phase::CleanUp, cleaning.elapsed()));
            Err(BakeError { cause, left_behind })
        }
    }
}

/// The steps of a volume-style bake until its image is available and
/// tagged.
async fn provision_volume(
    cloud: &dyn BuildCloud,
    request: &BakeRequest,
    waits: &Waits,
    progress: &(dyn Fn(Phase, &str) + Sync),
    image: &str,
    started: Instant,
    phases: &mut Vec<(Phase, Duration)>,
) -> Result<(), Cause> {
    let cloud_error = |phase: Phase| move |message: String| Cause::Cloud { phase, message };
    let mut reported = 0;
    let mut image_started = None;
    loop {
        // The state first: output read after it is at least as new.
        let state = cloud
            .image_state(image)
            .await
            .map_err(cloud_error(Phase::Provision))?;
        let output = cloud
            .bake_output(image)
            .await
            .map_err(cloud_error(Phase::Provision))?;
        match read_progress(&request.nonce, &output) {
            Progress::Failed { step, code, output } => {
                return Err(step_failed(request, step, code, output));
            }
            Progress::Done if image_started.is_none() => {
                phases.push((Phase::Provision, started.elapsed()));
                progress(Phase::Image, &request.name);
                image_started = Some(Instant::now());
            }
            Progress::Done => {}
            Progress::Running { finished } => {
                report_steps(request, progress, finished, &mut reported);
            }
        }
        match state.as_deref() {
            Some("available") if image_started.is_some() => break,
            Some("pending") | None => {}
            Some(other) => {
                let tail: Vec<&str> = output.lines().rev().take(10).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(Cause::Cloud {
                    phase: image_started.map_or(Phase::Provision, |_| Phase::Image),
                    message: format!(
                        "image {image} is {other} before its steps ended; the bake's output ends:\n{}",
                        tail.join("\n")
                    ),
                });
            }
        }
        let (phase, since, limit) = match image_started {
            Some(at) => (Phase::Image, at, waits.image),
            None => (Phase::Provision, started, waits.provision),
        };
        wait_or_time_out(since, limit, waits.poll, phase, || match phase {
            Phase::Image => format!("image {image} did not become available"),
            _ => format!("the steps of {image} did not end"),
        })
        .await?;
    }
    if let Some(at) = image_started {
        phases.push((Phase::Image, at.elapsed()));
    }
    let tagging = Instant::now();
    progress(Phase::Tag, image);
    cloud
        .tag(image, &request.image_tags)
        .await
        .map_err(cloud_error(Phase::Tag))?;
    phases.push((Phase::Tag, tagging.elapsed()));
    Ok(())
}

/// Tells `progress` of each step that ended since the last report.
fn report_steps(
    request: &BakeRequest,
    progress: &(dyn Fn(Phase, &str) + Sync),
    finished: usize,
    reported: &mut usize,
) {
    for step in request.steps.iter().take(finished).skip(*reported) {
        progress(Phase::Provision, &format!("step {} done", step.name));
    }
    *reported = (*reported).max(finished);
}

/// A failed step, named by the request's step `step` (from 0).
fn step_failed(request: &BakeRequest, step: usize, code: i32, output: String) -> Cause {
    let step = request
        .steps
        .get(step)
        .map_or_else(|| format!("#{step}"), |s| s.name.clone());
    Cause::StepFailed { step, code, output }
}

/// A successful bake whose build instance would not terminate still made
/// its image: say what is left, as progress.
fn report_left_behind(progress: &(dyn Fn(Phase, &str) + Sync), left: &[String]) {
    progress(
        Phase::CleanUp,
        &format!("could not terminate {}: remove it by hand", left.join(", ")),
    );
}

/// Everything between the launch and the clean-up; `image` is set as soon
/// as one exists, so that a failure after it removes it.
async fn build(
    cloud: &dyn BuildCloud,
    request: &BakeRequest,
    waits: &Waits,
    progress: &(dyn Fn(Phase, &str) + Sync),
    instance: &str,
    image: &mut Option<String>,
    phases: &mut Vec<(Phase, Duration)>,
) -> Result<String, Cause> {
    let cloud_error = |phase: Phase| move |message: String| Cause::Cloud { phase, message };

    // Provision: the console tells when every step ended.
    let started = Instant::now();
    progress(Phase::Provision, instance);
    let mut reported = 0;
    loop {
        let console = cloud
            .console(instance)
            .await
            .map_err(cloud_error(Phase::Provision))?;
        match read_progress(&request.nonce, &console) {
            Progress::Done => break,
            Progress::Failed { step, code, output } => {
                return Err(step_failed(request, step, code, output));
            }
            Progress::Running { finished } => {
                report_steps(request, progress, finished, &mut reported);
            }
        }
        let state = cloud
            .instance_state(instance)
            .await
            .map_err(cloud_error(Phase::Provision))?;
        if let Some(state) = state.filter(|s| s != "pending" && s != "running") {
            return Err(Cause::Cloud {
                phase: Phase::Provision,
                message: format!("the build instance {instance} is {state} before its steps ended"),
            });
        }
        wait_or_time_out(
            started,
            waits.provision,
            waits.poll,
            Phase::Provision,
            || format!("the steps of {instance} did not end"),
        )
        .await?;
    }
    phases.push((Phase::Provision, started.elapsed()));

    // Stop, so that the image is of a quiet disk.
    let started = Instant::now();
    progress(Phase::Stop, instance);
    // The steps may end before the cloud calls the instance running; a
    // pending instance cannot be stopped.
    while cloud
        .instance_state(instance)
        .await
        .map_err(cloud_error(Phase::Stop))?
        .as_deref()
        == Some("pending")
    {
        wait_or_time_out(started, waits.stop, waits.poll, Phase::Stop, || {
            format!("{instance} stayed pending")
        })
        .await?;
    }
    cloud
        .stop(instance)
        .await
        .map_err(cloud_error(Phase::Stop))?;
    loop {
        let state = cloud
            .instance_state(instance)
            .await
            .map_err(cloud_error(Phase::Stop))?;
        match state.as_deref() {
            Some("stopped") => break,
            Some("terminated" | "shutting-down") | None => {
                return Err(Cause::Cloud {
                    phase: Phase::Stop,
                    message: format!("the build instance {instance} went away while stopping"),
                })
            }
            _ => {}
        }
        wait_or_time_out(started, waits.stop, waits.poll, Phase::Stop, || {
            format!("{instance} did not stop")
        })
        .await?;
    }
    phases.push((Phase::Stop, started.elapsed()));

    // The image, until it is available.
    let started = Instant::now();
    progress(Phase::Image, &request.name);
    let id = cloud
        .create_image(instance, &request.name, &request.description)
        .await
        .map_err(cloud_error(Phase::Image))?;
    *image = Some(id.clone());
    loop {
        let state = cloud
            .image_state(&id)
            .await
            .map_err(cloud_error(Phase::Image))?;
        match state.as_deref() {
            Some("available") => break,
            Some("pending") | None => {}
            Some(other) => {
                return Err(Cause::Cloud {
                    phase: Phase::Image,
                    message: format!("image {id} is {other}"),
                })
            }
        }
        wait_or_time_out(started, waits.image, waits.poll, Phase::Image, || {
            format!("image {id} did not become available")
        })
        .await?;
    }
    phases.push((Phase::Image, started.elapsed()));

    let started = Instant::now();
    progress(Phase::Tag, &id);
    cloud
        .tag(&id, &request.image_tags)
        .await
        .map_err(cloud_error(Phase::Tag))?;
    phases.push((Phase::Tag, started.elapsed()));
    Ok(id)
}

/// Sleeps one poll interval, or fails when `limit` has passed since
/// `started`.
async fn wait_or_time_out(
    started: Instant,
    limit: Duration,
    poll: Duration,
    phase: Phase,
    what: impl FnOnce() -> String,
) -> Result<(), Cause> {
    if started.elapsed() >= limit {
        return Err(Cause::Timeout {
            phase,
            what: what(),
            waited: started.elapsed(),
        });
    }
    tokio::time::sleep(poll).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

    use std::sync::Mutex;

    use super::*;
    use crate::fake::FakeBuildCloud;
    use crate::Action;

    fn request(steps: Vec<Step>) -> BakeRequest {
        BakeRequest {
            parent_image: "ami-00000000000000001".to_string(),
            steps,
            name: "web-1234".to_string(),
            description: "test".to_string(),
            instance_tags: BTreeMap::new(),
            image_tags: BTreeMap::from([("endstate:recipe".to_string(), "web".to_string())]),
            nonce: "abc123".to_string(),
            builder: Builder::Instance,
        }
    }

    fn shell(name: &str, script: &str) -> Step {
        Step {
            name: name.to_string(),
            action: Action::Shell {
                script: script.to_string(),
            },
        }
    }

    fn waits() -> Waits {
        Waits {
            poll: Duration::from_millis(1),
            provision: Duration::from_millis(200),
            stop: Duration::from_millis(200),
            image: Duration::from_millis(200),
        }
    }

    fn fake(root: &tempfile::TempDir) -> FakeBuildCloud {
        FakeBuildCloud::running_in(root.path())
    }

    #[tokio::test]
    async fn a_bake_runs_the_steps_then_stops_images_tags_and_terminates_in_order() {
        let root = tempfile::tempdir().unwrap();
        let cloud = fake(&root);
        let seen = Mutex::new(Vec::new());
        let baked = bake(
            &cloud,
            &request(vec![
                shell("one", "echo 1 > \"$ROOT/one\""),
                shell("two", "echo 2 > \"$ROOT/two\""),
            ]),
            &waits(),
            &|phase, _| seen.lock().unwrap().push(phase),
        )
        .await
        .unwrap();
        assert_eq!(baked.image_id, "ami-0123456789abcdef0");
        assert!(root.path().join("one").exists() && root.path().join("two").exists());
        assert_eq!(
            cloud.calls(),
            [
                "launch ami-00000000000000001",
                "console",
                "stop",
                "create_image i-build web-1234",
                "tag ami-0123456789abcdef0 1",
                "terminate i-build"
            ]
        );
        let phases: Vec<Phase> = baked.phases.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            phases,
            [
                Phase::Launch,
                Phase::Provision,
                Phase::Stop,
                Phase::Image,
                Phase::Tag,
                Phase::CleanUp
            ]
        );
        let mut seen = seen.into_inner().unwrap();
        seen.dedup();
        assert_eq!(phases, seen);
    }

    #[tokio::test]
    async fn a_volume_bake_runs_the_steps_with_no_instance_then_tags() {
        let root = tempfile::tempdir().unwrap();
        let cloud = fake(&root);
        let seen = Mutex::new(Vec::new());
        let baked = bake(
            &cloud,
            &BakeRequest {
                builder: Builder::Volume,
                ..request(vec![
                    shell("one", "echo 1 > \"$ROOT/one\""),
                    shell("two", "echo 2 > \"$ROOT/two\""),
                ])
            },
            &waits(),
            &|phase, _| seen.lock().unwrap().push(phase),
        )
        .await
        .unwrap();
        assert_eq!(baked.build_instance, None);
        assert!(root.path().join("one").exists() && root.path().join("two").exists());
        assert_eq!(
            cloud.calls(),
            [
                "bake_volume ami-00000000000000001 web-1234",
                "bake_output",
                "tag ami-0123456789abcdef0 1"
            ]
        );
        let phases: Vec<Phase> = baked.phases.iter().map(|(p, _)| *p).collect();
        assert_eq!(phases, [Phase::Provision, Phase::Image, Phase::Tag]);
        let mut seen = seen.into_inner().unwrap();
        seen.dedup();
        assert_eq!(phases, seen);
    }

    #[tokio::test]
    async fn a_failing_volume_step_is_named_and_its_failed_image_deregistered() {
        let root = tempfile::tempdir().unwrap();
        let cloud = fake(&root);
        let error = bake(
            &cloud,
            &BakeRequest {
                builder: Builder::Volume,
                ..request(vec![
                    shell("fine", "true"),
                    shell("compile", "echo cc: no such file >&2; exit 4"),
                ])
            },
            &waits(),
            &|_, _| {},
        )
        .await
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "step compile failed with exit status 4:\ncc: no such file"
        );
        assert!(error.left_behind.is_empty());
        assert_eq!(
            cloud.calls(),
            [
                "bake_volume ami-00000000000000001 web-1234",
                "bake_output",
                "deregister ami-0123456789abcdef0"
            ]
        );
        assert!(cloud.images().is_empty());
    }

    #[tokio::test]
    async fn a_volume_image_that_fails_without_a_failed_step_shows_the_output() {
        let root = tempfile::tempdir().unwrap();
        let cloud = FakeBuildCloud {
            image_ends: Some("failed"),
            ..fake(&root)
        };
        let error = bake(
            &cloud,
            &BakeRequest {
                builder: Builder::Volume,
                ..request(vec![shell("s", "echo almost")])
            },
            &waits(),
            &|_, _| {},
        )
        .await
        .unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("image: image ami-0123456789abcdef0 is failed before its steps ended")
                && text.contains("done"),
            "{text}"
        );
        assert_eq!(
            cloud.calls().last().unwrap(),
            "deregister ami-0123456789abcdef0"
        );
    }

    #[tokio::test]
    async fn a_failing_step_is_named_with_its_output_and_the_instance_terminated() {
        let root = tempfile::tempdir().unwrap();
        let cloud = fake(&root);
        let error = bake(
            &cloud,
            &request(vec![
                shell("fine", "true"),
                shell("compile", "echo cc: no such file >&2; exit 4"),
            ]),
            &waits(),
            &|_, _| {},
        )
        .await
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "step compile failed with exit status 4:\ncc: no such file"
        );
        assert!(error.left_behind.is_empty());
        assert_eq!(
            cloud.calls(),
            [
                "launch ami-00000000000000001",
                "console",
                "terminate i-build"
            ]
        );
    }

    #[tokio::test]
    async fn an_image_that_fails_is_deregistered_and_the_instance_terminated() {
        let root = tempfile::tempdir().unwrap();
        let cloud = FakeBuildCloud {
            image_ends: Some("failed"),
            ..fake(&root)
        };
        let error = bake(
            &cloud,
            &request(vec![shell("s", "true")]),
            &waits(),
            &|_, _| {},
        )
        .await
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "image: image ami-0123456789abcdef0 is failed"
        );
        let calls = cloud.calls();
        assert_eq!(
            calls[calls.len() - 2..],
            ["terminate i-build", "deregister ami-0123456789abcdef0"]
        );
    }

    #[tokio::test]
    async fn steps_that_never_end_time_out_and_a_failed_clean_up_names_what_is_left() {
        let cloud = FakeBuildCloud {
            never_provisions: true,
            terminate_fails: true,
            ..FakeBuildCloud::default()
        };
        let error = bake(
            &cloud,
            &request(vec![shell("s", "true")]),
            &waits(),
            &|_, _| {},
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                error.cause,
                Cause::Timeout {
                    phase: Phase::Provision,
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(error.left_behind, ["i-build"]);
        assert!(
            error
                .to_string()
                .ends_with("; the clean-up failed and left i-build (remove by hand)"),
            "{error}"
        );
    }
}
