//! ELBv2 on a running built-in cloud with the process backend, driven by
//! the aws CLI (`aws elbv2 …` against the cloud's one endpoint) and, for
//! endstate's extension action, by our own `Elbv2Client`: a load balancer
//! and two target groups of real instances (each a small Python HTTP
//! server on its own 127.100.x.y), health reaching `healthy`, requests
//! through the listener carrying the instance and generation headers,
//! ModifyListener moving traffic, 5xx counted, deregistration draining,
//! the load balancer answering again after a restart of the cloud, and
//! terminated instances deregistered. And the simulated backend: the same
//! API over records, every target `unavailable`.
//!
//! The instances run with a stand-in init (no namespaces; the server is
//! started directly), so the test needs neither root nor the endstate
//! binary — only the aws CLI in `.tools/venv` and python3.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use crate::black_box::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{aws_as, aws_cli, aws_command};
use endstate_cloud::{
    serve, serve_state, Backend as _, CloudConfig, CloudState, Credentials, Isolation,
    ProcessBackend, ProcessConfig, RunningCloud, SimulatedConfig,
};
use endstate_provider::ec2::Ec2Config;
use endstate_provider::elbv2::{
    Elbv2Client, ForwardAction, LoadBalancing as _, TargetDescription, TargetGroupHealthCheck,
    TargetGroupSpec, WeightedTargetGroup,
};
use endstate_wire::{
    DescribeInstanceStatusRequest, RunInstancesRequest, Tag, TagSpecification,
    TerminateInstancesRequest,
};
use serde_json::{json, Value};

const ACCESS_KEY: &str = "AKIDELBV2TEST";
const SECRET: &str = "elbv2-test-secret";

/// The stand-in init: `$1` is the instance directory. It reports the boot
/// finished and runs a web server on the instance's address, port 8080,
/// answering `/health` with 200 and anything else with the status in the
/// file `answer` of the instance directory (200 when there is none), the
/// instance id as the body.
const WEB_INIT: &str = r#"
dir="$1"
printf '{"pid":%d,"boot":"finished","services":[],"updated":"now"}' $$ > "$dir/status.json.tmp"
mv "$dir/status.json.tmp" "$dir/status.json"
exec python3 -c '
import http.server, json, os, sys
d = sys.argv[1]
init = json.load(open(os.path.join(d, "init.json")))
class Web(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        status = 200
        if self.path != "/health":
            try:
                status = int(open(os.path.join(d, "answer")).read().strip())
            except OSError:
                pass
        body = init["instance_id"].encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((init["address"], 8080), Web).serve_forever()
' "$dir"
"#;

async fn aws(endpoint: &str, args: &[&str]) -> Value {
    aws_as(endpoint, ACCESS_KEY, SECRET, args).await
}

fn config(dir: &Path) -> ProcessConfig {
    let mut config = ProcessConfig::new(dir);
    config.ec2.throttling = None;
    config.init_command = vec!["sh".into(), "-c".into(), WEB_INIT.into(), "sh".into()];
    config.status_interval = Duration::from_millis(300);
    config.stop_grace = Duration::from_millis(500);
    config.imds_port = 21_181;
    config.isolation = Some(Isolation::None);
    config
}

async fn start(dir: &Path) -> (Arc<ProcessBackend>, RunningCloud) {
    let backend = ProcessBackend::open(config(dir)).unwrap();
    let cloud = serve_state(
        0,
        CloudState::new(backend.clone(), Credentials::new().with(ACCESS_KEY, SECRET)),
    )
    .await
    .unwrap();
    (backend, cloud)
}

fn launch(backend: &ProcessBackend, token: &str, count: u32, generation: &str) -> Vec<String> {
    let request = RunInstancesRequest {
        image_id: backend.base_image_id().to_string(),
        min_count: count,
        max_count: count,
        instance_type: Some("t3.micro".to_string()),
        client_token: Some(token.to_string()),
        user_data: None,
        availability_zone: None,
        subnet_id: None,
        security_group_ids: vec![],
        key_name: None,
        iam_instance_profile_name: None,
        block_device_mappings: vec![],
        metadata_options: None,
        tag_specifications: vec![TagSpecification {
            resource_type: "instance".to_string(),
            tags: vec![Tag::new("endstate:generation", generation)],
        }],
    };
    backend
        .run_instances(&request)
        .unwrap()
        .reservation
        .instances
        .into_iter()
        .map(|i| i.instance_id)
        .collect()
}

/// Kills the instances' top processes (the web servers) when the test
/// ends, passed or failed: they outlive the cloud by design.
struct Cleanup(Vec<u32>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in &self.0 {
            if let Ok(pid) = i32::try_from(*pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn health_states(answer: &Value) -> Vec<(String, String, String)> {
    let mut states: Vec<(String, String, String)> = answer["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["Target"]["Id"].as_str().unwrap().to_string(),
                d["TargetHealth"]["State"].as_str().unwrap().to_string(),
                d["TargetHealth"]["Reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    states.sort();
    states
}

async fn until_healthy(endpoint: &str, group: &str, count: usize) {
    eventually(
        &format!("{count} healthy targets in {group}"),
        Duration::from_secs(25),
        async || {
            let states = health_states(
                &aws(
                    endpoint,
                    &[
                        "elbv2",
                        "describe-target-health",
                        "--target-group-arn",
                        group,
                    ],
                )
                .await,
            );
            (states.len() == count && states.iter().all(|s| s.1 == "healthy")).then_some(())
        },
    )
    .await;
}

/// GETs `url` `n` times: (status, x-endstate-target, x-endstate-generation).
async fn through(client: &reqwest::Client, url: &str, n: usize) -> Vec<(u16, String, String)> {
    let mut answers = Vec::new();
    for _ in 0..n {
        let response = client.get(url).send().await.unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        answers.push((
            response.status().as_u16(),
            header("x-endstate-target"),
            header("x-endstate-generation"),
        ));
    }
    answers
}

fn forward(groups: &[(&str, u32)]) -> String {
    json!([{
        "Type": "forward",
        "ForwardConfig": {
            "TargetGroups": groups
                .iter()
                .map(|(arn, weight)| json!({"TargetGroupArn": arn, "Weight": weight}))
                .collect::<Vec<_>>()
        }
    }])
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_balancer_of_real_instances_switches_drains_counts_and_survives_a_restart() {
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    aws_cli();
    assert!(
        which("python3").is_some(),
        "python3 is missing: the instances here serve HTTP with it"
    );
    let dir = tempfile::tempdir().unwrap();
    let (backend, cloud) = start(dir.path()).await;
    let blue_ids = launch(&backend, "blue", 2, "v1");
    let green_ids = launch(&backend, "green", 1, "v2");
    let all: Vec<String> = blue_ids.iter().chain(&green_ids).cloned().collect();
    let endpoint = cloud.url();
    let e = endpoint.as_str();

    // Running instances before registration (RegisterTargets wants them live).
    eventually("the instances run", Duration::from_secs(15), async || {
        let status = backend
            .describe_instance_status(&DescribeInstanceStatusRequest {
                instance_ids: all.clone(),
                include_all_instances: Some(true),
                ..Default::default()
            })
            .unwrap();
        (status.statuses.len() == 3 && status.statuses.iter().all(|s| s.state.name == "running"))
            .then_some(())
    })
    .await;
    let _cleanup = Cleanup(
        all.iter()
            .filter_map(|id| backend.top_process(id))
            .collect(),
    );

    let lb = aws(
        e,
        &[
            "elbv2",
            "create-load-balancer",
            "--name",
            "web",
            "--subnets",
            "subnet-1",
        ],
    )
    .await;
    let lb = &lb["LoadBalancers"][0];
    let (lb_arn, dns) = (
        lb["LoadBalancerArn"].as_str().unwrap(),
        lb["DNSName"].as_str().unwrap(),
    );
    assert!(
        dns.starts_with("127.101."),
        "the balancer's own loopback address: {dns}"
    );
    let again = aws(
        e,
        &[
            "elbv2",
            "create-load-balancer",
            "--name",
            "web",
            "--subnets",
            "subnet-1",
        ],
    )
    .await;
    assert_eq!(
        again["LoadBalancers"][0]["LoadBalancerArn"].as_str(),
        Some(lb_arn),
        "idempotent by name"
    );

    let group = async |name: &str| -> String {
        let made = aws(
            e,
            &[
                "elbv2",
                "create-target-group",
                "--name",
                name,
                "--protocol",
                "HTTP",
                "--port",
                "8080",
                "--vpc-id",
                "vpc-1",
                "--health-check-path",
                "/health",
                "--health-check-interval-seconds",
                "5",
                "--health-check-timeout-seconds",
                "2",
                "--healthy-threshold-count",
                "2",
                "--unhealthy-threshold-count",
                "2",
            ],
        )
        .await;
        made["TargetGroups"][0]["TargetGroupArn"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (blue, green) = (group("blue").await, group("green").await);
    let targets = |ids: &[String]| ids.iter().map(|id| format!("Id={id}")).collect::<Vec<_>>();
    let mut register = vec![
        "elbv2".to_string(),
        "register-targets".into(),
        "--target-group-arn".into(),
        blue.clone(),
        "--targets".into(),
    ];
    register.extend(targets(&blue_ids));
    aws(e, &register.iter().map(String::as_str).collect::<Vec<_>>()).await;
    aws(
        e,
        &[
            "elbv2",
            "register-targets",
            "--target-group-arn",
            &green,
            "--targets",
            &format!("Id={}", green_ids[0]),
        ],
    )
    .await;

    // Not yet behind a listener: unused.
    let unused = health_states(
        &aws(
            e,
            &[
                "elbv2",
                "describe-target-health",
                "--target-group-arn",
                &blue,
            ],
        )
        .await,
    );
    assert!(
        unused
            .iter()
            .all(|s| s.1 == "unused" && s.2 == "Target.NotInUse"),
        "{unused:?}"
    );

    let port = {
        let probe = std::net::TcpListener::bind((dns, 0)).unwrap();
        probe.local_addr().unwrap().port()
    };
    let listener = aws(
        e,
        &[
            "elbv2",
            "create-listener",
            "--load-balancer-arn",
            lb_arn,
            "--protocol",
            "HTTP",
            "--port",
            &port.to_string(),
            "--default-actions",
            &forward(&[(&blue, 1), (&green, 0)]),
        ],
    )
    .await;
    let listener_arn = listener["Listeners"][0]["ListenerArn"]
        .as_str()
        .unwrap()
        .to_string();
    until_healthy(e, &blue, 2).await;
    until_healthy(e, &green, 1).await;

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{dns}:{port}/");
    let answers = through(&client, &url, 20).await;
    let served: BTreeSet<&str> = answers.iter().map(|a| a.1.as_str()).collect();
    assert!(
        answers.iter().all(|a| a.0 == 200 && a.2 == "v1"),
        "{answers:?}"
    );
    assert_eq!(
        served,
        blue_ids.iter().map(String::as_str).collect(),
        "round robin over blue"
    );

    // ModifyListener: every later request is green's.
    let modified = aws(
        e,
        &[
            "elbv2",
            "modify-listener",
            "--listener-arn",
            &listener_arn,
            "--default-actions",
            &forward(&[(&blue, 0), (&green, 1)]),
        ],
    )
    .await;
    let weights = &modified["Listeners"][0]["DefaultActions"][0]["ForwardConfig"]["TargetGroups"];
    assert_eq!(weights.as_array().unwrap().len(), 2, "{modified}");
    let answers = through(&client, &url, 10).await;
    assert!(
        answers
            .iter()
            .all(|a| *a == (200, green_ids[0].clone(), "v2".to_string())),
        "{answers:?}"
    );

    // 5xx from green are counted by the extension action.
    std::fs::write(backend.instance_dir(&green_ids[0]).join("answer"), "500").unwrap();
    let answers = through(&client, &url, 5).await;
    assert!(answers.iter().all(|a| a.0 == 500), "{answers:?}");
    let elbv2 = Elbv2Client::with_static_credentials(
        Ec2Config::new("us-east-1").with_endpoint(endpoint.clone()),
        ACCESS_KEY,
        SECRET,
        None,
    )
    .unwrap();
    let counts = elbv2.target_group_request_counts(&green, 60).await.unwrap();
    assert_eq!(
        (counts.requests, counts.server_errors),
        (15, 5),
        "{counts:?}"
    );
    std::fs::remove_file(backend.instance_dir(&green_ids[0]).join("answer")).unwrap();

    // Back to blue; green's target drains when deregistered.
    aws(
        e,
        &[
            "elbv2",
            "modify-listener",
            "--listener-arn",
            &listener_arn,
            "--default-actions",
            &forward(&[(&blue, 1), (&green, 0)]),
        ],
    )
    .await;
    aws(
        e,
        &[
            "elbv2",
            "modify-target-group-attributes",
            "--target-group-arn",
            &green,
            "--attributes",
            "Key=deregistration_delay.timeout_seconds,Value=30",
        ],
    )
    .await;
    // A request in flight keeps it draining: none here, so it is dropped
    // at once (as ELB completes a deregistration early when idle) — or seen
    // draining if the reaper has not run yet.
    aws(
        e,
        &[
            "elbv2",
            "deregister-targets",
            "--target-group-arn",
            &green,
            "--targets",
            &format!("Id={}", green_ids[0]),
        ],
    )
    .await;
    let after = health_states(
        &aws(
            e,
            &[
                "elbv2",
                "describe-target-health",
                "--target-group-arn",
                &green,
            ],
        )
        .await,
    );
    assert!(
        after
            .iter()
            .all(|s| s.1 == "draining" && s.2 == "Target.DeregistrationInProgress"),
        "{after:?}"
    );
    eventually(
        "the idle target is dropped",
        Duration::from_secs(5),
        async || {
            health_states(
                &aws(
                    e,
                    &[
                        "elbv2",
                        "describe-target-health",
                        "--target-group-arn",
                        &green,
                    ],
                )
                .await,
            )
            .is_empty()
            .then_some(())
        },
    )
    .await;

    // A restart of the cloud: same address and port, same routing.
    cloud.shutdown().await.unwrap();
    drop(backend);
    let (backend, cloud) = start(dir.path()).await;
    let e = cloud.url();
    let described = aws(&e, &["elbv2", "describe-load-balancers", "--names", "web"]).await;
    assert_eq!(described["LoadBalancers"][0]["DNSName"].as_str(), Some(dns));
    until_healthy(&e, &blue, 2).await;
    // A new client: the old one's pooled connections were to the old server.
    let fresh = reqwest::Client::builder().no_proxy().build().unwrap();
    let answers = through(&fresh, &url, 6).await;
    assert!(
        answers.iter().all(|a| a.0 == 200 && a.2 == "v1"),
        "after the restart: {answers:?}"
    );

    // Terminated instances leave their target groups.
    backend
        .terminate_instances(&TerminateInstancesRequest {
            instance_ids: vec![blue_ids[0].clone()],
        })
        .unwrap();
    eventually(
        "the terminated target leaves",
        Duration::from_secs(5),
        async || {
            let states = health_states(
                &aws(
                    &e,
                    &[
                        "elbv2",
                        "describe-target-health",
                        "--target-group-arn",
                        &blue,
                    ],
                )
                .await,
            );
            states
                .iter()
                .all(|s| s.0 != blue_ids[0] || s.1 == "draining")
                .then_some(())
        },
    )
    .await;
    let missing = aws_error(&e, &["elbv2", "describe-load-balancers", "--names", "nope"]).await;
    assert!(missing.contains("LoadBalancerNotFound"), "{missing}");
    let in_use = aws_error(
        &e,
        &["elbv2", "delete-target-group", "--target-group-arn", &blue],
    )
    .await;
    assert!(in_use.contains("ResourceInUse"), "{in_use}");
    cloud.shutdown().await.unwrap();
}

/// The aws CLI's error output for a call that must fail.
async fn aws_error(endpoint: &str, args: &[&str]) -> String {
    let output = aws_command(endpoint, ACCESS_KEY, SECRET, args)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success(), "aws {args:?} succeeded");
    String::from_utf8_lossy(&output.stderr).to_string()
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.exists())
    })
}

/// The simulated backend serves the same API over its records, but its
/// instances have no real address: targets are `unavailable`, never probed.
/// Our own client, so no aws CLI is needed; errors are ELBv2's documents.
#[tokio::test]
async fn the_simulated_backend_answers_elbv2_without_data_planes() {
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let mut simulated = SimulatedConfig::new("us-east-1");
    simulated.throttling = None;
    let cloud = serve(CloudConfig {
        port: 0,
        credentials: Credentials::new().with(ACCESS_KEY, SECRET),
        simulated,
        clock: endstate_clock::SystemClock::shared(),
    })
    .await
    .unwrap();
    let config = Ec2Config::new("us-east-1").with_endpoint(cloud.url());
    let elbv2 =
        Elbv2Client::with_static_credentials(config.clone(), ACCESS_KEY, SECRET, None).unwrap();
    let ec2 = endstate_provider::ec2::Ec2Client::with_static_credentials(
        config, ACCESS_KEY, SECRET, None,
    )
    .unwrap();

    let lb = elbv2.create_load_balancer("web", &[], &[]).await.unwrap();
    assert_eq!(
        elbv2
            .create_load_balancer("web", &[], &[])
            .await
            .unwrap()
            .arn,
        lb.arn
    );
    assert_eq!(
        elbv2
            .describe_load_balancers(&["web".to_string()])
            .await
            .unwrap(),
        vec![lb.clone()]
    );
    assert!(
        elbv2
            .describe_load_balancers(&["nope".to_string()])
            .await
            .unwrap()
            .is_empty(),
        "LoadBalancerNotFound reads as none"
    );
    let spec = TargetGroupSpec {
        name: "blue".to_string(),
        port: 8080,
        vpc_id: None,
        health_check: TargetGroupHealthCheck::defaults("HTTP"),
        tags: vec![],
    };
    let tg = elbv2.create_target_group(&spec).await.unwrap();
    let clash = elbv2
        .create_target_group(&TargetGroupSpec {
            port: 9090,
            ..spec.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(clash.code(), Some("DuplicateTargetGroupName"), "{clash}");

    use endstate_provider::Provider as _;
    let launched = ec2
        .run_instances(&endstate_provider::LaunchRequest {
            image_id: "ami-0e5c0f5d3b1e2a4f6".to_string(),
            instance_type: "t3.micro".to_string(),
            count: 1,
            zone: "us-east-1a".to_string(),
            subnet_id: None,
            security_group_ids: vec![],
            key_name: None,
            iam_instance_profile: None,
            root_volume: None,
            metadata: Default::default(),
            user_data: None,
            tags: Default::default(),
            client_token: "sim-1".to_string(),
        })
        .await
        .unwrap();
    let id = launched[0].id.clone();
    let target = TargetDescription {
        id: id.clone(),
        port: None,
    };
    elbv2
        .register_targets(&tg.arn, std::slice::from_ref(&target))
        .await
        .unwrap();
    let unknown = elbv2
        .register_targets(
            &tg.arn,
            &[TargetDescription {
                id: "i-0123456789abcdef0".into(),
                port: None,
            }],
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Some("InvalidTarget"), "{unknown}");
    let action = ForwardAction {
        target_groups: vec![WeightedTargetGroup {
            target_group_arn: tg.arn.clone(),
            weight: 1,
        }],
    };
    let listener = elbv2.create_listener(&lb.arn, 80, &action).await.unwrap();
    assert_eq!(
        elbv2.describe_listeners(&lb.arn).await.unwrap(),
        vec![listener]
    );
    let health = elbv2.describe_target_health(&tg.arn).await.unwrap();
    assert_eq!(health.len(), 1);
    assert_eq!(
        (health[0].state.as_str(), health[0].reason.as_deref()),
        ("unavailable", Some("Target.HealthCheckDisabled"))
    );
    let counts = elbv2
        .target_group_request_counts(&tg.arn, 60)
        .await
        .unwrap();
    assert_eq!((counts.requests, counts.server_errors), (0, 0));
    let in_use = elbv2.delete_target_group(&tg.arn).await.unwrap_err();
    assert_eq!(in_use.code(), Some("ResourceInUse"), "{in_use}");
    elbv2.delete_load_balancer(&lb.arn).await.unwrap();
    elbv2.delete_target_group(&tg.arn).await.unwrap();
    cloud.shutdown().await.unwrap();
}
