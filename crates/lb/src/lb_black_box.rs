//! The load balancer over real sockets on 127.0.0.1: upstreams are tiny
//! hyper servers answering with their own name; clients are reqwest with
//! keep-alive. Every test is bounded by a timeout and stops what it started.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use endstate_clock::SystemClock;
use endstate_health::{ExpectedStatus, HealthCheck, ProbeTarget};
use endstate_lb::{LbError, LoadBalancer, Target, TargetGroupId, TargetState};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const BOUND: Duration = Duration::from_secs(20);

/// An upstream answering its name; `/slow` answers after 1.5 s.
struct Upstream {
    name: String,
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl Upstream {
    async fn start(name: &str) -> Self {
        let listener = TcpListener::bind((LOCALHOST, 0))
            .await
            .expect("bind upstream");
        let address = listener.local_addr().expect("address");
        let body = name.to_string();
        let task = tokio::spawn(async move {
            // Dropping this set (when the task is aborted) kills every
            // connection too, as a dying instance would.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let body = body.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let body = body.clone();
                        async move {
                            if request.uri().path() == "/slow" {
                                tokio::time::sleep(Duration::from_millis(1500)).await;
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self {
            name: name.to_string(),
            address,
            task,
        }
    }

    fn target(&self, generation: &str) -> Target {
        Target {
            id: self.name.clone(),
            address: self.address.ip(),
            port: self.address.port(),
            generation: generation.to_string(),
        }
    }

    fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Probes each target's traffic port every 2 s; one result decides.
fn quick_check() -> HealthCheck {
    let mut check = HealthCheck::new(ProbeTarget::Http {
        port: 0,
        path: "/".into(),
        expected: ExpectedStatus::default(),
    });
    check.interval_seconds = 2;
    check.timeout_seconds = 1;
    check.healthy_threshold = 1;
    check.unhealthy_threshold = 1;
    check.grace_period_seconds = 0;
    check
}

async fn balancer() -> LoadBalancer {
    LoadBalancer::start((LOCALHOST, 0).into(), SystemClock::shared())
        .await
        .expect("start")
}

async fn group(lb: &LoadBalancer, name: &str, targets: Vec<Target>) -> TargetGroupId {
    let tg = lb.create_target_group(name, quick_check()).expect("group");
    lb.register_targets(tg, targets).expect("register");
    // A group out of the forward action shows `unused`: give it the traffic
    // while it is judged; each test then sets its own forward action.
    lb.set_forward(vec![(tg, 1)]).expect("forward");
    wait_for(lb, tg, TargetState::Healthy).await;
    tg
}

/// Waits (up to 5 s) until every target of `tg` is in `state`.
async fn wait_for(lb: &LoadBalancer, tg: TargetGroupId, state: TargetState) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let health = lb.describe_target_health(tg).expect("describe");
        if health.iter().all(|t| t.state == state) {
            return;
        }
        assert!(Instant::now() < deadline, "never {state:?}: {health:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client")
}

/// (status, x-endstate-target, x-endstate-generation, body)
async fn get(
    client: &reqwest::Client,
    lb: &LoadBalancer,
    path: &str,
) -> (u16, String, String, String) {
    let response = client
        .get(format!("http://{}{path}", lb.address()))
        .send()
        .await
        .expect("the balancer answers");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_string())
            .unwrap_or_default()
    };
    let (target, generation) = (header("x-endstate-target"), header("x-endstate-generation"));
    let status = response.status().as_u16();
    let body = response.text().await.expect("body");
    (status, target, generation, body)
}

/// Runs `total` GETs from `workers` keep-alive workers (a bounded
/// concurrency). Returns each request's (whether `switched` was set before it
/// started, status or 0 for a failure, x-endstate-target).
async fn load(
    lb: &LoadBalancer,
    total: usize,
    workers: usize,
    switched: Arc<AtomicBool>,
) -> Vec<(bool, u16, String)> {
    let client = client();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let (client, next, switched) = (client.clone(), Arc::clone(&next), Arc::clone(&switched));
        let url = format!("http://{}/", lb.address());
        tasks.spawn(async move {
            let mut seen = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let after = switched.load(Ordering::SeqCst);
                let outcome = match client.get(&url).send().await {
                    Ok(r) => {
                        let target = r
                            .headers()
                            .get("x-endstate-target")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        let status = r.status().as_u16();
                        match r.bytes().await {
                            Ok(_) => (after, status, target),
                            Err(_) => (after, 0, target),
                        }
                    }
                    Err(_) => (after, 0, String::new()),
                };
                seen.push(outcome);
            }
            seen
        });
    }
    let mut all = Vec::new();
    while let Some(seen) = tasks.join_next().await {
        all.extend(seen.expect("worker"));
    }
    all
}

/// Waits (up to 10 s) until group `name` has routed `count` requests.
async fn after_requests(lb: &LoadBalancer, name: &str, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while lb.stats().target_groups[name].counters.requests < count {
        assert!(Instant::now() < deadline, "load never reached {count}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_100_0_send_everything_to_blue_with_the_headers() {
    tokio::time::timeout(BOUND, async {
        let (blue, green) = (
            Upstream::start("i-blue").await,
            Upstream::start("i-green").await,
        );
        let lb = balancer().await;
        let b = group(&lb, "blue", vec![blue.target("gen-blue")]).await;
        let g = group(&lb, "green", vec![green.target("gen-green")]).await;
        lb.set_forward(vec![(b, 100), (g, 0)]).expect("forward");
        let client = client();
        for _ in 0..200 {
            let (status, target, generation, body) = get(&client, &lb, "/").await;
            assert_eq!(
                (status, target.as_str(), generation.as_str(), body.as_str()),
                (200, "i-blue", "gen-blue", "i-blue")
            );
        }
        let stats = lb.stats();
        assert_eq!(stats.target_groups["blue"].counters.responses_2xx, 200);
        assert_eq!(stats.target_groups["green"].counters.requests, 0);
        assert_eq!(lb.error_rate(b, Duration::ZERO).expect("rate"), Some(0.0));
        assert_eq!(
            lb.describe_target_health(g).expect("describe")[0].state,
            TargetState::Unused
        );
        serde_json::to_string(&stats).expect("stats serialize");
        lb.stop().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_forward_moves_every_later_request_to_green_under_load() {
    tokio::time::timeout(BOUND, async {
        let (blue, green) = (Upstream::start("i-blue").await, Upstream::start("i-green").await);
        let lb = Arc::new(balancer().await);
        let b = group(&lb, "blue", vec![blue.target("blue")]).await;
        let g = group(&lb, "green", vec![green.target("green")]).await;
        lb.set_forward(vec![(b, 100), (g, 0)]).expect("forward");
        let switched = Arc::new(AtomicBool::new(false));
        let runner = {
            let (lb, switched) = (Arc::clone(&lb), Arc::clone(&switched));
            tokio::spawn(async move { load(&lb, 2000, 32, switched).await })
        };
        after_requests(&lb, "blue", 700).await;
        lb.set_forward(vec![(b, 0), (g, 100)]).expect("switch");
        switched.store(true, Ordering::SeqCst);
        let results = runner.await.expect("load");
        assert_eq!(results.len(), 2000);
        let failed = results.iter().filter(|r| r.1 != 200).count();
        assert_eq!(failed, 0, "failed requests");
        let after: Vec<_> = results.iter().filter(|r| r.0).collect();
        assert!(after.len() > 100, "too few requests after the switch: {}", after.len());
        assert!(after.iter().all(|r| r.2 == "i-green"), "a request after set_forward reached blue");
        let before_blue = results.iter().filter(|r| r.2 == "i-blue").count();
        println!("2000 requests, 0 failed, {before_blue} on blue, {} started after the switch, all on green", after.len());
        let lb = Arc::into_inner(lb).expect("sole owner");
        lb.stop().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_killed_mid_load_fails_no_get() {
    tokio::time::timeout(BOUND, async {
        let (a, b) = (Upstream::start("i-a").await, Upstream::start("i-b").await);
        let lb = Arc::new(balancer().await);
        let tg = group(&lb, "web", vec![a.target("g1"), b.target("g1")]).await;
        lb.set_forward(vec![(tg, 1)]).expect("forward");
        let runner = {
            let lb = Arc::clone(&lb);
            tokio::spawn(async move { load(&lb, 2000, 16, Arc::new(AtomicBool::new(false))).await })
        };
        after_requests(&lb, "web", 500).await;
        a.kill();
        let results = runner.await.expect("load");
        let failed = results.iter().filter(|r| r.1 != 200).count();
        assert_eq!(failed, 0, "failed GETs");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let health = lb.describe_target_health(tg).expect("describe");
            let a_state = health.iter().find(|t| t.id == "i-a").expect("i-a").state;
            if a_state == TargetState::Unhealthy {
                break;
            }
            assert!(Instant::now() < deadline, "i-a never unhealthy: {health:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let stats = lb.stats();
        let web = &stats.target_groups["web"];
        println!(
            "2000 GETs, {failed} failed; upstream errors retried: {}; on i-a {} / on i-b {}",
            web.counters.upstream_errors,
            web.targets["i-a"].responses_2xx,
            web.targets["i-b"].responses_2xx
        );
        assert_eq!(web.counters.responses_2xx, 2000);
        assert!(
            web.counters.upstream_errors >= 1,
            "the kill was never seen: no retry exercised"
        );
        let lb = Arc::into_inner(lb).expect("sole owner");
        lb.stop().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistration_drains_the_request_in_flight_and_sends_no_new_one() {
    tokio::time::timeout(BOUND, async {
        let (old, new) = (
            Upstream::start("i-old").await,
            Upstream::start("i-new").await,
        );
        let lb = Arc::new(balancer().await);
        let tg = group(&lb, "web", vec![old.target("v1")]).await;
        lb.set_deregistration_delay(tg, Duration::from_secs(10))
            .expect("delay");
        lb.set_forward(vec![(tg, 1)]).expect("forward");
        let slow = {
            let lb = Arc::clone(&lb);
            tokio::spawn(async move { get(&client(), &lb, "/slow").await })
        };
        after_requests(&lb, "web", 1).await;
        lb.register_targets(tg, vec![new.target("v2")])
            .expect("register");
        lb.deregister_targets(tg, &["i-old".to_string()])
            .expect("deregister");
        let health = lb.describe_target_health(tg).expect("describe");
        assert!(
            health
                .iter()
                .any(|t| t.id == "i-old" && t.state == TargetState::Draining),
            "{health:?}"
        );
        let client = client();
        for _ in 0..50 {
            let (status, target, generation, _) = get(&client, &lb, "/").await;
            assert_eq!(
                (status, target.as_str(), generation.as_str()),
                (200, "i-new", "v2")
            );
        }
        let (status, target, _, body) = slow.await.expect("slow");
        assert_eq!(
            (status, target.as_str(), body.as_str()),
            (200, "i-old", "i-old"),
            "the in-flight request finished"
        );
        // With nothing in flight, the drain completes before the delay.
        let deadline = Instant::now() + Duration::from_secs(2);
        while lb
            .describe_target_health(tg)
            .expect("describe")
            .iter()
            .any(|t| t.id == "i-old")
        {
            assert!(Instant::now() < deadline, "i-old never dropped");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let lb = Arc::into_inner(lb).expect("sole owner");
        lb.stop().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_target_is_a_503_from_the_balancer_and_other_addresses_are_refused() {
    tokio::time::timeout(BOUND, async {
        let lb = balancer().await;
        let client = client();
        let (status, target, _, body) = get(&client, &lb, "/").await;
        assert_eq!((status, target.as_str()), (503, "none"), "{body}");
        let empty = lb
            .create_target_group("empty", quick_check())
            .expect("group");
        lb.set_forward(vec![(empty, 1)]).expect("forward");
        let (status, target, _, body) = get(&client, &lb, "/").await;
        assert_eq!((status, target.as_str()), (503, "none"));
        assert!(!body.is_empty());
        assert_eq!(
            lb.error_rate(empty, Duration::ZERO).expect("rate"),
            Some(1.0)
        );
        assert!(matches!(
            lb.set_forward(vec![(TargetGroupId(99), 1)]),
            Err(LbError::UnknownGroup(_))
        ));
        let refused =
            LoadBalancer::start("0.0.0.0:0".parse().expect("addr"), SystemClock::shared()).await;
        assert!(matches!(refused, Err(LbError::NotLoopback(_))));
        lb.stop().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_target_answers_502_to_a_post_which_is_not_retried() {
    tokio::time::timeout(BOUND, async {
        let dead = Upstream::start("i-dead").await;
        let lb = balancer().await;
        let tg = group(&lb, "web", vec![dead.target("v1")]).await;
        lb.set_forward(vec![(tg, 1)]).expect("forward");
        dead.kill();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let response = client()
            .post(format!("http://{}/", lb.address()))
            .body("x")
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status().as_u16(), 502);
        assert_eq!(response.headers()["x-endstate-target"], "none");
        assert_eq!(
            lb.stats().target_groups["web"].targets["i-dead"].requests,
            1,
            "not retried"
        );
        lb.stop().await;
    })
    .await
    .expect("bounded");
}
