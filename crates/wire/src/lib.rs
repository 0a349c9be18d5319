//! EC2's Query protocol for the actions endstate speaks, in both directions
//! and without I/O: request structs to and from form parameters
//! ([`requests`], [`form`]), response structs to and from XML
//! ([`responses`]), EC2's error document ([`error`]), and EC2's request-rate
//! limits ([`limits`]); and the same for Elastic Load Balancing v2's subset
//! that rollouts use ([`elbv2`]).
//!
//! The client (`endstate-provider`) writes requests and reads responses; the
//! built-in cloud's server reads requests and writes responses with the same
//! types, so both sides agree on the wire by construction, and each is
//! tested against a third party (moto for the client, the aws CLI for the
//! server). No HTTP, no signing, no async here.

pub mod elbv2;
pub mod error;
pub mod form;
pub mod limits;
pub mod requests;
pub mod responses;
pub mod xml;

pub use elbv2::{Elbv2Action, Elbv2ErrorResponse, Elbv2Request};
pub use error::{ErrorDetail, ErrorResponse, WireError};
pub use form::Params;
pub use requests::{
    BakeImageRequest, BlockDeviceMapping, CreateImageRequest, CreateTagsRequest,
    DeleteSnapshotRequest, DeleteTag, DeleteTagsRequest, DeregisterImageRequest,
    DescribeAvailabilityZonesRequest, DescribeImagesRequest, DescribeInstanceStatusRequest,
    DescribeInstanceUtilizationRequest, DescribeInstancesRequest, EbsBlockDevice, Ec2Request,
    Filter, GetBakeOutputRequest, GetConsoleOutputRequest, InstanceMetadataOptions,
    ModifyInstanceMetadataOptionsRequest, RebootInstancesRequest, Request, RunInstancesRequest,
    StartInstancesRequest, StopInstancesRequest, Tag, TagSpecification, TerminateInstancesRequest,
    UserData, API_VERSION,
};
pub use responses::{
    AvailabilityZone, BakeImageResponse, CreateImageResponse, CreateTagsResponse,
    DeleteSnapshotResponse, DeleteTagsResponse, DeregisterImageResponse,
    DescribeAvailabilityZonesResponse, DescribeImagesResponse, DescribeInstanceStatusResponse,
    DescribeInstanceUtilizationResponse, DescribeInstancesResponse, GetBakeOutputResponse,
    GetConsoleOutputResponse, Image, ImageBlockDevice, Instance, InstanceStateChange,
    InstanceStateInfo, InstanceStatus, InstanceUtilization, ModifyInstanceMetadataOptionsResponse,
    RebootInstancesResponse, Reservation, Response, RunInstancesResponse, StartInstancesResponse,
    StopInstancesResponse, TerminateInstancesResponse,
};
