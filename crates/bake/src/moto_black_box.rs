//! The instance-style bake against a real moto server, through the
//! recording fault proxy so that every EC2 request is asserted in order:
//! a bake makes RunInstances, reads the console, StopInstances,
//! CreateImage, waits on DescribeImages, CreateTags and TerminateInstances;
//! clean-up makes DeregisterImage and DeleteSnapshot of the image's
//! snapshots; a failing step makes no image and terminates the instance.
//!
//! moto does not boot instances, so nothing runs their user data: the
//! console is read from moto (the request is made and asserted), and
//! `MotoConsoleSaysSteps` — a wrapper for this test only — answers the
//! provisioning markers a booted instance would have printed. Every other
//! call is the real client against moto.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use endstate_bake::builder::{bake, BakeRequest, BuildCloud, Waits};
use endstate_bake::ec2::{BuildSettings, Ec2BuildCloud};
use endstate_bake::{Action, Step};
use endstate_model::recipe::Builder;
use endstate_provider::ec2::{Ec2Client, Ec2Config};
use endstate_testkit::moto::MotoServer;
use endstate_testkit::proxy::FaultProxy;

/// An AMI moto knows out of the box.
const AMI: &str = "ami-12c6146b";

/// The real cloud, except that the console answers what the provisioning
/// script of `nonce` would have printed, after asking moto for it.
struct MotoConsoleSaysSteps<'a> {
    real: Ec2BuildCloud<'a>,
    printed: String,
}

#[async_trait]
impl BuildCloud for MotoConsoleSaysSteps<'_> {
    async fn launch(
        &self,
        image: &str,
        user_data: &[u8],
        tags: &BTreeMap<String, String>,
        token: &str,
    ) -> Result<String, String> {
        self.real.launch(image, user_data, tags, token).await
    }
    async fn instance_state(&self, instance: &str) -> Result<Option<String>, String> {
        self.real.instance_state(instance).await
    }
    async fn console(&self, instance: &str) -> Result<String, String> {
        let real = self.real.console(instance).await?;
        Ok(format!("{real}\n{}", self.printed))
    }
    async fn stop(&self, instance: &str) -> Result<(), String> {
        self.real.stop(instance).await
    }
    async fn create_image(&self, i: &str, name: &str, d: &str) -> Result<String, String> {
        self.real.create_image(i, name, d).await
    }
    async fn image_state(&self, image: &str) -> Result<Option<String>, String> {
        self.real.image_state(image).await
    }
    async fn tag(&self, image: &str, tags: &BTreeMap<String, String>) -> Result<(), String> {
        self.real.tag(image, tags).await
    }
    async fn terminate(&self, instance: &str) -> Result<(), String> {
        self.real.terminate(instance).await
    }
    async fn deregister(&self, image: &str) -> Result<(), String> {
        self.real.deregister(image).await
    }
    async fn bake_volume(
        &self,
        image: &str,
        user_data: &[u8],
        name: &str,
        description: &str,
    ) -> Result<String, String> {
        self.real
            .bake_volume(image, user_data, name, description)
            .await
    }
    async fn bake_output(&self, image: &str) -> Result<String, String> {
        self.real.bake_output(image).await
    }
}

fn client(url: &str) -> Ec2Client {
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    Ec2Client::with_static_credentials(
        Ec2Config::new("us-east-1").with_endpoint(url.to_string()),
        "testing",
        "testing",
        None,
    )
    .unwrap()
}

fn request(nonce: &str) -> BakeRequest {
    BakeRequest {
        parent_image: AMI.to_string(),
        steps: vec![Step {
            name: "motd".to_string(),
            action: Action::File {
                path: "/etc/motd".to_string(),
                mode: 0o644,
                content: b"baked\n".to_vec(),
            },
        }],
        name: format!("web-{nonce}"),
        description: "endstate bake test".to_string(),
        instance_tags: BTreeMap::from([("endstate:recipe".to_string(), "web".to_string())]),
        image_tags: BTreeMap::from([
            ("endstate:recipe".to_string(), "web".to_string()),
            ("endstate:version".to_string(), "v1".to_string()),
        ]),
        nonce: nonce.to_string(),
        builder: Builder::Instance,
    }
}

fn settings() -> BuildSettings {
    BuildSettings {
        instance_type: "t3.micro".to_string(),
        zone: "us-east-1a".to_string(),
        subnet_id: None,
        security_group_ids: Vec::new(),
        iam_instance_profile: None,
        root_volume: None,
    }
}

fn waits() -> Waits {
    Waits {
        poll: Duration::from_millis(100),
        provision: Duration::from_secs(30),
        stop: Duration::from_secs(30),
        image: Duration::from_secs(30),
    }
}

/// The actions the proxy recorded, in order, polls (Describe*, console)
/// counted once per run of them.
fn actions(proxy: &FaultProxy) -> Vec<String> {
    let mut actions: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter_map(|r| r.action)
        .collect();
    actions.dedup();
    actions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bake_and_its_clean_up_make_the_expected_ec2_calls_in_order() {
    let moto = MotoServer::start().await;
    let proxy = FaultProxy::start(moto.url()).await.unwrap();
    let ec2 = client(&proxy.url());
    let cloud = MotoConsoleSaysSteps {
        real: Ec2BuildCloud {
            provider: &ec2,
            images: &ec2,
            settings: settings(),
        },
        printed: "endstate-bake n1 begin 0\nendstate-bake n1 end 0 exit 0\nendstate-bake n1 done\n"
            .to_string(),
    };
    let baked = bake(&cloud, &request("n1"), &waits(), &|_, _| {})
        .await
        .unwrap();

    let run = proxy.requests_of("RunInstances");
    assert_eq!(run.len(), 1);
    assert_eq!(run[0].param("ImageId"), Some(AMI));
    assert!(
        run[0].param("UserData").is_some(),
        "the steps travel as user data"
    );
    let create = proxy.requests_of("CreateImage");
    assert_eq!(create[0].param("Name"), Some("web-n1"));
    let tags = proxy.requests_of("CreateTags");
    assert_eq!(tags[0].param("ResourceId.1"), Some(baked.image_id.as_str()));

    // Clean-up, as retention does it: the image, then its snapshots.
    let snapshots_before = proxy.requests_of("DeleteSnapshot").len();
    assert_eq!(snapshots_before, 0);
    cloud.deregister(&baked.image_id).await.unwrap();
    let deleted = proxy.requests_of("DeleteSnapshot");
    assert!(
        !deleted.is_empty(),
        "moto gives an image a snapshot per EBS device"
    );
    assert!(cloud.image_state(&baked.image_id).await.unwrap().is_none());

    let order: Vec<String> = actions(&proxy)
        .into_iter()
        .filter(|a| !a.starts_with("Describe"))
        .collect();
    assert_eq!(
        order,
        [
            "RunInstances",
            "GetConsoleOutput",
            "StopInstances",
            "CreateImage",
            "CreateTags",
            "TerminateInstances",
            "DeregisterImage",
            "DeleteSnapshot"
        ],
        "{:?}",
        actions(&proxy)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_makes_no_image_and_terminates_the_build_instance() {
    let moto = MotoServer::start().await;
    let proxy = FaultProxy::start(moto.url()).await.unwrap();
    let ec2 = client(&proxy.url());
    let cloud = MotoConsoleSaysSteps {
        real: Ec2BuildCloud {
            provider: &ec2,
            images: &ec2,
            settings: settings(),
        },
        printed: "endstate-bake n2 begin 0\n  | E: Unable to locate package nginx\nendstate-bake n2 end 0 exit 100\n"
            .to_string(),
    };
    let error = bake(&cloud, &request("n2"), &waits(), &|_, _| {})
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "step motd failed with exit status 100:\nE: Unable to locate package nginx"
    );
    assert!(error.left_behind.is_empty());
    assert!(proxy.requests_of("CreateImage").is_empty());
    let terminated = proxy.requests_of("TerminateInstances");
    assert_eq!(terminated.len(), 1);
    let instance = proxy.requests_of("RunInstances")[0]
        .response_body
        .clone()
        .unwrap();
    assert!(
        instance.contains(terminated[0].param("InstanceId.1").unwrap()),
        "the build instance is the one terminated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_bake_on_an_ec2_without_bake_image_fails_clearly_and_makes_nothing() {
    let moto = MotoServer::start().await;
    let proxy = FaultProxy::start(moto.url()).await.unwrap();
    let ec2 = client(&proxy.url());
    let cloud = Ec2BuildCloud {
        provider: &ec2,
        images: &ec2,
        settings: settings(),
    };
    let error = bake(
        &cloud,
        &BakeRequest {
            builder: Builder::Volume,
            ..request("n3")
        },
        &waits(),
        &|_, _| {},
    )
    .await
    .unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with("provision: BakeImage: ")
            && text.ends_with(
                "volume-style bakes need the built-in cloud's process backend (use builder: instance elsewhere)"
            ),
        "{text}"
    );
    assert!(error.left_behind.is_empty());
    assert_eq!(actions(&proxy), ["BakeImage"]);
    assert!(proxy.requests_of("RunInstances").is_empty());
}
