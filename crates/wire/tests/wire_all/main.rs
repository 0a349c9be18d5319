//! The wire crate's integration tests, one binary (one link instead of
//! three keeps the workspace's clean build within its budget).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

mod botocore;
mod botocore_reads_our_xml;
mod elbv2_botocore;
mod fixtures;
mod images_botocore;
