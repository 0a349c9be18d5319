//! The built-in cloud's black-box tests, a module of its unit tests (they
//! were five binaries, then one; none now: each link is the whole
//! dependency graph, and the workspace's clean build keeps within its
//! budget). See each module for what it covers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

mod aws_cli;
mod backend;
mod client;
mod common;
mod elbv2;
mod images;
mod signatures;
