//! The configuration engine's integration tests, one binary (one link instead
//! of two keeps the workspace's clean build within its budget). See each
//! module for what it covers.

#[path = "../common/mod.rs"]
mod common;
mod engine;
mod system;
