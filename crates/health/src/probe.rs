//! One probe of one instance: an HTTP/1.1 GET or a TCP connect to the
//! instance's address, bounded by the check's timeout, judged ok or failed
//! with a reason.
//!
//! This is the crate's only network I/O. It never retries (the thresholds in
//! [`crate::machine`] absorb a single failure), never follows redirects and
//! never goes through a proxy from the environment. It does not schedule
//! probes (see [`crate::checker`]).

use std::error::Error as _;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{HealthCheck, ProbeTarget};

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeResult {
    Ok,
    Failed(ProbeFailure),
}

impl ProbeResult {
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok)
    }
}

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeFailure {
    /// Nothing listens on the port.
    Refused,
    /// No connection or no answer within the timeout.
    Timeout,
    /// The server answered with a status not in the expected set.
    Status(u16),
    /// The connection was reset or closed before a full answer.
    Closed,
    /// Anything else (no route, bad response, …), described.
    Other(String),
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused => f.write_str("connection refused"),
            Self::Timeout => f.write_str("timed out"),
            Self::Status(status) => write!(f, "status {status}"),
            Self::Closed => f.write_str("connection closed without an answer"),
            Self::Other(text) => f.write_str(text),
        }
    }
}

/// Probes instances for one health check.
#[derive(Debug, Clone)]
pub struct Prober {
    target: ProbeTarget,
    timeout: Duration,
    http: reqwest::Client,
}

/// The HTTP client could not be built (TLS backend initialisation).
#[derive(Debug, thiserror::Error)]
#[error("building the HTTP client for health probes: {0}")]
pub struct ProberError(String);

impl Prober {
    pub fn new(check: &HealthCheck) -> Result<Self, ProberError> {
        let timeout = check.timeout();
        let http = reqwest::Client::builder()
            // Instances are reached on their own addresses, never through a
            // proxy configured for the controller's outbound traffic.
            .no_proxy()
            .http1_only()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A 3xx is judged against the expected statuses as it is, as an
            // ELB target group does.
            .redirect(reqwest::redirect::Policy::none())
            // Each probe is a fresh connection, so a server that stopped
            // accepting is seen at once rather than through a pooled socket.
            .pool_max_idle_per_host(0)
            .user_agent(concat!("endstate-health/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProberError(e.to_string()))?;
        Ok(Self {
            target: check.probe.clone(),
            timeout,
            http,
        })
    }

    /// One probe of `address`.
    pub async fn probe(&self, address: IpAddr) -> ProbeResult {
        match &self.target {
            ProbeTarget::Tcp { port } => self.probe_tcp(SocketAddr::new(address, *port)).await,
            ProbeTarget::Http {
                port,
                path,
                expected,
            } => {
                let url = format!("http://{}{path}", SocketAddr::new(address, *port));
                match self.http.get(&url).send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        if expected.matches(status) {
                            ProbeResult::Ok
                        } else {
                            ProbeResult::Failed(ProbeFailure::Status(status))
                        }
                    }
                    Err(error) => ProbeResult::Failed(classify_http(&error)),
                }
            }
        }
    }

    async fn probe_tcp(&self, address: SocketAddr) -> ProbeResult {
        match tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(address)).await {
            Err(_) => ProbeResult::Failed(ProbeFailure::Timeout),
            Ok(Ok(_stream)) => ProbeResult::Ok,
            Ok(Err(error)) => ProbeResult::Failed(classify_io(&error)),
        }
    }
}

fn classify_io(error: &io::Error) -> ProbeFailure {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => ProbeFailure::Refused,
        io::ErrorKind::TimedOut => ProbeFailure::Timeout,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::UnexpectedEof
        | io::ErrorKind::BrokenPipe => ProbeFailure::Closed,
        _ => ProbeFailure::Other(error.to_string()),
    }
}

fn classify_http(error: &reqwest::Error) -> ProbeFailure {
    if error.is_timeout() {
        return ProbeFailure::Timeout;
    }
    // reqwest wraps hyper, which wraps the socket's error: the io::Error
    // deepest in the chain says what happened.
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            return classify_io(io);
        }
        source = cause.source();
    }
    let text = chain(error);
    if text.contains("connection closed") || text.contains("IncompleteMessage") {
        ProbeFailure::Closed
    } else {
        ProbeFailure::Other(text)
    }
}

fn chain(error: &dyn std::error::Error) -> String {
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
mod tests;
