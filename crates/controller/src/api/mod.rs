//! The HTTP API of `endstate serve`, over [`ControllerApi`]: JSON routes for
//! the spec, groups, instances, health, plans, events (also as server-sent
//! events), scaling activity and metric samples; `/metrics` for Prometheus;
//! the OpenAPI document. Every route but `/healthz` and `/openapi.json`
//! needs `Authorization: Bearer <token>`, checked with
//! [`ControllerApi::verify_token`].
//!
//! The routes are one table ([`routes::ROUTES`]) from which [`router`] is
//! built; each route is wrapped in one guard that authenticates, counts the
//! request by route and status, and opens its tracing span. Errors are
//! `{"error": "..."}` with the status [`error_status`] gives. This module
//! does not decide anything about the fleet: the controller does.

mod counters;
mod events;
mod handlers;
mod input;
pub mod routes;
pub mod types;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use tokio::sync::watch;
use tracing::Instrument;

use crate::view::{ApiError, ControllerApi};
use counters::RequestCounters;
use routes::{Route, ROUTES};
use types::ErrorBody;

/// The checked-in OpenAPI 3.1 document describing every route.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

/// How often an open event stream sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What every handler shares.
#[derive(Clone)]
struct AppState {
    api: Arc<dyn ControllerApi>,
    counters: Arc<RequestCounters>,
    /// Becomes `true` when [`serve`] begins shutting down; event streams end.
    shutdown: watch::Receiver<bool>,
    keep_alive: Duration,
}

/// The API's router, for `api`. Event streams opened on it end only when
/// their client leaves; [`serve`] also ends them at shutdown.
pub fn router(api: Arc<dyn ControllerApi>) -> Router {
    let (_never, shutdown) = watch::channel(false);
    build_router(api, shutdown, KEEP_ALIVE)
}

/// Serves the API on `listener` until `shutdown` resolves, then stops
/// accepting, ends open event streams and waits for requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Arc<dyn ControllerApi>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (signal, streams_shutdown) = watch::channel(false);
    let app = build_router(api, streams_shutdown, KEEP_ALIVE);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            signal.send_replace(true);
        })
        .await
}

fn build_router(
    api: Arc<dyn ControllerApi>,
    shutdown: watch::Receiver<bool>,
    keep_alive: Duration,
) -> Router {
    let state = AppState {
        api,
        counters: Arc::new(RequestCounters::default()),
        shutdown,
        keep_alive,
    };
    let mut router = Router::new();
    for route in ROUTES {
        let guarded = handlers::method_router(route).layer(axum::middleware::from_fn_with_state(
            (state.clone(), route),
            guard,
        ));
        router = router.route(route.path, guarded);
    }
    router
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route".to_string()) })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method (see /openapi.json)".to_string(),
            )
        })
        .with_state(state)
}

/// Authenticates (when the route needs it), traces and counts one request.
async fn guard(
    State((state, route)): State<(AppState, &'static Route)>,
    request: Request,
    next: Next,
) -> Response {
    let span = tracing::info_span!("api", method = route.verb.as_str(), route = route.path);
    let response = async {
        if route.auth {
            let authorization = request.headers().get(header::AUTHORIZATION).cloned();
            match authenticate(&state, authorization).await {
                Ok(()) => {}
                Err(Refusal::Unauthorized(reason)) => {
                    tracing::info!(%reason, "refused: not authenticated");
                    return unauthorized(reason);
                }
                Err(Refusal::Failed(failure)) => return failure.into_response(),
            }
        }
        next.run(request).await
    }
    .instrument(span)
    .await;
    state.counters.record(route, response.status().as_u16());
    response
}

/// Why a request was not let through.
enum Refusal {
    /// 401, with what is wrong with the header (never the token itself).
    Unauthorized(String),
    /// The token could not be checked.
    Failed(Failure),
}

impl From<&str> for Refusal {
    fn from(reason: &str) -> Self {
        Refusal::Unauthorized(reason.to_string())
    }
}

/// Checks the bearer token.
async fn authenticate(state: &AppState, authorization: Option<HeaderValue>) -> Result<(), Refusal> {
    let value = authorization
        .ok_or("missing Authorization header: send `Authorization: Bearer <token>`")?;
    let text = value
        .to_str()
        .map_err(|_| "the Authorization header is not text")?;
    let token = match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => return Err("the Authorization header is not `Bearer <token>`".into()),
    };
    if token.is_empty() {
        return Err("the Authorization header is not `Bearer <token>`: the token is empty".into());
    }
    let api = Arc::clone(&state.api);
    let token = token.to_string();
    let valid = tokio::task::spawn_blocking(move || api.verify_token(&token))
        .await
        .map_err(|e| {
            Refusal::Failed(Failure::Api(ApiError::Internal(format!(
                "checking a bearer token failed: {e}"
            ))))
        })?;
    if valid {
        Ok(())
    } else {
        Err("the bearer token is not valid".into())
    }
}

fn unauthorized(message: String) -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The HTTP status of each [`ApiError`].
pub fn error_status(error: &ApiError) -> StatusCode {
    match error {
        ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ApiError::Conflict(_) => StatusCode::CONFLICT,
        ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Why a handler did not answer with what was asked: the controller's
/// refusal, or a request the API could not read (400).
enum Failure {
    Api(ApiError),
    BadRequest(String),
    /// Refused by axum's own extraction (a body over the size limit, …).
    Rejected(StatusCode, String),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Api(e)
    }
}

impl From<input::BadRequest> for Failure {
    fn from(e: input::BadRequest) -> Self {
        Failure::BadRequest(e.0)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::BadRequest(message) => error(StatusCode::BAD_REQUEST, message),
            Failure::Rejected(status, message) => error(status, message),
            Failure::Api(ApiError::Internal(message)) => {
                // Internal errors are logged, not leaked: their text may name
                // hosts, files or where credentials come from.
                tracing::error!(error = %message, "internal error answering a request");
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; the controller's log has the details".to_string(),
                )
            }
            Failure::Api(refusal) => error(error_status(&refusal), refusal.to_string()),
        }
    }
}

/// `{"error": message}` with `status`.
fn error(status: StatusCode, message: String) -> Response {
    json(status, &ErrorBody { error: message })
}

/// `value` as JSON with `status`.
fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding a response");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                r#"{"error":"the response could not be encoded"}"#,
            )
                .into_response()
        }
    }
}
