//! The load-balancing half of the provider interface: Elastic Load
//! Balancing v2's calls that rollouts make (`LoadBalancing`), and
//! [`Elbv2Client`], our Query-protocol client for them (AWS's ELBv2,
//! moto, the built-in cloud), which shares its HTTP, credentials and
//! signing with [`crate::ec2::Ec2Client`]. Like [`crate::Provider`]: one
//! call is one request (paging, and resolving a create that ELBv2 refused
//! as a duplicate, aside), no retries, no rate limits.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_credential_types::provider::SharedCredentialsProvider;
use endstate_wire::elbv2::{
    CreateListenerRequest, CreateListenerResponse, CreateLoadBalancerRequest,
    CreateLoadBalancerResponse, CreateTargetGroupRequest, CreateTargetGroupResponse,
    DeleteLoadBalancerRequest, DeleteLoadBalancerResponse, DeleteTargetGroupRequest,
    DeleteTargetGroupResponse, DeregisterTargetsRequest, DeregisterTargetsResponse,
    DescribeListenersRequest, DescribeListenersResponse, DescribeLoadBalancersRequest,
    DescribeLoadBalancersResponse, DescribeTargetGroupRequestCountsRequest,
    DescribeTargetGroupRequestCountsResponse, DescribeTargetGroupsRequest,
    DescribeTargetGroupsResponse, DescribeTargetHealthRequest, DescribeTargetHealthResponse,
    Elbv2Action, Elbv2ErrorResponse, ModifyListenerRequest, ModifyListenerResponse,
    ModifyTargetGroupAttributesRequest, ModifyTargetGroupAttributesResponse,
    RegisterTargetsRequest, RegisterTargetsResponse, DEREGISTRATION_DELAY_ATTRIBUTE,
    ELBV2_SIGNING_NAME,
};
pub use endstate_wire::elbv2::{
    ForwardAction, Listener, LoadBalancer, TargetDescription, TargetGroup, TargetGroupHealthCheck,
    TargetGroupRequestCounts, TargetHealthDescription, WeightedTargetGroup,
};
use endstate_wire::{ErrorResponse, Response};
use tracing::Instrument as _;

use crate::ec2::Ec2Config;
use crate::query::{self, QueryTransport};
use crate::{Operation, ProviderError};

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

/// The most items ELBv2 returns in one page of a describe call.
const MAX_PAGE_SIZE: u32 = 400;

/// AWS's ELBv2 endpoint for `config`'s region, unless the config names
/// one: moto and the built-in cloud serve ELBv2 on the URL they serve EC2
/// on (they tell the two apart by the signing service and the action).
pub fn elbv2_endpoint_url(config: &Ec2Config) -> String {
    config.endpoint.clone().unwrap_or_else(|| {
        format!(
            "https://elasticloadbalancing.{}.amazonaws.com/",
            config.region
        )
    })
}

/// An ELBv2 Query-protocol client, signed for `elasticloadbalancing`.
/// Cheap to share behind an `Arc`; one connection pool per client.
#[derive(Debug)]
pub struct Elbv2Client {
    transport: QueryTransport,
    page_size: Option<u32>,
}

impl Elbv2Client {
    /// A client with credentials from the standard AWS chain (optionally a
    /// named profile). Nothing is contacted until the first call.
    pub async fn new(config: Ec2Config) -> Result<Self, ProviderError> {
        let provider = query::chain_credentials(&config).await?;
        Self::with_provider(config, provider)
    }

    /// A client with fixed credentials (tests, moto, the built-in cloud).
    pub fn with_static_credentials(
        config: Ec2Config,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Result<Self, ProviderError> {
        let provider = query::static_credentials(access_key_id, secret_access_key, session_token);
        Self::with_provider(config, provider)
    }

    /// A client with any credentials provider.
    pub fn with_provider(
        config: Ec2Config,
        provider: SharedCredentialsProvider,
    ) -> Result<Self, ProviderError> {
        let transport = QueryTransport::new(
            &elbv2_endpoint_url(&config),
            &config.region,
            ELBV2_SIGNING_NAME,
            config.timeout,
            provider,
        )?;
        Ok(Self {
            transport,
            page_size: None,
        })
    }

    /// Asks for describe pages of `page_size` (ELBv2 accepts 1..=400; by
    /// default the server chooses). For tests of paging.
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = Some(page_size.clamp(1, MAX_PAGE_SIZE));
        self
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> &str {
        self.transport.endpoint()
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        self.transport.region()
    }

    /// Requests sent so far, per operation (failed ones included).
    pub fn request_counts(&self) -> BTreeMap<Operation, u64> {
        self.transport.request_counts()
    }

    /// ModifyTargetGroupAttributes: sets `attributes` and returns every
    /// attribute of the group as the endpoint now reports them.
    pub async fn modify_target_group_attributes(
        &self,
        target_group_arn: &str,
        attributes: &[(String, String)],
    ) -> Result<Vec<(String, String)>, ProviderError> {
        let request = ModifyTargetGroupAttributesRequest {
            target_group_arn: target_group_arn.to_string(),
            attributes: attributes.to_vec(),
        };
        let response: ModifyTargetGroupAttributesResponse = self.call(&request).await?;
        Ok(response.attributes)
    }

    /// Sends one request and parses its answer, in a `tracing` span that
    /// names the action.
    async fn call<Req: Elbv2Action, Resp: Response>(
        &self,
        request: &Req,
    ) -> Result<Resp, ProviderError> {
        let operation = Operation::Elbv2(Req::ACTION);
        let span = tracing::debug_span!("elbv2", action = Req::ACTION);
        async {
            let body = request.to_params().to_form();
            let (status, text) = self.transport.post(operation, body).await?;
            if (200..300).contains(&status) {
                return Resp::from_xml(&text).map_err(|e| ProviderError::Decode {
                    operation,
                    message: e.to_string(),
                });
            }
            Err(api_error(operation, status, &text))
        }
        .instrument(span)
        .await
    }

    /// DescribeLoadBalancers, every page.
    async fn describe_load_balancers_paged(
        &self,
        names: &[String],
    ) -> Result<Vec<LoadBalancer>, ProviderError> {
        let mut out = Vec::new();
        let mut marker = None;
        loop {
            let request = DescribeLoadBalancersRequest {
                names: names.to_vec(),
                marker,
                page_size: self.page_size,
                ..Default::default()
            };
            let page: DescribeLoadBalancersResponse = self.call(&request).await?;
            out.extend(page.load_balancers);
            match page.next_marker {
                Some(next) => marker = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// The target group named `name`, if there is one.
    async fn target_group_named(&self, name: &str) -> Result<Option<TargetGroup>, ProviderError> {
        let request = DescribeTargetGroupsRequest {
            names: vec![name.to_string()],
            ..Default::default()
        };
        match self.call::<_, DescribeTargetGroupsResponse>(&request).await {
            Ok(response) => Ok(response.target_groups.into_iter().next()),
            Err(e) if e.code() == Some("TargetGroupNotFound") => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// An HTTP error answer: ELBv2's error document; EC2's (an endpoint that
/// speaks only EC2 refusing the action); or
/// [`query::undocumented_error`] for anything else.
fn api_error(operation: Operation, status: u16, body: &str) -> ProviderError {
    if let Ok(document) = Elbv2ErrorResponse::from_xml(body) {
        return ProviderError::Api {
            operation,
            status,
            code: document.error.code,
            message: document.error.message,
            request_id: document.request_id,
        };
    }
    match ErrorResponse::from_xml(body) {
        Ok(document) => {
            let (code, message) = document
                .first()
                .map(|e| (e.code.clone(), e.message.clone()))
                .unwrap_or_default();
            ProviderError::Api {
                operation,
                status,
                code,
                message,
                request_id: document.request_id,
            }
        }
        Err(_) => query::undocumented_error(operation, status, body),
    }
}

/// The one item a create or modify answers with.
fn the_one<T>(operation: Operation, items: Vec<T>, what: &str) -> Result<T, ProviderError> {
    items
        .into_iter()
        .next()
        .ok_or_else(|| ProviderError::Decode {
            operation,
            message: format!("the answer holds no {what}"),
        })
}

#[async_trait]
impl LoadBalancing for Elbv2Client {
    /// An application load balancer in `subnet_ids` (ELBv2 and moto require
    /// subnets; the built-in cloud ignores them). A name that exists
    /// already returns that load balancer, ELBv2's rule: the client looks
    /// the name up first, because moto would create a second balancer of
    /// the same name, and resolves a `DuplicateLoadBalancerName` (a create
    /// racing ours) by name too. Tags are as the endpoint reports them
    /// (none from ELBv2 or moto: they keep tags behind DescribeTags).
    async fn create_load_balancer(
        &self,
        name: &str,
        subnet_ids: &[String],
        tags: &[(String, String)],
    ) -> Result<LoadBalancer, ProviderError> {
        let by_name = [name.to_string()];
        if let Some(existing) = self.describe_load_balancers(&by_name).await?.pop() {
            return Ok(existing);
        }
        let request = CreateLoadBalancerRequest {
            name: name.to_string(),
            subnets: subnet_ids.to_vec(),
            load_balancer_type: Some("application".to_string()),
            tags: tags.to_vec(),
            ..Default::default()
        };
        let operation = Operation::Elbv2(CreateLoadBalancerRequest::ACTION);
        match self.call::<_, CreateLoadBalancerResponse>(&request).await {
            Ok(response) => the_one(operation, response.load_balancers, "load balancer"),
            Err(e) if e.code() == Some("DuplicateLoadBalancerName") => {
                self.describe_load_balancers(&by_name).await?.pop().ok_or(e)
            }
            Err(e) => Err(e),
        }
    }

    /// By name, every page; no names lists all. An unknown name is left
    /// out: ELBv2 fails the whole call with `LoadBalancerNotFound` if any
    /// name is unknown, so several names are then asked for one by one.
    async fn describe_load_balancers(
        &self,
        names: &[String],
    ) -> Result<Vec<LoadBalancer>, ProviderError> {
        match self.describe_load_balancers_paged(names).await {
            Ok(found) => Ok(found),
            Err(e) if e.code() == Some("LoadBalancerNotFound") => {
                if names.len() <= 1 {
                    return Ok(Vec::new());
                }
                let mut found = Vec::new();
                for name in names {
                    match self
                        .describe_load_balancers_paged(std::slice::from_ref(name))
                        .await
                    {
                        Ok(one) => found.extend(one),
                        Err(e) if e.code() == Some("LoadBalancerNotFound") => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(found)
            }
            Err(e) => Err(e),
        }
    }

    async fn delete_load_balancer(&self, arn: &str) -> Result<(), ProviderError> {
        let request = DeleteLoadBalancerRequest {
            load_balancer_arn: arn.to_string(),
        };
        let _: DeleteLoadBalancerResponse = self.call(&request).await?;
        Ok(())
    }

    /// An HTTP target group of instances. A name that exists already with
    /// the same port and health check returns that group (ELBv2's rule;
    /// moto's `DuplicateTargetGroupName` is resolved by name); with other
    /// settings the error stands.
    async fn create_target_group(
        &self,
        spec: &TargetGroupSpec,
    ) -> Result<TargetGroup, ProviderError> {
        let request = CreateTargetGroupRequest {
            name: spec.name.clone(),
            protocol: Some("HTTP".to_string()),
            port: Some(spec.port),
            vpc_id: spec.vpc_id.clone(),
            target_type: Some("instance".to_string()),
            health_check: spec.health_check.clone(),
            tags: spec.tags.clone(),
        };
        let operation = Operation::Elbv2(CreateTargetGroupRequest::ACTION);
        match self.call::<_, CreateTargetGroupResponse>(&request).await {
            Ok(response) => the_one(operation, response.target_groups, "target group"),
            Err(e) if e.code() == Some("DuplicateTargetGroupName") => {
                match self.target_group_named(&spec.name).await? {
                    Some(existing)
                        if existing.port == spec.port
                            && existing.health_check == spec.health_check =>
                    {
                        Ok(existing)
                    }
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn describe_target_groups(
        &self,
        load_balancer_arn: Option<&str>,
    ) -> Result<Vec<TargetGroup>, ProviderError> {
        let mut out = Vec::new();
        let mut marker = None;
        loop {
            let request = DescribeTargetGroupsRequest {
                load_balancer_arn: load_balancer_arn.map(str::to_string),
                marker,
                page_size: self.page_size,
                ..Default::default()
            };
            let page: DescribeTargetGroupsResponse = self.call(&request).await?;
            out.extend(page.target_groups);
            match page.next_marker {
                Some(next) => marker = Some(next),
                None => return Ok(out),
            }
        }
    }

    async fn delete_target_group(&self, arn: &str) -> Result<(), ProviderError> {
        let request = DeleteTargetGroupRequest {
            target_group_arn: arn.to_string(),
        };
        let _: DeleteTargetGroupResponse = self.call(&request).await?;
        Ok(())
    }

    async fn set_deregistration_delay(&self, arn: &str, seconds: u32) -> Result<(), ProviderError> {
        let attributes = [(
            DEREGISTRATION_DELAY_ATTRIBUTE.to_string(),
            seconds.to_string(),
        )];
        self.modify_target_group_attributes(arn, &attributes)
            .await
            .map(drop)
    }

    async fn register_targets(
        &self,
        target_group_arn: &str,
        targets: &[TargetDescription],
    ) -> Result<(), ProviderError> {
        if targets.is_empty() {
            return Ok(());
        }
        let request = RegisterTargetsRequest {
            target_group_arn: target_group_arn.to_string(),
            targets: targets.to_vec(),
        };
        let _: RegisterTargetsResponse = self.call(&request).await?;
        Ok(())
    }

    async fn deregister_targets(
        &self,
        target_group_arn: &str,
        targets: &[TargetDescription],
    ) -> Result<(), ProviderError> {
        if targets.is_empty() {
            return Ok(());
        }
        let request = DeregisterTargetsRequest {
            target_group_arn: target_group_arn.to_string(),
            targets: targets.to_vec(),
        };
        let _: DeregisterTargetsResponse = self.call(&request).await?;
        Ok(())
    }

    async fn describe_target_health(
        &self,
        target_group_arn: &str,
    ) -> Result<Vec<TargetHealthDescription>, ProviderError> {
        let request = DescribeTargetHealthRequest {
            target_group_arn: target_group_arn.to_string(),
            targets: Vec::new(),
        };
        let response: DescribeTargetHealthResponse = self.call(&request).await?;
        Ok(response.target_health_descriptions)
    }

    /// An HTTP listener on `port`. A listener on that port with the same
    /// action is returned, ELBv2's rule: the client looks first, because
    /// moto would add a second listener on the port, and resolves a
    /// `DuplicateListener` (a create racing ours) the same way. A listener
    /// on the port with another action is the endpoint's to refuse.
    async fn create_listener(
        &self,
        load_balancer_arn: &str,
        port: u16,
        action: &ForwardAction,
    ) -> Result<Listener, ProviderError> {
        let same = |l: &Listener| l.port == port && l.default_action == *action;
        if let Some(existing) = self
            .describe_listeners(load_balancer_arn)
            .await?
            .into_iter()
            .find(same)
        {
            return Ok(existing);
        }
        let request = CreateListenerRequest {
            load_balancer_arn: load_balancer_arn.to_string(),
            protocol: Some("HTTP".to_string()),
            port: Some(port),
            default_action: action.clone(),
            tags: Vec::new(),
        };
        let operation = Operation::Elbv2(CreateListenerRequest::ACTION);
        match self.call::<_, CreateListenerResponse>(&request).await {
            Ok(response) => the_one(operation, response.listeners, "listener"),
            Err(e) if e.code() == Some("DuplicateListener") => self
                .describe_listeners(load_balancer_arn)
                .await?
                .into_iter()
                .find(same)
                .ok_or(e),
            Err(e) => Err(e),
        }
    }

    async fn describe_listeners(
        &self,
        load_balancer_arn: &str,
    ) -> Result<Vec<Listener>, ProviderError> {
        let mut out = Vec::new();
        let mut marker = None;
        loop {
            let request = DescribeListenersRequest {
                load_balancer_arn: Some(load_balancer_arn.to_string()),
                marker,
                page_size: self.page_size,
                ..Default::default()
            };
            let page: DescribeListenersResponse = self.call(&request).await?;
            out.extend(page.listeners);
            match page.next_marker {
                Some(next) => marker = Some(next),
                None => return Ok(out),
            }
        }
    }

    async fn modify_listener(
        &self,
        listener_arn: &str,
        action: &ForwardAction,
    ) -> Result<Listener, ProviderError> {
        let request = ModifyListenerRequest {
            listener_arn: listener_arn.to_string(),
            default_action: Some(action.clone()),
            ..Default::default()
        };
        let response: ModifyListenerResponse = self.call(&request).await?;
        the_one(
            Operation::Elbv2(ModifyListenerRequest::ACTION),
            response.listeners,
            "listener",
        )
    }

    /// The endstate extension; the built-in cloud answers it, ELBv2 and
    /// moto refuse it (an error that [`ProviderError::is_unsupported`]).
    async fn target_group_request_counts(
        &self,
        target_group_arn: &str,
        window_seconds: u32,
    ) -> Result<TargetGroupRequestCounts, ProviderError> {
        let request = DescribeTargetGroupRequestCountsRequest {
            target_group_arn: target_group_arn.to_string(),
            window_seconds,
        };
        let response: DescribeTargetGroupRequestCountsResponse = self.call(&request).await?;
        Ok(response.counts)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_is_the_configured_one_else_aws_regional() {
        let aws = Ec2Config::new("eu-west-3");
        assert_eq!(
            elbv2_endpoint_url(&aws),
            "https://elasticloadbalancing.eu-west-3.amazonaws.com/"
        );
        let moto = Ec2Config::new("us-east-1").with_endpoint("http://127.0.0.1:5000");
        let client = Elbv2Client::with_static_credentials(moto, "a", "b", None).unwrap();
        assert_eq!(client.endpoint(), "http://127.0.0.1:5000/");
        assert_eq!(client.region(), "us-east-1");
        let bad = Ec2Config::new("us-east-1").with_endpoint("ftp://127.0.0.1/");
        assert!(matches!(
            Elbv2Client::with_static_credentials(bad, "a", "b", None),
            Err(ProviderError::Config(_))
        ));
    }

    #[test]
    fn elbv2_error_documents_map_to_api_errors() {
        let throttled = Elbv2ErrorResponse::sender("Throttling", "Rate exceeded", "r-1").to_xml();
        let error = api_error(Operation::Elbv2("ModifyListener"), 400, &throttled);
        assert!(error.is_throttle(), "{error:?}");
        assert!(error.is_retryable());
        assert!(!error.outcome_unknown());
        assert!(error.to_string().contains("ModifyListener"), "{error}");
        match &error {
            ProviderError::Api {
                operation,
                status,
                code,
                request_id,
                ..
            } => {
                assert_eq!(*operation, Operation::Elbv2("ModifyListener"));
                assert_eq!(operation.action(), "ModifyListener");
                assert_eq!(*status, 400);
                assert_eq!(code, "Throttling");
                assert_eq!(request_id.as_deref(), Some("r-1"));
            }
            other => panic!("{other:?}"),
        }
        // An EC2-only endpoint refuses the extension in EC2's format.
        let ec2 = "<Response><Errors><Error><Code>InvalidAction</Code><Message>no</Message></Error></Errors><RequestID>r</RequestID></Response>";
        let error = api_error(
            Operation::Elbv2("DescribeTargetGroupRequestCounts"),
            400,
            ec2,
        );
        assert!(error.is_unsupported());
        let html = api_error(Operation::Elbv2("CreateListener"), 502, "<html>bad</html>");
        assert_eq!(html.code(), Some("Http502"));
        assert!(html.is_retryable());
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let client = Elbv2Client::with_static_credentials(
            Ec2Config::new("us-east-1").with_endpoint("http://127.0.0.1:9/"),
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
        )
        .unwrap();
        let debug = format!("{client:?}");
        assert!(!debug.contains("wJalrXUtnFEMI"), "{debug}");
    }

    /// Serves DescribeTargetGroups from `pages` on loopback, one request
    /// per connection: page N+1 when the request's Marker is `mN`.
    async fn serve_pages(
        pages: Vec<Vec<TargetGroup>>,
    ) -> (String, tokio::task::JoinHandle<Vec<Option<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut markers = Vec::new();
            for _ in 0..pages.len() {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                let body = loop {
                    let n = socket.read(&mut buf).await.unwrap();
                    assert!(n > 0, "connection closed early");
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                let (name, value) = l.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            break body.to_string();
                        }
                    }
                };
                let params = endstate_wire::Params::from_form(&body).unwrap();
                let request = DescribeTargetGroupsRequest::from_params(&params).unwrap();
                let index = match &request.marker {
                    None => 0,
                    Some(m) => m.trim_start_matches('m').parse::<usize>().unwrap() + 1,
                };
                markers.push(request.marker.clone());
                let page = DescribeTargetGroupsResponse {
                    request_id: Some(format!("r{index}")),
                    target_groups: pages[index].clone(),
                    next_marker: (index + 1 < pages.len()).then(|| format!("m{index}")),
                };
                let xml = page.to_xml();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                    xml.len()
                );
                socket.write_all(reply.as_bytes()).await.unwrap();
            }
            markers
        });
        (url, server)
    }

    #[tokio::test]
    async fn describe_target_groups_follows_next_marker() {
        let group = |n: u32| TargetGroup {
            arn: format!("arn:tg/{n}"),
            name: format!("tg-{n}"),
            protocol: "HTTP".into(),
            port: 8080,
            vpc_id: None,
            health_check: TargetGroupHealthCheck::defaults("HTTP"),
            load_balancer_arns: Vec::new(),
            tags: Vec::new(),
        };
        let pages = vec![
            vec![group(0), group(1)],
            vec![group(2), group(3)],
            vec![group(4)],
        ];
        let (url, server) = serve_pages(pages).await;
        let config = Ec2Config::new("us-east-1").with_endpoint(url);
        let client = Elbv2Client::with_static_credentials(config, "a", "b", None)
            .unwrap()
            .with_page_size(2);
        let all = client.describe_target_groups(None).await.unwrap();
        assert_eq!(
            all.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["tg-0", "tg-1", "tg-2", "tg-3", "tg-4"]
        );
        assert_eq!(
            server.await.unwrap(),
            [None, Some("m0".to_string()), Some("m1".to_string())]
        );
        assert_eq!(
            client
                .request_counts()
                .get(&Operation::Elbv2("DescribeTargetGroups")),
            Some(&3)
        );
    }
}
