//! The metadata service's integration tests, one binary (each module was its
//! own binary; one link instead of four keeps the workspace's clean build
//! within its budget). See each module for what it covers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

mod app_oneshot;
mod clients;
#[path = "../common/mod.rs"]
mod common;
mod http_rules;
mod isolation;
