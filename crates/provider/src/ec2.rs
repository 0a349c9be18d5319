//! [`Ec2Client`]: our own EC2 Query-protocol client, one HTTP POST per
//! [`Provider`] call, signed with SigV4 (`aws-sigv4`) using credentials from
//! the standard AWS chain (`aws-config`). It talks to any EC2-compatible
//! endpoint: real AWS, moto, or the built-in cloud.
//!
//! What it is not: it does not retry, rate-limit or page on its own (the
//! executor does all three), and it logs neither credentials nor request
//! bodies (which carry user data). The wire format lives in `endstate-wire`;
//! HTTP, credentials and signing in `query`, shared with the ELBv2 client.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_credential_types::provider::SharedCredentialsProvider;
use base64::Engine as _;
use endstate_wire::{
    BlockDeviceMapping, CreateTagsRequest, CreateTagsResponse, DeleteTag, DeleteTagsRequest,
    DeleteTagsResponse, DescribeAvailabilityZonesRequest, DescribeAvailabilityZonesResponse,
    DescribeImagesRequest, DescribeImagesResponse, DescribeInstanceStatusRequest,
    DescribeInstanceStatusResponse, DescribeInstanceUtilizationRequest,
    DescribeInstanceUtilizationResponse, DescribeInstancesRequest, DescribeInstancesResponse,
    EbsBlockDevice, ErrorResponse, GetConsoleOutputRequest, GetConsoleOutputResponse,
    InstanceMetadataOptions, Request, Response, RunInstancesRequest, RunInstancesResponse, Tag,
    TagSpecification, TerminateInstancesRequest, TerminateInstancesResponse, UserData,
};
use tracing::Instrument as _;

use crate::query::{self, QueryTransport};
use crate::{
    Filter, Image, Instance, InstanceState, InstanceUtilization, LaunchRequest, Operation,
    Provider, ProviderError,
};

/// The root device every launch maps its root volume to.
const ROOT_DEVICE: &str = "/dev/xvda";

/// DescribeInstances page size: EC2's maximum, the default.
const PAGE_SIZE: u32 = 1000;

/// Where and how to reach an EC2 endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Config {
    pub region: String,
    /// `None`: AWS's regional endpoint, `https://ec2.{region}.amazonaws.com/`.
    pub endpoint: Option<String>,
    /// A named profile of the shared AWS config files; `None`: the default
    /// chain (environment, profile `default`, SSO, container, IMDS).
    pub profile: Option<String>,
    /// Per-request timeout, connection included.
    pub timeout: Duration,
}

impl Ec2Config {
    /// AWS's endpoint for `region`, the default chain, a 30 s timeout.
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            endpoint: None,
            profile: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// The same, against another endpoint (moto, the built-in cloud).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// The endpoint URL requests go to.
    pub fn endpoint_url(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("https://ec2.{}.amazonaws.com/", self.region))
    }
}

/// An EC2 Query-protocol client. Cheap to share behind an `Arc`; one
/// connection pool per client.
#[derive(Debug)]
pub struct Ec2Client {
    transport: QueryTransport,
    page_size: u32,
}

impl Ec2Client {
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
            &config.endpoint_url(),
            &config.region,
            "ec2",
            config.timeout,
            provider,
        )?;
        Ok(Self {
            transport,
            page_size: PAGE_SIZE,
        })
    }

    /// Asks for DescribeInstances pages of `page_size` (EC2 accepts
    /// 5..=1000; the default is 1,000). For tests of paging.
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size.clamp(5, PAGE_SIZE);
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

    /// One page of DescribeInstanceStatus (all states when
    /// `include_all`), for status displays: the executor does not use it.
    pub async fn describe_instance_status(
        &self,
        request: &DescribeInstanceStatusRequest,
    ) -> Result<DescribeInstanceStatusResponse, ProviderError> {
        self.call(Operation::DescribeInstanceStatus, request).await
    }

    /// An instance's console output, decoded from EC2's base64 (empty when
    /// the instance has printed nothing yet).
    pub async fn console_output(&self, instance_id: &str) -> Result<Vec<u8>, ProviderError> {
        let request = GetConsoleOutputRequest {
            instance_id: instance_id.to_string(),
            latest: None,
        };
        let response: GetConsoleOutputResponse =
            self.call(Operation::GetConsoleOutput, &request).await?;
        let Some(output) = response.output else {
            return Ok(Vec::new());
        };
        base64::engine::general_purpose::STANDARD
            .decode(output.trim())
            .map_err(|e| ProviderError::Decode {
                operation: Operation::GetConsoleOutput,
                message: format!("console output is not base64: {e}"),
            })
    }

    /// Sends one request and parses its answer, in a `tracing` span that
    /// names the action (never the body: it carries user data).
    pub(crate) async fn call<Req: Request, Resp: Response>(
        &self,
        operation: Operation,
        request: &Req,
    ) -> Result<Resp, ProviderError> {
        let span = tracing::debug_span!("ec2", action = operation.action());
        self.call_in_span(operation, request).instrument(span).await
    }

    async fn call_in_span<Req: Request, Resp: Response>(
        &self,
        operation: Operation,
        request: &Req,
    ) -> Result<Resp, ProviderError> {
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
}

/// An HTTP error answer: EC2's error document, or
/// [`query::undocumented_error`] for anything else.
fn api_error(operation: Operation, status: u16, body: &str) -> ProviderError {
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

fn to_wire_filters(filters: &[Filter]) -> Vec<endstate_wire::Filter> {
    filters
        .iter()
        .map(|f| endstate_wire::Filter {
            name: f.name.clone(),
            values: f.values.clone(),
        })
        .collect()
}

fn tags_to_map(tags: Vec<Tag>) -> BTreeMap<String, String> {
    tags.into_iter().map(|t| (t.key, t.value)).collect()
}

fn parse_state(operation: Operation, name: &str) -> Result<InstanceState, ProviderError> {
    InstanceState::parse(name).ok_or_else(|| ProviderError::Decode {
        operation,
        message: format!("unknown instance state {name:?}"),
    })
}

fn to_instance(
    operation: Operation,
    wire: endstate_wire::Instance,
) -> Result<Instance, ProviderError> {
    Ok(Instance {
        state: parse_state(operation, &wire.state.name)?,
        id: wire.instance_id,
        image_id: wire.image_id,
        instance_type: wire.instance_type,
        zone: wire.availability_zone,
        subnet_id: wire.subnet_id,
        launch_time: wire.launch_time,
        private_ip: wire.private_ip_address,
        client_token: wire.client_token,
        tags: tags_to_map(wire.tags),
    })
}

/// The RunInstances request for a launch batch: MinCount = MaxCount, tags
/// on the instances and their volumes, the root volume on `/dev/xvda`.
pub fn run_instances_request(launch: &LaunchRequest) -> RunInstancesRequest {
    let tags: Vec<Tag> = launch.tags.iter().map(|(k, v)| Tag::new(k, v)).collect();
    let tag_specifications = if tags.is_empty() {
        Vec::new()
    } else {
        ["instance", "volume"]
            .into_iter()
            .map(|resource_type| TagSpecification {
                resource_type: resource_type.to_string(),
                tags: tags.clone(),
            })
            .collect()
    };
    RunInstancesRequest {
        image_id: launch.image_id.clone(),
        instance_type: Some(launch.instance_type.clone()),
        min_count: launch.count,
        max_count: launch.count,
        client_token: Some(launch.client_token.clone()),
        availability_zone: Some(launch.zone.clone()),
        subnet_id: launch.subnet_id.clone(),
        security_group_ids: launch.security_group_ids.clone(),
        key_name: launch.key_name.clone(),
        iam_instance_profile_name: launch.iam_instance_profile.clone(),
        user_data: launch.user_data.clone().map(UserData),
        block_device_mappings: launch
            .root_volume
            .iter()
            .map(|root| BlockDeviceMapping {
                device_name: ROOT_DEVICE.to_string(),
                ebs: Some(EbsBlockDevice {
                    volume_size: Some(root.size_gib),
                    volume_type: Some(root.volume_type.clone()),
                    delete_on_termination: Some(true),
                }),
            })
            .collect(),
        metadata_options: Some(InstanceMetadataOptions {
            http_tokens: Some(
                if launch.metadata.tokens_required {
                    "required"
                } else {
                    "optional"
                }
                .to_string(),
            ),
            http_put_response_hop_limit: Some(u32::from(launch.metadata.hop_limit)),
            http_endpoint: Some("enabled".to_string()),
            instance_metadata_tags: None,
        }),
        tag_specifications,
    }
}

#[async_trait]
impl Provider for Ec2Client {
    async fn run_instances(&self, request: &LaunchRequest) -> Result<Vec<Instance>, ProviderError> {
        let operation = Operation::RunInstances;
        let response: RunInstancesResponse = self
            .call(operation, &run_instances_request(request))
            .await?;
        response
            .reservation
            .instances
            .into_iter()
            .map(|i| to_instance(operation, i))
            .collect()
    }

    async fn describe_instances_page(
        &self,
        filters: &[Filter],
        next_token: Option<&str>,
    ) -> Result<(Vec<Instance>, Option<String>), ProviderError> {
        let operation = Operation::DescribeInstances;
        let request = DescribeInstancesRequest {
            instance_ids: Vec::new(),
            filters: to_wire_filters(filters),
            max_results: Some(self.page_size),
            next_token: next_token.map(str::to_string),
        };
        let response: DescribeInstancesResponse = self.call(operation, &request).await?;
        let instances = response
            .reservations
            .into_iter()
            .flat_map(|r| r.instances)
            .map(|i| to_instance(operation, i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((instances, response.next_token))
    }

    async fn terminate_instances(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, InstanceState)>, ProviderError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let operation = Operation::TerminateInstances;
        let request = TerminateInstancesRequest {
            instance_ids: ids.to_vec(),
        };
        let response: TerminateInstancesResponse = self.call(operation, &request).await?;
        response
            .instances
            .into_iter()
            .map(|change| {
                Ok((
                    change.instance_id,
                    parse_state(operation, &change.current_state.name)?,
                ))
            })
            .collect()
    }

    async fn create_tags(
        &self,
        ids: &[String],
        tags: &BTreeMap<String, String>,
    ) -> Result<(), ProviderError> {
        if ids.is_empty() || tags.is_empty() {
            return Ok(());
        }
        let request = CreateTagsRequest {
            resource_ids: ids.to_vec(),
            tags: tags.iter().map(|(k, v)| Tag::new(k, v)).collect(),
        };
        let _: CreateTagsResponse = self.call(Operation::CreateTags, &request).await?;
        Ok(())
    }

    async fn delete_tags(&self, ids: &[String], keys: &[String]) -> Result<(), ProviderError> {
        if ids.is_empty() || keys.is_empty() {
            return Ok(());
        }
        let request = DeleteTagsRequest {
            resource_ids: ids.to_vec(),
            tags: keys
                .iter()
                .map(|key| DeleteTag {
                    key: key.clone(),
                    value: None,
                })
                .collect(),
        };
        let _: DeleteTagsResponse = self.call(Operation::DeleteTags, &request).await?;
        Ok(())
    }

    async fn describe_images(&self, ids: &[String]) -> Result<Vec<Image>, ProviderError> {
        // Without ids DescribeImages lists every public image: never what
        // a caller asking "by id" wants.
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let request = DescribeImagesRequest {
            image_ids: ids.to_vec(),
            ..DescribeImagesRequest::default()
        };
        let response: DescribeImagesResponse =
            self.call(Operation::DescribeImages, &request).await?;
        Ok(response
            .images
            .into_iter()
            .map(|image| Image {
                id: image.image_id,
                name: image.name,
                state: image.state,
                tags: tags_to_map(image.tags),
            })
            .collect())
    }

    async fn describe_availability_zones(&self) -> Result<Vec<String>, ProviderError> {
        let response: DescribeAvailabilityZonesResponse = self
            .call(
                Operation::DescribeAvailabilityZones,
                &DescribeAvailabilityZonesRequest::default(),
            )
            .await?;
        Ok(response.zones.into_iter().map(|z| z.zone_name).collect())
    }

    /// `DescribeInstanceUtilization`, which only the built-in cloud's
    /// process backend answers: EC2 itself refuses it with `InvalidAction`
    /// and the simulated backend with `UnsupportedOperation` (both
    /// [`ProviderError::is_unsupported`]).
    async fn describe_instance_status(
        &self,
        ids: &[String],
    ) -> Result<Vec<crate::InstanceStatusCheck>, ProviderError> {
        // Named ids go in one call; none means every instance, in pages.
        let mut out = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let request = DescribeInstanceStatusRequest {
                instance_ids: ids.to_vec(),
                include_all_instances: Some(true),
                max_results: ids.is_empty().then_some(1_000),
                next_token: next_token.take(),
                ..DescribeInstanceStatusRequest::default()
            };
            let response: DescribeInstanceStatusResponse = self
                .call(Operation::DescribeInstanceStatus, &request)
                .await?;
            out.extend(
                response
                    .statuses
                    .into_iter()
                    .map(|s| crate::InstanceStatusCheck {
                        instance_id: s.instance_id,
                        state: InstanceState::parse(&s.state.name)
                            .unwrap_or(InstanceState::Pending),
                        instance_status: s.instance_status,
                        system_status: s.system_status,
                    }),
            );
            match response.next_token {
                Some(token) if !token.is_empty() && ids.is_empty() => next_token = Some(token),
                _ => return Ok(out),
            }
        }
    }

    async fn instance_utilization(
        &self,
        ids: &[String],
    ) -> Result<Vec<InstanceUtilization>, ProviderError> {
        let request = DescribeInstanceUtilizationRequest {
            instance_ids: ids.to_vec(),
        };
        let response: DescribeInstanceUtilizationResponse = self
            .call(Operation::DescribeInstanceUtilization, &request)
            .await?;
        Ok(response
            .instances
            .into_iter()
            .map(|i| InstanceUtilization {
                instance_id: i.instance_id,
                cpu_utilization: i.cpu_utilization,
                cpu_seconds: i.cpu_seconds,
                window_seconds: i.window_seconds,
                sampled_at: i.sampled_at,
            })
            .collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn launch_request_maps_to_run_instances() {
        let launch = LaunchRequest {
            image_id: "ami-1".into(),
            instance_type: "t3.micro".into(),
            count: 4,
            zone: "us-east-1b".into(),
            subnet_id: Some("subnet-1".into()),
            security_group_ids: vec!["sg-1".into()],
            key_name: None,
            iam_instance_profile: Some("web".into()),
            root_volume: Some(endstate_model::RootVolume {
                size_gib: 16,
                volume_type: "gp3".into(),
            }),
            metadata: endstate_model::MetadataOptions {
                tokens_required: false,
                hop_limit: 1,
            },
            user_data: Some(b"#!/bin/sh\n".to_vec()),
            tags: [("endstate:project".to_string(), "demo".to_string())]
                .into_iter()
                .collect(),
            client_token: "intent-7".into(),
        };
        let params = run_instances_request(&launch).to_params();
        let expected = [
            ("MinCount", "4"),
            ("MaxCount", "4"),
            ("ClientToken", "intent-7"),
            ("Placement.AvailabilityZone", "us-east-1b"),
            ("IamInstanceProfile.Name", "web"),
            ("UserData", "IyEvYmluL3NoCg=="),
            ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
            ("BlockDeviceMapping.1.Ebs.VolumeSize", "16"),
            ("BlockDeviceMapping.1.Ebs.VolumeType", "gp3"),
            ("MetadataOptions.HttpTokens", "optional"),
            ("MetadataOptions.HttpPutResponseHopLimit", "1"),
            ("MetadataOptions.HttpEndpoint", "enabled"),
            ("TagSpecification.1.ResourceType", "instance"),
            ("TagSpecification.2.ResourceType", "volume"),
            ("TagSpecification.2.Tag.1.Key", "endstate:project"),
        ];
        for (name, value) in expected {
            assert_eq!(params.get(name), Some(value), "{name}");
        }
    }

    #[test]
    fn non_xml_error_bodies_keep_their_status() {
        let error = api_error(
            Operation::DescribeInstances,
            502,
            "<html>Bad Gateway</html>",
        );
        assert_eq!(error.code(), Some("Http502"));
        assert!(error.is_retryable());
        let error = api_error(
            Operation::RunInstances,
            503,
            "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>slow down</Message></Error></Errors><RequestID>r1</RequestID></Response>",
        );
        assert!(error.is_throttle());
        assert!(!error.outcome_unknown());
    }

    #[test]
    fn bad_endpoints_are_configuration_errors() {
        for endpoint in ["not a url", "ftp://127.0.0.1/", "unix:/tmp/sock"] {
            let config = Ec2Config::new("us-east-1").with_endpoint(endpoint);
            let err = Ec2Client::with_static_credentials(config, "a", "b", None).unwrap_err();
            assert!(
                matches!(err, ProviderError::Config(_)),
                "{endpoint}: {err:?}"
            );
        }
        let client =
            Ec2Client::with_static_credentials(Ec2Config::new("eu-west-3"), "a", "b", None)
                .unwrap();
        assert_eq!(client.endpoint(), "https://ec2.eu-west-3.amazonaws.com/");
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let client = Ec2Client::with_static_credentials(
            Ec2Config::new("us-east-1").with_endpoint("http://127.0.0.1:9/"),
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
        )
        .unwrap();
        let debug = format!("{client:?}");
        assert!(!debug.contains("wJalrXUtnFEMI"), "{debug}");
    }
}
