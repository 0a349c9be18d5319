//! The HTTP service: IMDSv1 and v2 over axum, answering each caller with
//! its own instance's metadata or a refusal.
//!
//! One request goes: identify the caller ([`Caller`], from the
//! connection) → find its instance ([`MetadataSource`]) → refuse if there is
//! none, or if this listener serves another instance → check the token →
//! answer from the tree ([`crate::paths`]). Every refusal is a [`Refusal`]
//! and maps to its status in one `match`.
//!
//! **Refusals on identity are 403.** A caller that maps to no instance, or
//! to an instance other than the one its listener serves, gets
//! `403 Forbidden` whatever it asks (the token endpoint included) — before
//! any token is looked at, so a refusal says nothing about the token and
//! nothing about what exists. EC2 has no such case (its IMDS is reachable
//! only from the instance itself); 403 is what it answers for requests it
//! will not serve at all (a token PUT through a proxy).
//!
//! Not here: choosing addresses, storing keys or instances, TLS (EC2's IMDS
//! has none), IPv6 IMDS (`[fd00:ec2::254]`), hop-limit enforcement (see
//! [`InstanceMetadata::hop_limit`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use endstate_clock::SharedClock;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::paths;
use crate::token::{TokenIssuer, MAX_TTL_SECONDS};
use crate::{Caller, InstanceMetadata, MetadataSource, Signer};

/// The header carrying an IMDSv2 token on reads.
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// The header carrying the requested TTL on a token PUT, and the granted
/// TTL on its reply.
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// The token path.
pub const TOKEN_PATH: &str = "/latest/api/token";

/// Which instances a listener answers for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerScope {
    /// Any instance the [`MetadataSource`] finds for the caller (one shared
    /// listener for all instances).
    AnyInstance,
    /// Only the instance with this id (one listener per instance, on the
    /// instance's own address): callers that belong to another instance are
    /// refused even though the source knows them.
    Instance(String),
}

impl ListenerScope {
    fn admits(&self, instance: &InstanceMetadata) -> bool {
        match self {
            ListenerScope::AnyInstance => true,
            ListenerScope::Instance(id) => *id == instance.instance_id,
        }
    }
}

/// Why the service could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    /// The metadata service answers without credentials, so it listens on
    /// loopback only (127.0.0.0/8 or ::1), never where the network reaches.
    #[error("refusing to listen on {0}: the metadata service binds to loopback addresses only")]
    NotLoopback(SocketAddr),
    /// The address could not be bound (in use, not assignable, ...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("metadata service failed: {0}")]
    Serve(#[from] std::io::Error),
    /// The server task panicked or was cancelled.
    #[error("metadata service task ended abnormally: {0}")]
    Task(String),
}

/// Everything a request needs; cheap to clone.
#[derive(Clone)]
struct Service {
    source: Arc<dyn MetadataSource>,
    signer: Arc<Signer>,
    tokens: TokenIssuer,
    clock: SharedClock,
    scope: ListenerScope,
}

/// The service for a listener shared by all instances
/// ([`ListenerScope::AnyInstance`]). Serve it with
/// `into_make_service_with_connect_info::<Caller>()` (as [`serve`] does):
/// a request without a [`Caller`] is refused.
pub fn app(source: Arc<dyn MetadataSource>, signer: Arc<Signer>, clock: SharedClock) -> Router {
    scoped_app(ListenerScope::AnyInstance, source, signer, clock)
}

/// The service for a listener of the given scope.
pub fn scoped_app(
    scope: ListenerScope,
    source: Arc<dyn MetadataSource>,
    signer: Arc<Signer>,
    clock: SharedClock,
) -> Router {
    let tokens = TokenIssuer::new(&signer);
    Router::new().fallback(handle).with_state(Service {
        source,
        signer,
        tokens,
        clock,
        scope,
    })
}

/// A running service. Dropping it stops the service too (gracefully, in
/// the background).
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// The address it listens on (with the port the system chose, when 0
    /// was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL clients use (`AWS_EC2_METADATA_SERVICE_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stops accepting, lets requests in flight finish, and waits.
    pub async fn shutdown(mut self) -> Result<(), ImdsError> {
        if let Some(stop) = self.stop.take() {
            // The receiver is gone only if the server already stopped.
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => match task.await {
                Ok(result) => Ok(result?),
                Err(e) => Err(ImdsError::Task(e.to_string())),
            },
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Listens on `addr` (loopback only; port 0 picks one) and serves `scope`'s
/// instances from `source` until the returned [`Running`] is shut down or
/// dropped.
pub async fn serve(
    addr: SocketAddr,
    scope: ListenerScope,
    source: Arc<dyn MetadataSource>,
    signer: Arc<Signer>,
    clock: SharedClock,
) -> Result<Running, ImdsError> {
    if !addr.ip().is_loopback() {
        return Err(ImdsError::NotLoopback(addr));
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ImdsError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ImdsError::Bind { addr, source })?;
    let router = scoped_app(scope, source, signer, clock);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<Caller>(),
        )
        .with_graceful_shutdown(async move {
            // A sent value or a dropped sender both mean stop.
            let _ = stopped.await;
        })
        .await
    });
    tracing::debug!(%local_addr, "instance metadata service listening");
    Ok(Running {
        local_addr,
        stop: Some(stop),
        task: Some(task),
    })
}

/// A request the service will not answer, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// A token PUT carrying `X-Forwarded-For` (or the standard `Forwarded`):
    /// it came through a proxy.
    Forwarded,
    /// The connection belongs to no instance (or its caller is unknown).
    UnknownCaller,
    /// The caller's instance is not the one this listener serves.
    OtherInstance,
    /// The TTL header is missing, not a number, or outside 1..=21600.
    BadTtl,
    /// A token that is malformed, expired, or issued for another instance.
    InvalidToken,
    /// No token, and the instance requires one.
    TokenRequired,
    /// No such path.
    NotFound,
    /// A method this path does not take.
    MethodNotAllowed,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::Forwarded | Refusal::UnknownCaller | Refusal::OtherInstance => {
                StatusCode::FORBIDDEN
            }
            Refusal::BadTtl => StatusCode::BAD_REQUEST,
            Refusal::InvalidToken | Refusal::TokenRequired => StatusCode::UNAUTHORIZED,
            Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = self.status();
        // The reason phrase only: a refusal tells the caller nothing about
        // other instances or about why a token failed.
        let body = status.canonical_reason().unwrap_or("Refused");
        text(status, body.as_bytes().to_vec())
    }
}

fn text(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

async fn handle(State(service): State<Service>, request: Request) -> Response {
    let caller = caller_of(&request);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let result = service.answer(caller.as_ref(), &method, &path, request.headers());
    let status = match &result {
        Ok(_) => StatusCode::OK,
        Err(refusal) => refusal.status(),
    };
    tracing::debug!(
        peer = ?caller.map(|c| c.peer),
        uid = ?caller.and_then(|c| c.uid),
        %method,
        %path,
        status = status.as_u16(),
        "instance metadata request"
    );
    match result {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

/// The connection's caller, as [`serve`] records it — or as a test's
/// [`MockConnectInfo`] layer does (what axum's `ConnectInfo` extractor
/// accepts too). `None` refuses the request: a router served without
/// connection info cannot tell instances apart.
fn caller_of(request: &Request) -> Option<Caller> {
    let extensions = request.extensions();
    extensions
        .get::<ConnectInfo<Caller>>()
        .map(|ConnectInfo(caller)| *caller)
        .or_else(|| {
            extensions
                .get::<MockConnectInfo<Caller>>()
                .map(|MockConnectInfo(caller)| *caller)
        })
}

impl Service {
    fn answer(
        &self,
        caller: Option<&Caller>,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Response, Refusal> {
        let is_token_path = path == TOKEN_PATH;
        match (is_token_path, method) {
            (true, &Method::PUT) => {
                // Checked first, as EC2 does: a proxied token request is
                // refused whoever sends it.
                if headers.contains_key(header::FORWARDED)
                    || headers.contains_key("x-forwarded-for")
                {
                    return Err(Refusal::Forwarded);
                }
                let instance = self.instance_of(caller)?;
                let ttl = requested_ttl(headers)?;
                let token = self.tokens.issue(
                    &instance.instance_id,
                    self.clock.now(),
                    Duration::from_secs(ttl),
                );
                let mut response = text(StatusCode::OK, token.into_bytes());
                response
                    .headers_mut()
                    .insert(TTL_HEADER, HeaderValue::from(ttl));
                Ok(response)
            }
            (true, _) => Err(Refusal::MethodNotAllowed),
            (false, &Method::GET | &Method::HEAD) => {
                let instance = self.instance_of(caller)?;
                self.authorize(&instance, headers)?;
                let node =
                    paths::resolve(path, &instance, &self.signer).ok_or(Refusal::NotFound)?;
                Ok(text(StatusCode::OK, node.into_body()))
            }
            (false, _) => Err(Refusal::MethodNotAllowed),
        }
    }

    /// The caller's instance, if it has one this listener serves.
    fn instance_of(&self, caller: Option<&Caller>) -> Result<Arc<InstanceMetadata>, Refusal> {
        let instance = caller
            .and_then(|caller| self.source.lookup(caller))
            .ok_or(Refusal::UnknownCaller)?;
        if self.scope.admits(&instance) {
            Ok(instance)
        } else {
            Err(Refusal::OtherInstance)
        }
    }

    /// IMDSv2 if a token is given (it must be valid, even where v1 would
    /// do: EC2 answers a bad token with 401 either way), else IMDSv1 unless
    /// the instance requires tokens.
    fn authorize(&self, instance: &InstanceMetadata, headers: &HeaderMap) -> Result<(), Refusal> {
        match headers.get(TOKEN_HEADER) {
            Some(token) => {
                let token = token.to_str().map_err(|_| Refusal::InvalidToken)?;
                if self
                    .tokens
                    .check(token, &instance.instance_id, self.clock.now())
                {
                    Ok(())
                } else {
                    Err(Refusal::InvalidToken)
                }
            }
            None if instance.tokens_required => Err(Refusal::TokenRequired),
            None => Ok(()),
        }
    }
}

/// The TTL asked for: a whole number of seconds in 1..=21600.
fn requested_ttl(headers: &HeaderMap) -> Result<u64, Refusal> {
    let ttl: u64 = headers
        .get(TTL_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
        .ok_or(Refusal::BadTtl)?;
    if (1..=MAX_TTL_SECONDS).contains(&ttl) {
        Ok(ttl)
    } else {
        Err(Refusal::BadTtl)
    }
}
