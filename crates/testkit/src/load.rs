//! [`LoadGenerator`]: a bounded HTTP load generator for tests and
//! benchmarks of rollouts behind the built-in cloud's load balancer.
//!
//! What it does: `clients` workers, each with its own keep-alive HTTP/1.1
//! connection (one reqwest client with one idle connection), send `GET url`
//! one after another until a stop condition: `max_requests` sent in all, or
//! `max_duration` elapsed, or [`LoadGenerator::stop`] — whichever comes
//! first. Both bounds are required, so a load never runs unbounded. Every
//! request is recorded ([`RequestRecord`]): when it started and ended (as
//! [`Instant`]s, so a test can compare them with the moment it saw an event),
//! its status or transport error, and the `x-endstate-target` /
//! `x-endstate-generation` headers the load balancer puts on each response.
//!
//! What it is not: a benchmark-grade generator (a closed loop, no pacing, no
//! latency histograms) nor one for remote hosts: it refuses URLs whose host
//! is not a loopback address or `localhost`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

/// The response header naming the instance that served a request.
pub const TARGET_HEADER: &str = "x-endstate-target";
/// The response header naming the generation of the instance that served it.
pub const GENERATION_HEADER: &str = "x-endstate-generation";

/// At most this many bytes of each response body are kept in its record.
const BODY_KEPT: usize = 64;

/// What a [`LoadGenerator`] sends, and when it stops.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `http://` URL on a loopback address (`127.0.0.0/8`, `::1`, `localhost`).
    pub url: String,
    /// Concurrent clients, each with its own keep-alive connection (1..=256).
    pub clients: usize,
    /// Requests sent in all, by every client together (at least 1).
    pub max_requests: u64,
    /// Time from the start after which no new request starts (more than 0).
    pub max_duration: Duration,
    /// Time a single request may take, headers and body, before it counts as
    /// failed with a transport error.
    pub request_timeout: Duration,
}

impl LoadConfig {
    /// `clients` clients on `url`, stopping after `max_requests` or
    /// `max_duration`; a request may take 10 s.
    pub fn new(
        url: impl Into<String>,
        clients: usize,
        max_requests: u64,
        max_duration: Duration,
    ) -> Self {
        Self {
            url: url.into(),
            clients,
            max_requests,
            max_duration,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a load could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("url {url:?}: the load generator sends to loopback hosts only (127.0.0.0/8, ::1, localhost), not {host}")]
    NotLoopback { url: String, host: String },
    #[error("{field} = {value}: {limit}")]
    Bound {
        field: &'static str,
        value: String,
        limit: &'static str,
    },
    #[error("building the HTTP client: {0}")]
    Client(String),
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status, its body read to the end.
    Status(u16),
    /// No complete response: connection refused or reset, timeout, a body
    /// cut short. The text is the error and its causes.
    Transport(String),
}

/// One request, as the client saw it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// The client (0..clients) that sent it.
    pub client: usize,
    /// Just before the request was handed to the connection.
    pub started: Instant,
    /// When its body was read to the end, or the error came.
    pub ended: Instant,
    pub outcome: Outcome,
    /// `x-endstate-target`, when the response had it.
    pub target: Option<String>,
    /// `x-endstate-generation`, when the response had it.
    pub generation: Option<String>,
    /// The first bytes of the body (lossy UTF-8), for tests whose servers
    /// name their version in it.
    pub body: String,
}

impl RequestRecord {
    /// A 2xx response read to the end.
    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, Outcome::Status(status) if (200..300).contains(&status))
    }
}

/// A load in progress.
pub struct LoadGenerator {
    started: Instant,
    records: Arc<Mutex<Vec<RequestRecord>>>,
    sent: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    workers: JoinSet<()>,
}

impl LoadGenerator {
    /// Checks the configuration and starts the clients at once (on the
    /// current tokio runtime).
    pub fn start(config: LoadConfig) -> Result<Self, LoadError> {
        check(&config)?;
        let url = reqwest::Url::parse(&config.url).map_err(|e| LoadError::Url {
            url: config.url.clone(),
            reason: e.to_string(),
        })?;
        let started = Instant::now();
        let deadline = started + config.max_duration;
        let records = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = watch::channel(false);
        let mut workers = JoinSet::new();
        for client in 0..config.clients {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .no_proxy()
                .timeout(config.request_timeout)
                .build()
                .map_err(|e| LoadError::Client(error_chain(&e)))?;
            let worker = Worker {
                client,
                http,
                url: url.clone(),
                max_requests: config.max_requests,
                deadline,
                sent: Arc::clone(&sent),
                records: Arc::clone(&records),
                stopped: stopped.clone(),
            };
            workers.spawn(worker.run());
        }
        Ok(Self {
            started,
            records,
            sent,
            stop,
            workers,
        })
    }

    /// When the load started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Requests completed so far (succeeded or failed).
    pub fn completed(&self) -> usize {
        lock(&self.records).len()
    }

    /// Requests started so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// A copy of the records so far, in the order they completed.
    pub fn snapshot(&self) -> Vec<RequestRecord> {
        lock(&self.records).clone()
    }

    /// Tells every client to start no new request (those in flight finish).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until the load ends by its own bounds (or an earlier
    /// [`stop`](Self::stop)), then reports it.
    pub async fn finish(mut self) -> LoadReport {
        while self.workers.join_next().await.is_some() {}
        let ended = Instant::now();
        let records = std::mem::take(&mut *lock(&self.records));
        LoadReport {
            started: self.started,
            ended,
            records,
        }
    }

    /// Stops the load now and reports it.
    pub async fn stop_and_finish(self) -> LoadReport {
        self.stop();
        self.finish().await
    }
}

fn check(config: &LoadConfig) -> Result<(), LoadError> {
    let url = reqwest::Url::parse(&config.url).map_err(|e| LoadError::Url {
        url: config.url.clone(),
        reason: e.to_string(),
    })?;
    if url.scheme() != "http" {
        return Err(LoadError::Url {
            url: config.url.clone(),
            reason: format!("scheme {:?}: only http is supported", url.scheme()),
        });
    }
    let host = url.host_str().unwrap_or_default();
    // IPv6 hosts come in brackets.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    };
    if !loopback {
        return Err(LoadError::NotLoopback {
            url: config.url.clone(),
            host: if host.is_empty() { "no host" } else { host }.to_string(),
        });
    }
    if !(1..=256).contains(&config.clients) {
        return Err(LoadError::Bound {
            field: "clients",
            value: config.clients.to_string(),
            limit: "must be 1..=256",
        });
    }
    if config.max_requests == 0 {
        return Err(LoadError::Bound {
            field: "max_requests",
            value: "0".into(),
            limit: "must be at least 1",
        });
    }
    for (field, value) in [
        ("max_duration", config.max_duration),
        ("request_timeout", config.request_timeout),
    ] {
        if value.is_zero() {
            return Err(LoadError::Bound {
                field,
                value: format!("{value:?}"),
                limit: "must be more than 0",
            });
        }
    }
    Ok(())
}

/// One client: sends until a bound is reached or it is told to stop.
struct Worker {
    client: usize,
    http: reqwest::Client,
    url: reqwest::Url,
    max_requests: u64,
    deadline: Instant,
    sent: Arc<AtomicU64>,
    records: Arc<Mutex<Vec<RequestRecord>>>,
    stopped: watch::Receiver<bool>,
}

impl Worker {
    async fn run(self) {
        loop {
            if *self.stopped.borrow() || Instant::now() >= self.deadline {
                return;
            }
            // A request is claimed before it is sent, so that the clients
            // together never send more than max_requests.
            let claimed = self
                .sent
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < self.max_requests).then_some(n + 1)
                });
            if claimed.is_err() {
                return;
            }
            let record = self.one().await;
            lock(&self.records).push(record);
        }
    }

    async fn one(&self) -> RequestRecord {
        let started = Instant::now();
        let mut target = None;
        let mut generation = None;
        let mut body = String::new();
        let outcome = match self.http.get(self.url.clone()).send().await {
            Err(e) => Outcome::Transport(error_chain(&e)),
            Ok(response) => {
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                target = header(TARGET_HEADER);
                generation = header(GENERATION_HEADER);
                let status = response.status().as_u16();
                // The body is read to the end: the connection is reused only
                // then, and a body cut short is a failed request.
                match response.bytes().await {
                    Ok(bytes) => {
                        let kept = &bytes[..bytes.len().min(BODY_KEPT)];
                        body = String::from_utf8_lossy(kept).into_owned();
                        Outcome::Status(status)
                    }
                    Err(e) => Outcome::Transport(error_chain(&e)),
                }
            }
        };
        RequestRecord {
            client: self.client,
            started,
            ended: Instant::now(),
            outcome,
            target,
            generation,
            body,
        }
    }
}

/// A finished load: every request it made.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub started: Instant,
    pub ended: Instant,
    /// In the order the requests completed.
    pub records: Vec<RequestRecord>,
}

/// The numbers of a [`LoadReport`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSummary {
    pub total: usize,
    /// Transport errors plus non-2xx responses.
    pub failed: usize,
    pub transport_errors: usize,
    pub non_2xx: usize,
    /// Requests answered (any status) per generation header; responses
    /// without the header count under `""`.
    pub by_generation: BTreeMap<String, usize>,
    pub duration: Duration,
    pub requests_per_second: f64,
}

impl LoadReport {
    pub fn summary(&self) -> LoadSummary {
        let mut summary = LoadSummary {
            total: self.records.len(),
            failed: 0,
            transport_errors: 0,
            non_2xx: 0,
            by_generation: BTreeMap::new(),
            duration: self.ended.saturating_duration_since(self.started),
            requests_per_second: 0.0,
        };
        for record in &self.records {
            match &record.outcome {
                Outcome::Transport(_) => summary.transport_errors += 1,
                Outcome::Status(_) if !record.succeeded() => summary.non_2xx += 1,
                Outcome::Status(_) => {}
            }
            if let Outcome::Status(_) = record.outcome {
                *summary
                    .by_generation
                    .entry(record.generation.clone().unwrap_or_default())
                    .or_default() += 1;
            }
        }
        summary.failed = summary.transport_errors + summary.non_2xx;
        let seconds = summary.duration.as_secs_f64();
        if seconds > 0.0 {
            summary.requests_per_second = summary.total as f64 / seconds;
        }
        summary
    }

    /// The requests that failed (transport error or non-2xx).
    pub fn failures(&self) -> impl Iterator<Item = &RequestRecord> {
        self.records.iter().filter(|r| !r.succeeded())
    }

    /// The requests that started at or after `instant`.
    pub fn started_after(&self, instant: Instant) -> impl Iterator<Item = &RequestRecord> {
        self.records.iter().filter(move |r| r.started >= instant)
    }

    /// Requests answered per generation among those started at or after
    /// `instant` (no header: `""`).
    pub fn generations_after(&self, instant: Instant) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for record in self.started_after(instant) {
            if let Outcome::Status(_) = record.outcome {
                *counts
                    .entry(record.generation.clone().unwrap_or_default())
                    .or_default() += 1;
            }
        }
        counts
    }

    /// The latest start among requests answered by `generation`, if any.
    pub fn last_started_by(&self, generation: &str) -> Option<Instant> {
        self.records
            .iter()
            .filter(|r| r.generation.as_deref() == Some(generation))
            .map(|r| r.started)
            .max()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked mid-push leaves whole records; keep using them.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An error and its sources: reqwest's own message is only the outer layer.
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
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;

    use http_body_util::Full;
    use hyper::body::{Bytes, Incoming};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;

    /// A local server: every `fail_every`-th request (0: none) answers 500;
    /// each response names generation `g1` before `switch` requests were
    /// served and `g2` after. Counts connections accepted.
    struct TestServer {
        url: String,
        connections: Arc<AtomicUsize>,
    }

    async fn server(fail_every: usize, switch: usize, delay: Duration) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::clone(&connections);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let served = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = service_fn(move |_request: Request<Incoming>| {
                        let served = Arc::clone(&served);
                        async move {
                            tokio::time::sleep(delay).await;
                            let n = served.fetch_add(1, Ordering::SeqCst) + 1;
                            let status = if fail_every > 0 && n.is_multiple_of(fail_every) {
                                500
                            } else {
                                200
                            };
                            let generation = if n <= switch { "g1" } else { "g2" };
                            let response = Response::builder()
                                .status(status)
                                .header(TARGET_HEADER, format!("i-{:04}", n % 3))
                                .header(GENERATION_HEADER, generation)
                                .body(Full::new(Bytes::from(format!("{generation}\n"))))
                                .unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestServer { url, connections }
    }

    #[tokio::test]
    async fn stops_at_the_request_count_on_kept_alive_connections() {
        let server = server(0, usize::MAX, Duration::ZERO).await;
        let load = LoadGenerator::start(LoadConfig::new(
            &server.url,
            4,
            500,
            Duration::from_secs(30),
        ))
        .unwrap();
        let report = load.finish().await;
        let summary = report.summary();
        assert_eq!(summary.total, 500);
        assert_eq!(summary.failed, 0);
        assert_eq!(summary.by_generation.get("g1"), Some(&500));
        assert!(summary.requests_per_second > 0.0);
        // Keep-alive: one connection per client, not one per request.
        let connections = server.connections.load(Ordering::SeqCst);
        assert!((1..=4).contains(&connections), "{connections} connections");
        for record in &report.records {
            assert!(record.ended >= record.started);
            assert_eq!(record.body, "g1\n");
            assert!(record.target.as_deref().unwrap().starts_with("i-"));
            assert!(record.client < 4);
        }
    }

    #[tokio::test]
    async fn stops_at_the_deadline_and_on_request() {
        let server = server(0, usize::MAX, Duration::from_millis(20)).await;
        let started = Instant::now();
        let load = LoadGenerator::start(LoadConfig::new(
            &server.url,
            2,
            1_000_000,
            Duration::from_millis(300),
        ))
        .unwrap();
        let report = load.finish().await;
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        assert!(report.summary().total > 0);
        // No request started after the deadline.
        let deadline = report.started + Duration::from_millis(300);
        assert!(report.records.iter().all(|r| r.started < deadline));

        let load = LoadGenerator::start(LoadConfig::new(
            &server.url,
            2,
            1_000_000,
            Duration::from_secs(60),
        ))
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let report = load.stop_and_finish().await;
        assert!(report.ended.duration_since(report.started) < Duration::from_secs(5));
        assert!(report.summary().total > 0);
    }

    #[tokio::test]
    async fn counts_failures_and_answers_which_generations_served_after_an_instant() {
        let server = server(10, 100, Duration::ZERO).await;
        let load = LoadGenerator::start(LoadConfig::new(
            &server.url,
            1,
            200,
            Duration::from_secs(30),
        ))
        .unwrap();
        let report = load.finish().await;
        let summary = report.summary();
        assert_eq!(summary.total, 200);
        assert_eq!(summary.non_2xx, 20);
        assert_eq!(summary.transport_errors, 0);
        assert_eq!(summary.failed, 20);
        assert_eq!(report.failures().count(), 20);
        assert_eq!(summary.by_generation.get("g1"), Some(&100));
        assert_eq!(summary.by_generation.get("g2"), Some(&100));
        // One client: requests are sequential, so the 101st started after
        // the 100th, and everything from it on is g2.
        let mut ordered = report.records.clone();
        ordered.sort_by_key(|r| r.started);
        let switch = ordered[100].started;
        let after = report.generations_after(switch);
        assert_eq!(after.len(), 1, "{after:?}");
        assert_eq!(after.get("g2"), Some(&100));
        assert_eq!(report.last_started_by("g1"), Some(ordered[99].started));
    }

    #[tokio::test]
    async fn a_closed_port_is_a_transport_error_not_a_hang() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        let load =
            LoadGenerator::start(LoadConfig::new(&url, 2, 10, Duration::from_secs(30))).unwrap();
        let report = load.finish().await;
        let summary = report.summary();
        assert_eq!(summary.total, 10);
        assert_eq!(summary.transport_errors, 10);
        assert!(summary.by_generation.is_empty());
        assert!(matches!(&report.records[0].outcome, Outcome::Transport(e) if !e.is_empty()));
    }

    #[tokio::test]
    async fn refuses_other_hosts_and_unbounded_loads() {
        let refused = |config: LoadConfig| LoadGenerator::start(config).err().unwrap();
        let ok = LoadConfig::new("http://127.0.0.1:9/", 1, 1, Duration::from_secs(1));
        let error = refused(LoadConfig {
            url: "http://10.0.0.1/".into(),
            ..ok.clone()
        });
        assert!(
            matches!(&error, LoadError::NotLoopback { host, .. } if host == "10.0.0.1"),
            "{error}"
        );
        assert!(matches!(
            refused(LoadConfig {
                url: "http://example.com/".into(),
                ..ok.clone()
            }),
            LoadError::NotLoopback { .. }
        ));
        assert!(matches!(
            refused(LoadConfig {
                url: "https://127.0.0.1/".into(),
                ..ok.clone()
            }),
            LoadError::Url { .. }
        ));
        let error = refused(LoadConfig {
            max_requests: 0,
            ..ok.clone()
        });
        assert_eq!(error.to_string(), "max_requests = 0: must be at least 1");
        assert!(matches!(
            refused(LoadConfig {
                max_duration: Duration::ZERO,
                ..ok.clone()
            }),
            LoadError::Bound {
                field: "max_duration",
                ..
            }
        ));
        assert!(matches!(
            refused(LoadConfig {
                clients: 0,
                ..ok.clone()
            }),
            LoadError::Bound {
                field: "clients",
                ..
            }
        ));
        // localhost and IPv6 loopback are loopback.
        for url in ["http://localhost:9/", "http://[::1]:9/"] {
            check(&LoadConfig {
                url: url.into(),
                ..ok.clone()
            })
            .unwrap();
        }
    }
}
