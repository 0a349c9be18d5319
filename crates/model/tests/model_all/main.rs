//! The spec's integration tests, one binary (one link instead of seven
//! keeps the workspace's clean build within its budget).

mod cloud_init_schema;
mod load;
mod malformed;
mod recipes_section;
mod roles_section;
mod rollout_sections;
mod schema_check;
mod serve_sections;
mod user_data;
