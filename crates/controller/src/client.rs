//! The client of `endstate serve`'s HTTP API, for the CLI: one async method
//! per route, answering with the view types; errors carry the server's
//! `{"error"}` text and status. [`Client::events_stream`] follows the
//! server-sent events, reconnecting with `Last-Event-ID` after `lagged` or a
//! dropped connection, a bounded number of times in a row.
//!
//! Not here: printing, retries of ordinary requests (a refused request is
//! the caller's to report).

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::Stream;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::types::{
    AgentConfig, AgentReport, AgentReportAccepted, AgentSessionRequest, AgentSessionResponse,
    NonceResponse,
};
use crate::api::types::{
    DeployRequest, ErrorBody, GroupHealth, MetricsAccepted, MetricsRequest, PauseRequest,
    ProtectionRequest,
};
use crate::view::{
    EventView, GroupView, InstanceView, MetricSample, RolloutView, ScalingActivityView,
    SpecSubmission, SpecView,
};

/// Time allowed for an ordinary request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for `GET /v1/plan`, which observes the cloud first.
const PLAN_TIMEOUT: Duration = Duration::from_secs(300);
/// An event stream silent this long (three keep-alives missed) is dropped
/// and reconnected.
const STREAM_IDLE: Duration = Duration::from_secs(45);

/// Characters left as they are in a path segment or query value.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why a call to the API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status and `{"error": message}`.
    #[error("{method} {path}: {status}: {message}")]
    Api {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    /// The request did not get an answer (connection refused, timeout, …).
    #[error("{method} {path}: {error}")]
    Transport {
        method: String,
        path: String,
        error: String,
    },
    /// The answer was not the JSON expected.
    #[error("{method} {path}: the answer is not {expected}: {error}")]
    Decode {
        method: String,
        path: String,
        expected: &'static str,
        error: String,
    },
    /// The event stream could not be resumed.
    #[error("event stream: gave up after {attempts} attempts in a row: {last}")]
    StreamGaveUp { attempts: u32, last: String },
}

impl ClientError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// How [`Client::events_stream`] reconnects.
#[derive(Debug, Clone, Copy)]
pub struct StreamRetry {
    /// Failed attempts in a row (a connection that delivered no event counts)
    /// before the stream gives up.
    pub attempts: u32,
    /// The first delay; doubled after each failure, up to 5 s.
    pub first_delay: Duration,
}

impl Default for StreamRetry {
    fn default() -> Self {
        StreamRetry {
            attempts: 6,
            first_delay: Duration::from_millis(250),
        }
    }
}

/// A client of one controller.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    retry: StreamRetry,
}

impl Client {
    /// A client of the API at `base_url` (`http://127.0.0.1:7878`),
    /// authenticating with `token`.
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: base_url.into().trim_end_matches('/').to_string(),
            token: token.into(),
            retry: StreamRetry::default(),
        }
    }

    /// Sets how event streams reconnect.
    pub fn with_stream_retry(mut self, retry: StreamRetry) -> Client {
        self.retry = retry;
        self
    }

    pub async fn healthz(&self) -> Result<(), ClientError> {
        self.call::<serde_json::Value>(Method::GET, "/healthz".into(), None, REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    pub async fn spec(&self) -> Result<SpecView, ClientError> {
        self.get("/v1/spec".into()).await
    }

    pub async fn submit_spec(&self, spec: &SpecSubmission) -> Result<SpecView, ClientError> {
        self.send(Method::POST, "/v1/spec".into(), spec).await
    }

    pub async fn groups(&self) -> Result<Vec<GroupView>, ClientError> {
        self.get("/v1/groups".into()).await
    }

    pub async fn group(&self, name: &str) -> Result<GroupView, ClientError> {
        self.get(format!("/v1/groups/{}", encode(name))).await
    }

    /// Instances of one group, or of all.
    pub async fn instances(&self, group: Option<&str>) -> Result<Vec<InstanceView>, ClientError> {
        match group {
            Some(name) => {
                self.get(format!("/v1/groups/{}/instances", encode(name)))
                    .await
            }
            None => self.get("/v1/instances".into()).await,
        }
    }

    pub async fn pause(&self, group: &str, reason: Option<&str>) -> Result<GroupView, ClientError> {
        let body = PauseRequest {
            reason: reason.map(str::to_string),
        };
        self.send(
            Method::POST,
            format!("/v1/groups/{}/pause", encode(group)),
            &body,
        )
        .await
    }

    pub async fn resume(&self, group: &str) -> Result<GroupView, ClientError> {
        self.call(
            Method::POST,
            format!("/v1/groups/{}/resume", encode(group)),
            None,
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// Rolls `group` out to `image` (accepted: the rollout runs in the
    /// controller; follow it with [`Client::rollout`] or the events).
    pub async fn deploy(&self, group: &str, image: &str) -> Result<RolloutView, ClientError> {
        let body = DeployRequest {
            image: image.to_string(),
        };
        self.send(
            Method::POST,
            format!("/v1/groups/{}/deploy", encode(group)),
            &body,
        )
        .await
    }

    /// Rolls `group` back (during a rollout: switches back at once; after
    /// one: rolls out the previous generation).
    pub async fn rollback(&self, group: &str) -> Result<RolloutView, ClientError> {
        self.call(
            Method::POST,
            format!("/v1/groups/{}/rollback", encode(group)),
            None,
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// The group's rollout now (`phase` `idle` when none runs).
    pub async fn rollout(&self, group: &str) -> Result<RolloutView, ClientError> {
        self.get(format!("/v1/groups/{}/rollout", encode(group)))
            .await
    }

    pub async fn set_protection(
        &self,
        group: &str,
        instance: &str,
        protected: bool,
    ) -> Result<InstanceView, ClientError> {
        let path = format!(
            "/v1/groups/{}/instances/{}/protection",
            encode(group),
            encode(instance)
        );
        self.send(Method::PUT, path, &ProtectionRequest { protected })
            .await
    }

    pub async fn health(&self) -> Result<Vec<GroupHealth>, ClientError> {
        self.get("/v1/health".into()).await
    }

    /// The plan the controller would act on now.
    pub async fn plan(&self, group: Option<&str>) -> Result<endstate_plan::Plan, ClientError> {
        let path = with_query("/v1/plan", &[("group", group.map(str::to_string))]);
        self.call(Method::GET, path, None, PLAN_TIMEOUT).await
    }

    /// Recorded events with `seq > after`, oldest first, at most `limit`
    /// (the server allows up to 1,000).
    pub async fn events_after(
        &self,
        after: i64,
        limit: usize,
        group: Option<&str>,
    ) -> Result<Vec<EventView>, ClientError> {
        let path = with_query(
            "/v1/events",
            &[
                ("after", Some(after.to_string())),
                ("limit", Some(limit.to_string())),
                ("group", group.map(str::to_string)),
            ],
        );
        self.get(path).await
    }

    pub async fn scaling(
        &self,
        group: Option<&str>,
    ) -> Result<Vec<ScalingActivityView>, ClientError> {
        let path = with_query("/v1/scaling", &[("group", group.map(str::to_string))]);
        self.get(path).await
    }

    /// Hands metric samples to the controller; returns how many it accepted.
    pub async fn put_metrics(&self, samples: &[MetricSample]) -> Result<usize, ClientError> {
        let body = MetricsRequest {
            samples: samples.to_vec(),
        };
        let accepted: MetricsAccepted =
            self.send(Method::POST, "/v1/metrics".into(), &body).await?;
        Ok(accepted.accepted)
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics_text(&self) -> Result<String, ClientError> {
        let path = "/metrics".to_string();
        let response = self
            .request(Method::GET, &path, None, REQUEST_TIMEOUT)
            .await?;
        response.text().await.map_err(|e| ClientError::Transport {
            method: "GET".into(),
            path,
            error: e.to_string(),
        })
    }

    /// Follows the controller's events with `seq > after` (of one group, or
    /// all): recorded ones first, then live ones, in order, each once. After
    /// `lagged` or a dropped connection it reconnects with `Last-Event-ID`;
    /// it ends with an error after [`StreamRetry::attempts`] failures in a
    /// row, or at once when the server refuses the request (4xx).
    pub fn events_stream(
        &self,
        after: i64,
        group: Option<&str>,
    ) -> impl Stream<Item = Result<EventView, ClientError>> + Send + 'static {
        let follower = Follower {
            client: self.clone(),
            group: group.map(str::to_string),
            last: after,
            response: None,
            parser: SseParser::default(),
            pending: VecDeque::new(),
            failures: 0,
            last_failure: String::new(),
            done: false,
        };
        futures_util::stream::unfold(follower, |mut follower| async move {
            let item = follower.next().await?;
            Some((item, follower))
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: String) -> Result<T, ClientError> {
        self.call(Method::GET, path, None, REQUEST_TIMEOUT).await
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode {
            method: method.to_string(),
            path: path.clone(),
            expected: "encodable JSON",
            error: e.to_string(),
        })?;
        self.call(method, path, Some(bytes), REQUEST_TIMEOUT).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let response = self.request(method.clone(), &path, body, timeout).await?;
        let bytes = response.bytes().await.map_err(|e| ClientError::Transport {
            method: method.to_string(),
            path: path.clone(),
            error: e.to_string(),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            method: method.to_string(),
            path,
            expected: std::any::type_name::<T>(),
            error: e.to_string(),
        })
    }

    /// Sends one request; an error status becomes [`ClientError::Api`].
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(timeout);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request.send().await.map_err(|e| ClientError::Transport {
            method: method.to_string(),
            path: path.to_string(),
            error: error_chain(&e),
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(api_error(&method, path, response).await)
    }
}

/// The error of a response with an error status, with the server's text.
async fn api_error(method: &Method, path: &str, response: reqwest::Response) -> ClientError {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let message = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => body.error,
        Err(_) if text.trim().is_empty() => status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string(),
        Err(_) => text,
    };
    ClientError::Api {
        method: method.to_string(),
        path: path.to_string(),
        status: status.as_u16(),
        message,
    }
}

/// An error and its sources, since reqwest's own message is only the outer
/// layer ("error sending request").
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

fn encode(component: &str) -> String {
    utf8_percent_encode(component, COMPONENT).to_string()
}

fn with_query(path: &str, params: &[(&str, Option<String>)]) -> String {
    let pairs: Vec<String> = params
        .iter()
        .filter_map(|(key, value)| value.as_ref().map(|v| format!("{key}={}", encode(v))))
        .collect();
    if pairs.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", pairs.join("&"))
    }
}

/// The state of one [`Client::events_stream`].
struct Follower {
    client: Client,
    group: Option<String>,
    /// The last event delivered (or the starting point).
    last: i64,
    response: Option<reqwest::Response>,
    parser: SseParser,
    pending: VecDeque<SseMessage>,
    failures: u32,
    last_failure: String,
    done: bool,
}

/// What a connection attempt or a read came to, short of an event.
enum Interruption {
    /// Reconnect (counted as a failure unless the server asked for it).
    Retry { counted: bool, why: String },
    /// End the stream with this error.
    Fatal(ClientError),
}

impl Follower {
    async fn next(&mut self) -> Option<Result<EventView, ClientError>> {
        loop {
            if self.done {
                return None;
            }
            let interruption = match self.pending.pop_front() {
                Some(message) => match self.deliver(message) {
                    Ok(Some(event)) => return Some(Ok(event)),
                    Ok(None) => continue,
                    Err(interruption) => interruption,
                },
                None => match self.read().await {
                    Ok(()) => continue,
                    Err(interruption) => interruption,
                },
            };
            self.response = None;
            self.parser = SseParser::default();
            self.pending.clear();
            match interruption {
                Interruption::Fatal(error) => {
                    self.done = true;
                    return Some(Err(error));
                }
                Interruption::Retry { counted, why } => {
                    if counted {
                        self.failures += 1;
                        self.last_failure = why;
                    }
                    if self.failures >= self.client.retry.attempts {
                        self.done = true;
                        return Some(Err(ClientError::StreamGaveUp {
                            attempts: self.failures,
                            last: self.last_failure.clone(),
                        }));
                    }
                }
            }
        }
    }

    /// One message from the server: an event to hand out, nothing (a
    /// duplicate, an unknown kind of message), or a reason to reconnect.
    fn deliver(&mut self, message: SseMessage) -> Result<Option<EventView>, Interruption> {
        match message.event.as_str() {
            "lagged" => Err(Interruption::Retry {
                counted: false,
                why: "the server's subscription lagged".into(),
            }),
            "error" => Err(Interruption::Retry {
                counted: true,
                why: format!("the server reported: {}", message.data),
            }),
            _ => {
                let event: EventView = serde_json::from_str(&message.data).map_err(|e| {
                    Interruption::Fatal(ClientError::Decode {
                        method: "GET".into(),
                        path: "/v1/events/stream".into(),
                        expected: "an event",
                        error: e.to_string(),
                    })
                })?;
                if event.seq <= self.last {
                    return Ok(None);
                }
                self.last = event.seq;
                self.failures = 0;
                Ok(Some(event))
            }
        }
    }

    /// Connects if needed, then reads the next chunk into `pending`.
    async fn read(&mut self) -> Result<(), Interruption> {
        let response = match self.response.as_mut() {
            Some(response) => response,
            None => {
                let response = self.connect().await?;
                self.response.insert(response)
            }
        };
        match tokio::time::timeout(STREAM_IDLE, response.chunk()).await {
            Ok(Ok(Some(bytes))) => {
                self.pending.extend(self.parser.push(&bytes));
                Ok(())
            }
            Ok(Ok(None)) => Err(Interruption::Retry {
                counted: true,
                why: "the server ended the stream".into(),
            }),
            Ok(Err(e)) => Err(Interruption::Retry {
                counted: true,
                why: error_chain(&e),
            }),
            Err(_) => Err(Interruption::Retry {
                counted: true,
                why: format!("nothing received for {} s", STREAM_IDLE.as_secs()),
            }),
        }
    }

    async fn connect(&mut self) -> Result<reqwest::Response, Interruption> {
        if self.failures > 0 {
            let exponent = (self.failures - 1).min(16);
            let delay = self
                .client
                .retry
                .first_delay
                .saturating_mul(1 << exponent)
                .min(Duration::from_secs(5));
            tokio::time::sleep(delay).await;
        }
        let path = with_query("/v1/events/stream", &[("group", self.group.clone())]);
        let result = self
            .client
            .http
            .get(format!("{}{path}", self.client.base))
            .bearer_auth(&self.client.token)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .header("Last-Event-ID", self.last.to_string())
            .send()
            .await;
        let response = result.map_err(|e| Interruption::Retry {
            counted: true,
            why: error_chain(&e),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let error = api_error(&Method::GET, &path, response).await;
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Err(Interruption::Retry {
                counted: true,
                why: error.to_string(),
            })
        } else {
            Err(Interruption::Fatal(error))
        }
    }
}

/// One server-sent event as received.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct SseMessage {
    /// `message` when the server named none.
    event: String,
    data: String,
    id: Option<String>,
}

/// Reads the `text/event-stream` format incrementally: bytes in, complete
/// messages out. Lines end with LF, CR or CRLF; comments and unknown fields
/// are skipped, as the format requires.
#[derive(Debug, Default)]
struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended with CR: an LF starting the next one
    /// belongs to it.
    after_cr: bool,
    event: String,
    data: Vec<String>,
    id: Option<String>,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<SseMessage> {
        let mut messages = Vec::new();
        for &byte in bytes {
            if self.after_cr {
                self.after_cr = false;
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\n' | b'\r' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(message) = self.line_done(&String::from_utf8_lossy(&line)) {
                        messages.push(message);
                    }
                }
                _ => self.line.push(byte),
            }
        }
        messages
    }

    fn line_done(&mut self, line: &str) -> Option<SseMessage> {
        if line.is_empty() {
            if self.data.is_empty() {
                self.event.clear();
                return None;
            }
            let event = std::mem::take(&mut self.event);
            return Some(SseMessage {
                event: if event.is_empty() {
                    "message".into()
                } else {
                    event
                },
                data: std::mem::take(&mut self.data).join("\n"),
                id: self.id.clone(),
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = value.to_string(),
            "data" => self.data.push(value.to_string()),
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            _ => {}
        }
        None
    }
}

/// The agent routes (`endstate agent`): the same client, authenticating
/// with an agent's session token instead of an API token.
impl Client {
    /// This client with `token` (an agent's session token) instead.
    pub fn with_token(&self, token: impl Into<String>) -> Client {
        Client {
            token: token.into(),
            ..self.clone()
        }
    }

    pub async fn agent_nonce(&self) -> Result<NonceResponse, ClientError> {
        self.send(
            Method::POST,
            "/v1/agent/nonce".into(),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn agent_session(
        &self,
        proof: &AgentSessionRequest,
    ) -> Result<AgentSessionResponse, ClientError> {
        self.send(Method::POST, "/v1/agent/session".into(), proof)
            .await
    }

    /// The instance's configuration; with `after` its current version, the
    /// server holds the request until it changes or up to its long-poll
    /// limit, so the request may take `long_poll` plus a margin.
    pub async fn agent_config(
        &self,
        after: Option<&str>,
        long_poll: Duration,
    ) -> Result<AgentConfig, ClientError> {
        let path = with_query("/v1/agent/config", &[("after", after.map(str::to_string))]);
        self.call(Method::GET, path, None, long_poll + Duration::from_secs(10))
            .await
    }

    pub async fn agent_report(
        &self,
        report: &AgentReport,
    ) -> Result<AgentReportAccepted, ClientError> {
        self.send(Method::POST, "/v1/agent/report".into(), report)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_splits_messages_across_chunks_and_line_endings() {
        let mut parser = SseParser::default();
        let mut got = parser.push(b": keep-alive\n\nid: 3\r\nevent: scaled\r");
        assert!(got.is_empty());
        got.extend(parser.push(b"\ndata: {\"a\":\n"));
        got.extend(parser.push(b"data:1}\n\nevent: lagged\ndata: x\n\n"));
        assert_eq!(
            got,
            vec![
                SseMessage {
                    event: "scaled".into(),
                    data: "{\"a\":\n1}".into(),
                    id: Some("3".into()),
                },
                SseMessage {
                    event: "lagged".into(),
                    data: "x".into(),
                    id: Some("3".into()),
                },
            ]
        );
    }

    #[test]
    fn sse_parser_names_unnamed_events_message_and_drops_empty_ones() {
        let mut parser = SseParser::default();
        let got = parser.push(b"event: nothing\n\ndata: d\n\n");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event, "message");
        assert_eq!(got[0].data, "d");
    }

    #[test]
    fn the_follower_skips_events_it_already_delivered_and_reconnects_on_lagged() {
        let mut follower = Follower {
            client: Client::new("http://127.0.0.1:9", "t"),
            group: None,
            last: 5,
            response: None,
            parser: SseParser::default(),
            pending: VecDeque::new(),
            failures: 2,
            last_failure: String::new(),
            done: false,
        };
        let message = |seq: i64, kind: &str| SseMessage {
            event: kind.into(),
            data: serde_json::json!({
                "seq": seq, "at": "t", "group": "web", "kind": kind,
                "subject": "web", "reason": "r"
            })
            .to_string(),
            id: Some(seq.to_string()),
        };
        assert!(matches!(follower.deliver(message(5, "scaled")), Ok(None)));
        let event = follower
            .deliver(message(6, "scaled"))
            .ok()
            .flatten()
            .unwrap();
        assert_eq!((event.seq, follower.last, follower.failures), (6, 6, 0));
        assert!(matches!(
            follower.deliver(message(6, "lagged")),
            Err(Interruption::Retry { counted: false, .. })
        ));
    }

    #[test]
    fn query_values_and_path_segments_are_encoded() {
        assert_eq!(
            with_query("/v1/plan", &[("group", Some("a b/c".into())), ("x", None)]),
            "/v1/plan?group=a%20b%2Fc"
        );
        assert_eq!(with_query("/v1/plan", &[("group", None)]), "/v1/plan");
        assert_eq!(encode("i-0abc.d_e~"), "i-0abc.d_e~");
    }
}
