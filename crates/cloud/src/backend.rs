//! The `Backend` trait: what the API server asks of whatever holds the
//! instances. One method per EC2 action, taking the wire crate's request
//! and answering with its response (the server fills in the request id).
//!
//! ELBv2's actions are not methods here: [`Backend::load_balancing`]
//! hands out the backend's [`LoadBalancers`], which the server calls.
//!
//! Not here: HTTP, signatures, XML — the server's — and any particular way
//! of holding instances (`simulated` keeps records, `process` runs them).

use endstate_wire::{
    BakeImageRequest, BakeImageResponse, GetBakeOutputRequest, GetBakeOutputResponse,
};
use endstate_wire::{
    CreateImageRequest, CreateImageResponse, CreateTagsRequest, CreateTagsResponse,
    DeleteSnapshotRequest, DeleteSnapshotResponse, DeleteTagsRequest, DeleteTagsResponse,
    DeregisterImageRequest, DeregisterImageResponse, DescribeAvailabilityZonesRequest,
    DescribeAvailabilityZonesResponse, DescribeImagesRequest, DescribeImagesResponse,
    DescribeInstanceStatusRequest, DescribeInstanceStatusResponse,
    DescribeInstanceUtilizationRequest, DescribeInstanceUtilizationResponse,
    DescribeInstancesRequest, DescribeInstancesResponse, GetConsoleOutputRequest,
    GetConsoleOutputResponse, ModifyInstanceMetadataOptionsRequest,
    ModifyInstanceMetadataOptionsResponse, RebootInstancesRequest, RebootInstancesResponse,
    RunInstancesRequest, RunInstancesResponse, StartInstancesRequest, StartInstancesResponse,
    StopInstancesRequest, StopInstancesResponse, TerminateInstancesRequest,
    TerminateInstancesResponse,
};

use crate::elbv2::{InstanceDirectory, LoadBalancers};
use crate::error::ApiError;

/// Holds instances and answers EC2's actions on them. Calls are synchronous
/// and quick (the server calls them on its runtime's threads); an
/// implementation that must wait on I/O does so on its own tasks.
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// The ELBv2 service over this backend's instances, and where it looks
    /// them up; `None` when the backend offers no load balancing.
    fn load_balancing(&self) -> Option<(&LoadBalancers, &dyn InstanceDirectory)> {
        None
    }

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

    /// The instance's console output. Backends whose instances print
    /// nothing answer with no output.
    fn get_console_output(
        &self,
        request: &GetConsoleOutputRequest,
    ) -> Result<GetConsoleOutputResponse, ApiError> {
        Err(unsupported("GetConsoleOutput", request))
    }
    fn create_image(&self, request: &CreateImageRequest) -> Result<CreateImageResponse, ApiError> {
        Err(unsupported("CreateImage", request))
    }
    fn deregister_image(
        &self,
        request: &DeregisterImageRequest,
    ) -> Result<DeregisterImageResponse, ApiError> {
        Err(unsupported("DeregisterImage", request))
    }
    /// DeleteSnapshot. The built-in backends keep no EBS snapshots (their
    /// images are records or layers, freed by DeregisterImage), so theirs
    /// answers as EC2 does for an id it does not know.
    fn delete_snapshot(
        &self,
        request: &DeleteSnapshotRequest,
    ) -> Result<DeleteSnapshotResponse, ApiError> {
        Err(unsupported("DeleteSnapshot", request))
    }
    fn modify_instance_metadata_options(
        &self,
        request: &ModifyInstanceMetadataOptionsRequest,
    ) -> Result<ModifyInstanceMetadataOptionsResponse, ApiError> {
        Err(unsupported("ModifyInstanceMetadataOptions", request))
    }

    /// endstate's extension action, not EC2's: each instance's CPU over
    /// the last sampling window. Only a backend that runs instances can
    /// measure them; the others answer `UnsupportedOperation`, so that no
    /// one mistakes an empty answer for idle instances.
    fn describe_instance_utilization(
        &self,
        request: &DescribeInstanceUtilizationRequest,
    ) -> Result<DescribeInstanceUtilizationResponse, ApiError> {
        Err(unsupported("DescribeInstanceUtilization", request))
    }

    /// endstate's extension action, not EC2's: a volume-style bake (see
    /// `BakeImageRequest`). Only a backend whose images have roots can run
    /// a script on one.
    fn bake_image(&self, request: &BakeImageRequest) -> Result<BakeImageResponse, ApiError> {
        Err(unsupported("BakeImage", request))
    }

    /// endstate's extension action, not EC2's: a bake's output so far.
    fn get_bake_output(
        &self,
        request: &GetBakeOutputRequest,
    ) -> Result<GetBakeOutputResponse, ApiError> {
        Err(unsupported("GetBakeOutput", request))
    }
}

fn unsupported<R>(action: &str, _request: &R) -> ApiError {
    ApiError::UnsupportedOperation(format!("{action} is not supported by this backend"))
}
