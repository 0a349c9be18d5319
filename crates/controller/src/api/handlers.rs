//! One handler per [`Endpoint`]: read the request's input, call the
//! controller, answer with JSON. Authentication and counting are the guard's
//! ([`super::guard`]); deciding is the controller's.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put, MethodRouter};

use super::events::{self, Follow};
use super::input::{json_body, BadRequest, Query};
use super::routes::{Endpoint, Route, Verb};
use super::types::{
    health_report, DeployRequest, Healthz, MetricsAccepted, MetricsRequest, PauseRequest,
    ProtectionRequest,
};
use super::{json, AppState, Failure, OPENAPI_JSON};
use crate::view::{ApiError, ControllerApi, SpecSubmission};

/// `GET /v1/events`: how many events by default, and at most.
pub const EVENTS_LIMIT_DEFAULT: i64 = 100;
pub const EVENTS_LIMIT_MAX: i64 = 1000;

/// The reason a pause records when the request gives none.
const DEFAULT_PAUSE_REASON: &str = "paused through the API";

type Answer = Result<Response, Failure>;

/// The handler of `route`, on its method.
pub(super) fn method_router(route: &Route) -> MethodRouter<AppState> {
    macro_rules! to {
        ($handler:expr) => {
            match route.verb {
                Verb::Get => get($handler),
                Verb::Post => post($handler),
                Verb::Put => put($handler),
            }
        };
    }
    match route.endpoint {
        Endpoint::Healthz => to!(healthz),
        Endpoint::OpenApi => to!(openapi),
        Endpoint::Prometheus => to!(prometheus),
        Endpoint::SpecGet => to!(spec_get),
        Endpoint::SpecSubmit => to!(spec_submit),
        Endpoint::Groups => to!(groups),
        Endpoint::Group => to!(group),
        Endpoint::Pause => to!(pause),
        Endpoint::Resume => to!(resume),
        Endpoint::Instances => to!(instances),
        Endpoint::GroupInstances => to!(group_instances),
        Endpoint::Protection => to!(protection),
        Endpoint::Health => to!(health),
        Endpoint::Plan => to!(plan),
        Endpoint::Events => to!(events_after),
        Endpoint::EventStream => to!(event_stream),
        Endpoint::Scaling => to!(scaling),
        Endpoint::Metrics => to!(metrics),
        Endpoint::Deploy => to!(deploy),
        Endpoint::Rollback => to!(rollback),
        Endpoint::Rollout => to!(rollout),
        Endpoint::AgentNonce => to!(agent_nonce),
        Endpoint::AgentSession => to!(agent_session),
        Endpoint::AgentConfig => to!(agent_config),
        Endpoint::AgentReport => to!(agent_report),
    }
}

/// Runs one of the controller's synchronous calls off the async threads:
/// they may read SQLite.
async fn blocking<R, F>(state: &AppState, call: F) -> Result<R, Failure>
where
    R: Send + 'static,
    F: FnOnce(&dyn ControllerApi) -> R + Send + 'static,
{
    let api = Arc::clone(&state.api);
    tokio::task::spawn_blocking(move || call(api.as_ref()))
        .await
        .map_err(|e| Failure::Api(ApiError::Internal(format!("controller call failed: {e}"))))
}

fn ok<T: serde::Serialize>(value: &T) -> Answer {
    Ok(json(StatusCode::OK, value))
}

fn path<T>(extracted: Result<Path<T>, PathRejection>) -> Result<T, Failure> {
    extracted
        .map(|Path(value)| value)
        .map_err(|e| Failure::BadRequest(format!("path: {}", e.body_text())))
}

/// The body as sent; a body over axum's limit (2 MB) or cut short is
/// answered with the rejection's status and text, as JSON.
fn bytes(extracted: Result<Bytes, BytesRejection>) -> Result<Bytes, Failure> {
    extracted.map_err(|e| Failure::Rejected(e.status(), format!("request body: {}", e.body_text())))
}

async fn healthz() -> Answer {
    ok(&Healthz { ok: true })
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI_JSON,
    )
        .into_response()
}

async fn prometheus(State(state): State<AppState>) -> Answer {
    let mut text = blocking(&state, |api| api.prometheus()).await?;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&state.counters.render());
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

async fn spec_get(State(state): State<AppState>) -> Answer {
    ok(&blocking(&state, |api| api.spec()).await?)
}

async fn spec_submit(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Answer {
    let submission: SpecSubmission = json_body(
        &bytes(body)?,
        "a spec submission {\"yaml\": \"...\", \"environment\"?, \"file_name\"?, \"allow_mass_terminate\"?}",
        None,
    )?;
    ok(&state.api.submit_spec(submission).await?)
}

async fn groups(State(state): State<AppState>) -> Answer {
    ok(&blocking(&state, |api| api.groups()).await?)
}

async fn group(State(state): State<AppState>, name: Result<Path<String>, PathRejection>) -> Answer {
    let name = path(name)?;
    ok(&blocking(&state, move |api| api.group(&name)).await??)
}

async fn pause(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let name = path(name)?;
    let request: PauseRequest = json_body(
        &bytes(body)?,
        "{\"reason\": \"...\"} or no body",
        Some(PauseRequest::default()),
    )?;
    let reason = request
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_PAUSE_REASON.to_string());
    ok(&state.api.pause(&name, &reason).await?)
}

/// `POST /v1/groups/{group}/deploy`: accepted (202), the rollout runs in
/// the group's reconcile loop.
async fn deploy(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let name = path(name)?;
    let request: DeployRequest = json_body(&bytes(body)?, "{\"image\": \"ami-...\"}", None)?;
    let view = state.api.deploy(&name, &request.image).await?;
    Ok(json(StatusCode::ACCEPTED, &view))
}

/// `POST /v1/groups/{group}/rollback`: accepted (202).
async fn rollback(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Answer {
    let name = path(name)?;
    let view = state.api.rollback(&name).await?;
    Ok(json(StatusCode::ACCEPTED, &view))
}

async fn rollout(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Answer {
    let name = path(name)?;
    ok(&blocking(&state, move |api| api.rollout(&name)).await??)
}

async fn resume(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Answer {
    let name = path(name)?;
    ok(&state.api.resume(&name).await?)
}

async fn instances(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Answer {
    let query = Query::parse(raw.as_deref(), &["group"])?;
    let group = query.text("group").map(str::to_string);
    ok(&blocking(&state, move |api| api.instances(group.as_deref())).await??)
}

async fn group_instances(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Answer {
    let name = path(name)?;
    ok(&blocking(&state, move |api| api.instances(Some(&name))).await??)
}

async fn protection(
    State(state): State<AppState>,
    names: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let (group, instance) = path(names)?;
    let request: ProtectionRequest = json_body(&bytes(body)?, "{\"protected\": true|false}", None)?;
    ok(&state
        .api
        .set_protection(&group, &instance, request.protected)
        .await?)
}

async fn health(State(state): State<AppState>) -> Answer {
    let (groups, instances) = blocking(&state, |api| (api.groups(), api.instances(None))).await?;
    ok(&health_report(&groups, &instances?))
}

async fn plan(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Answer {
    let query = Query::parse(raw.as_deref(), &["group"])?;
    ok(&state.api.plan(query.text("group")).await?)
}

async fn events_after(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Answer {
    let query = Query::parse(raw.as_deref(), &["after", "limit", "group"])?;
    let after = query.integer("after", i64::MIN, i64::MAX)?.unwrap_or(0);
    let limit = query
        .integer("limit", 1, EVENTS_LIMIT_MAX)?
        .unwrap_or(EVENTS_LIMIT_DEFAULT);
    // `limit` is within 1..=1000 here, so the cast cannot truncate.
    let limit = limit as usize;
    let group = query.text("group").map(str::to_string);
    ok(&blocking(&state, move |api| {
        api.events_after(after, limit, group.as_deref())
    })
    .await??)
}

async fn event_stream(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Answer {
    let query = Query::parse(raw.as_deref(), &["after", "group"])?;
    let after = match last_event_id(&headers)? {
        Some(id) => id,
        None => query.integer("after", i64::MIN, i64::MAX)?.unwrap_or(0),
    };
    let group = query.text("group").map(str::to_string);
    if let Some(name) = group.clone() {
        // An unknown group is a 404 now rather than a stream that never
        // shows anything.
        blocking(&state, move |api| api.group(&name)).await??;
    }
    let stream = events::stream(Follow {
        api: Arc::clone(&state.api),
        group,
        after,
        shutdown: state.shutdown.clone(),
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(state.keep_alive))
        .into_response())
}

/// The `Last-Event-ID` header, which a reconnecting client sends.
fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, BadRequest> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| BadRequest("header Last-Event-ID is not text".to_string()))?
        .trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        BadRequest(format!(
            "header Last-Event-ID: `{text}` is not an event sequence number"
        ))
    })
}

async fn scaling(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Answer {
    let query = Query::parse(raw.as_deref(), &["group"])?;
    let group = query.text("group").map(str::to_string);
    ok(&blocking(&state, move |api| api.scaling_activity(group.as_deref())).await??)
}

async fn metrics(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Answer {
    let request: MetricsRequest = json_body(
        &bytes(body)?,
        "{\"samples\": [{\"group\", \"instance\"?, \"metric\", \"value\"}, ...]}",
        None,
    )?;
    let accepted = state.api.put_metrics(request.samples).await?;
    ok(&MetricsAccepted { accepted })
}

/// An agent's answer: the value, or its refusal with the refusal's status
/// (internal errors logged, not shown).
fn agent_answer<T: serde::Serialize>(result: Result<T, crate::agent::AgentRefusal>) -> Answer {
    use crate::agent::AgentRefusal;
    match result {
        Ok(value) => ok(&value),
        Err(AgentRefusal::Internal(message)) => {
            tracing::error!(error = %message, "internal error answering an agent");
            Ok(super::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; the controller's log has the details".to_string(),
            ))
        }
        Err(refusal) => {
            let status =
                StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            tracing::info!(%refusal, "agent refused");
            let mut response = super::error(status, refusal.to_string());
            if status == StatusCode::UNAUTHORIZED {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Ok(response)
        }
    }
}

/// The agent token of `Authorization: Bearer <token>`.
fn agent_token(headers: &HeaderMap) -> Result<String, crate::agent::AgentRefusal> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|text| text.split_once(' '))
        .filter(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .map(|(_, token)| token.trim().to_string())
        .ok_or_else(|| {
            crate::agent::AgentRefusal::Unauthenticated(
                "send `Authorization: Bearer <agent token>` (POST /v1/agent/session gives one)"
                    .into(),
            )
        })
}

async fn agent_nonce(State(state): State<AppState>) -> Answer {
    agent_answer(state.api.agent_nonce().await)
}

async fn agent_session(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let request: super::types::AgentSessionRequest = json_body(
        &bytes(body)?,
        "an agent's proof {\"document\", \"signature\", \"nonce\", \"nonce_signature\", \"agent_key\"}",
        None,
    )?;
    // The route takes no token, so a proof that does not hold is 403, not
    // 401 (which would ask for a bearer token).
    let result = state
        .api
        .agent_session(request)
        .await
        .map_err(|refusal| match refusal {
            crate::agent::AgentRefusal::Unauthenticated(m) => {
                crate::agent::AgentRefusal::Forbidden(m)
            }
            other => other,
        });
    agent_answer(result)
}

async fn agent_config(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Answer {
    let query = Query::parse(raw.as_deref(), &["after"])?;
    let token = match agent_token(&headers) {
        Ok(token) => token,
        Err(refusal) => return agent_answer::<()>(Err(refusal)),
    };
    // A held poll ends when the server shuts down (the agent asks again,
    // the next server), so a graceful shutdown never waits one out.
    let mut shutdown = state.shutdown.clone();
    tokio::select! {
        answer = state.api.agent_config(&token, query.text("after")) => agent_answer(answer),
        () = super::events::shutdown_signalled(&mut shutdown) => agent_answer::<()>(Err(
            crate::agent::AgentRefusal::Unavailable(
                "the controller is shutting down; ask again".into(),
            ),
        )),
    }
}

async fn agent_report(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let token = match agent_token(&headers) {
        Ok(token) => token,
        Err(refusal) => return agent_answer::<()>(Err(refusal)),
    };
    let report: super::types::AgentReport = json_body(
        &bytes(body)?,
        "a run's report {\"version\", \"report\"}",
        None,
    )?;
    agent_answer(state.api.agent_report(&token, report).await)
}
