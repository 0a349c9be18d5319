//! The narrow interface endstate converges through — launch a batch, describe
//! by tag with paging, terminate, tag, images, zones — and its
//! implementations: [`ec2::Ec2Client`], our own EC2 Query-protocol client
//! (real AWS, moto, the built-in cloud), and [`fake::FakeProvider`], an
//! in-memory stand-in for unit tests of the layers above. The image
//! pipeline's calls (stop, console, CreateImage, DescribeImages,
//! DeregisterImage, DeleteSnapshot) are their own trait,
//! [`images::Images`], as ELBv2's are [`elbv2::LoadBalancing`].
//!
//! This crate does not rate-limit or retry: every call is one request, and
//! its error says whether it may be retried. Token buckets and backoff live in
//! `endstate-exec`, which wraps any provider.

use std::collections::BTreeMap;

use async_trait::async_trait;
use endstate_model::{MetadataOptions, RootVolume};
pub use endstate_plan::observed::{Instance, InstanceState};

pub mod ec2;
pub mod elbv2;
pub mod fake;
pub mod images;
mod query;

/// One RunInstances call: `count` instances of one type in one zone, tagged
/// at launch. Its Debug output shows the user data's length, not its bytes.
#[derive(Clone, PartialEq)]
pub struct LaunchRequest {
    pub image_id: String,
    pub instance_type: String,
    pub count: u32,
    pub zone: String,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    pub key_name: Option<String>,
    pub iam_instance_profile: Option<String>,
    pub root_volume: Option<RootVolume>,
    pub metadata: MetadataOptions,
    /// Raw bytes (already gzipped if that was needed); the client base64s them.
    pub user_data: Option<Vec<u8>>,
    /// Applied to the instances (and their volumes) in the same call.
    pub tags: BTreeMap<String, String>,
    /// EC2's idempotency token, at most 64 ASCII characters.
    pub client_token: String,
}

/// User data routinely carries secrets; Debug (and so every log line and
/// panic message that prints a request) shows its length only.
impl std::fmt::Debug for LaunchRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchRequest")
            .field("image_id", &self.image_id)
            .field("instance_type", &self.instance_type)
            .field("count", &self.count)
            .field("zone", &self.zone)
            .field("subnet_id", &self.subnet_id)
            .field("security_group_ids", &self.security_group_ids)
            .field("key_name", &self.key_name)
            .field("iam_instance_profile", &self.iam_instance_profile)
            .field("root_volume", &self.root_volume)
            .field("metadata", &self.metadata)
            .field(
                "user_data",
                &self
                    .user_data
                    .as_ref()
                    .map(|d| format!("<{} bytes redacted>", d.len())),
            )
            .field("tags", &self.tags)
            .field("client_token", &self.client_token)
            .finish()
    }
}

/// A DescribeInstances filter (`tag:endstate:project`, `instance-state-name`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

impl Filter {
    /// A filter on one name with the given values.
    pub fn new(
        name: impl Into<String>,
        values: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            name: name.into(),
            values: values.into_iter().map(Into::into).collect(),
        }
    }

    /// `tag:KEY = VALUE`.
    pub fn tag(key: &str, value: impl Into<String>) -> Self {
        Self::new(format!("tag:{key}"), [value.into()])
    }
}

/// An image as DescribeImages reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub id: String,
    pub name: Option<String>,
    pub state: String,
    pub tags: BTreeMap<String, String>,
}

/// One instance's CPU over the cloud's last sampling window, as the
/// One instance's status checks, as DescribeInstanceStatus reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatusCheck {
    pub instance_id: String,
    pub state: InstanceState,
    /// `ok`, `impaired`, `initializing`, `insufficient-data` or `not-applicable`.
    pub instance_status: String,
    pub system_status: String,
}

/// The most instance ids one DescribeInstanceStatus call may name.
pub const STATUS_BATCH: usize = 100;

/// built-in cloud's `DescribeInstanceUtilization` (an endstate extension,
/// not an EC2 action) reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceUtilization {
    pub instance_id: String,
    /// Percent of one core: one busy thread reads about 100, two about 200.
    pub cpu_utilization: f64,
    /// CPU seconds of the instance's processes as far as the cloud has
    /// seen them (what they had used when it first sampled them included).
    pub cpu_seconds: f64,
    /// The window's length in wall-clock seconds.
    pub window_seconds: f64,
    /// When the window ended (RFC 3339).
    pub sampled_at: String,
}

/// Which bucket of EC2's request-rate limits an operation draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    RunInstances,
    DescribeInstances,
    TerminateInstances,
    CreateTags,
    DeleteTags,
    DescribeImages,
    DescribeAvailabilityZones,
    DescribeInstanceStatus,
    GetConsoleOutput,
    /// The image pipeline's calls ([`images::Images`]).
    StopInstances,
    CreateImage,
    DeregisterImage,
    DeleteSnapshot,
    /// endstate's extension action (not EC2's); a non-mutating describe.
    DescribeInstanceUtilization,
    /// endstate's extension actions (not EC2's): a volume-style bake on
    /// the built-in cloud, and its output.
    BakeImage,
    GetBakeOutput,
    /// An Elastic Load Balancing v2 action, by name (its own API, with its
    /// own limits; see [`elbv2`]).
    Elbv2(&'static str),
}

impl Operation {
    /// The EC2 action name.
    pub fn action(self) -> &'static str {
        match self {
            Operation::RunInstances => "RunInstances",
            Operation::DescribeInstances => "DescribeInstances",
            Operation::TerminateInstances => "TerminateInstances",
            Operation::CreateTags => "CreateTags",
            Operation::DeleteTags => "DeleteTags",
            Operation::DescribeImages => "DescribeImages",
            Operation::DescribeAvailabilityZones => "DescribeAvailabilityZones",
            Operation::DescribeInstanceStatus => "DescribeInstanceStatus",
            Operation::GetConsoleOutput => "GetConsoleOutput",
            Operation::StopInstances => "StopInstances",
            Operation::CreateImage => "CreateImage",
            Operation::DeregisterImage => "DeregisterImage",
            Operation::DeleteSnapshot => "DeleteSnapshot",
            Operation::DescribeInstanceUtilization => "DescribeInstanceUtilization",
            Operation::BakeImage => "BakeImage",
            Operation::GetBakeOutput => "GetBakeOutput",
            Operation::Elbv2(action) => action,
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The endpoint answered with an EC2 error (`RequestLimitExceeded`,
    /// `InsufficientInstanceCapacity`, `InvalidParameterValue`, ...).
    #[error("{operation:?} failed: {code}: {message} (HTTP {status}{})", request_id.as_deref().map(|r| format!(", request {r}")).unwrap_or_default())]
    Api {
        operation: Operation,
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
    },
    /// No answer: the request may or may not have taken effect
    /// (`outcome_unknown`), or it never left (connection refused).
    #[error("{operation:?}: {message}")]
    Transport {
        operation: Operation,
        message: String,
        /// True when the request may have reached the server (timeout, reset
        /// after sending): a create must be resolved by reading before a retry.
        outcome_unknown: bool,
    },
    /// An answer that is not what the protocol promises.
    #[error("{operation:?}: unreadable response: {message}")]
    Decode {
        operation: Operation,
        message: String,
    },
    /// This provider cannot do the operation at all (no request was
    /// made): CPU utilization from a provider that has no such action.
    #[error("{operation:?} is not supported by {provider}")]
    Unsupported {
        operation: Operation,
        provider: String,
    },
    /// No credentials could be found or signing failed.
    #[error("credentials: {0}")]
    Credentials(String),
    /// The client cannot be built as configured (an endpoint that is not a
    /// URL, say). No call was made.
    #[error("configuration: {0}")]
    Config(String),
}

impl ProviderError {
    /// EC2's error code, for API errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            ProviderError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The provider or its endpoint does not do this operation: our own
    /// [`ProviderError::Unsupported`], or an endpoint's `InvalidAction`
    /// (EC2, for endstate's extension actions) or `UnsupportedOperation`.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, ProviderError::Unsupported { .. })
            || matches!(self.code(), Some("InvalidAction" | "UnsupportedOperation"))
    }

    /// The resource the call named does not exist (EC2's `*.NotFound`
    /// codes: `InvalidAMIID.NotFound`, `InvalidSnapshot.NotFound`, ...):
    /// for a delete, the work is already done.
    pub fn is_not_found(&self) -> bool {
        self.code().is_some_and(|code| code.ends_with(".NotFound"))
    }

    /// EC2 throttled the call.
    pub fn is_throttle(&self) -> bool {
        matches!(
            self.code(),
            Some("RequestLimitExceeded" | "Throttling" | "ThrottlingException")
        )
    }

    /// No capacity of this type in this zone.
    pub fn is_capacity(&self) -> bool {
        matches!(
            self.code(),
            Some("InsufficientInstanceCapacity" | "InsufficientCapacity" | "Unsupported")
        )
    }

    /// Worth retrying after a backoff: throttles, 5xx, transport failures.
    pub fn is_retryable(&self) -> bool {
        match self {
            // EC2 sends InsufficientInstanceCapacity as a server error, but
            // asking again for the same type in the same zone will not help:
            // the caller falls back to another type or zone instead.
            ProviderError::Api { status, .. } => {
                self.is_throttle() || (*status >= 500 && !self.is_capacity())
            }
            ProviderError::Transport { .. } => true,
            ProviderError::Decode { .. }
            | ProviderError::Unsupported { .. }
            | ProviderError::Credentials(_)
            | ProviderError::Config(_) => false,
        }
    }

    /// The call may have taken effect although no answer came back.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ProviderError::Transport {
                outcome_unknown, ..
            } => *outcome_unknown,
            // A 5xx may come after the server acted.
            // Throttled and capacity-refused calls were not carried out.
            ProviderError::Api { status, .. } => {
                *status >= 500 && !self.is_throttle() && !self.is_capacity()
            }
            _ => false,
        }
    }
}

/// The operations endstate converges through. One method call is one API
/// request (paging aside); implementations neither retry nor rate-limit.
#[async_trait]
pub trait Provider: Send + Sync {
    /// RunInstances with MinCount = MaxCount = `count`.
    async fn run_instances(&self, request: &LaunchRequest) -> Result<Vec<Instance>, ProviderError>;

    /// One page of DescribeInstances (MaxResults 1000). Returns the
    /// instances and the next page's token.
    async fn describe_instances_page(
        &self,
        filters: &[Filter],
        next_token: Option<&str>,
    ) -> Result<(Vec<Instance>, Option<String>), ProviderError>;

    /// TerminateInstances on up to 1,000 ids; returns each id's new state.
    async fn terminate_instances(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, InstanceState)>, ProviderError>;

    /// CreateTags on up to 1,000 resources.
    async fn create_tags(
        &self,
        ids: &[String],
        tags: &BTreeMap<String, String>,
    ) -> Result<(), ProviderError>;

    /// DeleteTags (by key) on up to 1,000 resources.
    async fn delete_tags(&self, ids: &[String], keys: &[String]) -> Result<(), ProviderError>;

    /// DescribeImages by id.
    async fn describe_images(&self, ids: &[String]) -> Result<Vec<Image>, ProviderError>;

    /// DescribeAvailabilityZones: the zone names of the region.
    async fn describe_availability_zones(&self) -> Result<Vec<String>, ProviderError>;

    /// CPU utilization of `ids` (every instance when empty) over the
    /// endpoint's last sampling window; instances it has not sampled yet
    /// are absent. Only the built-in cloud's process backend answers it
    /// (`DescribeInstanceUtilization`, an endstate extension: EC2 has no
    /// metrics in its API); the default is [`ProviderError::Unsupported`].
    /// DescribeInstanceStatus of up to [`STATUS_BATCH`] `ids`, or of every
    /// instance when `ids` is empty (in pages of 1,000), in every state
    /// (`IncludeAllInstances`). The default is [`ProviderError::Unsupported`].
    async fn describe_instance_status(
        &self,
        ids: &[String],
    ) -> Result<Vec<InstanceStatusCheck>, ProviderError> {
        let _ = ids;
        Err(ProviderError::Unsupported {
            operation: Operation::DescribeInstanceStatus,
            provider: "this provider".to_string(),
        })
    }

    async fn instance_utilization(
        &self,
        ids: &[String],
    ) -> Result<Vec<InstanceUtilization>, ProviderError> {
        let _ = ids;
        Err(ProviderError::Unsupported {
            operation: Operation::DescribeInstanceUtilization,
            provider: "this provider".to_string(),
        })
    }
}

/// Every page of DescribeInstances for `filters`, and how many pages (calls)
/// that took. An empty NextToken ends the listing, as no token does.
pub async fn describe_all(
    provider: &dyn Provider,
    filters: &[Filter],
) -> Result<(Vec<Instance>, usize), ProviderError> {
    let mut instances = Vec::new();
    let mut next_token: Option<String> = None;
    let mut pages = 0;
    loop {
        let (page, next) = provider
            .describe_instances_page(filters, next_token.as_deref())
            .await?;
        pages += 1;
        instances.extend(page);
        match next {
            Some(token) if !token.is_empty() => next_token = Some(token),
            _ => return Ok((instances, pages)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Implements only the required methods, as a provider written before
    /// `instance_utilization` existed.
    struct FakeWithoutUtilization;

    #[async_trait]
    impl Provider for FakeWithoutUtilization {
        async fn run_instances(&self, _: &LaunchRequest) -> Result<Vec<Instance>, ProviderError> {
            Ok(Vec::new())
        }
        async fn describe_instances_page(
            &self,
            _: &[Filter],
            _: Option<&str>,
        ) -> Result<(Vec<Instance>, Option<String>), ProviderError> {
            Ok((Vec::new(), None))
        }
        async fn terminate_instances(
            &self,
            _: &[String],
        ) -> Result<Vec<(String, InstanceState)>, ProviderError> {
            Ok(Vec::new())
        }
        async fn create_tags(
            &self,
            _: &[String],
            _: &BTreeMap<String, String>,
        ) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn delete_tags(&self, _: &[String], _: &[String]) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn describe_images(&self, _: &[String]) -> Result<Vec<Image>, ProviderError> {
            Ok(Vec::new())
        }
        async fn describe_availability_zones(&self) -> Result<Vec<String>, ProviderError> {
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn utilization_is_unsupported_unless_a_provider_implements_it() {
        let err = FakeWithoutUtilization
            .instance_utilization(&[])
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            ProviderError::Unsupported {
                operation: Operation::DescribeInstanceUtilization,
                ..
            }
        ));
        assert!(err.is_unsupported());
        assert!(!err.is_retryable());
        assert!(
            err.to_string().contains("DescribeInstanceUtilization"),
            "{err}"
        );
        for code in ["InvalidAction", "UnsupportedOperation"] {
            let api = ProviderError::Api {
                operation: Operation::DescribeInstanceUtilization,
                status: 400,
                code: code.to_string(),
                message: String::new(),
                request_id: None,
            };
            assert!(api.is_unsupported(), "{code}");
        }
    }
}
