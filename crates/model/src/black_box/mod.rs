//! The spec's black-box tests, a module of the unit tests (no test binary
//! of their own: each link is the whole dependency graph, and the
//! workspace's clean build keeps within its budget).

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
