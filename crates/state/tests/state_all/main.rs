//! The state store's integration tests, one binary (one link instead of three
//! keeps the workspace's clean build within its budget). See each module for
//! what it covers.

mod lock;
mod serve;
mod store;
