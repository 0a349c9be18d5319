//! `Ec2Client` against a real moto server (one per test, on loopback), and
//! its transport errors against sockets that refuse or never answer.
//!
//! moto does not check signatures, so signing is tested in `ec2.rs`
//! (against botocore's values) and in `ec2_credential_chain.rs` (the
//! headers a real request carries).

// Tests fail by panicking; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use endstate_provider::ec2::{Ec2Client, Ec2Config};
use endstate_provider::{
    Filter, Instance, InstanceState, LaunchRequest, Operation, Provider, ProviderError,
};
use endstate_testkit::moto::MotoServer;

/// An AMI moto knows out of the box.
const AMI: &str = "ami-12c6146b";

fn client(moto: &MotoServer) -> Ec2Client {
    let config = Ec2Config::new("us-east-1").with_endpoint(moto.url());
    Ec2Client::with_static_credentials(config, "testing", "testing", None).unwrap()
}

fn launch(project: &str, count: u32, token: &str) -> LaunchRequest {
    LaunchRequest {
        image_id: AMI.into(),
        instance_type: "t3.micro".into(),
        count,
        zone: "us-east-1b".into(),
        subnet_id: None,
        security_group_ids: vec![],
        key_name: None,
        iam_instance_profile: None,
        root_volume: Some(endstate_model::RootVolume {
            size_gib: 12,
            volume_type: "gp3".into(),
        }),
        metadata: Default::default(),
        user_data: Some(b"#!/bin/sh\necho hello\n".to_vec()),
        tags: [
            ("endstate:project".to_string(), project.to_string()),
            ("endstate:group".to_string(), "web".to_string()),
        ]
        .into_iter()
        .collect(),
        client_token: token.into(),
    }
}

async fn describe_all(client: &Ec2Client, filters: &[Filter]) -> (Vec<Instance>, usize) {
    endstate_provider::describe_all(client, filters)
        .await
        .unwrap()
}

#[tokio::test]
async fn runs_three_tagged_instances_in_one_call() {
    let moto = MotoServer::start().await;
    let client = client(&moto);
    let launched = client
        .run_instances(&launch("p1", 3, "intent-1"))
        .await
        .unwrap();
    assert_eq!(launched.len(), 3);
    for instance in &launched {
        assert!(instance.id.starts_with("i-"), "{}", instance.id);
        assert_eq!(instance.state, InstanceState::Pending);
        assert_eq!(instance.zone, "us-east-1b");
        assert_eq!(instance.image_id, AMI);
        assert_eq!(instance.instance_type, "t3.micro");
        assert_eq!(instance.client_token.as_deref(), Some("intent-1"));
        assert_eq!(instance.tag("endstate:project"), Some("p1"));
        assert_eq!(instance.tag("endstate:group"), Some("web"));
        assert!(instance.private_ip.is_some());
        assert!(instance.launch_time.starts_with("20"));
    }
    let (seen, pages) = describe_all(&client, &[Filter::tag("endstate:project", "p1")]).await;
    assert_eq!(pages, 1);
    assert_eq!(seen.len(), 3);
    // moto moves pending instances to running by the next describe.
    assert!(seen.iter().all(|i| i.state == InstanceState::Running));
    let counts = client.request_counts();
    assert_eq!(counts.get(&Operation::RunInstances), Some(&1));
    assert_eq!(counts.get(&Operation::DescribeInstances), Some(&1));
}

#[tokio::test]
async fn describes_by_tag_in_pages() {
    let moto = MotoServer::start().await;
    // moto pages by reservation, so 25 one-instance launches make 25
    // reservations: pages of 10, 10 and 5.
    let client = client(&moto).with_page_size(10);
    for n in 0..25 {
        client
            .run_instances(&launch("paged", 1, &format!("t-{n}")))
            .await
            .unwrap();
    }
    client
        .run_instances(&launch("other", 2, "t-other"))
        .await
        .unwrap();
    let (seen, pages) = describe_all(&client, &[Filter::tag("endstate:project", "paged")]).await;
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 25);
    let ids: HashSet<&str> = seen.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids.len(), 25);
    assert!(seen
        .iter()
        .all(|i| i.tag("endstate:project") == Some("paged")));
    assert_eq!(
        client.request_counts().get(&Operation::DescribeInstances),
        Some(&3)
    );
}

#[tokio::test]
async fn terminates_and_filters_by_state() {
    let moto = MotoServer::start().await;
    let client = client(&moto);
    let launched = client.run_instances(&launch("p3", 3, "t")).await.unwrap();
    let doomed = vec![launched[0].id.clone(), launched[1].id.clone()];
    let changes = client.terminate_instances(&doomed).await.unwrap();
    let changes: BTreeMap<String, InstanceState> = changes.into_iter().collect();
    assert_eq!(changes.len(), 2);
    assert!(
        changes.values().all(|s| *s == InstanceState::ShuttingDown),
        "{changes:?}"
    );

    let live = [
        Filter::tag("endstate:project", "p3"),
        Filter::new("instance-state-name", ["pending", "running"]),
    ];
    let (alive, _) = describe_all(&client, &live).await;
    assert_eq!(
        alive.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec![launched[2].id.as_str()]
    );
    let (all, _) = describe_all(&client, &[Filter::tag("endstate:project", "p3")]).await;
    let gone: Vec<_> = all.iter().filter(|i| doomed.contains(&i.id)).collect();
    assert_eq!(gone.len(), 2);
    assert!(gone.iter().all(|i| i.state == InstanceState::Terminated));
    // An empty call is no call.
    assert!(client.terminate_instances(&[]).await.unwrap().is_empty());
    assert_eq!(
        client.request_counts().get(&Operation::TerminateInstances),
        Some(&1)
    );
}

#[tokio::test]
async fn creates_and_deletes_tags() {
    let moto = MotoServer::start().await;
    let client = client(&moto);
    let ids: Vec<String> = client
        .run_instances(&launch("p4", 2, "t"))
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    let tags: BTreeMap<String, String> = [
        ("endstate:generation".to_string(), "7".to_string()),
        ("note".to_string(), "a b&c=d/é".to_string()),
    ]
    .into_iter()
    .collect();
    client.create_tags(&ids, &tags).await.unwrap();
    let (tagged, _) = describe_all(&client, &[Filter::tag("endstate:generation", "7")]).await;
    assert_eq!(tagged.len(), 2);
    assert!(tagged.iter().all(|i| i.tag("note") == Some("a b&c=d/é")));

    client
        .delete_tags(&ids[..1], &["endstate:generation".to_string()])
        .await
        .unwrap();
    let (tagged, _) = describe_all(&client, &[Filter::tag("endstate:generation", "7")]).await;
    assert_eq!(
        tagged.iter().map(|i| &i.id).collect::<Vec<_>>(),
        vec![&ids[1]]
    );
    let (untagged, _) = describe_all(&client, &[Filter::tag("endstate:project", "p4")]).await;
    let first = untagged.iter().find(|i| i.id == ids[0]).unwrap();
    assert_eq!(first.tag("endstate:generation"), None);
    assert_eq!(first.tag("note"), Some("a b&c=d/é"));
}

#[tokio::test]
async fn describes_zones_and_images() {
    let moto = MotoServer::start().await;
    let client = client(&moto);
    let zones = client.describe_availability_zones().await.unwrap();
    for zone in ["us-east-1a", "us-east-1b", "us-east-1c"] {
        assert!(zones.iter().any(|z| z == zone), "{zones:?}");
    }
    let images = client.describe_images(&[AMI.to_string()]).await.unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].id, AMI);
    assert_eq!(images[0].state, "available");
    assert!(images[0].name.is_some());
    assert!(client.describe_images(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn maps_ec2_errors_to_api_errors() {
    let moto = MotoServer::start().await;
    let client = client(&moto);

    let err = client
        .describe_images(&["not-an-ami".to_string()])
        .await
        .unwrap_err();
    match &err {
        ProviderError::Api {
            operation,
            status,
            code,
            message,
            request_id,
        } => {
            assert_eq!(*operation, Operation::DescribeImages);
            assert_eq!(*status, 400);
            assert_eq!(code, "InvalidAMIID.Malformed");
            assert!(message.contains("not-an-ami"), "{message}");
            assert!(request_id.is_some());
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(!err.outcome_unknown());

    // moto answers a malformed instance id with NotFound, where EC2 says
    // InvalidInstanceID.Malformed.
    let err = client
        .terminate_instances(&["not-an-id".to_string()])
        .await
        .unwrap_err();
    assert!(
        err.code()
            .is_some_and(|c| c.starts_with("InvalidInstanceID.")),
        "{err}"
    );
    assert!(matches!(err, ProviderError::Api { status: 400, .. }));

    let tags = [("k".to_string(), "v".to_string())].into_iter().collect();
    let err = client
        .create_tags(&["not-an-id".to_string()], &tags)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidID"));

    // moto crashes on a filter it does not implement, once there is an
    // instance to filter, with an HTML page and HTTP 500: that must still
    // be an API error that keeps its status (retryable, outcome unknown).
    client.run_instances(&launch("p6", 1, "t")).await.unwrap();
    let err = client
        .describe_instances_page(&[Filter::new("no-such-filter", ["x"])], None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Api { status: 500, code, .. } if code == "Http500"),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn connection_refused_is_transport_with_known_outcome() {
    // A port that was free a moment ago and has nothing listening.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = Ec2Config::new("us-east-1").with_endpoint(format!("http://127.0.0.1:{port}/"));
    let client = Ec2Client::with_static_credentials(config, "testing", "testing", None).unwrap();
    let err = client
        .run_instances(&launch("p", 1, "t"))
        .await
        .unwrap_err();
    match &err {
        ProviderError::Transport {
            operation,
            outcome_unknown,
            message,
        } => {
            assert_eq!(*operation, Operation::RunInstances);
            assert!(!outcome_unknown, "{message}");
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert!(!err.outcome_unknown());
    // The attempt is counted.
    assert_eq!(
        client.request_counts().get(&Operation::RunInstances),
        Some(&1)
    );
}

#[tokio::test]
async fn timeout_after_sending_leaves_the_outcome_unknown() {
    // Accepts connections and reads, but never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut config = Ec2Config::new("us-east-1").with_endpoint(format!("http://127.0.0.1:{port}/"));
    config.timeout = Duration::from_millis(300);
    let client = Ec2Client::with_static_credentials(config, "testing", "testing", None).unwrap();
    let err = client
        .run_instances(&launch("p", 1, "t"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Transport {
                outcome_unknown: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.outcome_unknown());
    server.abort();
}
