//! CPU accounting of the process backend's instances: which host processes
//! belong to an instance, and each instance's CPU seconds and utilization
//! over the last sampling window, from one scan of `/proc` per tick for all
//! instances (the runtime's prober drives it; `DescribeInstanceUtilization`
//! reads it).
//!
//! An instance's processes are its top process's tree (its process group
//! and descendants, `procfs::tree_in`) and, once the top process has made
//! the instance's PID namespace (root and userns isolation), every process
//! in that namespace — which also finds a process that left the tree. A
//! process's counter is its own CPU time and that of the children it
//! waited for (utime + stime + cutime + cstime), so that work done by
//! short-lived processes (a shell loop running commands) counts once they
//! are reaped inside the instance.
//!
//! Not here: reading `/proc` (`procfs`), when to sample (the runtime), and
//! any per-instance limit or cgroup: without cgroups, a process that leaves
//! the tree by `setsid` and double fork under isolation `none` is not seen.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::procfs::{tree_in, Stat};

/// One process of an instance at one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) pid: u32,
    pub(crate) start_time: u64,
    pub(crate) ppid: u32,
    /// Its own CPU ticks and those of the children it waited for.
    pub(crate) ticks: u64,
}

/// The processes of the instance whose top process is `top` (PID, start
/// time): its tree in `table`, zombies included (their times are final
/// until their parent reaps them into its own), and, when `namespace` is
/// given, every process whose PID namespace (`namespaces`, by PID) is it.
pub(crate) fn members(
    table: &HashMap<u32, Stat>,
    namespaces: &HashMap<u32, u64>,
    top: (u32, u64),
    namespace: Option<u64>,
) -> Vec<Member> {
    let mut pids: BTreeSet<u32> = tree_in(table, top);
    if let Some(ns) = namespace {
        pids.extend(
            namespaces
                .iter()
                .filter(|(_, n)| **n == ns)
                .map(|(pid, _)| *pid),
        );
    }
    pids.into_iter()
        .filter_map(|pid| {
            table.get(&pid).map(|s| Member {
                pid,
                start_time: s.start_time,
                ppid: s.ppid,
                ticks: s.cpu.saturating_add(s.children_cpu),
            })
        })
        .collect()
}

/// An instance's CPU over its last window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CpuSample {
    /// Percent of one core: CPU seconds in the window / its wall seconds
    /// × 100.
    pub(crate) utilization: f64,
    /// CPU seconds of the instance's processes, as far as the cloud has
    /// seen them (what they had used when first sampled included).
    pub(crate) cpu_seconds: f64,
    pub(crate) window: Duration,
    /// Wall-clock time at the end of the window, since the Unix epoch.
    pub(crate) sampled_at: Duration,
}

#[derive(Debug)]
struct Account {
    /// The processes of the last tick, by (PID, start time): their ppid
    /// and counter.
    seen: HashMap<(u32, u64), (u32, u64)>,
    /// The sum of their counters.
    total: u64,
    at: Instant,
    cumulative: u64,
    latest: Option<CpuSample>,
}

/// Every instance's account.
#[derive(Debug)]
pub(crate) struct CpuAccounts {
    ticks_per_second: u64,
    accounts: HashMap<String, Account>,
}

impl CpuAccounts {
    pub(crate) fn new(ticks_per_second: u64) -> Self {
        Self {
            ticks_per_second: ticks_per_second.max(1),
            accounts: HashMap::new(),
        }
    }

    /// One tick: the members of every instance that has processes now, at
    /// monotonic time `at` and wall time `wall` (since the epoch).
    /// Instances absent from `observed` (stopped, terminated) lose their
    /// account, and so their sample.
    pub(crate) fn record(
        &mut self,
        observed: Vec<(String, Vec<Member>)>,
        at: Instant,
        wall: Duration,
    ) {
        let hz = self.ticks_per_second as f64;
        let mut next = HashMap::with_capacity(observed.len());
        for (id, members) in observed {
            let seen: HashMap<(u32, u64), (u32, u64)> = members
                .iter()
                .map(|m| ((m.pid, m.start_time), (m.ppid, m.ticks)))
                .collect();
            let total: u64 = seen.values().map(|(_, t)| *t).sum();
            let account = match self.accounts.remove(&id) {
                None => Account {
                    seen,
                    total,
                    at,
                    cumulative: total,
                    latest: None,
                },
                Some(previous) => {
                    let delta = delta_ticks(&previous, &seen, total);
                    let window = at.saturating_duration_since(previous.at);
                    let cumulative = previous.cumulative.saturating_add(delta);
                    let latest = if window.is_zero() {
                        previous.latest
                    } else {
                        Some(CpuSample {
                            utilization: delta as f64 / hz / window.as_secs_f64() * 100.0,
                            cpu_seconds: cumulative as f64 / hz,
                            window,
                            sampled_at: wall,
                        })
                    };
                    Account {
                        seen,
                        total,
                        at,
                        cumulative,
                        latest,
                    }
                }
            };
            next.insert(id, account);
        }
        self.accounts = next;
    }

    /// The instance's last sample, if it has had a window yet.
    pub(crate) fn latest(&self, id: &str) -> Option<&CpuSample> {
        self.accounts.get(id)?.latest.as_ref()
    }

    /// Every instance with a sample.
    pub(crate) fn sampled(&self) -> impl Iterator<Item = (&String, &CpuSample)> {
        self.accounts
            .iter()
            .filter_map(|(id, a)| a.latest.as_ref().map(|s| (id, s)))
    }
}

/// The ticks the instance used since `previous`: the change of the sum of
/// its counters, plus the counters of processes that left it through a
/// parent outside it (the top process, reaped by the cloud; an orphan
/// adopted outside) — a process reaped by a parent inside moved its
/// counter into the parent's, so the sum already has it. Never negative:
/// time lost in a way this cannot see (a tree killed whole) reads as none.
fn delta_ticks(previous: &Account, seen: &HashMap<(u32, u64), (u32, u64)>, total: u64) -> u64 {
    let inside: BTreeSet<u32> = previous.seen.keys().map(|(pid, _)| *pid).collect();
    let left: u64 = previous
        .seen
        .iter()
        .filter(|(key, (ppid, _))| !seen.contains_key(key) && !inside.contains(ppid))
        .map(|(_, (_, ticks))| *ticks)
        .sum();
    total.saturating_add(left).saturating_sub(previous.total)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn stat(ppid: u32, pgid: u32, cpu: u64, children_cpu: u64) -> Stat {
        Stat {
            state: 'S',
            ppid,
            pgid,
            start_time: 7,
            cpu,
            children_cpu,
        }
    }

    fn member(pid: u32, ppid: u32, ticks: u64) -> Member {
        Member {
            pid,
            start_time: 7,
            ppid,
            ticks,
        }
    }

    #[test]
    fn members_are_the_tree_and_the_namespace() {
        // 10 is the top process (parent: the cloud, 1); 11 its child; 12
        // an orphan of its group; 20 PID 1 of its namespace after the top
        // unshared, 21 a process that left the tree but not the namespace;
        // 30 another instance's.
        let table: HashMap<u32, Stat> = [
            (10, stat(1, 10, 1, 0)),
            (11, stat(10, 10, 2, 0)),
            (12, stat(1, 10, 3, 0)),
            (20, stat(10, 10, 4, 5)),
            (21, stat(1, 21, 6, 0)),
            (30, stat(1, 30, 100, 0)),
        ]
        .into_iter()
        .collect();
        let namespaces: HashMap<u32, u64> = [(20, 99), (21, 99), (30, 98)].into_iter().collect();
        let pids = |ns| {
            members(&table, &namespaces, (10, 7), ns)
                .iter()
                .map(|m| m.pid)
                .collect::<Vec<_>>()
        };
        assert_eq!(pids(None), [10, 11, 12, 20]);
        assert_eq!(pids(Some(99)), [10, 11, 12, 20, 21]);
        let pid1 = members(&table, &namespaces, (10, 7), Some(99))
            .into_iter()
            .find(|m| m.pid == 20)
            .unwrap();
        assert_eq!(pid1.ticks, 9, "its own and its reaped children's");
        // A top process that is another process now names nothing by
        // itself (its group still does).
        assert_eq!(
            members(&table, &namespaces, (30, 8), None)
                .iter()
                .map(|m| m.pid)
                .collect::<Vec<_>>(),
            [30]
        );
    }

    #[test]
    fn utilization_is_the_window_share_of_one_core() {
        let mut accounts = CpuAccounts::new(100);
        let t0 = Instant::now();
        let wall = Duration::from_secs(1_800_000_000);
        let id = "i-1".to_string();
        accounts.record(
            vec![(id.clone(), vec![member(10, 1, 50), member(11, 10, 0)])],
            t0,
            wall,
        );
        assert!(accounts.latest(&id).is_none(), "no window yet");
        assert_eq!(accounts.sampled().count(), 0);

        // Two seconds, two busy processes: 400 ticks, 200%.
        accounts.record(
            vec![(id.clone(), vec![member(10, 1, 250), member(11, 10, 200)])],
            t0 + Duration::from_secs(2),
            wall + Duration::from_secs(2),
        );
        let s = accounts.latest(&id).unwrap().clone();
        assert!((s.utilization - 200.0).abs() < 1e-9, "{s:?}");
        assert!((s.cpu_seconds - 4.5).abs() < 1e-9, "{s:?}");
        assert_eq!(s.window, Duration::from_secs(2));
        assert_eq!(s.sampled_at, wall + Duration::from_secs(2));

        // 11 exits and 10 reaps it (its 200 move into 10's counter), a new
        // 12 ran 20 ticks, 10 itself 30: 50 ticks in one second.
        accounts.record(
            vec![(id.clone(), vec![member(10, 1, 480), member(12, 10, 20)])],
            t0 + Duration::from_secs(3),
            wall + Duration::from_secs(3),
        );
        let s = accounts.latest(&id).unwrap().clone();
        assert!((s.utilization - 50.0).abs() < 1e-9, "{s:?}");
        assert!((s.cpu_seconds - 5.0).abs() < 1e-9, "{s:?}");

        // 12 is orphaned, adopted outside the tree (parent 1) and runs 50
        // more ticks; then it exits there, reaped outside: the count
        // neither drops nor counts it twice.
        accounts.record(
            vec![(id.clone(), vec![member(10, 1, 480), member(12, 1, 70)])],
            t0 + Duration::from_secs(4),
            wall + Duration::from_secs(4),
        );
        assert!((accounts.latest(&id).unwrap().utilization - 50.0).abs() < 1e-9);
        accounts.record(
            vec![(id.clone(), vec![member(10, 1, 480)])],
            t0 + Duration::from_secs(5),
            wall + Duration::from_secs(5),
        );
        let s = accounts.latest(&id).unwrap().clone();
        assert_eq!(s.utilization, 0.0, "{s:?}");
        assert!((s.cpu_seconds - 5.5).abs() < 1e-9, "{s:?}");

        // Gone from the tick (stopped): no sample any more.
        accounts.record(vec![], t0 + Duration::from_secs(6), wall);
        assert!(accounts.latest(&id).is_none());
    }

    #[test]
    fn a_respawned_top_process_keeps_the_count_going() {
        let mut accounts = CpuAccounts::new(100);
        let t0 = Instant::now();
        let wall = Duration::ZERO;
        let id = "i-1".to_string();
        accounts.record(vec![(id.clone(), vec![member(10, 1, 100)])], t0, wall);
        accounts.record(
            vec![(id.clone(), vec![member(10, 1, 300)])],
            t0 + Duration::from_secs(2),
            wall,
        );
        // Rebooted: 10 reaped by the cloud, a new top process 40 ran 10
        // ticks, 10 had run none since the last tick.
        accounts.record(
            vec![(id.clone(), vec![member(40, 1, 10)])],
            t0 + Duration::from_secs(3),
            wall,
        );
        let s = accounts.latest(&id).unwrap();
        assert!((s.utilization - 10.0).abs() < 1e-9, "{s:?}");
        assert!((s.cpu_seconds - 3.1).abs() < 1e-9, "{s:?}");
    }
}
