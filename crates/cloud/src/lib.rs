//! The built-in cloud: an EC2-compatible Query API server ([`server`]) that
//! verifies SigV4 signatures ([`sigv4`]) and answers from a [`Backend`]:
//! the [`simulated`] backend, whose instances are in-memory records with
//! EC2's lifecycle, limits and faults on a shared clock, or the [`process`]
//! backend — the same core, with instances that really run as processes,
//! images of content-addressed layers, a metadata service per instance, and
//! its state in SQLite (`cloud.db`) so that it survives restarts. On the
//! same endpoint, ELBv2's API ([`elbv2`]): load balancers whose data
//! planes (`endstate-lb`) run on their own loopback addresses for the
//! process backend, records only for the simulated one.
//!
//! Not here: the command line (`endstate cloud …`), what runs inside an
//! instance (`crates/instance`). The servers bind to loopback only and
//! never call out.

// The black-box tests (once `tests/cloud_all`) live here as a module of the
// unit tests (one test binary per crate instead of two: each link is the
// whole dependency graph); they name the crate by its name, as users do.
#[cfg(test)]
extern crate self as endstate_cloud;
#[cfg(test)]
mod black_box;

pub mod backend;
pub mod elbv2;
pub mod error;
pub mod process;
pub mod server;
pub mod sigv4;
pub mod simulated;
mod store;

pub use backend::Backend;
pub use elbv2::{Elbv2Error, InstanceDirectory, InstanceView, LoadBalancers};
pub use error::{ApiError, CloudError};
pub use process::{Isolation, ProcessBackend, ProcessConfig, ProcessError};
pub use server::{app, serve, serve_state, CloudConfig, CloudState, RunningCloud};
pub use sigv4::Credentials;
pub use simulated::{Faults, SimulatedBackend, SimulatedConfig, Throttling, Timings};
