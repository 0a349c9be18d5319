//! The spec's load balancers and each group's rollout strategy: the types
//! `endstate serve`'s rollouts read (`load_balancers:`, and a group's
//! `load_balancer:` and `rollout:` sections). Parsing and validation live in
//! `load`; what the controller does with them lives in `endstate-controller`.
//! Types only: no I/O.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A load balancer the spec declares (`load_balancers: NAME: ...`): an HTTP
/// listener on `port`, with the target groups of the groups that name it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadBalancerSpec {
    /// ELBv2's rules: 1..=32 of `[A-Za-z0-9-]`, not starting or ending with `-`.
    pub name: String,
    /// The listener's port (1..=65535).
    pub port: u16,
    /// How long a deregistered target may finish requests in flight
    /// (ELB's `deregistration_delay.timeout_seconds`; default 300 s).
    #[serde(with = "crate::rollout::secs")]
    pub deregistration_delay: Duration,
}

/// A group's place behind a load balancer (`load_balancer:` in a group).
/// One group per load balancer: the listener forwards to that group's
/// generations. Without a `health_check` of its own, the group's target
/// groups probe HTTP GET / on `port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupLoadBalancer {
    /// A name under `load_balancers:`.
    pub name: String,
    /// The port the group's instances serve traffic on.
    pub port: u16,
}

/// A number of instances, absolute or as a share of desired capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Amount {
    Count(u32),
    /// 0..=100.
    Percent(u32),
}

impl Amount {
    /// The count for `desired` instances, a percentage rounded up (surge,
    /// as Kubernetes rounds max surge).
    pub fn round_up(self, desired: u32) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => (u64::from(desired) * u64::from(p)).div_ceil(100) as u32,
        }
    }

    /// The count for `desired` instances, a percentage rounded down
    /// (unavailability, as Kubernetes rounds max unavailable).
    pub fn round_down(self, desired: u32) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => (u64::from(desired) * u64::from(p) / 100) as u32,
        }
    }
}

/// How a group moves from one generation to the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case")]
pub enum Strategy {
    /// Replace in batches: at most `max_surge` above desired and at most
    /// `max_unavailable` below it at any moment (default 25% each, as
    /// Kubernetes; both 0 is an error), waiting `pause` between batches.
    Rolling {
        max_surge: Amount,
        max_unavailable: Amount,
        #[serde(with = "crate::rollout::secs")]
        pause: Duration,
    },
    /// Launch the new generation beside the old one in its own target
    /// group, wait until it is healthy, shift traffic through the `canary`
    /// weights (percent of requests to the new generation, each held for
    /// `canary_pause`; empty: switch at once), switch, keep the old
    /// generation for `keep_old_for` (instant rollback), then scale it down.
    BlueGreen {
        canary: Vec<u32>,
        #[serde(with = "crate::rollout::secs")]
        canary_pause: Duration,
        #[serde(with = "crate::rollout::secs")]
        keep_old_for: Duration,
    },
}

/// A group's `rollout:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub strategy: Strategy,
    /// How long the new generation (a batch, for rolling) may take to be
    /// healthy in its target group before the rollout fails (default 300 s).
    #[serde(with = "crate::rollout::secs")]
    pub healthy_timeout: Duration,
    /// After the switch (blue-green) or the last batch (rolling), how long
    /// health and the error rate are watched before the rollout counts as
    /// done (default 60 s).
    #[serde(with = "crate::rollout::secs")]
    pub watch: Duration,
    /// Roll back by itself when the rollout fails (default true).
    pub auto_rollback: bool,
    /// The share of 5xx answers at the load balancer, 0.0..=1.0, above
    /// which the new generation fails while traffic shifts or is watched
    /// (default 0.05).
    pub max_error_rate: f64,
}

/// A rolling update's surge when the spec sets none (Kubernetes' default).
pub const DEFAULT_MAX_SURGE: Amount = Amount::Percent(25);
/// A rolling update's unavailability when the spec sets none (Kubernetes'
/// default).
pub const DEFAULT_MAX_UNAVAILABLE: Amount = Amount::Percent(25);
/// How long each blue-green canary step is held when the spec says nothing.
pub const DEFAULT_CANARY_PAUSE: Duration = Duration::from_secs(30);
/// How long blue-green keeps the old generation after the switch by default.
pub const DEFAULT_KEEP_OLD_FOR: Duration = Duration::from_secs(300);

impl Rollout {
    /// Rolling with Kubernetes' defaults (25% surge, 25% unavailable, no
    /// pause): what a group behind a load balancer gets without a
    /// `rollout:` section.
    pub fn default_rolling() -> Self {
        Self {
            strategy: Strategy::Rolling {
                max_surge: DEFAULT_MAX_SURGE,
                max_unavailable: DEFAULT_MAX_UNAVAILABLE,
                pause: Duration::ZERO,
            },
            healthy_timeout: Duration::from_secs(300),
            watch: Duration::from_secs(60),
            auto_rollback: true,
            max_error_rate: 0.05,
        }
    }
}

/// Durations as whole-or-fractional seconds in JSON (state, plans, events).
pub(crate) mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}
