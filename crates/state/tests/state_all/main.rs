//! The state store's integration tests, one binary (one link instead of three
//! keeps the workspace's clean build within its budget). See each module for
//! what it covers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

mod lock;
mod serve;
mod store;
