//! The `Backend` trait: what the API server asks of whatever holds the
//! instances. One method per EC2 action, taking the wire crate's request
//! and answering with its response (the server fills in the request id).
//!
//! Not here: HTTP, signatures, XML — the server's — and any particular way
//! of holding instances (`simulated` is one; a `process` backend comes later).

use endstate_wire::{
    CreateTagsRequest, CreateTagsResponse, DeleteTagsRequest, DeleteTagsResponse,
    DescribeAvailabilityZonesRequest, DescribeAvailabilityZonesResponse, DescribeImagesRequest,
    DescribeImagesResponse, DescribeInstanceStatusRequest, DescribeInstanceStatusResponse,
    DescribeInstancesRequest, DescribeInstancesResponse, RebootInstancesRequest,
    RebootInstancesResponse, RunInstancesRequest, RunInstancesResponse, StartInstancesRequest,
    StartInstancesResponse, StopInstancesRequest, StopInstancesResponse, TerminateInstancesRequest,
    TerminateInstancesResponse,
};

use crate::error::ApiError;

/// Holds instances and answers EC2's actions on them. Calls are synchronous
/// and quick (the server calls them on its runtime's threads); an
/// implementation that must wait on I/O does so on its own tasks.
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    fn run_instances(
        &self,
        request: &RunInstancesRequest,
    ) -> Result<RunInstancesResponse, ApiError>;
    fn describe_instances(
        &self,
        request: &DescribeInstancesRequest,
    ) -> Result<DescribeInstancesResponse, ApiError>;
    fn terminate_instances(
        &self,
        request: &TerminateInstancesRequest,
    ) -> Result<TerminateInstancesResponse, ApiError>;
    fn stop_instances(
        &self,
        request: &StopInstancesRequest,
    ) -> Result<StopInstancesResponse, ApiError>;
    fn start_instances(
        &self,
        request: &StartInstancesRequest,
    ) -> Result<StartInstancesResponse, ApiError>;
    fn reboot_instances(
        &self,
        request: &RebootInstancesRequest,
    ) -> Result<RebootInstancesResponse, ApiError>;
    fn create_tags(&self, request: &CreateTagsRequest) -> Result<CreateTagsResponse, ApiError>;
    fn delete_tags(&self, request: &DeleteTagsRequest) -> Result<DeleteTagsResponse, ApiError>;
    fn describe_images(
        &self,
        request: &DescribeImagesRequest,
    ) -> Result<DescribeImagesResponse, ApiError>;
    fn describe_availability_zones(
        &self,
        request: &DescribeAvailabilityZonesRequest,
    ) -> Result<DescribeAvailabilityZonesResponse, ApiError>;
    fn describe_instance_status(
        &self,
        request: &DescribeInstanceStatusRequest,
    ) -> Result<DescribeInstanceStatusResponse, ApiError>;
}
