//! Tests of the API on a real loopback listener, with the real [`Client`]
//! and plain reqwest, over [`FakeController`] (an in-memory
//! [`ControllerApi`]); and of the OpenAPI document against the route table
//! and the answers. Test-only.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{broadcast, oneshot};

use super::routes::{Endpoint, Route, Verb, ROUTES};
use super::{build_router, serve, OPENAPI_JSON};
use crate::client::{Client, ClientError, StreamRetry};
use crate::view::{
    ApiError, ControllerApi, EventView, GroupView, InstanceView, MetricSample, RolloutView,
    ScalingActivityView, SpecSubmission, SpecView,
};

const TOKEN: &str = "s3cret-token";

/// An in-memory controller: two groups (`web`, `db`), three instances,
/// events recorded by the test. `events_after` can be held at a gate so a
/// test can record events while a stream is catching up.
pub(crate) struct FakeController {
    inner: Mutex<FakeState>,
    live: broadcast::Sender<EventView>,
    subscriptions: AtomicUsize,
    /// (signalled when `events_after` is entered, released by the test).
    gate: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
}

struct FakeState {
    groups: Vec<GroupView>,
    instances: Vec<InstanceView>,
    events: Vec<EventView>,
    spec: SpecView,
    samples: Vec<MetricSample>,
}

impl FakeController {
    fn new(live_capacity: usize) -> Arc<FakeController> {
        let group = |name: &str, healthy, unhealthy| GroupView {
            name: name.into(),
            min: 1,
            desired: 3,
            max: 6,
            live: healthy + unhealthy,
            healthy,
            unhealthy,
            initial: 0,
            paused: false,
            replacement_paused: None,
            reconciles: 4,
            last_reconcile: Some(crate::view::ReconcileView {
                id: 9,
                at: "2026-11-27T21:00:00Z".into(),
                duration_ms: 120,
                trigger: "period".into(),
                launched: 0,
                terminated: 0,
                error: None,
            }),
        };
        let instance = |id: &str, group: &str, health: &str, reason: Option<&str>| InstanceView {
            id: id.into(),
            group: group.into(),
            state: "running".into(),
            zone: "local-1a".into(),
            image_id: "ami-1".into(),
            instance_type: "t3.micro".into(),
            private_ip: Some("127.100.0.2".into()),
            launch_time: "2026-11-27T20:00:00Z".into(),
            health: health.into(),
            health_reason: reason.map(str::to_string),
            protected: false,
            cpu: Some(12.5),
        };
        let (live, _) = broadcast::channel(live_capacity);
        Arc::new(FakeController {
            inner: Mutex::new(FakeState {
                groups: vec![group("web", 1, 1), group("db", 1, 0)],
                instances: vec![
                    instance("i-1", "web", "healthy", None),
                    instance("i-2", "web", "unhealthy", Some("HTTP 503 three times")),
                    instance("i-3", "db", "healthy", None),
                ],
                events: Vec::new(),
                spec: SpecView {
                    project: "shop".into(),
                    environment: "prod".into(),
                    hash: "abc123".into(),
                    source: "spec.yaml".into(),
                    loaded_at: "2026-11-27T20:00:00Z".into(),
                    groups: vec!["web".into(), "db".into()],
                    reconcile_seq: 7,
                },
                samples: Vec::new(),
            }),
            live,
            subscriptions: AtomicUsize::new(0),
            gate: Mutex::new(None),
        })
    }

    /// Records an event (as the controller does: stored, then broadcast).
    fn record(&self, group: &str, kind: &str) -> i64 {
        let event = {
            let mut inner = self.inner.lock().unwrap();
            let event = EventView {
                seq: inner.events.len() as i64 + 1,
                at: "2026-11-27T21:00:00Z".into(),
                group: group.into(),
                kind: kind.into(),
                subject: group.into(),
                reason: format!("{kind} because the test said so"),
                data: json!({"n": inner.events.len()}),
            };
            inner.events.push(event.clone());
            event
        };
        let _ = self.live.send(event.clone());
        event.seq
    }

    /// Holds the next `events_after` until the returned sender sends; the
    /// receiver hears when it is entered.
    fn hold_history(&self) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        *self.gate.lock().unwrap() = Some((entered_tx, release_rx));
        (entered_rx, release_tx)
    }

    fn known(&self, group: &str) -> Result<(), ApiError> {
        if self
            .inner
            .lock()
            .unwrap()
            .groups
            .iter()
            .any(|g| g.name == group)
        {
            Ok(())
        } else {
            Err(ApiError::NotFound(format!("no group `{group}`")))
        }
    }
}

fn fake_rollout(group: &str, phase: &str) -> RolloutView {
    RolloutView {
        group: group.into(),
        phase: phase.into(),
        strategy: "blue_green".into(),
        trigger: Some("spec".into()),
        from: Some("0a0a0a0a".into()),
        to: "1b1b1b1b".into(),
        weights: [("0a0a0a0a".to_string(), 90), ("1b1b1b1b".to_string(), 10)].into(),
        started_at: Some("2026-11-27T21:00:00Z".into()),
        switched_at: None,
        last_event: Some("traffic_shifted".into()),
        failure: None,
        pinned: None,
        deploy_image: None,
    }
}

#[async_trait::async_trait]
impl ControllerApi for FakeController {
    async fn agent_nonce(&self) -> Result<super::types::NonceResponse, crate::agent::AgentRefusal> {
        Ok(super::types::NonceResponse {
            nonce: "n".repeat(32),
            expires_in_seconds: 60,
        })
    }
    async fn agent_session(
        &self,
        request: super::types::AgentSessionRequest,
    ) -> Result<super::types::AgentSessionResponse, crate::agent::AgentRefusal> {
        Ok(super::types::AgentSessionResponse {
            token: TOKEN.into(),
            instance_id: "i-1".into(),
            group: request.nonce,
        })
    }
    async fn agent_config(
        &self,
        token: &str,
        after: Option<&str>,
    ) -> Result<super::types::AgentConfig, crate::agent::AgentRefusal> {
        if token != TOKEN {
            return Err(crate::agent::AgentRefusal::Unauthenticated(
                "the agent token is not valid".into(),
            ));
        }
        if after == Some("hold") {
            // A long poll that nothing changes.
            std::future::pending::<()>().await;
        }
        let role: endstate_config::Role = serde_json::from_value(json!({
            "name": "web",
            "resources": [{"kind": "file", "name": "motd", "path": "/etc/motd", "content": "hi"}]
        }))
        .unwrap();
        Ok(super::types::AgentConfig {
            instance_id: "i-1".into(),
            group: "web".into(),
            version: after.map_or("v1".into(), |a| format!("{a}+1")),
            roles: vec![role],
            redact: Vec::new(),
            check_in_seconds: 60.0,
        })
    }
    async fn agent_report(
        &self,
        token: &str,
        _report: super::types::AgentReport,
    ) -> Result<super::types::AgentReportAccepted, crate::agent::AgentRefusal> {
        if token != TOKEN {
            return Err(crate::agent::AgentRefusal::Unauthenticated(
                "the agent token is not valid".into(),
            ));
        }
        Ok(super::types::AgentReportAccepted {
            recorded: "config_converged".into(),
        })
    }
    fn spec(&self) -> SpecView {
        self.inner.lock().unwrap().spec.clone()
    }
    fn groups(&self) -> Vec<GroupView> {
        self.inner.lock().unwrap().groups.clone()
    }
    fn group(&self, name: &str) -> Result<GroupView, ApiError> {
        self.known(name)?;
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .groups
            .iter()
            .find(|g| g.name == name)
            .unwrap()
            .clone())
    }
    fn instances(&self, group: Option<&str>) -> Result<Vec<InstanceView>, ApiError> {
        if let Some(g) = group {
            self.known(g)?;
        }
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .instances
            .iter()
            .filter(|i| group.is_none_or(|g| g == i.group))
            .cloned()
            .collect())
    }
    async fn plan(&self, group: Option<&str>) -> Result<endstate_plan::Plan, ApiError> {
        if group == Some("boom") {
            return Err(ApiError::Internal(
                "DescribeInstances to http://10.0.0.1 with key AKIA-secret failed".into(),
            ));
        }
        if let Some(g) = group {
            self.known(g)?;
        }
        Ok(endstate_plan::Plan {
            version: 1,
            project: "shop".into(),
            environment: "prod".into(),
            spec_hash: "abc123".into(),
            observed_fingerprint: "f00d".into(),
            groups: vec![endstate_plan::GroupSummary {
                group: "web".into(),
                desired: 3,
                running: 2,
                launch: 1,
                in_spec: true,
                ..Default::default()
            }],
            phases: vec![
                endstate_plan::Phase::Launch(vec![endstate_plan::Launch {
                    group: "web".into(),
                    zone: "local-1a".into(),
                    subnet_id: None,
                    count: 1,
                    reason: endstate_plan::LaunchReason::BelowDesired {
                        live: 2,
                        desired: 3,
                    },
                }]),
                endstate_plan::Phase::Terminate(vec![
                    endstate_plan::Terminate {
                        instance_id: "i-2".into(),
                        group: "web".into(),
                        zone: "local-1a".into(),
                        reason: endstate_plan::TerminateReason::WrongType {
                            has: "t3.micro".into(),
                            wants: vec!["t3.small".into()],
                        },
                    },
                    endstate_plan::Terminate {
                        instance_id: "i-9".into(),
                        group: "web".into(),
                        zone: "local-1a".into(),
                        reason: endstate_plan::TerminateReason::Unhealthy {
                            reason: "HTTP 503 three times".into(),
                        },
                    },
                ]),
            ],
            consent: vec![endstate_plan::ConsentNeeded::GroupRemoved {
                group: "old".into(),
                live: 1,
            }],
            notes: vec!["a note".into()],
        })
    }
    fn events_after(
        &self,
        after: i64,
        limit: usize,
        group: Option<&str>,
    ) -> Result<Vec<EventView>, ApiError> {
        let gate = self.gate.lock().unwrap().take();
        if let Some((entered, release)) = gate {
            let _ = entered.send(());
            let _ = release.recv_timeout(Duration::from_secs(10));
        }
        if let Some(g) = group {
            self.known(g)?;
        }
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .events
            .iter()
            .filter(|e| e.seq > after && group.is_none_or(|g| g == e.group))
            .take(limit)
            .cloned()
            .collect())
    }
    fn subscribe(&self) -> broadcast::Receiver<EventView> {
        self.subscriptions.fetch_add(1, Ordering::SeqCst);
        self.live.subscribe()
    }
    fn scaling_activity(&self, group: Option<&str>) -> Result<Vec<ScalingActivityView>, ApiError> {
        if let Some(g) = group {
            self.known(g)?;
        }
        Ok(vec![ScalingActivityView {
            at: "2026-11-27T21:00:00Z".into(),
            group: "web".into(),
            policy: "target_tracking:cpu".into(),
            from: 2,
            to: 3,
            reason: "cpu 80 over target 50".into(),
        }])
    }
    async fn pause(&self, group: &str, reason: &str) -> Result<GroupView, ApiError> {
        self.known(group)?;
        let mut inner = self.inner.lock().unwrap();
        let g = inner.groups.iter_mut().find(|g| g.name == group).unwrap();
        g.paused = true;
        g.replacement_paused = Some(reason.to_string());
        Ok(g.clone())
    }
    async fn deploy(&self, group: &str, image: &str) -> Result<RolloutView, ApiError> {
        self.known(group)?;
        if image.is_empty() {
            return Err(ApiError::Invalid("deploy: no image".into()));
        }
        let mut view = fake_rollout(group, "pending");
        view.trigger = Some("deploy".into());
        view.deploy_image = Some(image.to_string());
        Ok(view)
    }
    async fn rollback(&self, group: &str) -> Result<RolloutView, ApiError> {
        self.known(group)?;
        if group == "db" {
            return Err(ApiError::Conflict(format!(
                "group {group} has nothing to roll back to"
            )));
        }
        Ok(fake_rollout(group, "rolling_back"))
    }
    fn rollout(&self, group: &str) -> Result<RolloutView, ApiError> {
        self.known(group)?;
        Ok(fake_rollout(group, "canary"))
    }
    async fn resume(&self, group: &str) -> Result<GroupView, ApiError> {
        self.known(group)?;
        let mut inner = self.inner.lock().unwrap();
        let g = inner.groups.iter_mut().find(|g| g.name == group).unwrap();
        g.paused = false;
        g.replacement_paused = None;
        Ok(g.clone())
    }
    async fn submit_spec(&self, spec: SpecSubmission) -> Result<SpecView, ApiError> {
        if spec.yaml.contains("invalid") {
            return Err(ApiError::Invalid(
                "spec.yaml:1:1: error: `groups` is missing\nspec.yaml:2:3: error: `min` is over `max`".into(),
            ));
        }
        if spec.yaml.contains("other-project") {
            return Err(ApiError::Conflict(
                "the spec is for project `other-project`".into(),
            ));
        }
        let mut inner = self.inner.lock().unwrap();
        inner.spec.source = "api".into();
        inner.spec.environment = spec.environment.unwrap_or_default();
        Ok(inner.spec.clone())
    }
    async fn put_metrics(&self, samples: Vec<MetricSample>) -> Result<usize, ApiError> {
        for sample in &samples {
            self.known(&sample.group)?;
        }
        let n = samples.len();
        self.inner.lock().unwrap().samples.extend(samples);
        Ok(n)
    }
    async fn set_protection(
        &self,
        group: &str,
        instance: &str,
        protected: bool,
    ) -> Result<InstanceView, ApiError> {
        self.known(group)?;
        let mut inner = self.inner.lock().unwrap();
        let i = inner
            .instances
            .iter_mut()
            .find(|i| i.id == instance && i.group == group)
            .ok_or_else(|| ApiError::NotFound(format!("no instance `{instance}` in `{group}`")))?;
        i.protected = protected;
        Ok(i.clone())
    }
    fn verify_token(&self, token: &str) -> bool {
        token == TOKEN
    }
    fn prometheus(&self) -> String {
        "# TYPE endstate_reconciles_total counter\nendstate_reconciles_total 4".into()
    }
}

/// A server of `fake` on 127.0.0.1:0 through [`serve`].
struct Server {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(fake: Arc<FakeController>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, fake, async move {
        let _ = stopped.await;
    }));
    Server {
        base,
        stop: Some(stop),
        task,
    }
}

impl Server {
    fn client(&self) -> Client {
        Client::new(self.base.clone(), TOKEN).with_stream_retry(StreamRetry {
            attempts: 3,
            first_delay: Duration::from_millis(50),
        })
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve ended within 10 s")
            .unwrap()
            .unwrap();
    }
}

/// A request that `route` answers with 200 from the fake: path parameters
/// filled with names the fake knows, a valid body.
fn sample_request(route: &Route) -> (String, Option<Value>) {
    let path = route
        .path
        .replace("{group}", "web")
        .replace("{instance}", "i-1");
    let body = match route.endpoint {
        Endpoint::SpecSubmit => Some(json!({"yaml": "project: shop\n"})),
        Endpoint::Pause => Some(json!({"reason": "maintenance"})),
        Endpoint::Protection => Some(json!({"protected": true})),
        Endpoint::Deploy => Some(json!({"image": "ami-0123456789abcdef0"})),
        Endpoint::Metrics => {
            Some(json!({"samples": [{"group": "web", "metric": "cpu", "value": 50.0}]}))
        }
        Endpoint::AgentSession => Some(json!({
            "document": "{}", "signature": "c2ln", "nonce": "n", "nonce_signature": "c2ln",
            "agent_key": "0123456789abcdef0123456789abcdef"
        })),
        Endpoint::AgentReport => Some(json!({
            "version": "v1",
            "report": {"started": "2026-11-28T00:00:00Z", "duration_ms": 3, "root": "/",
                       "noop": false, "outcome": "ok", "errors": [], "resources": []}
        })),
        _ => None,
    };
    (path, body)
}

fn request(http: &reqwest::Client, base: &str, route: &Route) -> reqwest::RequestBuilder {
    let (path, body) = sample_request(route);
    let method = match route.verb {
        Verb::Get => reqwest::Method::GET,
        Verb::Post => reqwest::Method::POST,
        Verb::Put => reqwest::Method::PUT,
    };
    let builder = http.request(method, format!("{base}{path}"));
    match body {
        Some(body) => builder.body(body.to_string()),
        None => builder,
    }
}

fn openapi() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("openapi.json parses")
}

#[test]
fn openapi_document_describes_exactly_the_route_table() {
    let doc = openapi();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            documented.insert((method.to_uppercase(), path.clone()));
            let route = ROUTES
                .iter()
                .find(|r| r.path == path && r.verb.as_str().eq_ignore_ascii_case(method));
            if let Some(route) = route {
                let open = operation.get("security") == Some(&json!([]));
                let needs_token = route.auth || route.agent_token;
                assert_eq!(
                    open, !needs_token,
                    "{method} {path}: security vs route table"
                );
                assert_eq!(
                    operation["responses"].get("401").is_some(),
                    needs_token,
                    "{method} {path}: 401 documented iff the route needs a token"
                );
            }
        }
    }
    let table: BTreeSet<_> = ROUTES
        .iter()
        .map(|r| (r.verb.as_str().to_string(), r.path.to_string()))
        .collect();
    assert_eq!(documented, table);
    assert_eq!(
        table.len(),
        ROUTES.len(),
        "the route table has no duplicates"
    );
    check_refs(&doc, &doc);
}

/// Every `$ref` in the document resolves.
fn check_refs(doc: &Value, node: &Value) {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                assert!(resolve(doc, target).is_some(), "dangling $ref {target}");
            }
            map.values().for_each(|v| check_refs(doc, v));
        }
        Value::Array(items) => items.iter().for_each(|v| check_refs(doc, v)),
        _ => {}
    }
}

fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// Checks `value` against `schema` for the keywords the document uses:
/// `$ref`, `type` (one or several), `properties`, `required`,
/// `additionalProperties`, `items`, `oneOf`, `enum`, `const`, `minimum`.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(Value::String(target)) = schema.get("$ref") {
        let target_schema = resolve(doc, target).ok_or(format!("{at}: dangling {target}"))?;
        return validate(doc, target_schema, value, at);
    }
    if let Some(Value::Array(options)) = schema.get("oneOf") {
        let matching = options
            .iter()
            .filter(|o| validate(doc, o, value, at).is_ok())
            .count();
        if matching != 1 {
            return Err(format!("{at}: {matching} oneOf options match {value}"));
        }
    }
    if let Some(constant) = schema.get("const") {
        if constant != value {
            return Err(format!("{at}: {value} is not {constant}"));
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum") {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let fits = |t: &str| match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        };
        if !types.iter().any(|t| fits(t)) {
            return Err(format!("{at}: {value} is not {types:?}"));
        }
    }
    if let (Some(minimum), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) {
        if n < minimum {
            return Err(format!("{at}: {n} is below {minimum}"));
        }
    }
    if let Value::Object(fields) = value {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !fields.contains_key(name) {
                return Err(format!("{at}: `{name}` is missing"));
            }
        }
        for (name, field) in fields {
            let field_at = format!("{at}.{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(field_schema) => validate(doc, field_schema, field, &field_at)?,
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return Err(format!("{field_at} is not in the schema"))
                    }
                    Some(extra @ Value::Object(_)) => validate(doc, extra, field, &field_at)?,
                    _ => {}
                },
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            validate(doc, item_schema, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_the_document_says() {
    let fake = FakeController::new(64);
    fake.record("web", "reconcile_started");
    let server = start(fake).await;
    let http = reqwest::Client::new();
    let doc = openapi();
    for route in ROUTES {
        let response = request(&http, &server.base, route)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let what = format!("{} {}", route.verb.as_str(), route.path);
        // Accepted (202) for what runs on after the answer, else 200.
        let expected = match route.endpoint {
            Endpoint::Deploy | Endpoint::Rollback => 202,
            _ => 200,
        };
        assert_eq!(status, expected, "{what}");
        let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let documented = doc["paths"][route.path][route.verb.as_str().to_lowercase()]["responses"]
            [expected.to_string()]["content"]
            .as_object()
            .unwrap();
        let media = documented.keys().next().unwrap();
        let essence = |t: &str| t.split(';').next().unwrap().trim().to_string();
        assert_eq!(
            essence(&content_type),
            essence(media),
            "{what}: content type"
        );
        if route.endpoint == Endpoint::EventStream {
            continue; // an open stream: its framing is tested below
        }
        let body = response.text().await.unwrap();
        if media == "application/json" {
            let value: Value = serde_json::from_str(&body).unwrap();
            let schema = &documented[media]["schema"];
            validate(&doc, schema, &value, "$").unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_routes_refuse_missing_wrong_and_malformed_tokens() {
    let server = start(FakeController::new(64)).await;
    let http = reqwest::Client::new();
    let refusals: [(&str, Option<&str>); 5] = [
        ("missing", None),
        ("wrong", Some("Bearer not-the-token")),
        ("basic", Some("Basic czNjcmV0LXRva2Vu")),
        ("empty", Some("Bearer ")),
        ("no scheme", Some(TOKEN)),
    ];
    for route in ROUTES {
        let what = format!("{} {}", route.verb.as_str(), route.path);
        for (case, header) in refusals {
            let mut builder = request(&http, &server.base, route);
            if let Some(header) = header {
                builder = builder.header(reqwest::header::AUTHORIZATION, header);
            }
            let response = builder.send().await.unwrap();
            if !(route.auth || route.agent_token) {
                assert_eq!(response.status(), 200, "{what} needs no token ({case})");
                continue;
            }
            assert_eq!(response.status(), 401, "{what} ({case})");
            assert_eq!(
                response.headers()[reqwest::header::WWW_AUTHENTICATE],
                "Bearer",
                "{what} ({case})"
            );
            let body: Value = response.json_value().await;
            let message = body["error"].as_str().unwrap();
            assert!(!message.contains(TOKEN) && !message.contains("not-the-token"));
        }
        let with_token = request(&http, &server.base, route)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_ne!(with_token.status(), 401, "{what} with the token");
    }
    server.shutdown().await;
}

/// `response.json()` needs reqwest's `json` feature, which the workspace
/// does not enable.
trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reads_every_view() {
    let fake = FakeController::new(64);
    fake.record("web", "scaled");
    fake.record("db", "reconcile_started");
    let server = start(Arc::clone(&fake)).await;
    let client = server.client();

    client.healthz().await.unwrap();
    assert_eq!(client.spec().await.unwrap().project, "shop");
    let submitted = client
        .submit_spec(&SpecSubmission {
            yaml: "project: shop\n".into(),
            environment: Some("staging".into()),
            file_name: None,
            allow_mass_terminate: false,
        })
        .await
        .unwrap();
    assert_eq!(
        (submitted.source.as_str(), submitted.environment.as_str()),
        ("api", "staging")
    );
    assert_eq!(client.groups().await.unwrap().len(), 2);
    assert_eq!(client.group("db").await.unwrap().name, "db");
    assert_eq!(client.instances(None).await.unwrap().len(), 3);
    assert_eq!(client.instances(Some("web")).await.unwrap().len(), 2);

    let paused = client
        .pause("web", Some("deploying by hand"))
        .await
        .unwrap();
    assert!(paused.paused);
    assert_eq!(
        paused.replacement_paused.as_deref(),
        Some("deploying by hand")
    );
    let paused = client.pause("db", None).await.unwrap();
    assert_eq!(
        paused.replacement_paused.as_deref(),
        Some("paused through the API")
    );
    assert!(!client.resume("web").await.unwrap().paused);

    let protected = client.set_protection("web", "i-1", true).await.unwrap();
    assert!(protected.protected);

    let deployed = client.deploy("web", "ami-0123456789abcdef0").await.unwrap();
    assert_eq!(
        (deployed.phase.as_str(), deployed.deploy_image.as_deref()),
        ("pending", Some("ami-0123456789abcdef0"))
    );
    assert_eq!(client.rollout("web").await.unwrap().weights["1b1b1b1b"], 10);
    assert_eq!(client.rollback("web").await.unwrap().phase, "rolling_back");
    match client.rollback("db").await {
        Err(ClientError::Api {
            status, message, ..
        }) => {
            assert_eq!(status, 409);
            assert!(message.contains("nothing to roll back to"), "{message}");
        }
        other => panic!("expected a 409, got {other:?}"),
    }

    let health = client.health().await.unwrap();
    assert_eq!(health[0].group, "web");
    assert_eq!(health[0].unhealthy_instances.len(), 1);
    assert_eq!(health[0].unhealthy_instances[0].id, "i-2");
    assert_eq!(
        health[0].unhealthy_instances[0].reason,
        "HTTP 503 three times"
    );
    assert!(health[1].unhealthy_instances.is_empty());

    let plan = client.plan(Some("web")).await.unwrap();
    assert_eq!(plan.totals(), (1, 2, 0));

    let events = client.events_after(0, 10, None).await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    let events = client.events_after(0, 10, Some("db")).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        vec!["reconcile_started"]
    );
    assert_eq!(client.events_after(1, 1, None).await.unwrap()[0].seq, 2);

    assert_eq!(client.scaling(Some("web")).await.unwrap()[0].to, 3);
    let accepted = client
        .put_metrics(&[
            MetricSample {
                group: "web".into(),
                instance: Some("i-1".into()),
                metric: "cpu".into(),
                value: 71.5,
            },
            MetricSample {
                group: "web".into(),
                instance: None,
                metric: "requests".into(),
                value: 300.0,
            },
        ])
        .await
        .unwrap();
    assert_eq!(accepted, 2);
    assert_eq!(fake.inner.lock().unwrap().samples[0].value, 71.5);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_the_status_and_the_servers_message() {
    let server = start(FakeController::new(64)).await;
    let client = server.client();
    let status_and_message = |e: ClientError| match e {
        ClientError::Api {
            status, message, ..
        } => (status, message),
        other => panic!("not an API error: {other}"),
    };

    let (status, message) = status_and_message(client.group("nope").await.unwrap_err());
    assert_eq!((status, message.as_str()), (404, "no group `nope`"));

    let spec = |yaml: &str| SpecSubmission {
        yaml: yaml.into(),
        environment: None,
        file_name: None,
        allow_mass_terminate: false,
    };
    let (status, message) =
        status_and_message(client.submit_spec(&spec("invalid")).await.unwrap_err());
    assert_eq!(status, 422);
    assert!(message.starts_with("spec.yaml:1:1: error:"), "{message}");
    assert_eq!(message.lines().count(), 2);
    let (status, _) = status_and_message(
        client
            .submit_spec(&spec("other-project"))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 409);

    let (status, message) = status_and_message(client.plan(Some("boom")).await.unwrap_err());
    assert_eq!(status, 500);
    assert!(
        !message.contains("AKIA") && !message.contains("10.0.0.1"),
        "{message}"
    );

    let (status, _) = status_and_message(
        client
            .set_protection("web", "i-404", true)
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 404);

    // Malformed input is 400 with a message naming what is wrong.
    let http = reqwest::Client::new();
    let cases: [(reqwest::Method, &str, Option<&str>, &str); 8] = [
        (
            reqwest::Method::GET,
            "/v1/events?limit=5000",
            None,
            "`limit`: 5000 is out of range",
        ),
        (
            reqwest::Method::GET,
            "/v1/events?limit=0",
            None,
            "`limit`: 0 is out of range",
        ),
        (
            reqwest::Method::GET,
            "/v1/events?after=yesterday",
            None,
            "`after`: `yesterday` is not an integer",
        ),
        (
            reqwest::Method::GET,
            "/v1/plan?grup=web",
            None,
            "`grup` is unknown",
        ),
        (
            reqwest::Method::POST,
            "/v1/spec",
            Some("{\"yml\": 1}"),
            "missing field `yaml`",
        ),
        (
            reqwest::Method::POST,
            "/v1/spec",
            Some(""),
            "expected a spec submission",
        ),
        (
            reqwest::Method::PUT,
            "/v1/groups/web/instances/i-1/protection",
            Some("{\"protected\": \"yes\"}"),
            "line 1 column",
        ),
        (
            reqwest::Method::POST,
            "/v1/metrics",
            Some("{\"samples\": [{\"group\": \"web\"}]}"),
            "missing field",
        ),
    ];
    for (method, path, body, expected) in cases {
        let mut builder = http
            .request(method.clone(), format!("{}{path}", server.base))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            builder = builder.body(body.to_string());
        }
        let response = builder.send().await.unwrap();
        assert_eq!(response.status(), 400, "{method} {path}");
        let message = response.json_value().await["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains(expected), "{method} {path}: {message}");
    }
    let response = http
        .get(format!("{}/v1/events/stream", server.base))
        .bearer_auth(TOKEN)
        .header("Last-Event-ID", "seven")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = http
        .get(format!("{}/v1/events/stream?group=nope", server.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    // A client of its own: the server closes the connection after refusing
    // an unread body, and a pooled connection would be reused half-closed.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/spec", server.base))
        .bearer_auth(TOKEN)
        .body(vec![b' '; 3 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let message = response.json_value().await["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.starts_with("request body:"), "{message}");
    let response = http
        .get(format!("{}/v2/nothing", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.json_value().await["error"], "no such route");
    let response = http
        .delete(format!("{}/v1/spec", server.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert!(response.json_value().await["error"].is_string());
    server.shutdown().await;
}

/// Reads an SSE body until `count` events have come; returns (id, event,
/// data) of each.
async fn read_sse(response: &mut reqwest::Response, count: usize) -> Vec<(i64, String, Value)> {
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream is still open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut fields = HashMap::new();
            for line in block
                .lines()
                .filter(|l| !l.starts_with(':') && !l.is_empty())
            {
                let (name, value) = line.split_once(':').unwrap();
                fields.insert(name.to_string(), value.trim_start().to_string());
            }
            if fields.is_empty() {
                continue; // a keep-alive comment
            }
            events.push((
                fields.get("id").map_or(-1, |id| id.parse().unwrap()),
                fields["event"].clone(),
                serde_json::from_str(&fields["data"]).unwrap(),
            ));
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_sends_history_then_live_events_once_each_in_order() {
    let fake = FakeController::new(64);
    for kind in ["a", "b", "c"] {
        fake.record("web", kind);
    }
    let server = start(Arc::clone(&fake)).await;
    // Events 4 and 5 are recorded after the stream subscribed and while it
    // reads history: they reach it both ways, and must come once.
    let (entered, release) = fake.hold_history();
    let mut response = reqwest::Client::new()
        .get(format!("{}/v1/events/stream?after=1", server.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    tokio::task::spawn_blocking(move || entered.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the stream reads history");
    fake.record("web", "d");
    fake.record("db", "e");
    release.send(()).unwrap();
    let first = read_sse(&mut response, 4).await;
    fake.record("web", "f");
    let second = read_sse(&mut response, 1).await;
    let seen: Vec<(i64, String)> = first
        .iter()
        .chain(&second)
        .map(|(id, kind, data)| {
            assert_eq!(data["seq"].as_i64(), Some(*id));
            assert_eq!(data["kind"].as_str(), Some(kind.as_str()));
            (*id, kind.clone())
        })
        .collect();
    let expected: Vec<(i64, String)> = [(2, "b"), (3, "c"), (4, "d"), (5, "e"), (6, "f")]
        .into_iter()
        .map(|(id, kind)| (id, kind.to_string()))
        .collect();
    assert_eq!(seen, expected);
    drop(response);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_resumes_after_last_event_id_and_filters_by_group() {
    let fake = FakeController::new(64);
    for group in ["web", "db", "web", "db", "web"] {
        fake.record(group, "scaled");
    }
    let server = start(Arc::clone(&fake)).await;
    let mut response = reqwest::Client::new()
        .get(format!(
            "{}/v1/events/stream?after=0&group=web",
            server.base
        ))
        .bearer_auth(TOKEN)
        .header("Last-Event-ID", "2")
        .send()
        .await
        .unwrap();
    let history = read_sse(&mut response, 2).await;
    assert_eq!(history.iter().map(|e| e.0).collect::<Vec<_>>(), vec![3, 5]);
    fake.record("db", "scaled");
    fake.record("web", "scaled");
    let live = read_sse(&mut response, 1).await;
    assert_eq!(live[0].0, 7);
    drop(response);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reconnects_after_lagged_without_gaps_or_duplicates() {
    // A live buffer of 2: recording 6 events while the stream catches up
    // makes its subscription lag.
    let fake = FakeController::new(2);
    fake.record("web", "first");
    let server = start(Arc::clone(&fake)).await;
    let (entered, release) = fake.hold_history();
    let mut stream = Box::pin(server.client().events_stream(0, None));
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while seqs.len() < 8 {
            let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("an event within 10 s")
                .expect("the stream goes on")
                .expect("no error");
            seqs.push(event.seq);
        }
        seqs
    });
    tokio::task::spawn_blocking(move || entered.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the stream reads history");
    for _ in 0..6 {
        fake.record("web", "burst");
    }
    release.send(()).unwrap();
    // Wait for the reconnection (a second subscription) before the last.
    for _ in 0..200 {
        if fake.subscriptions.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        fake.subscriptions.load(Ordering::SeqCst) >= 2,
        "the client reconnected"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    fake.record("web", "after");
    let seqs = reader.await.unwrap();
    assert_eq!(seqs, (1..=8).collect::<Vec<i64>>());
    server.shutdown().await;
}

/// The stream's next item, within 10 s.
async fn next_event<S>(stream: &mut S) -> Result<EventView, ClientError>
where
    S: futures_util::Stream<Item = Result<EventView, ClientError>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream goes on")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_stream_resumes_across_a_server_restart() {
    let fake = FakeController::new(64);
    fake.record("web", "before");
    let server = start(Arc::clone(&fake)).await;
    let address = server.base.trim_start_matches("http://").to_string();
    let client = Client::new(server.base.clone(), TOKEN).with_stream_retry(StreamRetry {
        attempts: 20,
        first_delay: Duration::from_millis(50),
    });
    let mut stream = Box::pin(client.events_stream(0, None));
    let first = next_event(&mut stream).await;
    assert_eq!(first.unwrap().seq, 1);
    server.shutdown().await;
    fake.record("web", "while-down");
    let listener = tokio::net::TcpListener::bind(&address).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        listener,
        Arc::clone(&fake) as Arc<dyn ControllerApi>,
        async move {
            let _ = stopped.await;
        },
    ));
    let second = next_event(&mut stream).await.unwrap();
    assert_eq!((second.seq, second.kind.as_str()), (2, "while-down"));
    fake.record("web", "after");
    assert_eq!(next_event(&mut stream).await.unwrap().seq, 3);
    drop(stream);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_stream_gives_up_after_bounded_retries_and_not_at_all_on_401() {
    let server = start(FakeController::new(8)).await;
    let refused = Client::new(server.base.clone(), "wrong");
    let mut stream = Box::pin(refused.events_stream(0, None));
    let error = stream.next().await.unwrap().unwrap_err();
    assert_eq!(error.status(), Some(401), "{error}");
    assert!(stream.next().await.is_none());

    let client = server.client();
    server.shutdown().await;
    let mut stream = Box::pin(client.events_stream(0, None));
    let error = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(error, ClientError::StreamGaveUp { attempts: 3, .. }),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_has_the_controllers_and_the_request_counters() {
    let server = start(FakeController::new(8)).await;
    let client = server.client();
    client.groups().await.unwrap();
    client.group("web").await.unwrap();
    client.group("nope").await.unwrap_err();
    Client::new(server.base.clone(), "bad")
        .groups()
        .await
        .unwrap_err();
    let response = reqwest::Client::new()
        .get(format!("{}/metrics", server.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()[reqwest::header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    for line in [
        "endstate_reconciles_total 4\n",
        "# TYPE endstate_api_requests_total counter\n",
        "endstate_api_requests_total{method=\"GET\",route=\"/v1/groups\",status=\"200\"} 1\n",
        "endstate_api_requests_total{method=\"GET\",route=\"/v1/groups\",status=\"401\"} 1\n",
        "endstate_api_requests_total{method=\"GET\",route=\"/v1/groups/{group}\",status=\"200\"} 1\n",
        "endstate_api_requests_total{method=\"GET\",route=\"/v1/groups/{group}\",status=\"404\"} 1\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let again = client.metrics_text().await.unwrap();
    assert!(
        again.contains(
            "endstate_api_requests_total{method=\"GET\",route=\"/metrics\",status=\"200\"} 1\n"
        ),
        "{again}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_open_streams_and_serve() {
    let fake = FakeController::new(8);
    fake.record("web", "a");
    let server = start(Arc::clone(&fake)).await;
    let mut response = reqwest::Client::new()
        .get(format!("{}/v1/events/stream", server.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(read_sse(&mut response, 1).await[0].0, 1);
    // `shutdown` fails the test if serve has not ended within 10 s.
    server.shutdown().await;
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = response.chunk().await {}
    })
    .await;
    assert!(end.is_ok(), "the stream ended with the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_held_agent_polls() {
    let server = start(FakeController::new(8)).await;
    let poll = tokio::spawn(
        reqwest::Client::new()
            .get(format!("{}/v1/agent/config?after=hold", server.base))
            .bearer_auth(TOKEN)
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!poll.is_finished(), "the poll is held");
    // `shutdown` fails the test if serve has not ended within 10 s.
    server.shutdown().await;
    let response = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_gets_keep_alive_comments() {
    let (_signal, shutdown) = tokio::sync::watch::channel(false);
    let app = build_router(FakeController::new(8), shutdown, Duration::from_millis(50));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut response = reqwest::Client::new()
        .get(format!("{base}/v1/events/stream"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(chunk.starts_with(b":"), "{chunk:?}");
    task.abort();
}
