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
