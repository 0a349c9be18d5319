//! The API's own request counters, by route and status, in the Prometheus
//! text format (`endstate_api_requests_total`). The controller's metrics
//! come from [`crate::view::ControllerApi::prometheus`]; this adds only what
//! the HTTP layer sees.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::routes::Route;

/// Requests answered, by (method, route template, status).
#[derive(Debug, Default)]
pub struct RequestCounters {
    counts: Mutex<BTreeMap<(&'static str, &'static str, u16), u64>>,
}

impl RequestCounters {
    pub fn record(&self, route: &Route, status: u16) {
        // A poisoned lock only means another request panicked while
        // counting; the map itself is still whole.
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts
            .entry((route.verb.as_str(), route.path, status))
            .or_default() += 1;
    }

    /// The counters as Prometheus text, `# HELP` and `# TYPE` first.
    pub fn render(&self) -> String {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::from(
            "# HELP endstate_api_requests_total HTTP API requests answered, by method, route and status.\n\
             # TYPE endstate_api_requests_total counter\n",
        );
        for ((method, route, status), n) in counts.iter() {
            out.push_str(&format!(
                "endstate_api_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}\n",
                escape_label(route)
            ));
        }
        out
    }
}

/// A label value as the text format requires: `\`, `"` and newlines escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::super::routes::ROUTES;
    use super::*;

    #[test]
    fn counts_render_one_line_per_method_route_and_status() {
        let counters = RequestCounters::default();
        let group = ROUTES
            .iter()
            .find(|r| r.path == "/v1/groups/{group}")
            .unwrap();
        counters.record(group, 200);
        counters.record(group, 200);
        counters.record(group, 404);
        let text = counters.render();
        assert!(text.contains(
            "endstate_api_requests_total{method=\"GET\",route=\"/v1/groups/{group}\",status=\"200\"} 2\n"
        ));
        assert!(text.contains(
            "endstate_api_requests_total{method=\"GET\",route=\"/v1/groups/{group}\",status=\"404\"} 1\n"
        ));
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
