//! Elastic Load Balancing v2's Query protocol (API `2015-12-01`) for the
//! subset endstate's rollouts speak: load balancers, target groups, targets
//! and their health, listeners with weighted forward actions — plus one
//! endstate extension, `DescribeTargetGroupRequestCounts` (a target group's
//! requests and 5xx answers over a recent window; the built-in cloud serves
//! it, AWS does not: there the figures live in CloudWatch).
//!
//! The data types here are shared by the client (`endstate-provider`'s
//! `elbv2`) and the built-in cloud's server, like [`crate::requests`] and
//! [`crate::responses`] are for EC2. No HTTP, no signing, no async.

/// The API version every ELBv2 request carries.
pub const ELBV2_API_VERSION: &str = "2015-12-01";
/// The namespace of every ELBv2 response document.
pub const ELBV2_XMLNS: &str = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/";
/// The SigV4 service name of ELBv2.
pub const ELBV2_SIGNING_NAME: &str = "elasticloadbalancing";

/// A load balancer (application type, HTTP only here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancer {
    pub arn: String,
    pub name: String,
    /// Where clients connect: on the built-in cloud a loopback address.
    pub dns_name: String,
    /// `provisioning`, `active`, `failed`.
    pub state: String,
    pub tags: Vec<(String, String)>,
}

/// A target group's health check, as ELBv2 states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroupHealthCheck {
    /// `HTTP` or `TCP`.
    pub protocol: String,
    /// `traffic-port` or a port number.
    pub port: String,
    /// For HTTP: the path probed (default `/`).
    pub path: Option<String>,
    pub interval_seconds: u32,
    pub timeout_seconds: u32,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// For HTTP: the `Matcher.HttpCode` (`200`, `200-299`, `200,204`).
    pub matcher: Option<String>,
}

/// A target group of instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroup {
    pub arn: String,
    pub name: String,
    /// `HTTP`.
    pub protocol: String,
    pub port: u16,
    pub vpc_id: Option<String>,
    pub health_check: TargetGroupHealthCheck,
    pub load_balancer_arns: Vec<String>,
    pub tags: Vec<(String, String)>,
}

/// A target: an instance id, and the port traffic goes to (the group's port
/// when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetDescription {
    pub id: String,
    pub port: Option<u16>,
}

/// One target's health in a target group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealthDescription {
    pub target: TargetDescription,
    /// `initial`, `healthy`, `unhealthy`, `unused`, `draining`, `unavailable`.
    pub state: String,
    /// ELBv2's reason code (`Elb.RegistrationInProgress`, `Target.Timeout`, ...).
    pub reason: Option<String>,
    pub description: Option<String>,
}

/// A target group in a forward action, with its relative weight (0..=999).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedTargetGroup {
    pub target_group_arn: String,
    pub weight: u32,
}

/// A listener's default action: forward to weighted target groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAction {
    pub target_groups: Vec<WeightedTargetGroup>,
}

/// A listener on a load balancer's port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub arn: String,
    pub load_balancer_arn: String,
    /// `HTTP`.
    pub protocol: String,
    pub port: u16,
    pub default_action: ForwardAction,
}

/// The endstate extension's answer: what a target group answered over the
/// last `window_seconds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroupRequestCounts {
    pub target_group_arn: String,
    pub window_seconds: u32,
    /// Requests answered (by a target, or by the balancer on its behalf).
    pub requests: u64,
    /// Of them, 5xx answers (the balancer's own 502/503 included).
    pub server_errors: u64,
}
