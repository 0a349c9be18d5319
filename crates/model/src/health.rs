//! The health half of a group's spec: the health check (what to probe,
//! how often, thresholds, grace period) and the replacement brake's settings.
//! These are spec types; `endstate-health` re-exports them and does the
//! probing and the braking.
//!
//! Where issue 4 is silent the health check's defaults are those of an ELB
//! target group (interval 30 s, timeout 5 s, healthy threshold 5, unhealthy
//! threshold 2, success code 200); the grace period defaults to 300 s, as the
//! Auto Scaling console sets it. This module only describes and validates; it
//! probes nothing and pauses nothing.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a health check probes on the instance's own address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ProbeTarget {
    /// An HTTP/1.1 GET of `path` on `port`, healthy when the status is one of
    /// `expected`. Redirects are not followed: a 3xx is judged as it is.
    Http {
        port: u16,
        /// Default `/`, as an ELB target group.
        #[serde(default = "default_path")]
        path: String,
        /// Default `200`, as an ELB target group.
        #[serde(default)]
        expected: ExpectedStatus,
    },
    /// A TCP connection to `port`, healthy when it is accepted.
    Tcp { port: u16 },
}

fn default_path() -> String {
    "/".to_string()
}

/// A group's health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub probe: ProbeTarget,
    /// Seconds between probes of one instance. Default 30.
    #[serde(default = "default_interval")]
    pub interval_seconds: u64,
    /// Seconds a probe may take before it counts as failed. Default 5; must
    /// be less than the interval.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Consecutive successful probes that make an instance healthy. Default 5.
    #[serde(default = "default_healthy")]
    pub healthy_threshold: u32,
    /// Consecutive failed probes that make an instance unhealthy. Default 2.
    #[serde(default = "default_unhealthy")]
    pub unhealthy_threshold: u32,
    /// Seconds after launch during which failed probes and impaired status
    /// checks never make an instance unhealthy. Default 300.
    #[serde(default = "default_grace")]
    pub grace_period_seconds: u64,
}

fn default_interval() -> u64 {
    30
}
fn default_timeout() -> u64 {
    5
}
fn default_healthy() -> u32 {
    5
}
fn default_unhealthy() -> u32 {
    2
}
fn default_grace() -> u64 {
    300
}

impl HealthCheck {
    /// A check of `probe` with every default.
    pub fn new(probe: ProbeTarget) -> Self {
        Self {
            probe,
            interval_seconds: default_interval(),
            timeout_seconds: default_timeout(),
            healthy_threshold: default_healthy(),
            unhealthy_threshold: default_unhealthy(),
            grace_period_seconds: default_grace(),
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_seconds)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }

    pub fn grace_period(&self) -> Duration {
        Duration::from_secs(self.grace_period_seconds)
    }

    /// Every problem with this check, or none.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        if self.interval_seconds == 0 {
            errors.push(ConfigError::ZeroInterval);
        }
        if self.timeout_seconds == 0 || self.timeout_seconds >= self.interval_seconds {
            errors.push(ConfigError::TimeoutNotBelowInterval {
                timeout: self.timeout_seconds,
                interval: self.interval_seconds,
            });
        }
        if self.healthy_threshold == 0 {
            errors.push(ConfigError::ZeroThreshold("healthy_threshold"));
        }
        if self.unhealthy_threshold == 0 {
            errors.push(ConfigError::ZeroThreshold("unhealthy_threshold"));
        }
        if let ProbeTarget::Http { path, .. } = &self.probe {
            if !path.starts_with('/') {
                errors.push(ConfigError::RelativePath(path.clone()));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// What is wrong with a [`HealthCheck`] or an [`ExpectedStatus`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `interval_seconds` is 0.
    #[error("interval_seconds must be at least 1")]
    ZeroInterval,
    /// The timeout is 0 or not shorter than the interval, so probes would overlap.
    #[error("timeout_seconds ({timeout}) must be at least 1 and less than interval_seconds ({interval})")]
    TimeoutNotBelowInterval { timeout: u64, interval: u64 },
    /// A threshold is 0.
    #[error("{0} must be at least 1")]
    ZeroThreshold(&'static str),
    /// The HTTP path does not start with `/`.
    #[error("path {0:?} must start with '/'")]
    RelativePath(String),
    /// The expected status is not a list of codes and ranges in 100..=599.
    #[error("expected status {0:?}: write codes and ranges such as \"200\", \"200-299\" or \"200,202\", each within 100-599")]
    BadStatus(String),
}

/// The HTTP statuses that count as healthy, written as an ELB matcher is:
/// `"200"`, `"200-299"`, `"200,202,300-399"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExpectedStatus {
    ranges: Vec<(u16, u16)>,
}

impl ExpectedStatus {
    /// Whether `status` is one of the expected.
    pub fn matches(&self, status: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| lo <= status && status <= hi)
    }
}

impl Default for ExpectedStatus {
    fn default() -> Self {
        Self {
            ranges: vec![(200, 200)],
        }
    }
}

impl std::str::FromStr for ExpectedStatus {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::BadStatus(text.to_string());
        let code = |s: &str| -> Result<u16, ConfigError> {
            let n: u16 = s.trim().parse().map_err(|_| bad())?;
            if (100..=599).contains(&n) {
                Ok(n)
            } else {
                Err(bad())
            }
        };
        let mut ranges = Vec::new();
        for part in text.split(',') {
            let range = match part.split_once('-') {
                Some((lo, hi)) => (code(lo)?, code(hi)?),
                None => {
                    let n = code(part)?;
                    (n, n)
                }
            };
            if range.0 > range.1 {
                return Err(bad());
            }
            ranges.push(range);
        }
        Ok(Self { ranges })
    }
}

impl TryFrom<String> for ExpectedStatus {
    type Error = ConfigError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<ExpectedStatus> for String {
    fn from(expected: ExpectedStatus) -> Self {
        expected.to_string()
    }
}

impl fmt::Display for ExpectedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// When the correlated-failure brake engages: more than a share of a group
/// (and at least a count) turned unhealthy within one window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrakeConfig {
    /// Engaged when strictly more than this share of the group turned
    /// unhealthy within the window. Default 0.3.
    #[serde(default = "default_share")]
    pub max_unhealthy_share: f64,
    /// ... and at least this many instances. Default 2.
    #[serde(default = "default_min")]
    pub min_unhealthy: u32,
    /// The window, in seconds. Default 300: ten default probe intervals, so
    /// instances killed together but detected a few rounds apart (each after
    /// its own unhealthy threshold) still count as one failure.
    #[serde(default = "default_window")]
    pub window_seconds: u64,
}

fn default_share() -> f64 {
    0.3
}
fn default_min() -> u32 {
    2
}
fn default_window() -> u64 {
    300
}

impl Default for BrakeConfig {
    fn default() -> Self {
        Self {
            max_unhealthy_share: default_share(),
            min_unhealthy: default_min(),
            window_seconds: default_window(),
        }
    }
}

impl BrakeConfig {
    /// Whether `unhealthy` of `group_size` trips the brake.
    pub fn trips(&self, unhealthy: u32, group_size: u32) -> bool {
        unhealthy >= self.min_unhealthy.max(1)
            && f64::from(unhealthy) > self.max_unhealthy_share * f64::from(group_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_an_elb_target_groups_and_auto_scalings_grace() {
        let check: HealthCheck =
            serde_json::from_str(r#"{"probe":{"http":{"port":8080}}}"#).expect("parses");
        assert_eq!(
            check,
            HealthCheck::new(ProbeTarget::Http {
                port: 8080,
                path: "/".into(),
                expected: ExpectedStatus::default(),
            })
        );
        assert_eq!(check.interval(), Duration::from_secs(30));
        assert_eq!(check.timeout(), Duration::from_secs(5));
        assert_eq!((check.healthy_threshold, check.unhealthy_threshold), (5, 2));
        assert_eq!(check.grace_period(), Duration::from_secs(300));
        assert_eq!(check.validate(), Ok(()));
    }

    #[test]
    fn expected_status_reads_codes_and_ranges_and_writes_them_back() {
        let expected: ExpectedStatus = "200,202,300-399".parse().expect("parses");
        assert!(expected.matches(200) && expected.matches(202) && expected.matches(302));
        assert!(!expected.matches(201) && !expected.matches(500));
        assert_eq!(expected.to_string(), "200,202,300-399");
        for bad in ["", "abc", "99", "600", "300-200", "200-"] {
            assert!(bad.parse::<ExpectedStatus>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(serde_json::from_str::<HealthCheck>(
            r#"{"probe":{"tcp":{"port":22}},"intervall_seconds":10}"#
        )
        .is_err());
        let mut check = HealthCheck::new(ProbeTarget::Http {
            port: 80,
            path: "health".into(),
            expected: ExpectedStatus::default(),
        });
        check.timeout_seconds = 30;
        check.unhealthy_threshold = 0;
        let errors = check.validate().expect_err("invalid");
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    #[test]
    fn the_brake_trips_above_the_share_and_at_least_the_count() {
        let brake = BrakeConfig::default();
        assert!(!brake.trips(1, 5), "20% is not more than 30%");
        assert!(brake.trips(2, 5), "40% and 2");
        assert!(!brake.trips(1, 2), "50% but fewer than 2");
    }
}
