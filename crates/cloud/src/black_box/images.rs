//! A bake's calls through endstate's own client (`Ec2Client` as
//! `Images`) against the built-in cloud's server: launch a build
//! instance, read its console, stop it, CreateImage with tags, find the
//! image by tag, launch from it, deregister it, and DeleteSnapshot as EC2
//! answers for a snapshot it does not have.
//!
//! On the process backend the instances are real processes started by a
//! stand-in init (no namespaces, so neither root nor the endstate binary is
//! needed), and the new image's layer carries what the build instance
//! wrote: the instance launched from it finds the file. On the simulated
//! backend the same calls run over records on a manual clock, and the aws
//! CLI reads the cloud's images and its DeleteSnapshot error as it reads
//! EC2's.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use crate::black_box::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use endstate_cloud::{
    serve_state, CloudState, Credentials, Isolation, ProcessBackend, ProcessConfig, RunningCloud,
};
use endstate_provider::ec2::{Ec2Client, Ec2Config};
use endstate_provider::images::{CreateImageRequest, ImageFilter, Images};
use endstate_provider::{InstanceState, LaunchRequest, Provider, ProviderError};

const ACCESS_KEY: &str = "AKIDIMAGESTEST";
const SECRET: &str = "images-test-secret";

/// The stand-in init: `$1` is the instance directory. It "provisions" —
/// writes `/srv/built-by` in the instance's root with its own id, unless
/// the file came with the image — prints a line to the console, reports
/// the boot finished and sleeps.
const BAKE_INIT: &str = r#"
dir="$1"
id=$(sed -n 's/.*"instance_id" *: *"\([^"]*\)".*/\1/p' "$dir/init.json" | head -n 1)
mkdir -p "$dir/root/srv"
if [ ! -f "$dir/root/srv/built-by" ]; then
  printf '%s\n' "$id" > "$dir/root/srv/built-by"
fi
echo "endstate-bake: provisioned $id"
printf '{"pid":%d,"boot":"finished","services":[],"updated":"now"}' $$ > "$dir/status.json.tmp"
mv "$dir/status.json.tmp" "$dir/status.json"
exec sleep 100000
"#;

fn process_config(dir: &Path) -> ProcessConfig {
    let mut config = ProcessConfig::new(dir);
    config.ec2.throttling = None;
    config.init_command = vec!["sh".into(), "-c".into(), BAKE_INIT.into(), "sh".into()];
    config.status_interval = Duration::from_millis(300);
    config.stop_grace = Duration::from_millis(500);
    // Apart from the other process-backend test of this binary, which may
    // run at the same time on the same instance addresses.
    config.imds_port = 21_191;
    config.isolation = Some(Isolation::None);
    config
}

fn client(cloud: &RunningCloud) -> Ec2Client {
    Ec2Client::with_static_credentials(
        Ec2Config::new("us-east-1").with_endpoint(cloud.url()),
        ACCESS_KEY,
        SECRET,
        None,
    )
    .unwrap()
}

fn launch(image_id: &str, token: &str, zone: &str) -> LaunchRequest {
    LaunchRequest {
        client_token: token.to_string(),
        image_id: image_id.to_string(),
        zone: zone.to_string(),
        tags: BTreeMap::from([("endstate:bake".to_string(), "web".to_string())]),
        ..common::launch(1, zone, token, "bake")
    }
}

fn api_code(error: &ProviderError) -> &str {
    error
        .code()
        .unwrap_or_else(|| panic!("not an API error: {error}"))
}

/// Kills the instances' top processes when the test ends, passed or
/// failed: they outlive the cloud by design.
struct Cleanup(Arc<ProcessBackend>, Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in &self.1 {
            let Some(pid) = self.0.top_process(id).and_then(|p| i32::try_from(p).ok()) else {
                continue;
            };
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Polls DescribeInstanceStatus until `id` is in `state` (and, running,
/// has passed its checks), at most 20 s.
async fn wait_for(client: &Ec2Client, id: &str, state: InstanceState) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let statuses = Provider::describe_instance_status(client, &[id.to_string()])
            .await
            .unwrap();
        if statuses.iter().any(|s| {
            s.state == state && (state != InstanceState::Running || s.instance_status == "ok")
        }) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} not {state:?} within 20 s: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bake_on_the_process_backend_makes_an_image_that_launches() {
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let dir = tempfile::tempdir().unwrap();
    let backend = ProcessBackend::open(process_config(dir.path())).unwrap();
    let cloud = serve_state(
        0,
        CloudState::new(backend.clone(), Credentials::new().with(ACCESS_KEY, SECRET)),
    )
    .await
    .unwrap();
    let client = client(&cloud);
    let mut cleanup = Cleanup(backend.clone(), Vec::new());

    let base = backend.base_image_id().to_string();
    let build = client
        .run_instances(&launch(&base, "bake-build", "us-east-1a"))
        .await
        .unwrap()
        .remove(0)
        .id;
    cleanup.1.push(build.clone());
    wait_for(&client, &build, InstanceState::Running).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let console = loop {
        let text = Images::console_output(&client, &build).await.unwrap();
        if text.contains("endstate-bake: provisioned") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        console.contains(&format!("endstate-bake: provisioned {build}")),
        "{console:?}"
    );

    let stopped = client
        .stop_instances(std::slice::from_ref(&build))
        .await
        .unwrap();
    assert_eq!(stopped, [(build.clone(), InstanceState::Stopping)]);
    wait_for(&client, &build, InstanceState::Stopped).await;

    let tags = BTreeMap::from([
        ("endstate:bake".to_string(), "web".to_string()),
        ("endstate:parent".to_string(), base.clone()),
    ]);
    let image = client
        .create_image(&CreateImageRequest {
            instance_id: build.clone(),
            name: "web-2026-11-28".to_string(),
            description: Some("baked by the images test".to_string()),
            no_reboot: true,
            tags: tags.clone(),
            snapshot_tags: tags.clone(),
        })
        .await
        .unwrap();
    let found = client
        .describe_images_by(&ImageFilter::tagged("endstate:bake", "web"))
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].id, image);
    assert_eq!(found[0].state, "available");
    assert_eq!(found[0].tags, tags);
    assert!(found[0].creation_date.is_some());
    assert!(
        found[0].snapshot_ids.is_empty(),
        "the built-in cloud's images are layers, not snapshots"
    );
    let own = client
        .describe_images_by(&ImageFilter::default())
        .await
        .unwrap();
    let mut own_ids: Vec<&str> = own.iter().map(|i| i.id.as_str()).collect();
    own_ids.sort();
    let mut expected = vec![base.as_str(), image.as_str()];
    expected.sort();
    assert_eq!(own_ids, expected, "Owner=self: the base image and ours");

    // An instance of the new image has what the build instance wrote.
    let child = client
        .run_instances(&launch(&image, "bake-child", "us-east-1b"))
        .await
        .unwrap()
        .remove(0);
    cleanup.1.push(child.id.clone());
    assert_eq!(child.image_id, image);
    wait_for(&client, &child.id, InstanceState::Running).await;
    assert_eq!(
        std::fs::read_to_string(backend.instance_dir(&child.id).join("root/srv/built-by")).unwrap(),
        format!("{build}\n")
    );

    // Retention: deregister; there are no snapshots to delete, and a
    // snapshot id is answered as EC2 answers an unknown one.
    client
        .terminate_instances(&[build.clone(), child.id.clone()])
        .await
        .unwrap();
    client.deregister_image(&image).await.unwrap();
    assert!(client
        .describe_images_by(&ImageFilter::tagged("endstate:bake", "web"))
        .await
        .unwrap()
        .is_empty());
    let error = client
        .describe_images_by(&ImageFilter::ids([image.clone()]))
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), "InvalidAMIID.NotFound");
    let error = client
        .delete_snapshot("snap-0123456789abcdef0")
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), "InvalidSnapshot.NotFound");
    assert!(error.is_not_found() && !error.is_retryable());
    let error = client
        .run_instances(&launch(&image, "bake-late", "us-east-1a"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), "InvalidAMIID.NotFound");
    cloud.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_bake_on_the_simulated_backend_runs_the_same_calls() {
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let clock = common::clock();
    let cloud = common::start(common::config(&clock)).await;
    let client = common::client(&cloud);

    let build = client
        .run_instances(&launch(common::IMAGE, "sim-build", "us-east-1a"))
        .await
        .unwrap()
        .remove(0)
        .id;
    clock.advance(Duration::from_secs(60));
    // Simulated instances print nothing.
    assert_eq!(Images::console_output(&client, &build).await.unwrap(), "");
    let stopped = client
        .stop_instances(std::slice::from_ref(&build))
        .await
        .unwrap();
    assert_eq!(stopped, [(build.clone(), InstanceState::Stopping)]);
    clock.advance(Duration::from_secs(60));

    let request = CreateImageRequest {
        instance_id: build.clone(),
        name: "web-sim".to_string(),
        description: None,
        no_reboot: false,
        tags: BTreeMap::from([("endstate:bake".to_string(), "web".to_string())]),
        snapshot_tags: BTreeMap::new(),
    };
    let image = client.create_image(&request).await.unwrap();
    let error = client.create_image(&request).await.unwrap_err();
    assert_eq!(api_code(&error), "InvalidAMIName.Duplicate");
    let mut filter = ImageFilter::tagged("endstate:bake", "web");
    filter.names = vec!["web-*".to_string()];
    filter.states = vec!["available".to_string()];
    filter.tag_keys = vec!["endstate:*".to_string()];
    let found = client.describe_images_by(&filter).await.unwrap();
    assert_eq!(
        found.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        [image.as_str()]
    );
    let child = client
        .run_instances(&launch(&image, "sim-child", "us-east-1b"))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(child.image_id, image);

    // The aws CLI (botocore) makes and finds one too.
    let url = cloud.url();
    let auth = (common::ACCESS_KEY, common::SECRET);
    let made = common::aws_as(
        &url,
        auth.0,
        auth.1,
        &[
            "ec2",
            "create-image",
            "--instance-id",
            &build,
            "--name",
            "web-cli",
            "--tag-specifications",
            "ResourceType=image,Tags=[{Key=endstate:bake,Value=cli}]",
        ],
    )
    .await;
    let cli_image = made["ImageId"].as_str().unwrap().to_string();
    let listed = common::aws_as(
        &url,
        auth.0,
        auth.1,
        &[
            "ec2",
            "describe-images",
            "--owners",
            "self",
            "--filters",
            "Name=tag:endstate:bake,Values=cli",
        ],
    )
    .await;
    let listed = listed["Images"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["ImageId"], cli_image.as_str());
    assert_eq!(listed[0]["State"], "available");
    assert_eq!(listed[0]["Name"], "web-cli");
    let refused = common::aws_command(
        &url,
        auth.0,
        auth.1,
        &[
            "ec2",
            "delete-snapshot",
            "--snapshot-id",
            "snap-0123456789abcdef0",
        ],
    )
    .output()
    .await
    .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("(InvalidSnapshot.NotFound)")
            && stderr.contains("The snapshot 'snap-0123456789abcdef0' does not exist."),
        "{stderr}"
    );

    client.deregister_image(&image).await.unwrap();
    assert!(client.describe_images_by(&filter).await.unwrap().is_empty());
    let error = client.deregister_image(&image).await.unwrap_err();
    assert_eq!(api_code(&error), "InvalidAMIID.NotFound");
    let error = client.delete_snapshot("snap-nothex").await.unwrap_err();
    assert_eq!(api_code(&error), "InvalidSnapshotID.Malformed");
    let error = client
        .delete_snapshot("snap-0123456789abcdef0")
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), "InvalidSnapshot.NotFound");
    cloud.shutdown().await.unwrap();
}
