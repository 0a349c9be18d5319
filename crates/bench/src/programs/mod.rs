//! The benchmark programs, one module each, each with a `main`: what it
//! measures, how to run it and what BENCHMARKS.md records are in its own
//! documentation.

pub mod agents;
pub mod apply_moto;
pub mod bake;
pub mod converge_simulated;
pub mod planner;
pub mod process_fleet;
pub mod rollout;
pub mod serve_heal;
pub mod serve_reconcile;

/// The programs' names, as `bench NAME` takes them.
pub const NAMES: &[&str] = &[
    "agents",
    "apply_moto",
    "bake",
    "converge_simulated",
    "planner",
    "process_fleet",
    "rollout",
    "serve_heal",
    "serve_reconcile",
];
