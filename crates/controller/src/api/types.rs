//! The request and response bodies of the API that are not views of the
//! controller ([`crate::view`]): the error document, the small request
//! bodies, and the health summary built from groups and instances. Shared by
//! the server and [`crate::client`]. Plain data; no I/O.

use serde::{Deserialize, Serialize};

use crate::view::{GroupView, InstanceView, MetricSample};

/// Every error the API answers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthz {
    pub ok: bool,
}

/// `POST /v1/groups/{group}/pause`; the body may be absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/groups/{group}/deploy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The image to roll the group out to (`ami-…`).
    pub image: String,
}

/// `PUT /v1/groups/{group}/instances/{instance}/protection`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectionRequest {
    pub protected: bool,
}

/// `POST /v1/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsRequest {
    pub samples: Vec<MetricSample>,
}

/// The answer to `POST /v1/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsAccepted {
    pub accepted: usize,
}

/// One group's health (`GET /v1/health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHealth {
    pub group: String,
    pub healthy: u32,
    pub unhealthy: u32,
    pub initial: u32,
    /// Why replacement is held back by the correlated-failure brake.
    pub replacement_paused: Option<String>,
    pub unhealthy_instances: Vec<UnhealthyInstance>,
}

/// An instance judged unhealthy, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnhealthyInstance {
    pub id: String,
    pub reason: String,
}

/// The health of every group, from the groups and their instances, in the
/// order of `groups`.
pub fn health_report(groups: &[GroupView], instances: &[InstanceView]) -> Vec<GroupHealth> {
    groups
        .iter()
        .map(|group| GroupHealth {
            group: group.name.clone(),
            healthy: group.healthy,
            unhealthy: group.unhealthy,
            initial: group.initial,
            replacement_paused: group.replacement_paused.clone(),
            unhealthy_instances: instances
                .iter()
                .filter(|i| i.group == group.name && i.health == "unhealthy")
                .map(|i| UnhealthyInstance {
                    id: i.id.clone(),
                    reason: i.health_reason.clone().unwrap_or_default(),
                })
                .collect(),
        })
        .collect()
}

/// `POST /v1/agent/nonce`: a nonce to sign, single use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonceResponse {
    pub nonce: String,
    pub expires_in_seconds: u64,
}

/// `POST /v1/agent/session`: an instance's proof of identity (see
/// [`crate::agent`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSessionRequest {
    /// `instance-identity/document`, exactly as served.
    pub document: String,
    /// `instance-identity/signature`.
    pub signature: String,
    /// A nonce from `POST /v1/agent/nonce`.
    pub nonce: String,
    /// `instance-identity/nonce/<nonce>`.
    pub nonce_signature: String,
    /// The agent's own secret (at least 32 characters): the instance is
    /// bound to it on first use.
    pub agent_key: String,
}

/// The answer to `POST /v1/agent/session`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSessionResponse {
    /// `Authorization: Bearer <token>` for the agent routes; this
    /// instance's only.
    pub token: String,
    pub instance_id: String,
    pub group: String,
}

/// `GET /v1/agent/config`: the roles of the instance's group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentConfig {
    pub instance_id: String,
    pub group: String,
    /// The group's roles hash: `after=` of the next request.
    pub version: String,
    /// The roles in the order the group lists them, secrets resolved.
    pub roles: Vec<endstate_config::Role>,
    /// The secrets' values among the roles: the agent's report redacts
    /// them (they travel only to this instance, over this channel).
    #[serde(default)]
    pub redact: Vec<String>,
    /// Seconds until the agent should check in again (converge, and ask
    /// again if the server is away): server-assigned, jittered.
    pub check_in_seconds: f64,
}

/// `POST /v1/agent/report`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentReport {
    /// The configuration version the run converged.
    pub version: String,
    /// The engine's report (redacted by the engine).
    pub report: endstate_config::Report,
}

/// The answer to `POST /v1/agent/report`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReportAccepted {
    /// `config_converged` or `config_failed`.
    pub recorded: String,
}
