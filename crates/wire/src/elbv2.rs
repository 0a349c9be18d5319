//! Elastic Load Balancing v2's Query protocol (API `2015-12-01`) for the
//! subset endstate's rollouts speak: load balancers, target groups, targets
//! and their health, listeners with weighted forward actions — plus one
//! endstate extension, `DescribeTargetGroupRequestCounts` (a target group's
//! requests and 5xx answers over a recent window; the built-in cloud serves
//! it, AWS does not: there the figures live in CloudWatch).
//!
//! The data types here are shared by the client (`endstate-provider`'s
//! `elbv2`) and the built-in cloud's server, like [`crate::requests`] and
//! [`crate::responses`] are for EC2: request structs to and from form
//! parameters ([`Elbv2Action`], [`Elbv2Request`] for a server's dispatch),
//! response structs to and from ELBv2's XML documents (the
//! [`Response`] trait, `<XResponse><XResult>…</XResult><ResponseMetadata>`),
//! and ELBv2's error document ([`Elbv2ErrorResponse`], which is not EC2's).
//! No HTTP, no signing, no async.
//!
//! Decoding checks structure only (names, numbers, the one forward action
//! we support); ELBv2's semantic rules (weights 0..=999, names of 32
//! characters) are the server's. Parameters an action does not take are
//! rejected, not ignored. Two liberties, both ignored by AWS SDKs: the
//! load balancer and target group members carry a `<Tags>` list (ELBv2
//! itself keeps tags behind DescribeTags), so tags read from AWS or moto are
//! empty; and the health check of a created target group is decoded with
//! ELBv2's documented defaults filled in
//! ([`TargetGroupHealthCheck::defaults`]).

use roxmltree::Node;

use crate::error::{ErrorDetail, WireError};
use crate::form::Params;
use crate::responses::Response;
use crate::xml::{self, XmlWriter};

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

/// The target group attribute that holds the deregistration delay.
pub const DEREGISTRATION_DELAY_ATTRIBUTE: &str = "deregistration_delay.timeout_seconds";

impl TargetGroupHealthCheck {
    /// ELBv2's documented defaults for a target group whose health checks
    /// use `protocol`: for `HTTP`, path `/`, matcher `200`, every 30 s with
    /// a 5 s timeout; for anything else (`TCP`), no path or matcher and a
    /// 10 s timeout; 5 successes make a target healthy, 2 failures
    /// unhealthy; the traffic port.
    pub fn defaults(protocol: &str) -> Self {
        let http = protocol.eq_ignore_ascii_case("HTTP") || protocol.eq_ignore_ascii_case("HTTPS");
        Self {
            protocol: protocol.to_string(),
            port: "traffic-port".to_string(),
            path: http.then(|| "/".to_string()),
            interval_seconds: 30,
            timeout_seconds: if http { 5 } else { 10 },
            healthy_threshold: 5,
            unhealthy_threshold: 2,
            matcher: http.then(|| "200".to_string()),
        }
    }
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// An ELBv2 request struct: its action name and its form parameters, both
/// ways. Like [`crate::Request`] for EC2, with ELBv2's API version.
pub trait Elbv2Action: Sized {
    /// The `Action` parameter.
    const ACTION: &'static str;

    /// The first segments of the parameter names the action takes.
    const PARAMETERS: &'static [&'static str];

    /// The action's own parameters, without `Action` and `Version`.
    fn write_params(&self, params: &mut Params);

    /// Reads the action's own parameters (`Action` and `Version` already
    /// checked).
    fn read_params(params: &Params) -> Result<Self, WireError>;

    /// All parameters, `Action` and `Version` included: what a client sends.
    fn to_params(&self) -> Params {
        let mut params = Params::new();
        params.insert("Action", Self::ACTION);
        params.insert("Version", ELBV2_API_VERSION);
        self.write_params(&mut params);
        params
    }

    /// Parses a request of this action from its parameters.
    fn from_params(params: &Params) -> Result<Self, WireError> {
        let action = params.require("Action")?;
        if action != Self::ACTION {
            return Err(WireError::InvalidParameterValue {
                name: "Action".to_string(),
                reason: format!("expected {}, got {action}", Self::ACTION),
            });
        }
        check_version(params)?;
        let mut known = vec!["Action", "Version"];
        known.extend_from_slice(Self::PARAMETERS);
        params.reject_unknown(&known)?;
        Self::read_params(params)
    }
}

fn check_version(params: &Params) -> Result<(), WireError> {
    match params.get("Version") {
        None => Err(WireError::MissingParameter("Version".to_string())),
        Some(ELBV2_API_VERSION) => Ok(()),
        Some(other) => Err(WireError::InvalidParameterValue {
            name: "Version".to_string(),
            reason: format!(
                "unsupported API version {other}; this endpoint speaks {ELBV2_API_VERSION}"
            ),
        }),
    }
}

/// CreateLoadBalancer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateLoadBalancerRequest {
    pub name: String,
    /// `Subnets.member.N`.
    pub subnets: Vec<String>,
    /// `SecurityGroups.member.N`.
    pub security_groups: Vec<String>,
    /// `internet-facing` or `internal`.
    pub scheme: Option<String>,
    /// `Type`: `application` (the default), `network`, `gateway`.
    pub load_balancer_type: Option<String>,
    pub ip_address_type: Option<String>,
    /// `Tags.member.N.Key` / `.Value`.
    pub tags: Vec<(String, String)>,
}

/// DescribeLoadBalancers: by ARN, by name, or all, in pages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeLoadBalancersRequest {
    pub load_balancer_arns: Vec<String>,
    pub names: Vec<String>,
    pub marker: Option<String>,
    pub page_size: Option<u32>,
}

/// DeleteLoadBalancer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteLoadBalancerRequest {
    pub load_balancer_arn: String,
}

/// CreateTargetGroup. Health check parameters absent from a request decode
/// as [`TargetGroupHealthCheck::defaults`] for the health check protocol
/// (which defaults to the group's protocol, then `HTTP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTargetGroupRequest {
    pub name: String,
    pub protocol: Option<String>,
    pub port: Option<u16>,
    pub vpc_id: Option<String>,
    /// `instance` (the default), `ip`, `lambda`, `alb`.
    pub target_type: Option<String>,
    pub health_check: TargetGroupHealthCheck,
    pub tags: Vec<(String, String)>,
}

/// DescribeTargetGroups: of a load balancer, by ARN, by name, or all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeTargetGroupsRequest {
    pub load_balancer_arn: Option<String>,
    pub target_group_arns: Vec<String>,
    pub names: Vec<String>,
    pub marker: Option<String>,
    pub page_size: Option<u32>,
}

/// DeleteTargetGroup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteTargetGroupRequest {
    pub target_group_arn: String,
}

/// ModifyTargetGroupAttributes: `Attributes.member.N.Key` / `.Value`
/// (for endstate, [`DEREGISTRATION_DELAY_ATTRIBUTE`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModifyTargetGroupAttributesRequest {
    pub target_group_arn: String,
    pub attributes: Vec<(String, String)>,
}

/// RegisterTargets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegisterTargetsRequest {
    pub target_group_arn: String,
    /// `Targets.member.N.Id` / `.Port`.
    pub targets: Vec<TargetDescription>,
}

/// DeregisterTargets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeregisterTargetsRequest {
    pub target_group_arn: String,
    pub targets: Vec<TargetDescription>,
}

/// DescribeTargetHealth: of the named targets, or of all when none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeTargetHealthRequest {
    pub target_group_arn: String,
    pub targets: Vec<TargetDescription>,
}

/// CreateListener with one forward action
/// (`DefaultActions.member.1.Type=forward` and its `ForwardConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateListenerRequest {
    pub load_balancer_arn: String,
    pub protocol: Option<String>,
    pub port: Option<u16>,
    pub default_action: ForwardAction,
    pub tags: Vec<(String, String)>,
}

/// DescribeListeners: of a load balancer, or by ARN.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeListenersRequest {
    pub load_balancer_arn: Option<String>,
    pub listener_arns: Vec<String>,
    pub marker: Option<String>,
    pub page_size: Option<u32>,
}

/// ModifyListener: fields left `None` keep their value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModifyListenerRequest {
    pub listener_arn: String,
    pub protocol: Option<String>,
    pub port: Option<u16>,
    pub default_action: Option<ForwardAction>,
}

/// DescribeTargetGroupRequestCounts: **an endstate extension, not an ELBv2
/// action.** What a target group answered over the last `window_seconds`;
/// the built-in cloud serves it, AWS (whose figures live in CloudWatch) and
/// moto answer `InvalidAction`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeTargetGroupRequestCountsRequest {
    pub target_group_arn: String,
    pub window_seconds: u32,
}

/// Any ELBv2 request endstate speaks: what a server dispatches on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elbv2Request {
    CreateLoadBalancer(CreateLoadBalancerRequest),
    DescribeLoadBalancers(DescribeLoadBalancersRequest),
    DeleteLoadBalancer(DeleteLoadBalancerRequest),
    CreateTargetGroup(CreateTargetGroupRequest),
    DescribeTargetGroups(DescribeTargetGroupsRequest),
    DeleteTargetGroup(DeleteTargetGroupRequest),
    ModifyTargetGroupAttributes(ModifyTargetGroupAttributesRequest),
    RegisterTargets(RegisterTargetsRequest),
    DeregisterTargets(DeregisterTargetsRequest),
    DescribeTargetHealth(DescribeTargetHealthRequest),
    CreateListener(CreateListenerRequest),
    DescribeListeners(DescribeListenersRequest),
    ModifyListener(ModifyListenerRequest),
    /// endstate's extension (not ELBv2's): see the request type.
    DescribeTargetGroupRequestCounts(DescribeTargetGroupRequestCountsRequest),
}

/// Calls `$m!(Variant, RequestType)` for every ELBv2 action, so that the
/// dispatch tables below cannot forget one.
macro_rules! for_each_elbv2_action {
    ($m:ident) => {
        $m! {
            CreateLoadBalancer(CreateLoadBalancerRequest),
            DescribeLoadBalancers(DescribeLoadBalancersRequest),
            DeleteLoadBalancer(DeleteLoadBalancerRequest),
            CreateTargetGroup(CreateTargetGroupRequest),
            DescribeTargetGroups(DescribeTargetGroupsRequest),
            DeleteTargetGroup(DeleteTargetGroupRequest),
            ModifyTargetGroupAttributes(ModifyTargetGroupAttributesRequest),
            RegisterTargets(RegisterTargetsRequest),
            DeregisterTargets(DeregisterTargetsRequest),
            DescribeTargetHealth(DescribeTargetHealthRequest),
            CreateListener(CreateListenerRequest),
            DescribeListeners(DescribeListenersRequest),
            ModifyListener(ModifyListenerRequest),
            DescribeTargetGroupRequestCounts(DescribeTargetGroupRequestCountsRequest),
        }
    };
}

macro_rules! elbv2_request_impl {
    ($($variant:ident($ty:ident)),* $(,)?) => {
        impl Elbv2Request {
            /// Parses any supported action from its form parameters; an
            /// unknown `Action` is `InvalidAction`.
            pub fn from_params(params: &Params) -> Result<Self, WireError> {
                match params.require("Action")? {
                    $($ty::ACTION => Ok(Elbv2Request::$variant($ty::from_params(params)?)),)*
                    other => Err(WireError::InvalidAction(other.to_string())),
                }
            }

            /// The action name.
            pub fn action(&self) -> &'static str {
                match self {
                    $(Elbv2Request::$variant(_) => $ty::ACTION,)*
                }
            }

            /// The form parameters, `Action` and `Version` included.
            pub fn to_params(&self) -> Params {
                match self {
                    $(Elbv2Request::$variant(r) => r.to_params(),)*
                }
            }

            /// Whether `action` names an ELBv2 action endstate speaks: how a
            /// server that serves EC2 and ELBv2 on one URL tells them apart.
            pub fn is_elbv2_action(action: &str) -> bool {
                matches!(action, $($ty::ACTION)|*)
            }
        }
    };
}

for_each_elbv2_action!(elbv2_request_impl);

impl Elbv2Request {
    /// Parses a form body.
    pub fn from_form(body: &str) -> Result<Self, WireError> {
        Self::from_params(&Params::from_form(body)?)
    }
}

fn owned(value: Option<&str>) -> Option<String> {
    value.map(str::to_string)
}

fn get_u16(p: &Params, name: &str) -> Result<Option<u16>, WireError> {
    p.get_u32(name)?
        .map(|v| {
            u16::try_from(v).map_err(|_| WireError::InvalidParameterValue {
                name: name.to_string(),
                reason: format!("{v} is not a port (1..=65535)"),
            })
        })
        .transpose()
}

/// `prefix.member.1`, `prefix.member.2`, ...: ELBv2's lists.
fn write_members<S: AsRef<str>>(p: &mut Params, prefix: &str, values: &[S]) {
    p.insert_list(&format!("{prefix}.member"), values);
}

fn read_members(p: &Params, prefix: &str) -> Result<Vec<String>, WireError> {
    p.list(&format!("{prefix}.member"))
}

/// `prefix.member.N.Key` / `.Value` (tags, attributes).
fn write_pairs(p: &mut Params, prefix: &str, pairs: &[(String, String)]) {
    for (i, (key, value)) in pairs.iter().enumerate() {
        p.insert(format!("{prefix}.member.{}.Key", i + 1), key.as_str());
        p.insert(format!("{prefix}.member.{}.Value", i + 1), value.as_str());
    }
}

/// Reads what [`write_pairs`] writes; a missing `Value` reads as "".
fn read_pairs(p: &Params, prefix: &str) -> Result<Vec<(String, String)>, WireError> {
    let members = format!("{prefix}.member");
    p.indices(&members)?
        .into_iter()
        .map(|n| {
            Ok((
                p.require(&format!("{members}.{n}.Key"))?.to_string(),
                p.get(&format!("{members}.{n}.Value"))
                    .unwrap_or("")
                    .to_string(),
            ))
        })
        .collect()
}

/// `Targets.member.N.Id` / `.Port`.
fn write_targets(p: &mut Params, targets: &[TargetDescription]) {
    for (i, target) in targets.iter().enumerate() {
        p.insert(format!("Targets.member.{}.Id", i + 1), target.id.as_str());
        p.insert_opt(
            format!("Targets.member.{}.Port", i + 1),
            target.port.map(|port| port.to_string()),
        );
    }
}

fn read_targets(p: &Params) -> Result<Vec<TargetDescription>, WireError> {
    p.indices("Targets.member")?
        .into_iter()
        .map(|n| {
            Ok(TargetDescription {
                id: p.require(&format!("Targets.member.{n}.Id"))?.to_string(),
                port: get_u16(p, &format!("Targets.member.{n}.Port"))?,
            })
        })
        .collect()
}

/// The only default action written: `DefaultActions.member.1.Type=forward`
/// with `ForwardConfig.TargetGroups.member.N.TargetGroupArn` / `.Weight`.
fn write_default_action(p: &mut Params, action: &ForwardAction) {
    let prefix = "DefaultActions.member.1";
    p.insert(format!("{prefix}.Type"), "forward");
    for (i, tg) in action.target_groups.iter().enumerate() {
        let member = format!("{prefix}.ForwardConfig.TargetGroups.member.{}", i + 1);
        p.insert(
            format!("{member}.TargetGroupArn"),
            tg.target_group_arn.as_str(),
        );
        p.insert(format!("{member}.Weight"), tg.weight.to_string());
    }
}

/// Reads the default action: none, or exactly one `forward`, in its
/// weighted form (`ForwardConfig`; a weight left out is 1) or its legacy
/// single form (`DefaultActions.member.1.TargetGroupArn`, weight 1).
fn read_default_action(p: &Params) -> Result<Option<ForwardAction>, WireError> {
    for (key, _) in p.iter() {
        if key.starts_with("DefaultActions.") && !key.starts_with("DefaultActions.member.") {
            return Err(WireError::UnknownParameter(key.to_string()));
        }
    }
    let indices = p.indices("DefaultActions.member")?;
    match indices.as_slice() {
        [] => Ok(None),
        [1] => read_forward(p, "DefaultActions.member.1").map(Some),
        _ => Err(WireError::InvalidParameterValue {
            name: "DefaultActions".to_string(),
            reason: "exactly one default action, of type forward, is supported".to_string(),
        }),
    }
}

fn read_forward(p: &Params, prefix: &str) -> Result<ForwardAction, WireError> {
    let type_name = format!("{prefix}.Type");
    let kind = p.require(&type_name)?;
    if kind != "forward" {
        return Err(WireError::InvalidParameterValue {
            name: type_name,
            reason: format!("only forward actions are supported, got {kind:?}"),
        });
    }
    let dotted = format!("{prefix}.");
    let groups = format!("{prefix}.ForwardConfig.TargetGroups.member");
    for (key, value) in p.iter() {
        let Some(rest) = key.strip_prefix(&dotted) else {
            continue;
        };
        let known = match rest {
            "Type" | "TargetGroupArn" | "Order" => true,
            // Stickiness off is what we do anyway; on is not supported.
            "ForwardConfig.TargetGroupStickinessConfig.Enabled" => {
                value.eq_ignore_ascii_case("false")
            }
            _ => rest
                .strip_prefix("ForwardConfig.TargetGroups.member.")
                .and_then(|r| r.split_once('.'))
                .is_some_and(|(_, field)| matches!(field, "TargetGroupArn" | "Weight")),
        };
        if !known {
            return Err(WireError::UnknownParameter(key.to_string()));
        }
    }
    let legacy_name = format!("{prefix}.TargetGroupArn");
    let legacy = p.get(&legacy_name);
    let indices = p.indices(&groups)?;
    let target_groups = if indices.is_empty() {
        let arn = legacy
            .ok_or_else(|| WireError::MissingParameter(format!("{groups}.1.TargetGroupArn")))?;
        vec![WeightedTargetGroup {
            target_group_arn: arn.to_string(),
            weight: 1,
        }]
    } else {
        indices
            .into_iter()
            .map(|n| {
                Ok(WeightedTargetGroup {
                    target_group_arn: p
                        .require(&format!("{groups}.{n}.TargetGroupArn"))?
                        .to_string(),
                    weight: p.get_u32(&format!("{groups}.{n}.Weight"))?.unwrap_or(1),
                })
            })
            .collect::<Result<Vec<_>, WireError>>()?
    };
    if let Some(arn) = legacy {
        if !target_groups.iter().any(|tg| tg.target_group_arn == arn) {
            return Err(WireError::InvalidParameterValue {
                name: legacy_name,
                reason: "names a target group that ForwardConfig does not".to_string(),
            });
        }
    }
    Ok(ForwardAction { target_groups })
}

/// The health check parameters of CreateTargetGroup, all written.
fn write_health_check(p: &mut Params, hc: &TargetGroupHealthCheck) {
    p.insert("HealthCheckProtocol", hc.protocol.as_str());
    p.insert("HealthCheckPort", hc.port.as_str());
    p.insert_opt("HealthCheckPath", hc.path.as_deref());
    p.insert(
        "HealthCheckIntervalSeconds",
        hc.interval_seconds.to_string(),
    );
    p.insert("HealthCheckTimeoutSeconds", hc.timeout_seconds.to_string());
    p.insert("HealthyThresholdCount", hc.healthy_threshold.to_string());
    p.insert(
        "UnhealthyThresholdCount",
        hc.unhealthy_threshold.to_string(),
    );
    p.insert_opt("Matcher.HttpCode", hc.matcher.as_deref());
}

/// Reads them, ELBv2's defaults for what is absent.
fn read_health_check(
    p: &Params,
    group_protocol: Option<&str>,
) -> Result<TargetGroupHealthCheck, WireError> {
    let protocol = p
        .get("HealthCheckProtocol")
        .or(group_protocol)
        .unwrap_or("HTTP");
    let defaults = TargetGroupHealthCheck::defaults(protocol);
    Ok(TargetGroupHealthCheck {
        protocol: protocol.to_string(),
        port: p
            .get("HealthCheckPort")
            .map_or(defaults.port, str::to_string),
        path: owned(p.get("HealthCheckPath")).or(defaults.path),
        interval_seconds: p
            .get_u32("HealthCheckIntervalSeconds")?
            .unwrap_or(defaults.interval_seconds),
        timeout_seconds: p
            .get_u32("HealthCheckTimeoutSeconds")?
            .unwrap_or(defaults.timeout_seconds),
        healthy_threshold: p
            .get_u32("HealthyThresholdCount")?
            .unwrap_or(defaults.healthy_threshold),
        unhealthy_threshold: p
            .get_u32("UnhealthyThresholdCount")?
            .unwrap_or(defaults.unhealthy_threshold),
        matcher: owned(p.get("Matcher.HttpCode")).or(defaults.matcher),
    })
}

impl Elbv2Action for CreateLoadBalancerRequest {
    const ACTION: &'static str = "CreateLoadBalancer";
    const PARAMETERS: &'static [&'static str] = &[
        "Name",
        "Subnets",
        "SecurityGroups",
        "Scheme",
        "Type",
        "IpAddressType",
        "Tags",
    ];

    fn write_params(&self, p: &mut Params) {
        p.insert("Name", self.name.as_str());
        write_members(p, "Subnets", &self.subnets);
        write_members(p, "SecurityGroups", &self.security_groups);
        p.insert_opt("Scheme", self.scheme.as_deref());
        p.insert_opt("Type", self.load_balancer_type.as_deref());
        p.insert_opt("IpAddressType", self.ip_address_type.as_deref());
        write_pairs(p, "Tags", &self.tags);
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            name: p.require("Name")?.to_string(),
            subnets: read_members(p, "Subnets")?,
            security_groups: read_members(p, "SecurityGroups")?,
            scheme: owned(p.get("Scheme")),
            load_balancer_type: owned(p.get("Type")),
            ip_address_type: owned(p.get("IpAddressType")),
            tags: read_pairs(p, "Tags")?,
        })
    }
}

impl Elbv2Action for DescribeLoadBalancersRequest {
    const ACTION: &'static str = "DescribeLoadBalancers";
    const PARAMETERS: &'static [&'static str] =
        &["LoadBalancerArns", "Names", "Marker", "PageSize"];

    fn write_params(&self, p: &mut Params) {
        write_members(p, "LoadBalancerArns", &self.load_balancer_arns);
        write_members(p, "Names", &self.names);
        p.insert_opt("Marker", self.marker.as_deref());
        p.insert_opt("PageSize", self.page_size.map(|n| n.to_string()));
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            load_balancer_arns: read_members(p, "LoadBalancerArns")?,
            names: read_members(p, "Names")?,
            marker: owned(p.get("Marker")),
            page_size: p.get_u32("PageSize")?,
        })
    }
}

impl Elbv2Action for DeleteLoadBalancerRequest {
    const ACTION: &'static str = "DeleteLoadBalancer";
    const PARAMETERS: &'static [&'static str] = &["LoadBalancerArn"];

    fn write_params(&self, p: &mut Params) {
        p.insert("LoadBalancerArn", self.load_balancer_arn.as_str());
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            load_balancer_arn: p.require("LoadBalancerArn")?.to_string(),
        })
    }
}

impl Elbv2Action for CreateTargetGroupRequest {
    const ACTION: &'static str = "CreateTargetGroup";
    const PARAMETERS: &'static [&'static str] = &[
        "Name",
        "Protocol",
        "Port",
        "VpcId",
        "TargetType",
        "HealthCheckProtocol",
        "HealthCheckPort",
        "HealthCheckPath",
        "HealthCheckIntervalSeconds",
        "HealthCheckTimeoutSeconds",
        "HealthyThresholdCount",
        "UnhealthyThresholdCount",
        "Matcher",
        "Tags",
    ];

    fn write_params(&self, p: &mut Params) {
        p.insert("Name", self.name.as_str());
        p.insert_opt("Protocol", self.protocol.as_deref());
        p.insert_opt("Port", self.port.map(|port| port.to_string()));
        p.insert_opt("VpcId", self.vpc_id.as_deref());
        p.insert_opt("TargetType", self.target_type.as_deref());
        write_health_check(p, &self.health_check);
        write_pairs(p, "Tags", &self.tags);
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        for (key, _) in p.iter() {
            if key.starts_with("Matcher.") && key != "Matcher.HttpCode" {
                return Err(WireError::UnknownParameter(key.to_string()));
            }
        }
        Ok(Self {
            name: p.require("Name")?.to_string(),
            protocol: owned(p.get("Protocol")),
            port: get_u16(p, "Port")?,
            vpc_id: owned(p.get("VpcId")),
            target_type: owned(p.get("TargetType")),
            health_check: read_health_check(p, p.get("Protocol"))?,
            tags: read_pairs(p, "Tags")?,
        })
    }
}

impl Elbv2Action for DescribeTargetGroupsRequest {
    const ACTION: &'static str = "DescribeTargetGroups";
    const PARAMETERS: &'static [&'static str] = &[
        "LoadBalancerArn",
        "TargetGroupArns",
        "Names",
        "Marker",
        "PageSize",
    ];

    fn write_params(&self, p: &mut Params) {
        p.insert_opt("LoadBalancerArn", self.load_balancer_arn.as_deref());
        write_members(p, "TargetGroupArns", &self.target_group_arns);
        write_members(p, "Names", &self.names);
        p.insert_opt("Marker", self.marker.as_deref());
        p.insert_opt("PageSize", self.page_size.map(|n| n.to_string()));
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            load_balancer_arn: owned(p.get("LoadBalancerArn")),
            target_group_arns: read_members(p, "TargetGroupArns")?,
            names: read_members(p, "Names")?,
            marker: owned(p.get("Marker")),
            page_size: p.get_u32("PageSize")?,
        })
    }
}

impl Elbv2Action for DeleteTargetGroupRequest {
    const ACTION: &'static str = "DeleteTargetGroup";
    const PARAMETERS: &'static [&'static str] = &["TargetGroupArn"];

    fn write_params(&self, p: &mut Params) {
        p.insert("TargetGroupArn", self.target_group_arn.as_str());
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            target_group_arn: p.require("TargetGroupArn")?.to_string(),
        })
    }
}

impl Elbv2Action for ModifyTargetGroupAttributesRequest {
    const ACTION: &'static str = "ModifyTargetGroupAttributes";
    const PARAMETERS: &'static [&'static str] = &["TargetGroupArn", "Attributes"];

    fn write_params(&self, p: &mut Params) {
        p.insert("TargetGroupArn", self.target_group_arn.as_str());
        write_pairs(p, "Attributes", &self.attributes);
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            target_group_arn: p.require("TargetGroupArn")?.to_string(),
            attributes: read_pairs(p, "Attributes")?,
        })
    }
}

/// `impl Elbv2Action` for an action that takes a target group and a list
/// of targets.
macro_rules! targets_request {
    ($name:ident, $action:literal) => {
        impl Elbv2Action for $name {
            const ACTION: &'static str = $action;
            const PARAMETERS: &'static [&'static str] = &["TargetGroupArn", "Targets"];

            fn write_params(&self, p: &mut Params) {
                p.insert("TargetGroupArn", self.target_group_arn.as_str());
                write_targets(p, &self.targets);
            }

            fn read_params(p: &Params) -> Result<Self, WireError> {
                Ok(Self {
                    target_group_arn: p.require("TargetGroupArn")?.to_string(),
                    targets: read_targets(p)?,
                })
            }
        }
    };
}

targets_request!(RegisterTargetsRequest, "RegisterTargets");
targets_request!(DeregisterTargetsRequest, "DeregisterTargets");
targets_request!(DescribeTargetHealthRequest, "DescribeTargetHealth");

impl Elbv2Action for CreateListenerRequest {
    const ACTION: &'static str = "CreateListener";
    const PARAMETERS: &'static [&'static str] = &[
        "LoadBalancerArn",
        "Protocol",
        "Port",
        "DefaultActions",
        "Tags",
    ];

    fn write_params(&self, p: &mut Params) {
        p.insert("LoadBalancerArn", self.load_balancer_arn.as_str());
        p.insert_opt("Protocol", self.protocol.as_deref());
        p.insert_opt("Port", self.port.map(|port| port.to_string()));
        write_default_action(p, &self.default_action);
        write_pairs(p, "Tags", &self.tags);
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            load_balancer_arn: p.require("LoadBalancerArn")?.to_string(),
            protocol: owned(p.get("Protocol")),
            port: get_u16(p, "Port")?,
            default_action: read_default_action(p)?.ok_or_else(|| {
                WireError::MissingParameter("DefaultActions.member.1.Type".to_string())
            })?,
            tags: read_pairs(p, "Tags")?,
        })
    }
}

impl Elbv2Action for DescribeListenersRequest {
    const ACTION: &'static str = "DescribeListeners";
    const PARAMETERS: &'static [&'static str] =
        &["LoadBalancerArn", "ListenerArns", "Marker", "PageSize"];

    fn write_params(&self, p: &mut Params) {
        p.insert_opt("LoadBalancerArn", self.load_balancer_arn.as_deref());
        write_members(p, "ListenerArns", &self.listener_arns);
        p.insert_opt("Marker", self.marker.as_deref());
        p.insert_opt("PageSize", self.page_size.map(|n| n.to_string()));
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            load_balancer_arn: owned(p.get("LoadBalancerArn")),
            listener_arns: read_members(p, "ListenerArns")?,
            marker: owned(p.get("Marker")),
            page_size: p.get_u32("PageSize")?,
        })
    }
}

impl Elbv2Action for ModifyListenerRequest {
    const ACTION: &'static str = "ModifyListener";
    const PARAMETERS: &'static [&'static str] =
        &["ListenerArn", "Protocol", "Port", "DefaultActions"];

    fn write_params(&self, p: &mut Params) {
        p.insert("ListenerArn", self.listener_arn.as_str());
        p.insert_opt("Protocol", self.protocol.as_deref());
        p.insert_opt("Port", self.port.map(|port| port.to_string()));
        if let Some(action) = &self.default_action {
            write_default_action(p, action);
        }
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            listener_arn: p.require("ListenerArn")?.to_string(),
            protocol: owned(p.get("Protocol")),
            port: get_u16(p, "Port")?,
            default_action: read_default_action(p)?,
        })
    }
}

impl Elbv2Action for DescribeTargetGroupRequestCountsRequest {
    const ACTION: &'static str = "DescribeTargetGroupRequestCounts";
    const PARAMETERS: &'static [&'static str] = &["TargetGroupArn", "WindowSeconds"];

    fn write_params(&self, p: &mut Params) {
        p.insert("TargetGroupArn", self.target_group_arn.as_str());
        p.insert("WindowSeconds", self.window_seconds.to_string());
    }

    fn read_params(p: &Params) -> Result<Self, WireError> {
        Ok(Self {
            target_group_arn: p.require("TargetGroupArn")?.to_string(),
            window_seconds: p
                .get_u32("WindowSeconds")?
                .ok_or_else(|| WireError::MissingParameter("WindowSeconds".to_string()))?,
        })
    }
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// Whether a namespace is ELBv2's (with or without the trailing slash) or
/// absent.
fn is_elbv2_namespace(ns: Option<&str>) -> bool {
    ns.is_none_or(|ns| ns.trim_end_matches('/') == ELBV2_XMLNS.trim_end_matches('/'))
}

/// The root element, checked to be `name` in ELBv2's namespace or none.
fn elbv2_root<'a, 'i>(
    doc: &'a roxmltree::Document<'i>,
    name: &str,
) -> Result<Node<'a, 'i>, WireError> {
    let root = doc.root_element();
    let tag = root.tag_name();
    if tag.name() != name {
        return Err(WireError::Xml(format!(
            "expected <{name}>, found <{}>",
            tag.name()
        )));
    }
    if !is_elbv2_namespace(tag.namespace()) {
        return Err(WireError::Xml(format!(
            "<{name}> is in namespace {:?}, not ELBv2's",
            tag.namespace().unwrap_or_default()
        )));
    }
    Ok(root)
}

/// Writes `<{action}Response xmlns=ELBv2><{action}Result>` what `body`
/// writes `</…Result><ResponseMetadata><RequestId/></…></…Response>`.
fn write_document(
    action: &str,
    request_id: &Option<String>,
    body: impl FnOnce(&mut XmlWriter),
) -> String {
    let root = format!("{action}Response");
    let result = format!("{action}Result");
    let mut w = XmlWriter::document();
    w.open_root_in(&root, ELBV2_XMLNS);
    w.open(&result);
    body(&mut w);
    w.close(&result);
    w.open("ResponseMetadata");
    w.leaf_opt("RequestId", request_id.as_deref());
    w.close("ResponseMetadata");
    w.close(&root);
    w.finish()
}

/// Parses such a document: `read` gets the `<…Result>` element (the root
/// itself when a server left the result out, which empty answers may do)
/// and the request id.
fn read_document<T>(
    text: &str,
    action: &str,
    read: impl FnOnce(Node<'_, '_>) -> Result<T, WireError>,
) -> Result<(T, Option<String>), WireError> {
    let doc = xml::parse(text)?;
    let root = elbv2_root(&doc, &format!("{action}Response"))?;
    let request_id =
        xml::child(root, "ResponseMetadata").and_then(|m| xml::text_nonempty(m, "RequestId"));
    let result = xml::child(root, &format!("{action}Result")).unwrap_or(root);
    Ok((read(result)?, request_id))
}

/// `<name><member>…</member>…</name>`, each member written by `write`.
fn write_member_list<T>(
    w: &mut XmlWriter,
    name: &str,
    items: &[T],
    mut write: impl FnMut(&mut XmlWriter, &T),
) {
    w.open(name);
    for item in items {
        w.open("member");
        write(w, item);
        w.close("member");
    }
    w.close(name);
}

/// The `<member>`s of child list `name`; none if the list is absent.
fn members<'a, 'i: 'a>(node: Node<'a, 'i>, name: &str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    xml::child(node, name)
        .into_iter()
        .flat_map(|list| xml::children(list, "member"))
}

fn write_pair_list(w: &mut XmlWriter, name: &str, pairs: &[(String, String)]) {
    write_member_list(w, name, pairs, |w, (key, value)| {
        w.leaf("Key", key);
        w.leaf("Value", value);
    });
}

fn read_pair_list(node: Node<'_, '_>, name: &str) -> Result<Vec<(String, String)>, WireError> {
    members(node, name)
        .map(|m| {
            Ok((
                xml::required_text(m, "Key")?,
                xml::text(m, "Value").unwrap_or_default(),
            ))
        })
        .collect()
}

fn required_number<T: std::str::FromStr>(node: Node<'_, '_>, name: &str) -> Result<T, WireError> {
    xml::number(node, name)?
        .ok_or_else(|| WireError::Xml(format!("<{}> has no <{name}>", node.tag_name().name())))
}

impl LoadBalancer {
    fn write(&self, w: &mut XmlWriter) {
        w.leaf("LoadBalancerArn", &self.arn);
        w.leaf("DNSName", &self.dns_name);
        w.leaf("LoadBalancerName", &self.name);
        w.open("State");
        w.leaf("Code", &self.state);
        w.close("State");
        w.leaf("Type", "application");
        write_pair_list(w, "Tags", &self.tags);
    }

    fn read(node: Node<'_, '_>) -> Result<Self, WireError> {
        Ok(Self {
            arn: xml::required_text(node, "LoadBalancerArn")?,
            name: xml::required_text(node, "LoadBalancerName")?,
            dns_name: xml::text(node, "DNSName").unwrap_or_default(),
            state: xml::child(node, "State")
                .and_then(|s| xml::text(s, "Code"))
                .unwrap_or_default(),
            tags: read_pair_list(node, "Tags")?,
        })
    }
}

impl TargetGroup {
    fn write(&self, w: &mut XmlWriter) {
        let hc = &self.health_check;
        w.leaf("TargetGroupArn", &self.arn);
        w.leaf("TargetGroupName", &self.name);
        w.leaf("Protocol", &self.protocol);
        w.leaf("Port", &self.port.to_string());
        w.leaf_opt("VpcId", self.vpc_id.as_deref());
        w.leaf("HealthCheckProtocol", &hc.protocol);
        w.leaf("HealthCheckPort", &hc.port);
        w.leaf("HealthCheckEnabled", "true");
        w.leaf(
            "HealthCheckIntervalSeconds",
            &hc.interval_seconds.to_string(),
        );
        w.leaf("HealthCheckTimeoutSeconds", &hc.timeout_seconds.to_string());
        w.leaf("HealthyThresholdCount", &hc.healthy_threshold.to_string());
        w.leaf(
            "UnhealthyThresholdCount",
            &hc.unhealthy_threshold.to_string(),
        );
        w.leaf_opt("HealthCheckPath", hc.path.as_deref());
        if let Some(matcher) = &hc.matcher {
            w.open("Matcher");
            w.leaf("HttpCode", matcher);
            w.close("Matcher");
        }
        w.open("LoadBalancerArns");
        for arn in &self.load_balancer_arns {
            w.leaf("member", arn);
        }
        w.close("LoadBalancerArns");
        w.leaf("TargetType", "instance");
        write_pair_list(w, "Tags", &self.tags);
    }

    fn read(node: Node<'_, '_>) -> Result<Self, WireError> {
        let protocol = xml::text(node, "Protocol").unwrap_or_else(|| "HTTP".to_string());
        let hc_protocol =
            xml::text_nonempty(node, "HealthCheckProtocol").unwrap_or(protocol.clone());
        let defaults = TargetGroupHealthCheck::defaults(&hc_protocol);
        let health_check = TargetGroupHealthCheck {
            port: xml::text_nonempty(node, "HealthCheckPort").unwrap_or(defaults.port),
            path: xml::text_nonempty(node, "HealthCheckPath").or(defaults.path),
            interval_seconds: xml::number(node, "HealthCheckIntervalSeconds")?
                .unwrap_or(defaults.interval_seconds),
            timeout_seconds: xml::number(node, "HealthCheckTimeoutSeconds")?
                .unwrap_or(defaults.timeout_seconds),
            healthy_threshold: xml::number(node, "HealthyThresholdCount")?
                .unwrap_or(defaults.healthy_threshold),
            unhealthy_threshold: xml::number(node, "UnhealthyThresholdCount")?
                .unwrap_or(defaults.unhealthy_threshold),
            matcher: xml::child(node, "Matcher")
                .and_then(|m| xml::text_nonempty(m, "HttpCode"))
                .or(defaults.matcher),
            protocol: hc_protocol,
        };
        Ok(Self {
            arn: xml::required_text(node, "TargetGroupArn")?,
            name: xml::required_text(node, "TargetGroupName")?,
            protocol,
            port: xml::number(node, "Port")?.unwrap_or(0),
            vpc_id: xml::text_nonempty(node, "VpcId"),
            health_check,
            load_balancer_arns: members(node, "LoadBalancerArns")
                .map(xml::node_text)
                .collect(),
            tags: read_pair_list(node, "Tags")?,
        })
    }
}

impl ForwardAction {
    /// A `<member>` of `DefaultActions`. A single target group is also
    /// named in the legacy `TargetGroupArn`, as ELBv2 itself answers.
    fn write(&self, w: &mut XmlWriter) {
        w.leaf("Type", "forward");
        if let [single] = self.target_groups.as_slice() {
            w.leaf("TargetGroupArn", &single.target_group_arn);
        }
        w.open("ForwardConfig");
        write_member_list(w, "TargetGroups", &self.target_groups, |w, tg| {
            w.leaf("TargetGroupArn", &tg.target_group_arn);
            w.leaf("Weight", &tg.weight.to_string());
        });
        w.close("ForwardConfig");
    }

    /// The first forward action of a `DefaultActions` list: its
    /// `ForwardConfig` (a weight left out is 1), else its legacy
    /// `TargetGroupArn`. No forward action reads as no target groups.
    fn read_default_actions(listener: Node<'_, '_>) -> Result<Self, WireError> {
        let Some(action) = members(listener, "DefaultActions")
            .find(|a| xml::text(*a, "Type").is_some_and(|t| t == "forward"))
        else {
            return Ok(Self {
                target_groups: Vec::new(),
            });
        };
        let weighted = xml::child(action, "ForwardConfig")
            .map(|config| {
                members(config, "TargetGroups")
                    .map(|tg| {
                        Ok(WeightedTargetGroup {
                            target_group_arn: xml::required_text(tg, "TargetGroupArn")?,
                            weight: xml::number(tg, "Weight")?.unwrap_or(1),
                        })
                    })
                    .collect::<Result<Vec<_>, WireError>>()
            })
            .transpose()?
            .unwrap_or_default();
        let target_groups = if weighted.is_empty() {
            xml::text_nonempty(action, "TargetGroupArn")
                .map(|arn| WeightedTargetGroup {
                    target_group_arn: arn,
                    weight: 1,
                })
                .into_iter()
                .collect()
        } else {
            weighted
        };
        Ok(Self { target_groups })
    }
}

impl Listener {
    fn write(&self, w: &mut XmlWriter) {
        w.leaf("ListenerArn", &self.arn);
        w.leaf("LoadBalancerArn", &self.load_balancer_arn);
        w.leaf("Port", &self.port.to_string());
        w.leaf("Protocol", &self.protocol);
        write_member_list(
            w,
            "DefaultActions",
            std::slice::from_ref(&self.default_action),
            |w, action| action.write(w),
        );
    }

    fn read(node: Node<'_, '_>) -> Result<Self, WireError> {
        Ok(Self {
            arn: xml::required_text(node, "ListenerArn")?,
            load_balancer_arn: xml::text(node, "LoadBalancerArn").unwrap_or_default(),
            protocol: xml::text(node, "Protocol").unwrap_or_default(),
            port: xml::number(node, "Port")?.unwrap_or(0),
            default_action: ForwardAction::read_default_actions(node)?,
        })
    }
}

impl TargetHealthDescription {
    fn write(&self, w: &mut XmlWriter) {
        w.open("Target");
        w.leaf("Id", &self.target.id);
        w.leaf_opt("Port", self.target.port.map(|p| p.to_string()).as_deref());
        w.close("Target");
        w.open("TargetHealth");
        w.leaf("State", &self.state);
        w.leaf_opt("Reason", self.reason.as_deref());
        w.leaf_opt("Description", self.description.as_deref());
        w.close("TargetHealth");
    }

    fn read(node: Node<'_, '_>) -> Result<Self, WireError> {
        let target = xml::required_child(node, "Target")?;
        let health = xml::required_child(node, "TargetHealth")?;
        Ok(Self {
            target: TargetDescription {
                id: xml::required_text(target, "Id")?,
                port: xml::number(target, "Port")?,
            },
            state: xml::required_text(health, "State")?,
            reason: xml::text_nonempty(health, "Reason"),
            description: xml::text_nonempty(health, "Description"),
        })
    }
}

/// A response struct whose fields are a request id and lists of members,
/// written and read by the named functions. `$list` fields are
/// `<$element><member>` lists of `$item`s; `$opt` fields are optional
/// leaves.
macro_rules! list_response {
    (
        $(#[$doc:meta])* $name:ident, $action:literal,
        lists { $($list:ident: $item:ty = $element:literal),* $(,)? },
        leaves { $($opt:ident = $leaf:literal),* $(,)? }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            pub request_id: Option<String>,
            $(pub $list: Vec<$item>,)*
            $(pub $opt: Option<String>,)*
        }

        impl Response for $name {
            const ROOT: &'static str = concat!($action, "Response");

            fn to_xml(&self) -> String {
                write_document($action, &self.request_id, |w| {
                    $(write_member_list(w, $element, &self.$list, |w, item| item.write(w));)*
                    $(w.leaf_opt($leaf, self.$opt.as_deref());)*
                })
            }

            fn from_xml(text: &str) -> Result<Self, WireError> {
                let (response, request_id) = read_document(text, $action, |result| {
                    Ok(Self {
                        request_id: None,
                        $($list: members(result, $element)
                            .map(<$item>::read)
                            .collect::<Result<Vec<_>, WireError>>()?,)*
                        $($opt: xml::text_nonempty(result, $leaf),)*
                    })
                })?;
                Ok(Self { request_id, ..response })
            }
        }
    };
}

/// A response struct that carries nothing but a request id.
macro_rules! empty_response {
    ($(#[$doc:meta])* $name:ident, $action:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            pub request_id: Option<String>,
        }

        impl Response for $name {
            const ROOT: &'static str = concat!($action, "Response");

            fn to_xml(&self) -> String {
                write_document($action, &self.request_id, |_| {})
            }

            fn from_xml(text: &str) -> Result<Self, WireError> {
                let ((), request_id) = read_document(text, $action, |_| Ok(()))?;
                Ok(Self { request_id })
            }
        }
    };
}

list_response!(
    /// CreateLoadBalancer's answer: the one load balancer.
    CreateLoadBalancerResponse, "CreateLoadBalancer",
    lists { load_balancers: LoadBalancer = "LoadBalancers" },
    leaves {}
);

list_response!(
    /// One page of DescribeLoadBalancers.
    DescribeLoadBalancersResponse, "DescribeLoadBalancers",
    lists { load_balancers: LoadBalancer = "LoadBalancers" },
    leaves { next_marker = "NextMarker" }
);

list_response!(
    /// CreateTargetGroup's answer: the one target group.
    CreateTargetGroupResponse, "CreateTargetGroup",
    lists { target_groups: TargetGroup = "TargetGroups" },
    leaves {}
);

list_response!(
    /// One page of DescribeTargetGroups.
    DescribeTargetGroupsResponse, "DescribeTargetGroups",
    lists { target_groups: TargetGroup = "TargetGroups" },
    leaves { next_marker = "NextMarker" }
);

list_response!(
    /// DescribeTargetHealth's answer.
    DescribeTargetHealthResponse, "DescribeTargetHealth",
    lists { target_health_descriptions: TargetHealthDescription = "TargetHealthDescriptions" },
    leaves {}
);

list_response!(
    /// CreateListener's answer: the one listener.
    CreateListenerResponse, "CreateListener",
    lists { listeners: Listener = "Listeners" },
    leaves {}
);

list_response!(
    /// One page of DescribeListeners.
    DescribeListenersResponse, "DescribeListeners",
    lists { listeners: Listener = "Listeners" },
    leaves { next_marker = "NextMarker" }
);

list_response!(
    /// ModifyListener's answer: the listener as it now is.
    ModifyListenerResponse, "ModifyListener",
    lists { listeners: Listener = "Listeners" },
    leaves {}
);

empty_response!(
    /// DeleteLoadBalancer's answer: nothing but a request id.
    DeleteLoadBalancerResponse, "DeleteLoadBalancer"
);

empty_response!(
    /// DeleteTargetGroup's answer.
    DeleteTargetGroupResponse, "DeleteTargetGroup"
);

empty_response!(
    /// RegisterTargets' answer.
    RegisterTargetsResponse, "RegisterTargets"
);

empty_response!(
    /// DeregisterTargets' answer.
    DeregisterTargetsResponse, "DeregisterTargets"
);

/// ModifyTargetGroupAttributes' answer: every attribute of the group, as
/// key/value pairs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModifyTargetGroupAttributesResponse {
    pub request_id: Option<String>,
    pub attributes: Vec<(String, String)>,
}

impl Response for ModifyTargetGroupAttributesResponse {
    const ROOT: &'static str = "ModifyTargetGroupAttributesResponse";

    fn to_xml(&self) -> String {
        write_document("ModifyTargetGroupAttributes", &self.request_id, |w| {
            write_pair_list(w, "Attributes", &self.attributes);
        })
    }

    fn from_xml(text: &str) -> Result<Self, WireError> {
        let (attributes, request_id) =
            read_document(text, "ModifyTargetGroupAttributes", |result| {
                read_pair_list(result, "Attributes")
            })?;
        Ok(Self {
            request_id,
            attributes,
        })
    }
}

/// DescribeTargetGroupRequestCounts' answer (endstate's extension):
/// `<TargetGroupArn/><WindowSeconds/><Requests/><ServerErrors/>` in its
/// result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeTargetGroupRequestCountsResponse {
    pub request_id: Option<String>,
    pub counts: TargetGroupRequestCounts,
}

impl Response for DescribeTargetGroupRequestCountsResponse {
    const ROOT: &'static str = "DescribeTargetGroupRequestCountsResponse";

    fn to_xml(&self) -> String {
        let c = &self.counts;
        write_document("DescribeTargetGroupRequestCounts", &self.request_id, |w| {
            w.leaf("TargetGroupArn", &c.target_group_arn);
            w.leaf("WindowSeconds", &c.window_seconds.to_string());
            w.leaf("Requests", &c.requests.to_string());
            w.leaf("ServerErrors", &c.server_errors.to_string());
        })
    }

    fn from_xml(text: &str) -> Result<Self, WireError> {
        let (counts, request_id) =
            read_document(text, "DescribeTargetGroupRequestCounts", |result| {
                Ok(TargetGroupRequestCounts {
                    target_group_arn: xml::required_text(result, "TargetGroupArn")?,
                    window_seconds: required_number(result, "WindowSeconds")?,
                    requests: required_number(result, "Requests")?,
                    server_errors: required_number(result, "ServerErrors")?,
                })
            })?;
        Ok(Self { request_id, counts })
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// ELBv2's error document, which is not EC2's:
/// `<ErrorResponse xmlns=…><Error><Type>Sender</Type><Code/><Message/></Error><RequestId/></ErrorResponse>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elbv2ErrorResponse {
    /// `Sender` (the caller's fault, HTTP 4xx) or `Receiver` (the
    /// service's, 5xx).
    pub error_type: String,
    pub error: ErrorDetail,
    pub request_id: Option<String>,
}

impl Elbv2ErrorResponse {
    /// The caller's fault: `LoadBalancerNotFound`, `ValidationError`, ...
    pub fn sender(
        code: impl Into<String>,
        message: impl Into<String>,
        request_id: impl Into<String>,
    ) -> Self {
        Self::typed("Sender", code, message, request_id)
    }

    /// The service's fault: `InternalFailure`, `ServiceUnavailable`.
    pub fn receiver(
        code: impl Into<String>,
        message: impl Into<String>,
        request_id: impl Into<String>,
    ) -> Self {
        Self::typed("Receiver", code, message, request_id)
    }

    fn typed(
        error_type: &str,
        code: impl Into<String>,
        message: impl Into<String>,
        request_id: impl Into<String>,
    ) -> Self {
        Self {
            error_type: error_type.to_string(),
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
            request_id: Some(request_id.into()),
        }
    }

    /// The document a server answers a malformed request with (HTTP 400):
    /// the Query protocol's common codes, as [`WireError::code`] names them.
    pub fn from_wire_error(error: &WireError, request_id: impl Into<String>) -> Self {
        Self::sender(error.code(), error.to_string(), request_id)
    }

    /// The XML a server sends.
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::document();
        w.open_root_in("ErrorResponse", ELBV2_XMLNS);
        w.open("Error");
        w.leaf("Type", &self.error_type);
        w.leaf("Code", &self.error.code);
        w.leaf("Message", &self.error.message);
        w.close("Error");
        w.leaf_opt("RequestId", self.request_id.as_deref());
        w.close("ErrorResponse");
        w.finish()
    }

    /// Parses an error document (ELBv2's namespace or none; `Type`
    /// defaults to `Sender`).
    pub fn from_xml(text: &str) -> Result<Self, WireError> {
        let doc = xml::parse(text)?;
        let root = elbv2_root(&doc, "ErrorResponse")?;
        let error = xml::required_child(root, "Error")?;
        Ok(Self {
            error_type: xml::text_nonempty(error, "Type").unwrap_or_else(|| "Sender".to_string()),
            error: ErrorDetail {
                code: xml::required_text(error, "Code")?,
                message: xml::text(error, "Message").unwrap_or_default(),
            },
            request_id: xml::text_nonempty(root, "RequestId")
                .or_else(|| xml::text_nonempty(root, "RequestID")),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn http_check() -> TargetGroupHealthCheck {
        TargetGroupHealthCheck {
            protocol: "HTTP".into(),
            port: "traffic-port".into(),
            path: Some("/healthz".into()),
            interval_seconds: 5,
            timeout_seconds: 2,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            matcher: Some("200-299".into()),
        }
    }

    fn weighted(pairs: &[(&str, u32)]) -> ForwardAction {
        ForwardAction {
            target_groups: pairs
                .iter()
                .map(|(arn, weight)| WeightedTargetGroup {
                    target_group_arn: arn.to_string(),
                    weight: *weight,
                })
                .collect(),
        }
    }

    fn every_request() -> Vec<Elbv2Request> {
        let targets = vec![
            TargetDescription {
                id: "i-1".into(),
                port: Some(8080),
            },
            TargetDescription {
                id: "i-2".into(),
                port: None,
            },
        ];
        vec![
            Elbv2Request::CreateLoadBalancer(CreateLoadBalancerRequest {
                name: "web".into(),
                subnets: vec!["subnet-1".into(), "subnet-2".into()],
                security_groups: vec!["sg-1".into()],
                scheme: Some("internal".into()),
                load_balancer_type: Some("application".into()),
                ip_address_type: Some("ipv4".into()),
                tags: vec![("endstate:project".into(), "a b&c".into())],
            }),
            Elbv2Request::DescribeLoadBalancers(DescribeLoadBalancersRequest {
                load_balancer_arns: vec!["arn:lb/1".into()],
                names: vec!["web".into(), "api".into()],
                marker: Some("m".into()),
                page_size: Some(400),
            }),
            Elbv2Request::DeleteLoadBalancer(DeleteLoadBalancerRequest {
                load_balancer_arn: "arn:lb/1".into(),
            }),
            Elbv2Request::CreateTargetGroup(CreateTargetGroupRequest {
                name: "web-0a1b2c3d".into(),
                protocol: Some("HTTP".into()),
                port: Some(8080),
                vpc_id: Some("vpc-1".into()),
                target_type: Some("instance".into()),
                health_check: http_check(),
                tags: vec![("endstate:generation".into(), "0a1b2c3d".into())],
            }),
            Elbv2Request::DescribeTargetGroups(DescribeTargetGroupsRequest {
                load_balancer_arn: Some("arn:lb/1".into()),
                target_group_arns: vec!["arn:tg/1".into()],
                names: vec!["web".into()],
                marker: Some("m2".into()),
                page_size: Some(10),
            }),
            Elbv2Request::DeleteTargetGroup(DeleteTargetGroupRequest {
                target_group_arn: "arn:tg/1".into(),
            }),
            Elbv2Request::ModifyTargetGroupAttributes(ModifyTargetGroupAttributesRequest {
                target_group_arn: "arn:tg/1".into(),
                attributes: vec![(DEREGISTRATION_DELAY_ATTRIBUTE.into(), "12".into())],
            }),
            Elbv2Request::RegisterTargets(RegisterTargetsRequest {
                target_group_arn: "arn:tg/1".into(),
                targets: targets.clone(),
            }),
            Elbv2Request::DeregisterTargets(DeregisterTargetsRequest {
                target_group_arn: "arn:tg/1".into(),
                targets: targets.clone(),
            }),
            Elbv2Request::DescribeTargetHealth(DescribeTargetHealthRequest {
                target_group_arn: "arn:tg/1".into(),
                targets,
            }),
            Elbv2Request::CreateListener(CreateListenerRequest {
                load_balancer_arn: "arn:lb/1".into(),
                protocol: Some("HTTP".into()),
                port: Some(80),
                default_action: weighted(&[("arn:tg/1", 1)]),
                tags: Vec::new(),
            }),
            Elbv2Request::DescribeListeners(DescribeListenersRequest {
                load_balancer_arn: Some("arn:lb/1".into()),
                listener_arns: vec!["arn:listener/1".into()],
                marker: None,
                page_size: None,
            }),
            Elbv2Request::ModifyListener(ModifyListenerRequest {
                listener_arn: "arn:listener/1".into(),
                protocol: None,
                port: None,
                default_action: Some(weighted(&[("arn:tg/1", 90), ("arn:tg/2", 10)])),
            }),
            Elbv2Request::DescribeTargetGroupRequestCounts(
                DescribeTargetGroupRequestCountsRequest {
                    target_group_arn: "arn:tg/2".into(),
                    window_seconds: 30,
                },
            ),
        ]
    }

    #[test]
    fn every_request_round_trips_through_a_form_body() {
        let requests = every_request();
        assert_eq!(requests.len(), 14);
        for request in requests {
            let params = request.to_params();
            assert_eq!(params.get("Action"), Some(request.action()));
            assert_eq!(params.get("Version"), Some(ELBV2_API_VERSION));
            assert!(Elbv2Request::is_elbv2_action(request.action()));
            let back = Elbv2Request::from_form(&params.to_form()).unwrap();
            assert_eq!(back, request, "{}", request.action());
        }
        assert!(!Elbv2Request::is_elbv2_action("RunInstances"));
    }

    #[test]
    fn forward_actions_use_elbv2_parameter_names() {
        let request = ModifyListenerRequest {
            listener_arn: "arn:l".into(),
            default_action: Some(weighted(&[("arn:a", 80), ("arn:b", 20)])),
            ..Default::default()
        };
        let p = request.to_params();
        let expected = [
            ("DefaultActions.member.1.Type", "forward"),
            (
                "DefaultActions.member.1.ForwardConfig.TargetGroups.member.1.TargetGroupArn",
                "arn:a",
            ),
            (
                "DefaultActions.member.1.ForwardConfig.TargetGroups.member.1.Weight",
                "80",
            ),
            (
                "DefaultActions.member.1.ForwardConfig.TargetGroups.member.2.TargetGroupArn",
                "arn:b",
            ),
            (
                "DefaultActions.member.1.ForwardConfig.TargetGroups.member.2.Weight",
                "20",
            ),
        ];
        for (name, value) in expected {
            assert_eq!(p.get(name), Some(value), "{name}");
        }
    }

    #[test]
    fn legacy_single_forward_and_omitted_weights_decode() {
        let p: Params = [
            ("Action", "CreateListener"),
            ("Version", ELBV2_API_VERSION),
            ("LoadBalancerArn", "arn:lb"),
            ("Protocol", "HTTP"),
            ("Port", "80"),
            ("DefaultActions.member.1.Type", "forward"),
            ("DefaultActions.member.1.TargetGroupArn", "arn:tg"),
        ]
        .into_iter()
        .collect();
        let r = CreateListenerRequest::from_params(&p).unwrap();
        assert_eq!(r.default_action, weighted(&[("arn:tg", 1)]));

        let p: Params = [
            ("Action", "ModifyListener"),
            ("Version", ELBV2_API_VERSION),
            ("ListenerArn", "arn:l"),
            ("DefaultActions.member.1.Type", "forward"),
            (
                "DefaultActions.member.1.ForwardConfig.TargetGroups.member.1.TargetGroupArn",
                "arn:a",
            ),
            (
                "DefaultActions.member.1.ForwardConfig.TargetGroupStickinessConfig.Enabled",
                "false",
            ),
        ]
        .into_iter()
        .collect();
        let r = ModifyListenerRequest::from_params(&p).unwrap();
        assert_eq!(r.default_action, Some(weighted(&[("arn:a", 1)])));
    }

    #[test]
    fn unsupported_actions_and_parameters_are_refused() {
        let base = [
            ("Action", "ModifyListener"),
            ("Version", ELBV2_API_VERSION),
            ("ListenerArn", "arn:l"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| -> Params {
            base.iter().chain(extra.iter()).copied().collect()
        };
        let fixed = with(&[("DefaultActions.member.1.Type", "fixed-response")]);
        assert!(matches!(
            ModifyListenerRequest::from_params(&fixed),
            Err(WireError::InvalidParameterValue { name, .. }) if name == "DefaultActions.member.1.Type"
        ));
        let sticky = with(&[
            ("DefaultActions.member.1.Type", "forward"),
            ("DefaultActions.member.1.TargetGroupArn", "arn:a"),
            (
                "DefaultActions.member.1.ForwardConfig.TargetGroupStickinessConfig.Enabled",
                "true",
            ),
        ]);
        assert!(matches!(
            ModifyListenerRequest::from_params(&sticky),
            Err(WireError::UnknownParameter(_))
        ));
        let two = with(&[
            ("DefaultActions.member.1.Type", "forward"),
            ("DefaultActions.member.1.TargetGroupArn", "arn:a"),
            ("DefaultActions.member.2.Type", "forward"),
            ("DefaultActions.member.2.TargetGroupArn", "arn:b"),
        ]);
        assert!(ModifyListenerRequest::from_params(&two).is_err());
        let mismatch = with(&[
            ("DefaultActions.member.1.Type", "forward"),
            ("DefaultActions.member.1.TargetGroupArn", "arn:z"),
            (
                "DefaultActions.member.1.ForwardConfig.TargetGroups.member.1.TargetGroupArn",
                "arn:a",
            ),
        ]);
        assert!(ModifyListenerRequest::from_params(&mismatch).is_err());
        let unknown = with(&[("Certificates.member.1.CertificateArn", "x")]);
        assert!(matches!(
            ModifyListenerRequest::from_params(&unknown),
            Err(WireError::UnknownParameter(_))
        ));
        let ec2_version = [
            ("Action", "DeleteTargetGroup"),
            ("Version", "2016-11-15"),
            ("TargetGroupArn", "a"),
        ];
        assert!(Elbv2Request::from_params(&ec2_version.into_iter().collect()).is_err());
        let unknown_action = [("Action", "RunInstances"), ("Version", ELBV2_API_VERSION)];
        assert!(matches!(
            Elbv2Request::from_params(&unknown_action.into_iter().collect()),
            Err(WireError::InvalidAction(a)) if a == "RunInstances"
        ));
        let bad_port = [
            ("Action", "CreateTargetGroup"),
            ("Version", ELBV2_API_VERSION),
            ("Name", "tg"),
            ("Port", "70000"),
        ];
        assert!(matches!(
            Elbv2Request::from_params(&bad_port.into_iter().collect()),
            Err(WireError::InvalidParameterValue { name, .. }) if name == "Port"
        ));
    }

    #[test]
    fn absent_health_check_parameters_take_elbv2_defaults() {
        let p: Params = [
            ("Action", "CreateTargetGroup"),
            ("Version", ELBV2_API_VERSION),
            ("Name", "tg"),
            ("Protocol", "HTTP"),
            ("Port", "8080"),
            ("HealthCheckPath", "/up"),
        ]
        .into_iter()
        .collect();
        let r = CreateTargetGroupRequest::from_params(&p).unwrap();
        assert_eq!(
            r.health_check,
            TargetGroupHealthCheck {
                path: Some("/up".into()),
                ..TargetGroupHealthCheck::defaults("HTTP")
            }
        );
        let tcp = TargetGroupHealthCheck::defaults("TCP");
        assert_eq!(
            (tcp.path, tcp.matcher, tcp.timeout_seconds),
            (None, None, 10)
        );
    }

    fn load_balancer() -> LoadBalancer {
        LoadBalancer {
            arn: "arn:aws:elasticloadbalancing:us-east-1:123:loadbalancer/app/web/1".into(),
            name: "web".into(),
            dns_name: "127.0.0.1:8080".into(),
            state: "active".into(),
            tags: vec![("k".into(), "v <&>".into())],
        }
    }

    fn target_group(name: &str) -> TargetGroup {
        TargetGroup {
            arn: format!("arn:tg/{name}"),
            name: name.into(),
            protocol: "HTTP".into(),
            port: 8080,
            vpc_id: Some("vpc-1".into()),
            health_check: http_check(),
            load_balancer_arns: vec!["arn:lb/1".into()],
            tags: Vec::new(),
        }
    }

    fn listener(action: ForwardAction) -> Listener {
        Listener {
            arn: "arn:listener/1".into(),
            load_balancer_arn: "arn:lb/1".into(),
            protocol: "HTTP".into(),
            port: 80,
            default_action: action,
        }
    }

    fn round_trip<R: Response + PartialEq + std::fmt::Debug>(response: R) {
        let xml = response.to_xml();
        assert!(xml.contains(ELBV2_XMLNS), "{xml}");
        assert!(xml.contains(&format!("<{}", R::ROOT)), "{xml}");
        assert_eq!(R::from_xml(&xml).unwrap(), response, "{xml}");
    }

    #[test]
    fn every_response_round_trips_through_xml() {
        let id = || Some("req-1".to_string());
        round_trip(CreateLoadBalancerResponse {
            request_id: id(),
            load_balancers: vec![load_balancer()],
        });
        round_trip(DescribeLoadBalancersResponse {
            request_id: id(),
            load_balancers: vec![load_balancer(), load_balancer()],
            next_marker: Some("next".into()),
        });
        round_trip(DeleteLoadBalancerResponse { request_id: id() });
        round_trip(CreateTargetGroupResponse {
            request_id: id(),
            target_groups: vec![target_group("a")],
        });
        let mut tcp = target_group("b");
        tcp.health_check = TargetGroupHealthCheck::defaults("TCP");
        tcp.load_balancer_arns.clear();
        round_trip(DescribeTargetGroupsResponse {
            request_id: id(),
            target_groups: vec![target_group("a"), tcp],
            next_marker: None,
        });
        round_trip(DeleteTargetGroupResponse { request_id: id() });
        round_trip(ModifyTargetGroupAttributesResponse {
            request_id: id(),
            attributes: vec![
                (DEREGISTRATION_DELAY_ATTRIBUTE.into(), "0".into()),
                ("stickiness.enabled".into(), "false".into()),
            ],
        });
        round_trip(RegisterTargetsResponse { request_id: id() });
        round_trip(DeregisterTargetsResponse { request_id: None });
        round_trip(DescribeTargetHealthResponse {
            request_id: id(),
            target_health_descriptions: vec![
                TargetHealthDescription {
                    target: TargetDescription {
                        id: "i-1".into(),
                        port: Some(8080),
                    },
                    state: "healthy".into(),
                    reason: None,
                    description: None,
                },
                TargetHealthDescription {
                    target: TargetDescription {
                        id: "i-2".into(),
                        port: None,
                    },
                    state: "unhealthy".into(),
                    reason: Some("Target.Timeout".into()),
                    description: Some("Request timed out".into()),
                },
            ],
        });
        round_trip(CreateListenerResponse {
            request_id: id(),
            listeners: vec![listener(weighted(&[("arn:tg/a", 1)]))],
        });
        round_trip(DescribeListenersResponse {
            request_id: id(),
            listeners: vec![listener(weighted(&[("arn:tg/a", 3), ("arn:tg/b", 0)]))],
            next_marker: Some("n".into()),
        });
        round_trip(ModifyListenerResponse {
            request_id: id(),
            listeners: vec![listener(weighted(&[("arn:tg/a", 0), ("arn:tg/b", 999)]))],
        });
        round_trip(DescribeTargetGroupRequestCountsResponse {
            request_id: id(),
            counts: TargetGroupRequestCounts {
                target_group_arn: "arn:tg/b".into(),
                window_seconds: 30,
                requests: 20_000,
                server_errors: 17,
            },
        });
    }

    /// What AWS's documentation shows for DescribeListeners with a
    /// weighted forward action (trimmed), and the legacy single form.
    #[test]
    fn listeners_as_aws_writes_them() {
        let xml = r#"<DescribeListenersResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/">
  <DescribeListenersResult>
    <Listeners>
      <member>
        <LoadBalancerArn>arn:lb</LoadBalancerArn>
        <Protocol>HTTP</Protocol>
        <Port>80</Port>
        <ListenerArn>arn:l1</ListenerArn>
        <DefaultActions>
          <member>
            <Type>forward</Type>
            <ForwardConfig>
              <TargetGroups>
                <member><TargetGroupArn>arn:a</TargetGroupArn><Weight>10</Weight></member>
                <member><TargetGroupArn>arn:b</TargetGroupArn></member>
              </TargetGroups>
              <TargetGroupStickinessConfig><Enabled>false</Enabled></TargetGroupStickinessConfig>
            </ForwardConfig>
          </member>
        </DefaultActions>
      </member>
      <member>
        <ListenerArn>arn:l2</ListenerArn>
        <DefaultActions>
          <member><Type>forward</Type><TargetGroupArn>arn:c</TargetGroupArn></member>
        </DefaultActions>
      </member>
    </Listeners>
  </DescribeListenersResult>
  <ResponseMetadata><RequestId>abc</RequestId></ResponseMetadata>
</DescribeListenersResponse>"#;
        let r = DescribeListenersResponse::from_xml(xml).unwrap();
        assert_eq!(r.request_id.as_deref(), Some("abc"));
        assert_eq!(
            r.listeners[0].default_action,
            weighted(&[("arn:a", 10), ("arn:b", 1)])
        );
        assert_eq!(r.listeners[1].default_action, weighted(&[("arn:c", 1)]));
    }

    #[test]
    fn wrong_documents_are_refused() {
        let ec2 =
            r#"<DescribeListenersResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"/>"#;
        assert!(DescribeListenersResponse::from_xml(ec2).is_err());
        let other = r#"<ModifyListenerResponse/>"#;
        assert!(DescribeListenersResponse::from_xml(other).is_err());
    }

    #[test]
    fn error_document_round_trips_and_reads_aws_samples() {
        let error = Elbv2ErrorResponse::sender(
            "LoadBalancerNotFound",
            "One or more load balancers not found",
            "req-9",
        );
        let xml = error.to_xml();
        assert!(xml.contains("<Type>Sender</Type>"), "{xml}");
        assert_eq!(Elbv2ErrorResponse::from_xml(&xml).unwrap(), error);
        let wire =
            Elbv2ErrorResponse::from_wire_error(&WireError::MissingParameter("Name".into()), "r");
        assert_eq!(wire.error.code, "MissingParameter");
        assert_eq!(
            Elbv2ErrorResponse::receiver("InternalFailure", "x", "r").error_type,
            "Receiver"
        );
        let aws = r#"<ErrorResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/">
  <Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>
  <RequestId>5f1a</RequestId>
</ErrorResponse>"#;
        let parsed = Elbv2ErrorResponse::from_xml(aws).unwrap();
        assert_eq!(parsed.error.code, "Throttling");
        assert_eq!(parsed.request_id.as_deref(), Some("5f1a"));
        // EC2's document is not ELBv2's.
        let ec2 = "<Response><Errors><Error><Code>X</Code></Error></Errors></Response>";
        assert!(Elbv2ErrorResponse::from_xml(ec2).is_err());
    }
}
