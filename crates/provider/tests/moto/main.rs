//! The provider's clients against a real moto server, one binary (one
//! link instead of two keeps the workspace's clean build within its budget).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

mod ec2_moto;
mod elbv2_moto;
mod images_moto;
