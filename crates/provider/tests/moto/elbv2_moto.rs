//! `Elbv2Client` against a real moto server (one per test, on loopback):
//! load balancers, target groups with health checks, real moto EC2
//! instances as targets, listeners whose forward action moves from one
//! target group to weighted two, the deregistration delay, deletes, the
//! idempotent creates rollouts rely on, and ELBv2's error documents.
//!
//! moto serves ELBv2 on the URL it serves EC2 on and tells them apart by
//! the signing service, so this also checks that our requests are signed
//! for `elasticloadbalancing`. What moto does not do is stated where the
//! test meets it: real health checks, draining, paging target groups,
//! counting a target group a ModifyListener added as the balancer's, the
//! endstate extension `DescribeTargetGroupRequestCounts` (moto answers
//! HTTP 500); and moto creates a second load balancer or listener of the
//! same name or port, which is why the client looks before it creates.

// Tests fail by panicking; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

use endstate_provider::ec2::{Ec2Client, Ec2Config};
use endstate_provider::elbv2::{
    Elbv2Client, ForwardAction, LoadBalancing, TargetDescription, TargetGroupHealthCheck,
    TargetGroupSpec, WeightedTargetGroup,
};
use endstate_provider::{Filter, LaunchRequest, Operation, Provider, ProviderError};
use endstate_testkit::moto::MotoServer;

/// An AMI moto knows out of the box.
const AMI: &str = "ami-12c6146b";

fn config(moto: &MotoServer) -> Ec2Config {
    // The SDK's credential chain is not used, but nothing here may ever
    // reach for the real metadata service.
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    Ec2Config::new("us-east-1").with_endpoint(moto.url())
}

fn elbv2(moto: &MotoServer) -> Elbv2Client {
    Elbv2Client::with_static_credentials(config(moto), "testing", "testing", None).unwrap()
}

fn launch(zone: &str, count: u32, token: &str) -> LaunchRequest {
    LaunchRequest {
        image_id: AMI.into(),
        instance_type: "t3.micro".into(),
        count,
        zone: zone.into(),
        subnet_id: None,
        security_group_ids: vec![],
        key_name: None,
        iam_instance_profile: None,
        root_volume: None,
        metadata: Default::default(),
        user_data: None,
        tags: [("endstate:project".to_string(), "lb".to_string())]
            .into_iter()
            .collect(),
        client_token: token.into(),
    }
}

/// Two running moto instances in each of two zones: their ids by zone
/// (a, b) and the two zones' default subnets.
async fn instances(moto: &MotoServer) -> (Vec<String>, Vec<String>, Vec<String>) {
    let ec2 = Ec2Client::with_static_credentials(config(moto), "testing", "testing", None).unwrap();
    let a = ec2
        .run_instances(&launch("us-east-1a", 2, "a"))
        .await
        .unwrap();
    let b = ec2
        .run_instances(&launch("us-east-1b", 2, "b"))
        .await
        .unwrap();
    // moto moves pending instances to running by the next describe, and
    // RegisterTargets refuses instances that are not running.
    let (seen, _) = endstate_provider::describe_all(&ec2, &[Filter::tag("endstate:project", "lb")])
        .await
        .unwrap();
    assert_eq!(seen.len(), 4);
    let mut subnets: Vec<String> = seen.iter().filter_map(|i| i.subnet_id.clone()).collect();
    subnets.sort();
    subnets.dedup();
    assert_eq!(subnets.len(), 2, "{subnets:?}");
    (
        a.into_iter().map(|i| i.id).collect(),
        b.into_iter().map(|i| i.id).collect(),
        subnets,
    )
}

/// moto's default VPC, which a target group must name there. Our EC2
/// client has no DescribeVpcs, so this asks moto directly; moto checks no
/// signature, only the service named in the credential scope.
async fn default_vpc(moto: &MotoServer) -> String {
    let body = reqwest::Client::new()
        .post(moto.url())
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, \
             SignedHeaders=host, Signature=0",
        )
        .body(
            "Action=DescribeVpcs&Version=2016-11-15&Filter.1.Name=is-default&Filter.1.Value.1=true",
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let start = body.find("<vpcId>").unwrap() + "<vpcId>".len();
    let end = start + body[start..].find("</vpcId>").unwrap();
    body[start..end].to_string()
}

fn health_check() -> TargetGroupHealthCheck {
    TargetGroupHealthCheck {
        protocol: "HTTP".into(),
        port: "traffic-port".into(),
        path: Some("/healthz".into()),
        interval_seconds: 5,
        timeout_seconds: 2,
        healthy_threshold: 2,
        unhealthy_threshold: 3,
        matcher: Some("200".into()),
    }
}

fn group_spec(name: &str, port: u16, vpc: &str) -> TargetGroupSpec {
    TargetGroupSpec {
        name: name.into(),
        port,
        vpc_id: Some(vpc.into()),
        health_check: health_check(),
        tags: vec![("endstate:generation".into(), name.into())],
    }
}

fn forward(groups: &[(&str, u32)]) -> ForwardAction {
    ForwardAction {
        target_groups: groups
            .iter()
            .map(|(arn, weight)| WeightedTargetGroup {
                target_group_arn: arn.to_string(),
                weight: *weight,
            })
            .collect(),
    }
}

fn targets(ids: &[String], port: Option<u16>) -> Vec<TargetDescription> {
    ids.iter()
        .map(|id| TargetDescription {
            id: id.clone(),
            port,
        })
        .collect()
}

#[tokio::test]
async fn blue_green_listener_over_real_instances() {
    let moto = MotoServer::start().await;
    let (blue_ids, green_ids, subnets) = instances(&moto).await;
    let vpc = default_vpc(&moto).await;
    let client = elbv2(&moto);

    // Load balancer; creating it again returns the same one.
    let tags = vec![("endstate:project".to_string(), "lb".to_string())];
    let lb = client
        .create_load_balancer("web", &subnets, &tags)
        .await
        .unwrap();
    assert!(
        lb.arn
            .starts_with("arn:aws:elasticloadbalancing:us-east-1:"),
        "{}",
        lb.arn
    );
    assert_eq!(lb.name, "web");
    assert!(!lb.dns_name.is_empty());
    let again = client
        .create_load_balancer("web", &subnets, &tags)
        .await
        .unwrap();
    assert_eq!(again.arn, lb.arn);
    let found = client
        .describe_load_balancers(&["web".to_string()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].arn, lb.arn);
    assert!(client
        .describe_load_balancers(&["nope".to_string()])
        .await
        .unwrap()
        .is_empty());
    // ELBv2 fails the whole call when one name is unknown; the client
    // still reports the ones that exist.
    let some = client
        .describe_load_balancers(&["web".to_string(), "nope".to_string()])
        .await
        .unwrap();
    assert_eq!(
        some.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        ["web"]
    );

    // Two target groups with health checks, read back as sent; creating
    // one again returns it, with other settings is refused.
    let blue = client
        .create_target_group(&group_spec("web-blue", 8080, &vpc))
        .await
        .unwrap();
    assert_eq!(blue.name, "web-blue");
    assert_eq!(blue.port, 8080);
    assert_eq!(blue.protocol, "HTTP");
    assert_eq!(blue.vpc_id.as_deref(), Some(vpc.as_str()));
    assert_eq!(blue.health_check, health_check());
    let blue_again = client
        .create_target_group(&group_spec("web-blue", 8080, &vpc))
        .await
        .unwrap();
    assert_eq!(blue_again.arn, blue.arn);
    let conflict = client
        .create_target_group(&group_spec("web-blue", 9090, &vpc))
        .await
        .unwrap_err();
    assert_eq!(
        conflict.code(),
        Some("DuplicateTargetGroupName"),
        "{conflict}"
    );
    let green = client
        .create_target_group(&group_spec("web-green", 8080, &vpc))
        .await
        .unwrap();
    assert_ne!(green.arn, blue.arn);

    // Real moto instances as targets (green's on another port).
    client
        .register_targets(&blue.arn, &targets(&blue_ids, None))
        .await
        .unwrap();
    client
        .register_targets(&green.arn, &targets(&green_ids, Some(8081)))
        .await
        .unwrap();
    let health = client.describe_target_health(&blue.arn).await.unwrap();
    let mut ids: Vec<&str> = health.iter().map(|h| h.target.id.as_str()).collect();
    ids.sort();
    let mut expected: Vec<&str> = blue_ids.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(ids, expected);
    // moto reports a registered running instance healthy at once; it
    // probes nothing.
    assert!(health.iter().all(|h| h.state == "healthy"), "{health:?}");
    assert!(
        health.iter().all(|h| h.target.port == Some(8080)),
        "{health:?}"
    );
    let green_health = client.describe_target_health(&green.arn).await.unwrap();
    assert_eq!(green_health.len(), 2);
    assert!(green_health.iter().all(|h| h.target.port == Some(8081)));

    // A listener forwarding to blue; creating it again returns it.
    let listener = client
        .create_listener(&lb.arn, 80, &forward(&[(&blue.arn, 1)]))
        .await
        .unwrap();
    assert_eq!(listener.port, 80);
    assert_eq!(listener.load_balancer_arn, lb.arn);
    assert_eq!(
        listener.default_action.target_groups.len(),
        1,
        "{listener:?}"
    );
    assert_eq!(
        listener.default_action.target_groups[0].target_group_arn,
        blue.arn
    );
    let listener_again = client
        .create_listener(&lb.arn, 80, &forward(&[(&blue.arn, 1)]))
        .await
        .unwrap();
    assert_eq!(listener_again.arn, listener.arn);

    // Canary: 90 / 10, read back through DescribeListeners.
    let canary = forward(&[(&blue.arn, 90), (&green.arn, 10)]);
    let modified = client
        .modify_listener(&listener.arn, &canary)
        .await
        .unwrap();
    assert_eq!(modified.arn, listener.arn);
    assert_eq!(modified.default_action, canary);
    let listeners = client.describe_listeners(&lb.arn).await.unwrap();
    assert_eq!(listeners.len(), 1);
    assert_eq!(listeners[0].default_action, canary);
    // Switch: all to green.
    let switched = forward(&[(&blue.arn, 0), (&green.arn, 100)]);
    client
        .modify_listener(&listener.arn, &switched)
        .await
        .unwrap();
    let listeners = client.describe_listeners(&lb.arn).await.unwrap();
    assert_eq!(listeners[0].default_action, switched);

    // The target group the listener was created with belongs to the
    // balancer. (ELBv2 also counts one a ModifyListener added; moto does
    // not, so green is not asserted either way.)
    let of_lb = client.describe_target_groups(Some(&lb.arn)).await.unwrap();
    let blue_of_lb = of_lb.iter().find(|t| t.arn == blue.arn).unwrap();
    assert_eq!(blue_of_lb.load_balancer_arns, std::slice::from_ref(&lb.arn));
    assert_eq!(blue_of_lb.health_check, health_check());
    assert_eq!(client.describe_target_groups(None).await.unwrap().len(), 2);

    // Deregistration delay, read back from the attributes moto returns.
    client.set_deregistration_delay(&blue.arn, 7).await.unwrap();
    let attributes = client
        .modify_target_group_attributes(
            &blue.arn,
            &[(
                "deregistration_delay.timeout_seconds".to_string(),
                "7".to_string(),
            )],
        )
        .await
        .unwrap();
    assert!(
        attributes
            .iter()
            .any(|(k, v)| k == "deregistration_delay.timeout_seconds" && v == "7"),
        "{attributes:?}"
    );
    let refused = client
        .set_deregistration_delay(&blue.arn, 4000)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("ValidationError"), "{refused}");

    // Deregistering drops a target from the group (moto does not drain).
    client
        .deregister_targets(&blue.arn, &targets(&blue_ids[..1], None))
        .await
        .unwrap();
    let health = client.describe_target_health(&blue.arn).await.unwrap();
    assert_eq!(
        health
            .iter()
            .map(|h| h.target.id.as_str())
            .collect::<Vec<_>>(),
        [blue_ids[1].as_str()]
    );
    // Empty lists are no calls.
    client.register_targets(&blue.arn, &[]).await.unwrap();
    client.deregister_targets(&blue.arn, &[]).await.unwrap();

    // moto does not know the endstate extension.
    let unsupported = client
        .target_group_request_counts(&green.arn, 30)
        .await
        .unwrap_err();
    // AWS answers an action it does not know with `InvalidAction`, which
    // `is_unsupported()` (see `elbv2.rs`'s unit tests); moto crashes on it
    // with an HTML page and HTTP 500.
    assert!(
        matches!(&unsupported, ProviderError::Api { status: 500, code, .. } if code == "Http500"),
        "{unsupported:?}"
    );

    // Delete: the balancer (its listener with it), then the groups.
    client.delete_load_balancer(&lb.arn).await.unwrap();
    assert!(client
        .describe_load_balancers(&["web".to_string()])
        .await
        .unwrap()
        .is_empty());
    client.delete_target_group(&blue.arn).await.unwrap();
    client.delete_target_group(&green.arn).await.unwrap();
    assert!(client
        .describe_target_groups(None)
        .await
        .unwrap()
        .is_empty());

    let counts = client.request_counts();
    // The second create found the balancer by name and sent no create.
    assert_eq!(
        counts.get(&Operation::Elbv2("CreateLoadBalancer")),
        Some(&1)
    );
    assert_eq!(counts.get(&Operation::Elbv2("ModifyListener")), Some(&2));
    assert_eq!(counts.get(&Operation::Elbv2("RegisterTargets")), Some(&2));
    assert_eq!(counts.get(&Operation::Elbv2("DeregisterTargets")), Some(&1));
}

/// moto pages DescribeLoadBalancers by Marker (not DescribeTargetGroups,
/// which it answers in one page whatever the PageSize: the client's
/// following of a target group NextMarker is tested in `elbv2.rs`).
#[tokio::test]
async fn describes_load_balancers_in_pages() {
    let moto = MotoServer::start().await;
    let (_, _, subnets) = instances(&moto).await;
    let vpc = default_vpc(&moto).await;
    let client = elbv2(&moto).with_page_size(2);
    for n in 0..5 {
        client
            .create_load_balancer(&format!("lb-{n}"), &subnets, &[])
            .await
            .unwrap();
        client
            .create_target_group(&group_spec(&format!("tg-{n}"), 8080, &vpc))
            .await
            .unwrap();
    }
    let before = client
        .request_counts()
        .get(&Operation::Elbv2("DescribeLoadBalancers"))
        .copied()
        .unwrap_or(0);
    let all = client.describe_load_balancers(&[]).await.unwrap();
    let mut names: Vec<String> = all.into_iter().map(|l| l.name).collect();
    names.sort();
    assert_eq!(names, ["lb-0", "lb-1", "lb-2", "lb-3", "lb-4"]);
    let after = client.request_counts()[&Operation::Elbv2("DescribeLoadBalancers")];
    assert_eq!(after - before, 3);
    let groups = client.describe_target_groups(None).await.unwrap();
    assert_eq!(groups.len(), 5);
}

#[tokio::test]
async fn maps_elbv2_error_documents() {
    let moto = MotoServer::start().await;
    let client = elbv2(&moto);
    let missing =
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/none/0123456789abcdef";
    let err = client.describe_target_health(missing).await.unwrap_err();
    match &err {
        ProviderError::Api {
            operation,
            status,
            code,
            ..
        } => {
            assert_eq!(*operation, Operation::Elbv2("DescribeTargetHealth"));
            assert_eq!(*status, 400);
            assert_eq!(code, "TargetGroupNotFound");
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("DescribeTargetHealth"), "{err}");

    // moto requires subnets for a load balancer.
    let err = client
        .create_load_balancer("web", &[], &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Api { status: 400, .. }),
        "{err:?}"
    );
}
