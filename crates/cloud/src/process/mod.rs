//! The `process` backend: the same EC2 semantics as the simulated backend
//! (it *is* that core, `simulated::SimulatedBackend`), with a runtime whose
//! instances are real processes (`runtime`), images made of
//! content-addressed layers (`layers`), a metadata service per instance
//! (`endstate-imds`), and every record written through to SQLite
//! (`store`), so that [`ProcessBackend::open`] on the same directory after
//! a crash knows every instance again.
//!
//! The layout of the cloud directory and what `init.json` and
//! `status.json` hold are the contract of `docs/process-backend.md`.
//!
//! Not here: HTTP (the server's), what runs inside an instance
//! (`crates/instance`).

mod cpu;
mod layers;
mod procfs;
mod runtime;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use endstate_clock::{SharedClock, SystemClock};
use endstate_imds::Signer;
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
    GetConsoleOutputResponse, Image, InstanceUtilization, ModifyInstanceMetadataOptionsRequest,
    ModifyInstanceMetadataOptionsResponse, RebootInstancesRequest, RebootInstancesResponse,
    RunInstancesRequest, RunInstancesResponse, StartInstancesRequest, StartInstancesResponse,
    StopInstancesRequest, StopInstancesResponse, TerminateInstancesRequest,
    TerminateInstancesResponse,
};

pub use crate::store::{Event, StoreError};
pub use layers::{build_base_tree, tree_digest};
pub use runtime::{slot_address, UID_BASE};

use crate::backend::Backend;
use crate::elbv2::{InstanceDirectory, InstanceView, LoadBalancers, GENERATION_TAG};
use crate::error::ApiError;
use crate::simulated::{iso_time, ImageRecord, SimulatedBackend, SimulatedConfig, Timings};
use crate::store::Store;
use layers::LayerStore;
use runtime::{ProcessRuntime, RuntimeSettings};

/// The name of the starter base image.
pub const BASE_IMAGE_NAME: &str = "endstate-base";

/// The starter base image's id: fixed, as the simulated backend's default
/// image and the examples name it, whatever its layer's digest.
pub const BASE_IMAGE_ID: &str = "ami-0e5c0f5d3b1e2a4f6";

/// How instances are kept apart from the host and from each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Root: mount, PID and UTS namespaces, an overlay root, a uid of its
    /// own per instance.
    Namespaces,
    /// Not root, where the kernel allows unprivileged user namespaces: each
    /// instance in a user namespace (root inside is the cloud's uid outside)
    /// with its own mount, PID and UTS namespaces and an overlay root, as in
    /// root mode — but every instance is the cloud's uid on the host, so the
    /// metadata service tells them apart only by the listener they call.
    Userns,
    /// Not root: no namespaces, a copied root, every instance runs as the
    /// cloud's own uid — instances can see and signal each other, and the
    /// metadata service tells them apart only by the listener they call.
    None,
}

impl Isolation {
    /// As `init.json` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Namespaces => "namespaces",
            Isolation::Userns => "userns",
            Isolation::None => "none",
        }
    }
}

/// Everything the process backend is made of.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// The cloud directory (`cloud.db`, `layers/`, `instances/`, ...).
    pub dir: PathBuf,
    /// Region, account, zones, throttling, capacity and faults, as for the
    /// simulated backend. Its `images` are ignored (the base image and the
    /// images made by CreateImage are the process backend's) and its
    /// timings replaced by the runtime's.
    pub ec2: SimulatedConfig,
    /// The instance's top process: this, with the instance directory
    /// appended. Default: `[<this executable>, "cloud", "instance-init"]`.
    pub init_command: Vec<OsString>,
    /// How often the prober reads each instance's status and samples
    /// its CPU (`DescribeInstanceUtilization`). Default 2 s.
    pub status_interval: Duration,
    /// SIGTERM → SIGKILL grace of stop and reboot. Default 10 s.
    pub stop_grace: Duration,
    /// The metadata service's port on each instance's address. Default 169
    /// as root, else 1169.
    pub imds_port: u16,
    /// `None`: namespaces when the cloud runs as root, else none.
    pub isolation: Option<Isolation>,
    /// Host directories bound read-only into each root (root mode).
    pub host_binds: Vec<PathBuf>,
    /// (source, target) binds into each root, such as the endstate binary.
    pub extra_binds: Vec<(PathBuf, PathBuf)>,
}

impl ProcessConfig {
    /// The defaults, for the cloud directory `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let root = procfs::effective_uid() == Some(0);
        let mut ec2 = SimulatedConfig::new("us-east-1");
        ec2.images.clear();
        let exe = std::env::current_exe()
            .map(OsString::from)
            .unwrap_or_else(|_| "endstate".into());
        Self {
            dir: dir.into(),
            ec2,
            init_command: vec![exe.clone(), "cloud".into(), "instance-init".into()],
            status_interval: Duration::from_secs(2),
            stop_grace: Duration::from_secs(10),
            imds_port: if root { 169 } else { 1169 },
            isolation: None,
            host_binds: ["/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc/ssl/certs"]
                .iter()
                .map(PathBuf::from)
                .collect(),
            extra_binds: vec![(
                PathBuf::from(exe),
                PathBuf::from("/opt/endstate/bin/endstate"),
            )],
        }
    }
}

/// Why the backend could not open its directory.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cloud directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the metadata signing key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the process backend needs a tokio runtime to run on")]
    NoRuntime,
    #[error("restoring the instances: {0}")]
    Restore(String),
}

/// How often targets of terminated instances are looked for.
const DEREGISTER_GONE_EVERY: Duration = Duration::from_secs(1);

/// The process backend. Dropping it stops its prober, metadata listeners
/// and load balancers; the instances' processes keep running (they outlive
/// the cloud server, and `open` re-adopts them).
#[derive(Debug)]
pub struct ProcessBackend {
    core: Arc<SimulatedBackend>,
    runtime: Arc<ProcessRuntime>,
    instances: Arc<ProcessInstances>,
    load_balancers: Arc<LoadBalancers>,
    /// Deregisters terminated instances every second.
    sweeper: tokio::task::JoinHandle<()>,
    store: Arc<Store>,
    signer: Arc<Signer>,
    isolation: Isolation,
    base_image: String,
    dir: PathBuf,
}

fn dir_error(path: &Path) -> impl FnOnce(io::Error) -> ProcessError + '_ {
    move |source| ProcessError::Dir {
        path: path.to_path_buf(),
        source,
    }
}

/// The signing key at `path`, made (0600) if there is none.
fn signing_key(path: &Path) -> Result<Signer, ProcessError> {
    let key_error = |reason: String| ProcessError::Key {
        path: path.to_path_buf(),
        reason,
    };
    match fs::read(path) {
        Ok(bytes) => {
            let secret: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| key_error(format!("{} bytes, expected 32", bytes.len())))?;
            Ok(Signer::from_bytes(&secret))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let signer = Signer::generate().map_err(|e| key_error(e.to_string()))?;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| key_error(e.to_string()))?;
            io::Write::write_all(&mut file, &signer.to_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| key_error(e.to_string()))?;
            Ok(signer)
        }
        Err(e) => Err(key_error(e.to_string())),
    }
}

impl ProcessBackend {
    /// Opens the cloud directory (creating it), restores every instance it
    /// records, and starts probing. Must be called on a tokio runtime,
    /// which the backend's tasks then run on.
    pub fn open(config: ProcessConfig) -> Result<Arc<Self>, ProcessError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| ProcessError::NoRuntime)?;
        let dir = config.dir.clone();
        fs::create_dir_all(dir.join("instances")).map_err(dir_error(&dir))?;
        let store = Arc::new(Store::open(&dir.join("cloud.db"))?);
        let signer = Arc::new(signing_key(&dir.join("imds-key"))?);
        let layers = LayerStore::open(dir.join("layers")).map_err(dir_error(&dir))?;
        let isolation = config.isolation.unwrap_or_else(|| {
            if procfs::effective_uid() == Some(0) {
                Isolation::Namespaces
            } else if user_namespaces_work(&dir) {
                Isolation::Userns
            } else {
                Isolation::None
            }
        });
        let clock: SharedClock = SystemClock::shared();

        let base_layer = layers.add_with(build_base_tree).map_err(dir_error(&dir))?;
        let base = ImageRecord {
            image: Image {
                image_id: BASE_IMAGE_ID.to_string(),
                name: Some(BASE_IMAGE_NAME.to_string()),
                state: "available".to_string(),
                owner_id: Some(config.ec2.account_id.clone()),
                architecture: Some(std::env::consts::ARCH.replace("aarch64", "arm64")),
                root_device_name: Some("/dev/xvda".to_string()),
                creation_date: Some("2026-11-01T00:00:00.000Z".to_string()),
                tags: vec![],
            },
            description: Some("The starter base image of the built-in cloud".to_string()),
            layers: vec![base_layer],
        };

        let settings = RuntimeSettings {
            dir: dir.clone(),
            init_command: config.init_command.clone(),
            stop_grace: config.stop_grace,
            status_interval: config.status_interval,
            imds_port: config.imds_port,
            isolation,
            region: config.ec2.region.clone(),
            account_id: config.ec2.account_id.clone(),
            host_binds: config.host_binds.clone(),
            extra_binds: config.extra_binds.clone(),
        };
        let runtime = ProcessRuntime::new(
            settings,
            store.clone(),
            layers,
            signer.clone(),
            clock.clone(),
            handle,
        );
        let mut ec2 = config.ec2;
        ec2.images.clear();
        ec2.timings = Timings::runtime_driven();
        ec2.id_salt = store.id_salt()?;
        let restored = store.load()?;
        let core = Arc::new(SimulatedBackend::restore(
            ec2,
            clock,
            Some(runtime.clone()),
            Some(store.clone()),
            restored,
        ));
        runtime.attach(&core);
        let base_image = base.image.image_id.clone();
        core.put_image(base)
            .map_err(|e| ProcessError::Restore(e.to_string()))?;
        runtime.restore(&core).map_err(ProcessError::Restore)?;
        runtime.probe_all();
        runtime.start_prober();
        let load_balancers = Arc::new(
            LoadBalancers::with_data_planes(
                &core.config().region,
                &core.config().account_id,
                SystemClock::shared(),
                Some(store.clone()),
            )
            .map_err(ProcessError::Store)?,
        );
        let instances = Arc::new(ProcessInstances {
            core: core.clone(),
            runtime: runtime.clone(),
        });
        let sweeper = {
            let (load_balancers, instances) = (load_balancers.clone(), instances.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(DEREGISTER_GONE_EVERY);
                loop {
                    tick.tick().await;
                    load_balancers.deregister_gone(&*instances).await;
                }
            })
        };
        Ok(Arc::new(Self {
            core,
            runtime,
            instances,
            load_balancers,
            sweeper,
            store,
            signer,
            isolation,
            base_image,
            dir,
        }))
    }

    /// How instances are isolated (`endstate cloud status` says it).
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// The id of the starter base image.
    pub fn base_image_id(&self) -> &str {
        &self.base_image
    }

    /// The public half of the identity-document signing key.
    pub fn imds_public_key(&self) -> [u8; 32] {
        self.signer.public_key_bytes()
    }

    /// The cloud directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `instances/<id>/`.
    pub fn instance_dir(&self, id: &str) -> PathBuf {
        self.runtime.instance_dir(id)
    }

    /// The instance's address, while it is live.
    pub fn address(&self, id: &str) -> Option<Ipv4Addr> {
        self.runtime.address(id)
    }

    /// The uid the instance's processes run as (root mode; without
    /// isolation they run as the cloud's).
    pub fn uid(&self, id: &str) -> Option<u32> {
        self.runtime.uid(id)
    }

    /// The PID of the instance's top process, while it runs.
    pub fn top_process(&self, id: &str) -> Option<u32> {
        self.runtime.top_process(id)
    }

    /// The instance's status-change events, oldest first.
    pub fn events(&self, id: &str) -> Result<Vec<Event>, StoreError> {
        self.store.events(id)
    }

    /// Probes every instance now (the prober does so every interval).
    pub fn probe_now(&self) {
        self.runtime.probe_all();
    }
}

impl Drop for ProcessBackend {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

/// The process backend's instances as the load balancers see them: the
/// core's records, with the runtime's real (loopback) addresses.
#[derive(Debug)]
struct ProcessInstances {
    core: Arc<SimulatedBackend>,
    runtime: Arc<ProcessRuntime>,
}

impl InstanceDirectory for ProcessInstances {
    fn instance(&self, id: &str) -> Option<InstanceView> {
        let record = self.core.record(id)?;
        Some(InstanceView {
            gone: matches!(
                record.phase,
                crate::simulated::Phase::ShuttingDown | crate::simulated::Phase::Terminated
            ),
            address: self.runtime.address(id).map(std::net::IpAddr::V4),
            generation: record.tags.get(GENERATION_TAG).cloned(),
        })
    }
}

impl Backend for ProcessBackend {
    fn load_balancing(&self) -> Option<(&LoadBalancers, &dyn InstanceDirectory)> {
        Some((&self.load_balancers, &*self.instances))
    }

    fn run_instances(&self, r: &RunInstancesRequest) -> Result<RunInstancesResponse, ApiError> {
        self.core.run_instances(r)
    }
    fn describe_instances(
        &self,
        r: &DescribeInstancesRequest,
    ) -> Result<DescribeInstancesResponse, ApiError> {
        self.core.describe_instances(r)
    }
    fn terminate_instances(
        &self,
        r: &TerminateInstancesRequest,
    ) -> Result<TerminateInstancesResponse, ApiError> {
        let answer = self.core.terminate_instances(r)?;
        // Their targets drain now rather than at the next sweep, so that
        // their addresses are free of traffic before a new instance gets one.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (load_balancers, instances) = (self.load_balancers.clone(), self.instances.clone());
            handle.spawn(async move { load_balancers.deregister_gone(&*instances).await });
        }
        Ok(answer)
    }
    fn stop_instances(&self, r: &StopInstancesRequest) -> Result<StopInstancesResponse, ApiError> {
        self.core.stop_instances(r)
    }
    fn start_instances(
        &self,
        r: &StartInstancesRequest,
    ) -> Result<StartInstancesResponse, ApiError> {
        self.core.start_instances(r)
    }
    fn reboot_instances(
        &self,
        r: &RebootInstancesRequest,
    ) -> Result<RebootInstancesResponse, ApiError> {
        self.core.reboot_instances(r)
    }
    fn create_tags(&self, r: &CreateTagsRequest) -> Result<CreateTagsResponse, ApiError> {
        self.core.create_tags(r)
    }
    fn delete_tags(&self, r: &DeleteTagsRequest) -> Result<DeleteTagsResponse, ApiError> {
        self.core.delete_tags(r)
    }
    fn describe_images(
        &self,
        r: &DescribeImagesRequest,
    ) -> Result<DescribeImagesResponse, ApiError> {
        self.core.describe_images(r)
    }
    fn describe_availability_zones(
        &self,
        r: &DescribeAvailabilityZonesRequest,
    ) -> Result<DescribeAvailabilityZonesResponse, ApiError> {
        self.core.describe_availability_zones(r)
    }
    fn describe_instance_status(
        &self,
        r: &DescribeInstanceStatusRequest,
    ) -> Result<DescribeInstanceStatusResponse, ApiError> {
        self.core.describe_instance_status(r)
    }
    fn get_console_output(
        &self,
        r: &GetConsoleOutputRequest,
    ) -> Result<GetConsoleOutputResponse, ApiError> {
        self.core.get_console_output(r)
    }
    fn create_image(&self, r: &CreateImageRequest) -> Result<CreateImageResponse, ApiError> {
        self.core.create_image(r)
    }
    fn deregister_image(
        &self,
        r: &DeregisterImageRequest,
    ) -> Result<DeregisterImageResponse, ApiError> {
        self.core.deregister_image(r)
    }
    /// Images are layers here, freed by DeregisterImage: there are no
    /// snapshots to delete.
    fn delete_snapshot(
        &self,
        r: &DeleteSnapshotRequest,
    ) -> Result<DeleteSnapshotResponse, ApiError> {
        self.core.delete_snapshot(r)
    }
    fn modify_instance_metadata_options(
        &self,
        r: &ModifyInstanceMetadataOptionsRequest,
    ) -> Result<ModifyInstanceMetadataOptionsResponse, ApiError> {
        self.core.modify_instance_metadata_options(r)
    }
    /// A volume-style bake: the runtime runs the script in a copy of the
    /// source image's root (`instance-init` with `boot: once`) and the
    /// upper directory becomes the image's new layer.
    fn bake_image(&self, r: &BakeImageRequest) -> Result<BakeImageResponse, ApiError> {
        self.core.bake_image(r)
    }
    fn get_bake_output(&self, r: &GetBakeOutputRequest) -> Result<GetBakeOutputResponse, ApiError> {
        self.core.get_bake_output(r)
    }
    /// From the runtime's CPU samples (one per status interval): instances
    /// without a sample yet, or without processes (stopped, terminated),
    /// are absent.
    fn describe_instance_utilization(
        &self,
        r: &DescribeInstanceUtilizationRequest,
    ) -> Result<DescribeInstanceUtilizationResponse, ApiError> {
        self.core
            .admit_runtime_describe("DescribeInstanceUtilization", &r.instance_ids)?;
        let instances = self
            .runtime
            .utilization(&r.instance_ids)
            .into_iter()
            .map(|(instance_id, s)| InstanceUtilization {
                instance_id,
                cpu_utilization: s.utilization,
                cpu_seconds: s.cpu_seconds,
                window_seconds: s.window.as_secs_f64(),
                sampled_at: iso_time(s.sampled_at),
            })
            .collect();
        Ok(DescribeInstanceUtilizationResponse {
            request_id: None,
            instances,
        })
    }
}

/// Whether this (unprivileged) process can make a user namespace with
/// mount and PID namespaces and mount an overlay in it — what
/// [`Isolation::Userns`] needs. Tried once at open with util-linux's
/// `unshare`, in a scratch directory under the cloud directory.
fn user_namespaces_work(dir: &Path) -> bool {
    let scratch = dir.join("userns-probe");
    let _ = fs::remove_dir_all(&scratch);
    let dirs = ["lower", "upper", "work", "merged"].map(|d| scratch.join(d));
    if dirs.iter().any(|d| fs::create_dir_all(d).is_err()) {
        return false;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        dirs[0].display(),
        dirs[1].display(),
        dirs[2].display()
    );
    let worked = std::process::Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "--pid",
            "--uts",
            "--fork",
        ])
        .args(["mount", "-t", "overlay", "overlay", "-o", &options])
        .arg(&dirs[3])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let _ = fs::remove_dir_all(&scratch);
    worked
}
