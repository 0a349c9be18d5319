//! The [`Governor`]: every API call endstate makes passes through it. It
//! draws from client-side token buckets shaped like EC2's documented limits
//! (per request class, and per instance for launches and terminations) so
//! that endstate throttles itself before EC2 has to, and it retries what EC2
//! says may be retried, with full-jitter exponential backoff.
//!
//! It never retries a call whose outcome is unknown when that call creates
//! something (RunInstances): that is the executor's to resolve, by reading
//! before it tries again. Every wait is reported, so a throttled apply shows
//! progress rather than looking stuck.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use endstate_clock::SharedClock;
use endstate_provider::{
    Filter, Image, Instance, InstanceState, InstanceUtilization, LaunchRequest, Operation,
    Provider, ProviderError,
};
use endstate_wire::limits::{BucketShape, RequestClass, ResourceClass, TokenBucket};
use rand::Rng;

use crate::report::{Event, Reporter};

/// The share of EC2's refill rates the client-side buckets use.
pub const CLIENT_RATE_SHARE: f64 = 0.95;

/// Shapes of the client-side buckets. `ec2_defaults()` mirrors EC2's
/// documented defaults; `unlimited()` turns limiting off.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    pub requests: BTreeMap<RequestClass, BucketShape>,
    pub resources: BTreeMap<ResourceClass, BucketShape>,
}

impl RateLimits {
    /// EC2's documented default buckets, refilled 5% slower than EC2
    /// refills its own: a call admitted here reaches EC2 a little later than
    /// it left, and that delay varies, so a client running exactly at EC2's
    /// rate would now and then arrive a hair early and be throttled. The
    /// margin keeps endstate under EC2's limit rather than on it.
    pub fn ec2_defaults() -> Self {
        let under = |shape: BucketShape| {
            BucketShape::new(shape.capacity, shape.refill_per_sec * CLIENT_RATE_SHARE)
        };
        Self {
            requests: RequestClass::ALL
                .iter()
                .map(|c| (*c, under(c.default_shape())))
                .collect(),
            resources: [
                ResourceClass::RunInstances,
                ResourceClass::TerminateInstances,
                ResourceClass::StartInstances,
                ResourceClass::StopInstances,
            ]
            .iter()
            .map(|c| (*c, under(c.default_shape())))
            .collect(),
        }
    }

    /// No client-side limits.
    pub fn unlimited() -> Self {
        Self {
            requests: BTreeMap::new(),
            resources: BTreeMap::new(),
        }
    }
}

/// How retries back off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// First backoff ceiling; doubles per attempt.
    pub base: Duration,
    /// The backoff ceiling never exceeds this.
    pub cap: Duration,
    /// Attempts for errors other than throttling.
    pub max_attempts: u32,
    /// Attempts when EC2 keeps throttling: much higher, since throttling
    /// passes by itself.
    pub max_throttled_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(20),
            max_attempts: 6,
            max_throttled_attempts: 40,
        }
    }
}

struct Buckets {
    requests: BTreeMap<RequestClass, TokenBucket>,
    resources: BTreeMap<ResourceClass, TokenBucket>,
}

/// A provider wrapped in token buckets and retries. Implements [`Provider`]
/// itself, so the layers above cannot tell the difference.
pub struct Governor {
    inner: Arc<dyn Provider>,
    clock: SharedClock,
    buckets: Mutex<Buckets>,
    retry: RetryPolicy,
    reporter: Arc<dyn Reporter>,
    stats: Mutex<CallStats>,
}

/// What the governor did: calls per action, throttle waits, retries.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CallStats {
    pub calls: BTreeMap<String, u64>,
    pub retries: u64,
    /// Responses EC2 throttled.
    pub throttled: u64,
    /// Time spent waiting on the client-side buckets, in clock seconds.
    pub bucket_wait_secs: f64,
}

impl Governor {
    pub fn new(
        inner: Arc<dyn Provider>,
        clock: SharedClock,
        limits: &RateLimits,
        retry: RetryPolicy,
        reporter: Arc<dyn Reporter>,
    ) -> Self {
        let now = clock.now();
        let buckets = Buckets {
            requests: limits
                .requests
                .iter()
                .map(|(c, s)| (*c, TokenBucket::new(*s, now)))
                .collect(),
            resources: limits
                .resources
                .iter()
                .map(|(c, s)| (*c, TokenBucket::new(*s, now)))
                .collect(),
        };
        Self {
            inner,
            clock,
            buckets: Mutex::new(buckets),
            retry,
            reporter,
            stats: Mutex::new(CallStats::default()),
        }
    }

    /// What the governor has done so far.
    pub fn stats(&self) -> CallStats {
        lock(&self.stats).clone()
    }

    /// Waits until the buckets hold one request token of `class` and
    /// `resources` instance tokens of `resource`, then takes them.
    async fn admit(
        &self,
        operation: Operation,
        class: RequestClass,
        resource: Option<(ResourceClass, f64)>,
    ) {
        loop {
            let wait = {
                let mut buckets = lock(&self.buckets);
                let now = self.clock.now();
                let Buckets {
                    requests,
                    resources,
                } = &mut *buckets;
                match requests.get_mut(&class).map(|b| b.try_take(now, 1.0)) {
                    Some(Err(wait)) => Some(wait),
                    _ => {
                        let resource_wait = resource.and_then(|(rc, n)| {
                            resources
                                .get_mut(&rc)
                                .and_then(|b| b.try_take(now, n).err())
                        });
                        if resource_wait.is_some() {
                            // Give the request token back: the call does not go out yet.
                            if let Some(bucket) = requests.get_mut(&class) {
                                bucket.charge(now, -1.0);
                            }
                        }
                        resource_wait
                    }
                }
            };
            match wait {
                None => return,
                Some(wait) => {
                    self.reporter.event(&Event::Throttled {
                        action: operation.action(),
                        wait,
                        by_server: false,
                    });
                    lock(&self.stats).bucket_wait_secs += wait.as_secs_f64();
                    self.clock.sleep(wait).await;
                }
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .retry
            .base
            .saturating_mul(2u32.saturating_pow(attempt.min(16)))
            .min(self.retry.cap);
        let millis = ceiling.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=millis.max(1)))
    }

    /// Runs `call` under the buckets and the retry policy. `creates` marks
    /// calls whose unknown outcome must not be retried blindly.
    async fn governed<T, F, Fut>(
        &self,
        operation: Operation,
        class: RequestClass,
        resource: Option<(ResourceClass, f64)>,
        creates: bool,
        mut call: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut + Send,
        Fut: std::future::Future<Output = Result<T, ProviderError>> + Send,
        T: Send,
    {
        let mut attempt = 0;
        let mut throttled_attempts = 0;
        loop {
            self.admit(operation, class, resource).await;
            *lock(&self.stats)
                .calls
                .entry(operation.action().to_string())
                .or_default() += 1;
            let error = match call().await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if error.is_throttle() {
                throttled_attempts += 1;
                lock(&self.stats).throttled += 1;
                if throttled_attempts >= self.retry.max_throttled_attempts {
                    return Err(error);
                }
                let wait = self.backoff(throttled_attempts);
                self.reporter.event(&Event::Throttled {
                    action: operation.action(),
                    wait,
                    by_server: true,
                });
                lock(&self.stats).retries += 1;
                self.clock.sleep(wait).await;
                continue;
            }
            attempt += 1;
            if !error.is_retryable()
                || attempt >= self.retry.max_attempts
                || (creates && error.outcome_unknown())
            {
                return Err(error);
            }
            let wait = self.backoff(attempt);
            self.reporter.event(&Event::Retrying {
                action: operation.action(),
                attempt,
                wait,
                error: error.to_string(),
            });
            lock(&self.stats).retries += 1;
            self.clock.sleep(wait).await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here is a few arithmetic updates that cannot
    // leave the value half-changed, so a poisoned lock is still consistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl Provider for Governor {
    async fn run_instances(&self, request: &LaunchRequest) -> Result<Vec<Instance>, ProviderError> {
        self.governed(
            Operation::RunInstances,
            RequestClass::RunInstances,
            Some((ResourceClass::RunInstances, f64::from(request.count))),
            true,
            || self.inner.run_instances(request),
        )
        .await
    }

    async fn describe_instances_page(
        &self,
        filters: &[Filter],
        next_token: Option<&str>,
    ) -> Result<(Vec<Instance>, Option<String>), ProviderError> {
        // endstate always pages (MaxResults), so its describes are never in
        // the unfiltered-and-unpaginated class.
        self.governed(
            Operation::DescribeInstances,
            RequestClass::NonMutating,
            None,
            false,
            || self.inner.describe_instances_page(filters, next_token),
        )
        .await
    }

    async fn terminate_instances(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, InstanceState)>, ProviderError> {
        self.governed(
            Operation::TerminateInstances,
            RequestClass::TerminateInstances,
            Some((ResourceClass::TerminateInstances, ids.len() as f64)),
            false,
            || self.inner.terminate_instances(ids),
        )
        .await
    }

    async fn create_tags(
        &self,
        ids: &[String],
        tags: &BTreeMap<String, String>,
    ) -> Result<(), ProviderError> {
        self.governed(
            Operation::CreateTags,
            RequestClass::Tags,
            None,
            false,
            || self.inner.create_tags(ids, tags),
        )
        .await
    }

    async fn delete_tags(&self, ids: &[String], keys: &[String]) -> Result<(), ProviderError> {
        self.governed(
            Operation::DeleteTags,
            RequestClass::Tags,
            None,
            false,
            || self.inner.delete_tags(ids, keys),
        )
        .await
    }

    async fn describe_images(&self, ids: &[String]) -> Result<Vec<Image>, ProviderError> {
        self.governed(
            Operation::DescribeImages,
            RequestClass::NonMutating,
            None,
            false,
            || self.inner.describe_images(ids),
        )
        .await
    }

    async fn describe_availability_zones(&self) -> Result<Vec<String>, ProviderError> {
        self.governed(
            Operation::DescribeAvailabilityZones,
            RequestClass::NonMutating,
            None,
            false,
            || self.inner.describe_availability_zones(),
        )
        .await
    }

    /// A describe for the buckets (it is endstate's extension action, not
    /// EC2's; the built-in cloud throttles it as one).
    async fn describe_instance_status(
        &self,
        ids: &[String],
    ) -> Result<Vec<endstate_provider::InstanceStatusCheck>, ProviderError> {
        self.governed(
            Operation::DescribeInstanceStatus,
            RequestClass::NonMutating,
            None,
            false,
            || self.inner.describe_instance_status(ids),
        )
        .await
    }

    async fn instance_utilization(
        &self,
        ids: &[String],
    ) -> Result<Vec<InstanceUtilization>, ProviderError> {
        self.governed(
            Operation::DescribeInstanceUtilization,
            RequestClass::NonMutating,
            None,
            false,
            || self.inner.instance_utilization(ids),
        )
        .await
    }
}
