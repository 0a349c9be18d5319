//! Applying plans: the [`Governor`] (client-side token buckets shaped like
//! EC2's limits, retries with full-jitter backoff), the [`Executor`] (phases,
//! batching, the intent journal, fallbacks, waiting), the [`Session`] (the
//! state lock and its heartbeat), reading the world ([`observe`]), progress
//! [`Event`]s and named crash points for fault tests.
//!
//! This crate does not plan (that is `endstate-plan`, pure) and does not
//! speak any wire protocol (that is `endstate-provider`).

// The black-box tests of `tests/` live here as a module of the unit
// tests (one test binary per crate instead of two: each link is the
// whole dependency graph); they name the crate by its name, as users do.
#[cfg(test)]
extern crate self as endstate_exec;
#[cfg(test)]
mod executor_black_box;

pub mod apply;
pub mod crash;
pub mod governor;
pub mod observe;
pub mod report;
pub mod session;

pub use apply::{client_token, ApplyOptions, ApplyReport, Executor, MAX_BATCH};
pub use governor::{CallStats, Governor, RateLimits, RetryPolicy};
pub use observe::{describe_all, observe, observe_group};
pub use report::{Collect, Event, Reporter, Silent};
pub use session::Session;

use std::time::Duration;

/// Why an apply stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// An API call failed for good (after the governor's retries).
    #[error(transparent)]
    Provider(#[from] endstate_provider::ProviderError),
    /// The state store refused or failed (locked, fenced, corrupt).
    #[error(transparent)]
    State(#[from] endstate_state::StateError),
    /// Another run took the state lock over: this one stopped acting.
    #[error("lost the state lock to another run; stopped")]
    LostLock,
    /// Every instance type in every zone of the group lacked capacity.
    #[error("group {group}: no capacity for any of {tried} type and zone choices (last: {last})")]
    NoCapacity {
        group: String,
        tried: usize,
        last: String,
    },
    /// Launched instances did not run in time.
    #[error("{waiting_for} launched instances were still not running after {}s", after.as_secs())]
    WaitTimedOut { waiting_for: usize, after: Duration },
    /// A group's user data could not be rendered (an unresolvable secret).
    #[error("group {group}: user data: {message}")]
    UserData { group: String, message: String },
    /// The plan does not fit the spec it is applied with.
    #[error("plan does not match the spec: {0}")]
    PlanMismatch(String),
}
