//! endstate's configuration engine: roles of resources (file, directory,
//! template, package, service, user, group, exec) converged on a root —
//! `/` for the pull agent, an instance's root for push, an image's for
//! bake. [`facts`] gathers what templates see; [`validate`] checks roles
//! and orders them; [`engine`] renders everything, then converges in
//! dependency order (or, noop, predicts); [`report`] is the redacted JSON
//! record of a run. It does not parse the spec's YAML, reach instances over
//! SSH or schedule runs: those come to it with roles and a root.

// The black-box tests (once `tests/config_all`) live here as a module of the
// unit tests (one test binary per crate instead of two: each link is the
// whole dependency graph); they name the crate by its name, as users do.
#[cfg(test)]
extern crate self as endstate_config;
#[cfg(test)]
mod black_box;

pub mod engine;
pub mod facts;
pub mod report;
pub mod secrets;
pub mod types;
pub mod validate;

mod accounts;
mod command;
mod render;
mod resources;

pub use engine::{Engine, Options};
pub use facts::{gather, Facts, FactsError, FactsOptions};
pub use report::{Change, Outcome, Report, ResourceReport, Status};
pub use secrets::{Secrets, REDACTED};
pub use types::{Resource, Role};
pub use validate::{validate, ValidationError};
