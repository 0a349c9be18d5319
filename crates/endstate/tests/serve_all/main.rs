//! endstate serve end to end on the built-in cloud (serve, rollouts behind
//! the load balancer, agents), one binary: their tests already took one
//! cloud at a time (common::controller::ONE_CLOUD_AT_A_TIME), which one
//! binary keeps; one link instead of three keeps the workspace's clean build
//! within its budget.

#[path = "../common/mod.rs"]
mod common;
mod agent;
mod rollout;
mod serve;
