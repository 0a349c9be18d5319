//! Which module's tests may run: those of one module at a time, as many
//! of them at once as the harness runs. The modules of this binary were
//! binaries of their own, run one after the other; their tests use fixed
//! ports and instance addresses that only tests of the same module were
//! written to share. A test waits (blocking its own thread) until no test
//! of another module runs. Not a lock on the cloud: within a module,
//! tests still run side by side, as they always did.

use std::sync::{Condvar, Mutex};

/// The module running, and how many of its tests run.
static RUNNING: Mutex<(Option<&'static str>, usize)> = Mutex::new((None, 0));
static CHANGED: Condvar = Condvar::new();

/// A running test of one module; dropping it lets other modules in.
pub struct Pass;

/// Waits until `module`'s tests may run, and counts this one.
pub fn enter(module: &'static str) -> Pass {
    let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    while running.0.is_some_and(|current| current != module) {
        running = CHANGED.wait(running).unwrap_or_else(|p| p.into_inner());
    }
    *running = (Some(module), running.1 + 1);
    Pass
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        running.1 = running.1.saturating_sub(1);
        if running.1 == 0 {
            running.0 = None;
            CHANGED.notify_all();
        }
    }
}
