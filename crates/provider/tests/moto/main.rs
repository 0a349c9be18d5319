//! The provider's clients against a real moto server, one binary (one
//! link instead of two keeps the workspace's clean build within its budget).

mod ec2_moto;
mod elbv2_moto;
mod images_moto;
