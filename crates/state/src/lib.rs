//! endstate's state: the [`Store`] trait and its SQLite implementation,
//! [`SqliteStore`].
//!
//! What it keeps: the history of runs, the intent journal (what the executor
//! is about to do, written before it does it, so a crash leaves a trace to
//! resolve), one lock per state file with a lease and a fencing generation,
//! and for `endstate serve`: a bounded log of events (each action and its
//! reason), the API's bearer tokens (hashed), and each group's controller
//! state (opaque JSON).
//!
//! **The lease model.** A writer first calls [`Store::acquire_lock`], which
//! returns a [`Lease`] or [`StateError::Locked`]. Every write method takes
//! that `&Lease`, and checks in the same SQLite transaction as the write that
//! the lock still holds the lease's generation and token and that the lease
//! has not expired by the store's clock; otherwise it returns
//! [`StateError::Fenced`] and writes nothing. The holder calls
//! [`Store::heartbeat`] well within the lease (say every third of it) and
//! uses the lease it returns, and [`Store::release`]s it at the end. A lock
//! is taken over at once when its lease expired, or when its holder ran on
//! this host and is provably dead (process gone, PID reused, host rebooted).
//! Reads need no lease, and neither do the API tokens: `endstate token
//! create` runs beside a controller that holds the lock.
//!
//! ```no_run
//! # use std::time::Duration;
//! # use endstate_state::*;
//! # fn main() -> Result<(), StateError> {
//! let store = SqliteStore::open("state/endstate.db", endstate_clock::SystemClock::shared())?;
//! let lease = store.acquire_lock(&HolderInfo::current("endstate apply"), Duration::from_secs(60))?;
//! let run = store.begin_run(&lease, RunKind::Apply, "spec-hash", "prod")?;
//! let intent = store.record_intent(&lease, &NewIntent {
//!     run_id: run,
//!     kind: IntentKind::Launch,
//!     group: "web".into(),
//!     zone: Some("eu-west-1a".into()),
//!     detail: serde_json::json!({"count": 2}),
//! })?;
//! store.mark_intent_sent(&lease, &intent.id)?;
//! // ... RunInstances with a ClientToken derived from intent.id ...
//! store.complete_intent(&lease, &intent.id, &serde_json::json!({"instances": ["i-1", "i-2"]}))?;
//! store.finish_run(&lease, run, &RunOutcome::Succeeded, &serde_json::json!({}))?;
//! store.release(&lease)?;
//! # Ok(()) }
//! ```
//!
//! What it is not: a cache of observed cloud state (that is always read from
//! the provider, by tag), and not async (callers wrap calls in
//! `spawn_blocking`). PostgreSQL comes later behind the same trait.

mod error;
mod event;
mod intent;
mod liveness;
mod lock;
mod migrations;
mod run;
mod sqlite;
mod token;

use std::collections::BTreeMap;
use std::time::Duration;

pub use error::StateError;
pub use event::{NewEvent, StoredEvent, DEFAULT_EVENT_LIMIT};
pub use intent::{Intent, IntentId, IntentKind, IntentStatus, NewIntent};
pub use lock::{HolderInfo, Lease, LockInfo};
pub use run::{Run, RunId, RunKind, RunOutcome};
pub use sqlite::SqliteStore;
pub use token::{TokenInfo, TOKEN_PREFIX};

/// Where endstate keeps what it must remember between runs. Synchronous:
/// async callers wrap calls in `spawn_blocking`. Implementations are `Send`
/// and `Sync`, so one store can be shared as `Arc<dyn Store>`.
///
/// Every method that writes takes the caller's [`Lease`] and fails with
/// [`StateError::Fenced`], writing nothing, when that lease no longer holds.
pub trait Store: Send + Sync {
    // --- the lock ---

    /// Takes the lock for `holder` for `lease`, if it is free, its lease has
    /// expired, or its holder ran on this host and is provably dead. The new
    /// lease's generation is one more than the previous holder's.
    ///
    /// Errors: [`StateError::Locked`] when a live holder's lease runs.
    fn acquire_lock(&self, holder: &HolderInfo, lease: Duration) -> Result<Lease, StateError>;

    /// Extends the lease by its duration from now, if it still holds (same
    /// generation, not expired). Use the returned lease from then on.
    ///
    /// Errors: [`StateError::Fenced`] when the lease was lost; the caller
    /// must stop writing.
    fn heartbeat(&self, lease: &Lease) -> Result<Lease, StateError>;

    /// Frees the lock if `lease` is still its current generation (expired or
    /// not). Releasing twice is harmless.
    ///
    /// Errors: [`StateError::Fenced`] when another holder has taken the lock
    /// since; their lock is left alone.
    fn release(&self, lease: &Lease) -> Result<(), StateError>;

    /// The current holder, for `endstate status`; `None` when the lock is
    /// free (never taken, or released). An expired lease is still shown, with
    /// `expires_in: None`.
    fn lock_info(&self) -> Result<Option<LockInfo>, StateError>;

    // --- runs ---

    /// Records the start of a run.
    fn begin_run(
        &self,
        lease: &Lease,
        kind: RunKind,
        spec_hash: &str,
        environment: &str,
    ) -> Result<RunId, StateError>;

    /// Records how a run ended and its summary.
    ///
    /// Errors: [`StateError::UnknownRun`], [`StateError::RunAlreadyFinished`].
    fn finish_run(
        &self,
        lease: &Lease,
        id: RunId,
        outcome: &RunOutcome,
        summary: &serde_json::Value,
    ) -> Result<(), StateError>;

    /// The latest `limit` runs, newest first.
    fn runs(&self, limit: usize) -> Result<Vec<Run>, StateError>;

    // --- the intent journal ---

    /// Journals an intent before its call is made and returns it with a
    /// fresh id (a UUID v4, simple hex) from which the ClientToken derives.
    /// `intent.detail` is stored as given: it must hold no secret.
    ///
    /// Errors: [`StateError::UnknownRun`].
    fn record_intent(&self, lease: &Lease, intent: &NewIntent) -> Result<Intent, StateError>;

    /// Marks an open intent as sent (its call made or in flight). Marking a
    /// sent intent again is allowed (a retry) and keeps the first time.
    ///
    /// Errors: [`StateError::UnknownIntent`], [`StateError::InvalidTransition`].
    fn mark_intent_sent(&self, lease: &Lease, id: &IntentId) -> Result<(), StateError>;

    /// Marks an open intent completed with its outcome (e.g. instance ids).
    ///
    /// Errors: [`StateError::UnknownIntent`], [`StateError::InvalidTransition`].
    fn complete_intent(
        &self,
        lease: &Lease,
        id: &IntentId,
        result: &serde_json::Value,
    ) -> Result<(), StateError>;

    /// Gives up an open intent, saying why.
    ///
    /// Errors: [`StateError::UnknownIntent`], [`StateError::InvalidTransition`].
    fn abandon_intent(&self, lease: &Lease, id: &IntentId, reason: &str) -> Result<(), StateError>;

    /// Every intent still recorded or sent, in recording order: what a run
    /// must resolve (by ClientToken and tag) before acting.
    fn open_intents(&self) -> Result<Vec<Intent>, StateError>;

    // --- events ---

    /// Appends `events` in one transaction, in order, and returns their
    /// sequence numbers. Past the store's event limit the oldest events are
    /// deleted in the same transaction.
    fn append_events(&self, lease: &Lease, events: &[NewEvent]) -> Result<Vec<i64>, StateError>;

    /// Up to `limit` events with `seq > after_seq`, oldest first; only
    /// `group`'s when given. Pass 0 to read from the oldest kept.
    fn events_after(
        &self,
        after_seq: i64,
        limit: usize,
        group: Option<&str>,
    ) -> Result<Vec<StoredEvent>, StateError>;

    // --- API tokens (no lease: see the crate docs) ---

    /// Makes a token named `name` and returns it with its plaintext, which
    /// is shown this once: only its hash is stored.
    ///
    /// Errors: [`StateError::EmptyTokenName`], [`StateError::Random`].
    fn create_token(&self, name: &str) -> Result<(TokenInfo, String), StateError>;

    /// The unrevoked token whose plaintext this is, or `None`. Records the
    /// use, to the minute.
    fn verify_token(&self, plaintext: &str) -> Result<Option<TokenInfo>, StateError>;

    /// Every token, revoked ones too, oldest first.
    fn list_tokens(&self) -> Result<Vec<TokenInfo>, StateError>;

    /// Revokes token `id`; true when it exists (revoking twice is
    /// harmless), false when there is no such token.
    fn revoke_token(&self, id: i64) -> Result<bool, StateError>;

    /// How many unrevoked tokens exist.
    fn token_count(&self) -> Result<u64, StateError>;

    // --- per-group controller state ---

    /// Stores `state` as `group`'s controller state, replacing what was
    /// there. Opaque to the store; it must hold no secret.
    fn put_group_state(
        &self,
        lease: &Lease,
        group: &str,
        state: &serde_json::Value,
    ) -> Result<(), StateError>;

    /// Every group's controller state, by group name.
    fn group_states(&self) -> Result<BTreeMap<String, serde_json::Value>, StateError>;

    /// Forgets `group`'s controller state (a group gone from the spec).
    /// Deleting a state that does not exist is harmless.
    fn delete_group_state(&self, lease: &Lease, group: &str) -> Result<(), StateError>;
}
