//! Test machinery shared by endstate's crates and, later, its other issues:
//! a fault-injecting HTTP proxy for EC2 endpoints that records every request
//! ([`proxy`]), a launcher for a real moto server on loopback ([`moto`]),
//! and a bounded HTTP load generator for rollouts behind a load balancer
//! ([`load`]).
//!
//! Not for production code: nothing outside tests and benchmarks depends on
//! this crate.

pub mod load;
pub mod moto;
pub mod proxy;
