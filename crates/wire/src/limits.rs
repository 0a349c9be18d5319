//! EC2's documented default request-rate limits, as data, and the token
//! bucket that enforces them. The client draws from these buckets before it
//! calls; the test proxy and the built-in cloud throttle with the same
//! table, so both sides agree on what "EC2's rate" means.
//!
//! Pure: time is passed in, nothing here sleeps.

use std::time::Duration;

/// A bucket's shape: how many tokens it holds and how fast it refills.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketShape {
    pub capacity: f64,
    pub refill_per_sec: f64,
}

impl BucketShape {
    pub const fn new(capacity: f64, refill_per_sec: f64) -> Self {
        Self {
            capacity,
            refill_per_sec,
        }
    }
}

/// The request-rate bucket an action draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestClass {
    /// Describe*, List*, Search*, Get* not listed elsewhere.
    NonMutating,
    /// DescribeInstances and its kin called with neither a filter nor paging.
    UnfilteredNonMutating,
    Mutating,
    RunInstances,
    StartInstances,
    TerminateInstances,
    Tags,
}

impl RequestClass {
    /// Every class, for building a full set of buckets.
    pub const ALL: [RequestClass; 7] = [
        RequestClass::NonMutating,
        RequestClass::UnfilteredNonMutating,
        RequestClass::Mutating,
        RequestClass::RunInstances,
        RequestClass::StartInstances,
        RequestClass::TerminateInstances,
        RequestClass::Tags,
    ];

    /// The class of an EC2 action. `unfiltered_unpaged` says whether a
    /// describe call carried neither a filter nor paging parameters.
    pub fn of(action: &str, unfiltered_unpaged: bool) -> Self {
        match action {
            "RunInstances" => RequestClass::RunInstances,
            "StartInstances" => RequestClass::StartInstances,
            "TerminateInstances" => RequestClass::TerminateInstances,
            "CreateTags" | "DeleteTags" => RequestClass::Tags,
            // The image pipeline's calls (bake and its retention): EC2 counts
            // them as mutating; named so that no prefix rule below takes them.
            "StopInstances" | "CreateImage" | "DeregisterImage" | "DeleteSnapshot" => {
                RequestClass::Mutating
            }
            "DescribeInstances"
            | "DescribeInstanceStatus"
            | "DescribeNetworkInterfaces"
            | "DescribeSecurityGroups"
            | "DescribeSnapshots"
            | "DescribeSpotInstanceRequests"
            | "DescribeVolumes"
                if unfiltered_unpaged =>
            {
                RequestClass::UnfilteredNonMutating
            }
            a if a.starts_with("Describe")
                || a.starts_with("List")
                || a.starts_with("Search")
                || a.starts_with("Get") =>
            {
                RequestClass::NonMutating
            }
            _ => RequestClass::Mutating,
        }
    }

    /// EC2's documented default bucket for the class.
    pub fn default_shape(self) -> BucketShape {
        match self {
            RequestClass::NonMutating => BucketShape::new(100.0, 20.0),
            RequestClass::UnfilteredNonMutating => BucketShape::new(50.0, 10.0),
            RequestClass::Mutating => BucketShape::new(50.0, 5.0),
            RequestClass::RunInstances => BucketShape::new(5.0, 2.0),
            RequestClass::StartInstances => BucketShape::new(5.0, 2.0),
            RequestClass::TerminateInstances => BucketShape::new(100.0, 5.0),
            RequestClass::Tags => BucketShape::new(100.0, 10.0),
        }
    }
}

/// Resource-rate buckets: counted in instances, not calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceClass {
    RunInstances,
    TerminateInstances,
    StartInstances,
    StopInstances,
}

impl ResourceClass {
    /// The resource bucket an action draws from, if any.
    pub fn of(action: &str) -> Option<Self> {
        Some(match action {
            "RunInstances" => ResourceClass::RunInstances,
            "TerminateInstances" => ResourceClass::TerminateInstances,
            "StartInstances" => ResourceClass::StartInstances,
            "StopInstances" => ResourceClass::StopInstances,
            _ => return None,
        })
    }

    /// EC2's documented default bucket for the class.
    pub fn default_shape(self) -> BucketShape {
        match self {
            ResourceClass::RunInstances => BucketShape::new(1000.0, 2.0),
            ResourceClass::TerminateInstances => BucketShape::new(1000.0, 20.0),
            ResourceClass::StartInstances => BucketShape::new(1000.0, 2.0),
            ResourceClass::StopInstances => BucketShape::new(1000.0, 20.0),
        }
    }
}

/// A token bucket on an external clock. Starts full.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    shape: BucketShape,
    tokens: f64,
    updated: Duration,
}

impl TokenBucket {
    /// A full bucket as of `now`.
    pub fn new(shape: BucketShape, now: Duration) -> Self {
        Self {
            shape,
            tokens: shape.capacity,
            updated: now,
        }
    }

    pub fn shape(&self) -> BucketShape {
        self.shape
    }

    fn refill(&mut self, now: Duration) {
        if now > self.updated {
            let elapsed = (now - self.updated).as_secs_f64();
            self.tokens =
                (self.tokens + elapsed * self.shape.refill_per_sec).min(self.shape.capacity);
            self.updated = now;
        }
    }

    /// Tokens available at `now`.
    pub fn available(&mut self, now: Duration) -> f64 {
        self.refill(now);
        self.tokens
    }

    /// Takes `n` tokens if they are there; otherwise takes nothing and says
    /// how long until they will be. A request for more than the bucket can
    /// ever hold waits for a full bucket and then takes it all (so that one
    /// call for 1,500 instances is not refused forever; EC2 would refuse it,
    /// and the caller should split such calls).
    pub fn try_take(&mut self, now: Duration, n: f64) -> Result<(), Duration> {
        self.refill(now);
        let want = n.min(self.shape.capacity);
        if self.tokens + 1e-9 >= want {
            self.tokens -= want;
            return Ok(());
        }
        let missing = want - self.tokens;
        Err(Duration::from_secs_f64(missing / self.shape.refill_per_sec))
    }

    /// Takes `n` tokens, letting the balance go negative: for charging a cost
    /// learned only after the call (the instances a RunInstances launched).
    pub fn charge(&mut self, now: Duration, n: f64) {
        self.refill(now);
        self.tokens -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_instances_bucket_allows_five_then_two_per_second() {
        let shape = RequestClass::of("RunInstances", false).default_shape();
        let mut bucket = TokenBucket::new(shape, Duration::ZERO);
        for _ in 0..5 {
            assert_eq!(bucket.try_take(Duration::ZERO, 1.0), Ok(()));
        }
        assert_eq!(
            bucket.try_take(Duration::ZERO, 1.0),
            Err(Duration::from_millis(500))
        );
        assert_eq!(bucket.try_take(Duration::from_millis(500), 1.0), Ok(()));
    }

    #[test]
    fn describe_class_depends_on_filters_and_paging() {
        assert_eq!(
            RequestClass::of("DescribeInstances", true),
            RequestClass::UnfilteredNonMutating
        );
        assert_eq!(
            RequestClass::of("DescribeInstances", false),
            RequestClass::NonMutating
        );
        assert_eq!(
            RequestClass::of("DescribeImages", true),
            RequestClass::NonMutating
        );
        assert_eq!(
            RequestClass::of("StopInstances", false),
            RequestClass::Mutating
        );
        assert_eq!(RequestClass::of("DeleteTags", false), RequestClass::Tags);
        for action in ["CreateImage", "DeregisterImage", "DeleteSnapshot"] {
            assert_eq!(RequestClass::of(action, true), RequestClass::Mutating);
        }
        assert_eq!(
            RequestClass::of("GetConsoleOutput", true),
            RequestClass::NonMutating
        );
        assert_eq!(ResourceClass::of("DeleteSnapshot"), None);
        // endstate's extension action is a plain describe, filtered or not.
        for unfiltered in [true, false] {
            assert_eq!(
                RequestClass::of("DescribeInstanceUtilization", unfiltered),
                RequestClass::NonMutating
            );
        }
    }

    #[test]
    fn ten_thousand_launches_take_at_least_4500_seconds() {
        let shape = ResourceClass::RunInstances.default_shape();
        let mut bucket = TokenBucket::new(shape, Duration::ZERO);
        let mut now = Duration::ZERO;
        let mut launched = 0;
        while launched < 10_000 {
            match bucket.try_take(now, 100.0) {
                Ok(()) => launched += 100,
                Err(wait) => now += wait,
            }
        }
        assert_eq!(now.as_secs(), 4_500);
    }
}
