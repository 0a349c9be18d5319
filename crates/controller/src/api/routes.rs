//! The route table: every route of the API, once — its method, path
//! template, whether it needs the bearer token, and the [`Endpoint`] that
//! answers it. The router is built from this table and the OpenAPI test
//! compares the checked-in document with it. Handlers are not here.

/// An HTTP method the API answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    Get,
    Post,
    Put,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Put => "PUT",
        }
    }
}

/// What a route does: a closed set, one handler each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Healthz,
    OpenApi,
    Prometheus,
    SpecGet,
    SpecSubmit,
    Groups,
    Group,
    Pause,
    Resume,
    Instances,
    GroupInstances,
    Protection,
    Health,
    Plan,
    Events,
    EventStream,
    Scaling,
    Metrics,
    Deploy,
    Rollback,
    Rollout,
    AgentNonce,
    AgentSession,
    AgentConfig,
    AgentReport,
}

/// One route of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub verb: Verb,
    /// axum's path template (`{name}` for a parameter), as OpenAPI writes it.
    pub path: &'static str,
    /// Requires `Authorization: Bearer <token>` with an API token. (The
    /// agent routes are `false`: they check an agent's token themselves.)
    pub auth: bool,
    /// Requires `Authorization: Bearer <token>` with an *agent's* token
    /// (from `POST /v1/agent/session`), which the handler checks.
    pub agent_token: bool,
    pub endpoint: Endpoint,
}

const fn route(verb: Verb, path: &'static str, auth: bool, endpoint: Endpoint) -> Route {
    Route {
        verb,
        path,
        auth,
        agent_token: false,
        endpoint,
    }
}

/// A route of `endstate agent`: no API token; `agent_token` when it needs
/// the token of an agent's session.
const fn agent_route(
    verb: Verb,
    path: &'static str,
    agent_token: bool,
    endpoint: Endpoint,
) -> Route {
    Route {
        verb,
        path,
        auth: false,
        agent_token,
        endpoint,
    }
}

/// Every route of the API.
pub const ROUTES: &[Route] = &[
    route(Verb::Get, "/healthz", false, Endpoint::Healthz),
    route(Verb::Get, "/openapi.json", false, Endpoint::OpenApi),
    route(Verb::Get, "/metrics", true, Endpoint::Prometheus),
    route(Verb::Get, "/v1/spec", true, Endpoint::SpecGet),
    route(Verb::Post, "/v1/spec", true, Endpoint::SpecSubmit),
    route(Verb::Get, "/v1/groups", true, Endpoint::Groups),
    route(Verb::Get, "/v1/groups/{group}", true, Endpoint::Group),
    route(
        Verb::Post,
        "/v1/groups/{group}/pause",
        true,
        Endpoint::Pause,
    ),
    route(
        Verb::Post,
        "/v1/groups/{group}/resume",
        true,
        Endpoint::Resume,
    ),
    route(Verb::Get, "/v1/instances", true, Endpoint::Instances),
    route(
        Verb::Get,
        "/v1/groups/{group}/instances",
        true,
        Endpoint::GroupInstances,
    ),
    route(
        Verb::Put,
        "/v1/groups/{group}/instances/{instance}/protection",
        true,
        Endpoint::Protection,
    ),
    route(Verb::Get, "/v1/health", true, Endpoint::Health),
    route(Verb::Get, "/v1/plan", true, Endpoint::Plan),
    route(Verb::Get, "/v1/events", true, Endpoint::Events),
    route(Verb::Get, "/v1/events/stream", true, Endpoint::EventStream),
    route(Verb::Get, "/v1/scaling", true, Endpoint::Scaling),
    route(Verb::Post, "/v1/metrics", true, Endpoint::Metrics),
    route(
        Verb::Post,
        "/v1/groups/{group}/deploy",
        true,
        Endpoint::Deploy,
    ),
    route(
        Verb::Post,
        "/v1/groups/{group}/rollback",
        true,
        Endpoint::Rollback,
    ),
    route(
        Verb::Get,
        "/v1/groups/{group}/rollout",
        true,
        Endpoint::Rollout,
    ),
    // `endstate agent`: no API token; a session is opened with an
    // instance's proof and its token is checked by the handlers.
    agent_route(Verb::Post, "/v1/agent/nonce", false, Endpoint::AgentNonce),
    agent_route(
        Verb::Post,
        "/v1/agent/session",
        false,
        Endpoint::AgentSession,
    ),
    agent_route(Verb::Get, "/v1/agent/config", true, Endpoint::AgentConfig),
    agent_route(Verb::Post, "/v1/agent/report", true, Endpoint::AgentReport),
];
