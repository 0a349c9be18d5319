//! Test machinery shared by endstate's crates and, later, its other issues:
//! a fault-injecting HTTP proxy for EC2 endpoints that records every request
//! ([`proxy`]), and a launcher for a real moto server on loopback ([`moto`]).
//!
//! Not for production code: nothing outside tests and benchmarks depends on
//! this crate.

pub mod moto;
pub mod proxy;
