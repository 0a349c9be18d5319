//! The built-in cloud from the outside, one binary: the aws CLI against
//! both backends (`aws_cli_cloud`), the process backend in this process
//! with the real instance runtime (`cloud_process`), the provider
//! conformance suite over moto and both backends (`conformance`), and the
//! cloud as a user meets it through the binary (`local_cloud`). They were
//! four binaries, run one after the other; [`gate`] keeps that order
//! between modules (one link instead of four keeps the workspace's clean
//! build within its budget).

mod aws_cli_cloud;
mod cloud_process;
mod conformance;
mod gate;
mod local_cloud;
