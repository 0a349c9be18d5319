//! What a plan is: ordered phases of actions, each action with its reason,
//! plus what the plan saw (so a saved plan can refuse a changed world) and
//! what consent it needs. Serializable, so `plan --out` can save one and
//! `apply FILE` can run exactly that.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Launch `count` instances of `group` in `zone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    pub group: String,
    pub zone: String,
    pub subnet_id: Option<String>,
    pub count: u32,
    pub reason: LaunchReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LaunchReason {
    /// Fewer live instances than desired.
    BelowDesired { live: u32, desired: u32 },
    /// New instances that will take the place of outdated ones.
    Replacement { outdated: u32 },
}

/// Terminate one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminate {
    pub instance_id: String,
    /// The group the instance's tag names (which may be gone from the spec).
    pub group: String,
    pub zone: String,
    pub reason: TerminateReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TerminateReason {
    OverCapacity {
        live: u32,
        desired: u32,
    },
    WrongImage {
        has: String,
        wants: String,
    },
    WrongType {
        has: String,
        wants: Vec<String>,
    },
    WrongZone {
        has: String,
    },
    LaunchChanged,
    NotRunning {
        state: String,
    },
    NotInSpec,
    /// The controller found it unhealthy (`endstate serve`).
    Unhealthy {
        reason: String,
    },
    /// A scale-in chose it (`endstate serve`).
    ScaleIn {
        reason: String,
    },
}

/// Set and remove tags on instances that are otherwise as desired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retag {
    pub group: String,
    pub instance_ids: Vec<String>,
    pub set: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

/// Actions of one kind that may run together. Phases run in order; after a
/// launch phase the executor waits until the new instances run, after a
/// termination phase until the terminations were accepted, so that the
/// disruption budget holds at every moment in between.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", content = "actions", rename_all = "snake_case")]
pub enum Phase {
    Launch(Vec<Launch>),
    Terminate(Vec<Terminate>),
    Retag(Vec<Retag>),
}

impl Phase {
    /// Number of instances this phase touches.
    pub fn instance_count(&self) -> u32 {
        match self {
            Phase::Launch(launches) => launches.iter().map(|l| l.count).sum(),
            Phase::Terminate(terminations) => terminations.len() as u32,
            Phase::Retag(retags) => retags.iter().map(|r| r.instance_ids.len() as u32).sum(),
        }
    }
}

/// Why a plan needs `--allow-mass-terminate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConsentNeeded {
    /// The plan reduces a group by more than the allowed share.
    MassTerminate {
        group: String,
        terminating: u32,
        live: u32,
        limit_share: f64,
    },
    /// A group with live instances is no longer in the spec.
    GroupRemoved { group: String, live: u32 },
}

/// The per-group numbers a person reads first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub group: String,
    pub desired: u32,
    pub running: u32,
    pub pending: u32,
    /// Live instances that need replacing (image, type, zone, launch settings).
    pub outdated: u32,
    pub launch: u32,
    pub terminate: u32,
    pub retag: u32,
    /// False when the group is observed but gone from the spec.
    pub in_spec: bool,
}

/// The plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Format version of a saved plan.
    pub version: u32,
    pub project: String,
    pub environment: String,
    /// [`Spec::hash`](endstate_model::Spec) of the spec planned from.
    pub spec_hash: String,
    /// [`observed_fingerprint`](crate::observed_fingerprint) of what was seen.
    pub observed_fingerprint: String,
    pub groups: Vec<GroupSummary>,
    pub phases: Vec<Phase>,
    pub consent: Vec<ConsentNeeded>,
    /// Things the plan could not do and why (a replacement the budget
    /// blocks, ...).
    pub notes: Vec<String>,
}

/// The saved-plan format version this build writes and reads.
pub const PLAN_VERSION: u32 = 1;

impl Plan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.phases.is_empty()
    }

    /// Instances launched, terminated and retagged over all phases.
    pub fn totals(&self) -> (u32, u32, u32) {
        let mut totals = (0, 0, 0);
        for phase in &self.phases {
            match phase {
                Phase::Launch(_) => totals.0 += phase.instance_count(),
                Phase::Terminate(_) => totals.1 += phase.instance_count(),
                Phase::Retag(_) => totals.2 += phase.instance_count(),
            }
        }
        totals
    }
}

impl fmt::Display for LaunchReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LaunchReason::BelowDesired { live, desired } => {
                write!(f, "{live} of {desired} desired instances live")
            }
            LaunchReason::Replacement { outdated } => {
                write!(f, "replacing outdated instances ({outdated} left)")
            }
        }
    }
}

impl fmt::Display for TerminateReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TerminateReason::OverCapacity { live, desired } => {
                write!(f, "over capacity ({live} live, {desired} desired)")
            }
            TerminateReason::WrongImage { has, wants } => {
                write!(f, "wrong image ({has}, wants {wants})")
            }
            TerminateReason::WrongType { has, wants } => {
                write!(
                    f,
                    "wrong instance type ({has}, wants {})",
                    wants.join(" or ")
                )
            }
            TerminateReason::WrongZone { has } => write!(f, "zone {has} is no longer in the group"),
            TerminateReason::LaunchChanged => {
                f.write_str("launch settings changed (user data, network, volume or metadata)")
            }
            TerminateReason::NotRunning { state } => write!(f, "not running ({state})"),
            TerminateReason::NotInSpec => f.write_str("group is not in the spec"),
            TerminateReason::Unhealthy { reason } => write!(f, "unhealthy: {reason}"),
            TerminateReason::ScaleIn { reason } => write!(f, "scale-in: {reason}"),
        }
    }
}

impl fmt::Display for Launch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "group {}: launch {} in {}: {}",
            self.group, self.count, self.zone, self.reason
        )
    }
}

impl fmt::Display for Terminate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "group {}: terminate {} in {}: {}",
            self.group, self.instance_id, self.zone, self.reason
        )
    }
}

impl fmt::Display for Retag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "group {}: retag {} instances",
            self.group,
            self.instance_ids.len()
        )?;
        if !self.set.is_empty() {
            let keys: Vec<&str> = self.set.keys().map(String::as_str).collect();
            write!(f, ", set {}", keys.join(", "))?;
        }
        if !self.remove.is_empty() {
            write!(f, ", remove {}", self.remove.join(", "))?;
        }
        Ok(())
    }
}

impl fmt::Display for ConsentNeeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsentNeeded::MassTerminate {
                group,
                terminating,
                live,
                limit_share,
            } => write!(
                f,
                "group {group}: the plan removes {terminating} of {live} live instances, more than {:.0}%",
                limit_share * 100.0
            ),
            ConsentNeeded::GroupRemoved { group, live } => write!(
                f,
                "group {group} is gone from the spec: the plan terminates all {live} of its instances"
            ),
        }
    }
}
