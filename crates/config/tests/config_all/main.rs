//! The configuration engine's integration tests, one binary (one link instead
//! of two keeps the workspace's clean build within its budget). See each
//! module for what it covers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

#[path = "../common/mod.rs"]
mod common;
mod engine;
mod system;
