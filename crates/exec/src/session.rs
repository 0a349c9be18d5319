//! A [`Session`]: one run of `apply`, `destroy` or `serve` holding the state
//! lock. It takes the lock, keeps its lease alive with a heartbeat, records
//! the run, and is the executor's (and the controller's) only way to write
//! the intent journal, the event log and the groups' controller state —
//! every write carries the lease, so a run that lost its lock cannot write.
//!
//! Store calls are synchronous SQLite work: they run on the blocking pool,
//! never on the async workers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use endstate_clock::SharedClock;
use endstate_state::{
    HolderInfo, Intent, IntentId, IntentKind, Lease, NewEvent, NewIntent, RunId, RunKind,
    RunOutcome, StateError, Store, StoredEvent,
};

use crate::ExecError;

/// The lock held for one run, with its heartbeat.
pub struct Session {
    store: Arc<dyn Store>,
    lease: Arc<Mutex<Lease>>,
    run: RunId,
    lost: Arc<AtomicBool>,
    heartbeat: tokio::task::JoinHandle<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The lease is replaced whole; a panic elsewhere cannot leave it torn.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn blocking<T, F>(store: &Arc<dyn Store>, f: F) -> Result<T, StateError>
where
    F: FnOnce(&dyn Store) -> Result<T, StateError> + Send + 'static,
    T: Send + 'static,
{
    let store = Arc::clone(store);
    match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
        Ok(result) => result,
        Err(join) => Err(StateError::Corrupt(format!("state task failed: {join}"))),
    }
}

impl Session {
    /// Takes the lock as `holder_name` and records the start of a run.
    /// Fails at once with [`StateError::Locked`] when a live holder has it.
    pub async fn begin(
        store: Arc<dyn Store>,
        clock: SharedClock,
        holder_name: &str,
        lease_for: Duration,
        kind: RunKind,
        spec_hash: &str,
        environment: &str,
    ) -> Result<Self, ExecError> {
        let holder = HolderInfo::current(holder_name);
        let lease = blocking(&store, move |s| s.acquire_lock(&holder, lease_for)).await?;
        let (spec_hash, environment) = (spec_hash.to_string(), environment.to_string());
        let for_run = lease.clone();
        let run = blocking(&store, move |s| {
            s.begin_run(&for_run, kind, &spec_hash, &environment)
        })
        .await?;
        let lease = Arc::new(Mutex::new(lease));
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(heartbeat(
            Arc::clone(&store),
            Arc::clone(&lease),
            Arc::clone(&lost),
            clock,
            lease_for / 3,
        ));
        crate::crash::point("run-begun");
        Ok(Self {
            store,
            lease,
            run,
            lost,
            heartbeat,
        })
    }

    /// The run's id.
    pub fn run_id(&self) -> RunId {
        self.run
    }

    /// True once a heartbeat found the lease taken over: stop acting.
    pub fn lost_lock(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    async fn write<T, F>(&self, f: F) -> Result<T, ExecError>
    where
        F: FnOnce(&dyn Store, &Lease) -> Result<T, StateError> + Send + 'static,
        T: Send + 'static,
    {
        let lease = lock(&self.lease).clone();
        Ok(blocking(&self.store, move |s| f(s, &lease)).await?)
    }

    /// Journals an intent before its call.
    pub async fn record_intent(
        &self,
        kind: IntentKind,
        group: &str,
        zone: Option<&str>,
        detail: serde_json::Value,
    ) -> Result<Intent, ExecError> {
        let intent = NewIntent {
            run_id: self.run,
            kind,
            group: group.to_string(),
            zone: zone.map(str::to_string),
            detail,
        };
        self.write(move |s, lease| s.record_intent(lease, &intent))
            .await
    }

    pub async fn mark_sent(&self, id: &IntentId) -> Result<(), ExecError> {
        let id = id.clone();
        self.write(move |s, lease| s.mark_intent_sent(lease, &id))
            .await
    }

    pub async fn complete(
        &self,
        id: &IntentId,
        result: serde_json::Value,
    ) -> Result<(), ExecError> {
        let id = id.clone();
        self.write(move |s, lease| s.complete_intent(lease, &id, &result))
            .await
    }

    pub async fn abandon(&self, id: &IntentId, reason: &str) -> Result<(), ExecError> {
        let (id, reason) = (id.clone(), reason.to_string());
        self.write(move |s, lease| s.abandon_intent(lease, &id, &reason))
            .await
    }

    /// Intents earlier runs left open.
    pub async fn open_intents(&self) -> Result<Vec<Intent>, ExecError> {
        Ok(blocking(&self.store, |s| s.open_intents()).await?)
    }

    /// Appends events to the log; returns their sequence numbers.
    pub async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<i64>, ExecError> {
        self.write(move |s, lease| s.append_events(lease, &events))
            .await
    }

    /// Up to `limit` events after `after_seq`, oldest first; only `group`'s
    /// when given.
    pub async fn events_after(
        &self,
        after_seq: i64,
        limit: usize,
        group: Option<&str>,
    ) -> Result<Vec<StoredEvent>, ExecError> {
        let group = group.map(str::to_string);
        Ok(blocking(&self.store, move |s| {
            s.events_after(after_seq, limit, group.as_deref())
        })
        .await?)
    }

    /// Stores `group`'s controller state, replacing what was there.
    pub async fn put_group_state(
        &self,
        group: &str,
        state: serde_json::Value,
    ) -> Result<(), ExecError> {
        let group = group.to_string();
        self.write(move |s, lease| s.put_group_state(lease, &group, &state))
            .await
    }

    /// Forgets `group`'s controller state.
    pub async fn delete_group_state(&self, group: &str) -> Result<(), ExecError> {
        let group = group.to_string();
        self.write(move |s, lease| s.delete_group_state(lease, &group))
            .await
    }

    /// Every group's controller state, by group name.
    pub async fn group_states(&self) -> Result<BTreeMap<String, serde_json::Value>, ExecError> {
        Ok(blocking(&self.store, |s| s.group_states()).await?)
    }

    /// The store, for reads and lease-free writes (API tokens) that need no
    /// session method. Its calls are blocking: use `spawn_blocking`.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// Records how the run ended and releases the lock.
    pub async fn finish(
        self,
        outcome: RunOutcome,
        summary: serde_json::Value,
    ) -> Result<(), ExecError> {
        self.heartbeat.abort();
        let run = self.run;
        let lease = lock(&self.lease).clone();
        let result = blocking(&self.store, move |s| {
            s.finish_run(&lease, run, &outcome, &summary)?;
            s.release(&lease)
        })
        .await;
        crate::crash::point("run-finished");
        Ok(result?)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

async fn heartbeat(
    store: Arc<dyn Store>,
    lease: Arc<Mutex<Lease>>,
    lost: Arc<AtomicBool>,
    clock: SharedClock,
    every: Duration,
) {
    loop {
        clock.sleep(every).await;
        let current = lock(&lease).clone();
        match blocking(&store, move |s| s.heartbeat(&current)).await {
            Ok(renewed) => *lock(&lease) = renewed,
            Err(StateError::Fenced { .. }) => {
                lost.store(true, Ordering::SeqCst);
                tracing::error!("lost the state lock: another run took it over; stopping");
                return;
            }
            Err(error) => tracing::warn!(%error, "state lock heartbeat failed; will retry"),
        }
    }
}
