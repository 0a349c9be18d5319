//! Named crash points for fault tests: when `ENDSTATE_CRASH_AT=NAME` (or
//! `NAME#N`, the N-th time the point is reached) is set, the process kills
//! itself with SIGKILL at that point, exactly as `kill -9` would, so that a
//! test can prove a rerun recovers from a crash there.
//!
//! In normal runs the variable is unset and a crash point costs one atomic
//! load. The points are listed in [`POINTS`] so tests can iterate them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Every crash point the executor passes, in the order an apply meets them.
pub const POINTS: &[&str] = &[
    "run-begun",
    "intent-recorded",
    "intent-sent",
    "launch-returned",
    "launch-waited",
    "launch-completed",
    "terminate-recorded",
    "terminate-returned",
    "terminate-completed",
    "retag-returned",
    "run-finished",
];

struct Target {
    name: String,
    nth: u64,
    hits: AtomicU64,
}

fn target() -> Option<&'static Target> {
    static TARGET: OnceLock<Option<Target>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let value = std::env::var("ENDSTATE_CRASH_AT").ok()?;
            let (name, nth) = match value.split_once('#') {
                Some((name, nth)) => (name.to_string(), nth.parse().ok()?),
                None => (value, 1),
            };
            Some(Target {
                name,
                nth,
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Passes the crash point `name`: dies here if the environment says so.
pub fn point(name: &str) {
    let Some(target) = target() else {
        return;
    };
    if target.name != name {
        return;
    }
    if target.hits.fetch_add(1, Ordering::SeqCst) + 1 == target.nth {
        eprintln!("endstate: crash point {name} reached, killing myself (ENDSTATE_CRASH_AT)");
        // SIGKILL cannot be caught: this is the same death as `kill -9`.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        // raise() returns only if the signal could not be sent.
        std::process::abort();
    }
}
