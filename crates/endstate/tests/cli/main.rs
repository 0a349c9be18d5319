//! endstate's end-to-end tests of the one-shot commands against a real moto
//! (plan, apply, crash, faults, guards, interrupts, throttling), of the
//! docs, and of `config apply` and `push` against sshd servers the tests
//! start, one binary (each module was its own binary; one link instead of
//! seven keeps the workspace's clean build within its budget). Tests that
//! start their own moto and state directories run in parallel as before.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

#[path = "../common/mod.rs"]
mod common;
mod config_push;
mod converge;
mod crash;
mod docs;
mod faults;
mod guards;
mod interrupt;
mod throttle;
