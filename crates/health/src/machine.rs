//! One instance's health as a pure state machine: `Initial`, then `Healthy`
//! or `Unhealthy` by consecutive probe results, and EC2's own view (instance
//! state and status checks) on top.
//!
//! Rules, as an ELB target group and Auto Scaling apply them: the healthy
//! threshold of successes in a row makes an instance healthy, the unhealthy
//! threshold of failures in a row makes it unhealthy; failures within the
//! grace period after launch are not counted; an instance not running
//! (stopping, stopped, shutting down, terminated) is unhealthy at once, grace
//! or not; an `impaired` status check makes it unhealthy once the grace
//! period is over. An unhealthy instance becomes healthy again after the
//! healthy threshold of successes once EC2 no longer calls it unhealthy
//! (replacing it is [`crate::replace`]'s decision, not this machine's).
//!
//! No clock is read here: every input carries its time (since the Unix
//! epoch) and every transition comes out as an [`Event`] with its reason.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::HealthCheck;
use crate::event::{Event, EventKind};
use crate::probe::{ProbeFailure, ProbeResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Launched, not yet judged.
    Initial,
    Healthy,
    Unhealthy,
}

/// EC2's instance state (`DescribeInstances`' `instanceState.name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ec2State {
    Pending,
    Running,
    ShuttingDown,
    Terminated,
    Stopping,
    Stopped,
}

/// EC2's instance status check (`DescribeInstanceStatus`' `instanceStatus.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ec2Status {
    Ok,
    Impaired,
    Initializing,
    InsufficientData,
    NotApplicable,
}

/// The health of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceHealth {
    instance: String,
    launched_at: Duration,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    grace: Duration,
    status: HealthStatus,
    successes: u32,
    failures: u32,
    /// EC2's reason this instance is unhealthy, while it says so.
    ec2_unhealthy: Option<String>,
}

impl InstanceHealth {
    /// An instance launched at `launched_at`, judged by `check`.
    pub fn new(instance: impl Into<String>, launched_at: Duration, check: &HealthCheck) -> Self {
        Self {
            instance: instance.into(),
            launched_at,
            healthy_threshold: check.healthy_threshold.max(1),
            unhealthy_threshold: check.unhealthy_threshold.max(1),
            grace: check.grace_period(),
            status: HealthStatus::Initial,
            successes: 0,
            failures: 0,
            ec2_unhealthy: None,
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn status(&self) -> HealthStatus {
        self.status
    }

    /// EC2's reason this instance is unhealthy, while EC2 says so (a status
    /// check that recovered, or a started instance, clears it).
    pub fn ec2_verdict(&self) -> Option<&str> {
        self.ec2_unhealthy.as_deref()
    }

    /// Failed probes in a row that counted towards the unhealthy threshold.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// The failures in a row that make this instance unhealthy.
    pub fn unhealthy_threshold(&self) -> u32 {
        self.unhealthy_threshold
    }

    pub fn launched_at(&self) -> Duration {
        self.launched_at
    }

    /// Whether `at` is within the grace period after launch.
    pub fn in_grace(&self, at: Duration) -> bool {
        at < self.launched_at.saturating_add(self.grace)
    }

    /// Takes in one probe result obtained at `at`.
    pub fn observe_probe(&mut self, at: Duration, result: &ProbeResult) -> Option<Event> {
        match result {
            ProbeResult::Ok => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                if self.status != HealthStatus::Healthy
                    && self.ec2_unhealthy.is_none()
                    && self.successes >= self.healthy_threshold
                {
                    let n = self.successes;
                    return Some(self.transition(
                        at,
                        HealthStatus::Healthy,
                        format!("healthy after {n} consecutive successful probes"),
                    ));
                }
                None
            }
            ProbeResult::Failed(failure) => {
                self.successes = 0;
                if self.in_grace(at) {
                    // As Auto Scaling: the grace period lets an instance boot
                    // without its failed checks counting against it.
                    self.failures = 0;
                    return None;
                }
                self.failures = self.failures.saturating_add(1);
                if self.status != HealthStatus::Unhealthy
                    && self.failures >= self.unhealthy_threshold
                {
                    let n = self.failures;
                    return Some(self.transition(
                        at,
                        HealthStatus::Unhealthy,
                        failed_reason(n, failure),
                    ));
                }
                None
            }
        }
    }

    /// Takes in EC2's view of the instance at `at`. `status` is `None` when
    /// `DescribeInstanceStatus` had nothing for it.
    pub fn observe_ec2(
        &mut self,
        at: Duration,
        state: Ec2State,
        status: Option<Ec2Status>,
    ) -> Option<Event> {
        let verdict = match (state, status) {
            (Ec2State::Pending | Ec2State::Running, Some(Ec2Status::Impaired)) => {
                if self.in_grace(at) {
                    None
                } else {
                    Some("EC2 instance status check impaired".to_string())
                }
            }
            (Ec2State::Pending | Ec2State::Running, _) => None,
            (other, _) => Some(format!("EC2 instance state is {}", state_name(other))),
        };
        match verdict {
            Some(reason) => {
                self.ec2_unhealthy = Some(reason.clone());
                self.successes = 0;
                if self.status != HealthStatus::Unhealthy {
                    return Some(self.transition(
                        at,
                        HealthStatus::Unhealthy,
                        format!("unhealthy: {reason}"),
                    ));
                }
                None
            }
            None => {
                self.ec2_unhealthy = None;
                None
            }
        }
    }

    fn transition(&mut self, at: Duration, to: HealthStatus, reason: String) -> Event {
        self.status = to;
        Event {
            at,
            subject: self.instance.clone(),
            kind: match to {
                HealthStatus::Unhealthy => EventKind::InstanceUnhealthy,
                _ => EventKind::InstanceHealthy,
            },
            reason,
        }
    }
}

fn failed_reason(n: u32, failure: &ProbeFailure) -> String {
    let probes = if n == 1 { "probe" } else { "probes" };
    if n == 1 {
        format!("unhealthy after 1 failed {probes} ({failure})")
    } else {
        format!("unhealthy after {n} consecutive failed {probes} ({failure})")
    }
}

fn state_name(state: Ec2State) -> &'static str {
    match state {
        Ec2State::Pending => "pending",
        Ec2State::Running => "running",
        Ec2State::ShuttingDown => "shutting-down",
        Ec2State::Terminated => "terminated",
        Ec2State::Stopping => "stopping",
        Ec2State::Stopped => "stopped",
    }
}

#[cfg(test)]
mod tests;
