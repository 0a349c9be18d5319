//! A target group: its registered targets, their health (from
//! `endstate_health::Checker`, the same probing `endstate serve` uses),
//! draining, and the choice of a target for one request.
//!
//! Health checks: a group's `HealthCheck` probes port `probe.port` of each
//! target's address; port 0 means "the target's traffic port" (ELB's
//! default), for which the group runs one `Checker` per distinct traffic
//! port. A target is `launched_at` its registration, so the check's grace
//! period runs from there.
//!
//! Draining: a deregistered target gets no new request at once and is
//! dropped when it has no request in flight *or* when the group's
//! deregistration delay has passed, whichever comes first (as ELB completes a
//! deregistration early once in-flight requests are done). A request still in
//! flight when the delay ends is not cut; it simply no longer shows in the
//! group. Draining targets are no longer probed.
//!
//! Not here: sockets (see `proxy`), weights between groups (see `lib`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use endstate_clock::SharedClock;
use endstate_health::{Checker, HealthCheck, HealthStatus, ProbeTarget};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::stats::{Counters, GroupStats, Window};
use crate::LbError;

/// How many probes one group's checker runs at once.
const PROBE_CONCURRENCY: usize = 16;

/// ELB's default deregistration delay.
pub const DEFAULT_DEREGISTRATION_DELAY: Duration = Duration::from_secs(300);

/// A target group's identity within one balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TargetGroupId(pub u64);

impl std::fmt::Display for TargetGroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tg-{}", self.0)
    }
}

/// An instance serving on `address:port`, of one deployment `generation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The instance id; it names the target in headers, health and stats.
    pub id: String,
    pub address: IpAddr,
    pub port: u16,
    /// Returned in `x-endstate-generation` (e.g. "blue", a launch hash).
    pub generation: String,
}

/// A target's state as `DescribeTargetHealth` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    Initial,
    Healthy,
    Unhealthy,
    Draining,
    /// The group has no weight in the listener's forward action.
    Unused,
}

/// One target's state and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHealth {
    pub id: String,
    pub state: TargetState,
    /// ELBv2's reason code: `Elb.RegistrationInProgress` (initial),
    /// `Target.ResponseCodeMismatch`, `Target.Timeout` or
    /// `Target.FailedHealthChecks` (unhealthy), `Target.NotInUse`,
    /// `Target.DeregistrationInProgress`; empty when healthy.
    pub reason: String,
    /// The health checker's own words for the last failure or transition
    /// (empty when it has said nothing of this target).
    pub description: String,
}

/// ELBv2's reason code for an unhealthy target, from the checker's last
/// words on it. The checker's events carry the probe failure as text
/// (`endstate_health::ProbeFailure`'s Display: "status 503", "timed out",
/// ...), so the code is read from that text.
fn unhealthy_reason(description: &str) -> &'static str {
    if description.contains("status ") {
        "Target.ResponseCodeMismatch"
    } else if description.contains("timed out") {
        "Target.Timeout"
    } else {
        "Target.FailedHealthChecks"
    }
}

struct Entry {
    target: Target,
    registered_at: Duration,
    draining_since: Option<Duration>,
    /// When a connection to it last failed (see [`Group::connection_failed`]).
    failed_at: Option<Duration>,
    counters: Arc<Counters>,
}

struct Probing {
    checker: Checker,
    health: watch::Receiver<BTreeMap<String, HealthStatus>>,
}

struct Inner {
    targets: BTreeMap<String, Entry>,
    delay: Duration,
    checkers: BTreeMap<u16, Probing>,
}

/// A target chosen for one attempt; counts it in flight until dropped.
pub(crate) struct Picked {
    pub(crate) target: Target,
    pub(crate) counters: Arc<Counters>,
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) struct Group {
    pub(crate) id: TargetGroupId,
    pub(crate) name: String,
    check: HealthCheck,
    clock: SharedClock,
    inner: Mutex<Inner>,
    /// The last reason the checker gave, by instance id.
    reasons: Arc<Mutex<BTreeMap<String, String>>>,
    events: mpsc::Sender<endstate_health::Event>,
    next: AtomicUsize,
    pub(crate) counters: Counters,
    pub(crate) window: Window,
}

impl Group {
    pub(crate) fn new(
        id: TargetGroupId,
        name: String,
        check: HealthCheck,
        clock: SharedClock,
    ) -> Result<Self, LbError> {
        check.validate().map_err(|errors| LbError::HealthCheck {
            group: name.clone(),
            errors: errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        })?;
        let (events, mut received) = mpsc::channel::<endstate_health::Event>(256);
        let reasons = Arc::new(Mutex::new(BTreeMap::new()));
        let sink = Arc::clone(&reasons);
        // Ends when the group (the last sender, with its checkers) is dropped.
        tokio::spawn(async move {
            while let Some(event) = received.recv().await {
                lock(&sink).insert(event.subject, event.reason);
            }
        });
        Ok(Self {
            id,
            name,
            check,
            clock,
            inner: Mutex::new(Inner {
                targets: BTreeMap::new(),
                delay: DEFAULT_DEREGISTRATION_DELAY,
                checkers: BTreeMap::new(),
            }),
            reasons,
            events,
            next: AtomicUsize::new(0),
            counters: Counters::default(),
            window: Window::default(),
        })
    }

    pub(crate) fn set_deregistration_delay(&self, delay: Duration) {
        lock(&self.inner).delay = delay;
    }

    /// Registers (or re-registers, ending a drain) each target.
    pub(crate) fn register(&self, targets: Vec<Target>) -> Result<(), LbError> {
        let now = self.clock.now();
        let mut inner = lock(&self.inner);
        for target in targets {
            match inner.targets.get_mut(&target.id) {
                Some(entry) => {
                    entry.target = target;
                    entry.draining_since = None;
                }
                None => {
                    let id = target.id.clone();
                    inner.targets.insert(
                        id,
                        Entry {
                            target,
                            registered_at: now,
                            draining_since: None,
                            failed_at: None,
                            counters: Arc::new(Counters::default()),
                        },
                    );
                }
            }
        }
        self.reprobe(&mut inner)
    }

    /// Starts draining each named target; unknown ids are ignored, as ELB does.
    pub(crate) fn deregister(&self, ids: &[String]) -> Result<(), LbError> {
        let now = self.clock.now();
        let mut inner = lock(&self.inner);
        for id in ids {
            if let Some(entry) = inner.targets.get_mut(id) {
                entry.draining_since.get_or_insert(now);
            }
        }
        self.reap_locked(&mut inner, now);
        self.reprobe(&mut inner)
    }

    /// Drops draining targets that are done (no request in flight) or whose
    /// delay has passed.
    pub(crate) fn reap(&self) {
        let now = self.clock.now();
        let mut inner = lock(&self.inner);
        self.reap_locked(&mut inner, now);
    }

    fn reap_locked(&self, inner: &mut Inner, now: Duration) {
        let delay = inner.delay;
        inner.targets.retain(|_, entry| match entry.draining_since {
            None => true,
            Some(since) => {
                entry.counters.in_flight.load(Ordering::Relaxed) > 0
                    && now.saturating_sub(since) < delay
            }
        });
    }

    /// Gives each checker the targets it must probe, starting and stopping
    /// checkers as probe ports come and go.
    fn reprobe(&self, inner: &mut Inner) -> Result<(), LbError> {
        let mut by_port: BTreeMap<u16, Vec<endstate_health::Target>> = BTreeMap::new();
        for entry in inner.targets.values() {
            if entry.draining_since.is_none() {
                by_port
                    .entry(self.probe_port(&entry.target))
                    .or_default()
                    .push(endstate_health::Target {
                        id: entry.target.id.clone(),
                        address: entry.target.address,
                        launched_at: entry.registered_at,
                    });
            }
        }
        inner.checkers.retain(|port, _| by_port.contains_key(port));
        for (port, targets) in by_port {
            if let Some(probing) = inner.checkers.get(&port) {
                probing.checker.set_targets(targets);
                continue;
            }
            let mut check = self.check.clone();
            match &mut check.probe {
                ProbeTarget::Http { port: p, .. } | ProbeTarget::Tcp { port: p } => *p = port,
            }
            let checker = Checker::start(
                check,
                targets,
                Arc::clone(&self.clock),
                PROBE_CONCURRENCY,
                self.events.clone(),
            )
            .map_err(|e| LbError::Prober(e.to_string()))?;
            let health = checker.health();
            inner.checkers.insert(port, Probing { checker, health });
        }
        Ok(())
    }

    fn probe_port(&self, target: &Target) -> u16 {
        match self.check.probe {
            ProbeTarget::Http { port, .. } | ProbeTarget::Tcp { port } if port != 0 => port,
            _ => target.port,
        }
    }

    fn status(&self, inner: &Inner, target: &Target) -> HealthStatus {
        inner
            .checkers
            .get(&self.probe_port(target))
            .and_then(|p| p.health.borrow().get(&target.id).copied())
            .unwrap_or(HealthStatus::Initial)
    }

    /// Chooses a target for one attempt, round robin among the healthy ones;
    /// without any, among those not yet judged (`initial`); without any,
    /// among all registered (fail-open, as ELB routes to every target when
    /// all are unhealthy). Within that set, targets whose connection failed
    /// in the last probe interval are skipped unless no other remains.
    /// Draining targets and `exclude` are never chosen.
    pub(crate) fn pick(&self, exclude: Option<&str>) -> Option<Picked> {
        let inner = lock(&self.inner);
        let live: Vec<(&Entry, HealthStatus)> = inner
            .targets
            .values()
            .filter(|e| e.draining_since.is_none() && Some(e.target.id.as_str()) != exclude)
            .map(|e| (e, self.status(&inner, &e.target)))
            .collect();
        let of = |wanted: HealthStatus| -> Vec<&Entry> {
            live.iter()
                .filter(|(_, s)| *s == wanted)
                .map(|(e, _)| *e)
                .collect()
        };
        let mut candidates = of(HealthStatus::Healthy);
        if candidates.is_empty() {
            candidates = of(HealthStatus::Initial);
        }
        if candidates.is_empty() {
            candidates = live.iter().map(|(e, _)| *e).collect();
        }
        if candidates.is_empty() {
            return None;
        }
        // A target whose connection failed within the last probe interval
        // is passed over while another candidate remains: the checker has
        // not judged it yet, but it is likely dying.
        let now = self.clock.now();
        let recent = |e: &Entry| {
            e.failed_at
                .is_some_and(|at| now.saturating_sub(at) < self.check.interval())
        };
        if candidates.iter().any(|e| !recent(e)) {
            candidates.retain(|e| !recent(e));
        }
        let entry = candidates[self.next.fetch_add(1, Ordering::Relaxed) % candidates.len()];
        // Counted in flight under the lock, so the reaper never drops a
        // draining target between this choice and the request.
        entry.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        entry.counters.request();
        Some(Picked {
            target: entry.target.clone(),
            counters: Arc::clone(&entry.counters),
        })
    }

    /// Notes that a connection to `id` failed before any response byte.
    pub(crate) fn connection_failed(&self, id: &str) {
        let now = self.clock.now();
        if let Some(entry) = lock(&self.inner).targets.get_mut(id) {
            entry.failed_at = Some(now);
        }
    }

    pub(crate) fn describe(&self, in_use: bool) -> Vec<TargetHealth> {
        let inner = lock(&self.inner);
        let reasons = lock(&self.reasons);
        inner
            .targets
            .values()
            .map(|entry| {
                let id = entry.target.id.clone();
                let description = reasons.get(&id).cloned().unwrap_or_default();
                let (state, reason) = if entry.draining_since.is_some() {
                    (TargetState::Draining, "Target.DeregistrationInProgress")
                } else if !in_use {
                    (TargetState::Unused, "Target.NotInUse")
                } else {
                    match self.status(&inner, &entry.target) {
                        HealthStatus::Initial => {
                            (TargetState::Initial, "Elb.RegistrationInProgress")
                        }
                        HealthStatus::Healthy => (TargetState::Healthy, ""),
                        HealthStatus::Unhealthy => {
                            (TargetState::Unhealthy, unhealthy_reason(&description))
                        }
                    }
                };
                TargetHealth {
                    id,
                    state,
                    reason: reason.to_string(),
                    description,
                }
            })
            .collect()
    }

    pub(crate) fn stats(&self) -> GroupStats {
        let inner = lock(&self.inner);
        GroupStats {
            id: self.id.0,
            name: self.name.clone(),
            counters: self.counters.snapshot(),
            targets: inner
                .targets
                .iter()
                .map(|(id, e)| (id.clone(), e.counters.snapshot()))
                .collect(),
        }
    }

    /// Stops every checker of this group.
    pub(crate) async fn stop(&self) {
        let checkers = std::mem::take(&mut lock(&self.inner).checkers);
        for (_, probing) in checkers {
            probing.checker.stop().await;
        }
    }
}

/// Locks, ignoring poisoning: every critical section leaves the data whole.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_reasons_are_elbv2_codes_read_from_the_checkers_words() {
        let cases = [
            (
                "unhealthy after 2 consecutive failed probes (status 503)",
                "Target.ResponseCodeMismatch",
            ),
            (
                "probe failed (1 of 2 in a row): timed out",
                "Target.Timeout",
            ),
            (
                "unhealthy after 1 failed probe (connection refused)",
                "Target.FailedHealthChecks",
            ),
            ("", "Target.FailedHealthChecks"),
        ];
        for (words, code) in cases {
            assert_eq!(unhealthy_reason(words), code, "{words}");
        }
    }
}
