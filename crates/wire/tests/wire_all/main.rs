//! The wire crate's integration tests, one binary (one link instead of
//! three keeps the workspace's clean build within its budget).

mod botocore;
mod botocore_reads_our_xml;
mod elbv2_botocore;
mod fixtures;
mod images_botocore;
