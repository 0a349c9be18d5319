//! The planner: a pure function from the desired state (a validated
//! [`Spec`]) and the observed state (the instances carrying the project's
//! owner tags) to a [`Plan`] — every action with its reason.
//!
//! No I/O, no clock, no randomness: the same inputs give the same plan, so
//! `plan`, `apply` and the controller can share it and a test can replay it.
//! The planner does not decide whether a plan may run (consent, staleness);
//! it states what consent the plan needs and what it saw, and the caller
//! decides.

// The black-box tests of `tests/` live here as a module of the unit
// tests (one test binary per crate instead of two: each link is the
// whole dependency graph); they name the crate by its name, as users do.
#[cfg(test)]
extern crate self as endstate_plan;
#[cfg(test)]
mod properties_black_box;

pub mod budget;
pub mod observed;
mod planner;
mod types;

pub use budget::BudgetLimits;
pub use observed::{Instance, InstanceState, Observed};
pub use planner::{
    desired_tags, observed_fingerprint, plan, plan_with, PlanOptions, Verdicts, MANAGED_TAG_KEYS,
};
pub use types::*;
