//! Test machinery shared by endstate's crates and, later, its other issues:
//! a fault-injecting HTTP proxy for EC2 endpoints that records every request
//! ([`proxy`]), a launcher for a real moto server on loopback ([`moto`]),
//! and a bounded HTTP load generator for rollouts behind a load balancer
//! ([`load`]).
//!
//! Not for production code: nothing outside tests and benchmarks depends on
//! this crate.

// The black-box tests of `tests/` live here as a module of the unit
// tests (one test binary per crate instead of two: each link is the
// whole dependency graph); they name the crate by its name, as users do.
#[cfg(test)]
extern crate self as endstate_testkit;
#[cfg(test)]
mod proxy_black_box;

pub mod load;
pub mod moto;
pub mod proxy;
