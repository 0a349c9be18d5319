//! Black-box tests of `FaultProxy`: a real client talks through it to a tiny
//! upstream on loopback that records what reaches it.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Router;
use endstate_clock::{ManualClock, SharedClock};
use endstate_testkit::proxy::{
    Bucket, Ec2Limits, Fault, FaultProxy, KillOutcome, Matcher, ProxyError, Rule,
};
use endstate_wire::limits::{BucketShape, RequestClass, ResourceClass};
use http::{HeaderMap, Method, StatusCode, Uri};

/// What reached the upstream.
#[derive(Debug, Clone)]
struct Hit {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// An upstream that answers every request with a small XML document naming
/// the action and the hit number, or an EC2 error document for the action
/// `FailHere`.
#[derive(Clone, Default)]
struct Upstream {
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Upstream {
    async fn start() -> (Self, String) {
        let upstream = Upstream::default();
        let app = Router::new().fallback(answer).with_state(upstream.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let url = format!("http://{}", listener.local_addr().expect("upstream addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (upstream, url)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("hits").clone()
    }
}

async fn answer(
    State(upstream): State<Upstream>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let action = String::from_utf8_lossy(&body)
        .split('&')
        .find_map(|pair| pair.strip_prefix("Action=").map(str::to_owned))
        .unwrap_or_default();
    let hit = {
        let mut hits = upstream.hits.lock().expect("hits");
        hits.push(Hit {
            method,
            uri,
            headers,
            body,
        });
        hits.len()
    };
    if action == "FailHere" {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>InvalidParameterValue</Code><Message>bad</Message></Error></Errors><RequestID>r-1</RequestID></Response>";
        return (StatusCode::BAD_REQUEST, body).into_response();
    }
    (
        StatusCode::OK,
        [("x-upstream", "yes")],
        format!("<{action}Response><hit>{hit}</hit></{action}Response>"),
    )
        .into_response()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// POSTs an EC2 Query form; returns the status and body, or the error text
/// when no response came back.
async fn call(client: &reqwest::Client, url: &str, form: &str) -> Result<(u16, String), String> {
    let response = client
        .post(url)
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body(form.to_owned())
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| format!("{e:?}"))?;
    Ok((status, body))
}

fn manual_clock() -> (ManualClock, SharedClock) {
    let clock = ManualClock::new(Duration::from_secs(1_800_000_000));
    let shared: SharedClock = Arc::new(clock.clone());
    (clock, shared)
}

#[tokio::test]
async fn records_actions_params_statuses_and_error_codes() {
    let (upstream, upstream_url) = Upstream::start().await;
    let proxy = FaultProxy::start(&upstream_url).await.expect("proxy");
    let client = client();
    let url = format!("{}/?Version=2016-11-15", proxy.url());

    let (status, body) = call(
        &client,
        &url,
        "Action=DescribeInstances&Filter.1.Name=tag%3Aendstate%3Aproject&Filter.1.Value.1=web+app",
    )
    .await
    .expect("describe");
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            "<DescribeInstancesResponse><hit>1</hit></DescribeInstancesResponse>"
        )
    );
    let (status, _) = call(&client, &url, "Action=FailHere").await.expect("fail");
    assert_eq!(status, 400);

    let requests = proxy.requests();
    assert_eq!(requests.len(), 2);
    let describe = &requests[0];
    assert_eq!(describe.seq, 1);
    assert_eq!(describe.method, Method::POST);
    assert_eq!(describe.path, "/");
    assert_eq!(describe.query.as_deref(), Some("Version=2016-11-15"));
    assert_eq!(describe.action.as_deref(), Some("DescribeInstances"));
    assert_eq!(describe.param("Version"), Some("2016-11-15"));
    assert_eq!(
        describe.param("Filter.1.Name"),
        Some("tag:endstate:project")
    );
    assert_eq!(describe.param("Filter.1.Value.1"), Some("web app"));
    assert_eq!(describe.params.len(), 4);
    assert_eq!(describe.status, Some(200));
    assert_eq!(describe.error_code, None);
    assert!(describe.reached_upstream && describe.answered);
    assert_eq!(describe.fault, None);
    assert_eq!(describe.throttled_by, None);
    assert!(!describe.throttled());
    assert_eq!(
        describe.response_body.as_deref(),
        Some("<DescribeInstancesResponse><hit>1</hit></DescribeInstancesResponse>")
    );
    let completed = describe.completed.expect("completed");
    assert!(completed >= describe.arrived);
    assert!(describe.completed_at.expect("completed_at") >= describe.arrived_at);

    let failed = &requests[1];
    assert_eq!(failed.seq, 2);
    assert!(failed.arrived >= completed);
    assert_eq!(failed.status, Some(400));
    assert_eq!(failed.error_code.as_deref(), Some("InvalidParameterValue"));
    assert_eq!(proxy.requests_of("FailHere").len(), 1);

    proxy.clear();
    assert!(proxy.requests().is_empty());
    call(&client, &url, "Action=DescribeImages")
        .await
        .expect("describe images");
    let requests = proxy.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].seq, 1);
    assert_eq!(upstream.hits().len(), 3);
}

#[tokio::test]
async fn forwards_host_signature_headers_and_body_bytes_unchanged() {
    let (upstream, upstream_url) = Upstream::start().await;
    let proxy = FaultProxy::start(&upstream_url).await.expect("proxy");
    // Bytes a form encoder could write in more than one way: the upstream
    // must see exactly these, or a signature over them would not verify.
    let body = "Action=CreateTags&Tag.1.Value=a%2Bb+c%20d&Tag.1.Key=%7Eowner";
    let response = client()
        .post(format!("{}/some/path?x=1&y=%2F", proxy.url()))
        .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
        .header("x-amz-date", "20260101T000000Z")
        .header("authorization", "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc")
        .header("connection", "keep-alive")
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get("x-upstream").map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );

    let hits = upstream.hits();
    assert_eq!(hits.len(), 1);
    let hit = &hits[0];
    assert_eq!(hit.method, Method::POST);
    assert_eq!(hit.uri.path(), "/some/path");
    assert_eq!(hit.uri.query(), Some("x=1&y=%2F"));
    assert_eq!(hit.body.as_ref(), body.as_bytes());
    let header = |name: &str| {
        hit.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    // The client signed the proxy's host:port, not the upstream's.
    assert_eq!(header("host"), Some(proxy.addr().to_string()));
    assert_eq!(header("x-amz-date").as_deref(), Some("20260101T000000Z"));
    assert!(header("authorization")
        .expect("authorization")
        .ends_with("Signature=abc"));
    assert_eq!(header("content-length"), Some(body.len().to_string()));
}

#[tokio::test]
async fn nth_request_is_throttled_without_reaching_upstream() {
    let (upstream, upstream_url) = Upstream::start().await;
    let proxy = FaultProxy::start(&upstream_url).await.expect("proxy");
    proxy.add_rule(Rule::once(Matcher::Nth(2), Fault::Throttle));
    let client = client();
    let mut statuses = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let (status, body) = call(&client, &proxy.url(), "Action=DescribeInstances")
            .await
            .expect("call");
        statuses.push(status);
        bodies.push(body);
    }
    assert_eq!(statuses, vec![200, 503, 200]);
    assert!(bodies[1].starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>"));
    assert!(bodies[1].ends_with("</RequestID></Response>"));
    assert_eq!(upstream.hits().len(), 2);

    let throttled = &proxy.requests()[1];
    assert_eq!(throttled.fault, Some(Fault::Throttle));
    assert!(throttled.throttled());
    assert!(!throttled.reached_upstream);
    assert!(throttled.answered);
    assert_eq!(throttled.status, Some(503));
    assert_eq!(
        throttled.error_code.as_deref(),
        Some("RequestLimitExceeded")
    );
    assert_eq!(proxy.rules()[0].times, Some(0));
}

#[tokio::test]
async fn per_action_rules_fire_on_their_count_and_run_out() {
    let (upstream, upstream_url) = Upstream::start().await;
    let proxy = FaultProxy::start(&upstream_url).await.expect("proxy");
    proxy.add_rule(Rule::new(
        Matcher::nth_of("RunInstances", 2),
        Fault::fail(
            400,
            "InsufficientInstanceCapacity",
            "We currently do not have sufficient capacity.",
        ),
    ));
    proxy.add_rule(
        Rule::new(
            Matcher::action("TerminateInstances"),
            Fault::fail(500, "InternalError", "An internal error has occurred."),
        )
        .times(2),
    );
    let client = client();
    let mut outcomes = Vec::new();
    for action in [
        "DescribeInstances",
        "RunInstances",
        "RunInstances",
        "RunInstances",
        "TerminateInstances",
        "TerminateInstances",
        "TerminateInstances",
    ] {
        let (status, _) = call(&client, &proxy.url(), &format!("Action={action}"))
            .await
            .expect("call");
        outcomes.push(status);
    }
    assert_eq!(outcomes, vec![200, 200, 400, 200, 500, 500, 200]);
    let codes: Vec<Option<String>> = proxy.requests().into_iter().map(|r| r.error_code).collect();
    assert_eq!(codes[2].as_deref(), Some("InsufficientInstanceCapacity"));
    assert_eq!(codes[4].as_deref(), Some("InternalError"));
    assert_eq!(codes[6], None);
    assert_eq!(upstream.hits().len(), 4);
    assert_eq!(proxy.rules()[1].times, Some(0));
}

#[tokio::test]
async fn drop_before_forward_never_reaches_upstream() {
    let (upstream, upstream_url) = Upstream::start().await;
    let proxy = FaultProxy::start(&upstream_url).await.expect("proxy");
    proxy.add_rule(Rule::once(Matcher::Any, Fault::DropBeforeForward));
    let client = client();
    assert!(
        call(&client, &proxy.url(), "Action=RunInstances&MaxCount=1")
            .await
            .is_err()
    );
    assert!(upstream.hits().is_empty());
    let dropped = &proxy.requests()[0];
    assert_eq!(dropped.fault, Some(Fault::DropBeforeForward));
    assert!(!dropped.reached_upstream && !dropped.answered);
    assert_eq!(dropped.status, None);
    assert!(dropped.completed.is_some());
    // The proxy goes on serving.
    assert_eq!(
        call(&client, &proxy.url(), "Action=DescribeInstances")
            .await
            .expect("call")
            .0,
        200
    );
}

#[tokio::test]
async fn drop_after_forward_lets_upstream_act_but_answers_nothing() {
    let (upstream, upstream_url) = Upstream::start().await;
    let proxy = FaultProxy::start(&upstream_url).await.expect("proxy");
    proxy.add_rule(Rule::once(
        Matcher::action("RunInstances"),
        Fault::DropAfterForward,
    ));
    let client = client();
    let outcome = call(
        &client,
        &proxy.url(),
        "Action=RunInstances&MaxCount=2&ClientToken=tok-1",
    )
    .await;
    assert!(
        outcome.is_err(),
        "the client must see a connection error, got {outcome:?}"
    );
    let hits = upstream.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(
        hits[0].body.as_ref(),
        b"Action=RunInstances&MaxCount=2&ClientToken=tok-1"
    );

    let dropped = &proxy.requests()[0];
    assert!(dropped.reached_upstream);
    assert!(!dropped.answered);
    // What the client never saw is on record, for adoption tests.
    assert_eq!(dropped.status, Some(200));
    assert_eq!(
        dropped.response_body.as_deref(),
        Some("<RunInstancesResponse><hit>1</hit></RunInstancesResponse>")
    );
    assert_eq!(dropped.param("ClientToken"), Some("tok-1"));

    let (status, _) = call(
        &client,
        &proxy.url(),
        "Action=RunInstances&MaxCount=2&ClientToken=tok-1",
    )
    .await
    .expect("retry");
    assert_eq!(status, 200);
    assert_eq!(upstream.hits().len(), 2);
}

async fn assert_killed_by_sigkill(mut child: tokio::process::Child) {
    use std::os::unix::process::ExitStatusExt;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("child still running 10 s after the kill")
        .expect("wait");
    assert_eq!(status.signal(), Some(9), "child exited with {status:?}");
}

#[tokio::test]
async fn kill_after_forward_kills_the_target_after_upstream_acted() {
    let (upstream, upstream_url) = Upstream::start().await;
    let proxy = FaultProxy::start(&upstream_url).await.expect("proxy");
    let child = tokio::process::Command::new("sleep")
        .arg("30")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sleep");
    let pid = child.id().expect("pid");
    proxy.set_kill_target(pid);
    proxy.add_rule(Rule::once(
        Matcher::nth_of("RunInstances", 1),
        Fault::KillAfterForward,
    ));

    assert!(
        call(&client(), &proxy.url(), "Action=RunInstances&MaxCount=1")
            .await
            .is_err()
    );
    assert_killed_by_sigkill(child).await;
    assert_eq!(upstream.hits().len(), 1);
    let killed = &proxy.requests()[0];
    assert_eq!(killed.kill, Some(KillOutcome::Killed { pid }));
    assert!(killed.reached_upstream && !killed.answered);
}

#[tokio::test]
async fn kill_before_forward_kills_the_target_and_never_forwards() {
    let (upstream, upstream_url) = Upstream::start().await;
    let proxy = FaultProxy::start(&upstream_url).await.expect("proxy");
    let child = tokio::process::Command::new("sleep")
        .arg("30")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sleep");
    let pid = child.id().expect("pid");
    proxy.set_kill_target(pid);
    proxy.add_rule(Rule::once(Matcher::Any, Fault::KillBeforeForward));

    assert!(call(
        &client(),
        &proxy.url(),
        "Action=TerminateInstances&InstanceId.1=i-1"
    )
    .await
    .is_err());
    assert_killed_by_sigkill(child).await;
    assert!(upstream.hits().is_empty());
    let killed = &proxy.requests()[0];
    assert_eq!(killed.kill, Some(KillOutcome::Killed { pid }));
    assert!(!killed.reached_upstream);
}

#[tokio::test]
async fn kill_without_target_only_drops_the_connection() {
    let (upstream, upstream_url) = Upstream::start().await;
    let proxy = FaultProxy::start(&upstream_url).await.expect("proxy");
    proxy.add_rule(Rule::once(Matcher::Any, Fault::KillAfterForward));
    assert!(call(&client(), &proxy.url(), "Action=RunInstances")
        .await
        .is_err());
    assert_eq!(upstream.hits().len(), 1);
    assert_eq!(proxy.requests()[0].kill, Some(KillOutcome::NoTarget));
}

#[tokio::test]
async fn ec2_throttling_passes_a_burst_of_five_run_instances() {
    let (upstream, upstream_url) = Upstream::start().await;
    // A manual clock: the buckets refill only when the test says so.
    let (clock, shared_clock) = manual_clock();
    let proxy = FaultProxy::start_with_clock(&upstream_url, shared_clock)
        .await
        .expect("proxy");
    proxy.throttle_like_ec2(true);
    let client = client();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let (status, body) = call(
            &client,
            &proxy.url(),
            "Action=RunInstances&MaxCount=1&MinCount=1",
        )
        .await
        .expect("call");
        if status == 503 {
            assert!(body.contains("<Code>RequestLimitExceeded</Code>"));
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [[200; 5], [503; 5]].concat());
    assert_eq!(upstream.hits().len(), 5);
    let requests = proxy.requests();
    assert!(requests[5..].iter().all(|r| r.throttled_by
        == Some(Bucket::Request(RequestClass::RunInstances))
        && r.throttled()
        && r.fault.is_none()
        && !r.reached_upstream
        && r.error_code.as_deref() == Some("RequestLimitExceeded")));

    // RunInstances refills at 2 per second: half a second buys one call.
    clock.advance(Duration::from_millis(500));
    assert_eq!(
        call(&client, &proxy.url(), "Action=RunInstances&MaxCount=1")
            .await
            .expect("call")
            .0,
        200
    );
    assert_eq!(
        call(&client, &proxy.url(), "Action=RunInstances&MaxCount=1")
            .await
            .expect("call")
            .0,
        503
    );
    // Other classes have buckets of their own.
    assert_eq!(
        call(&client, &proxy.url(), "Action=DescribeInstances")
            .await
            .expect("call")
            .0,
        200
    );

    proxy.throttle_like_ec2(false);
    assert_eq!(
        call(&client, &proxy.url(), "Action=RunInstances&MaxCount=1")
            .await
            .expect("call")
            .0,
        200
    );
}

#[tokio::test]
async fn a_concurrent_burst_passes_exactly_five_run_instances() {
    let (upstream, upstream_url) = Upstream::start().await;
    let (_clock, shared_clock) = manual_clock();
    let proxy = FaultProxy::start_with_clock(&upstream_url, shared_clock)
        .await
        .expect("proxy");
    proxy.throttle_like_ec2(true);
    let client = client();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (client, url) = (client.clone(), proxy.url());
        calls.spawn(async move { call(&client, &url, "Action=RunInstances&MaxCount=1").await });
    }
    let mut statuses = Vec::new();
    while let Some(outcome) = calls.join_next().await {
        statuses.push(outcome.expect("task").expect("call").0);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [[200; 5], [503; 5]].concat());
    assert_eq!(upstream.hits().len(), 5);
    // Numbering and throttling both follow arrival order.
    let throttled: Vec<bool> = proxy.requests().iter().map(|r| r.throttled()).collect();
    assert_eq!(throttled, [[false; 5], [true; 5]].concat());
}

#[test]
fn the_handle_is_send_sync_and_clone() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<FaultProxy>();
}

#[tokio::test]
async fn ec2_throttling_counts_instances_in_resource_buckets() {
    let (upstream, upstream_url) = Upstream::start().await;
    let (_clock, shared_clock) = manual_clock();
    let proxy = FaultProxy::start_with_clock(&upstream_url, shared_clock)
        .await
        .expect("proxy");
    proxy.throttle_with(Ec2Limits::default().with_resource(
        ResourceClass::TerminateInstances,
        BucketShape::new(5.0, 1.0),
    ));
    let client = client();
    let run = |n: u32| format!("Action=RunInstances&MinCount=1&MaxCount={n}");

    assert_eq!(
        call(&client, &proxy.url(), &run(1001))
            .await
            .expect("call")
            .0,
        503
    );
    assert_eq!(
        call(&client, &proxy.url(), &run(1000))
            .await
            .expect("call")
            .0,
        200
    );
    assert_eq!(
        call(&client, &proxy.url(), &run(1)).await.expect("call").0,
        503
    );
    let terminate = "Action=TerminateInstances&InstanceId.1=i-1&InstanceId.2=i-2&InstanceId.3=i-3";
    assert_eq!(
        call(&client, &proxy.url(), terminate)
            .await
            .expect("call")
            .0,
        200
    );
    assert_eq!(
        call(&client, &proxy.url(), terminate)
            .await
            .expect("call")
            .0,
        503
    );

    let throttled_by: Vec<Option<Bucket>> =
        proxy.requests().iter().map(|r| r.throttled_by).collect();
    assert_eq!(
        throttled_by,
        vec![
            Some(Bucket::Resource(ResourceClass::RunInstances)),
            None,
            Some(Bucket::Resource(ResourceClass::RunInstances)),
            None,
            Some(Bucket::Resource(ResourceClass::TerminateInstances)),
        ]
    );
    assert_eq!(upstream.hits().len(), 2);
}

#[tokio::test]
async fn custom_shapes_refill_on_the_system_clock() {
    let (_upstream, upstream_url) = Upstream::start().await;
    let proxy = FaultProxy::start(&upstream_url).await.expect("proxy");
    proxy.throttle_with(
        Ec2Limits::default().with_request(RequestClass::Mutating, BucketShape::new(1.0, 2.0)),
    );
    let client = client();
    let stop = "Action=StopInstances&InstanceId.1=i-1";
    assert_eq!(
        call(&client, &proxy.url(), stop).await.expect("call").0,
        200
    );
    assert_eq!(
        call(&client, &proxy.url(), stop).await.expect("call").0,
        503
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        call(&client, &proxy.url(), stop).await.expect("call").0,
        200
    );

    let scaled = Ec2Limits::default().scaled(10.0);
    assert_eq!(
        scaled.requests[&RequestClass::RunInstances],
        BucketShape::new(5.0, 20.0)
    );
    assert_eq!(
        scaled.resources[&ResourceClass::RunInstances],
        BucketShape::new(1000.0, 20.0)
    );
}

#[tokio::test]
async fn a_fault_rule_bypasses_the_buckets() {
    let (_upstream, upstream_url) = Upstream::start().await;
    let (_clock, shared_clock) = manual_clock();
    let proxy = FaultProxy::start_with_clock(&upstream_url, shared_clock)
        .await
        .expect("proxy");
    proxy.throttle_with(
        Ec2Limits::default().with_request(RequestClass::RunInstances, BucketShape::new(1.0, 1.0)),
    );
    proxy.add_rule(Rule::once(
        Matcher::Nth(1),
        Fault::fail(500, "InternalError", "boom"),
    ));
    let client = client();
    assert_eq!(
        call(&client, &proxy.url(), "Action=RunInstances")
            .await
            .expect("call")
            .0,
        500
    );
    assert_eq!(
        call(&client, &proxy.url(), "Action=RunInstances")
            .await
            .expect("call")
            .0,
        200
    );
    assert_eq!(
        call(&client, &proxy.url(), "Action=RunInstances")
            .await
            .expect("call")
            .0,
        503
    );
}

#[tokio::test]
async fn stall_delays_the_forward() {
    let (upstream, upstream_url) = Upstream::start().await;
    let proxy = FaultProxy::start(&upstream_url).await.expect("proxy");
    let stall = Duration::from_millis(300);
    proxy.add_rule(Rule::once(
        Matcher::action("DescribeInstances"),
        Fault::Stall(stall),
    ));
    let client = client();
    let started = Instant::now();
    assert_eq!(
        call(&client, &proxy.url(), "Action=DescribeInstances")
            .await
            .expect("call")
            .0,
        200
    );
    assert!(started.elapsed() >= stall);
    let stalled = &proxy.requests()[0];
    assert!(stalled.completed.expect("completed") - stalled.arrived >= stall);
    assert_eq!(stalled.fault, Some(Fault::Stall(stall)));
    assert!(stalled.reached_upstream);
    assert_eq!(upstream.hits().len(), 1);
}

#[tokio::test]
async fn stall_on_a_manual_clock_waits_for_the_clock() {
    let (upstream, upstream_url) = Upstream::start().await;
    let (clock, shared_clock) = manual_clock();
    let proxy = FaultProxy::start_with_clock(&upstream_url, shared_clock)
        .await
        .expect("proxy");
    proxy.add_rule(Rule::once(
        Matcher::Any,
        Fault::Stall(Duration::from_secs(60)),
    ));
    let url = proxy.url();
    let pending =
        tokio::spawn(async move { call(&client(), &url, "Action=DescribeInstances").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished());
    assert!(upstream.hits().is_empty());
    let in_flight = &proxy.requests()[0];
    assert!(in_flight.completed.is_none());
    clock.advance(Duration::from_secs(60));
    let (status, _) = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("stall did not end")
        .expect("task")
        .expect("call");
    assert_eq!(status, 200);
    let done = &proxy.requests()[0];
    assert_eq!(
        done.completed_at.expect("completed_at") - done.arrived_at,
        Duration::from_secs(60)
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_recorded_502() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let upstream_url = format!("http://{}", unused.local_addr().expect("addr"));
    drop(unused);
    let proxy = FaultProxy::start(&upstream_url).await.expect("proxy");
    let (status, _) = call(&client(), &proxy.url(), "Action=DescribeInstances")
        .await
        .expect("call");
    assert_eq!(status, 502);
    let failed = &proxy.requests()[0];
    assert!(failed.upstream_error.is_some());
    assert!(!failed.reached_upstream);
    assert_eq!(failed.status, Some(502));
}

#[tokio::test]
async fn only_loopback_upstreams_are_accepted() {
    let refused = FaultProxy::start("http://192.0.2.1:8773").await;
    assert!(
        matches!(refused, Err(ProxyError::Upstream { .. })),
        "{refused:?}"
    );
    assert!(FaultProxy::start("not a url").await.is_err());
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_listener() {
    let (_upstream, upstream_url) = Upstream::start().await;
    let proxy = FaultProxy::start(&upstream_url).await.expect("proxy");
    let addr = proxy.addr();
    assert_eq!(
        call(&client(), &proxy.url(), "Action=DescribeInstances")
            .await
            .expect("call")
            .0,
        200
    );
    proxy.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let proxy = FaultProxy::start(&upstream_url).await.expect("proxy");
    let addr = proxy.addr();
    let clone = proxy.clone();
    drop(proxy);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_ok(),
        "a clone keeps the proxy alive"
    );
    drop(clone);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "proxy still listening after its last handle was dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends one request on `stream` and reads one response; returns the status
/// code and body.
fn raw_round_trip(stream: &mut std::net::TcpStream, host: &str, form: &str) -> (u16, String) {
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .expect("write");
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "connection closed mid-response");
        received.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&received).into_owned();
        let Some(head_end) = text.find("\r\n\r\n") else {
            continue;
        };
        let head = &text[..head_end];
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .expect("content-length");
        let body = &text[head_end + 4..];
        if body.len() >= length {
            let status = head[9..12].parse().expect("status");
            return (status, body[..length].to_owned());
        }
    }
}

#[test]
fn start_blocking_serves_a_sync_test_over_keep_alive() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (upstream, upstream_url) = runtime.block_on(Upstream::start());
    let proxy = FaultProxy::start_blocking(&upstream_url).expect("proxy");
    proxy.add_rule(Rule::once(Matcher::Nth(2), Fault::Throttle));

    let mut stream = std::net::TcpStream::connect(proxy.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let host = proxy.addr().to_string();
    let first = raw_round_trip(&mut stream, &host, "Action=DescribeInstances");
    let second = raw_round_trip(&mut stream, &host, "Action=RunInstances&MaxCount=1");
    assert_eq!(
        first,
        (
            200,
            "<DescribeInstancesResponse><hit>1</hit></DescribeInstancesResponse>".to_owned()
        )
    );
    assert_eq!(second.0, 503);
    assert!(second.1.contains("<Code>RequestLimitExceeded</Code>"));
    let hits = upstream.hits();
    assert_eq!(hits.len(), 1);
    // The upstream sees the client's headers and nothing more, except the
    // `accept: */*` that reqwest adds to a request without one (unsigned, so
    // harmless to SigV4).
    let mut names: Vec<&str> = hits[0].headers.keys().map(|name| name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        vec!["accept", "content-length", "content-type", "host"]
    );
    assert_eq!(hits[0].headers["host"], host.as_str());
    let actions: Vec<Option<String>> = proxy.requests().into_iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        vec![
            Some("DescribeInstances".to_owned()),
            Some("RunInstances".to_owned())
        ]
    );

    drop(stream);
    proxy.shutdown_blocking();
    assert!(std::net::TcpStream::connect(proxy.addr()).is_err());
}
