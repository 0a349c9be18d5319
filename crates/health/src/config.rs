//! A group's health check as configured: what to probe (HTTP or TCP), how
//! often, how long to wait, how many results in a row change an instance's
//! health, and the grace period after launch.
//!
//! The types are the spec's own, defined (with their defaults and
//! validation) in `endstate_model::health` so that the spec can hold them;
//! this module re-exports them under the names this crate has always used.
//! It probes nothing (see [`crate::probe`]).

pub use endstate_model::health::{ConfigError, ExpectedStatus, HealthCheck, ProbeTarget};
