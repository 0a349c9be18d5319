//! The data plane of the built-in cloud's HTTP load balancer: a
//! listener on a loopback address that forwards HTTP/1.1 requests to
//! health-checked targets of weighted target groups, so blue-green and
//! rolling deployments can move traffic without a failed request.
//!
//! Pieces: [`group`] (targets, health from `endstate_health::Checker`,
//! draining, the choice of a target), `proxy` (one request: weights, retry,
//! headers), [`stats`] (counters and the error window). This crate has no
//! API and knows nothing of EC2, ELBv2 or instances: the built-in cloud
//! (`endstate-cloud`'s `elbv2`) runs one per listener behind its ELBv2 API.
//!
//! **Routing.** A group is drawn by weight for each request; in it, a target
//! round robin among the healthy, else the `initial`, else all (fail-open);
//! a target whose connection just failed is passed over for one probe
//! interval while others remain. A GET or HEAD whose connection fails before
//! any response byte is retried once on another target of the same group;
//! nothing is retried once response bytes have come.
//!
//! **Atomic forward changes.** The forward action lives in a
//! `RwLock<Arc<Vec<(TargetGroupId, u32)>>>`; [`LoadBalancer::set_forward`]
//! replaces the `Arc` under the write lock before returning, and each request
//! reads it exactly once, when it starts (before it chooses a group). So
//! every request that starts after `set_forward` returns is routed by the
//! new weights; requests already started finish on the target they chose.

// The black-box tests of `tests/` live here as a module of the unit
// tests (one test binary per crate instead of two: each link is the
// whole dependency graph); they name the crate by its name, as users do.
#[cfg(test)]
extern crate self as endstate_lb;
#[cfg(test)]
mod lb_black_box;

pub mod group;
mod proxy;
pub mod stats;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use endstate_clock::SharedClock;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub use endstate_health::HealthCheck;
pub use group::{Target, TargetGroupId, TargetHealth, TargetState, DEFAULT_DEREGISTRATION_DELAY};
pub use stats::{CounterSnapshot, GroupStats, Stats};

use group::Group;

/// How often draining targets are checked for being done.
const REAP_EVERY: Duration = Duration::from_millis(50);
/// How long `stop` lets open connections finish their request.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a connection to a target may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong, naming the address, group or setting.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error(
        "listen address {0}: the load balancer binds loopback addresses (127.0.0.0/8, ::1) only"
    )]
    NotLoopback(SocketAddr),
    #[error("binding {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("building the upstream HTTP client: {0}")]
    Client(String),
    #[error("target group {0}: no such group")]
    UnknownGroup(TargetGroupId),
    #[error("target group {0}: the forward action names it")]
    InUse(TargetGroupId),
    #[error("target group {0:?}: a group of that name exists")]
    DuplicateName(String),
    #[error("target group {group:?}: health check: {errors}")]
    HealthCheck { group: String, errors: String },
    #[error("starting the health checker: {0}")]
    Prober(String),
}

pub(crate) struct Shared {
    pub(crate) forward: RwLock<Arc<Vec<(TargetGroupId, u32)>>>,
    pub(crate) groups: RwLock<BTreeMap<TargetGroupId, Arc<Group>>>,
    pub(crate) http: reqwest::Client,
    pub(crate) clock: SharedClock,
}

/// A running load balancer. Call [`LoadBalancer::stop`] to end it gracefully;
/// dropping it stops accepting too (the stop channel closes), without waiting.
pub struct LoadBalancer {
    address: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    reaper: JoinHandle<()>,
}

impl std::fmt::Debug for LoadBalancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadBalancer")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl LoadBalancer {
    /// Binds `listen` (loopback only; port 0 picks one) and serves at once,
    /// with no forward action: every request is a 503 until
    /// [`LoadBalancer::set_forward`]. Must be called inside a tokio runtime.
    pub async fn start(listen: SocketAddr, clock: SharedClock) -> Result<Self, LbError> {
        if !listen.ip().is_loopback() {
            return Err(LbError::NotLoopback(listen));
        }
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| LbError::Bind {
                address: listen,
                source,
            })?;
        let address = listener.local_addr().map_err(|source| LbError::Bind {
            address: listen,
            source,
        })?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| LbError::Client(e.to_string()))?;
        let shared = Arc::new(Shared {
            forward: RwLock::new(Arc::new(Vec::new())),
            groups: RwLock::new(BTreeMap::new()),
            http,
            clock,
        });
        let (stop, stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve(listener, Arc::clone(&shared), stop_rx.clone()));
        let reaper = tokio::spawn(reap(Arc::clone(&shared), stop_rx));
        Ok(Self {
            address,
            shared,
            stop,
            server,
            reaper,
        })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Creates an empty target group whose targets are probed by `check`
    /// (port 0 in the check's probe means each target's traffic port).
    /// Must be called inside a tokio runtime (the group's checkers run there).
    pub fn create_target_group(
        &self,
        name: &str,
        check: HealthCheck,
    ) -> Result<TargetGroupId, LbError> {
        let mut groups = write(&self.shared.groups);
        if groups.values().any(|g| g.name == name) {
            return Err(LbError::DuplicateName(name.to_string()));
        }
        let id = TargetGroupId(groups.keys().last().map_or(1, |k| k.0 + 1));
        let group = Group::new(id, name.to_string(), check, Arc::clone(&self.shared.clock))?;
        groups.insert(id, Arc::new(group));
        Ok(id)
    }

    /// Removes a group that the forward action does not name, stopping its
    /// health checks; requests already routed to it finish.
    pub async fn remove_target_group(&self, tg: TargetGroupId) -> Result<(), LbError> {
        let group = {
            let mut groups = write(&self.shared.groups);
            if read(&self.shared.forward).iter().any(|&(id, _)| id == tg) {
                return Err(LbError::InUse(tg));
            }
            groups.remove(&tg).ok_or(LbError::UnknownGroup(tg))?
        };
        group.stop().await;
        Ok(())
    }

    /// Sets how long a deregistered target may keep requests in flight
    /// (default [`DEFAULT_DEREGISTRATION_DELAY`], 300 s as ELB).
    pub fn set_deregistration_delay(
        &self,
        tg: TargetGroupId,
        delay: Duration,
    ) -> Result<(), LbError> {
        self.group(tg)?.set_deregistration_delay(delay);
        Ok(())
    }

    /// Adds targets (a registered id is updated, and a draining one comes back).
    pub fn register_targets(&self, tg: TargetGroupId, targets: Vec<Target>) -> Result<(), LbError> {
        self.group(tg)?.register(targets)
    }

    /// Stops sending new requests to these targets at once; each is dropped
    /// when its requests in flight are done or the delay has passed.
    pub fn deregister_targets(&self, tg: TargetGroupId, ids: &[String]) -> Result<(), LbError> {
        self.group(tg)?.deregister(ids)
    }

    /// Each target's state: `draining` while deregistering, `unused` when the
    /// group has no weight in the forward action, else its health.
    pub fn describe_target_health(&self, tg: TargetGroupId) -> Result<Vec<TargetHealth>, LbError> {
        let group = self.group(tg)?;
        let in_use = read(&self.shared.forward)
            .iter()
            .any(|&(id, weight)| id == tg && weight > 0);
        Ok(group.describe(in_use))
    }

    /// Each target's state as probed, whatever the group's weight:
    /// `draining` while deregistering, else its health. For a group that
    /// is attached with weight 0 (ELBv2 health-checks every group a
    /// listener names, so a new generation can turn healthy before it
    /// gets traffic).
    pub fn probed_target_health(&self, tg: TargetGroupId) -> Result<Vec<TargetHealth>, LbError> {
        Ok(self.group(tg)?.describe(true))
    }

    /// Replaces the listener's forward action with these weights; every
    /// request that starts after this returns is routed by them (see the
    /// crate doc). Weights are relative; all zero (or none) answers 503.
    pub fn set_forward(&self, forward: Vec<(TargetGroupId, u32)>) -> Result<(), LbError> {
        {
            let groups = read(&self.shared.groups);
            if let Some(&(missing, _)) = forward.iter().find(|(id, _)| !groups.contains_key(id)) {
                return Err(LbError::UnknownGroup(missing));
            }
        }
        *write(&self.shared.forward) = Arc::new(forward);
        Ok(())
    }

    /// Every group's and target's counters.
    pub fn stats(&self) -> Stats {
        Stats {
            target_groups: read(&self.shared.groups)
                .values()
                .map(|g| (g.name.clone(), g.stats()))
                .collect(),
        }
    }

    /// The share of 5xx responses (the balancer's own 502/503 included) the
    /// group answered from `since` (on the balancer's clock, whole seconds;
    /// the last hour is kept) on; `None` when it answered nothing.
    pub fn error_rate(&self, tg: TargetGroupId, since: Duration) -> Result<Option<f64>, LbError> {
        Ok(self.group(tg)?.window.error_rate(since))
    }

    /// (responses, 5xx responses) the group answered from `since` on (as
    /// for [`LoadBalancer::error_rate`]).
    pub fn response_counts(
        &self,
        tg: TargetGroupId,
        since: Duration,
    ) -> Result<(u64, u64), LbError> {
        Ok(self.group(tg)?.window.counts(since))
    }

    /// Stops accepting, lets each open connection finish the request it is
    /// serving (up to 10 s), closes them, and stops the health checkers.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        // The tasks only end by returning; a JoinError would be a panic the
        // runtime has already reported.
        let _ = self.server.await;
        let _ = self.reaper.await;
        let groups: Vec<Arc<Group>> = read(&self.shared.groups).values().cloned().collect();
        for group in groups {
            group.stop().await;
        }
    }

    fn group(&self, tg: TargetGroupId) -> Result<Arc<Group>, LbError> {
        read(&self.shared.groups)
            .get(&tg)
            .cloned()
            .ok_or(LbError::UnknownGroup(tg))
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                // An accept error (e.g. out of descriptors) is transient.
                let Ok((stream, _)) = accepted else { continue };
                let shared = Arc::clone(&shared);
                let mut stop = stop.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| proxy::handle(Arc::clone(&shared), request));
                    let connection = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        _ = stop.changed() => {
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(STOP_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.shutdown().await;
    }
}

async fn reap(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {
                let groups: Vec<Arc<Group>> = read(&shared.groups).values().cloned().collect();
                for group in groups {
                    group.reap();
                }
            }
        }
    }
}

pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
