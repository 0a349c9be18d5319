//! The load-balancing half of the provider interface: Elastic Load
//! Balancing v2's calls that rollouts make (`LoadBalancing`), and
//! `Elbv2Client`, our Query-protocol client for them (AWS's ELBv2,
//! moto, the built-in cloud). Like [`crate::Provider`]: one call is one
//! request, no retries, no rate limits.

use async_trait::async_trait;
pub use endstate_wire::elbv2::{
    ForwardAction, Listener, LoadBalancer, TargetDescription, TargetGroup, TargetGroupHealthCheck,
    TargetGroupRequestCounts, TargetHealthDescription, WeightedTargetGroup,
};

use crate::ProviderError;

/// What creating a target group needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroupSpec {
    pub name: String,
    pub port: u16,
    pub vpc_id: Option<String>,
    pub health_check: TargetGroupHealthCheck,
    pub tags: Vec<(String, String)>,
}

/// ELBv2's calls, in the subset rollouts use. Creating with the name of an
/// existing resource of the same settings returns it (ELBv2's own rule), so
/// every create is safe to resend.
#[async_trait]
pub trait LoadBalancing: Send + Sync {
    /// CreateLoadBalancer (application, internal on the built-in cloud).
    async fn create_load_balancer(
        &self,
        name: &str,
        subnet_ids: &[String],
        tags: &[(String, String)],
    ) -> Result<LoadBalancer, ProviderError>;
    /// DescribeLoadBalancers by name; an unknown name is `Ok(vec![])`, not
    /// an error (ELBv2's LoadBalancerNotFound is mapped).
    async fn describe_load_balancers(
        &self,
        names: &[String],
    ) -> Result<Vec<LoadBalancer>, ProviderError>;
    async fn delete_load_balancer(&self, arn: &str) -> Result<(), ProviderError>;

    async fn create_target_group(
        &self,
        spec: &TargetGroupSpec,
    ) -> Result<TargetGroup, ProviderError>;
    /// DescribeTargetGroups by load balancer (`Some`) or all; paged inside.
    async fn describe_target_groups(
        &self,
        load_balancer_arn: Option<&str>,
    ) -> Result<Vec<TargetGroup>, ProviderError>;
    async fn delete_target_group(&self, arn: &str) -> Result<(), ProviderError>;
    /// ModifyTargetGroupAttributes `deregistration_delay.timeout_seconds`.
    async fn set_deregistration_delay(&self, arn: &str, seconds: u32) -> Result<(), ProviderError>;

    async fn register_targets(
        &self,
        target_group_arn: &str,
        targets: &[TargetDescription],
    ) -> Result<(), ProviderError>;
    async fn deregister_targets(
        &self,
        target_group_arn: &str,
        targets: &[TargetDescription],
    ) -> Result<(), ProviderError>;
    async fn describe_target_health(
        &self,
        target_group_arn: &str,
    ) -> Result<Vec<TargetHealthDescription>, ProviderError>;

    /// CreateListener (HTTP) with a forward action.
    async fn create_listener(
        &self,
        load_balancer_arn: &str,
        port: u16,
        action: &ForwardAction,
    ) -> Result<Listener, ProviderError>;
    async fn describe_listeners(
        &self,
        load_balancer_arn: &str,
    ) -> Result<Vec<Listener>, ProviderError>;
    /// ModifyListener's default action: when this returns, every request
    /// that starts afterwards is routed by the new weights.
    async fn modify_listener(
        &self,
        listener_arn: &str,
        action: &ForwardAction,
    ) -> Result<Listener, ProviderError>;

    /// The endstate extension `DescribeTargetGroupRequestCounts`; AWS and
    /// moto answer it with an error that `is_unsupported()`.
    async fn target_group_request_counts(
        &self,
        target_group_arn: &str,
        window_seconds: u32,
    ) -> Result<TargetGroupRequestCounts, ProviderError> {
        let _ = (target_group_arn, window_seconds);
        Err(ProviderError::Unsupported {
            operation: crate::Operation::Elbv2("DescribeTargetGroupRequestCounts"),
            provider: "this provider".to_string(),
        })
    }
}
