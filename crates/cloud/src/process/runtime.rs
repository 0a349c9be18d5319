//! The process runtime: what makes the core's instances real. Each live
//! instance has a slot (address `127.100.x.y`, uid `2,000,000 + n`), a
//! directory `instances/<id>/` with its root made from its image's layers,
//! a metadata-service listener on its own address, and a top process (the
//! init command) whose PID and start time are in `cloud.db`. A prober reads
//! each instance's `status.json` and checks its top process, moves pending
//! instances to running, and records every status change as an event;
//! after each probe it samples every instance's CPU (`cpu`) from one scan
//! of `/proc`, off the async workers and without holding the runtime's
//! lock while it reads.
//!
//! Stop, reboot and terminate signal the whole tree (see `procfs`) on
//! tasks of their own and then tell the core the phase is over.
//!
//! Not here: EC2's semantics (the core, `simulated`), what runs inside an
//! instance (`crates/instance`, through `docs/process-backend.md`).

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use endstate_clock::SharedClock;
use endstate_imds::{Caller, InstanceMetadata, ListenerScope, MetadataSource, Signer};
use endstate_instance::config::{
    self, Bind, BootKind, BootState, InitConfig, Overlay, Rlimits, RootSource, ServiceState, Status,
};
use nix::sys::signal::Signal;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::cpu::{self, CpuAccounts, CpuSample};
use super::layers::{copy_tree, LayerStore};
use super::procfs;
use super::Isolation;
use crate::error::ApiError;
use crate::simulated::{ImageRecord, LaunchInfo, Phase, Runtime, SimulatedBackend};
use crate::store::Store;

mod bake;

/// The first uid handed to instances; slot `n` runs as `UID_BASE + n`.
pub const UID_BASE: u32 = 2_000_000;

/// The address of slot `n`: `127.100.(n >> 8).(n & 255)`.
pub fn slot_address(slot: u32) -> Ipv4Addr {
    Ipv4Addr::new(127, 100, ((slot >> 8) & 0xff) as u8, (slot & 0xff) as u8)
}

/// An instance's health as the prober last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Health {
    Initializing,
    Ok,
    Impaired(String),
}

impl Health {
    fn name(&self) -> &'static str {
        match self {
            Health::Initializing => "initializing",
            Health::Ok => "ok",
            Health::Impaired(_) => "impaired",
        }
    }
}

/// What the runtime holds for one live instance.
#[derive(Debug)]
struct Live {
    slot: u32,
    layers: Vec<String>,
    /// The top process: PID and start time.
    process: Option<(u32, u64)>,
    /// The top process when this cloud spawned it (to reap it).
    child: Option<Child>,
    health: Option<Health>,
    /// Bumped by every stop, start, reboot and terminate, so that a task
    /// of an older one gives up.
    generation: u64,
    imds: Option<Listener>,
}

#[derive(Debug)]
struct Listener {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// Settings the runtime needs (from `ProcessConfig`).
#[derive(Debug, Clone)]
pub(crate) struct RuntimeSettings {
    pub(crate) dir: PathBuf,
    pub(crate) init_command: Vec<OsString>,
    pub(crate) stop_grace: Duration,
    pub(crate) status_interval: Duration,
    pub(crate) imds_port: u16,
    pub(crate) isolation: Isolation,
    pub(crate) region: String,
    pub(crate) account_id: String,
    pub(crate) host_binds: Vec<PathBuf>,
    pub(crate) extra_binds: Vec<(PathBuf, PathBuf)>,
}

#[derive(Debug)]
pub(crate) struct ProcessRuntime {
    settings: RuntimeSettings,
    store: Arc<Store>,
    layers: LayerStore,
    signer: Arc<Signer>,
    clock: SharedClock,
    handle: Handle,
    core: OnceLock<Weak<SimulatedBackend>>,
    me: OnceLock<Weak<ProcessRuntime>>,
    live: Mutex<HashMap<String, Live>>,
    prober: Mutex<Option<JoinHandle<()>>>,
    cpu: Mutex<CpuAccounts>,
    /// Volume-style bakes running, by image id.
    bakes: Mutex<HashMap<String, bake::RunningBake>>,
    /// Held by each probe round: the prober's and a test's `probe_now`
    /// would otherwise interleave, one moving an instance to running and
    /// the other recording its status before that event.
    probing: Mutex<()>,
}

impl Drop for ProcessRuntime {
    fn drop(&mut self) {
        if let Some(task) = self.prober_lock().take() {
            task.abort();
        }
    }
}

fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        io::Write::write_all(&mut file, bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)
}

impl ProcessRuntime {
    pub(crate) fn new(
        settings: RuntimeSettings,
        store: Arc<Store>,
        layers: LayerStore,
        signer: Arc<Signer>,
        clock: SharedClock,
        handle: Handle,
    ) -> Arc<Self> {
        let runtime = Arc::new(Self {
            settings,
            store,
            layers,
            signer,
            clock,
            handle,
            core: OnceLock::new(),
            me: OnceLock::new(),
            live: Mutex::new(HashMap::new()),
            prober: Mutex::new(None),
            cpu: Mutex::new(CpuAccounts::new(procfs::clock_ticks_per_second())),
            bakes: Mutex::new(HashMap::new()),
            probing: Mutex::new(()),
        });
        let _ = runtime.me.set(Arc::downgrade(&runtime));
        runtime
    }

    pub(crate) fn attach(&self, core: &Arc<SimulatedBackend>) {
        let _ = self.core.set(Arc::downgrade(core));
    }

    fn core(&self) -> Option<Arc<SimulatedBackend>> {
        self.core.get().and_then(Weak::upgrade)
    }

    fn me(&self) -> Option<Arc<ProcessRuntime>> {
        self.me.get().and_then(Weak::upgrade)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        // Updates of the map are single inserts and field writes: a panic
        // cannot leave it half-changed.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn prober_lock(&self) -> MutexGuard<'_, Option<JoinHandle<()>>> {
        self.prober.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cpu_lock(&self) -> MutexGuard<'_, CpuAccounts> {
        // `CpuAccounts::record` replaces the whole map at its end: a panic
        // before that leaves the previous tick's accounts.
        self.cpu.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn instance_dir(&self, id: &str) -> PathBuf {
        self.settings.dir.join("instances").join(id)
    }

    fn event(&self, id: &str, kind: &str, detail: &str) {
        tracing::info!(instance = %id, kind, detail, "instance event");
        if let Err(e) = self.store.add_event(id, kind, detail) {
            tracing::error!(instance = %id, error = %e, "event not recorded");
        }
    }

    pub(crate) fn address(&self, id: &str) -> Option<Ipv4Addr> {
        self.lock().get(id).map(|l| slot_address(l.slot))
    }

    pub(crate) fn top_process(&self, id: &str) -> Option<u32> {
        self.lock().get(id).and_then(|l| l.process.map(|p| p.0))
    }

    pub(crate) fn uid(&self, id: &str) -> Option<u32> {
        self.lock().get(id).map(|l| UID_BASE + l.slot)
    }

    // ---- making an instance ----

    /// Creates the directory `dir` of an instance (first launch only) or a
    /// bake, and its root, for `uid`.
    fn prepare(
        &self,
        dir: &Path,
        uid: u32,
        layers: &[String],
        user_data: Option<&[u8]>,
    ) -> io::Result<()> {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
        for sub in ["upper", "work", "root"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        if self.settings.isolation == Isolation::None {
            // Bottom layer first, so upper layers win.
            for layer in layers.iter().rev() {
                copy_tree(&self.layers.path(layer), &dir.join("root"))?;
            }
        } else if self.settings.isolation == Isolation::Namespaces {
            // The instance runtime chowns the merged tree; the upper
            // directory must be writable by the instance from the start.
            std::os::unix::fs::chown(dir.join("upper"), Some(uid), Some(uid))?;
        }
        atomic_write(&dir.join("user-data"), user_data.unwrap_or_default(), 0o600)?;
        Ok(())
    }

    /// `init.json` of an instance (`address`: its slot's) or of a bake
    /// (no address: no metadata service, hostname `bake`).
    fn init_config(
        &self,
        id: &str,
        dir: &Path,
        uid: u32,
        address: Option<Ipv4Addr>,
        layers: &[String],
        boot: BootKind,
    ) -> InitConfig {
        let (isolation, root) = match self.settings.isolation {
            Isolation::Namespaces | Isolation::Userns => (
                if self.settings.isolation == Isolation::Namespaces {
                    config::Isolation::Namespaces
                } else {
                    config::Isolation::Userns
                },
                RootSource::Overlay(Overlay {
                    lower: layers.iter().map(|l| self.layers.path(l)).collect(),
                    upper: dir.join("upper"),
                    work: dir.join("work"),
                }),
            ),
            Isolation::None => (
                config::Isolation::None,
                RootSource::Copied(dir.join("root")),
            ),
        };
        let mut env: std::collections::BTreeMap<String, String> = [
            ("AWS_REGION", self.settings.region.clone()),
            ("AWS_DEFAULT_REGION", self.settings.region.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(address) = address {
            env.insert(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT".to_string(),
                format!("http://{address}:{}/", self.settings.imds_port),
            );
        }
        InitConfig {
            instance_id: id.to_string(),
            hostname: address.map_or_else(|| "bake".to_string(), hostname),
            address: address.unwrap_or(Ipv4Addr::LOCALHOST).to_string(),
            uid,
            gid: uid,
            isolation,
            root,
            mount_point: dir.join("root"),
            host_binds: self.settings.host_binds.clone(),
            extra_binds: self
                .settings
                .extra_binds
                .iter()
                .map(|(source, target)| Bind {
                    source: source.clone(),
                    target: target.clone(),
                })
                .collect(),
            rlimits: Rlimits {
                nofile: Some(1024),
                nproc: Some(512),
                as_bytes: None,
                core: Some(0),
            },
            env,
            user_data: dir.join("user-data"),
            control_socket: dir.join("supervisor.sock"),
            status_file: dir.join("status.json"),
            boot,
        }
    }

    /// Writes `init.json` and spawns the init command; records the process.
    fn spawn(&self, id: &str, boot: BootKind) -> Result<(), String> {
        let (slot, layers) = {
            let live = self.lock();
            let l = live.get(id).ok_or("the instance has no slot")?;
            (l.slot, l.layers.clone())
        };
        let dir = self.instance_dir(id);
        self.init_config(
            id,
            &dir,
            UID_BASE + slot,
            Some(slot_address(slot)),
            &layers,
            boot,
        )
        .write(&dir)
        .map_err(|e| format!("writing init.json: {e}"))?;
        match fs::remove_file(dir.join("status.json")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(format!("removing the old status.json: {e}"))
            }
            _ => {}
        }
        let child = self.spawn_init(&dir)?;
        let pid = child.id();
        let start = procfs::start_time(pid).unwrap_or(0);
        if let Err(e) = self.store.set_process(id, Some((pid, start))) {
            tracing::error!(instance = %id, error = %e, "top process not recorded");
        }
        if let Some(l) = self.lock().get_mut(id) {
            l.process = Some((pid, start));
            l.child = Some(child);
            l.health = None;
        }
        let boot = match boot {
            BootKind::First => "first",
            BootKind::Again => "again",
            BootKind::Once => "once",
        };
        self.event(id, "spawned", &format!("pid {pid}, boot {boot}"));
        Ok(())
    }

    /// Spawns the init command on `dir` in a process group of its own,
    /// its output appended to `dir/console.log`.
    fn spawn_init(&self, dir: &Path) -> Result<Child, String> {
        let console = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("console.log"))
            .map_err(|e| format!("opening console.log: {e}"))?;
        let console2 = console
            .try_clone()
            .map_err(|e| format!("opening console.log: {e}"))?;
        let (program, args) = self
            .settings
            .init_command
            .split_first()
            .ok_or("the init command is empty")?;
        Command::new(program)
            .args(args)
            .arg(dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console2)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", program.to_string_lossy()))
    }

    fn start_listener(&self, id: &str, address: Ipv4Addr) -> Result<Listener, String> {
        let _entered = self.handle.enter();
        let addr = SocketAddr::new(address.into(), self.settings.imds_port);
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
        socket
            .bind(addr)
            .map_err(|e| format!("binding the metadata service to {addr}: {e}"))?;
        let listener = socket.listen(128).map_err(|e| e.to_string())?;
        self.serve_on(id, listener)
    }

    /// Serves the metadata service on the socket that claimed the slot.
    fn serve_metadata(&self, id: &str, socket: std::net::TcpListener) -> Result<Listener, String> {
        let _entered = self.handle.enter();
        socket.set_nonblocking(true).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::from_std(socket).map_err(|e| e.to_string())?;
        self.serve_on(id, listener)
    }

    fn serve_on(&self, id: &str, listener: tokio::net::TcpListener) -> Result<Listener, String> {
        let _entered = self.handle.enter();
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let source: Arc<dyn MetadataSource> = Arc::new(Source {
            runtime: self.me.get().cloned().unwrap_or_default(),
        });
        let router = endstate_imds::scoped_app(
            ListenerScope::Instance(id.to_string()),
            source,
            self.signer.clone(),
            self.clock.clone(),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = self.handle.spawn(async move {
            let served = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<Caller>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
            if let Err(e) = served {
                tracing::warn!(%addr, error = %e, "metadata service ended");
            }
        });
        Ok(Listener {
            stop: Some(stop),
            task,
        })
    }

    /// Takes a slot, makes the directory and listener, spawns.
    fn make(&self, id: &str, layers: &[String], user_data: Option<&[u8]>) -> Option<String> {
        let uids = procfs::uids_in_use();
        let listening = endstate_imds::listening_on_host();
        let port = self.settings.imds_port;
        // Another cloud on this host hands out the same slots: skip the
        // ones whose address anything listens on or whose uid runs anything,
        // and claim the chosen one by binding its metadata port and keeping
        // that socket as the instance's listener — so two clouds launching
        // at once cannot both take an address between a check and a bind.
        let claimed: std::cell::RefCell<Option<std::net::TcpListener>> =
            std::cell::RefCell::new(None);
        let usable = |n: u32| {
            let address = slot_address(n);
            if uids.contains(&(UID_BASE + n)) || listening.contains(&std::net::IpAddr::V4(address))
            {
                return false;
            }
            match std::net::TcpListener::bind((address, port)) {
                Ok(listener) => {
                    *claimed.borrow_mut() = Some(listener);
                    true
                }
                Err(_) => false,
            }
        };
        let slot = match self.store.allocate_slot(id, layers, &usable) {
            Ok(slot) => slot,
            Err(e) => {
                self.event(id, "launch-failed", &e.to_string());
                return None;
            }
        };
        let address = slot_address(slot);
        self.lock().insert(
            id.to_string(),
            Live {
                slot,
                layers: layers.to_vec(),
                process: None,
                child: None,
                health: None,
                generation: 0,
                imds: None,
            },
        );
        let made = self
            .prepare(&self.instance_dir(id), UID_BASE + slot, layers, user_data)
            .map_err(|e| format!("preparing the instance directory: {e}"))
            .and_then(|()| match claimed.into_inner() {
                Some(socket) => self.serve_metadata(id, socket),
                None => self.start_listener(id, address),
            })
            .and_then(|listener| {
                if let Some(l) = self.lock().get_mut(id) {
                    l.imds = Some(listener);
                }
                self.spawn(id, BootKind::First)
            });
        if let Err(e) = made {
            self.event(id, "launch-failed", &e);
            if let Some(l) = self.lock().get_mut(id) {
                l.health = Some(Health::Impaired(e));
            }
        }
        Some(address.to_string())
    }

    /// Records a spawn that failed: the instance is impaired, for that
    /// reason, until a later spawn.
    fn spawn_failed(&self, id: &str, why: String) {
        self.event(id, "spawn-failed", &why);
        if let Some(l) = self.lock().get_mut(id) {
            l.process = None;
            l.health = Some(Health::Impaired(why));
        }
    }

    // ---- ending processes ----

    /// The instance's processes on the host. Not by uid: another cloud on
    /// this host may hand out the same uids; in root mode every process of
    /// the instance is in the PID namespace whose init descends from the top
    /// process, and dies with it.
    fn tree(&self, id: &str) -> BTreeSet<u32> {
        let process = self.lock().get(id).and_then(|l| l.process);
        procfs::instance_tree(process)
    }

    /// Reaps our own child if it exited; whether the top process lives.
    fn top_alive(&self, id: &str) -> bool {
        let mut live = self.lock();
        let Some(l) = live.get_mut(id) else {
            return false;
        };
        if let Some(child) = &mut l.child {
            if let Ok(Some(_)) = child.try_wait() {
                l.child = None;
            }
        }
        l.process
            .is_some_and(|(pid, start)| procfs::alive(pid, start))
    }

    fn generation(&self, id: &str) -> Option<u64> {
        self.lock().get(id).map(|l| l.generation)
    }

    fn bump(&self, id: &str) -> Option<u64> {
        self.lock().get_mut(id).map(|l| {
            l.generation += 1;
            l.generation
        })
    }

    /// SIGTERM to the top process, then after the grace
    /// SIGKILL to the whole tree until nothing of it is left.
    async fn end_processes(&self, id: &str, grace: Duration) {
        if !grace.is_zero() && self.top_alive(id) {
            // The top process (the supervisor) stops its services itself.
            if let Some(pid) = self.top_process(id) {
                procfs::signal_all(&BTreeSet::from([pid]), Signal::SIGTERM);
            }
            let deadline = tokio::time::Instant::now() + grace;
            while tokio::time::Instant::now() < deadline && self.top_alive(id) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        for _ in 0..200 {
            let tree = self.tree(id);
            if tree.is_empty() && !self.top_alive(id) {
                break;
            }
            procfs::signal_all(&tree, Signal::SIGKILL);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = self.top_alive(id);
        if let Some(l) = self.lock().get_mut(id) {
            l.process = None;
        }
        if let Err(e) = self.store.set_process(id, None) {
            tracing::error!(instance = %id, error = %e, "process end not recorded");
        }
    }

    fn spawn_task<F>(&self, work: impl FnOnce(Arc<ProcessRuntime>) -> F + Send + 'static)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if let Some(me) = self.me() {
            self.handle.spawn(work(me));
        }
    }

    async fn do_stop(self: Arc<Self>, id: String, generation: u64) {
        self.end_processes(&id, self.settings.stop_grace).await;
        if self.generation(&id) != Some(generation) {
            return;
        }
        if let Some(core) = self.core() {
            if core.advance(&id, Phase::Stopping, Phase::Stopped) {
                self.event(&id, "stopped", "");
            }
        }
    }

    async fn do_reboot(self: Arc<Self>, id: String, generation: u64) {
        self.event(&id, "rebooting", "");
        self.end_processes(&id, self.settings.stop_grace).await;
        if self.generation(&id) != Some(generation) {
            return;
        }
        if let Err(e) = self.spawn(&id, BootKind::Again) {
            self.spawn_failed(&id, e);
        }
    }

    async fn do_terminate(self: Arc<Self>, id: String) {
        self.end_processes(&id, Duration::ZERO).await;
        let removed = self.lock().remove(&id);
        drop(removed); // Stops the metadata listener.
        if let Err(e) = fs::remove_dir_all(self.instance_dir(&id)) {
            if e.kind() != io::ErrorKind::NotFound {
                self.event(&id, "cleanup-failed", &e.to_string());
            }
        }
        if let Err(e) = self.store.release_slot(&id) {
            tracing::error!(instance = %id, error = %e, "slot not released");
        }
        if let Some(core) = self.core() {
            core.advance(&id, Phase::ShuttingDown, Phase::Terminated);
            self.collect_layers(&core.image_layer_set());
        }
        self.event(&id, "terminated", "");
    }

    /// The layers live instances and running bakes use.
    fn layers_in_use(&self) -> BTreeSet<String> {
        let mut in_use: BTreeSet<String> = self
            .lock()
            .values()
            .flat_map(|l| l.layers.iter().cloned())
            .collect();
        in_use.extend(self.bake_layers());
        in_use
    }

    /// Removes layers no image, no live instance and no bake uses.
    fn collect_layers(&self, image_layers: &BTreeSet<String>) {
        let in_use = self.layers_in_use();
        if let Ok(all) = self.layers.list() {
            for layer in all {
                if !image_layers.contains(&layer) && !in_use.contains(&layer) {
                    if let Err(e) = self.layers.remove(&layer) {
                        tracing::warn!(%layer, error = %e, "layer not removed");
                    }
                }
            }
        }
    }

    // ---- the prober ----

    pub(crate) fn start_prober(&self) {
        let weak = self.me.get().cloned().unwrap_or_default();
        let interval = self.settings.status_interval;
        let task = self.handle.spawn(async move {
            loop {
                let Some(runtime) = weak.upgrade() else {
                    return;
                };
                runtime.probe_all();
                // Reading every process's stat is blocking file I/O: not
                // on the async workers.
                if let Err(e) = tokio::task::spawn_blocking(move || runtime.sample_cpu()).await {
                    tracing::warn!(error = %e, "CPU sampling failed");
                }
                tokio::time::sleep(interval).await;
            }
        });
        *self.prober_lock() = Some(task);
    }

    /// One CPU sample of every instance whose processes run: one scan of
    /// `/proc` for all of them, the runtime's lock held only to list them.
    pub(crate) fn sample_cpu(&self) {
        let tops: Vec<(String, (u32, u64))> = self
            .lock()
            .iter()
            .filter_map(|(id, l)| l.process.map(|p| (id.clone(), p)))
            .collect();
        let table = procfs::process_table();
        // The namespace the top process made for the instance, once it
        // has (`unshare(CLONE_NEWPID)` changes only its children's); none
        // if its PID is another process's now.
        let namespaces: Vec<Option<u64>> = tops
            .iter()
            .map(|(_, (pid, start))| {
                table.get(pid).filter(|s| s.start_time == *start)?;
                let own = procfs::pid_namespace(*pid, false)?;
                procfs::pid_namespace(*pid, true).filter(|ns| *ns != own)
            })
            .collect();
        let by_pid: HashMap<u32, u64> = if namespaces.iter().any(Option::is_some) {
            table
                .keys()
                .filter_map(|pid| Some((*pid, procfs::pid_namespace(*pid, false)?)))
                .collect()
        } else {
            HashMap::new()
        };
        let observed = tops
            .into_iter()
            .zip(namespaces)
            .map(|((id, top), ns)| (id, cpu::members(&table, &by_pid, top, ns)))
            .collect();
        self.cpu_lock()
            .record(observed, Instant::now(), self.clock.now());
    }

    /// The last CPU sample of each of `ids` that has one (every instance
    /// with one when `ids` is empty, by id).
    pub(crate) fn utilization(&self, ids: &[String]) -> Vec<(String, CpuSample)> {
        let accounts = self.cpu_lock();
        if ids.is_empty() {
            let mut all: Vec<(String, CpuSample)> = accounts
                .sampled()
                .map(|(id, s)| (id.clone(), s.clone()))
                .collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        } else {
            ids.iter()
                .filter_map(|id| accounts.latest(id).map(|s| (id.clone(), s.clone())))
                .collect()
        }
    }

    /// One probe of every live instance.
    pub(crate) fn probe_all(&self) {
        let _round = self.probing.lock().unwrap_or_else(|p| p.into_inner());
        let Some(core) = self.core() else {
            return;
        };
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        for id in ids {
            let Some(record) = core.record(&id) else {
                continue;
            };
            match record.phase {
                Phase::Pending | Phase::Running => {}
                _ => continue,
            }
            let alive = self.top_alive(&id);
            let status = read_status(&self.instance_dir(&id).join("status.json"));
            let spawned = self.lock().get(&id).is_some_and(|l| l.process.is_some());
            if record.phase == Phase::Pending {
                // Running once the runtime wrote its status; or, its top
                // process dead or never spawned, running and impaired (as
                // an instance whose OS never came up).
                let failed = !spawned
                    && self
                        .lock()
                        .get(&id)
                        .is_some_and(|l| matches!(l.health, Some(Health::Impaired(_))));
                if !(status.is_some() || (spawned && !alive) || failed) {
                    continue;
                }
                if core.advance(&id, Phase::Pending, Phase::Running) {
                    self.event(&id, "running", "");
                }
            }
            let health = health_of(alive, status.as_ref());
            let changed = {
                let mut live = self.lock();
                match live.get_mut(&id) {
                    Some(l) if l.health.as_ref() != Some(&health) => {
                        // A launch failure stays the reason until a spawn.
                        if matches!(l.health, Some(Health::Impaired(_))) && !spawned {
                            false
                        } else {
                            l.health = Some(health.clone());
                            true
                        }
                    }
                    _ => false,
                }
            };
            if changed {
                let detail = match &health {
                    Health::Impaired(why) => why.clone(),
                    _ => String::new(),
                };
                self.event(&id, &format!("status:{}", health.name()), &detail);
            }
        }
    }

    // ---- restore ----

    /// Takes up again what the store says was live: re-adopts top
    /// processes that still run, marks running instances whose process is
    /// gone impaired, finishes stops and terminations, spawns pending
    /// instances that never were.
    pub(crate) fn restore(&self, core: &Arc<SimulatedBackend>) -> Result<(), String> {
        let slots = self.store.slots().map_err(|e| e.to_string())?;
        let phases: HashMap<String, Phase> = core.phases().into_iter().collect();
        for slot in &slots {
            let id = slot.instance_id.clone();
            let phase = phases.get(&id).copied().unwrap_or(Phase::Terminated);
            let alive = slot
                .process
                .is_some_and(|(pid, start)| procfs::alive(pid, start));
            self.lock().insert(
                id.clone(),
                Live {
                    slot: slot.slot,
                    layers: slot.layers.clone(),
                    process: slot.process.filter(|_| alive),
                    child: None,
                    health: None,
                    generation: 0,
                    imds: None,
                },
            );
            match phase {
                Phase::Terminated | Phase::ShuttingDown => {
                    self.bump(&id);
                    self.spawn_task(move |rt| rt.do_terminate(id));
                    continue;
                }
                _ => {}
            }
            match self.start_listener(&id, slot_address(slot.slot)) {
                Ok(listener) => {
                    if let Some(l) = self.lock().get_mut(&id) {
                        l.imds = Some(listener);
                    }
                }
                Err(e) => self.event(&id, "imds-failed", &e),
            }
            match phase {
                Phase::Stopping => {
                    let generation = self.bump(&id).unwrap_or(0);
                    self.spawn_task(move |rt| rt.do_stop(id, generation));
                }
                Phase::Stopped => {}
                Phase::Pending | Phase::Running if alive => {
                    self.event(
                        &id,
                        "adopted",
                        &format!("pid {} still runs", slot.process.map_or(0, |p| p.0)),
                    );
                }
                Phase::Pending if slot.process.is_none() => {
                    if let Err(e) = self.spawn(&id, BootKind::First) {
                        self.spawn_failed(&id, e);
                    }
                }
                Phase::Pending | Phase::Running => {
                    let why = format!(
                        "the top process (pid {}) was gone when the cloud restarted",
                        slot.process.map_or(0, |p| p.0)
                    );
                    // It had a process, which is gone: mark it, as EC2's
                    // status check would, rather than forget it.
                    if let Some(l) = self.lock().get_mut(&id) {
                        l.process = slot.process;
                        l.health = Some(health_of(false, None));
                    }
                    self.event(&id, "lost", &why);
                }
                Phase::Terminated | Phase::ShuttingDown => {}
            }
        }
        // Pending instances with no slot: the launch was journaled but the
        // cloud died before it made them.
        let known: BTreeSet<&str> = slots.iter().map(|s| s.instance_id.as_str()).collect();
        for (id, phase) in &phases {
            if *phase == Phase::Pending && !known.contains(id.as_str()) {
                self.event(id, "relaunch", "the launch was recorded but never made");
                core.relaunch(id);
            }
        }
        self.restore_bakes(&core.pending_images());
        self.collect_layers(&core.image_layer_set());
        Ok(())
    }
}

/// `ip-127-100-0-1`: EC2's form of a hostname from an address.
fn hostname(address: Ipv4Addr) -> String {
    format!("ip-{}", address.to_string().replace('.', "-"))
}

/// The parsed `status.json`, or `None` if there is none (yet) or it cannot
/// be read (the runtime renames a whole file into place, so a half-written
/// one is never seen).
fn read_status(path: &Path) -> Option<Status> {
    Status::read(path).ok()
}

/// The instance status from liveness and `status.json`
/// (`docs/process-backend.md`, "Services and status").
fn health_of(alive: bool, status: Option<&Status>) -> Health {
    if !alive {
        return Health::Impaired("the top process is gone".to_string());
    }
    let Some(status) = status else {
        return Health::Initializing;
    };
    if status.boot == BootState::Failed {
        return Health::Impaired(format!(
            "boot failed (exit {})",
            status.user_data_exit.unwrap_or(-1)
        ));
    }
    if let Some(failed) = status
        .services
        .iter()
        .find(|s| s.state == ServiceState::Failed)
    {
        return Health::Impaired(format!("service {} failed", failed.name));
    }
    match status.boot {
        BootState::Finished => Health::Ok,
        _ => Health::Initializing,
    }
}

impl Runtime for ProcessRuntime {
    fn launch(&self, info: &LaunchInfo<'_>) -> Option<String> {
        let user_data = info.record.user_data.as_ref().map(|u| u.as_bytes());
        self.make(&info.record.id, info.layers, user_data)
    }

    fn stop(&self, id: &str) {
        let Some(generation) = self.bump(id) else {
            return;
        };
        self.event(id, "stopping", "");
        let id = id.to_string();
        self.spawn_task(move |rt| rt.do_stop(id, generation));
    }

    fn start(&self, id: &str) {
        self.bump(id);
        if let Err(e) = self.spawn(id, BootKind::Again) {
            self.spawn_failed(id, e);
        }
    }

    fn reboot(&self, id: &str) {
        let Some(generation) = self.bump(id) else {
            return;
        };
        let id = id.to_string();
        self.spawn_task(move |rt| rt.do_reboot(id, generation));
    }

    fn terminate(&self, id: &str) {
        self.bump(id);
        self.event(id, "shutting-down", "");
        let id = id.to_string();
        self.spawn_task(move |rt| rt.do_terminate(id));
    }

    fn status(&self, id: &str) -> Option<(String, String)> {
        let live = self.lock();
        let health = live.get(id)?.health.clone().unwrap_or(Health::Initializing);
        Some(("ok".to_string(), health.name().to_string()))
    }

    fn console_output(&self, id: &str) -> Option<Vec<u8>> {
        fs::read(self.instance_dir(id).join("console.log")).ok()
    }

    fn create_image(&self, id: &str, parent_layers: &[String]) -> Result<Vec<String>, ApiError> {
        self.snapshot(&self.instance_dir(id), parent_layers)
            .map_err(|e| ApiError::Internal(format!("snapshotting {id}: {e}")))
    }

    fn image_deregistered(&self, gone: &ImageRecord, kept: &BTreeSet<String>) {
        self.forget_bake(&gone.image.image_id);
        let in_use = self.layers_in_use();
        for layer in &gone.layers {
            if kept.contains(layer) {
                continue;
            }
            if in_use.contains(layer) {
                tracing::info!(
                    %layer,
                    image = %gone.image.image_id,
                    "layer kept: a live instance or a bake still uses it; it goes with the last one"
                );
                continue;
            }
            if let Err(e) = self.layers.remove(layer) {
                tracing::warn!(%layer, error = %e, "layer not removed");
            }
        }
    }

    fn bake(
        &self,
        image_id: &str,
        parent_layers: &[String],
        user_data: &[u8],
    ) -> Result<(), ApiError> {
        self.start_bake(image_id, parent_layers, user_data)
    }

    fn bake_output(&self, image_id: &str) -> Option<Vec<u8>> {
        self.read_bake_output(image_id)
    }
}

impl ProcessRuntime {
    /// The layers of an image of the root in `dir` (an instance's or a
    /// bake's) made from `parent_layers`, top first.
    fn snapshot(&self, dir: &Path, parent_layers: &[String]) -> io::Result<Vec<String>> {
        match self.settings.isolation {
            // A copied root holds the whole tree: the new layer is all of
            // it, on nothing.
            Isolation::None => Ok(vec![self.layers.add_copy(&dir.join("root"))?]),
            // The upper directory is what changed; the work directory is
            // overlayfs's own and is not copied.
            Isolation::Namespaces | Isolation::Userns => {
                let mut layers = vec![self.layers.add_copy(&dir.join("upper"))?];
                layers.extend(parent_layers.iter().cloned());
                Ok(layers)
            }
        }
    }
}

/// The metadata service's view of the instances: the caller's instance,
/// by the uid its socket belongs to (root mode) or, without root, by
/// the listener it called — all instances then share the cloud's uid, so
/// a process can ask another instance's listener and get its data.
struct Source {
    runtime: Weak<ProcessRuntime>,
}

impl MetadataSource for Source {
    fn lookup(&self, caller: &Caller) -> Option<Arc<InstanceMetadata>> {
        let runtime = self.runtime.upgrade()?;
        let id = {
            let live = runtime.lock();
            match runtime.settings.isolation {
                Isolation::Namespaces => {
                    let uid = caller.uid?;
                    live.iter()
                        .find(|(_, l)| UID_BASE + l.slot == uid)
                        .map(|(id, _)| id.clone())?
                }
                Isolation::Userns | Isolation::None => live
                    .iter()
                    .find(|(_, l)| std::net::IpAddr::V4(slot_address(l.slot)) == caller.local.ip())
                    .map(|(id, _)| id.clone())?,
            }
        };
        let address = runtime.address(&id)?;
        let core = runtime.core()?;
        let record = core.record(&id)?;
        let options = record.metadata_options.clone().unwrap_or_default();
        // `HttpEndpoint=disabled`: the service answers this instance nothing.
        if options.http_endpoint.as_deref() == Some("disabled") {
            return None;
        }
        let architecture = core
            .image_architecture(&record.image_id)
            .unwrap_or_else(|| "x86_64".to_string());
        let launched = i128::try_from(record.launched.as_nanos()).unwrap_or(0);
        Some(Arc::new(InstanceMetadata {
            instance_id: record.id.clone(),
            ami_id: record.image_id.clone(),
            instance_type: record.instance_type.clone(),
            local_ipv4: address,
            hostname: hostname(address),
            availability_zone: record.zone.clone(),
            region: runtime.settings.region.clone(),
            account_id: runtime.settings.account_id.clone(),
            architecture,
            pending_time: time::OffsetDateTime::from_unix_timestamp_nanos(launched)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            tags: (*record.tags).clone(),
            tags_in_metadata: options.instance_metadata_tags.as_deref() == Some("enabled"),
            user_data: record.user_data.as_ref().map(|u| u.as_bytes().to_vec()),
            tokens_required: options.http_tokens.as_deref() == Some("required"),
            hop_limit: options
                .http_put_response_hop_limit
                .and_then(|h| u8::try_from(h).ok())
                .unwrap_or(1),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_map_to_addresses_and_never_to_the_network_address() {
        assert_eq!(slot_address(1), Ipv4Addr::new(127, 100, 0, 1));
        assert_eq!(slot_address(256), Ipv4Addr::new(127, 100, 1, 0));
        assert_eq!(slot_address(65_535), Ipv4Addr::new(127, 100, 255, 255));
    }

    fn status(text: &str) -> Status {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn health_follows_the_status_file() {
        assert_eq!(health_of(true, None), Health::Initializing);
        let booting = status(r#"{"pid": 1, "boot": "booting", "services": [], "updated": "x"}"#);
        assert_eq!(health_of(true, Some(&booting)), Health::Initializing);
        let done = status(
            r#"{"pid": 1, "boot": "finished", "updated": "x", "services":
               [{"name": "web", "state": "running", "pid": 4, "restarts": 0, "last_exit": null}]}"#,
        );
        assert_eq!(health_of(true, Some(&done)), Health::Ok);
        let failed = status(
            r#"{"pid": 1, "boot": "finished", "updated": "x", "services":
               [{"name": "web", "state": "failed", "pid": null, "restarts": 3, "last_exit": 1}]}"#,
        );
        assert_eq!(
            health_of(true, Some(&failed)),
            Health::Impaired("service web failed".to_string())
        );
        assert!(matches!(health_of(false, Some(&done)), Health::Impaired(_)));
    }
}
