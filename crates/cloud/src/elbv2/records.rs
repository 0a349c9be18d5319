//! The ELBv2 state of the built-in cloud as records: load balancers,
//! target groups (with their registered targets and attributes) and
//! listeners, serialized whole as JSON into `cloud.db`; the ARNs and the
//! validation of names, ports and health checks; the translation of a
//! target group's health check into `endstate_health`'s.
//!
//! Pure: no sockets, no clock, no store (see `planes` and `mod`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use endstate_health::{ExpectedStatus, HealthCheck, ProbeTarget};
use endstate_wire::elbv2::{
    ForwardAction, Listener, LoadBalancer, TargetGroup, TargetGroupHealthCheck, WeightedTargetGroup,
};
use serde::{Deserialize, Serialize};

use super::Elbv2Error;

/// ELB's default deregistration delay, in seconds.
pub(crate) const DEFAULT_DELAY_SECONDS: u32 = 300;

/// Everything the ELBv2 API holds, by ARN.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) load_balancers: BTreeMap<String, LoadBalancerRecord>,
    pub(crate) target_groups: BTreeMap<String, TargetGroupRecord>,
    pub(crate) listeners: BTreeMap<String, ListenerRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LoadBalancerRecord {
    pub(crate) arn: String,
    pub(crate) name: String,
    /// The loopback address its listeners bind (`None` without data planes).
    pub(crate) address: Option<Ipv4Addr>,
    pub(crate) tags: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TargetGroupRecord {
    pub(crate) arn: String,
    pub(crate) name: String,
    pub(crate) port: u16,
    pub(crate) vpc_id: Option<String>,
    pub(crate) health_check: HealthCheckRecord,
    pub(crate) tags: Vec<(String, String)>,
    pub(crate) deregistration_delay_seconds: u32,
    /// By instance id.
    pub(crate) targets: BTreeMap<String, TargetRecord>,
}

/// A registered instance: where traffic goes, and the generation it is of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TargetRecord {
    pub(crate) port: u16,
    /// The instance's private address when it was registered; only a
    /// loopback one is probed and forwarded to.
    pub(crate) address: Option<IpAddr>,
    pub(crate) generation: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ListenerRecord {
    pub(crate) arn: String,
    pub(crate) load_balancer_arn: String,
    pub(crate) port: u16,
    /// (target group ARN, weight), in the order given.
    pub(crate) forward: Vec<(String, u32)>,
}

/// [`TargetGroupHealthCheck`] as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HealthCheckRecord {
    pub(crate) protocol: String,
    pub(crate) port: String,
    pub(crate) path: Option<String>,
    pub(crate) interval_seconds: u32,
    pub(crate) timeout_seconds: u32,
    pub(crate) healthy_threshold: u32,
    pub(crate) unhealthy_threshold: u32,
    pub(crate) matcher: Option<String>,
}

impl From<&TargetGroupHealthCheck> for HealthCheckRecord {
    fn from(h: &TargetGroupHealthCheck) -> Self {
        Self {
            protocol: h.protocol.to_ascii_uppercase(),
            port: h.port.clone(),
            path: h.path.clone(),
            interval_seconds: h.interval_seconds,
            timeout_seconds: h.timeout_seconds,
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
            matcher: h.matcher.clone(),
        }
    }
}

impl HealthCheckRecord {
    pub(crate) fn to_wire(&self) -> TargetGroupHealthCheck {
        TargetGroupHealthCheck {
            protocol: self.protocol.clone(),
            port: self.port.clone(),
            path: self.path.clone(),
            interval_seconds: self.interval_seconds,
            timeout_seconds: self.timeout_seconds,
            healthy_threshold: self.healthy_threshold,
            unhealthy_threshold: self.unhealthy_threshold,
            matcher: self.matcher.clone(),
        }
    }

    /// The `endstate_health` check that probes this group's targets: port 0
    /// stands for `traffic-port`; no grace period (ELB has none).
    ///
    /// The built-in cloud accepts intervals from 1 s (AWS: 5 s) and
    /// thresholds from 1 (AWS: 2) so that tests and benchmarks need not wait
    /// tens of seconds for a verdict; everything else is ELBv2's range.
    pub(crate) fn to_check(&self) -> Result<HealthCheck, Elbv2Error> {
        let invalid = |message: String| Err(Elbv2Error::ValidationError(message));
        let port = match self.port.as_str() {
            "traffic-port" | "" => 0,
            text => match text.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => {
                    return invalid(format!(
                    "HealthCheckPort: '{text}' is neither 'traffic-port' nor a port from 1 to 65535"
                ))
                }
            },
        };
        let probe = match self.protocol.as_str() {
            "HTTP" => {
                let path = self.path.clone().unwrap_or_else(|| "/".to_string());
                if !path.starts_with('/') || path.len() > 1024 {
                    return invalid(format!(
                        "HealthCheckPath: '{path}' must start with '/' and be at most 1024 characters"
                    ));
                }
                let matcher = self.matcher.as_deref().unwrap_or("200");
                let expected: ExpectedStatus = matcher.parse().map_err(|_| {
                    Elbv2Error::ValidationError(format!(
                        "Matcher.HttpCode: '{matcher}' is not a code, a range (200-299) or a list (200,204) of codes from 100 to 599"
                    ))
                })?;
                ProbeTarget::Http {
                    port,
                    path,
                    expected,
                }
            }
            "TCP" => ProbeTarget::Tcp { port },
            other => {
                return Err(Elbv2Error::UnsupportedProtocol(format!(
                    "HealthCheckProtocol: '{other}' is not supported here (HTTP, TCP)"
                )))
            }
        };
        let ranged = |field: &str, value: u32, low: u32, high: u32| {
            if (low..=high).contains(&value) {
                Ok(())
            } else {
                Err(Elbv2Error::ValidationError(format!(
                    "{field}: {value} is outside {low} to {high}"
                )))
            }
        };
        ranged("HealthCheckIntervalSeconds", self.interval_seconds, 1, 300)?;
        ranged("HealthCheckTimeoutSeconds", self.timeout_seconds, 1, 120)?;
        ranged("HealthyThresholdCount", self.healthy_threshold, 1, 10)?;
        ranged("UnhealthyThresholdCount", self.unhealthy_threshold, 1, 10)?;
        if self.timeout_seconds >= self.interval_seconds {
            return invalid(format!(
                "HealthCheckTimeoutSeconds: {} must be smaller than HealthCheckIntervalSeconds ({})",
                self.timeout_seconds, self.interval_seconds
            ));
        }
        let check = HealthCheck {
            probe,
            interval_seconds: u64::from(self.interval_seconds),
            timeout_seconds: u64::from(self.timeout_seconds),
            healthy_threshold: self.healthy_threshold,
            unhealthy_threshold: self.unhealthy_threshold,
            grace_period_seconds: 0,
        };
        check.validate().map_err(|errors| {
            Elbv2Error::ValidationError(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        Ok(check)
    }
}

/// Load balancer and target group names: 1 to 32 letters, digits and
/// hyphens, no hyphen first or last (ELBv2's rule); a load balancer's
/// may not start with `internal-`.
pub(crate) fn check_name(field: &str, name: &str) -> Result<(), Elbv2Error> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Elbv2Error::ValidationError(format!(
            "{field}: '{name}' must be 1 to 32 letters, digits and hyphens, not beginning or ending with a hyphen"
        )))
    }
}

/// A port of a listener, target group or target.
pub(crate) fn check_port(field: &str, port: u16) -> Result<(), Elbv2Error> {
    if port == 0 {
        return Err(Elbv2Error::ValidationError(format!(
            "{field}: 0 is outside 1 to 65535"
        )));
    }
    Ok(())
}

/// Weights of a forward action: 0 to 999 each, at most 5 groups, no group
/// twice (ELBv2's limits), at least one group.
pub(crate) fn check_forward(forward: &ForwardAction) -> Result<(), Elbv2Error> {
    let groups = &forward.target_groups;
    if groups.is_empty() || groups.len() > 5 {
        return Err(Elbv2Error::ValidationError(format!(
            "DefaultActions.member.1.ForwardConfig.TargetGroups: {} target groups; a forward action names 1 to 5",
            groups.len()
        )));
    }
    for (i, group) in groups.iter().enumerate() {
        if group.weight > 999 {
            return Err(Elbv2Error::ValidationError(format!(
                "DefaultActions.member.1.ForwardConfig.TargetGroups.member.{}.Weight: {} is outside 0 to 999",
                i + 1,
                group.weight
            )));
        }
        if groups[..i]
            .iter()
            .any(|g| g.target_group_arn == group.target_group_arn)
        {
            return Err(Elbv2Error::ValidationError(format!(
                "DefaultActions.member.1.ForwardConfig.TargetGroups.member.{}: target group '{}' is named twice",
                i + 1,
                group.target_group_arn
            )));
        }
    }
    Ok(())
}

/// 16 hex digits of randomness, as the last part of ELBv2's ARNs.
fn arn_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The ARN prefix of this region and account.
pub(crate) fn arn_prefix(region: &str, account: &str) -> String {
    format!("arn:aws:elasticloadbalancing:{region}:{account}")
}

pub(crate) fn load_balancer_arn(prefix: &str, name: &str) -> String {
    format!("{prefix}:loadbalancer/app/{name}/{}", arn_id())
}

pub(crate) fn target_group_arn(prefix: &str, name: &str) -> String {
    format!("{prefix}:targetgroup/{name}/{}", arn_id())
}

/// A listener's ARN extends its load balancer's (`loadbalancer/app/N/ID`
/// becomes `listener/app/N/ID/LID`).
pub(crate) fn listener_arn(load_balancer_arn: &str) -> String {
    let base = load_balancer_arn.replacen(":loadbalancer/", ":listener/", 1);
    format!("{base}/{}", arn_id())
}

impl LoadBalancerRecord {
    pub(crate) fn to_wire(&self) -> LoadBalancer {
        LoadBalancer {
            arn: self.arn.clone(),
            name: self.name.clone(),
            dns_name: self
                .address
                .map_or_else(|| format!("{}.elb.internal", self.name), |a| a.to_string()),
            state: "active".to_string(),
            tags: self.tags.clone(),
        }
    }
}

impl TargetGroupRecord {
    pub(crate) fn to_wire(&self, state: &State) -> TargetGroup {
        let mut load_balancer_arns: Vec<String> = state
            .listeners
            .values()
            .filter(|l| l.forward.iter().any(|(tg, _)| tg == &self.arn))
            .map(|l| l.load_balancer_arn.clone())
            .collect();
        load_balancer_arns.dedup();
        TargetGroup {
            arn: self.arn.clone(),
            name: self.name.clone(),
            protocol: "HTTP".to_string(),
            port: self.port,
            vpc_id: self.vpc_id.clone(),
            health_check: self.health_check.to_wire(),
            load_balancer_arns,
            tags: self.tags.clone(),
        }
    }
}

impl ListenerRecord {
    pub(crate) fn to_wire(&self) -> Listener {
        Listener {
            arn: self.arn.clone(),
            load_balancer_arn: self.load_balancer_arn.clone(),
            protocol: "HTTP".to_string(),
            port: self.port,
            default_action: ForwardAction {
                target_groups: self
                    .forward
                    .iter()
                    .map(|(arn, weight)| WeightedTargetGroup {
                        target_group_arn: arn.clone(),
                        weight: *weight,
                    })
                    .collect(),
            },
        }
    }
}

impl State {
    /// Whether any listener's forward action names the target group.
    pub(crate) fn is_forwarded_to(&self, target_group_arn: &str) -> bool {
        self.listeners
            .values()
            .any(|l| l.forward.iter().any(|(tg, _)| tg == target_group_arn))
    }
}
