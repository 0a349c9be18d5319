//! The EC2 and ELBv2 Query APIs over HTTP, on one endpoint: `app(state)`
//! is the axum router (POST `/` with a form body, or GET with a query
//! string), `serve` binds it to loopback. Each request is verified (SigV4,
//! signed for `ec2` or `elasticloadbalancing`); an `Action` that ELBv2
//! names is parsed into an `Elbv2Request` and answered by the backend's
//! [`crate::LoadBalancers`] (ELBv2's XML and error document), any other
//! into an `Ec2Request`, handed to the [`Backend`], and answered with the
//! wire crate's XML or EC2's error document.
//!
//! Not here: what instances are or do (the backend's), and the command line
//! that starts the server (the `endstate` binary's).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::any;
use axum::Router;
use endstate_clock::SharedClock;
use endstate_wire::elbv2::{
    CreateListenerResponse, CreateLoadBalancerResponse, CreateTargetGroupResponse,
    DeleteLoadBalancerResponse, DeleteTargetGroupResponse, DeregisterTargetsResponse,
    DescribeListenersResponse, DescribeLoadBalancersResponse,
    DescribeTargetGroupRequestCountsResponse, DescribeTargetGroupsResponse,
    DescribeTargetHealthResponse, Elbv2ErrorResponse, Elbv2Request, ModifyListenerResponse,
    ModifyTargetGroupAttributesResponse, RegisterTargetsResponse,
};
use endstate_wire::{Ec2Request, ErrorResponse, Params, Response as _};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::backend::Backend;
use crate::elbv2::{Elbv2Error, NewTargetGroup, TargetGroupQuery};
use crate::error::{ApiError, CloudError};
use crate::sigv4::{self, Credentials, ReceivedRequest};
use crate::simulated::{SimulatedBackend, SimulatedConfig};

/// What every request handler shares.
#[derive(Debug, Clone)]
pub struct CloudState {
    backend: Arc<dyn Backend>,
    credentials: Arc<Credentials>,
}

impl CloudState {
    pub fn new(backend: Arc<dyn Backend>, credentials: Credentials) -> Self {
        Self {
            backend,
            credentials: Arc::new(credentials),
        }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }
}

/// How to start the built-in cloud with the simulated backend.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Access key id → secret; requests signed with anything else are refused.
    pub credentials: Credentials,
    pub simulated: SimulatedConfig,
    /// The clock the simulated lifecycle, throttling and launch times run on.
    pub clock: SharedClock,
}

/// A server running on its own task. Dropping it stops the server too.
#[derive(Debug)]
pub struct RunningCloud {
    /// Where it listens (always on 127.0.0.1).
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningCloud {
    /// `http://127.0.0.1:PORT/`, what an EC2 client takes as its endpoint.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Stops accepting, finishes requests in flight, and waits for the end.
    pub async fn shutdown(mut self) -> Result<(), CloudError> {
        if let Some(stop) = self.stop.take() {
            // The receiver is gone only if the server already ended.
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result.map_err(CloudError::Serve),
            Err(e) => Err(CloudError::Task(e.to_string())),
        }
    }
}

/// Starts the built-in cloud with a simulated backend.
pub async fn serve(config: CloudConfig) -> Result<RunningCloud, CloudError> {
    let backend = Arc::new(SimulatedBackend::new(config.simulated, config.clock));
    serve_state(config.port, CloudState::new(backend, config.credentials)).await
}

/// Starts the API server for any backend on 127.0.0.1:`port`.
pub async fn serve_state(port: u16, state: CloudState) -> Result<RunningCloud, CloudError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .map_err(|source| CloudError::Bind { port, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| CloudError::Bind { port, source })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app(state))
            .with_graceful_shutdown(async move {
                // A dropped sender stops the server as a sent signal does.
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, "built-in cloud listening");
    Ok(RunningCloud {
        addr,
        stop: Some(stop),
        task,
    })
}

/// The API router.
pub fn app(state: CloudState) -> Router {
    // Every path answers as `/` does: EC2 clients only ever use `/`, and an
    // EC2 error document is more useful to them than an empty 404.
    Router::new()
        .route("/", any(handle))
        .fallback(handle)
        .with_state(state)
}

const XML: &str = "text/xml;charset=UTF-8";

async fn handle(
    State(state): State<CloudState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("ec2_request", request_id = %request_id, action = tracing::field::Empty);
    async move {
        if is_elbv2(&uri, &body) {
            return match answer_elbv2(&state, &method, &uri, &headers, &body, &request_id).await {
                Ok(xml) => (StatusCode::OK, [(header::CONTENT_TYPE, XML)], xml).into_response(),
                Err(error) => elbv2_error_response(&error, &request_id),
            };
        }
        match answer(&state, &method, &uri, &headers, &body, &request_id) {
            Ok(xml) => (StatusCode::OK, [(header::CONTENT_TYPE, XML)], xml).into_response(),
            Err(error) => error_response(&error, &request_id),
        }
    }
    .instrument(span)
    .await
}

fn error_response(error: &ApiError, request_id: &str) -> HttpResponse {
    match error {
        ApiError::Internal(detail) => tracing::error!(%detail, "internal error"),
        other => tracing::debug!(code = other.code(), "request refused"),
    }
    let document = ErrorResponse::single(error.code(), error.client_message(), request_id);
    (
        error.status(),
        [(header::CONTENT_TYPE, XML)],
        document.to_xml(),
    )
        .into_response()
}

/// Whether the request's `Action` is one of ELBv2's (EC2 and ELBv2 share
/// no action name). A request whose form cannot be read is EC2's, which
/// reports the error.
fn is_elbv2(uri: &Uri, body: &[u8]) -> bool {
    let form = if body.is_empty() {
        uri.query().unwrap_or_default()
    } else {
        std::str::from_utf8(body).unwrap_or_default()
    };
    Params::from_form(form)
        .ok()
        .and_then(|p| p.get("Action").map(Elbv2Request::is_elbv2_action))
        .unwrap_or(false)
}

/// Why an ELBv2 request failed: before the service (signature, protocol),
/// or in it.
#[derive(Debug)]
enum Elbv2Failure {
    Request(ApiError),
    Service(Elbv2Error),
}

impl From<ApiError> for Elbv2Failure {
    fn from(e: ApiError) -> Self {
        Elbv2Failure::Request(e)
    }
}

impl From<endstate_wire::WireError> for Elbv2Failure {
    fn from(e: endstate_wire::WireError) -> Self {
        Elbv2Failure::Request(e.into())
    }
}

impl From<Elbv2Error> for Elbv2Failure {
    fn from(e: Elbv2Error) -> Self {
        Elbv2Failure::Service(e)
    }
}

/// ELBv2's error document: `Sender` for the caller's faults, `Receiver`
/// for ours (whose details are logged, not sent).
fn elbv2_error_response(error: &Elbv2Failure, request_id: &str) -> HttpResponse {
    let (status, server_fault, code, message) = match error {
        Elbv2Failure::Request(e) => {
            if let ApiError::Internal(detail) = e {
                tracing::error!(%detail, "internal error");
            }
            (
                e.status(),
                e.status().is_server_error(),
                e.code(),
                e.client_message(),
            )
        }
        Elbv2Failure::Service(e) => {
            match e {
                Elbv2Error::Internal(detail) => tracing::error!(%detail, "internal error"),
                other => tracing::debug!(code = other.code(), "request refused"),
            }
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (
                status,
                e.fault() == "Receiver",
                e.code(),
                e.client_message(),
            )
        }
    };
    let document = if server_fault {
        Elbv2ErrorResponse::receiver(code, message, request_id)
    } else {
        Elbv2ErrorResponse::sender(code, message, request_id)
    };
    (status, [(header::CONTENT_TYPE, XML)], document.to_xml()).into_response()
}

/// Verifies the request (method, signature) and reads its form parameters.
fn verified_params(
    state: &CloudState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Params, ApiError> {
    if method != Method::POST && method != Method::GET {
        return Err(ApiError::InvalidParameterValue(format!(
            "The HTTP method {method} is not supported; use POST or GET"
        )));
    }
    sigv4::verify(
        &state.credentials,
        &ReceivedRequest {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query(),
            headers,
            body,
        },
        SystemTime::now(),
    )?;
    let form = if body.is_empty() {
        uri.query().unwrap_or_default()
    } else {
        std::str::from_utf8(body).map_err(|_| {
            endstate_wire::WireError::MalformedForm("the body is not UTF-8".to_string())
        })?
    };
    Ok(Params::from_form(form)?)
}

/// Verifies, parses and answers one ELBv2 request; the XML of its answer.
async fn answer_elbv2(
    state: &CloudState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    request_id: &str,
) -> Result<String, Elbv2Failure> {
    let params = verified_params(state, method, uri, headers, body)?;
    let request = Elbv2Request::from_params(&params)?;
    tracing::Span::current().record("action", request.action());
    let Some((lbs, instances)) = state.backend.load_balancing() else {
        return Err(ApiError::UnsupportedOperation(format!(
            "{} is not supported by this backend",
            request.action()
        ))
        .into());
    };
    let id = Some(request_id.to_string());
    Ok(match request {
        Elbv2Request::CreateLoadBalancer(r) => {
            let balancer = lbs.create_load_balancer(&r.name, &r.tags).await?;
            CreateLoadBalancerResponse {
                request_id: id,
                load_balancers: vec![balancer],
            }
            .to_xml()
        }
        Elbv2Request::DescribeLoadBalancers(r) => DescribeLoadBalancersResponse {
            request_id: id,
            load_balancers: lbs
                .describe_load_balancers(&r.load_balancer_arns, &r.names)
                .await?,
            next_marker: None,
        }
        .to_xml(),
        Elbv2Request::DeleteLoadBalancer(r) => {
            lbs.delete_load_balancer(&r.load_balancer_arn).await?;
            DeleteLoadBalancerResponse { request_id: id }.to_xml()
        }
        Elbv2Request::CreateTargetGroup(r) => {
            if let Some(kind) = r.target_type.as_deref().filter(|t| *t != "instance") {
                return Err(Elbv2Error::ValidationError(format!(
                    "TargetType: '{kind}' is not supported by the built-in cloud (instance)"
                ))
                .into());
            }
            let port = r.port.ok_or_else(|| {
                Elbv2Error::ValidationError(
                    "Port: a target group of instances needs a port".to_string(),
                )
            })?;
            let group = lbs
                .create_target_group(&NewTargetGroup {
                    name: r.name,
                    protocol: r.protocol.unwrap_or_else(|| "HTTP".to_string()),
                    port,
                    vpc_id: r.vpc_id,
                    health_check: r.health_check,
                    tags: r.tags,
                })
                .await?;
            CreateTargetGroupResponse {
                request_id: id,
                target_groups: vec![group],
            }
            .to_xml()
        }
        Elbv2Request::DescribeTargetGroups(r) => {
            let page = lbs
                .describe_target_groups(&TargetGroupQuery {
                    load_balancer_arn: r.load_balancer_arn,
                    names: r.names,
                    arns: r.target_group_arns,
                    marker: r.marker,
                    page_size: r.page_size,
                })
                .await?;
            DescribeTargetGroupsResponse {
                request_id: id,
                target_groups: page.target_groups,
                next_marker: page.next_marker,
            }
            .to_xml()
        }
        Elbv2Request::DeleteTargetGroup(r) => {
            lbs.delete_target_group(&r.target_group_arn).await?;
            DeleteTargetGroupResponse { request_id: id }.to_xml()
        }
        Elbv2Request::ModifyTargetGroupAttributes(r) => ModifyTargetGroupAttributesResponse {
            request_id: id,
            attributes: lbs
                .modify_target_group_attributes(&r.target_group_arn, &r.attributes)
                .await?,
        }
        .to_xml(),
        Elbv2Request::RegisterTargets(r) => {
            lbs.register_targets(&r.target_group_arn, &r.targets, instances)
                .await?;
            RegisterTargetsResponse { request_id: id }.to_xml()
        }
        Elbv2Request::DeregisterTargets(r) => {
            lbs.deregister_targets(&r.target_group_arn, &r.targets)
                .await?;
            DeregisterTargetsResponse { request_id: id }.to_xml()
        }
        Elbv2Request::DescribeTargetHealth(r) => DescribeTargetHealthResponse {
            request_id: id,
            target_health_descriptions: lbs
                .describe_target_health(&r.target_group_arn, &r.targets)
                .await?,
        }
        .to_xml(),
        Elbv2Request::CreateListener(r) => {
            let port = r.port.ok_or_else(|| {
                Elbv2Error::ValidationError("Port: a listener needs a port".to_string())
            })?;
            let protocol = r.protocol.as_deref().unwrap_or("HTTP");
            let listener = lbs
                .create_listener(&r.load_balancer_arn, protocol, port, &r.default_action)
                .await?;
            CreateListenerResponse {
                request_id: id,
                listeners: vec![listener],
            }
            .to_xml()
        }
        Elbv2Request::DescribeListeners(r) => DescribeListenersResponse {
            request_id: id,
            listeners: lbs
                .describe_listeners(r.load_balancer_arn.as_deref(), &r.listener_arns)
                .await?,
            next_marker: None,
        }
        .to_xml(),
        Elbv2Request::ModifyListener(r) => {
            if r.port.is_some() || r.protocol.as_deref().is_some_and(|p| p != "HTTP") {
                return Err(Elbv2Error::ValidationError(
                    "ModifyListener: the built-in cloud changes a listener's default action only, not its port or protocol".to_string(),
                )
                .into());
            }
            let listener = match &r.default_action {
                Some(action) => lbs.modify_listener(&r.listener_arn, action).await?,
                None => lbs
                    .describe_listeners(None, std::slice::from_ref(&r.listener_arn))
                    .await?
                    .into_iter()
                    .next()
                    .ok_or_else(|| {
                        Elbv2Error::ListenerNotFound(format!(
                            "Listener '{}' not found",
                            r.listener_arn
                        ))
                    })?,
            };
            ModifyListenerResponse {
                request_id: id,
                listeners: vec![listener],
            }
            .to_xml()
        }
        Elbv2Request::DescribeTargetGroupRequestCounts(r) => {
            DescribeTargetGroupRequestCountsResponse {
                request_id: id,
                counts: lbs
                    .target_group_request_counts(&r.target_group_arn, r.window_seconds)
                    .await?,
            }
            .to_xml()
        }
    })
}

/// Verifies, parses and dispatches one EC2 request; the XML of its answer.
fn answer(
    state: &CloudState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    request_id: &str,
) -> Result<String, ApiError> {
    let params = verified_params(state, method, uri, headers, body)?;
    let request = Ec2Request::from_params(&params)?;
    tracing::Span::current().record("action", request.action());
    let id = Some(request_id.to_string());
    let backend = &state.backend;
    Ok(match &request {
        Ec2Request::RunInstances(r) => {
            let mut response = backend.run_instances(r)?;
            response.request_id = id;
            response.to_xml()
        }
        Ec2Request::DescribeInstances(r) => {
            let mut response = backend.describe_instances(r)?;
            response.request_id = id;
            response.to_xml()
        }
        Ec2Request::TerminateInstances(r) => {
            let mut response = backend.terminate_instances(r)?;
            response.request_id = id;
            response.to_xml()
        }
        Ec2Request::StopInstances(r) => {
            let mut response = backend.stop_instances(r)?;
            response.request_id = id;
            response.to_xml()
        }
        Ec2Request::StartInstances(r) => {
            let mut response = backend.start_instances(r)?;
            response.request_id = id;
            response.to_xml()
        }
        Ec2Request::RebootInstances(r) => {
            let mut response = backend.reboot_instances(r)?;
            response.request_id = id;
            response.to_xml()
        }
        Ec2Request::CreateTags(r) => {
            let mut response = backend.create_tags(r)?;
            response.request_id = id;
            response.to_xml()
        }
        Ec2Request::DeleteTags(r) => {
            let mut response = backend.delete_tags(r)?;
            response.request_id = id;
            response.to_xml()
        }
        Ec2Request::DescribeImages(r) => {
            let mut response = backend.describe_images(r)?;
            response.request_id = id;
            response.to_xml()
        }
        Ec2Request::DescribeAvailabilityZones(r) => {
            let mut response = backend.describe_availability_zones(r)?;
            response.request_id = id;
            response.to_xml()
        }
        Ec2Request::DescribeInstanceStatus(r) => {
            let mut response = backend.describe_instance_status(r)?;
            response.request_id = id;
            response.to_xml()
        }
        Ec2Request::GetConsoleOutput(r) => {
            let mut response = backend.get_console_output(r)?;
            response.request_id = id;
            response.to_xml()
        }
        Ec2Request::CreateImage(r) => {
            let mut response = backend.create_image(r)?;
            response.request_id = id;
            response.to_xml()
        }
        Ec2Request::DeregisterImage(r) => {
            let mut response = backend.deregister_image(r)?;
            response.request_id = id;
            response.to_xml()
        }
        Ec2Request::DeleteSnapshot(r) => {
            let mut response = backend.delete_snapshot(r)?;
            response.request_id = id;
            response.to_xml()
        }
        Ec2Request::ModifyInstanceMetadataOptions(r) => {
            let mut response = backend.modify_instance_metadata_options(r)?;
            response.request_id = id;
            response.to_xml()
        }
        Ec2Request::DescribeInstanceUtilization(r) => {
            let mut response = backend.describe_instance_utilization(r)?;
            response.request_id = id;
            response.to_xml()
        }
        Ec2Request::BakeImage(r) => {
            let mut response = backend.bake_image(r)?;
            response.request_id = id;
            response.to_xml()
        }
        Ec2Request::GetBakeOutput(r) => {
            let mut response = backend.get_bake_output(r)?;
            response.request_id = id;
            response.to_xml()
        }
    })
}
