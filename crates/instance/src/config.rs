//! The two files the host side and the instance runtime share: `init.json`
//! ([`InitConfig`], written by the backend, read by the runtime) and
//! `status.json` ([`Status`], written by the runtime, read by the backend's
//! status probe). Plain serde types and file I/O only: nothing here needs root,
//! spawns a process or touches a namespace.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file name of the init configuration inside an instance directory.
pub const INIT_FILE: &str = "init.json";
/// The file name of the console log inside an instance directory.
pub const CONSOLE_FILE: &str = "console.log";

/// Why `init.json` or `status.json` could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read, written or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file is not the JSON this crate expects.
    #[error("{path}: {source}")]
    Json {
        /// The file concerned.
        path: PathBuf,
        /// What serde said, with line and column.
        source: serde_json::Error,
    },
}

/// `init.json`: everything the runtime needs to make, boot and watch one
/// instance (docs/process-backend.md, "Starting an instance").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// The EC2 instance id, `i-…`.
    pub instance_id: String,
    /// The hostname set in the instance's UTS namespace.
    pub hostname: String,
    /// The instance's loopback address (`127.x.y.z`).
    pub address: String,
    /// The uid everything the instance runs has (root mode).
    pub uid: u32,
    /// The gid everything the instance runs has (root mode).
    pub gid: u32,
    /// Namespaces and chroot (root), or none.
    pub isolation: Isolation,
    /// Where the instance's `/` comes from.
    pub root: RootSource,
    /// The instance's `/` as seen from the host.
    pub mount_point: PathBuf,
    /// Host directories bind-mounted read-only into the root (missing ones skipped).
    #[serde(default)]
    pub host_binds: Vec<PathBuf>,
    /// Further read-only binds, from a host path to a path inside the root.
    #[serde(default)]
    pub extra_binds: Vec<Bind>,
    /// Resource limits set before anything of the instance runs.
    #[serde(default)]
    pub rlimits: Rlimits,
    /// Environment given to everything the instance runs.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The user data file (host path); a missing file is empty user data.
    pub user_data: PathBuf,
    /// The supervisor's control socket (host path).
    pub control_socket: PathBuf,
    /// Where the runtime writes [`Status`] (host path).
    pub status_file: PathBuf,
    /// First boot (all user data) or a later one (`bootcmd` only).
    pub boot: BootKind,
}

/// How an instance is isolated from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Root mode: mount, PID and UTS namespaces, chroot, uid drop.
    Namespaces,
    /// Without root, where the kernel allows unprivileged user namespaces:
    /// a user namespace mapping root inside to the cloud's uid outside, then
    /// mount, PID and UTS namespaces, an overlay root (no `metacopy`, which
    /// the kernel refuses there) and chroot, as in root mode; every process
    /// is root inside and the cloud's uid on the host.
    Userns,
    /// No root: processes run as the cloud's uid in a copied root.
    None,
}

/// Where the instance's `/` comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum RootSource {
    /// An overlay of image layers (root mode).
    Overlay(Overlay),
    /// A plain directory, a copy of the image's layers.
    Copied(PathBuf),
}

/// The directories of an overlay root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// Lower layers, top first.
    pub lower: Vec<PathBuf>,
    /// The instance's own writable layer.
    pub upper: PathBuf,
    /// Overlay's work directory, on the same file system as `upper`.
    pub work: PathBuf,
}

/// One read-only bind mount into the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bind {
    /// A host path (file or directory).
    pub source: PathBuf,
    /// An absolute path inside the instance.
    pub target: PathBuf,
}

/// Resource limits; `None` leaves a limit as inherited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rlimits {
    /// `RLIMIT_NOFILE`.
    #[serde(default)]
    pub nofile: Option<u64>,
    /// `RLIMIT_NPROC` (counted per uid, so per instance).
    #[serde(default)]
    pub nproc: Option<u64>,
    /// `RLIMIT_AS`, in bytes.
    #[serde(default)]
    pub as_bytes: Option<u64>,
    /// `RLIMIT_CORE`, in bytes.
    #[serde(default)]
    pub core: Option<u64>,
}

/// Which boot this start is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootKind {
    /// The instance's first boot: all of the user data runs.
    First,
    /// Start after stop, reboot, re-adoption: `bootcmd` only.
    Again,
    /// A volume bake: all of the user data runs, as on a first boot, and
    /// then the runtime ends with the boot's exit status (0 when every
    /// step succeeded) instead of supervising services. Nothing is started
    /// from `/etc/endstate/services`.
    Once,
}

impl InitConfig {
    /// Writes `dir/init.json` atomically (a temporary file renamed over it).
    pub fn write(&self, dir: &Path) -> Result<(), ConfigError> {
        let path = dir.join(INIT_FILE);
        let json = serde_json::to_vec_pretty(self).map_err(|source| ConfigError::Json {
            path: path.clone(),
            source,
        })?;
        write_atomically(&path, &json)
    }

    /// Reads `dir/init.json`; unknown fields are an error.
    pub fn read(dir: &Path) -> Result<InitConfig, ConfigError> {
        read_json(&dir.join(INIT_FILE))
    }
}

/// `status.json`: the runtime's account of boot and services, rewritten
/// atomically on every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The runtime's PID as seen inside the instance (1 in root mode).
    pub pid: u32,
    /// Where the boot of user data is.
    pub boot: BootState,
    /// RFC 3339, UTC.
    pub boot_started: Option<String>,
    /// RFC 3339, UTC; `None` while booting.
    pub boot_finished: Option<String>,
    /// The first non-zero exit status of a boot step, or 0; `None` while booting.
    pub user_data_exit: Option<i32>,
    /// Every service the supervisor knows, by name.
    pub services: Vec<ServiceStatus>,
    /// RFC 3339, UTC: when this file was written.
    pub updated: String,
}

/// Where the boot of user data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootState {
    /// User data is running.
    Booting,
    /// Every step ran and succeeded.
    Finished,
    /// A step failed, the user data could not be parsed, or the boot was interrupted.
    Failed,
}

/// One service as the supervisor sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The service's name (its file name without `.json`).
    pub name: String,
    /// Its state.
    pub state: ServiceState,
    /// Its PID inside the instance, while it runs.
    pub pid: Option<u32>,
    /// How many times the supervisor restarted it.
    pub restarts: u32,
    /// The exit status of its last run (128 + signal number when killed).
    pub last_exit: Option<i32>,
}

/// The state of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    /// Its process runs.
    Running,
    /// It ended with status 0 (and is restarted later if its policy says so).
    Exited,
    /// It ended with a non-zero status or could not start (and is restarted
    /// later if its policy says so).
    Failed,
    /// Stopped through the control socket or at shutdown.
    Stopped,
}

impl Status {
    /// Reads a status file written by the runtime.
    pub fn read(path: &Path) -> Result<Status, ConfigError> {
        read_json(path)
    }

    /// The service of that name, if the supervisor knows it.
    pub fn service(&self, name: &str) -> Option<&ServiceStatus> {
        self.services.iter().find(|service| service.name == name)
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| ConfigError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InitConfig {
        InitConfig {
            instance_id: "i-0123456789abcdef0".into(),
            hostname: "ip-127-100-0-2".into(),
            address: "127.100.0.2".into(),
            uid: 2_000_002,
            gid: 2_000_002,
            isolation: Isolation::Namespaces,
            root: RootSource::Overlay(Overlay {
                lower: vec!["/l/a".into(), "/l/b".into()],
                upper: "/i/upper".into(),
                work: "/i/work".into(),
            }),
            mount_point: "/i/root".into(),
            host_binds: vec!["/usr".into()],
            extra_binds: vec![Bind {
                source: "/bin/endstate".into(),
                target: "/opt/endstate/bin/endstate".into(),
            }],
            rlimits: Rlimits {
                nofile: Some(1024),
                nproc: Some(512),
                as_bytes: None,
                core: Some(0),
            },
            env: BTreeMap::from([("AWS_REGION".into(), "us-east-1".into())]),
            user_data: "/i/user-data".into(),
            control_socket: "/i/supervisor.sock".into(),
            status_file: "/i/status.json".into(),
            boot: BootKind::First,
        }
    }

    #[test]
    fn init_json_round_trips_through_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let config = sample();
        config.write(dir.path()).unwrap();
        assert_eq!(InitConfig::read(dir.path()).unwrap(), config);
    }

    #[test]
    fn init_json_has_the_documented_shape() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["isolation"], "namespaces");
        assert_eq!(json["boot"], "first");
        assert_eq!(json["root"]["overlay"]["lower"][1], "/l/b");
        assert_eq!(json["rlimits"]["as_bytes"], serde_json::Value::Null);
        let copied = serde_json::json!({"copied": "/i/root"});
        assert_eq!(
            serde_json::from_value::<RootSource>(copied).unwrap(),
            RootSource::Copied("/i/root".into())
        );
    }

    #[test]
    fn init_json_with_an_unknown_field_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut json = serde_json::to_value(sample()).unwrap();
        json["colour"] = "blue".into();
        std::fs::write(dir.path().join(INIT_FILE), json.to_string()).unwrap();
        let error = InitConfig::read(dir.path()).unwrap_err().to_string();
        assert!(error.contains("unknown field `colour`"), "{error}");
    }

    #[test]
    fn status_reads_the_documented_example() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        std::fs::write(
            &path,
            r#"{"pid": 4242, "boot": "finished",
               "boot_started": "2026-11-27T10:00:00Z", "boot_finished": "2026-11-27T10:00:01Z",
               "user_data_exit": 0,
               "services": [{"name": "web", "state": "running", "pid": 4250, "restarts": 0, "last_exit": null}],
               "updated": "2026-11-27T10:00:01Z"}"#,
        )
        .unwrap();
        let status = Status::read(&path).unwrap();
        assert_eq!(status.boot, BootState::Finished);
        assert_eq!(status.service("web").unwrap().state, ServiceState::Running);
        assert!(Status::read(&dir.path().join("missing")).is_err());
    }
}
