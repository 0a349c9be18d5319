//! What the controller shows the outside: groups, instances, events and
//! scaling activity as serializable views, and [`ControllerApi`], the one
//! interface the HTTP API ([`crate::api`]) serves. The controller implements
//! it; unit tests of the API use a fake.
//!
//! Views are plain data: no locks, no handles. Times are RFC 3339 strings,
//! as EC2 writes them.

use serde::{Deserialize, Serialize};

use crate::agent::AgentRefusal;
use crate::api::types::{
    AgentConfig, AgentReport, AgentReportAccepted, AgentSessionRequest, AgentSessionResponse,
    NonceResponse,
};

/// One group as the controller sees it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupView {
    pub name: String,
    /// The capacity the controller holds the group to now: the spec's,
    /// changed by scaling policies and scheduled actions.
    pub min: u32,
    pub desired: u32,
    pub max: u32,
    /// Instances pending or running.
    pub live: u32,
    pub healthy: u32,
    pub unhealthy: u32,
    /// Launched and not yet judged (in the grace period, or too few probes).
    pub initial: u32,
    /// Paused by a person (`POST /v1/groups/{group}/pause`): no reconcile
    /// acts on the group until it is resumed.
    pub paused: bool,
    /// Why replacement of unhealthy instances is held back by the
    /// correlated-failure brake, while it is.
    pub replacement_paused: Option<String>,
    /// Completed reconciles of this group since the controller started.
    pub reconciles: u64,
    /// When the last reconcile ended, and how.
    pub last_reconcile: Option<ReconcileView>,
}

/// The outcome of one reconcile of one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconcileView {
    /// Sequence number of the reconcile (per controller, all groups).
    pub id: u64,
    pub at: String,
    pub duration_ms: u64,
    /// What triggered it: `period`, `spec`, `health`, `scaling`, `api`, `retry`, ….
    pub trigger: String,
    pub launched: u32,
    pub terminated: u32,
    /// The error that ended it, if it failed (the loop retries with backoff).
    pub error: Option<String>,
}

/// One instance of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    pub id: String,
    pub group: String,
    /// EC2's state name: pending, running, stopping, ….
    pub state: String,
    pub zone: String,
    pub image_id: String,
    pub instance_type: String,
    pub private_ip: Option<String>,
    pub launch_time: String,
    /// `initial`, `healthy` or `unhealthy`.
    pub health: String,
    /// The reason of the last health transition.
    pub health_reason: Option<String>,
    /// Protected from scale-in (never chosen when the group shrinks).
    pub protected: bool,
    /// Last CPU utilization sample, percent of one core, when known.
    pub cpu: Option<f64>,
}

/// One recorded event: every action the controller takes, with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    /// Increasing, unique; the SSE stream's event id.
    pub seq: i64,
    pub at: String,
    /// The group it concerns; empty for controller-wide events.
    pub group: String,
    /// `reconcile_started`, `instance_unhealthy`, `replacement_launched`,
    /// `replacement_paused`, `scaled`, …
    pub kind: String,
    /// What it happened to: an instance id, the group, the spec hash.
    pub subject: String,
    /// Why, in a sentence.
    pub reason: String,
    /// Details by kind (instance ids, counts, the reconcile id, …).
    #[serde(default)]
    pub data: serde_json::Value,
}

/// One change of a group's desired capacity by a scaling policy or a
/// scheduled action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingActivityView {
    pub at: String,
    pub group: String,
    /// `target_tracking:cpu`, `step:requests`, `scheduled:evening`, `bounds`.
    pub policy: String,
    pub from: u32,
    pub to: u32,
    pub reason: String,
}

/// A group's rollout: the one in progress, or (`phase` `idle`) the
/// generation the group is at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutView {
    pub group: String,
    /// `idle`, `pending` (asked for, not started yet), or the phase in
    /// progress: `launching`, `waiting_healthy`, `canary`, `watching`,
    /// `keeping_old`, `scaling_down_old`, `rolling`, `rolling_watch`,
    /// `rolling_back`, `failed`.
    pub phase: String,
    /// `rolling` or `blue_green`.
    pub strategy: String,
    /// What started it: `spec`, `deploy`, `rollback`; `None` when idle.
    pub trigger: Option<String>,
    /// The generation rolled out from (`None` when idle).
    pub from: Option<String>,
    /// The generation rolled out to; when idle, the group's generation.
    pub to: String,
    /// The listener's weights by generation, as last set by the rollout.
    pub weights: std::collections::BTreeMap<String, u32>,
    pub started_at: Option<String>,
    /// When the listener's switch to `to` was acknowledged.
    pub switched_at: Option<String>,
    /// The kind of the rollout's last event.
    pub last_event: Option<String>,
    /// Why it failed, once it did.
    pub failure: Option<String>,
    /// After a rollback: the generation the group is pinned to until its
    /// spec changes or a deploy names another image.
    pub pinned: Option<String>,
    /// The image `deploy` set, while it lasts.
    pub deploy_image: Option<String>,
}

/// A metric sample, as `POST /v1/metrics` takes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    pub group: String,
    /// The instance it was measured on; `None` for a group-wide value
    /// (then it counts as every live instance's).
    #[serde(default)]
    pub instance: Option<String>,
    /// The metric's name, as scaling policies name it (`cpu`, `requests`, …).
    pub metric: String,
    pub value: f64,
}

/// The spec the controller works to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecView {
    pub project: String,
    pub environment: String,
    pub hash: String,
    /// Where it came from: the file's path, or `api`.
    pub source: String,
    pub loaded_at: String,
    pub groups: Vec<String>,
    /// Reconciles started before this spec was put in force: a group whose
    /// last reconcile has a larger id was planned with this spec (or a
    /// later one).
    pub reconcile_seq: u64,
}

/// A spec handed to the controller (`POST /v1/spec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecSubmission {
    /// The spec's YAML text.
    pub yaml: String,
    /// The environment overlay to apply (`-e`), if any.
    #[serde(default)]
    pub environment: Option<String>,
    /// The file it was read from, for error positions; `spec.yaml` if unset.
    #[serde(default)]
    pub file_name: Option<String>,
    /// Allow a plan that removes more than half of a group or a whole group.
    #[serde(default)]
    pub allow_mass_terminate: bool,
}

/// Why the controller refused a request. Maps to an HTTP status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 404: no such group or instance.
    #[error("{0}")]
    NotFound(String),
    /// 422: the input is wrong (a spec that does not validate: every
    /// diagnostic, one per line, `file:line:col: error: …`).
    #[error("{0}")]
    Invalid(String),
    /// 409: the request conflicts with the controller's state (a spec for
    /// another project, a plan needing consent that was not given).
    #[error("{0}")]
    Conflict(String),
    /// 500.
    #[error("{0}")]
    Internal(String),
}

/// What the HTTP API serves. Implemented by the controller.
#[async_trait::async_trait]
pub trait ControllerApi: Send + Sync + 'static {
    /// The spec in force.
    fn spec(&self) -> SpecView;
    fn groups(&self) -> Vec<GroupView>;
    fn group(&self, name: &str) -> Result<GroupView, ApiError>;
    /// Instances of one group, or of all.
    fn instances(&self, group: Option<&str>) -> Result<Vec<InstanceView>, ApiError>;
    /// The plan the controller would act on now (observes, then plans; acts
    /// on nothing).
    async fn plan(&self, group: Option<&str>) -> Result<endstate_plan::Plan, ApiError>;
    /// Recorded events with `seq > after`, oldest first, at most `limit`.
    fn events_after(
        &self,
        after: i64,
        limit: usize,
        group: Option<&str>,
    ) -> Result<Vec<EventView>, ApiError>;
    /// Every event recorded from now on, as it is recorded.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<EventView>;
    fn scaling_activity(&self, group: Option<&str>) -> Result<Vec<ScalingActivityView>, ApiError>;
    /// Stops acting on the group until [`ControllerApi::resume`].
    async fn pause(&self, group: &str, reason: &str) -> Result<GroupView, ApiError>;
    /// Undoes a pause, and releases the correlated-failure brake.
    async fn resume(&self, group: &str) -> Result<GroupView, ApiError>;
    /// Validates and adopts a new spec; reconciles every group at once.
    async fn submit_spec(&self, spec: SpecSubmission) -> Result<SpecView, ApiError>;
    /// Takes metric samples in; returns how many were accepted.
    async fn put_metrics(&self, samples: Vec<MetricSample>) -> Result<usize, ApiError>;
    /// Sets or clears an instance's scale-in protection.
    async fn set_protection(
        &self,
        group: &str,
        instance: &str,
        protected: bool,
    ) -> Result<InstanceView, ApiError>;
    /// Rolls the group out to `image` (an override of the spec's image,
    /// until the spec's group changes). Answers with the rollout's view.
    async fn deploy(&self, group: &str, image: &str) -> Result<RolloutView, ApiError>;
    /// During a rollout: back to the old generation at once. After one:
    /// a rollout back to the previous generation. Nothing to go back to:
    /// [`ApiError::Conflict`].
    async fn rollback(&self, group: &str) -> Result<RolloutView, ApiError>;
    /// The group's rollout now.
    fn rollout(&self, group: &str) -> Result<RolloutView, ApiError>;
    /// Whether `token` (the bearer token as sent) is a valid API token.
    fn verify_token(&self, token: &str) -> bool;
    /// The Prometheus text exposition of the controller's own metrics
    /// (reconcile durations, API calls and throttles by action, instances by
    /// group and state, health check results).
    fn prometheus(&self) -> String;

    // The agent routes ([`crate::agent`]); a controller without them
    // refuses every agent.

    /// A fresh single-use nonce for an agent's proof.
    async fn agent_nonce(&self) -> Result<NonceResponse, AgentRefusal> {
        Err(AgentRefusal::not_served())
    }
    /// Opens a session for the instance the request proves.
    async fn agent_session(
        &self,
        _request: AgentSessionRequest,
    ) -> Result<AgentSessionResponse, AgentRefusal> {
        Err(AgentRefusal::not_served())
    }
    /// The configuration of `token`'s instance; when `after` is its
    /// current version, waits (up to the long-poll limit) for another.
    async fn agent_config(
        &self,
        _token: &str,
        _after: Option<&str>,
    ) -> Result<AgentConfig, AgentRefusal> {
        Err(AgentRefusal::not_served())
    }
    /// Records a run's outcome as an event (counts, not content).
    async fn agent_report(
        &self,
        _token: &str,
        _report: AgentReport,
    ) -> Result<AgentReportAccepted, AgentRefusal> {
        Err(AgentRefusal::not_served())
    }
}
