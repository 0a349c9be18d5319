//! The state lock's values: who holds it ([`HolderInfo`]), the proof a holder
//! carries ([`Lease`]), and what `endstate status` shows ([`LockInfo`]).
//!
//! The model: there is one lock per state file. Acquiring it bumps a
//! *fencing generation*; the [`Lease`] returned carries that generation and a
//! random token. Every write to the store takes the lease and checks, in the
//! same SQLite transaction as the write, that the lock still holds that
//! generation and token and that the lease has not expired by the store's
//! clock. A holder that was paused past its expiry and taken over can
//! therefore write nothing: its generation is stale.
//!
//! This module holds no SQL (see [`crate::sqlite`]) and no `/proc` reading
//! (see [`crate::liveness`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Who holds (or asks for) the lock: enough to tell, on the same host,
/// whether that process is still alive even if its PID was reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderInfo {
    /// A human name for the holder, e.g. `endstate apply` or `endstate serve`.
    pub name: String,
    /// Process id on `host`.
    pub pid: u32,
    /// Hostname of the machine the holder runs on.
    pub host: String,
    /// The kernel's boot id on that host (`/proc/sys/kernel/random/boot_id`):
    /// a reboot changes it, which makes every earlier holder dead. Empty when
    /// unknown.
    pub boot_id: String,
    /// The process's start time: field 22 of `/proc/<pid>/stat`, in clock
    /// ticks since boot. Together with `pid` and `boot_id` it names one
    /// process, so a PID reused by another process does not look alive.
    /// 0 when unknown.
    pub started: u64,
}

impl HolderInfo {
    /// Describes the current process under `name`. On a system without
    /// `/proc`, the host, boot id and start time it cannot read are left
    /// empty (0); such a holder is never judged dead by liveness, only by
    /// its lease expiring.
    pub fn current(name: impl Into<String>) -> Self {
        let pid = std::process::id();
        let host = crate::liveness::local_host();
        HolderInfo {
            name: name.into(),
            pid,
            host: host.hostname,
            boot_id: host.boot_id,
            started: crate::liveness::process_start(pid).unwrap_or(0),
        }
    }
}

/// Proof of holding the lock, returned by `acquire_lock` and `heartbeat`.
/// Only the store makes one; every write method takes one.
///
/// A lease is valid for writing while the lock's generation and token are
/// still its own and `expires_at` (as stored, extended by heartbeats) is in
/// the future by the store's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub(crate) generation: u64,
    pub(crate) token: String,
    pub(crate) expires_at: Duration,
    pub(crate) duration: Duration,
}

impl Lease {
    /// The fencing generation: strictly greater than that of every earlier
    /// holder of this state file's lock.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When the lease expires, since the epoch, by the store's clock, unless
    /// renewed by `heartbeat` first.
    pub fn expires_at(&self) -> Duration {
        self.expires_at
    }

    /// The length each `heartbeat` extends it by.
    pub fn duration(&self) -> Duration {
        self.duration
    }
}

/// The lock as `endstate status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Who holds it.
    pub holder: HolderInfo,
    /// Its fencing generation.
    pub generation: u64,
    /// When it was acquired, since the epoch.
    pub acquired_at: Duration,
    /// When its lease expires (or expired), since the epoch.
    pub expires_at: Duration,
    /// Time left on the lease when read; `None` when it has expired (the
    /// next `acquire_lock` will take it).
    pub expires_in: Option<Duration>,
}
