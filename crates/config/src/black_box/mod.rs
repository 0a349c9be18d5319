//! The configuration engine's black-box tests, a module of its unit tests
//! (no test binary of their own: each link is the whole dependency graph,
//! and the workspace's clean build keeps within its budget). See each
//! module for what it covers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

mod common;
mod engine;
mod system;
