//! `Ec2Client`'s [`Images`] calls against a real moto server (one per
//! test, on loopback): the sequence of an instance-style bake and its
//! retention — launch, console output, stop, CreateImage with tags, wait
//! until `available`, find it by tag with its snapshot ids, deregister,
//! delete the snapshots — and that what was deleted is gone.

// Tests fail by panicking; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use endstate_provider::ec2::{Ec2Client, Ec2Config};
use endstate_provider::images::{CreateImageRequest, ImageFilter, ImageInfo, Images};
use endstate_provider::{InstanceState, LaunchRequest, Operation, Provider};
use endstate_testkit::moto::MotoServer;

/// An AMI moto knows out of the box.
const AMI: &str = "ami-12c6146b";

fn client(moto: &MotoServer) -> Ec2Client {
    // The provider touches AWS SDK code (credentials); no IMDS lookups.
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let config = Ec2Config::new("us-east-1").with_endpoint(moto.url());
    Ec2Client::with_static_credentials(config, "testing", "testing", None).unwrap()
}

fn build_instance() -> LaunchRequest {
    LaunchRequest {
        image_id: AMI.into(),
        instance_type: "t3.micro".into(),
        count: 1,
        zone: "us-east-1a".into(),
        subnet_id: None,
        security_group_ids: vec![],
        key_name: None,
        iam_instance_profile: None,
        root_volume: Some(endstate_model::RootVolume {
            size_gib: 8,
            volume_type: "gp3".into(),
        }),
        metadata: Default::default(),
        user_data: Some(b"#!/bin/sh\necho provisioned\n".to_vec()),
        tags: BTreeMap::from([("endstate:bake".to_string(), "web".to_string())]),
        client_token: "bake-web-1".into(),
    }
}

/// DescribeImages until the image is `available` (moto makes it so at
/// once; EC2 takes minutes), at most 30 s.
async fn wait_available(client: &Ec2Client, id: &str) -> ImageInfo {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let images = client
            .describe_images_by(&ImageFilter::ids([id]))
            .await
            .unwrap();
        assert_eq!(images.len(), 1, "{images:?}");
        if images[0].state == "available" {
            return images[0].clone();
        }
        assert_ne!(images[0].state, "failed", "{images:?}");
        assert!(Instant::now() < deadline, "{id} not available: {images:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_bake_and_its_retention_run_against_moto() {
    let moto = MotoServer::start().await;
    let client = client(&moto);

    let launched = client.run_instances(&build_instance()).await.unwrap();
    let id = launched[0].id.clone();
    let console = client.console_output(&id).await;
    let text = Images::console_output(&client, &id).await.unwrap();
    // moto prints a fixed boot log; ours decodes the same bytes as the
    // inherent (bytes) call.
    assert!(!text.is_empty());
    assert_eq!(text.as_bytes(), console.unwrap().as_slice());

    let stopped = client
        .stop_instances(std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0].0, id);
    assert!(
        matches!(
            stopped[0].1,
            InstanceState::Stopping | InstanceState::Stopped
        ),
        "{stopped:?}"
    );

    let tags = BTreeMap::from([
        ("endstate:bake".to_string(), "web".to_string()),
        ("endstate:parent".to_string(), AMI.to_string()),
    ]);
    let image_id = client
        .create_image(&CreateImageRequest {
            instance_id: id.clone(),
            name: "web-2026-11-28".into(),
            description: Some("baked by endstate".into()),
            no_reboot: true,
            tags: tags.clone(),
            // moto 5.2.5 has not implemented snapshot tag specifications.
            snapshot_tags: BTreeMap::new(),
        })
        .await
        .unwrap();
    assert!(image_id.starts_with("ami-"), "{image_id}");
    let image = wait_available(&client, &image_id).await;
    assert_eq!(image.name.as_deref(), Some("web-2026-11-28"));
    assert_eq!(image.tags, tags);
    assert!(image.creation_date.is_some(), "{image:?}");

    // Found by tag among the account's own images (moto's public catalogue
    // is not), with the snapshot of its root volume.
    let by_tag = client
        .describe_images_by(&ImageFilter::tagged("endstate:bake", "web"))
        .await
        .unwrap();
    assert_eq!(by_tag.len(), 1, "{by_tag:?}");
    assert_eq!(by_tag[0].id, image_id);
    let snapshots = by_tag[0].snapshot_ids.clone();
    assert!(!snapshots.is_empty(), "{by_tag:?}");
    assert!(
        snapshots.iter().all(|s| s.starts_with("snap-")),
        "{snapshots:?}"
    );
    let mut narrower = ImageFilter::tagged("endstate:bake", "web");
    narrower.tag_keys = vec!["endstate:parent".into()];
    narrower.names = vec!["web-*".into()];
    narrower.states = vec!["available".into()];
    assert_eq!(client.describe_images_by(&narrower).await.unwrap(), by_tag);
    narrower.names = vec!["api-*".into()];
    assert!(client
        .describe_images_by(&narrower)
        .await
        .unwrap()
        .is_empty());
    let own = client
        .describe_images_by(&ImageFilter::default())
        .await
        .unwrap();
    assert_eq!(
        own.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        [image_id.as_str()],
        "Owner=self lists only the account's images"
    );

    // Retention: the image first (a snapshot in use cannot go), then its
    // snapshots.
    client.deregister_image(&image_id).await.unwrap();
    for snapshot in &snapshots {
        client.delete_snapshot(snapshot).await.unwrap();
    }

    // Gone: not listed by tag, unknown by id, and a snapshot cannot be
    // deleted twice.
    assert!(client
        .describe_images_by(&ImageFilter::tagged("endstate:bake", "web"))
        .await
        .unwrap()
        .is_empty());
    let error = client
        .describe_images_by(&ImageFilter::ids([image_id.clone()]))
        .await;
    match error {
        Err(e) => assert_eq!(e.code(), Some("InvalidAMIID.NotFound"), "{e}"),
        Ok(images) => assert!(images.is_empty(), "{images:?}"),
    }
    for snapshot in &snapshots {
        let error = client.delete_snapshot(snapshot).await.unwrap_err();
        assert_eq!(error.code(), Some("InvalidSnapshot.NotFound"), "{error}");
        assert!(error.is_not_found());
        assert!(!error.is_retryable());
    }
    let counts = client.request_counts();
    assert_eq!(counts.get(&Operation::CreateImage), Some(&1));
    assert_eq!(counts.get(&Operation::StopInstances), Some(&1));
    assert_eq!(counts.get(&Operation::DeregisterImage), Some(&1));
    assert_eq!(
        counts.get(&Operation::DeleteSnapshot),
        Some(&(2 * snapshots.len() as u64))
    );
}
