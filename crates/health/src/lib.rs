//! The health half of `endstate serve`: whether each instance of a group is
//! healthy, and whether replacing the unhealthy ones must pause.
//!
//! The pieces, from the edge inwards: [`config`] (a group's health check, with
//! ELB-like defaults), [`probe`] (one HTTP or TCP probe of one address, the
//! only network I/O here), [`machine`] (one instance's health, a pure state
//! machine driven by probe results, EC2 state and times passed in), [`brake`]
//! (the correlated-failure brake, pure) and [`checker`] (probes a set of
//! instances on an interval and emits events).
//!
//! This crate does not launch or terminate anything, read EC2, or know about
//! the reconcile loop: it judges and reports; the controller acts, and the
//! planner (`plan::plan_with`) chooses replacements under the group's
//! disruption budget, as it does for every other replacement.

pub mod brake;
pub mod checker;
pub mod config;
pub mod event;
pub mod machine;
pub mod probe;

pub use brake::{Brake, BrakeConfig};
pub use checker::{Checker, Target};
pub use config::{ConfigError, ExpectedStatus, HealthCheck, ProbeTarget};
pub use event::{Event, EventKind};
pub use machine::{Ec2State, Ec2Status, HealthStatus, InstanceHealth};
pub use probe::{ProbeFailure, ProbeResult, Prober};
