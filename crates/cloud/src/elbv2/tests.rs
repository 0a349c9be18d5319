//! Tests of the ELBv2 service through its Rust interface: the records'
//! rules without data planes, and real data planes forwarding to tiny
//! HTTP servers on 127.0.0.1 (the instances are a `FakeInstances`
//! directory naming them).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use endstate_wire::elbv2::{
    ForwardAction, TargetDescription, TargetGroupHealthCheck, WeightedTargetGroup,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::*;

#[derive(Default)]
struct FakeInstances(Mutex<BTreeMap<String, InstanceView>>);

impl FakeInstances {
    fn put(&self, id: &str, address: Option<IpAddr>, generation: &str) {
        self.0.lock().expect("lock").insert(
            id.to_string(),
            InstanceView {
                gone: false,
                address,
                generation: Some(generation.to_string()),
            },
        );
    }
    fn terminate(&self, id: &str) {
        if let Some(v) = self.0.lock().expect("lock").get_mut(id) {
            v.gone = true;
        }
    }
}

impl InstanceDirectory for FakeInstances {
    fn instance(&self, id: &str) -> Option<InstanceView> {
        self.0.lock().expect("lock").get(id).cloned()
    }
}

fn check(interval: u32) -> TargetGroupHealthCheck {
    TargetGroupHealthCheck {
        protocol: "HTTP".to_string(),
        port: "traffic-port".to_string(),
        path: Some("/health".to_string()),
        interval_seconds: interval,
        timeout_seconds: 1,
        healthy_threshold: 1,
        unhealthy_threshold: 1,
        matcher: Some("200".to_string()),
    }
}

fn group(name: &str, port: u16) -> NewTargetGroup {
    NewTargetGroup {
        name: name.to_string(),
        protocol: "HTTP".to_string(),
        port,
        vpc_id: None,
        health_check: check(2),
        tags: vec![],
    }
}

fn forward(weights: &[(&str, u32)]) -> ForwardAction {
    ForwardAction {
        target_groups: weights
            .iter()
            .map(|(arn, weight)| WeightedTargetGroup {
                target_group_arn: arn.to_string(),
                weight: *weight,
            })
            .collect(),
    }
}

fn target(id: &str) -> TargetDescription {
    TargetDescription {
        id: id.to_string(),
        port: None,
    }
}

#[tokio::test]
async fn creates_are_idempotent_by_name_and_mismatches_are_refused() {
    let lbs = LoadBalancers::api_only("us-east-1", "123456789012");
    let a = lbs.create_load_balancer("web", &[]).await.expect("create");
    let b = lbs.create_load_balancer("web", &[]).await.expect("again");
    assert_eq!(a.arn, b.arn);
    assert!(a
        .arn
        .starts_with("arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/web/"));
    let missing = lbs
        .describe_load_balancers(&[], &["nope".to_string()])
        .await
        .expect_err("unknown name");
    assert_eq!(missing.code(), "LoadBalancerNotFound");
    assert_eq!(
        lbs.create_load_balancer("-bad", &[])
            .await
            .expect_err("bad name")
            .code(),
        "ValidationError"
    );

    let tg = lbs
        .create_target_group(&group("blue", 8080))
        .await
        .expect("tg");
    let same = lbs
        .create_target_group(&group("blue", 8080))
        .await
        .expect("same");
    assert_eq!(tg.arn, same.arn);
    let other = lbs
        .create_target_group(&group("blue", 9090))
        .await
        .expect_err("other settings");
    assert_eq!(other.code(), "DuplicateTargetGroupName");
    let mut slow = group("slow", 80);
    slow.health_check.timeout_seconds = 5;
    assert_eq!(
        lbs.create_target_group(&slow)
            .await
            .expect_err("timeout")
            .code(),
        "ValidationError"
    );
}

#[tokio::test]
async fn without_data_planes_targets_are_unavailable_and_groups_in_use_stay() {
    let lbs = LoadBalancers::api_only("us-east-1", "123456789012");
    let instances = FakeInstances::default();
    instances.put("i-1", None, "g1");
    let lb = lbs.create_load_balancer("web", &[]).await.expect("lb");
    let tg = lbs
        .create_target_group(&group("blue", 80))
        .await
        .expect("tg");
    let unknown = lbs
        .register_targets(&tg.arn, &[target("i-404")], &instances)
        .await
        .expect_err("unknown instance");
    assert_eq!(unknown.code(), "InvalidTarget");
    lbs.register_targets(&tg.arn, &[target("i-1")], &instances)
        .await
        .expect("register");
    let health = lbs
        .describe_target_health(&tg.arn, &[])
        .await
        .expect("health");
    assert_eq!(health.len(), 1);
    assert_eq!(
        (health[0].state.as_str(), health[0].reason.as_deref()),
        ("unavailable", Some("Target.HealthCheckDisabled"))
    );
    let listener = lbs
        .create_listener(&lb.arn, "HTTP", 80, &forward(&[(&tg.arn, 1)]))
        .await
        .expect("listener");
    assert_eq!(
        lbs.delete_target_group(&tg.arn)
            .await
            .expect_err("in use")
            .code(),
        "ResourceInUse"
    );
    let described = lbs
        .describe_target_groups(&TargetGroupQuery {
            load_balancer_arn: Some(lb.arn.clone()),
            ..Default::default()
        })
        .await
        .expect("by balancer");
    assert_eq!(described.target_groups.len(), 1);
    assert_eq!(
        described.target_groups[0].load_balancer_arns,
        vec![lb.arn.clone()]
    );
    lbs.delete_load_balancer(&lb.arn).await.expect("delete lb");
    assert!(lbs
        .describe_listeners(None, std::slice::from_ref(&listener.arn))
        .await
        .is_err());
    lbs.delete_target_group(&tg.arn).await.expect("now free");

    instances.terminate("i-1");
    let tg = lbs
        .create_target_group(&group("green", 80))
        .await
        .expect("tg");
    assert_eq!(
        lbs.register_targets(&tg.arn, &[target("i-1")], &instances)
            .await
            .expect_err("terminated")
            .code(),
        "InvalidTarget"
    );
}

#[tokio::test]
async fn target_groups_come_in_pages_with_a_marker() {
    let lbs = LoadBalancers::api_only("us-east-1", "123456789012");
    for i in 0..5 {
        lbs.create_target_group(&group(&format!("g{i}"), 80))
            .await
            .expect("tg");
    }
    let mut seen = Vec::new();
    let mut marker = None;
    loop {
        let page = lbs
            .describe_target_groups(&TargetGroupQuery {
                marker: marker.clone(),
                page_size: Some(2),
                ..Default::default()
            })
            .await
            .expect("page");
        assert!(page.target_groups.len() <= 2);
        seen.extend(page.target_groups.into_iter().map(|g| g.name));
        marker = page.next_marker;
        if marker.is_none() {
            break;
        }
    }
    seen.sort();
    assert_eq!(seen, ["g0", "g1", "g2", "g3", "g4"]);
    let names = lbs
        .describe_target_groups(&TargetGroupQuery {
            names: vec!["g3".to_string()],
            ..Default::default()
        })
        .await
        .expect("by name");
    assert_eq!(names.target_groups[0].name, "g3");
}

/// A tiny HTTP server on 127.0.0.1 answering `status` with the body `name`
/// (health checks included), one request per connection.
async fn upstream(name: &'static str, status: Arc<AtomicU16>) -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let status = status.load(Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut read = 0;
                while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                }
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
                    name.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    port
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String, String) {
    let response = client.get(url).send().await.expect("get");
    let header = |n: &str| {
        response
            .headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    (
        response.status().as_u16(),
        header("x-endstate-target"),
        header("x-endstate-generation"),
    )
}

async fn until_state(lbs: &LoadBalancers, arn: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = lbs.describe_target_health(arn, &[]).await.expect("health");
        if !health.is_empty() && health.iter().all(|h| h.state == want) {
            return;
        }
        assert!(Instant::now() < deadline, "never {want}: {health:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_planes_forward_switch_drain_and_count() {
    let lbs = LoadBalancers::with_data_planes(
        "us-east-1",
        "123456789012",
        endstate_clock::SystemClock::shared(),
        None,
    )
    .expect("service");
    let ok = Arc::new(AtomicU16::new(200));
    let failing = Arc::new(AtomicU16::new(503));
    let (blue_port, green_port) = (
        upstream("blue", ok.clone()).await,
        upstream("green", failing.clone()).await,
    );
    let local = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let instances = FakeInstances::default();
    instances.put("i-blue", local, "v1");
    instances.put("i-green", local, "v2");

    let lb = lbs.create_load_balancer("web", &[]).await.expect("lb");
    assert!(lb.dns_name.starts_with("127.101."), "{}", lb.dns_name);
    let blue = lbs
        .create_target_group(&group("blue", blue_port))
        .await
        .expect("blue");
    let green = lbs
        .create_target_group(&group("green", green_port))
        .await
        .expect("green");
    lbs.register_targets(&blue.arn, &[target("i-blue")], &instances)
        .await
        .expect("register blue");
    lbs.register_targets(&green.arn, &[target("i-green")], &instances)
        .await
        .expect("register green");
    let unused = lbs
        .describe_target_health(&green.arn, &[])
        .await
        .expect("health");
    assert_eq!(unused[0].state, "unused");

    let port = {
        let probe = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("port");
        probe.local_addr().expect("addr").port()
    };
    let listener = lbs
        .create_listener(
            &lb.arn,
            "HTTP",
            port,
            &forward(&[(&blue.arn, 1), (&green.arn, 0)]),
        )
        .await
        .expect("listener");
    until_state(&lbs, &blue.arn, "healthy").await;
    until_state(&lbs, &green.arn, "unhealthy").await;
    let green_health = lbs
        .describe_target_health(&green.arn, &[])
        .await
        .expect("health");
    assert_eq!(
        green_health[0].reason.as_deref(),
        Some("Target.ResponseCodeMismatch")
    );

    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = format!("http://{}:{port}/", lb.dns_name);
    for _ in 0..5 {
        assert_eq!(
            get(&client, &url).await,
            (200, "i-blue".into(), "v1".into())
        );
    }

    lbs.modify_listener(&listener.arn, &forward(&[(&blue.arn, 0), (&green.arn, 1)]))
        .await
        .expect("switch");
    for _ in 0..4 {
        assert_eq!(
            get(&client, &url).await,
            (503, "i-green".into(), "v2".into())
        );
    }
    let counts = lbs
        .target_group_request_counts(&green.arn, 60)
        .await
        .expect("counts");
    assert_eq!((counts.requests, counts.server_errors), (4, 4));
    let blue_counts = lbs
        .target_group_request_counts(&blue.arn, 60)
        .await
        .expect("counts");
    assert_eq!((blue_counts.requests, blue_counts.server_errors), (5, 0));

    lbs.modify_target_group_attributes(
        &green.arn,
        &[(
            "deregistration_delay.timeout_seconds".to_string(),
            "0".to_string(),
        )],
    )
    .await
    .expect("delay");
    lbs.deregister_targets(&green.arn, &[target("i-green")])
        .await
        .expect("deregister");
    assert!(lbs
        .describe_target_health(&green.arn, &[])
        .await
        .expect("health")
        .iter()
        .all(|h| h.state == "draining"));

    instances.terminate("i-blue");
    lbs.deregister_gone(&instances).await;
    lbs.modify_listener(&listener.arn, &forward(&[(&blue.arn, 1)]))
        .await
        .expect("back to blue");
    let health = lbs
        .describe_target_health(&blue.arn, &[])
        .await
        .expect("health");
    assert!(health.iter().all(|h| h.state == "draining"), "{health:?}");
    lbs.delete_load_balancer(&lb.arn).await.expect("delete");
    assert!(
        client.get(&url).send().await.is_err(),
        "the listener is gone"
    );
}
