//! Volume-style bakes on the process backend (the `BakeImage` extension),
//! as Aminator does them on EC2 volumes: no instance, no metadata service,
//! no address. A bake of image `ami-…` has a directory `bakes/<image>/`
//! with a root made of the source image's layers and a fresh upper
//! directory, as an instance's; the init command runs there with
//! `boot: once` (all of the user data, then it exits with the boot's
//! status) and its output goes to `bakes/<image>/console.log`, which
//! GetBakeOutput reads. When it exits 0 the upper directory (the copied
//! root without overlay) becomes a layer and the image `available`;
//! otherwise the image is `failed`. The directory's root is removed when
//! the bake ends; its output stays until the image is deregistered.
//!
//! A bake holds its source's layers (and, between the snapshot and the
//! record's update, its new one) against layer collection. A bake still
//! running when its image is deregistered, or when the cloud restarts, is
//! killed and its image, if any, failed.
//!
//! Not here: the records' rules (names, states: the core's `bake_image`)
//! and what runs inside (`crates/instance`, `BootKind::Once`).

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;

use endstate_instance::config::BootKind;
use nix::sys::signal::Signal;

use super::{ProcessRuntime, UID_BASE};
use crate::error::ApiError;
use crate::process::procfs;

/// The uids bakes run as in root mode: below the instances' range, so that
/// a bake never shares a uid (and an `RLIMIT_NPROC` count) with one.
const BAKE_UID_BASE: u32 = UID_BASE - 10_000;

/// The file in a bake's directory that names its top process
/// (`PID START_TIME`), so that a restarted cloud can end it.
const PROCESS_FILE: &str = "process";

/// What the runtime holds of one running bake.
#[derive(Debug)]
pub(crate) struct RunningBake {
    uid: u32,
    /// The layers the bake reads and, once snapshotted, its new one.
    layers: Vec<String>,
    process: Option<(u32, u64)>,
}

impl ProcessRuntime {
    pub(crate) fn bake_dir(&self, image_id: &str) -> PathBuf {
        self.settings.dir.join("bakes").join(image_id)
    }

    fn bakes_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, RunningBake>> {
        // Updates are single inserts, removals and field writes.
        self.bakes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The layers running bakes use.
    pub(crate) fn bake_layers(&self) -> BTreeSet<String> {
        self.bakes_lock()
            .values()
            .flat_map(|b| b.layers.iter().cloned())
            .collect()
    }

    /// A uid no process on this host has and no other bake holds.
    fn bake_uid(&self) -> Result<u32, ApiError> {
        let in_use = procfs::uids_in_use();
        let held: BTreeSet<u32> = self.bakes_lock().values().map(|b| b.uid).collect();
        (1..10_000)
            .map(|n| BAKE_UID_BASE + n)
            .find(|uid| !in_use.contains(uid) && !held.contains(uid))
            .ok_or_else(|| ApiError::Internal("every bake uid is in use".to_string()))
    }

    /// Makes the bake's directory and starts its init; a thread waits for
    /// it and ends the bake.
    pub(crate) fn start_bake(
        &self,
        image_id: &str,
        parent_layers: &[String],
        user_data: &[u8],
    ) -> Result<(), ApiError> {
        let dir = self.bake_dir(image_id);
        let uid = self.bake_uid()?;
        self.bakes_lock().insert(
            image_id.to_string(),
            RunningBake {
                uid,
                layers: parent_layers.to_vec(),
                process: None,
            },
        );
        let started = self
            .prepare(&dir, uid, parent_layers, Some(user_data))
            .map_err(|e| format!("preparing {}: {e}", dir.display()))
            .and_then(|()| {
                self.init_config(image_id, &dir, uid, None, parent_layers, BootKind::Once)
                    .write(&dir)
                    .map_err(|e| format!("writing init.json: {e}"))
            })
            .and_then(|()| self.spawn_init(&dir));
        let child = match started {
            Ok(child) => child,
            Err(e) => {
                self.bakes_lock().remove(image_id);
                let _ = fs::remove_dir_all(&dir);
                return Err(ApiError::Internal(format!("bake {image_id}: {e}")));
            }
        };
        let pid = child.id();
        let process = (pid, procfs::start_time(pid).unwrap_or(0));
        if let Err(e) = fs::write(
            dir.join(PROCESS_FILE),
            format!("{} {}\n", process.0, process.1),
        ) {
            tracing::warn!(image = %image_id, error = %e, "bake's process not recorded");
        }
        if let Some(bake) = self.bakes_lock().get_mut(image_id) {
            bake.process = Some(process);
        }
        self.event(image_id, "bake-started", &format!("pid {pid}, uid {uid}"));
        let Some(me) = self.me() else {
            return Ok(());
        };
        let image_id = image_id.to_string();
        let parent_layers = parent_layers.to_vec();
        self.handle
            .spawn_blocking(move || me.bake_exited(&image_id, &parent_layers, child));
        Ok(())
    }

    /// Waits for the bake's init, snapshots on success and tells the core.
    fn bake_exited(self: Arc<Self>, image_id: &str, parent_layers: &[String], mut child: Child) {
        let status = child.wait();
        let Some(core) = self.core() else {
            // The cloud that started the bake is gone (dropped, as a
            // restart within one process does): its directory and image
            // are the next cloud's, whose restore fails the image and
            // keeps the output. Removing the directory here would lose
            // that output; snapshotting would leave a layer no record has.
            self.bakes_lock().remove(image_id);
            return;
        };
        let dir = self.bake_dir(image_id);
        let succeeded = matches!(&status, Ok(s) if s.success());
        let mut layers = None;
        if succeeded && self.bakes_lock().contains_key(image_id) {
            match self.snapshot(&dir, parent_layers) {
                Ok(made) => {
                    if let Some(bake) = self.bakes_lock().get_mut(image_id) {
                        bake.layers.clone_from(&made);
                    }
                    layers = Some(made);
                }
                Err(e) => append_output(
                    &dir,
                    &format!("endstate cloud: the bake's root could not become a layer: {e}"),
                ),
            }
        }
        let detail = match (&status, &layers) {
            (_, Some(made)) => format!("layer {}", made.first().map_or("", String::as_str)),
            (Ok(s), None) => format!("failed: {s}"),
            (Err(e), None) => format!("failed: waiting for it: {e}"),
        };
        self.clear_bake_root(image_id);
        let recorded = core.bake_ended(image_id, layers);
        self.bakes_lock().remove(image_id);
        self.event(image_id, "bake-ended", &detail);
        if !recorded {
            // Deregistered while it ran: nothing keeps its output or layer.
            let _ = fs::remove_dir_all(&dir);
            self.collect_layers(&core.image_layer_set());
        }
    }

    /// Removes what a bake's directory holds besides its output.
    fn clear_bake_root(&self, image_id: &str) {
        let dir = self.bake_dir(image_id);
        for sub in [
            "upper",
            "work",
            "root",
            "user-data",
            "init.json",
            "status.json",
            "supervisor.sock",
            PROCESS_FILE,
        ] {
            let path = dir.join(sub);
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            if let Err(e) = removed {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(image = %image_id, path = %path.display(), error = %e, "bake file not removed");
                }
            }
        }
    }

    /// The bake's output so far.
    pub(crate) fn read_bake_output(&self, image_id: &str) -> Option<Vec<u8>> {
        fs::read(self.bake_dir(image_id).join("console.log")).ok()
    }

    /// A deregistered image's bake: killed if it runs (its waiter then
    /// finds the image gone and removes the directory), its output
    /// removed if it ended.
    pub(crate) fn forget_bake(&self, image_id: &str) {
        let process = self.bakes_lock().get(image_id).map(|b| b.process);
        match process {
            // Off the caller's thread: the core's lock is held.
            Some(process) => {
                self.handle.spawn_blocking(move || kill_tree(process));
            }
            None => {
                let dir = self.bake_dir(image_id);
                if let Err(e) = fs::remove_dir_all(&dir) {
                    if e.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(image = %image_id, error = %e, "bake directory not removed");
                    }
                }
            }
        }
    }

    /// After a restart: the bakes still pending ran under the cloud that
    /// died. Their processes are killed, their images failed, their roots
    /// removed; the output says why.
    pub(crate) fn restore_bakes(&self, pending: &[String]) {
        for image_id in pending {
            let dir = self.bake_dir(image_id);
            let process = fs::read_to_string(dir.join(PROCESS_FILE))
                .ok()
                .and_then(|text| {
                    let mut fields = text.split_whitespace().map(str::parse::<u64>);
                    match (fields.next(), fields.next()) {
                        (Some(Ok(pid)), Some(Ok(start))) => Some((u32::try_from(pid).ok()?, start)),
                        _ => None,
                    }
                });
            kill_tree(process);
            append_output(
                &dir,
                "endstate cloud: the cloud restarted during the bake; the bake was ended",
            );
            self.clear_bake_root(image_id);
            if let Some(core) = self.core() {
                core.bake_ended(image_id, None);
            }
            self.event(image_id, "bake-ended", "failed: the cloud restarted");
        }
    }
}

/// SIGKILL to a bake's whole tree until nothing of it is left (its top
/// process, and in root mode the PID namespace under it).
fn kill_tree(process: Option<(u32, u64)>) {
    for _ in 0..200 {
        let tree = procfs::instance_tree(process);
        if tree.is_empty() {
            return;
        }
        procfs::signal_all(&tree, Signal::SIGKILL);
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

/// Adds a line of the cloud's own to a bake's output.
fn append_output(dir: &std::path::Path, line: &str) {
    let appended = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("console.log"))
        .and_then(|mut file| writeln!(file, "{line}"));
    if let Err(e) = appended {
        tracing::warn!(dir = %dir.display(), error = %e, "bake output not written");
    }
}
