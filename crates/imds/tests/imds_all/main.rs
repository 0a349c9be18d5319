//! The metadata service's integration tests, one binary (each module was its
//! own binary; one link instead of four keeps the workspace's clean build
//! within its budget). See each module for what it covers.

#[path = "../common/mod.rs"]
mod common;
mod app_oneshot;
mod clients;
mod http_rules;
mod isolation;
