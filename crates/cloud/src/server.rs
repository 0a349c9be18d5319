//! The EC2 Query API over HTTP: `app(state)` is the axum router (POST `/`
//! with a form body, or GET with a query string), `serve` binds it to
//! loopback. Each request is verified (SigV4), parsed into an
//! `Ec2Request`, handed to the [`Backend`], and answered with the wire
//! crate's XML or EC2's error document.
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
use endstate_wire::{Ec2Request, ErrorResponse, Params, Response as _};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::backend::Backend;
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

/// Verifies, parses and dispatches one request; the XML of its answer.
fn answer(
    state: &CloudState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    request_id: &str,
) -> Result<String, ApiError> {
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
    let params = Params::from_form(form)?;
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
    })
}
