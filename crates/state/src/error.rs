//! The one error type of the state crate, [`StateError`].
//!
//! Every variant says what went wrong in terms a caller can act on: the lock
//! is held (by whom, until when), the caller's lease was fenced off, the file
//! was written by a newer endstate. This module holds no logic.

use std::path::PathBuf;
use std::time::Duration;

use crate::intent::{IntentId, IntentStatus};
use crate::run::RunId;

/// Everything that can go wrong reading or writing state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The lock is held by a live process (or one on another host, whose
    /// liveness cannot be checked) and its lease has not expired.
    #[error(
        "state is locked by {holder} (pid {pid} on {host}); its lease expires in {}s",
        expires_in.as_secs()
    )]
    Locked {
        /// The holder's name, as it gave it (e.g. `endstate apply`).
        holder: String,
        /// The holder's process id on its host.
        pid: u32,
        /// The holder's hostname.
        host: String,
        /// Time left on the holder's lease, by this store's clock.
        expires_in: Duration,
    },

    /// The caller's lease no longer holds: it expired, was released, or the
    /// lock was taken over (a newer generation exists). Nothing was written.
    /// The caller must stop writing and acquire the lock again.
    #[error(
        "lease of generation {generation} no longer holds the state lock; nothing was written"
    )]
    Fenced {
        /// The generation of the lease that was refused.
        generation: u64,
    },

    /// The state file's schema is newer than this build knows: it was written
    /// by a newer endstate. Nothing was changed.
    #[error(
        "state file {path} has schema version {found}, but this endstate supports up to {supported}; \
         upgrade endstate to use it"
    )]
    NewerSchema {
        /// The file, or `:memory:`.
        path: String,
        /// The schema version found in the file.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },

    /// No run with this id exists.
    #[error("no run {0}")]
    UnknownRun(RunId),

    /// The run was already finished; a run is finished exactly once.
    #[error("run {0} is already finished")]
    RunAlreadyFinished(RunId),

    /// No intent with this id exists.
    #[error("no intent {0}")]
    UnknownIntent(IntentId),

    /// The intent cannot move from its current status to the one asked for
    /// (e.g. completing an abandoned intent).
    #[error("intent {id} is {from} and cannot become {to}")]
    InvalidTransition {
        /// The intent.
        id: IntentId,
        /// Its current status.
        from: IntentStatus,
        /// The status that was asked for.
        to: IntentStatus,
    },

    /// A row holds a value this build cannot read (an unknown enum string or
    /// malformed JSON): the file was edited by hand or is damaged.
    #[error("state file holds a value that cannot be read: {0}")]
    Corrupt(String),

    /// SQLite would not put the state file in WAL mode (some network
    /// filesystems cannot): without it, readers and the writer would block
    /// each other, so the file is not used.
    #[error("cannot put state file {path} in WAL mode (SQLite kept {mode}); is it on a network filesystem?")]
    NoWal {
        /// The file.
        path: PathBuf,
        /// The journal mode SQLite reported instead.
        mode: String,
    },

    /// The directory for the state file could not be created.
    #[error("cannot create directory {path} for the state file")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// An API token was asked for with an empty (or all-blank) name.
    #[error("an API token needs a name saying who or what uses it; the name given was empty")]
    EmptyTokenName,

    /// The operating system's random source failed, so no token was made.
    #[error("cannot read random bytes from the operating system to make a token")]
    Random(#[source] getrandom::Error),

    /// SQLite failed (I/O error, disk full, busy past the timeout, ...).
    #[error("state database error")]
    Sqlite(#[from] rusqlite::Error),
}
