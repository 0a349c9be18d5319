//! endstate serve end to end on the built-in cloud (serve, rollouts behind
//! the load balancer, agents, one role by pull and by push, golden images),
//! one binary:
//! their tests already took one cloud at a time
//! (common::controller::ONE_CLOUD_AT_A_TIME), which one binary keeps; one
//! link instead of several keeps the workspace's clean build within its
//! budget.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

mod agent;
mod bake;
#[path = "../common/mod.rs"]
mod common;
mod pull_push;
mod rollout;
mod serve;
