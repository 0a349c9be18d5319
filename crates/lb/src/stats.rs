//! Counters of the load balancer: per target group and per target, requests,
//! responses by status class, upstream errors and requests in flight, plus a
//! per-second window of each group's responses for an error rate.
//!
//! Plain atomics and a small mutex-guarded ring of one-second buckets (the
//! last hour); no histograms, no latency, no export format (callers serialize
//! [`Stats`] with serde as they like).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How many one-second buckets a group's error window keeps.
const WINDOW_SECONDS: usize = 3600;

/// Live counters of one group or one target.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    by_class: [AtomicU64; 4],
    upstream_errors: AtomicU64,
    pub(crate) in_flight: AtomicU64,
}

impl Counters {
    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn response(&self, status: u16) {
        if let Some(slot) = class_index(status) {
            self.by_class[slot].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        let class = |i: usize| self.by_class[i].load(Ordering::Relaxed);
        CounterSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            responses_2xx: class(0),
            responses_3xx: class(1),
            responses_4xx: class(2),
            responses_5xx: class(3),
            upstream_errors: self.upstream_errors.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }
}

fn class_index(status: u16) -> Option<usize> {
    match status {
        200..=299 => Some(0),
        300..=399 => Some(1),
        400..=499 => Some(2),
        500..=599 => Some(3),
        _ => None,
    }
}

/// The counters of a group or a target at one moment. Every count is since
/// the group was created or the target registered, except `in_flight`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    /// Requests routed (for a target: attempts sent to it, retries included).
    pub requests: u64,
    pub responses_2xx: u64,
    pub responses_3xx: u64,
    pub responses_4xx: u64,
    /// For a group this includes the balancer's own 502 and 503.
    pub responses_5xx: u64,
    /// Connection failures and broken responses from targets.
    pub upstream_errors: u64,
    pub in_flight: u64,
}

/// One target group's counters and its targets'.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStats {
    pub id: u64,
    pub name: String,
    pub counters: CounterSnapshot,
    /// By instance id; a target leaves this map when it is dropped.
    pub targets: BTreeMap<String, CounterSnapshot>,
}

/// Every target group's counters, by group name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub target_groups: BTreeMap<String, GroupStats>,
}

/// A group's responses per second of the clock, for [`Window::error_rate`].
#[derive(Debug, Default)]
pub(crate) struct Window {
    /// (second since the Unix epoch, responses, 5xx responses), oldest first.
    buckets: Mutex<VecDeque<(u64, u64, u64)>>,
}

impl Window {
    pub(crate) fn record(&self, at: Duration, status: u16) {
        let second = at.as_secs();
        let error = u64::from((500..=599).contains(&status));
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        match buckets.back_mut() {
            Some(last) if last.0 >= second => {
                last.1 += 1;
                last.2 += error;
            }
            _ => buckets.push_back((second, 1, error)),
        }
        while buckets.len() > WINDOW_SECONDS {
            buckets.pop_front();
        }
    }

    /// The share of 5xx among responses in the seconds from `since` (whole
    /// second, on the balancer's clock) on; `None` without responses.
    pub(crate) fn error_rate(&self, since: Duration) -> Option<f64> {
        let (total, errors) = self.counts(since);
        (total > 0).then(|| errors as f64 / total as f64)
    }

    /// (responses, 5xx responses) in the seconds from `since` on.
    pub(crate) fn counts(&self, since: Duration) -> (u64, u64) {
        let from = since.as_secs();
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets
            .iter()
            .filter(|b| b.0 >= from)
            .fold((0u64, 0u64), |acc, b| (acc.0 + b.1, acc.1 + b.2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_rate_counts_5xx_from_the_given_second_on() {
        let window = Window::default();
        window.record(Duration::from_secs(10), 500);
        window.record(Duration::from_secs(11), 200);
        window.record(Duration::from_secs(11), 503);
        window.record(Duration::from_secs(12), 404);
        assert_eq!(window.error_rate(Duration::from_secs(10)), Some(0.5));
        assert_eq!(
            window.error_rate(Duration::from_millis(11_500)),
            Some(1.0 / 3.0)
        );
        assert_eq!(window.error_rate(Duration::from_secs(13)), None);
        assert_eq!(window.counts(Duration::from_secs(11)), (3, 1));
    }

    #[test]
    fn counters_sort_responses_by_class() {
        let counters = Counters::default();
        for status in [200, 204, 301, 404, 502, 99] {
            counters.response(status);
        }
        let s = counters.snapshot();
        assert_eq!(
            (
                s.responses_2xx,
                s.responses_3xx,
                s.responses_4xx,
                s.responses_5xx
            ),
            (2, 1, 1, 1)
        );
    }
}
