//! The `Checker`: probes a set of instances every interval, feeds each
//! instance's [`InstanceHealth`], and sends every transition on a channel.
//!
//! Rounds start at a fixed rate on the [`SharedClock`] (a slow round does not
//! push the next one back, since probes end within the timeout, which is below
//! the interval). Probes run as tokio tasks, at most `concurrency` at once.
//! Results are applied in instance-id order, so events come out in the same
//! order for the same results. The checker does not read EC2 (the reconcile
//! loop feeds [`InstanceHealth::observe_ec2`] its own way), decide
//! replacements, or apply the brake.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use endstate_clock::SharedClock;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::config::HealthCheck;
use crate::event::{Event, EventKind};
use crate::machine::{HealthStatus, InstanceHealth};
use crate::probe::{ProbeResult, Prober, ProberError};

/// One instance to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    pub address: IpAddr,
    /// Since the Unix epoch, on the checker's clock.
    pub launched_at: Duration,
}

/// A running checker. Dropping it stops it too; [`Checker::stop`] also waits.
#[derive(Debug)]
pub struct Checker {
    stop: watch::Sender<bool>,
    targets: watch::Sender<Vec<Target>>,
    rounds: watch::Receiver<u64>,
    health: watch::Receiver<BTreeMap<String, HealthStatus>>,
    task: JoinHandle<()>,
}

impl Checker {
    /// Starts probing `targets` by `check` at once and then every interval,
    /// sending transitions to `events`. Must be called inside a tokio runtime.
    pub fn start(
        check: HealthCheck,
        targets: Vec<Target>,
        clock: SharedClock,
        concurrency: usize,
        events: mpsc::Sender<Event>,
    ) -> Result<Self, ProberError> {
        let prober = Prober::new(&check)?;
        let (stop, stop_rx) = watch::channel(false);
        let (targets_tx, targets_rx) = watch::channel(targets);
        let (rounds_tx, rounds) = watch::channel(0);
        let (health_tx, health) = watch::channel(BTreeMap::new());
        let run = Run {
            check,
            prober,
            clock,
            limit: Arc::new(Semaphore::new(concurrency.max(1))),
            events,
            rounds: rounds_tx,
            health: health_tx,
            machines: BTreeMap::new(),
        };
        let task = tokio::spawn(run.run(targets_rx, stop_rx));
        Ok(Self {
            stop,
            targets: targets_tx,
            rounds,
            health,
            task,
        })
    }

    /// Replaces the set of instances probed, from the next round on. New
    /// instances start `Initial`; instances left out are forgotten.
    pub fn set_targets(&self, targets: Vec<Target>) {
        self.targets.send_replace(targets);
    }

    /// The number of rounds completed so far.
    pub fn rounds(&self) -> watch::Receiver<u64> {
        self.rounds.clone()
    }

    /// Each probed instance's health after the last round.
    pub fn health(&self) -> watch::Receiver<BTreeMap<String, HealthStatus>> {
        self.health.clone()
    }

    /// Stops probing (a round under way is abandoned) and waits for the task.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        // The task only ends by returning; a JoinError would mean it
        // panicked, which has already been reported by the runtime.
        let _ = self.task.await;
    }
}

struct Run {
    check: HealthCheck,
    prober: Prober,
    clock: SharedClock,
    limit: Arc<Semaphore>,
    events: mpsc::Sender<Event>,
    rounds: watch::Sender<u64>,
    health: watch::Sender<BTreeMap<String, HealthStatus>>,
    machines: BTreeMap<String, InstanceHealth>,
}

impl Run {
    async fn run(
        mut self,
        mut targets: watch::Receiver<Vec<Target>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let interval = self.check.interval();
        let mut round: u64 = 0;
        loop {
            let started = self.clock.now();
            let current = targets.borrow_and_update().clone();
            let results = tokio::select! {
                biased;
                _ = stop.changed() => return,
                results = self.probe_all(&current) => results,
            };
            if !self.apply(&current, results).await {
                return;
            }
            round += 1;
            self.rounds.send_replace(round);
            // The deadline is fixed before waiting, so a clock moved in the
            // meantime shortens the wait instead of being missed.
            let wait = (started + interval).saturating_sub(self.clock.now());
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                () = self.clock.sleep(wait) => {}
            }
        }
    }

    async fn probe_all(&self, targets: &[Target]) -> Vec<(String, Duration, ProbeResult)> {
        let mut probes = JoinSet::new();
        for target in targets {
            let limit = Arc::clone(&self.limit);
            let prober = self.prober.clone();
            let clock = Arc::clone(&self.clock);
            let target = target.clone();
            probes.spawn(async move {
                // The semaphore is never closed, so acquiring only waits.
                let _permit = limit.acquire_owned().await.ok()?;
                let result = prober.probe(target.address).await;
                Some((target.id, clock.now(), result))
            });
        }
        let mut results = Vec::new();
        while let Some(joined) = probes.join_next().await {
            if let Ok(Some(result)) = joined {
                results.push(result);
            }
        }
        results.sort_by(|a, b| a.0.cmp(&b.0));
        results
    }

    /// Feeds the results to the machines; false once nobody listens for events.
    async fn apply(
        &mut self,
        targets: &[Target],
        results: Vec<(String, Duration, ProbeResult)>,
    ) -> bool {
        self.machines
            .retain(|id, _| targets.iter().any(|t| &t.id == id));
        for target in targets {
            self.machines.entry(target.id.clone()).or_insert_with(|| {
                InstanceHealth::new(&target.id, target.launched_at, &self.check)
            });
        }
        for (id, at, result) in results {
            let Some(machine) = self.machines.get_mut(&id) else {
                continue;
            };
            let was_unhealthy = machine.status() == HealthStatus::Unhealthy;
            let before = machine.consecutive_failures();
            let transition = machine.observe_probe(at, &result);
            let counted = machine.consecutive_failures();
            let failed = match &result {
                ProbeResult::Failed(failure) if counted > before && !was_unhealthy => Some(Event {
                    at,
                    subject: id.clone(),
                    kind: EventKind::ProbeFailed,
                    reason: format!(
                        "probe failed ({counted} of {} in a row): {failure}",
                        machine.unhealthy_threshold()
                    ),
                }),
                _ => None,
            };
            for event in failed.into_iter().chain(transition) {
                if self.events.send(event).await.is_err() {
                    return false;
                }
            }
        }
        self.health.send_replace(
            self.machines
                .iter()
                .map(|(id, m)| (id.clone(), m.status()))
                .collect(),
        );
        true
    }
}

#[cfg(test)]
mod tests;
