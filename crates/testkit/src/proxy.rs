//! [`FaultProxy`]: an HTTP/1.1 proxy for tests that sits between endstate
//! (its EC2 client, or the whole binary as a child process) and an EC2
//! endpoint on loopback (moto, later the built-in cloud), records every
//! request, and injects faults on command.
//!
//! What it does:
//! - listens on `127.0.0.1:0` with keep-alive and forwards each request
//!   unchanged (method, path, query, headers minus hop-by-hop ones, body bytes,
//!   and the `Host` header the client sent, because SigV4 signs it) to one
//!   upstream base URL, which must be on loopback;
//! - records each request ([`RecordedRequest`]): its EC2 `Action` and form
//!   parameters, timing, the response status, body and EC2 error code, and the
//!   fault applied, if any;
//! - applies [`Rule`]s: answer with an error document without forwarding,
//!   close the connection before or after the upstream acted, stall, or
//!   `SIGKILL` a registered process (the endstate binary under test);
//! - optionally throttles like EC2 ([`FaultProxy::throttle_like_ec2`]), with
//!   the token buckets of [`endstate_wire::limits`].
//!
//! What it is not: a general-purpose or production proxy. It binds only to
//! loopback, forwards only to loopback, holds whole bodies in memory, speaks
//! neither TLS nor HTTP/2, and is meant to live as long as one test.
//!
//! Time: `arrived`/`completed` are wall durations since the proxy started;
//! `arrived_at`/`completed_at`, the token buckets and [`Fault::Stall`] use the
//! proxy's [`SharedClock`] ([`SystemClock`] unless one is given), so that a
//! test on a `ManualClock` controls refills and stalls exactly.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use endstate_clock::{SharedClock, SystemClock};
use endstate_wire::limits::{BucketShape, RequestClass, ResourceClass, TokenBucket};
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

/// Largest request body the proxy accepts. EC2 Query requests are small
/// (user data is at most 16 KiB before base64); this only guards memory.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How long a forwarded request may take before the proxy gives up on the
/// upstream and answers 502.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a graceful shutdown waits for in-flight requests before it
/// closes their connections anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The code and message EC2 sends when a request is throttled.
const THROTTLE_CODE: &str = "RequestLimitExceeded";
const THROTTLE_MESSAGE: &str = "Request limit exceeded.";

/// Headers that belong to one connection and are never forwarded (RFC 9110
/// section 7.6.1), in addition to those named by a `Connection` header.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Which requests a [`Rule`] applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// Every request.
    Any,
    /// The k-th request overall (1-based, in arrival order, counted since the
    /// proxy started or was last [cleared](FaultProxy::clear)).
    Nth(u64),
    /// The k-th request (1-based) whose `Action` is the given one.
    NthOf(String, u64),
    /// Every request whose `Action` is the given one.
    Action(String),
}

impl Matcher {
    /// [`Matcher::NthOf`] without spelling out `String`.
    pub fn nth_of(action: impl Into<String>, k: u64) -> Self {
        Matcher::NthOf(action.into(), k)
    }

    /// [`Matcher::Action`] without spelling out `String`.
    pub fn action(action: impl Into<String>) -> Self {
        Matcher::Action(action.into())
    }

    fn matches(&self, seq: u64, action: Option<&str>, nth_of_action: Option<u64>) -> bool {
        match self {
            Matcher::Any => true,
            Matcher::Nth(k) => seq == *k,
            Matcher::NthOf(a, k) => action == Some(a.as_str()) && nth_of_action == Some(*k),
            Matcher::Action(a) => action == Some(a.as_str()),
        }
    }
}

/// What the proxy does to a matched request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer 503 with an EC2 `RequestLimitExceeded` error document, without
    /// forwarding.
    Throttle,
    /// Answer `status` with an EC2 error document carrying `code` and
    /// `message`, without forwarding (500 `InternalError`, 400
    /// `InsufficientInstanceCapacity`, ...).
    Fail {
        status: u16,
        code: String,
        message: String,
    },
    /// Close the connection without a response; the upstream never sees the
    /// request.
    DropBeforeForward,
    /// Forward, let the upstream act and answer, then close the connection
    /// without responding: the "unknown outcome" case. The upstream's answer
    /// is recorded.
    DropAfterForward,
    /// Wait this long (on the proxy's clock), then forward normally.
    Stall(Duration),
    /// `SIGKILL` the [kill target](FaultProxy::set_kill_target), then close
    /// the connection; the upstream never sees the request.
    KillBeforeForward,
    /// Forward, let the upstream act, `SIGKILL` the kill target, then close
    /// the connection without responding.
    KillAfterForward,
}

impl Fault {
    /// [`Fault::Fail`] without spelling out `String`s.
    pub fn fail(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Fault::Fail {
            status,
            code: code.into(),
            message: message.into(),
        }
    }
}

/// A fault to apply to the requests a matcher selects, at most `times` times
/// (`None`: every time). Rules are tried in the order they were added; the
/// first one that matches and has not run out applies, and only one applies
/// to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matcher: Matcher,
    pub fault: Fault,
    /// How many more times the rule may fire; `None` for no limit.
    pub times: Option<u32>,
}

impl Rule {
    /// A rule that fires on every match.
    pub fn new(matcher: Matcher, fault: Fault) -> Self {
        Self {
            matcher,
            fault,
            times: None,
        }
    }

    /// A rule that fires on the first match only.
    pub fn once(matcher: Matcher, fault: Fault) -> Self {
        Self::new(matcher, fault).times(1)
    }

    /// Limits the rule to `n` firings.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
}

/// The bucket shapes [`FaultProxy::throttle_with`] enforces. A class missing
/// from a map gets EC2's documented default.
#[derive(Debug, Clone, PartialEq)]
pub struct Ec2Limits {
    pub requests: BTreeMap<RequestClass, BucketShape>,
    pub resources: BTreeMap<ResourceClass, BucketShape>,
}

impl Default for Ec2Limits {
    /// EC2's documented defaults for every class.
    fn default() -> Self {
        Self {
            requests: RequestClass::ALL
                .iter()
                .map(|&class| (class, class.default_shape()))
                .collect(),
            resources: RESOURCE_CLASSES
                .iter()
                .map(|&class| (class, class.default_shape()))
                .collect(),
        }
    }
}

/// `ResourceClass` has no `ALL`; this is the list `limits.rs` documents.
const RESOURCE_CLASSES: [ResourceClass; 4] = [
    ResourceClass::RunInstances,
    ResourceClass::TerminateInstances,
    ResourceClass::StartInstances,
    ResourceClass::StopInstances,
];

impl Ec2Limits {
    /// Multiplies every refill rate by `factor` (capacities unchanged), so a
    /// test can watch buckets refill faster than EC2's.
    pub fn scaled(mut self, factor: f64) -> Self {
        for shape in self
            .requests
            .values_mut()
            .chain(self.resources.values_mut())
        {
            shape.refill_per_sec *= factor;
        }
        self
    }

    /// Replaces one request class's shape.
    pub fn with_request(mut self, class: RequestClass, shape: BucketShape) -> Self {
        self.requests.insert(class, shape);
        self
    }

    /// Replaces one resource class's shape.
    pub fn with_resource(mut self, class: ResourceClass, shape: BucketShape) -> Self {
        self.resources.insert(class, shape);
        self
    }

    fn request_shape(&self, class: RequestClass) -> BucketShape {
        self.requests
            .get(&class)
            .copied()
            .unwrap_or_else(|| class.default_shape())
    }

    fn resource_shape(&self, class: ResourceClass) -> BucketShape {
        self.resources
            .get(&class)
            .copied()
            .unwrap_or_else(|| class.default_shape())
    }
}

/// The token bucket that refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Request(RequestClass),
    Resource(ResourceClass),
}

/// What happened when the proxy tried to `SIGKILL` its kill target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillOutcome {
    /// The signal was delivered.
    Killed { pid: u32 },
    /// No kill target was registered; nothing was signalled.
    NoTarget,
    /// `kill(2)` failed (the process is gone, or the pid was refused).
    Failed { pid: u32, error: String },
}

/// One request as the proxy saw it. Requests still in flight have no
/// `completed` time yet.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// 1-based, in arrival order, since the proxy started or was cleared.
    pub seq: u64,
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    /// The request headers as received (before hop-by-hop ones are removed).
    pub headers: HeaderMap,
    /// The EC2 `Action` parameter, if there was one.
    pub action: Option<String>,
    /// Every form parameter, decoded, in order: the query string's, then the
    /// `application/x-www-form-urlencoded` body's.
    pub params: Vec<(String, String)>,
    /// When the whole request had arrived, since the proxy started.
    pub arrived: Duration,
    /// When the proxy answered or closed the connection, since it started.
    pub completed: Option<Duration>,
    /// `arrived` on the proxy's clock (time since the Unix epoch).
    pub arrived_at: Duration,
    /// `completed` on the proxy's clock.
    pub completed_at: Option<Duration>,
    /// The rule's fault applied to this request, if one matched.
    pub fault: Option<Fault>,
    /// The EC2 token bucket that refused this request, if any.
    pub throttled_by: Option<Bucket>,
    /// Set when the fault was a kill.
    pub kill: Option<KillOutcome>,
    /// Whether the request was forwarded and the upstream answered.
    pub reached_upstream: bool,
    /// Whether the client got a response (false when the connection was
    /// dropped, whatever the upstream did).
    pub answered: bool,
    /// The status of the response: the proxy's own, or the upstream's (also
    /// when the client never received it).
    pub status: Option<u16>,
    /// The `<Code>` of an EC2 error document in the response.
    pub error_code: Option<String>,
    /// The response body, lossily decoded as UTF-8.
    pub response_body: Option<String>,
    /// Why forwarding failed, if it did (the client then got a 502).
    pub upstream_error: Option<String>,
}

impl RecordedRequest {
    /// The first value of the form parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Whether the request was answered `RequestLimitExceeded` by a
    /// [`Fault::Throttle`] rule or by an EC2 token bucket.
    pub fn throttled(&self) -> bool {
        self.throttled_by.is_some() || self.fault == Some(Fault::Throttle)
    }
}

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The upstream base URL is malformed or not on loopback.
    #[error("upstream {url:?} is not usable: {reason}")]
    Upstream { url: String, reason: String },
    /// Binding `127.0.0.1:0` failed.
    #[error("cannot listen on 127.0.0.1: {0}")]
    Bind(#[source] std::io::Error),
    /// The forwarding HTTP client could not be built.
    #[error("cannot build the forwarding HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The background runtime thread of [`FaultProxy::start_blocking`] could
    /// not be started.
    #[error("cannot start the proxy's runtime thread: {0}")]
    Runtime(#[source] std::io::Error),
    /// The background runtime thread ended before reporting that it started.
    #[error("the proxy's runtime thread ended before the proxy started")]
    RuntimeGone,
}

/// The handle to a running proxy. Clones share the proxy; it stops when
/// [`shutdown`](FaultProxy::shutdown) is called or the last clone is dropped.
#[derive(Clone)]
pub struct FaultProxy {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    url: String,
    stop: watch::Sender<bool>,
    stopped: watch::Receiver<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("url", &self.handle.url)
            .field("upstream", &self.handle.shared.upstream)
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (a base URL such as
    /// `http://127.0.0.1:5000`) on the current tokio runtime, with the
    /// system clock.
    pub async fn start(upstream: &str) -> Result<Self, ProxyError> {
        Self::start_with_clock(upstream, SystemClock::shared()).await
    }

    /// [`start`](Self::start) with the given clock for `arrived_at`,
    /// `completed_at`, the token buckets and stalls.
    pub async fn start_with_clock(upstream: &str, clock: SharedClock) -> Result<Self, ProxyError> {
        let (proxy, serve) = Self::bind(upstream, clock).await?;
        tokio::spawn(serve);
        Ok(proxy)
    }

    /// Starts a proxy on a runtime thread of its own, for tests without a
    /// runtime. Callable from async code too (it blocks only until the
    /// listener is bound).
    pub fn start_blocking(upstream: &str) -> Result<Self, ProxyError> {
        Self::start_blocking_with_clock(upstream, SystemClock::shared())
    }

    /// [`start_blocking`](Self::start_blocking) with the given clock.
    pub fn start_blocking_with_clock(
        upstream: &str,
        clock: SharedClock,
    ) -> Result<Self, ProxyError> {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let upstream = upstream.to_owned();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        // The receiver only goes away if the caller is gone.
                        let _ = started_tx.send(Err(ProxyError::Runtime(error)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Self::bind(&upstream, clock).await {
                        Ok((proxy, serve)) => {
                            // If the caller is gone the handle is dropped
                            // here, which stops `serve` at once.
                            let _ = started_tx.send(Ok(proxy));
                            serve.await;
                        }
                        Err(error) => {
                            let _ = started_tx.send(Err(error));
                        }
                    }
                });
            })
            .map_err(ProxyError::Runtime)?;
        let proxy = started_rx.recv().map_err(|_| ProxyError::RuntimeGone)??;
        *lock(&proxy.handle.thread) = Some(thread);
        Ok(proxy)
    }

    async fn bind(
        upstream: &str,
        clock: SharedClock,
    ) -> Result<(Self, impl Future<Output = ()> + Send + 'static), ProxyError> {
        let upstream = loopback_base_url(upstream)?;
        let client = reqwest::Client::builder()
            // Environment proxies must never see test traffic, and redirects
            // belong to the client under test, not to the proxy.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(UPSTREAM_TIMEOUT)
            .build()
            .map_err(ProxyError::Client)?;
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(ProxyError::Bind)?;
        let addr = listener.local_addr().map_err(ProxyError::Bind)?;
        let shared = Arc::new(Shared {
            upstream,
            client,
            clock,
            started: Instant::now(),
            state: Mutex::new(State::default()),
        });
        let (stop, stop_rx) = watch::channel(false);
        let (stopped_tx, stopped) = watch::channel(false);
        let serve = serve(listener, Arc::clone(&shared), stop_rx, stopped_tx);
        let proxy = FaultProxy {
            handle: Arc::new(Handle {
                shared,
                addr,
                url: format!("http://{addr}"),
                stop,
                stopped,
                thread: Mutex::new(None),
            }),
        };
        tracing::debug!(url = %proxy.handle.url, upstream = %proxy.handle.shared.upstream, "fault proxy listening");
        Ok((proxy, serve))
    }

    /// The proxy's base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.handle.url.clone()
    }

    /// The proxy's listening address.
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr
    }

    /// The upstream base URL requests are forwarded to (without a trailing
    /// slash).
    pub fn upstream(&self) -> &str {
        &self.handle.shared.upstream
    }

    /// Every request since the proxy started or was last cleared, in arrival
    /// order, including those still in flight.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.handle.shared.lock().records.clone()
    }

    /// The recorded requests whose `Action` is `action`.
    pub fn requests_of(&self, action: &str) -> Vec<RecordedRequest> {
        self.handle
            .shared
            .lock()
            .records
            .iter()
            .filter(|r| r.action.as_deref() == Some(action))
            .cloned()
            .collect()
    }

    /// Forgets the recorded requests and restarts counting: the next request
    /// is number 1 again, for [`Matcher::Nth`] and [`Matcher::NthOf`] too.
    /// Rules, the kill target and the token buckets stay. Requests in flight
    /// finish but are not recorded.
    pub fn clear(&self) {
        let mut state = self.handle.shared.lock();
        state.epoch += 1;
        state.records.clear();
        state.per_action.clear();
    }

    /// Adds a rule after the existing ones.
    pub fn add_rule(&self, rule: Rule) {
        self.handle.shared.lock().rules.push(rule);
    }

    /// The rules, with the firings each has left.
    pub fn rules(&self) -> Vec<Rule> {
        self.handle.shared.lock().rules.clone()
    }

    /// Removes every rule.
    pub fn clear_rules(&self) {
        self.handle.shared.lock().rules.clear();
    }

    /// Registers the process that [`Fault::KillBeforeForward`] and
    /// [`Fault::KillAfterForward`] send `SIGKILL` to.
    pub fn set_kill_target(&self, pid: u32) {
        self.handle.shared.lock().kill_target = Some(pid);
    }

    /// Forgets the kill target; kill faults then only drop the connection.
    pub fn clear_kill_target(&self) {
        self.handle.shared.lock().kill_target = None;
    }

    /// Turns EC2's default throttling on (with full buckets) or off.
    pub fn throttle_like_ec2(&self, on: bool) {
        if on {
            self.throttle_with(Ec2Limits::default());
        } else {
            self.handle.shared.lock().buckets = None;
        }
    }

    /// Throttles with the given bucket shapes, starting with full buckets.
    ///
    /// Each request with an `Action` draws one token from its request class's
    /// bucket and, for instance-counted actions, one token per instance from
    /// its resource class's bucket (RunInstances: `MaxCount`; Terminate-,
    /// Start- and StopInstances: the `InstanceId.N` parameters). A request
    /// either bucket cannot serve, or that asks for more instances than the
    /// resource bucket holds, is answered 503 `RequestLimitExceeded`, takes
    /// nothing, and is not forwarded. A request a [`Rule`] fires on bypasses
    /// the buckets.
    pub fn throttle_with(&self, limits: Ec2Limits) {
        self.handle.shared.lock().buckets = Some(Buckets::new(limits));
    }

    /// Stops accepting connections, lets requests in flight finish (for at
    /// most a few seconds), and waits until the proxy has stopped.
    pub async fn shutdown(&self) {
        self.handle.stop.send_replace(true);
        let mut stopped = self.handle.stopped.clone();
        // An error means the server task is gone already: stopped as well.
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }

    /// [`shutdown`](Self::shutdown) for code without a runtime. For a proxy
    /// from [`start_blocking`](Self::start_blocking) it waits for the
    /// runtime thread to end; for one from [`start`](Self::start) it only
    /// asks the proxy to stop (use `shutdown().await` there).
    pub fn shutdown_blocking(&self) {
        self.handle.stop.send_replace(true);
        let thread = lock(&self.handle.thread).take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::warn!("fault proxy runtime thread panicked");
            }
        }
    }
}

/// Locks a mutex, recovering from poisoning: every critical section here
/// leaves the guarded state consistent before anything in it can panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Checks that `url` is an `http://` URL on a loopback host and returns it
/// without a trailing slash.
fn loopback_base_url(url: &str) -> Result<String, ProxyError> {
    let refuse = |reason: &str| ProxyError::Upstream {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| refuse(&e.to_string()))?;
    if parsed.scheme() != "http" {
        return Err(refuse("only http:// upstreams are supported"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(refuse("a base URL takes no query or fragment"));
    }
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(refuse("the proxy forwards only to loopback addresses"));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// State shared by the handle and every connection.
struct Shared {
    upstream: String,
    client: reqwest::Client,
    clock: SharedClock,
    started: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bumped by `clear`, so a request in flight across it does not write
    /// into the new records.
    epoch: u64,
    records: Vec<RecordedRequest>,
    per_action: HashMap<String, u64>,
    rules: Vec<Rule>,
    kill_target: Option<u32>,
    buckets: Option<Buckets>,
}

/// Where a request's record lives.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    epoch: u64,
    index: usize,
}

/// What the proxy decided to do with a request when it arrived.
struct Decision {
    ticket: Ticket,
    fault: Option<Fault>,
    throttled_by: Option<Bucket>,
}

/// How a request ended, to be written into its record.
#[derive(Default)]
struct Ending {
    reached_upstream: bool,
    answered: bool,
    status: Option<u16>,
    body: Option<Bytes>,
    kill: Option<KillOutcome>,
    upstream_error: Option<String>,
}

/// A response the upstream gave.
struct Forwarded {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Numbers and records an arrived request and decides its fate, all under
    /// one lock so that numbering, rule firing and bucket draws follow
    /// arrival order.
    fn arrive(
        &self,
        head: &http::request::Parts,
        action: Option<String>,
        params: Vec<(String, String)>,
    ) -> Decision {
        let mut state = self.lock();
        let arrived = self.started.elapsed();
        let arrived_at = self.clock.now();
        let seq = state.records.len() as u64 + 1;
        let nth_of_action = action.as_ref().map(|action| {
            let count = state.per_action.entry(action.clone()).or_insert(0);
            *count += 1;
            *count
        });
        let fault = state.rules.iter_mut().find_map(|rule| {
            if rule.times == Some(0) || !rule.matcher.matches(seq, action.as_deref(), nth_of_action)
            {
                return None;
            }
            if let Some(times) = rule.times.as_mut() {
                *times -= 1;
            }
            Some(rule.fault.clone())
        });
        let throttled_by = match (&fault, state.buckets.as_mut(), action.as_deref()) {
            (None, Some(buckets), Some(action)) => buckets.admit(arrived_at, action, &params).err(),
            _ => None,
        };
        let ticket = Ticket {
            epoch: state.epoch,
            index: state.records.len(),
        };
        state.records.push(RecordedRequest {
            seq,
            method: head.method.clone(),
            path: head.uri.path().to_owned(),
            query: head.uri.query().map(str::to_owned),
            headers: head.headers.clone(),
            action,
            params,
            arrived,
            completed: None,
            arrived_at,
            completed_at: None,
            fault: fault.clone(),
            throttled_by,
            kill: None,
            reached_upstream: false,
            answered: false,
            status: None,
            error_code: None,
            response_body: None,
            upstream_error: None,
        });
        Decision {
            ticket,
            fault,
            throttled_by,
        }
    }

    /// Writes how a request ended into its record.
    fn complete(&self, ticket: Ticket, ending: Ending) {
        let response_body = ending
            .body
            .as_ref()
            .map(|body| String::from_utf8_lossy(body).into_owned());
        let error_code = match (ending.status, &response_body) {
            (Some(status), Some(body)) if !(200..300).contains(&status) => ec2_error_code(body),
            _ => None,
        };
        let mut state = self.lock();
        let completed = self.started.elapsed();
        let completed_at = self.clock.now();
        if state.epoch != ticket.epoch {
            return;
        }
        let Some(record) = state.records.get_mut(ticket.index) else {
            return;
        };
        record.completed = Some(completed);
        record.completed_at = Some(completed_at);
        record.reached_upstream = ending.reached_upstream;
        record.answered = ending.answered;
        record.status = ending.status;
        record.error_code = error_code;
        record.response_body = response_body;
        record.kill = ending.kill;
        record.upstream_error = ending.upstream_error;
    }

    /// Sends the request to the upstream with the client's headers (the
    /// `Host` one included) and body, and reads the whole answer.
    async fn forward(&self, head: &http::request::Parts, body: Bytes) -> Result<Forwarded, String> {
        let path_and_query = head.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let url = format!("{}{}", self.upstream, path_and_query);
        // The client computes Content-Length from the body it sends, which is
        // the same bytes; the original header may describe a chunked upload.
        let mut headers = end_to_end(&head.headers);
        headers.remove(CONTENT_LENGTH);
        // hyper adds a Host header only when the request has none, so the
        // upstream sees the one the client signed. reqwest adds `accept: */*`
        // to a request without an Accept header; a signer cannot have signed
        // a header the client did not send, so that changes no signature.
        let response = self
            .client
            .request(head.method.clone(), url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| error_chain(&e))?;
        Ok(Forwarded {
            status,
            headers,
            body,
        })
    }

    /// Sends `SIGKILL` to the kill target, if there is one.
    fn kill_target(&self) -> KillOutcome {
        let Some(pid) = self.lock().kill_target else {
            return KillOutcome::NoTarget;
        };
        // kill(2) reads 0 and negative pids as process groups, and the proxy's
        // own pid is the test itself: refuse all of those.
        let raw = match i32::try_from(pid) {
            Ok(raw) if raw > 0 && pid != std::process::id() => raw,
            _ => {
                return KillOutcome::Failed {
                    pid,
                    error: "refusing to signal a process group or the test process itself"
                        .to_owned(),
                }
            }
        };
        match nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGKILL,
        ) {
            Ok(()) => {
                tracing::debug!(pid, "fault proxy sent SIGKILL");
                KillOutcome::Killed { pid }
            }
            Err(errno) => KillOutcome::Failed {
                pid,
                error: errno.to_string(),
            },
        }
    }
}

/// The EC2 token buckets, created full on first use.
struct Buckets {
    limits: Ec2Limits,
    requests: BTreeMap<RequestClass, TokenBucket>,
    resources: BTreeMap<ResourceClass, TokenBucket>,
}

/// Slack for floating-point refill arithmetic, as in `TokenBucket::try_take`.
const TOKEN_EPSILON: f64 = 1e-9;

impl Buckets {
    fn new(limits: Ec2Limits) -> Self {
        Self {
            limits,
            requests: BTreeMap::new(),
            resources: BTreeMap::new(),
        }
    }

    /// Draws a request's tokens from both of its buckets, or from neither.
    fn admit(
        &mut self,
        now: Duration,
        action: &str,
        params: &[(String, String)],
    ) -> Result<(), Bucket> {
        let Buckets {
            limits,
            requests,
            resources,
        } = self;
        let unfiltered_unpaged = !params.iter().any(|(key, _)| {
            key.starts_with("Filter.") || key == "MaxResults" || key == "NextToken"
        });
        let class = RequestClass::of(action, unfiltered_unpaged);
        let request_bucket = requests
            .entry(class)
            .or_insert_with(|| TokenBucket::new(limits.request_shape(class), now));
        if request_bucket.available(now) + TOKEN_EPSILON < 1.0 {
            return Err(Bucket::Request(class));
        }
        if let Some(resource) = ResourceClass::of(action) {
            let cost = instance_count(action, params);
            let bucket = resources
                .entry(resource)
                .or_insert_with(|| TokenBucket::new(limits.resource_shape(resource), now));
            // `try_take` lets an oversized request wait for a full bucket;
            // EC2 refuses it, and so does the proxy.
            if cost > bucket.shape().capacity || bucket.try_take(now, cost).is_err() {
                return Err(Bucket::Resource(resource));
            }
        }
        // Cannot fail: a token was available above at the same `now`.
        request_bucket
            .try_take(now, 1.0)
            .map_err(|_| Bucket::Request(class))
    }
}

/// How many instances a request asks for: RunInstances' `MaxCount` (1 if
/// absent or unreadable), otherwise the number of `InstanceId.N` parameters.
fn instance_count(action: &str, params: &[(String, String)]) -> f64 {
    if action == "RunInstances" {
        return params
            .iter()
            .find(|(key, _)| key == "MaxCount")
            .and_then(|(_, value)| value.trim().parse::<u32>().ok())
            .map_or(1.0, f64::from);
    }
    params
        .iter()
        .filter(|(key, _)| key.starts_with("InstanceId."))
        .count() as f64
}

/// Runs the accept loop until asked to stop, then drains connections.
async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    stopped: watch::Sender<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared), stop.clone()));
                }
                Err(error) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    tracing::warn!(%error, "fault proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = stop_requested(&mut stop) => break,
        }
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        connections.shutdown().await;
    }
    stopped.send_replace(true);
    tracing::debug!("fault proxy stopped");
}

/// Resolves once a stop is requested or every handle is gone.
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    // An error means the sender, held by the handle, was dropped.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Serves one client connection. A handler that must close the connection
/// without answering signals `close_now`; dropping the hyper connection then
/// closes the socket with nothing written.
async fn serve_connection(stream: TcpStream, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let close_now = Arc::new(Notify::new());
    let service = {
        let close_now = Arc::clone(&close_now);
        service_fn(move |request| handle(Arc::clone(&shared), request, Arc::clone(&close_now)))
    };
    let connection = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "fault proxy connection ended with an error");
                }
                return;
            }
            () = close_now.notified() => return,
            () = stop_requested(&mut stop), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

type ProxyResponse = Response<Full<Bytes>>;

/// Handles one request: record, decide, fault or forward, record the end.
async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
    close_now: Arc<Notify>,
) -> Result<ProxyResponse, Infallible> {
    let (head, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            tracing::warn!(%error, "fault proxy could not read a request body");
            return Ok(plain(StatusCode::BAD_REQUEST, "unreadable request body\n").into_response());
        }
    };
    let params = form_params(&head, &body);
    let action = params
        .iter()
        .find(|(key, _)| key == "Action")
        .map(|(_, value)| value.clone());
    let decision = shared.arrive(&head, action, params);
    let mut record = PendingRecord {
        shared: &shared,
        ticket: Some(decision.ticket),
    };

    if decision.throttled_by.is_some() {
        return Ok(record.answer(ec2_error(
            StatusCode::SERVICE_UNAVAILABLE,
            THROTTLE_CODE,
            THROTTLE_MESSAGE,
        )));
    }
    let fault = decision.fault;
    match &fault {
        Some(Fault::Throttle) => {
            return Ok(record.answer(ec2_error(
                StatusCode::SERVICE_UNAVAILABLE,
                THROTTLE_CODE,
                THROTTLE_MESSAGE,
            )));
        }
        Some(Fault::Fail {
            status,
            code,
            message,
        }) => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(record.answer(ec2_error(status, code, message)));
        }
        Some(Fault::DropBeforeForward) => {
            record.finish(Ending::default());
            return close_without_response(&close_now).await;
        }
        Some(Fault::KillBeforeForward) => {
            let kill = shared.kill_target();
            record.finish(Ending {
                kill: Some(kill),
                ..Ending::default()
            });
            return close_without_response(&close_now).await;
        }
        Some(Fault::Stall(duration)) => shared.clock.sleep(*duration).await,
        Some(Fault::DropAfterForward | Fault::KillAfterForward) | None => {}
    }

    let forwarded = shared.forward(&head, body).await;
    let mut ending = match &forwarded {
        Ok(response) => Ending {
            reached_upstream: true,
            status: Some(response.status.as_u16()),
            body: Some(response.body.clone()),
            ..Ending::default()
        },
        Err(error) => {
            tracing::warn!(%error, "fault proxy could not reach its upstream");
            Ending {
                upstream_error: Some(error.clone()),
                ..Ending::default()
            }
        }
    };
    match fault {
        Some(Fault::DropAfterForward) => {
            record.finish(ending);
            close_without_response(&close_now).await
        }
        Some(Fault::KillAfterForward) => {
            ending.kill = Some(shared.kill_target());
            record.finish(ending);
            close_without_response(&close_now).await
        }
        _ => {
            let reply = match forwarded {
                Ok(forwarded) => {
                    // hyper sets Content-Length from the body it sends.
                    let mut headers = end_to_end(&forwarded.headers);
                    headers.remove(CONTENT_LENGTH);
                    Reply {
                        status: forwarded.status,
                        headers,
                        body: forwarded.body,
                    }
                }
                Err(error) => plain(
                    StatusCode::BAD_GATEWAY,
                    &format!("fault proxy: upstream failed: {error}\n"),
                ),
            };
            ending.answered = true;
            ending.status = Some(reply.status.as_u16());
            ending.body = Some(reply.body.clone());
            record.finish(ending);
            Ok(reply.into_response())
        }
    }
}

/// Asks the connection task to drop the connection and never answers.
async fn close_without_response(close_now: &Notify) -> Result<ProxyResponse, Infallible> {
    close_now.notify_one();
    std::future::pending().await
}

/// A request's record until it is completed. If the handler is dropped
/// first (the client went away mid-request), the record is completed as
/// unanswered.
struct PendingRecord<'a> {
    shared: &'a Shared,
    ticket: Option<Ticket>,
}

impl PendingRecord<'_> {
    fn finish(&mut self, ending: Ending) {
        if let Some(ticket) = self.ticket.take() {
            self.shared.complete(ticket, ending);
        }
    }

    /// Records a reply the proxy makes itself and turns it into a response.
    fn answer(&mut self, reply: Reply) -> ProxyResponse {
        self.finish(Ending {
            answered: true,
            status: Some(reply.status.as_u16()),
            body: Some(reply.body.clone()),
            ..Ending::default()
        });
        reply.into_response()
    }
}

impl Drop for PendingRecord<'_> {
    fn drop(&mut self) {
        self.finish(Ending::default());
    }
}

/// A response before it becomes a hyper one, so that its body can be
/// recorded too.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn into_response(self) -> ProxyResponse {
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}

/// The headers of `headers` that are not hop-by-hop.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named_by_connection: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let hop_by_hop = HOP_BY_HOP.contains(&name.as_str()) || named_by_connection.contains(name);
        if !hop_by_hop {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// The decoded form parameters of a request: its query string's, then its
/// body's when the body is a form (or has no declared type).
fn form_params(head: &http::request::Parts, body: &[u8]) -> Vec<(String, String)> {
    let mut params = Vec::new();
    if let Some(query) = head.uri.query() {
        parse_form(query, &mut params);
    }
    let is_form = match head.headers.get(CONTENT_TYPE) {
        None => true,
        Some(value) => value.to_str().is_ok_and(|ct| {
            ct.trim()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        }),
    };
    if is_form && !body.is_empty() {
        parse_form(&String::from_utf8_lossy(body), &mut params);
    }
    params
}

fn parse_form(input: &str, into: &mut Vec<(String, String)>) {
    for pair in input.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        into.push((form_decode(key), form_decode(value)));
    }
}

fn form_decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// The `<Code>` of the first `<Error>` in an EC2 error document.
fn ec2_error_code(body: &str) -> Option<String> {
    endstate_wire::ErrorResponse::from_xml(body)
        .ok()?
        .first()
        .map(|error| error.code.clone())
}

/// An EC2 error response, as EC2 words it.
fn ec2_error(status: StatusCode, code: &str, message: &str) -> Reply {
    let body =
        endstate_wire::ErrorResponse::single(code, message, uuid::Uuid::new_v4().to_string())
            .to_xml();
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/xml;charset=UTF-8"),
    );
    Reply {
        status,
        headers,
        body: Bytes::from(body),
    }
}

fn plain(status: StatusCode, text: &str) -> Reply {
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Reply {
        status,
        headers,
        body: Bytes::from(text.to_owned()),
    }
}

/// An error and its sources on one line: reqwest's own message alone rarely
/// says what went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_code_is_read_from_an_error_document() {
        let body = "<?xml version=\"1.0\"?>\n<Response><Errors><Error><Code>InvalidInstanceID.NotFound</Code><Message>x</Message></Error></Errors><RequestID>r</RequestID></Response>";
        assert_eq!(
            ec2_error_code(body).as_deref(),
            Some("InvalidInstanceID.NotFound")
        );
        assert_eq!(ec2_error_code("<RunInstancesResponse/>"), None);
    }

    #[test]
    fn forms_decode_plus_and_percent() {
        let mut params = Vec::new();
        parse_form(
            "Action=RunInstances&TagSpecification.1.Tag.1.Value=a+b%2Bc&Empty",
            &mut params,
        );
        assert_eq!(
            params,
            vec![
                ("Action".to_owned(), "RunInstances".to_owned()),
                (
                    "TagSpecification.1.Tag.1.Value".to_owned(),
                    "a b+c".to_owned()
                ),
                ("Empty".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn only_loopback_upstreams_are_accepted() {
        assert_eq!(
            loopback_base_url("http://127.0.0.1:5000/").ok().as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert!(loopback_base_url("http://[::1]:5000").is_ok());
        assert!(loopback_base_url("http://localhost:5000").is_ok());
        assert!(loopback_base_url("http://10.0.0.1:5000").is_err());
        assert!(loopback_base_url("http://ec2.us-east-1.amazonaws.com").is_err());
        assert!(loopback_base_url("https://127.0.0.1:5000").is_err());
    }

    #[test]
    fn hop_by_hop_headers_are_not_forwarded() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-amz-date", HeaderValue::from_static("20260101T000000Z"));
        headers.insert("host", HeaderValue::from_static("127.0.0.1:1"));
        let kept = end_to_end(&headers);
        let names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, vec!["x-amz-date", "host"]);
    }

    #[test]
    fn oversized_launches_are_refused_by_the_resource_bucket() {
        let mut buckets = Buckets::new(Ec2Limits::default());
        let params = |n: &str| vec![("MaxCount".to_owned(), n.to_owned())];
        assert_eq!(
            buckets.admit(Duration::ZERO, "RunInstances", &params("1001")),
            Err(Bucket::Resource(ResourceClass::RunInstances))
        );
        assert_eq!(
            buckets.admit(Duration::ZERO, "RunInstances", &params("600")),
            Ok(())
        );
        assert_eq!(
            buckets.admit(Duration::ZERO, "RunInstances", &params("600")),
            Err(Bucket::Resource(ResourceClass::RunInstances))
        );
        // The refused calls took no request tokens: four of five remain.
        for _ in 0..4 {
            assert_eq!(
                buckets.admit(Duration::ZERO, "RunInstances", &params("1")),
                Ok(())
            );
        }
        assert_eq!(
            buckets.admit(Duration::ZERO, "RunInstances", &params("1")),
            Err(Bucket::Request(RequestClass::RunInstances))
        );
    }
}
