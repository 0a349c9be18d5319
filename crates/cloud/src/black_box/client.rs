//! endstate's own `Ec2Client` against the built-in cloud: launch, describe
//! with paging, terminate, tags, images, zones, ClientToken semantics,
//! eventual consistency, throttling, capacity, user data size, and seeded
//! faults.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use crate::black_box::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use endstate_cloud::{Faults, Throttling};
use endstate_provider::{Filter, InstanceState, Provider, ProviderError};

async fn describe_all(
    client: &endstate_provider::ec2::Ec2Client,
    filters: &[Filter],
) -> (Vec<endstate_provider::Instance>, usize) {
    endstate_provider::describe_all(client, filters)
        .await
        .unwrap()
}

fn api_code(error: &ProviderError) -> (&str, u16) {
    match error {
        ProviderError::Api { code, status, .. } => (code.as_str(), *status),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn launch_describe_in_pages_and_terminate() {
    let clock = clock();
    let cloud = start(config(&clock)).await;
    let client = client(&cloud).with_page_size(5);

    let web = client
        .run_instances(&launch(7, "us-east-1a", "tok-web", "web"))
        .await
        .unwrap();
    let api = client
        .run_instances(&launch(5, "us-east-1b", "tok-api", "api"))
        .await
        .unwrap();
    assert_eq!(web.len(), 7);
    assert!(web.iter().all(|i| i.state == InstanceState::Pending));
    assert!(web.iter().all(|i| i.zone == "us-east-1a"));
    assert_eq!(web[0].tag("endstate:group"), Some("web"));
    assert!(web[0].launch_time.starts_with("2026-11-27T12:00:00"));

    let project = [Filter::tag("endstate:project", "demo")];
    let (all, pages) = describe_all(&client, &project).await;
    assert_eq!(all.len(), 12);
    assert_eq!(pages, 3, "12 instances in pages of 5");
    let (webs, _) = describe_all(&client, &[Filter::tag("endstate:group", "web")]).await;
    assert_eq!(webs.len(), 7);
    let mut ids: Vec<_> = webs.iter().map(|i| i.id.clone()).collect();
    let mut launched: Vec<_> = web.iter().map(|i| i.id.clone()).collect();
    ids.sort();
    launched.sort();
    assert_eq!(ids, launched);

    clock.advance(Duration::from_secs(15));
    let (running, _) = describe_all(
        &client,
        &[
            Filter::tag("endstate:project", "demo"),
            Filter::new("instance-state-name", ["running"]),
            Filter::new("availability-zone", ["us-east-1b"]),
        ],
    )
    .await;
    assert_eq!(running.len(), 5);

    let doomed: Vec<String> = api.iter().map(|i| i.id.clone()).collect();
    let changes = client.terminate_instances(&doomed).await.unwrap();
    assert_eq!(changes.len(), 5);
    assert!(changes
        .iter()
        .all(|(_, s)| *s == InstanceState::ShuttingDown));
    clock.advance(Duration::from_secs(10));
    let (terminated, _) = describe_all(
        &client,
        &[Filter::new("instance-state-name", ["terminated"])],
    )
    .await;
    assert_eq!(terminated.len(), 5);

    let error = client
        .terminate_instances(&["i-0123456789abcdef0".to_string()])
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), ("InvalidInstanceID.NotFound", 400));
    let error = client
        .terminate_instances(&["i-nothex".to_string()])
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), ("InvalidInstanceID.Malformed", 400));
    cloud.shutdown().await.unwrap();
}

#[tokio::test]
async fn tags_zones_and_images() {
    let clock = clock();
    let cloud = start(config(&clock)).await;
    let client = client(&cloud);
    let ids: Vec<String> = client
        .run_instances(&launch(3, "us-east-1c", "tok-tags", "web"))
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();

    let tags = BTreeMap::from([
        ("endstate:group".to_string(), "api".to_string()),
        ("owner".to_string(), "ops".to_string()),
    ]);
    client.create_tags(&ids[..2], &tags).await.unwrap();
    let (api, _) = describe_all(&client, &[Filter::tag("endstate:group", "api")]).await;
    assert_eq!(api.len(), 2, "retagged instances move between tag values");
    let (web, _) = describe_all(&client, &[Filter::tag("endstate:group", "web")]).await;
    assert_eq!(web.len(), 1);
    let (owned, _) = describe_all(&client, &[Filter::new("tag-key", ["own*"])]).await;
    assert_eq!(owned.len(), 2);

    client
        .delete_tags(&ids, &["owner".to_string()])
        .await
        .unwrap();
    let (owned, _) = describe_all(&client, &[Filter::new("tag-key", ["owner"])]).await;
    assert!(owned.is_empty());

    let zones = client.describe_availability_zones().await.unwrap();
    assert_eq!(zones, ["us-east-1a", "us-east-1b", "us-east-1c"]);
    let images = client.describe_images(&[IMAGE.to_string()]).await.unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].name.as_deref(), Some("endstate-base"));
    let error = client
        .describe_images(&["ami-0000000000000000a".to_string()])
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), ("InvalidAMIID.NotFound", 400));

    let mut bad = launch(1, "us-east-1a", "tok-bad-ami", "web");
    bad.image_id = "ami-0000000000000000a".to_string();
    let error = client.run_instances(&bad).await.unwrap_err();
    assert_eq!(api_code(&error), ("InvalidAMIID.NotFound", 400));
    let mut bad = launch(1, "us-east-1z", "tok-bad-zone", "web");
    bad.zone = "us-east-1z".to_string();
    let error = client.run_instances(&bad).await.unwrap_err();
    assert_eq!(api_code(&error), ("InvalidParameterValue", 400));
}

#[tokio::test]
async fn client_token_returns_the_same_reservation_or_a_mismatch() {
    let clock = clock();
    let cloud = start(config(&clock)).await;
    let client = client(&cloud);
    let first = client
        .run_instances(&launch(3, "us-east-1a", "es-intent-1", "web"))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(20));
    let again = client
        .run_instances(&launch(3, "us-east-1a", "es-intent-1", "web"))
        .await
        .unwrap();
    let ids =
        |v: &[endstate_provider::Instance]| v.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first), ids(&again));
    assert!(again.iter().all(|i| i.state == InstanceState::Running));
    let (all, _) = describe_all(&client, &[]).await;
    assert_eq!(all.len(), 3, "no second launch");
    let (by_token, _) =
        describe_all(&client, &[Filter::new("client-token", ["es-intent-1"])]).await;
    assert_eq!(by_token.len(), 3);

    let error = client
        .run_instances(&launch(4, "us-east-1a", "es-intent-1", "web"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), ("IdempotentParameterMismatch", 400));
}

#[tokio::test]
async fn new_instances_are_missing_from_describe_for_the_consistency_window() {
    let clock = clock();
    let mut config = config(&clock);
    config.simulated.consistency_delay = Duration::from_secs(2);
    let cloud = start(config).await;
    let client = client(&cloud);
    let launched = client
        .run_instances(&launch(2, "us-east-1a", "tok-ec", "web"))
        .await
        .unwrap();
    assert_eq!(launched.len(), 2, "RunInstances' own answer has them");
    let (seen, _) = describe_all(&client, &[Filter::tag("endstate:project", "demo")]).await;
    assert!(seen.is_empty());
    clock.advance(Duration::from_millis(1_999));
    let (seen, _) = describe_all(&client, &[Filter::tag("endstate:project", "demo")]).await;
    assert!(seen.is_empty());
    clock.advance(Duration::from_millis(1));
    let (seen, _) = describe_all(&client, &[Filter::tag("endstate:project", "demo")]).await;
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn run_instances_is_throttled_like_ec2() {
    let clock = clock();
    let mut config = config(&clock);
    config.simulated.throttling = Some(Throttling::ec2_defaults());
    let cloud = start(config).await;
    let client = client(&cloud);
    for i in 0..5 {
        client
            .run_instances(&launch(1, "us-east-1a", &format!("tok-{i}"), "web"))
            .await
            .unwrap();
    }
    let error = client
        .run_instances(&launch(1, "us-east-1a", "tok-5", "web"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), ("RequestLimitExceeded", 503));
    assert!(error.is_throttle());
    clock.advance(Duration::from_millis(500));
    client
        .run_instances(&launch(1, "us-east-1a", "tok-5", "web"))
        .await
        .unwrap();
    // Describes draw from another bucket.
    describe_all(&client, &[Filter::tag("endstate:project", "demo")]).await;

    // The resource bucket: 1,000 instances at once, then 2 per second.
    clock.advance(Duration::from_secs(10));
    client
        .run_instances(&launch(994, "us-east-1b", "tok-big", "web"))
        .await
        .unwrap();
    let error = client
        .run_instances(&launch(10, "us-east-1b", "tok-more", "web"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), ("RequestLimitExceeded", 503));
}

#[tokio::test]
async fn capacity_per_zone_and_type_is_enforced() {
    let clock = clock();
    let mut config = config(&clock);
    config
        .simulated
        .capacity
        .insert(("us-east-1a".to_string(), "t3.micro".to_string()), 3);
    let cloud = start(config).await;
    let client = client(&cloud);
    let first = client
        .run_instances(&launch(2, "us-east-1a", "tok-1", "web"))
        .await
        .unwrap();
    let error = client
        .run_instances(&launch(2, "us-east-1a", "tok-2", "web"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), ("InsufficientInstanceCapacity", 500));
    assert!(error.is_capacity());
    // Another zone has room; terminating frees the first.
    client
        .run_instances(&launch(2, "us-east-1b", "tok-3", "web"))
        .await
        .unwrap();
    client
        .terminate_instances(&[first[0].id.clone()])
        .await
        .unwrap();
    client
        .run_instances(&launch(2, "us-east-1a", "tok-2", "web"))
        .await
        .unwrap();
}

#[tokio::test]
async fn user_data_over_16_kib_is_refused_as_on_ec2() {
    let clock = clock();
    let cloud = start(config(&clock)).await;
    let client = client(&cloud);
    let mut request = launch(1, "us-east-1a", "tok-ud", "web");
    request.user_data = Some(vec![b'x'; 16_385]);
    let error = client.run_instances(&request).await.unwrap_err();
    let ProviderError::Api {
        code,
        message,
        status,
        ..
    } = &error
    else {
        panic!("{error}");
    };
    assert_eq!((code.as_str(), *status), ("InvalidParameterValue", 400));
    assert_eq!(message, "User data is limited to 16384 bytes");
    request.user_data = Some(vec![b'x'; 16_384]);
    client.run_instances(&request).await.unwrap();
}

async fn fault_pattern(seed: u64) -> Vec<bool> {
    let clock = clock();
    let mut config = config(&clock);
    config.simulated.faults = Faults {
        seed,
        error_rates: BTreeMap::from([("DescribeAvailabilityZones".to_string(), 0.3)]),
        ..Faults::default()
    };
    let cloud = start(config).await;
    let client = client(&cloud);
    let mut outcomes = Vec::new();
    for _ in 0..40 {
        match client.describe_availability_zones().await {
            Ok(_) => outcomes.push(true),
            Err(error) => {
                assert_eq!(api_code(&error), ("InternalError", 500));
                assert!(error.is_retryable());
                outcomes.push(false);
            }
        }
    }
    // Other actions are untouched.
    client.describe_images(&[]).await.unwrap();
    cloud.shutdown().await.unwrap();
    outcomes
}

#[tokio::test]
async fn seeded_faults_repeat() {
    let first = fault_pattern(7).await;
    let second = fault_pattern(7).await;
    assert_eq!(first, second);
    let failures = first.iter().filter(|ok| !**ok).count();
    assert!((3..=25).contains(&failures), "{failures} of 40 failed");
    let other = fault_pattern(8).await;
    assert_ne!(first, other, "another seed, another pattern");
}

/// The instance status of each of `ids`, in order.
async fn instance_statuses(
    client: &endstate_provider::ec2::Ec2Client,
    ids: &[String],
) -> Vec<String> {
    let answer = client
        .describe_instance_status(&endstate_wire::DescribeInstanceStatusRequest {
            instance_ids: ids.to_vec(),
            include_all_instances: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    ids.iter()
        .map(|id| {
            answer
                .statuses
                .iter()
                .find(|s| &s.instance_id == id)
                .map(|s| s.instance_status.clone())
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn seeded_instance_failures_impair_a_share_of_instances_within_the_window() {
    let run = |seed: u64| async move {
        let clock = clock();
        let mut config = config(&clock);
        config.simulated.faults = Faults {
            seed,
            instance_failure_rate: 0.25,
            failure_window: Duration::from_secs(600),
            ..Faults::default()
        };
        let cloud = start(config).await;
        let client = client(&cloud);
        let ids: Vec<String> = client
            .run_instances(&launch(200, "us-east-1a", "tok-failures", "web"))
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        // Pending: not applicable yet; just running: none failed yet
        // unless at once; after the window: about a quarter.
        clock.advance(Duration::from_secs(60));
        let early = instance_statuses(&client, &ids).await;
        clock.advance(Duration::from_secs(700));
        let late = instance_statuses(&client, &ids).await;
        (early, late)
    };
    let (early, late) = run(11).await;
    let impaired = |v: &[String]| v.iter().filter(|s| *s == "impaired").count();
    assert!(
        late.iter().all(|s| s == "ok" || s == "impaired"),
        "{late:?}"
    );
    assert!(
        (30..=70).contains(&impaired(&late)),
        "{} of 200 failed",
        impaired(&late)
    );
    assert!(
        impaired(&early) < impaired(&late),
        "failures spread over the window"
    );
    for (e, l) in early.iter().zip(&late) {
        assert!(
            !(e == "impaired" && l == "ok"),
            "a failed instance stays failed"
        );
    }
    assert_eq!(
        run(11).await,
        (early, late.clone()),
        "the same seed, the same failures"
    );
    assert_ne!(run(12).await.1, late, "another seed, other failures");
}

#[tokio::test]
async fn describe_filters_by_state_code_and_private_address() {
    let clock = clock();
    let cloud = start(config(&clock)).await;
    let client = client(&cloud);
    let launched = client
        .run_instances(&launch(3, "us-east-1a", "tok-filters", "web"))
        .await
        .unwrap();
    let project = Filter::tag("endstate:project", "demo");
    let code = |codes: &[&str]| {
        [
            project.clone(),
            Filter::new("instance-state-code", codes.iter().map(|c| c.to_string())),
        ]
    };
    // 0 is pending, 16 running (EC2's InstanceState codes).
    let (pending, _) = describe_all(&client, &code(&["0"])).await;
    assert_eq!(pending.len(), 3);
    assert!(describe_all(&client, &code(&["16"])).await.0.is_empty());
    clock.advance(Duration::from_secs(15));
    let (running, _) = describe_all(&client, &code(&["16", "80"])).await;
    assert_eq!(running.len(), 3);
    assert!(running.iter().all(|i| i.state == InstanceState::Running));

    // The address DescribeInstances reports selects that instance alone.
    let address = launched[1].private_ip.clone().unwrap();
    let (found, _) = describe_all(
        &client,
        &[
            project.clone(),
            Filter::new("private-ip-address", [address.clone()]),
        ],
    )
    .await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, launched[1].id);
    assert_eq!(found[0].private_ip.as_deref(), Some(address.as_str()));
    let (none, _) =
        describe_all(&client, &[Filter::new("private-ip-address", ["192.0.2.1"])]).await;
    assert!(none.is_empty());
    cloud.shutdown().await.unwrap();
}

#[tokio::test]
async fn tag_rules_follow_ec2() {
    let clock = clock();
    let cloud = start(config(&clock)).await;
    let client = client(&cloud);
    let ids: Vec<String> = client
        .run_instances(&launch(1, "us-east-1a", "tok-rules", "web"))
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    let tags_of = |found: Vec<endstate_provider::Instance>| found[0].tags.clone();

    // Two tags and 49 more are over EC2's 50 per resource: TagLimitExceeded,
    // and nothing changes.
    let many: BTreeMap<String, String> = (0..49)
        .map(|n| (format!("key{n:02}"), n.to_string()))
        .collect();
    let error = client.create_tags(&ids, &many).await.unwrap_err();
    assert_eq!(api_code(&error), ("TagLimitExceeded", 400));
    let (found, _) = describe_all(&client, &[Filter::new("instance-id", ids.clone())]).await;
    assert_eq!(tags_of(found).len(), 2);
    let mut too_many = launch(1, "us-east-1a", "tok-too-many", "web");
    too_many.tags.extend(many.clone());
    let error = client.run_instances(&too_many).await.unwrap_err();
    assert_eq!(api_code(&error), ("TagLimitExceeded", 400));

    // Keys starting with aws: (in any case) are AWS's own.
    for key in ["aws:owner", "AWS:Owner", "Aws:x"] {
        let reserved = BTreeMap::from([(key.to_string(), "me".to_string())]);
        let error = client.create_tags(&ids, &reserved).await.unwrap_err();
        assert_eq!(api_code(&error), ("InvalidParameterValue", 400), "{key}");
        let error = client
            .delete_tags(&ids, &[key.to_string()])
            .await
            .unwrap_err();
        assert_eq!(api_code(&error), ("InvalidParameterValue", 400), "{key}");
        let mut launch_reserved = launch(1, "us-east-1a", &format!("tok-{key}"), "web");
        launch_reserved.tags.extend(reserved);
        let error = client.run_instances(&launch_reserved).await.unwrap_err();
        assert_eq!(api_code(&error), ("InvalidParameterValue", 400), "{key}");
    }
    // A key that merely starts with "aws" is the user's.
    let awsome = BTreeMap::from([("awsome".to_string(), "yes".to_string())]);
    client.create_tags(&ids, &awsome).await.unwrap();

    // An image and an instance in one call; DescribeImages shows the tag.
    let both = vec![ids[0].clone(), IMAGE.to_string()];
    let label = BTreeMap::from([("label".to_string(), "golden".to_string())]);
    client.create_tags(&both, &label).await.unwrap();
    let images = client.describe_images(&[IMAGE.to_string()]).await.unwrap();
    assert_eq!(images[0].tags, label);
    let (found, _) = describe_all(&client, &[Filter::tag("label", "golden")]).await;
    assert_eq!(found.len(), 1);
    client
        .delete_tags(&both, &["label".to_string()])
        .await
        .unwrap();
    let images = client.describe_images(&[IMAGE.to_string()]).await.unwrap();
    assert!(images[0].tags.is_empty(), "{images:?}");
    assert!(describe_all(&client, &[Filter::tag("label", "golden")])
        .await
        .0
        .is_empty());

    // An image id that names no image; ids that are no resource id at all,
    // i- ones included.
    let unknown_image = vec!["ami-0000000000000000a".to_string()];
    let error = client
        .create_tags(&unknown_image, &label)
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), ("InvalidAMIID.NotFound", 400));
    let error = client
        .delete_tags(&unknown_image, &["label".to_string()])
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), ("InvalidAMIID.NotFound", 400));
    for bad in ["i-nothex!", "ami-xyz", "bogus"] {
        let error = client
            .create_tags(&[ids[0].clone(), bad.to_string()], &label)
            .await
            .unwrap_err();
        assert_eq!(api_code(&error), ("InvalidID", 400), "{bad}");
        let error = client
            .delete_tags(&[bad.to_string()], &["label".to_string()])
            .await
            .unwrap_err();
        assert_eq!(api_code(&error), ("InvalidID", 400), "{bad}");
    }
    // Nothing of a refused call was applied.
    assert!(describe_all(&client, &[Filter::tag("label", "golden")])
        .await
        .0
        .is_empty());
    cloud.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_simulated_backend_refuses_instance_utilization() {
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let clock = clock();
    let cloud = start(config(&clock)).await;
    let client = client(&cloud);
    client
        .run_instances(&launch(1, "us-east-1a", "tok-util", "web"))
        .await
        .unwrap();
    // Its instances are records that use no CPU: an empty answer would
    // read as idle instances, so it says it cannot tell.
    let err = client.instance_utilization(&[]).await.unwrap_err();
    assert_eq!(api_code(&err), ("UnsupportedOperation", 400));
    assert!(err.is_unsupported());
    assert!(!err.is_retryable());
}
