//! Shared pieces of endstate's benchmark programs (`src/bin/*`): each
//! program measures one thing, prints its figures as a table and as one
//! JSON line, and stops by itself. Not a test harness and not used by
//! endstate itself.

use std::time::Duration;

/// Median of a sample, in milliseconds.
pub fn median_ms(samples: &mut [Duration]) -> f64 {
    samples.sort();
    samples
        .get(samples.len() / 2)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}
