//! `endstate serve`: the controller that keeps a project's groups at their
//! declared end state without anyone running `apply`.
//!
//! - [`view`]: what the controller shows (groups, instances, events, scaling
//!   activity) and the [`view::ControllerApi`] trait the HTTP API serves;
//! - [`api`]: the HTTP API (axum) over that trait: bearer tokens, the
//!   OpenAPI document, server-sent events, Prometheus metrics;
//! - [`client`]: the API's client, for the CLI;
//! - [`agent`]: what `endstate agent` is served: nonces, sessions proved by
//!   an instance's identity, check-in schedules.
//!
//! This crate does not parse the spec (`model`), plan (`plan`), or call EC2
//! itself (`exec` and `provider` do): it decides when to reconcile and what
//! health and scaling change, and records why.

// The black-box tests (once `tests/controller_all`) live here as a module of the
// unit tests (one test binary per crate instead of two: each link is the
// whole dependency graph); they name the crate by its name, as users do.
#[cfg(test)]
extern crate self as endstate_controller;
#[cfg(test)]
mod black_box;

pub mod agent;
pub mod api;
pub mod client;
pub mod controller;
pub mod events;
pub mod group;
pub mod metrics;
pub mod rollout;
pub mod view;

pub use controller::{Controller, ControllerError, Options, Parts, SpecSource, ThrottleCounter};
