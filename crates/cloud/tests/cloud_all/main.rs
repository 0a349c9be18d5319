//! The built-in cloud's integration tests, one binary (each module was its own
//! binary; one link instead of five keeps the workspace's clean build within
//! its budget). See each module for what it covers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

mod aws_cli;
mod backend;
mod client;
#[path = "../common/mod.rs"]
mod common;
mod elbv2;
mod images;
mod signatures;
