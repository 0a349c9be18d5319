//! The spec's integration tests, one binary (one link instead of seven
//! keeps the workspace's clean build within its budget).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

mod cloud_init_schema;
mod load;
mod malformed;
mod recipes_section;
mod role_step_sources;
mod roles_section;
mod rollout_sections;
mod schema_check;
mod serve_sections;
mod user_data;
