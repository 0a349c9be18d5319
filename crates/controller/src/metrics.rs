//! Numbers the controller keeps: the metric samples scaling policies read
//! (posted through the API, or the built-in cloud's own per-instance CPU
//! accounting), and the controller's own counters, written out in the
//! Prometheus text format for `/metrics`.
//!
//! Samples are kept in memory only, the latest per instance and metric; a
//! sample older than its freshness limit is ignored, so a silent source
//! never holds a group at a stale value. This module decides nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where a group-wide sample is kept (it counts for every instance).
pub const GROUP_WIDE: &str = "";

/// Per instance (or [`GROUP_WIDE`]): the latest value and when it came.
type Latest = BTreeMap<String, (f64, Duration)>;

/// The latest value per (group, metric, instance), with its time.
#[derive(Debug, Default)]
pub struct Samples {
    latest: Mutex<BTreeMap<(String, String), Latest>>,
}

impl Samples {
    pub fn put(&self, group: &str, metric: &str, instance: Option<&str>, value: f64, at: Duration) {
        lock(&self.latest)
            .entry((group.to_string(), metric.to_string()))
            .or_default()
            .insert(instance.unwrap_or(GROUP_WIDE).to_string(), (value, at));
    }

    /// Each of `instances`' value of `metric` no older than `fresh` at `now`;
    /// a fresh group-wide value stands in for instances without their own.
    pub fn per_instance(
        &self,
        group: &str,
        metric: &str,
        instances: &[String],
        now: Duration,
        fresh: Duration,
    ) -> BTreeMap<String, f64> {
        let latest = lock(&self.latest);
        let Some(values) = latest.get(&(group.to_string(), metric.to_string())) else {
            return BTreeMap::new();
        };
        let is_fresh = |at: &Duration| now.saturating_sub(*at) <= fresh;
        let group_wide = values
            .get(GROUP_WIDE)
            .filter(|(_, at)| is_fresh(at))
            .map(|(v, _)| *v);
        instances
            .iter()
            .filter_map(|id| {
                values
                    .get(id)
                    .filter(|(_, at)| is_fresh(at))
                    .map(|(v, _)| *v)
                    .or(group_wide)
                    .map(|v| (id.clone(), v))
            })
            .collect()
    }

    /// The latest value of `metric` on one instance, however old.
    pub fn latest(&self, group: &str, metric: &str, instance: &str) -> Option<f64> {
        lock(&self.latest)
            .get(&(group.to_string(), metric.to_string()))
            .and_then(|values| values.get(instance))
            .map(|(v, _)| *v)
    }

    /// Forgets instances that are gone.
    pub fn retain_instances(&self, group: &str, live: &std::collections::BTreeSet<String>) {
        for ((g, _), values) in lock(&self.latest).iter_mut() {
            if g == group {
                values.retain(|id, _| id == GROUP_WIDE || live.contains(id));
            }
        }
    }
}

/// Upper bounds of the reconcile-duration histogram, in seconds.
const BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The controller's own counters.
#[derive(Debug, Default)]
pub struct Counters {
    inner: Mutex<CounterState>,
}

#[derive(Debug, Default)]
struct CounterState {
    reconcile_seconds: BTreeMap<String, Histogram>,
    reconciles: BTreeMap<(String, &'static str), u64>,
    throttles: BTreeMap<(String, &'static str), u64>,
    probe_failures: BTreeMap<String, u64>,
    health_transitions: BTreeMap<(String, &'static str), u64>,
}

/// Gauges read at exposition time from the controller's state.
#[derive(Debug, Default)]
pub struct Gauges {
    /// (group, state) → count.
    pub instances: BTreeMap<(String, String), u64>,
    /// (group, health) → count.
    pub health: BTreeMap<(String, String), u64>,
    pub desired: BTreeMap<String, u32>,
    /// EC2 API calls by action (the governor's count).
    pub api_calls: BTreeMap<String, u64>,
}

impl Counters {
    pub fn reconciled(&self, group: &str, seconds: f64, ok: bool) {
        let mut state = lock(&self.inner);
        let histogram = state
            .reconcile_seconds
            .entry(group.to_string())
            .or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                histogram.counts[i] += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
        *state
            .reconciles
            .entry((group.to_string(), if ok { "ok" } else { "error" }))
            .or_default() += 1;
    }

    pub fn throttled(&self, action: &str, by_server: bool) {
        *lock(&self.inner)
            .throttles
            .entry((
                action.to_string(),
                if by_server { "server" } else { "client" },
            ))
            .or_default() += 1;
    }

    pub fn probe_failed(&self, group: &str) {
        *lock(&self.inner)
            .probe_failures
            .entry(group.to_string())
            .or_default() += 1;
    }

    pub fn health_transition(&self, group: &str, to: &'static str) {
        *lock(&self.inner)
            .health_transitions
            .entry((group.to_string(), to))
            .or_default() += 1;
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn exposition(&self, gauges: &Gauges) -> String {
        let state = lock(&self.inner);
        let mut out = String::new();
        out.push_str("# HELP endstate_reconcile_duration_seconds Time one reconcile of one group took.\n# TYPE endstate_reconcile_duration_seconds histogram\n");
        for (group, h) in &state.reconcile_seconds {
            let g = escape(group);
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "endstate_reconcile_duration_seconds_bucket{{group=\"{g}\",le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "endstate_reconcile_duration_seconds_bucket{{group=\"{g}\",le=\"+Inf\"}} {}\nendstate_reconcile_duration_seconds_sum{{group=\"{g}\"}} {}\nendstate_reconcile_duration_seconds_count{{group=\"{g}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        family(
            &mut out,
            "endstate_reconciles_total",
            "counter",
            "Reconciles by group and outcome.",
            per_group(&state.reconciles, "outcome"),
        );
        family(
            &mut out,
            "endstate_ec2_api_calls_total",
            "counter",
            "EC2 API calls by action.",
            gauges
                .api_calls
                .iter()
                .map(|(a, v)| (format!("action=\"{}\"", escape(a)), *v))
                .collect(),
        );
        family(
            &mut out,
            "endstate_ec2_throttles_total",
            "counter",
            "Waits before EC2 API calls by action: on the client-side buckets, or after EC2 throttled.",
            state
                .throttles
                .iter()
                .map(|((a, by), v)| (format!("action=\"{}\",by=\"{by}\"", escape(a)), *v))
                .collect(),
        );
        family(
            &mut out,
            "endstate_health_probe_failures_total",
            "counter",
            "Failed health probes that counted towards an unhealthy threshold.",
            state
                .probe_failures
                .iter()
                .map(|(g, v)| (format!("group=\"{}\"", escape(g)), *v))
                .collect(),
        );
        family(
            &mut out,
            "endstate_health_transitions_total",
            "counter",
            "Instances turning healthy or unhealthy.",
            per_group(&state.health_transitions, "to"),
        );
        family(
            &mut out,
            "endstate_instances",
            "gauge",
            "Instances by group and EC2 state.",
            per_group(&gauges.instances, "state"),
        );
        family(
            &mut out,
            "endstate_instances_health",
            "gauge",
            "Live instances by group and health.",
            per_group(&gauges.health, "health"),
        );
        family(
            &mut out,
            "endstate_group_desired_capacity",
            "gauge",
            "The desired capacity the controller holds each group to.",
            gauges
                .desired
                .iter()
                .map(|(g, v)| (format!("group=\"{}\"", escape(g)), u64::from(*v)))
                .collect(),
        );
        out
    }
}

/// One metric family: its HELP and TYPE lines, then a sample per row of
/// (labels, value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in rows {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// Rows of a family keyed by (group, another label's value).
fn per_group<K: AsRef<str>>(map: &BTreeMap<(String, K), u64>, label: &str) -> Vec<(String, u64)> {
    map.iter()
        .map(|((group, value), count)| {
            (
                format!(
                    "group=\"{}\",{label}=\"{}\"",
                    escape(group),
                    escape(value.as_ref())
                ),
                *count,
            )
        })
        .collect()
}

/// Escapes a label value (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_and_missing_samples_do_not_count_and_group_wide_values_fill_in() {
        let samples = Samples::default();
        let ids = vec!["i-1".to_string(), "i-2".to_string(), "i-3".to_string()];
        samples.put("web", "cpu", Some("i-1"), 80.0, Duration::from_secs(100));
        samples.put("web", "cpu", Some("i-2"), 10.0, Duration::from_secs(10));
        let got = samples.per_instance(
            "web",
            "cpu",
            &ids,
            Duration::from_secs(110),
            Duration::from_secs(30),
        );
        assert_eq!(got, BTreeMap::from([("i-1".to_string(), 80.0)]));
        samples.put("web", "cpu", None, 40.0, Duration::from_secs(105));
        let got = samples.per_instance(
            "web",
            "cpu",
            &ids,
            Duration::from_secs(110),
            Duration::from_secs(30),
        );
        assert_eq!(got.len(), 3);
        assert_eq!(got["i-1"], 80.0);
        assert_eq!(got["i-3"], 40.0);
    }

    #[test]
    fn exposition_has_histogram_buckets_and_escaped_labels() {
        let counters = Counters::default();
        counters.reconciled("web", 0.2, true);
        counters.reconciled("web", 3.0, false);
        counters.throttled("RunInstances", true);
        let gauges = Gauges {
            instances: BTreeMap::from([(("we\"b".to_string(), "running".to_string()), 3)]),
            ..Gauges::default()
        };
        let text = counters.exposition(&gauges);
        assert!(text
            .contains("endstate_reconcile_duration_seconds_bucket{group=\"web\",le=\"0.25\"} 1"));
        assert!(
            text.contains("endstate_reconcile_duration_seconds_bucket{group=\"web\",le=\"5\"} 2")
        );
        assert!(text.contains("endstate_reconciles_total{group=\"web\",outcome=\"error\"} 1"));
        assert!(
            text.contains("endstate_ec2_throttles_total{action=\"RunInstances\",by=\"server\"} 1")
        );
        assert!(text.contains("endstate_instances{group=\"we\\\"b\",state=\"running\"} 3"));
    }
}
