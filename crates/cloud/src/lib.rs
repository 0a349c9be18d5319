//! The built-in cloud: an EC2-compatible Query API server ([`server`]) that
//! verifies SigV4 signatures ([`sigv4`]) and answers from a [`Backend`];
//! today the [`simulated`] backend, whose instances are in-memory records
//! with EC2's lifecycle, limits and faults on a shared clock.
//!
//! Not here yet: the `process` backend (instances that really run), the
//! instance metadata service, persistence across restarts. The server binds
//! to loopback only and never calls out.

pub mod backend;
pub mod error;
pub mod server;
pub mod sigv4;
pub mod simulated;

pub use backend::Backend;
pub use error::{ApiError, CloudError};
pub use server::{app, serve, serve_state, CloudConfig, CloudState, RunningCloud};
pub use sigv4::Credentials;
pub use simulated::{Faults, SimulatedBackend, SimulatedConfig, Throttling, Timings};
