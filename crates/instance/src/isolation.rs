//! The namespaced modes' setup (`isolation: namespaces` as root, `userns`
//! without root, inside a user namespace that maps root to the cloud's uid
//! and otherwise the same but for the uid drop, the chown and `metacopy`): the top process unshares mount,
//! UTS and PID namespaces and spawns the runtime again as PID 1 of the new PID
//! namespace, then forwards SIGTERM to it and waits; PID 1 dies with the top
//! process (`PR_SET_PDEATHSIG`), and every process of the instance with PID 1.
//! PID 1 mounts the root (overlay with `metacopy=on`, chowned to the instance
//! uid), the host binds, `/proc`, a small `/dev`, tmpfs `/tmp` and `/run`, sets
//! the hostname, chroots and sets resource limits. Every mount happens in the
//! instance's private mount namespace and vanishes with it. It does not drop
//! PID 1's own uid: PID 1 stays root inside the namespaces to reap, write
//! status.json and start processes as the instance's uid; everything it
//! starts runs as that uid (`runtime::Launcher`).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitCode};

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::config::{InitConfig, Isolation, Rlimits, RootSource};
use crate::{Error, Step};

/// The environment variable that marks the re-spawned runtime as PID 1.
pub const STAGE_ENV: &str = "ENDSTATE_INSTANCE_STAGE";
/// Its value.
pub const STAGE_PID1: &str = "pid1";

/// The top process: new namespaces, PID 1 spawned in them, SIGTERM forwarded;
/// returns PID 1's exit status.
pub(crate) fn top_process(user_namespace: bool) -> Result<ExitCode, Error> {
    let namespaces = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWPID;
    if user_namespace {
        let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
        unshare(CloneFlags::CLONE_NEWUSER | namespaces)
            .step("unshare user, mount, UTS and PID namespaces")?;
        // Root inside is this uid outside; nothing else is mapped.
        std::fs::write("/proc/self/setgroups", "deny").step("deny setgroups")?;
        std::fs::write("/proc/self/uid_map", format!("0 {uid} 1")).step("write uid_map")?;
        std::fs::write("/proc/self/gid_map", format!("0 {gid} 1")).step("write gid_map")?;
    } else {
        unshare(namespaces).step("unshare mount, UTS and PID namespaces")?;
    }
    // Nothing mounted from here on may reach the host's namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .step("make mount propagation private")?;
    nix::sys::prctl::set_child_subreaper(true).step("prctl PR_SET_CHILD_SUBREAPER")?;
    // Handlers before the child exists, so that its SIGCHLD cannot be missed.
    let runtime = crate::runtime::signal_runtime().step("start the signal runtime")?;
    let mut streams =
        crate::runtime::install_signal_handlers(&runtime).step("install signal handlers")?;
    let mut args = std::env::args_os();
    let arg0 = args
        .next()
        .unwrap_or_else(|| "endstate-instance-init".into());
    let child = Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .env(STAGE_ENV, STAGE_PID1)
        .spawn()
        .step("spawn the instance's PID 1 (/proc/self/exe)")?;
    let pid1 = Pid::from_raw(child.id() as i32);
    // The child is reaped below through waitpid, not through `Child`.
    drop(child);
    runtime.block_on(async move {
        loop {
            match streams.next().await {
                Some(Signal::SIGCHLD) => {
                    if let Some(code) = reap_pid1(pid1) {
                        return Ok(code);
                    }
                }
                Some(signal) => {
                    // PID 1 has a handler for it, so a signal from this namespace reaches it.
                    let _ = kill(pid1, signal);
                }
                None => {
                    return Err(Error::Refused("the signal streams closed".to_string()));
                }
            }
        }
    })
}

/// Reaps every ended child; PID 1's exit status once it ended.
fn reap_pid1(pid1: Pid) -> Option<ExitCode> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == pid1 => {
                return Some(ExitCode::from(code.clamp(0, 255) as u8));
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == pid1 => {
                return Some(ExitCode::from((128 + signal as i32).clamp(0, 255) as u8));
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// PID 1, first thing: die with the top process, and check it is PID 1.
pub(crate) fn become_pid1() -> Result<(), Error> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).step("prctl PR_SET_PDEATHSIG")?;
    let pid = nix::unistd::getpid();
    if pid.as_raw() != 1 {
        return Err(Error::Refused(format!(
            "the instance stage runs as PID {pid}, not 1: it must be spawned by the top process"
        )));
    }
    Ok(())
}

fn bind(source: &Path, target: &Path, read_only: bool) -> Result<(), Error> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .step(|| format!("bind {} on {}", source.display(), target.display()))?;
    if read_only {
        // A remount must keep the flags the source's mount has (in a user
        // namespace they are locked, and dropping one is refused).
        let kept = source_mount_flags(source);
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept,
            None::<&str>,
        )
        .step(|| format!("remount {} read-only", target.display()))?;
    }
    Ok(())
}

/// The per-mount flags of the file system `path` is on, as mount flags.
fn source_mount_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(stat) = statvfs(path) else {
        return MsFlags::empty();
    };
    let flags = stat.flags();
    let mut kept = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if flags.contains(fs) {
            kept |= ms;
        }
    }
    kept
}

/// `/x/y` inside the root at `root`; refuses `..`.
fn inside(root: &Path, path: &Path) -> Result<PathBuf, Error> {
    let mut joined = root.to_path_buf();
    for component in path.components() {
        match component {
            Component::Normal(part) => joined.push(part),
            Component::RootDir | Component::CurDir => {}
            _ => {
                return Err(Error::Refused(format!(
                    "{} leaves the instance's root",
                    path.display()
                )));
            }
        }
    }
    Ok(joined)
}

/// Mounts the instance's root and everything in it (PID 1, before the chroot).
pub(crate) fn prepare_root(config: &InitConfig) -> Result<(), Error> {
    let root = &config.mount_point;
    std::fs::create_dir_all(root).step(|| format!("create {}", root.display()))?;
    match &config.root {
        RootSource::Overlay(overlay) => {
            for dir in [&overlay.upper, &overlay.work] {
                std::fs::create_dir_all(dir).step(|| format!("create {}", dir.display()))?;
            }
            let mut lower = Vec::new();
            for layer in &overlay.lower {
                let text = layer.to_string_lossy();
                if text.contains([':', ',']) {
                    return Err(Error::Refused(format!(
                        "overlay layer {text} has ':' or ',' in its path"
                    )));
                }
                lower.push(text.to_string());
            }
            // metacopy (only metadata copied up by the chown below) needs
            // real root; a user namespace has nothing to chown.
            let metacopy = if config.isolation == Isolation::Namespaces {
                ",metacopy=on"
            } else {
                ""
            };
            let options = format!(
                "lowerdir={},upperdir={},workdir={}{metacopy}",
                lower.join(":"),
                overlay.upper.display(),
                overlay.work.display()
            );
            mount(
                Some("overlay"),
                root,
                Some("overlay"),
                MsFlags::empty(),
                Some(options.as_str()),
            )
            .step(|| format!("mount overlay on {} ({options})", root.display()))?;
        }
        RootSource::Copied(dir) => {
            if dir != root {
                bind(dir, root, false)?;
            }
        }
    }
    if config.isolation == Isolation::Namespaces {
        // With metacopy=on only the metadata of lower files is copied up.
        chown_tree(root, config.uid, config.gid)?;
    }
    for host in &config.host_binds {
        bind_host(root, host)?;
    }
    for extra in &config.extra_binds {
        let target = inside(root, &extra.target)?;
        if !extra.source.exists() {
            return Err(Error::Refused(format!(
                "extra bind source {} does not exist",
                extra.source.display()
            )));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).step(|| format!("create {}", parent.display()))?;
        }
        if extra.source.is_dir() {
            std::fs::create_dir_all(&target).step(|| format!("create {}", target.display()))?;
        } else if !target.exists() {
            std::fs::write(&target, b"").step(|| format!("create {}", target.display()))?;
        }
        bind(&extra.source, &target, true)?;
    }
    mount_kernel_file_systems(root, config)?;
    Ok(())
}

/// Binds a host directory read-only; a host symlink (`/bin -> usr/bin`) is
/// recreated as a symlink; a missing one is skipped.
fn bind_host(root: &Path, host: &Path) -> Result<(), Error> {
    let Ok(metadata) = host.symlink_metadata() else {
        return Ok(());
    };
    let target = inside(root, host)?;
    if metadata.file_type().is_symlink() {
        if target.symlink_metadata().is_err() {
            let link = std::fs::read_link(host).step(|| format!("read link {}", host.display()))?;
            std::os::unix::fs::symlink(&link, &target)
                .step(|| format!("link {} to {}", target.display(), link.display()))?;
            return Ok(());
        }
        if !target.is_dir() {
            return Ok(());
        }
    }
    std::fs::create_dir_all(&target).step(|| format!("create {}", target.display()))?;
    bind(host, &target, true)
}

fn mount_kernel_file_systems(root: &Path, config: &InitConfig) -> Result<(), Error> {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let proc = root.join("proc");
    std::fs::create_dir_all(&proc).step("create /proc")?;
    mount(
        Some("proc"),
        &proc,
        Some("proc"),
        nodev | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .step("mount /proc")?;
    let dev = root.join("dev");
    std::fs::create_dir_all(&dev).step("create /dev")?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=1m"),
    )
    .step("mount /dev")?;
    for node in ["null", "zero", "random", "urandom", "tty"] {
        let host = Path::new("/dev").join(node);
        if !host.exists() {
            continue;
        }
        let target = dev.join(node);
        std::fs::write(&target, b"").step(|| format!("create /dev/{node}"))?;
        bind(&host, &target, false)?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(link)).step(|| format!("link /dev/{link}"))?;
    }
    let shm = dev.join("shm");
    std::fs::create_dir_all(&shm).step("create /dev/shm")?;
    // In a user namespace only root is mapped: /run stays root's (which
    // is the cloud's uid outside).
    let owner = if config.isolation == Isolation::Namespaces {
        format!("uid={},gid={}", config.uid, config.gid)
    } else {
        "uid=0,gid=0".to_string()
    };
    for (dir, options) in [
        (shm, "mode=1777,size=64m".to_string()),
        (root.join("tmp"), "mode=1777".to_string()),
        (root.join("run"), format!("mode=755,{owner}")),
    ] {
        std::fs::create_dir_all(&dir).step(|| format!("create {}", dir.display()))?;
        mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            nodev,
            Some(options.as_str()),
        )
        .step(|| format!("mount tmpfs on {}", dir.display()))?;
    }
    Ok(())
}

/// Gives every file of the tree to the instance (without following symlinks
/// and without crossing into other mounts).
pub(crate) fn chown_tree(root: &Path, uid: u32, gid: u32) -> Result<(), Error> {
    let device = root
        .symlink_metadata()
        .step(|| format!("stat {}", root.display()))?
        .dev();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let metadata = path
            .symlink_metadata()
            .step(|| format!("stat {}", path.display()))?;
        if metadata.dev() != device {
            continue;
        }
        if metadata.uid() != uid || metadata.gid() != gid {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                .step(|| format!("chown {}", path.display()))?;
            if metadata.file_type().is_file() && metadata.permissions().mode() & 0o6000 != 0 {
                // chown clears set-id bits; keep the image's modes as they were.
                std::fs::set_permissions(&path, metadata.permissions())
                    .step(|| format!("chmod {}", path.display()))?;
            }
        }
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path).step(|| format!("list {}", path.display()))? {
                pending.push(entry.step(|| format!("list {}", path.display()))?.path());
            }
        }
    }
    Ok(())
}

/// Hostname, chroot, working directory (PID 1, after `prepare_root`).
pub(crate) fn enter_root(config: &InitConfig) -> Result<(), Error> {
    nix::unistd::sethostname(&config.hostname).step("set the hostname")?;
    nix::unistd::chroot(&config.mount_point)
        .step(|| format!("chroot to {}", config.mount_point.display()))?;
    std::env::set_current_dir("/").step("chdir to / in the root")?;
    Ok(())
}

/// Sets the resource limits (soft and hard) that every process started afterwards inherits.
pub(crate) fn set_rlimits(limits: &Rlimits, with_nproc: bool) -> Result<(), Error> {
    let mut wanted = vec![
        (Resource::RLIMIT_NOFILE, limits.nofile, "nofile"),
        (Resource::RLIMIT_AS, limits.as_bytes, "as_bytes"),
        (Resource::RLIMIT_CORE, limits.core, "core"),
    ];
    if with_nproc {
        wanted.push((Resource::RLIMIT_NPROC, limits.nproc, "nproc"));
    }
    for (resource, value, name) in wanted {
        if let Some(value) = value {
            setrlimit(resource, value, value).step(|| format!("set rlimit {name} to {value}"))?;
        }
    }
    Ok(())
}
